import Foundation
import LibPQ
import Logging
import Testing
import TestSupport
import WebhookModel
@testable import ApplierCore
@testable import TaskModel

/// The built `applier` executable on a real pipe, against a real PostgreSQL
/// (a throwaway cluster this test process starts), one rule per test.
@Suite struct ApplierProcessTests {
    let cluster = PostgresCluster.shared

    func freshDatabase() throws -> String {
        cluster.conninfo(database: try cluster.makeDatabase())
    }

    @Test func createdMakesTheRowWithTheSeedColumns() throws {
        let db = try freshDatabase()
        let run = try runApplier(stream([event(.created, 0, id: "42", user: "1", content: "Buy milk")]), conninfo: db)
        #expect(run.exitCode == 0)
        #expect(run.rejects.isEmpty)
        #expect(try taskRows(db) == [["42", "1", "Buy milk", "2025-06-15 15:06:40+00", nil, nil]])
        #expect(run.stderr.contains("read=1 applied=1 duplicates=0 pending=0 rejected=0"))
    }

    @Test func duplicatesAreCountedAndChangeNothing() throws {
        let db = try freshDatabase()
        let events = [event(.created, 0), event(.updated, 1, content: "edited", done: true)]
        let first = try runApplier(stream(events + events), conninfo: db)
        #expect(first.stderr.contains("applied=2 duplicates=2"))
        let before = try taskRows(db, includeSurrogates: true)
        // Raw bodies in another timestamp form are the same events.
        let raw = events.map { w in
            webhookJSON(event: w.event.rawValue, id: w.taskId, userId: w.userId, content: w.content, isCompleted: w.isCompleted,
                        timestamp: rawForm(w.timestamp)) + [0x0D, 0x0A]
        }.flatMap { $0 }
        let second = try runApplier(raw, conninfo: db)
        #expect(second.exitCode == 0)
        #expect(second.stderr.contains("applied=0 duplicates=2"))
        #expect(try taskRows(db, includeSurrogates: true) == before, "a replay must not even touch updated_date")
    }

    @Test func earliestCreatedWinsAndLaterOnesAreRejectedAsConflicts() throws {
        let db = try freshDatabase()
        let run = try runApplier(stream([event(.created, 5, content: "late"), event(.created, 0, content: "early")]), conninfo: db)
        #expect(try taskRows(db).map { $0[2] } == ["early"])
        #expect(run.rejectedLines == [1])
        #expect(run.rejects.first?.contains("conflicting created event") == true)
        // The earlier one arriving in a later run displaces the winner too.
        let db2 = try freshDatabase()
        _ = try runApplier(stream([event(.created, 5, content: "late")]), conninfo: db2)
        _ = try runApplier(stream([event(.created, 0, content: "early")]), conninfo: db2)
        #expect(try taskRows(db2) == taskRows(db))
    }

    @Test func contentFollowsTheLatestEvent() throws {
        let db = try freshDatabase()
        _ = try runApplier(stream([event(.created, 0, content: "v0"), event(.updated, 10, content: "v10"), event(.updated, 5, content: "v5")]), conninfo: db)
        #expect(try taskRows(db).map { $0[2] } == ["v10"])
    }

    @Test func completedDateIsTheLastTransitionToCompleted() throws {
        let db = try freshDatabase()
        _ = try runApplier(stream([
            event(.created, 0), event(.updated, 4, done: true), event(.updated, 1, done: true),
            event(.updated, 3, done: false), event(.updated, 5, done: true), event(.updated, 2, done: true),
        ]), conninfo: db)
        #expect(try taskRows(db).map { $0[4] } == [text(at(4))])
        _ = try runApplier(stream([event(.updated, 6, done: false)]), conninfo: db)
        #expect(try taskRows(db).map { $0[4] } == [nil], "un-completing clears completed_date")
    }

    @Test func earliestDeletionWinsAndLaterEventsAreInert() throws {
        let db = try freshDatabase()
        let run = try runApplier(stream([
            event(.created, 0, content: "a"), event(.deleted, 9), event(.deleted, 7),
            event(.updated, 8, content: "too late", done: true),
        ]), conninfo: db)
        #expect(run.rejects.isEmpty)
        #expect(try taskRows(db) == [["t1", "u1", "a", text(at(0)), nil, text(at(7))]])
    }

    @Test func anotherUsersEventsAreRejected() throws {
        let db = try freshDatabase()
        let run = try runApplier(stream([
            event(.created, 0, content: "mine"),
            event(.updated, 1, user: "intruder", content: "stolen", done: true),
            event(.deleted, 2, user: "intruder"),
        ]), conninfo: db)
        #expect(try taskRows(db) == [["t1", "u1", "mine", text(at(0)), nil, nil]])
        #expect(run.rejectedLines == [2, 3])
        #expect(run.rejects.allSatisfy { $0.contains("never changes owner") })
    }

    @Test func updatesAndDeletesBeforeTheirCreatedWaitForIt() throws {
        let db = try freshDatabase()
        let early = try runApplier(stream([event(.updated, 5, content: "later", done: true), event(.deleted, 9)]), conninfo: db)
        #expect(early.rejects.isEmpty, "pending events are not errors")
        #expect(early.stderr.contains("pending=2"))
        #expect(try taskRows(db).isEmpty)
        _ = try runApplier(stream([event(.created, 0, content: "first")]), conninfo: db)
        #expect(try taskRows(db) == [["t1", "u1", "later", text(at(0)), text(at(5)), text(at(9))]])
    }

    @Test func garbageIsRejectedWithItsLineNumberAndTheRestApplied() throws {
        let db = try freshDatabase()
        var input: [UInt8] = []
        func line(_ text: String) { input += Array(text.utf8) + [0x0A] }
        line(String(decoding: stream([event(.created, 0, id: "good1")]).dropLast(), as: UTF8.self))  // 1
        line("{not json")                                                                         // 2
        line(#"{"event":"created","timestamp":"2025-01-01T00:00:00Z","metadata":{"userId":"1"}}"#)  // 3
        input += Array(#"{"event":"created","timestamp":"2025-01-01T00:00:00Z","metadata":{"userId":"1","id":"x\#u{0}y","content":"","isCompleted":false}}"#.utf8) + [0x0A]  // 4: NUL byte
        input += [0x7B, 0x22, 0xFF, 0xFE, 0x22, 0x7D, 0x0A]                                        // 5: invalid UTF-8
        line(String(decoding: webhookJSON(event: "archived"), as: UTF8.self))                     // 6
        line(String(decoding: webhookJSON(timestamp: "2025-02-30T00:00:00Z"), as: UTF8.self))    // 7
        line("")                                                                                  // 8: blank, ignored
        line(String(decoding: webhookJSON(id: "good2"), as: UTF8.self))                           // 9
        line("[]")                                                                                // 10
        let run = try runApplier(input, conninfo: db)
        #expect(run.exitCode == 0)
        #expect(run.rejectedLines == [2, 3, 4, 5, 6, 7, 10])
        #expect(try taskRows(db).map { $0[0] } == ["good1", "good2"])
        #expect(run.rejects[1].contains("metadata.id: field required"))
        #expect(run.rejects[4].contains("unknown event"))
        #expect(run.rejects[5].contains("day out of range"))
        // Each reject is one valid JSON object carrying the original line.
        for reject in run.rejects {
            let value = try JSONParser.parse(Array(reject.utf8))
            #expect(value["reason"] != nil && value["input"] != nil)
        }
        #expect(run.stderr.contains("read=9"))
        #expect(run.stderr.contains("rejected=7"))
    }

    @Test func sqlInEveryFieldIsStoredAsTextAndNeverExecuted() throws {
        let db = try freshDatabase()
        let hostile = [
            "'); DROP TABLE meetperry.task; --",
            "\"; DELETE FROM meetperry.task_event WHERE ''='",
            "$1::text) OR 1=1 --",
            "\\N\ttab\nnew line\\.",
            "{\"a\",b}",
            "'||pg_sleep(10)||'",
            // Hard cases for the text[] parameter the batch look-up binds the ids in.
            "NULL", " spaced ", "a,b", "a\\b\"c", "{}", "ünï",
        ]
        let events = hostile.enumerated().flatMap { i, text in
            [event(.created, i, id: text, user: text, content: text), event(.updated, i + 1, id: text, user: text, content: text + " v2", done: true)]
        }
        let started = Date()
        let run = try runApplier(stream(events), conninfo: db)
        #expect(run.exitCode == 0)
        #expect(run.rejects.isEmpty)
        #expect(Date().timeIntervalSince(started) < 10, "no pg_sleep ran")
        let rows = try taskRows(db)
        #expect(rows.map { $0[0]! }.sorted() == hostile.sorted())
        for row in rows { #expect(row[1] == row[0] && row[2] == row[0]! + " v2") }
        // The other tables are intact too.
        let events2 = try PGConnection(conninfo: db).execute("SELECT count(*) FROM meetperry.task_event").scalar
        #expect(events2 == String(events.count))
        // Found again by the look-up: a replay is all duplicates, not key conflicts.
        let replay = try runApplier(stream(events), conninfo: db)
        #expect(replay.stderr.contains("applied=0 duplicates=\(events.count) pending=0 rejected=0"))
        #expect(!replay.stderr.contains("retrying"))
    }

    @Test func aLineLongerThanTheLimitIsRejectedNotBuffered() throws {
        let db = try freshDatabase()
        let long = webhookJSON(id: "long", content: String(repeating: "z", count: 5000))
        let input = stream([event(.created, 0, id: "a")]) + long + [0x0A] + stream([event(.created, 0, id: "b")])
        let run = try runApplier(input, conninfo: db, arguments: ["--max-line-bytes", "2048"])
        #expect(run.exitCode == 0)
        #expect(run.rejectedLines == [2])
        #expect(run.rejects.first?.contains("longer than 2048 bytes") == true)
        #expect(try taskRows(db).map { $0[0] } == ["a", "b"])
    }

    @Test func replayingAWholeStreamTwiceChangesNothing() throws {
        let db = try freshDatabase()
        var generator = SeededGenerator(seed: 11)
        let events = (0..<60).flatMap { randomHistory(taskId: "task\($0)", using: &generator) }
        let input = stream(events.shuffled(using: &generator))
        _ = try runApplier(input, conninfo: db, arguments: ["--batch-size", "17"])
        let once = try taskRows(db, includeSurrogates: true)
        let again = try runApplier(input, conninfo: db, arguments: ["--batch-size", "17"])
        #expect(again.exitCode == 0)
        #expect(again.stderr.contains("applied=0"))
        #expect(again.stderr.contains("pending=0"))
        #expect(try taskRows(db, includeSurrogates: true) == once)
    }

    /// `applier < archive > rejects.ndjson` into a database that already holds
    /// the archive: every line whose event the rules refuse (by the final
    /// verdict of its task) is rejected again, duplicates included, and
    /// nothing else; an older event log gets its verdicts from the applier's
    /// first connection after changeset.sql (which only records the need).
    @Test func aReplayWritesItsRejectsAgain() throws {
        let db = try freshDatabase()
        var generator = SeededGenerator(seed: 12)
        var events = (0..<80).flatMap { randomHistory(taskId: "task\($0)", using: &generator) }
        events += events.prefix(40)  // a sender's retries
        events.shuffle(using: &generator)
        let input = stream(events)
        var refused = Set<Webhook>()
        for (_, history) in Dictionary(grouping: events, by: \.taskId) {
            for (event, verdict) in TaskRules.fold(history).dispositions where verdict.rejectionCode != nil { refused.insert(event) }
        }
        let expected = events.indices.filter { refused.contains(events[$0]) }.map { $0 + 1 }
        #expect(expected.count > 10, "the histories refuse some events")

        let first = try runApplier(input, conninfo: db, arguments: ["--batch-size", "17"])
        #expect(first.exitCode == 0)
        for _ in 0..<2 {
            let replay = try runApplier(input, conninfo: db, arguments: ["--batch-size", "17"])
            #expect(replay.exitCode == 0)
            #expect(replay.rejectedLines.sorted() == expected)
            #expect(replay.stderr.contains("applied=0 duplicates=\(events.count - expected.count) pending=0 rejected=\(expected.count)"), "\(replay.stderr)")
        }

        // The same verdicts for a log written before they were stored: changeset.sql
        // adds the column and records the need; the applier's first connection fills them.
        let connection = try PGConnection(conninfo: db)
        let verdicts = "SELECT external_id, identity::text, rejection FROM meetperry.task_event ORDER BY 1, 2"
        let stored = try connection.execute(verdicts).rows
        #expect(stored.filter { $0[2] != nil }.count == refused.count)
        try connection.execute("ALTER TABLE meetperry.task_event DROP COLUMN rejection")
        try connection.executeScript(try String(contentsOfFile: packageRoot() + "/changeset.sql", encoding: .utf8))
        #expect(try connection.execute(verdicts).rows.allSatisfy { $0[2] == nil }, "changeset.sql fills in nothing itself")
        let filling = try runApplier([], conninfo: db)
        #expect(filling.exitCode == 0)
        #expect(filling.stderr.contains("verdicts, which it was written without, are filled in"), "\(filling.stderr)")
        #expect(try connection.execute(verdicts).rows == stored)
        #expect(try connection.execute("SELECT count(*) FROM meetperry.pending_fill").scalar == "0")
        let again = try runApplier([], conninfo: db)
        #expect(!again.stderr.contains("filled in"), "once")
    }

    /// How the property test runs its appliers' task caches.
    enum CacheUse: String, CustomTestStringConvertible, Sendable {
        /// The executable with its default cache.
        case on
        /// The executable with none (`--cache-mb 0`).
        case off
        /// In this process, the applier with a cache of 2 KiB per connection
        /// (about ten entries), so entries are evicted all the time.
        case tiny
        var testDescription: String { rawValue }
    }

    /// Applies `input` as the executable would, in this process, with a task
    /// cache of `cacheBytes` per connection (smaller than the setting can say).
    func applyInProcess(_ input: [UInt8], conninfo: String, batchSize: Int, cacheBytes: Int) throws -> Applier.Outcome {
        let dir = try makeTemporaryDirectory("inprocess")
        FileManager.default.createFile(atPath: dir + "/input", contents: Data(input))
        let inputFD = open(dir + "/input", O_RDONLY), outputFD = open("/dev/null", O_WRONLY)
        defer { close(inputFD); close(outputFD) }
        var configuration = ApplierConfiguration(conninfo: conninfo)
        configuration.batchSize = batchSize
        let applier = try Applier(configuration: configuration, logger: Logger(label: "test"), stop: StopToken(), inputFD: inputFD,
                                  outputFD: outputFD, connect: { try TaskStore(connection: PGConnection(conninfo: conninfo), cacheBytes: cacheBytes) })
        return applier.run()
    }

    /// The final table is a function of the set of events: any order, any
    /// duplication, any split across concurrent appliers, gives the same rows,
    /// and the rows are what the rules say; with the task cache, without, and
    /// with one so small it forgets all the time. (The third round sends the events
    /// roughly in time order, one at a time, the path where a task's new event
    /// comes after all of its stored ones, and where the cache answers.)
    @Test(arguments: [(1, CacheUse.on), (3, .on), (1, .off), (1, .tiny), (3, .tiny)])
    func theTableIsAFunctionOfTheSetOfEvents(appliers: Int, cache: CacheUse) throws {
        var generator = SeededGenerator(seed: UInt64(100 + appliers))
        let histories = (0..<120).map { randomHistory(taskId: "task\($0)", using: &generator) }
        let events = histories.flatMap { $0 }
        let expected = histories.compactMap { TaskRules.fold($0).state }.sorted { $0.taskId < $1.taskId }.map(row)
        for round in 0..<3 {
            var shuffled = events.shuffled(using: &generator)
            shuffled += shuffled.prefix(shuffled.count / 10)  // duplicates, some far apart
            if round < 2 {
                shuffled.shuffle(using: &generator)
            } else {
                // As senders send: in time order, a little jitter, so most tasks go on from their rows.
                shuffled.sort { $0.timestamp.microsecondsSinceEpoch + Int64($0.content.utf8.count % 3) * 1_000_000
                                < $1.timestamp.microsecondsSinceEpoch + Int64($1.content.utf8.count % 3) * 1_000_000 }
            }
            var parts = Array(repeating: [Webhook](), count: appliers)
            for event in shuffled { parts[Int.random(in: 0..<appliers, using: &generator)].append(event) }
            let db = try freshDatabase()
            let batchSize = [1, 7, 50][round]
            let inputs = parts.map(stream)
            let succeeded = Collected<Bool>()
            onThreads(appliers) { i in
                switch cache {
                case .on, .off:
                    let arguments = ["--batch-size", String(batchSize), "--cache-mb", cache == .on ? "32" : "0"]
                    if let run = try? runApplier(inputs[i], conninfo: db, arguments: arguments) { succeeded.append(run.exitCode == 0) }
                case .tiny:
                    let outcome = try? applyInProcess(inputs[i], conninfo: db, batchSize: batchSize, cacheBytes: 2048)
                    succeeded.append(outcome == .done)
                }
            }
            #expect(succeeded.all == Array(repeating: true, count: appliers))
            #expect(try taskRows(db) == expected, "round \(round) with \(appliers) applier(s), cache \(cache)")
        }
    }

    /// The applier on a pipe this test writes to line by line, one event a
    /// batch; its rejects and log are files in `dir`.
    func applierFedByHand(_ db: String, _ dir: String) throws -> ChildProcess {
        try ChildProcess(executable("applier"), arguments: ["--batch-size", "1", "--batch-ms", "1"], environment: ["DATABASE_URL": db],
                         stdin: .pipe, stdout: .file(dir + "/rejects"), stderr: .file(dir + "/stderr"))
    }

    /// Another applier writes a task's partition between two batches of the
    /// first, leaving the row as it was (an update that changes nothing, at
    /// minute 100): the first applier's cache of that task is out of date
    /// though its row is not. The partition's version says so: the first
    /// applier reads the task again, and its completion at minute 50 (older than
    /// the other's update, which makes the task not completed again) ends where
    /// the rules say. Trusted, the cache would have completed the task.
    @Test func aPartitionAnotherApplierWroteIsReadAgain() throws {
        let db = try freshDatabase()
        let dir = try makeTemporaryDirectory("second-writer")
        let first = try applierFedByHand(db, dir)
        let connection = try PGConnection(conninfo: db)
        defer { connection.close() }
        func events(_ task: String) throws -> Int { Int(try connection.execute("SELECT count(*) FROM meetperry.task_event WHERE external_id = $1", [task]).scalar ?? "") ?? -1 }
        first.writeStdin(stream([event(.created, 0, id: "t", content: "c")]))
        try waitUntil("the first applier wrote the task") { (try? events("t")) == 1 }

        let other = try runApplier(stream([event(.updated, 100, id: "t", content: "c")]), conninfo: db)
        #expect(other.exitCode == 0)
        #expect(try connection.execute("SELECT completed_date IS NULL, content FROM meetperry.task WHERE external_id = 't'").rows == [["t", "c"]])

        first.writeStdin(stream([event(.updated, 50, id: "t", content: "c", done: true)]))
        first.closeStdin()
        #expect(try first.waitForExit() == 0)
        let log = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
        #expect(log.contains("task cache: answered 1 of 2 task look-ups (50.0 %), 1 of them new tasks with nothing stored; 1 found changed by another writer"), "the creation on an empty database was known new; the completion was read: \(log)")
        #expect(log.split(separator: "\n").last?.contains("applier finished: read=2") == true, "the summary is still the last line")
        #expect(try taskRows(db) == [row(TaskRules.fold([event(.created, 0, id: "t", content: "c"), event(.updated, 100, id: "t", content: "c"),
                                                         event(.updated, 50, id: "t", content: "c", done: true)]).state!)])
        #expect(try connection.execute("SELECT completed_date IS NULL FROM meetperry.task WHERE external_id = 't'").scalar == "t")
    }

    /// An applier fed `first`, then (once its row is there) `handWrite` by a
    /// writer that takes no locks and bumps no version, then `then`.
    /// Its batch must fail, be read again and retried (its log says so).
    func handWriteBetweenBatches(_ db: String, _ name: String, first: Webhook, handWrite: String, then: Webhook) throws {
        let dir = try makeTemporaryDirectory(name)
        let applier = try applierFedByHand(db, dir)
        let connection = try PGConnection(conninfo: db)
        defer { connection.close() }
        applier.writeStdin(stream([first]))
        try waitUntil("the applier wrote the task") { (try? connection.execute("SELECT count(*) FROM meetperry.task").scalar) == "1" }
        try connection.execute(handWrite)
        applier.writeStdin(stream([then]))
        applier.closeStdin()
        #expect(try applier.waitForExit() == 0)
        let log = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
        #expect(log.contains("batch not committed, retrying") && log.contains("changed between reading and writing them"), "\(log)")
    }

    /// A writer that bumps no version deletes a row the first applier
    /// remembers: the row is not where the cache says there is one, so the
    /// batch fails, is read again from scratch and retried, and the task's
    /// row is made again from its events.
    @Test func aRememberedRowDeletedByHandMakesTheBatchReadAgain() throws {
        let db = try freshDatabase()
        let created = event(.created, 0, id: "t", content: "c"), completed = event(.updated, 5, id: "t", content: "done", done: true)
        try handWriteBetweenBatches(db, "deleted-by-hand", first: created, handWrite: "DELETE FROM meetperry.task WHERE external_id = 't'",
                                        then: completed)
        #expect(try taskRows(db) == [row(TaskRules.fold([created, completed]).state!)])
    }

    /// A remembered row copied in (its address unknown) that a writer taking
    /// no locks changed is not the version the applier copied in (`xmin`): the
    /// batch fails, is read again, and goes on from the row as it is now.
    /// Trusted, the cache would have put back the creation date the hand changed.
    @Test func aRememberedRowChangedByHandMakesTheBatchReadAgain() throws {
        let db = try freshDatabase()
        try handWriteBetweenBatches(db, "changed-by-hand", first: event(.created, 10, id: "t", content: "c"),
                                        handWrite: "UPDATE meetperry.task SET created_date = '2000-01-01Z' WHERE external_id = 't'",
                                        then: event(.updated, 15, id: "t", content: "done", done: true))
        let connection = try PGConnection(conninfo: db)
        defer { connection.close() }
        #expect(try connection.execute("SELECT created_date = '2000-01-01Z', content, completed_date IS NOT NULL FROM meetperry.task").rows
            == [["t", "done", "t"]])
    }

    /// Rows put in by a writer that takes no locks into a database the
    /// applier found empty, each before its task's first event: the applier
    /// knows it never wrote those tasks, but a creation's row, copied in,
    /// finds its id taken (the batch is read again), and an update alone (which
    /// would only be stored, finding nothing) is not answered as new. Both end
    /// as an applier without a cache ends them.
    @Test func rowsPutInByHandAfterTheApplierFoundTheDatabaseEmptyAreReadNotOverwritten() throws {
        let handWrite = """
            INSERT INTO meetperry.task (external_id, user_id, content, created_date)
            VALUES ('t', 'u1', 'by hand', '2000-01-01Z'), ('u', 'u1', 'by hand', '2000-01-01Z')
            """
        let events = [event(.created, 10, id: "t", content: "c"), event(.updated, 15, id: "u", content: "done", done: true)]
        var results: [[[String?]]] = []
        for cacheMegabytes in ["0", "32"] {
            let db = try freshDatabase()
            let dir = try makeTemporaryDirectory("empty-then-by-hand")
            let applier = try ChildProcess(executable("applier"), arguments: ["--batch-size", "1", "--batch-ms", "1"],
                                           environment: ["DATABASE_URL": db, "APPLIER_CACHE_MB": cacheMegabytes],
                                           stdin: .pipe, stdout: .file(dir + "/rejects"), stderr: .file(dir + "/stderr"))
            let connection = try PGConnection(conninfo: db)
            defer { connection.close() }
            // A first task written: the applier has looked at the database (empty) by then.
            applier.writeStdin(stream([event(.created, 0, id: "first")]))
            try waitUntil("the applier wrote the first task") { (try? connection.execute("SELECT count(*) FROM meetperry.task").scalar) == "1" }
            try connection.execute(handWrite)
            applier.writeStdin(stream(events))
            applier.closeStdin()
            #expect(try applier.waitForExit() == 0)
            let log = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
            if cacheMegabytes != "0" {
                #expect(log.contains("batch not committed, retrying"), "the creation's row found its id taken: \(log)")
                #expect(log.contains("1 of them new tasks with nothing stored"), "only the first task was answered as new: \(log)")
            }
            results.append(try connection.execute("""
                SELECT external_id, content, created_date::text, completed_date IS NOT NULL FROM meetperry.task ORDER BY external_id
                """).rows)
        }
        #expect(results[0] == results[1], "with the cache: \(results[1]); without: \(results[0])")
        #expect(results[1].map { $0[0] } == ["first", "t", "u"])
    }

    @Test func sigtermCommitsWhatWasReadAndExitsZero() throws {
        let db = try freshDatabase()
        let dir = try makeTemporaryDirectory("applier")
        let process = try ChildProcess(executable("applier"), arguments: ["--batch-ms", "60000", "--batch-size", "100000"],
                                       environment: ["DATABASE_URL": db], stdin: .pipe, stdout: .null, stderr: .file(dir + "/stderr"))
        // Read, but not yet due for a commit: the batch waits for a minute or 100,000 events.
        process.writeStdin(stream((0..<250).map { event(.created, $0, id: "s\($0)") }))
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline, !((try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? "").contains("reading stdin") { usleep(20_000) }
        usleep(300_000)
        #expect(try taskRows(db).isEmpty)
        process.signal(SIGTERM)
        #expect(try process.waitForExit(timeout: 30) == 0)
        #expect(try taskRows(db).count == 250)
    }

    @Test func aMissingSchemaIsAClearErrorNotARetryLoop() throws {
        let db = cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false))
        let start = Date()
        let run = try runApplier(stream([event(.created, 0)]), conninfo: db)
        #expect(run.exitCode == 1)
        #expect(run.stderr.contains("apply changeset.sql"))
        #expect(Date().timeIntervalSince(start) < 20)
    }

    /// Errors retrying cannot fix end start-up at once (exit 1), for the applier and the reporter alike.
    @Test func aDatabaseThatDoesNotExistEndsStartUpAtOnce() throws {
        let missing = cluster.conninfo(database: "no_such_database")
        let start = Date()
        let run = try runApplier(stream([event(.created, 0)]), conninfo: missing)
        #expect(run.exitCode == 1)
        #expect(run.stderr.contains("does not exist"))
        #expect(!run.stderr.contains("retrying"))
        #expect(Date().timeIntervalSince(start) < 10, "not a minute of retries")
        let reporter = try ChildProcess(executable("reporter"), environment: ["DATABASE_URL": missing], stdout: .null)
        #expect(try reporter.waitForExit(timeout: 10) == 1)
    }

    @Test func drawsProgressOnlyOnATerminal() throws {
        let db = try freshDatabase()
        let dir = try makeTemporaryDirectory("progress")
        let input = dir + "/input.ndjson"
        _ = FileManager.default.createFile(atPath: input, contents: Data(stream((0..<3000).map { event(.created, $0, id: "p\($0)") })))
        // Under a pseudo-terminal (script(1)) the applier redraws one line in place…
        let tty = try ChildProcess("/usr/bin/script", arguments: ["-qec", "\(executable("applier")) < \(input) > /dev/null", "/dev/null"],
                                   environment: ["DATABASE_URL": db], stdout: .file(dir + "/tty.out"))
        #expect(try tty.waitForExit() == 0)
        let drawn = (try? String(contentsOfFile: dir + "/tty.out", encoding: .utf8)) ?? ""
        #expect(drawn.contains("\r\u{1B}[K") && drawn.contains("events/s"), "\(drawn)")
        // …and on a pipe or file it only logs, line by line.
        let plain = try runApplier(Array(try Data(contentsOf: URL(fileURLWithPath: input))), conninfo: db)
        #expect(!plain.stderr.contains("\u{1B}[K") && !plain.stderr.contains("\r"))
        #expect(plain.stderr.contains("applier finished"))
    }


    @Test func changesetIsIdempotentAndKeepsTheSeedsData() throws {
        let name = try cluster.makeDatabase(applyChangeset: false)
        let db = cluster.conninfo(database: name)
        let connection = try PGConnection(conninfo: db)
        // The seed service's own table, with a row in it.
        try connection.executeScript("""
            \(Self.seedDDL)
            INSERT INTO meetperry.task (external_id, user_id, content) VALUES ('seed-1', 'u9', 'from the seed');
            INSERT INTO meetperry.task (id, external_id, user_id, content) VALUES (7, 'seed-7', 'u9', 'restored with its id');
            """)
        let changeset = try String(contentsOfFile: packageRoot() + "/changeset.sql", encoding: .utf8)
        try connection.executeScript(changeset)
        try connection.executeScript(changeset)
        #expect(try connection.execute("SELECT content FROM meetperry.task WHERE external_id = 'seed-1'").scalar == "from the seed")
        let run = try runApplier(stream([event(.created, 0, id: "new")]), conninfo: db)
        #expect(run.exitCode == 0)
        #expect(try taskRows(db).map { $0[0] } == ["new", "seed-1", "seed-7"])
        // The changeset moved the id sequence past the row restored with its id: no collision, no retry.
        #expect(!run.stderr.contains("retrying"))
        #expect(try connection.execute("SELECT id FROM meetperry.task WHERE external_id = 'new'").scalar == "8")
        // The trigger keeps updated_date current.
        try connection.execute("UPDATE meetperry.task SET updated_date = '2000-01-01' WHERE external_id = 'seed-1'")
        #expect(try connection.execute("SELECT updated_date > '2001-01-01' FROM meetperry.task WHERE external_id = 'seed-1'").scalar == "t")
    }

    /// The event log's BRIN indexes: one of (occurred_at, xact_id), whichever
    /// changeset made the database; one made with an index per column (the
    /// earlier changeset) gets the one instead, and keeps its events.
    @Test func theEventLogHasOneBRINIndexOfBothColumnsAndEarlierDatabasesGetIt() throws {
        let changeset = try String(contentsOfFile: packageRoot() + "/changeset.sql", encoding: .utf8)
        let brinIndexes = """
            SELECT i.relname, pg_get_indexdef(i.oid) FROM pg_index x
            JOIN pg_class i ON i.oid = x.indexrelid JOIN pg_am a ON a.oid = i.relam
            WHERE x.indrelid = 'meetperry.task_event'::regclass AND a.amname = 'brin' ORDER BY 1
            """
        let ours = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase()))
        let made = try ours.execute(brinIndexes).rows
        #expect(made.count == 1 && made[0][0] == "task_event_occurred_at_xact_id", "\(made)")
        #expect(made.first?[1]?.hasSuffix("USING brin (occurred_at, xact_id)") == true, "\(made)")

        // As the earlier changeset left it: a BRIN index per column, an event stored.
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        #expect(try runApplier(stream([event(.created, 0, id: "kept")]), conninfo: db).exitCode == 0)
        let earlier = try PGConnection(conninfo: db)
        try earlier.executeScript("""
            DROP INDEX meetperry.task_event_occurred_at_xact_id;
            CREATE INDEX task_event_occurred_at ON meetperry.task_event USING brin (occurred_at);
            CREATE INDEX task_event_xact_id ON meetperry.task_event USING brin (xact_id);
            """)
        try earlier.executeScript(changeset)
        try earlier.executeScript(changeset)
        #expect(try earlier.execute(brinIndexes).rows == made)
        #expect(try earlier.execute("SELECT count(*) FROM meetperry.task_event WHERE external_id = 'kept'").scalar == "1")
    }

    /// The seed service's own DDL for the task table (and its trigger).
    static let seedDDL = """
        CREATE SCHEMA meetperry;
        CREATE TABLE meetperry.task (
            id BIGSERIAL PRIMARY KEY, external_id text NOT NULL UNIQUE, user_id text NOT NULL, content text NOT NULL,
            completed_date timestamptz, deleted_date timestamptz,
            created_date timestamptz DEFAULT CURRENT_TIMESTAMP, updated_date timestamptz DEFAULT CURRENT_TIMESTAMP);
        """

    /// `information_schema.columns` of the task table, column by column.
    func columns(_ connection: PGConnection) throws -> [[String?]] {
        try connection.execute("""
            SELECT column_name, data_type, is_nullable, column_default FROM information_schema.columns
            WHERE table_schema = 'meetperry' AND table_name = 'task' ORDER BY ordinal_position
            """).rows
    }

    @Test func theTaskTableIsTheSeedsColumnForColumnAndEarlierOnesAreBroughtToIt() throws {
        let changeset = try String(contentsOfFile: packageRoot() + "/changeset.sql", encoding: .utf8)
        let seed = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        try seed.executeScript(Self.seedDDL)
        let ours = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase()))
        #expect(try columns(ours) == (try columns(seed)))

        // A database made by the previous changeset: nullable ids and content, NOT NULL dates.
        let earlier = try PGConnection(conninfo: cluster.conninfo(database: try cluster.makeDatabase(applyChangeset: false)))
        try earlier.executeScript("""
            CREATE SCHEMA meetperry;
            CREATE TABLE meetperry.task (
                id BIGSERIAL PRIMARY KEY, external_id text UNIQUE, user_id text NOT NULL, content text,
                completed_date timestamptz, deleted_date timestamptz,
                created_date timestamptz NOT NULL DEFAULT now(), updated_date timestamptz NOT NULL DEFAULT now());
            INSERT INTO meetperry.task (external_id, user_id, content) VALUES ('kept', 'u1', 'still here');
            INSERT INTO meetperry.task (external_id, user_id, content) VALUES (NULL, 'u1', 'no id');
            """)
        // A row that would break NOT NULL: refused with what to do, and nothing changed.
        #expect {
            try earlier.executeScript(changeset)
        } throws: { error in
            "\(error)".contains("1 row(s) have no external_id") && "\(error)".contains("then run changeset.sql again")
        }
        #expect(try earlier.execute("SELECT count(*) FROM meetperry.task").scalar == "2")
        try earlier.execute("DELETE FROM meetperry.task WHERE external_id IS NULL")
        try earlier.executeScript(changeset)
        try earlier.executeScript(changeset)
        #expect(try columns(earlier) == (try columns(seed)))
        #expect(try earlier.execute("SELECT content FROM meetperry.task WHERE external_id = 'kept'").scalar == "still here")
    }

    /// Task rows `seed-N` put in with explicit ids, as a restore would, after
    /// `changeset.sql` ran: the id sequence has not reached them.
    func restoreRowsWithTheirIds(_ ids: ClosedRange<Int>, into connection: PGConnection) throws {
        try connection.execute("""
            INSERT INTO meetperry.task (id, external_id, user_id, content)
            SELECT n, 'seed-' || n, 'u9', 'from the seed' FROM generate_series($1::int, $2::int) AS n
            """, [String(ids.lowerBound), String(ids.upperBound)])
    }

    /// A unique key already taken when the batch writes (here: seed rows
    /// inserted with explicit ids the task sequence will hand out next) is a
    /// conflict to retry, never a reason to reject the events.
    @Test func aTakenKeyIsRetriedNotRejected() throws {
        let db = try freshDatabase()
        let connection = try PGConnection(conninfo: db)
        defer { connection.close() }
        try restoreRowsWithTheirIds(1...3, into: connection)
        let run = try runApplier(stream([event(.created, 0, id: "new")]), conninfo: db, arguments: ["--batch-size", "1"])
        #expect(run.exitCode == 0)
        #expect(run.rejects.isEmpty)
        #expect(run.stderr.contains("read=1 applied=1 duplicates=0 pending=0 rejected=0"))
        #expect(run.stderr.contains("batch not committed, retrying"))
        #expect(try taskRows(db).map { $0[0] } == ["new", "seed-1", "seed-2", "seed-3"])

        // A task whose row came without events (from the seed) is updated in place by its first event.
        let more = try runApplier(stream([event(.created, 5, id: "seed-2", user: "u9", content: "now from a webhook")]), conninfo: db)
        #expect(more.exitCode == 0)
        #expect(more.stderr.contains("read=1 applied=1 duplicates=0 pending=0 rejected=0"))
        #expect(!more.stderr.contains("retrying"))
        #expect(try connection.execute("SELECT id, content FROM meetperry.task WHERE external_id = 'seed-2'").rows == [["2", "now from a webhook"]])
        #expect(try connection.execute("SELECT count(*) FROM meetperry.task").scalar == "4")
    }

    /// A row the batch read under its locks but could not update where it
    /// was (here a trigger skips the update, as if a writer that takes no
    /// locks had moved the row) fails the batch, which is read again and
    /// retried: nothing is written half. Once is a retry; every time ends, like
    /// a key that stays taken, in a reject with the reason, not in a loop.
    @Test func aRowThatChangedUnderTheLocksMakesTheBatchRetry() throws {
        let db = try freshDatabase()
        let connection = try PGConnection(conninfo: db)
        defer { connection.close() }
        #expect(try runApplier(stream([event(.created, 0, id: "t"), event(.created, 0, id: "stuck")]), conninfo: db).exitCode == 0)
        // A sequence, not a table: what the trigger counts survives the rollbacks.
        try connection.executeScript("""
            CREATE SEQUENCE skips;
            CREATE FUNCTION skip() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF OLD.external_id = 'stuck' OR (OLD.external_id = 't' AND nextval('skips') = 1) THEN RETURN NULL; END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER a_skip BEFORE UPDATE ON meetperry.task FOR EACH ROW EXECUTE FUNCTION skip();
            """)
        let once = try runApplier(stream([event(.updated, 5, id: "t", content: "done", done: true)]), conninfo: db)
        #expect(once.exitCode == 0)
        #expect(once.stderr.contains("changed between reading and writing them"))
        #expect(once.stderr.contains("read=1 applied=1 duplicates=0 pending=0 rejected=0"))
        #expect(try connection.execute("SELECT content, completed_date IS NOT NULL FROM meetperry.task WHERE external_id = 't'").rows == [["done", "t"]])

        let always = try runApplier(stream([event(.updated, 5, id: "stuck", content: "never"), event(.created, 6, id: "other")]), conninfo: db,
                                    arguments: ["--batch-size", "1", "--connections", "1"])
        #expect(always.exitCode == 0)
        #expect(always.rejectedLines == [1])
        #expect(always.rejects.first?.contains("changed between reading and writing them") == true)
        #expect(try taskRows(db).map { $0[0] } == ["other", "stuck", "t"])
        #expect(try connection.execute("SELECT count(*) FROM meetperry.task_event WHERE external_id = 'stuck'").scalar == "1", "the refused batch left nothing")
    }

    /// A key that stays taken however often the batch is read again is not
    /// retried for ever: after a few attempts the event is rejected with the
    /// database's reason, and the applier goes on with the rest.
    @Test func aKeyThatStaysTakenEndsInARejectNotALoop() throws {
        let db = try freshDatabase()
        let connection = try PGConnection(conninfo: db)
        defer { connection.close() }
        try restoreRowsWithTheirIds(1...12, into: connection)
        // Each attempt takes one id from the sequence: events 1 and 2 use up ids
        // 1–10 (five attempts each), event 3 gets 13 on its third, event 4 gets 14.
        let events = (1...4).map { event(.created, $0, id: "new-\($0)") }
        let run = try runApplier(stream(events), conninfo: db, arguments: ["--batch-size", "1", "--connections", "1"])
        #expect(run.exitCode == 0)
        #expect(run.stderr.contains("read=4 applied=2 duplicates=0 pending=0 rejected=2"))
        #expect(run.rejectedLines == [1, 2])
        #expect(run.rejects.allSatisfy { $0.contains("database refused the event") && $0.contains("task_pkey") })
        #expect(try taskRows(db).map { $0[0] }.filter { $0?.hasPrefix("new") == true } == ["new-3", "new-4"])
    }
}

/// Faults: the database going away under a running applier.
@Suite(.serialized) struct ApplierFaultTests {
    @Test func postgresRestartedMidStreamLosesNothing() throws {
        let cluster = try PostgresCluster()
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        let dir = try makeTemporaryDirectory("applier")
        let process = try ChildProcess(executable("applier"), arguments: ["--batch-size", "50", "--batch-ms", "20"],
                                       environment: ["DATABASE_URL": db], stdin: .pipe, stdout: .null, stderr: .file(dir + "/stderr"))
        let total = 3000
        let events = (0..<total).map { event(.created, $0, id: "r\($0)") }
        process.writeStdin(stream(Array(events[0..<1000])))
        try waitUntil("the first 1,000 events committed") { (try? taskRows(db).count) ?? 0 >= 1000 }
        try cluster.stop(mode: "immediate")
        // Keep writing while the server is down (the pipe fills: the applier
        // waits for the database, not reading), then bring it back.
        let middle = stream(Array(events[1000..<2000]))
        let written = DispatchGroup()
        written.enter()
        Thread { process.writeStdin(middle); written.leave() }.start()
        usleep(1_500_000)
        try cluster.start()
        written.wait()
        process.writeStdin(stream(Array(events[2000...])))
        process.closeStdin()
        #expect(try process.waitForExit(timeout: 120) == 0)
        #expect(try taskRows(db).count == total)
        let log = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
        #expect(log.contains("retrying"))
        #expect(log.contains("read=\(total) applied=\(total)"))
        try cluster.stop()
    }
}

/// The applier's `/metrics` while it works.
@Suite struct ApplierMetricsTests {
    @Test func metricsMoveUnderLoadShowTheLagAndCountAcceptedWebhooksTheRulesRefuse() throws {
        let cluster = PostgresCluster.shared
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        let dir = try makeTemporaryDirectory("applier-metrics")
        let port = freePort()
        let process = try ChildProcess(executable("applier"), arguments: ["--metrics-port", String(port), "--batch-ms", "10", "--batch-size", "100"],
                                       environment: ["DATABASE_URL": db], stdin: .pipe, stdout: .file(dir + "/rejects"), stderr: .file(dir + "/stderr"))
        func scrape() throws -> String {
            let result = try httpRequest(port: port, "GET", "/metrics", headers: [:])
            guard result.status == 200 else { throw TestFailure("GET /metrics: \(result.status)") }
            #expect(result.header("Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
            return result.text
        }
        func value(_ series: String) -> Double { (try? scrape()).flatMap { metricSample(series, in: $0) } ?? -1 }
        try waitUntil("the metrics endpoint answers") { (try? scrape()) != nil }
        #expect(value("meetperry_applier_lines_read_total") == 0)

        let receivedAt = Timestamp(microsecondsSinceEpoch: Timestamp.now().microsecondsSinceEpoch - 2_000_000)
        func lines(_ events: [Webhook]) -> [UInt8] {
            var out: [UInt8] = []
            for w in events { StreamRecord(webhook: w, receivedAt: receivedAt).appendCanonicalLine(to: &out) }
            return out
        }
        process.writeStdin(lines((0..<300).map { event(.created, $0, id: "m\($0)") }))
        try waitUntil("300 applied") { value(#"meetperry_applier_events_total{outcome="applied"}"#) == 300 }
        #expect(value("meetperry_applier_lines_read_total") == 300)
        #expect(value("meetperry_applier_lag_seconds") == 0, "everything read is committed: no lag")
        #expect(abs(value("meetperry_applier_last_committed_received_timestamp_seconds") - Double(receivedAt.microsecondsSinceEpoch) / 1e6) < 0.001)

        // Every partition lock held elsewhere: the next events are read but cannot commit, and the lag grows.
        let blocker = try PGConnection(conninfo: db)
        try blocker.execute("BEGIN")
        for p in 0..<TaskPartition.count { try blocker.execute("SELECT pg_advisory_xact_lock($1::int8)", [String(TaskPartition.firstLockKey + Int64(p))]) }
        process.writeStdin(lines((300..<400).map { event(.created, $0, id: "m\($0)") }))
        try waitUntil("the next 100 are read") { value("meetperry_applier_lines_read_total") == 400 }
        try waitUntil("the lag passes 3 s while they wait") { value("meetperry_applier_lag_seconds") > 3 }
        try blocker.execute("COMMIT")
        try waitUntil("400 applied, the lag back to 0") {
            value(#"meetperry_applier_events_total{outcome="applied"}"#) == 400 && value("meetperry_applier_lag_seconds") == 0
        }

        // Accepted (it carries receivedAt), then refused: another user edits m1. A duplicate, and a raw line the rules refuse too.
        process.writeStdin(lines([event(.updated, 500, id: "m1", user: "intruder", content: "mine"), event(.created, 0, id: "m0")]))
        process.writeStdin(stream([event(.updated, 501, id: "m2", user: "intruder", content: "raw")]) + Array("not json\n".utf8))
        try waitUntil("the refusal counted") { value(#"meetperry_applier_rejected_after_acceptance_total{rule="owner_change"}"#) == 1 }
        try waitUntil("every line counted") { value(#"meetperry_applier_events_total{outcome="rejected"}"#) == 3 }
        let text = try scrape()
        #expect(metricSample(#"meetperry_applier_events_total{outcome="duplicate"}"#, in: text) == 1)
        #expect(metricSample("meetperry_applier_lines_read_total", in: text) == 404)
        #expect((metricSample("meetperry_applier_batches_total", in: text) ?? 0) >= 4)
        #expect(metricSample("meetperry_applier_commit_seconds_count", in: text) == metricSample("meetperry_applier_batches_total", in: text))
        #expect(metricSample(#"meetperry_applier_rejected_after_acceptance_total{rule="conflicting_created"}"#, in: text) == 0)
        #expect(metricSample("meetperry_applier_retries_total", in: text) == 0)
        let check = try runTool(try systemTool("promtool", package: "Debian's prometheus"), ["check", "metrics"], input: text)
        #expect(check.status == 0, "promtool check metrics: \(check.all)")

        let post = try httpRequest(port: port, "POST", "/metrics", headers: [:], body: Array("x".utf8))
        #expect(post.status == 405 && post.header("Allow") == "GET, HEAD")
        #expect(try httpRequest(port: port, "GET", "/webhook", headers: [:]).status == 404)

        process.closeStdin()
        #expect(try process.waitForExit(timeout: 60) == 0)
        let log = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
        let warning = log.split(separator: "\n").filter { $0.contains("an accepted webhook was rejected") }
        #expect(warning.count == 1, "\(log)")
        #expect(warning.first?.contains("rule=owner_change") == true && warning.first?.contains(#"task="m1""#) == true)
    }

    /// An earlier `created` from another user turns a task's verdicts round:
    /// the stored event it refuses now gets its reject line, warning and count
    /// then, once; the one it accepts now a notice; a replay repeats neither
    /// (it writes the reject of each line refused now, as it always has).
    @Test func aVerdictThatChangesLaterIsSaidWhenItChangesAndOnlyThen() throws {
        let db = PostgresCluster.shared.conninfo(database: try PostgresCluster.shared.makeDatabase())
        let dir = try makeTemporaryDirectory("verdict-change")
        let port = freePort()
        let process = try ChildProcess(executable("applier"), arguments: ["--metrics-port", String(port), "--batch-ms", "10"],
                                       environment: ["DATABASE_URL": db], stdin: .pipe, stdout: .file(dir + "/rejects"), stderr: .file(dir + "/stderr"))
        func value(_ series: String) -> Double {
            (try? httpRequest(port: port, "GET", "/metrics", headers: [:])).flatMap { metricSample(series, in: $0.text) } ?? -1
        }
        let receivedAt = Timestamp(microsecondsSinceEpoch: Timestamp.now().microsecondsSinceEpoch - 1_000_000)
        let first = StreamRecord(webhook: event(.created, 10, id: "600", user: "u1", content: "u1's"), receivedAt: receivedAt, deliveryId: "msg_1")
        let intruder = StreamRecord(webhook: event(.updated, 12, id: "600", user: "u2", content: "u2's"), receivedAt: receivedAt)
        let earlier = StreamRecord(webhook: event(.created, 5, id: "600", user: "u2", content: "u2's"), receivedAt: receivedAt)
        try waitUntil("the metrics endpoint answers") { value("meetperry_applier_lines_read_total") == 0 }
        process.writeStdin(first.canonicalLine() + intruder.canonicalLine())
        try waitUntil("u1's creation applied, u2's edit refused") {
            value(#"meetperry_applier_events_total{outcome="applied"}"#) == 1 && value(#"meetperry_applier_events_total{outcome="rejected"}"#) == 1
        }
        #expect(value(#"meetperry_applier_verdict_changes_total{to="refused"}"#) == 0)

        // u2's creation, earlier: u2 owns the task, u1's creation is an owner change, u2's edit is taken.
        process.writeStdin(earlier.canonicalLine())
        try waitUntil("both changes counted") {
            value(#"meetperry_applier_verdict_changes_total{to="refused"}"#) == 1 && value(#"meetperry_applier_verdict_changes_total{to="accepted"}"#) == 1
        }
        #expect(value(#"meetperry_applier_rejected_after_acceptance_total{rule="owner_change"}"#) == 2, "u2's edit then, u1's creation now")
        process.closeStdin()
        #expect(try process.waitForExit(timeout: 60) == 0)
        let rejects = try String(contentsOfFile: dir + "/rejects", encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(rejects.count == 2, "\(rejects)")
        let later = try #require(rejects.last.map { try JSONParser.parse(Array($0.utf8)) })
        #expect(later["line"] == .number("3"), "the line that changed it")
        #expect(later["refusedLater"] == .bool(true))
        #expect(later["input"] == .string(String(decoding: first.canonicalLine().dropLast(), as: UTF8.self)), "u1's creation, as the receiver wrote it")
        #expect(later["reason"] == .string(EventDisposition.rejectedOwner.rejectionReason!), "\(later)")
        let log = (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? ""
        #expect(log.split(separator: "\n").filter { $0.contains("an event applied earlier is refused now") }.count == 1, "\(log)")
        #expect(log.split(separator: "\n").filter { $0.contains("an event refused earlier is applied now") }.count == 1, "\(log)")
        #expect(try taskRows(db).first?[1] == "u2")

        // A replay of the three lines: u1's creation is refused as it is now, nothing is said to have changed.
        let replay = try runApplier(first.canonicalLine() + intruder.canonicalLine() + earlier.canonicalLine(), conninfo: db)
        #expect(replay.exitCode == 0)
        #expect(replay.rejectedLines == [1], "\(replay.rejects)")
        #expect(!replay.rejects.contains { $0.contains("refusedLater") })
        #expect(!replay.stderr.contains("refused now") && !replay.stderr.contains("applied now"), "\(replay.stderr)")
    }

    @Test func aTakenMetricsPortStopsStartUpNamingIt() throws {
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, length) } }
        _ = listen(listener, 1)
        _ = withUnsafeMutablePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &length) } }
        let port = Int(UInt16(bigEndian: address.sin_port))
        let db = PostgresCluster.shared.conninfo(database: try PostgresCluster.shared.makeDatabase())
        let run = try runApplier([], conninfo: db, arguments: ["--metrics-port", String(port)])
        #expect(run.exitCode == 1)
        #expect(run.stderr.contains("cannot serve metrics on 127.0.0.1:\(port)"), "\(run.stderr)")
        #expect(try runApplier([], conninfo: db, arguments: ["--metrics-port", "70000"]).exitCode == 64)
    }
}

/// The real receiver piped into the real applier, fed over HTTP.
@Suite struct ReceiverIntoApplierTests {
    @Test func webhooksPostedOverHTTPEndUpInPostgreSQL() throws {
        let cluster = PostgresCluster.shared
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        let pipe = try ReceiverApplierPipe(database: db)
        let receiver = pipe.receiver
        let accepted = Collected<String>()
        onThreads(8) { t in
            for i in 0..<40 {
                let id = "h\(t)-\(i)"
                if (try? httpRequest(port: receiver.port, body: webhookJSON(id: id, userId: "u\(t)", isCompleted: i % 2 == 0)))?.status == 202 {
                    accepted.append(id)
                }
                if i % 10 == 0 { _ = try? httpRequest(port: receiver.port, body: webhookJSON(event: "deleted", id: id, userId: "u\(t)", timestamp: "2025-04-02T00:00:00Z")) }
            }
        }
        _ = try httpRequest(port: receiver.port, body: webhookJSON(event: "updated", id: "h0-1", userId: "thief", content: "mine now"))
        #expect(accepted.all.count == 320)
        let codes = try pipe.stop()
        #expect(codes.receiver == 0 && codes.applier == 0)  // the applier ends at EOF once the receiver is gone
        let rows = try taskRows(db)
        #expect(Set(rows.map { $0[0]! }) == Set(accepted.all))
        #expect(rows.filter { $0[5] != nil }.count == 32)
        #expect(rows.filter { $0[4] != nil }.count == 160)
        #expect(pipe.rejects.contains("never changes owner"))
    }
}

// MARK: - Helpers

/// A timestamp as PostgreSQL prints a timestamptz in UTC.
func text(_ t: Timestamp) -> String {
    var s = t.canonical  // 2025-06-15T15:06:40.000000Z
    s = s.replacingOccurrences(of: "T", with: " ").replacingOccurrences(of: "Z", with: "")
    if s.hasSuffix(".000000") { s.removeLast(7) }
    return s + "+00"
}

/// The same instant written another way (a -05:00 offset, three fraction digits, a space).
func rawForm(_ t: Timestamp) -> String {
    let shifted = Timestamp(microsecondsSinceEpoch: t.microsecondsSinceEpoch - 5 * 3_600_000_000).canonical
    return String(shifted.prefix(10)) + " " + String(shifted.dropFirst(11).prefix(12)) + "-05:00"
}

func row(_ s: TaskState) -> [String?] {
    [s.taskId, s.userId, s.content, text(s.createdDate), s.completedDate.map(text), s.deletedDate.map(text)]
}
