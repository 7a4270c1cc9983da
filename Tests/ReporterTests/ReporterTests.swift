import Foundation
import LibPQ
import Logging
import Testing
import TestSupport
import WebhookModel
@testable import ReporterCore

/// Minutes from a fixed origin: the window under test is (at(0), at(60)].
func at(_ minutes: Int) -> Timestamp {
    Timestamp(microsecondsSinceEpoch: 1_750_000_000_000_000 + Int64(minutes) * 60_000_000)
}

func event(_ kind: WebhookEvent, _ minute: Int, _ id: String, user: String = "u1", content: String = "c", done: Bool = false) -> Webhook {
    Webhook(event: kind, timestamp: at(minute), userId: user, taskId: id, content: content, isCompleted: done)
}

/// A database with events applied by the real applier.
func database(with events: [Webhook]) throws -> String {
    let cluster = PostgresCluster.shared
    let db = cluster.conninfo(database: try cluster.makeDatabase())
    let run = try runApplier(stream(events), conninfo: db)
    guard run.exitCode == 0, run.rejects.isEmpty else { throw TestFailure("applier: \(run.exitCode) \(run.rejects) \(run.stderr)") }
    return db
}

/// What one run of the reporter executable did.
struct ReporterRun {
    var exitCode: Int32
    var stderr: String
    var directory: String

    /// Report files (manifests aside).
    var files: [String] { all.filter { $0.hasPrefix("task_report_") } }
    var manifests: [String] { all.filter { $0.hasPrefix("manifest_") } }
    var all: [String] { ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).sorted() }
    func text(_ name: String) throws -> String { try String(contentsOfFile: directory + "/" + name, encoding: .utf8) }
}

func runReporter(_ arguments: [String], conninfo: String, directory: String? = nil, environment: [String: String] = [:]) throws -> ReporterRun {
    let dir = try directory ?? makeTemporaryDirectory("reports")
    let logs = try makeTemporaryDirectory("reporter-log")
    var env = environment
    env["DATABASE_URL"] = conninfo
    env["REPORT_DIR"] = dir
    let process = try ChildProcess(executable("reporter"), arguments: arguments, environment: env, stdout: .null, stderr: .file(logs + "/stderr"))
    let code = try process.waitForExit(timeout: 120)
    return ReporterRun(exitCode: code, stderr: (try? String(contentsOfFile: logs + "/stderr", encoding: .utf8)) ?? "", directory: dir)
}

private let window = ["--from", at(0).canonical, "--to", at(60).canonical]

/// Sleeps until just past the next whole second, so a cron run with
/// `REPORT_INTERVAL_SECONDS=1` always finds a boundary it has not reported.
func waitForTheNextSecond() {
    let micros = Timestamp.now().microsecondsSinceEpoch
    usleep(useconds_t(1_000_000 - micros % 1_000_000 + 10_000))
}

@Suite struct ReporterTests {
    @Test func judgesEveryListAsOfTheWindowsEndWithExactBoundaries() throws {
        let db = try database(with: [
            event(.created, 0, "a-created-at-start", content: "old: created exactly at start"),
            event(.created, 60, "b-created-at-end", content: "new: created exactly at end"),
            event(.created, 61, "c-created-after"),
            event(.created, -10, "d-done-at-start"), event(.updated, 0, "d-done-at-start", done: true),
            event(.created, -10, "e-done-at-end"), event(.updated, 60, "e-done-at-end", done: true),
            event(.created, 10, "f-done-after", content: "f"), event(.updated, 70, "f-done-after", content: "f", done: true),
            event(.created, -10, "g-redone-after", content: "g"), event(.updated, 30, "g-redone-after", content: "g", done: true),
            event(.updated, 70, "g-redone-after", content: "g", done: false), event(.updated, 80, "g-redone-after", content: "g", done: true),
            event(.created, -10, "h-deleted-at-start"), event(.deleted, 0, "h-deleted-at-start"),
            event(.created, -10, "i-deleted-at-end"), event(.deleted, 60, "i-deleted-at-end"),
            event(.created, -10, "j-deleted-after", content: "j"), event(.deleted, 61, "j-deleted-after"),
            event(.created, 5, "k-done-then-deleted"), event(.updated, 20, "k-done-then-deleted", done: true), event(.deleted, 50, "k-done-then-deleted"),
            event(.created, 5, "l-edited-after", content: "v1"), event(.updated, 90, "l-edited-after", content: "v2"),
            event(.created, -10, "m-done-before", user: "u2"), event(.updated, -5, "m-done-before", user: "u2", done: true),
        ])
        let run = try runReporter(window, conninfo: db)
        #expect(run.exitCode == 0, "\(run.stderr)")
        let name = "task_report_u1_\(at(0).canonical)_\(at(60).canonical).json"
        #expect(run.files == [name], "u2 has nothing in any list: no file")
        let expected = """
        {
          "userId": "u1",
          "period": {"start": "\(at(0).canonical)", "end": "\(at(60).canonical)"},
          "revision": 1, "run": {"onDemand": true},
          "newIncompleteTasks": [
            {"id": "l-edited-after", "content": "v1", "createdOrCompletedAt": "\(at(5).canonical)"},
            {"id": "f-done-after", "content": "f", "createdOrCompletedAt": "\(at(10).canonical)"},
            {"id": "b-created-at-end", "content": "new: created exactly at end", "createdOrCompletedAt": "\(at(60).canonical)"}
          ],
          "completedTasks": [
            {"id": "g-redone-after", "content": "g", "createdOrCompletedAt": "\(at(30).canonical)"},
            {"id": "e-done-at-end", "content": "c", "createdOrCompletedAt": "\(at(60).canonical)"}
          ],
          "oldIncompleteTasks": [
            {"id": "j-deleted-after", "content": "j", "createdOrCompletedAt": "\(at(-10).canonical)"},
            {"id": "a-created-at-start", "content": "old: created exactly at start", "createdOrCompletedAt": "\(at(0).canonical)"}
          ],
          "deletedTasks": [
            {"id": "k-done-then-deleted", "content": "c", "createdOrCompletedAt": "\(at(50).canonical)"},
            {"id": "i-deleted-at-end", "content": "c", "createdOrCompletedAt": "\(at(60).canonical)"}
          ]
        }

        """
        #expect(try run.text(name) == expected)
        #expect(run.stderr.contains("users=2 files=1 tasks=9"))

        // The same window again: byte-identical, and the cron cursor untouched.
        let again = try runReporter(window, conninfo: db)
        #expect(try again.text(name) == run.text(name))
        #expect(try PGConnection(conninfo: db).execute("SELECT count(*) FROM meetperry.report_run").scalar == "0")
    }

    @Test func sortsEachListByTimeThenIdAndWritesEmptyListsAsEmpty() throws {
        let db = try database(with: [
            event(.created, 30, "b"), event(.created, 30, "a"), event(.created, 20, "z"),
        ])
        let run = try runReporter(window, conninfo: db)
        let text = try run.text(run.files[0])
        let report = try JSONParser.parse(Array(text.utf8))
        guard case .array(let new)? = report["newIncompleteTasks"] else { Issue.record("no list"); return }
        #expect(new.compactMap { $0["id"] } == [.string("z"), .string("a"), .string("b")])
        #expect(report["completedTasks"] == .array([]))
        #expect(text.contains(#""deletedTasks": []"#))
    }

    @Test func hostileUserIdsNeverLeaveTheDirectoryNorCollide() throws {
        let long = String(repeating: "/", count: 256)
        let longToo = String(repeating: "/", count: 255) + "."
        let ids = ["../x", "a/b", "%", "%25", "with space", "ünï", "\u{1}ctl\n", ".", "..", "-rf", long, longToo, "~", "'; DROP TABLE meetperry.task; --"]
        let db = try database(with: ids.enumerated().map { event(.created, 30, "t\($0.offset)", user: $0.element, content: "for \($0.element)") })
        let parent = try makeTemporaryDirectory("hostile")
        let dir = parent + "/reports"
        let run = try runReporter(window, conninfo: db, directory: dir)
        #expect(run.exitCode == 0, "\(run.stderr)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent) == ["reports"], "nothing written next to the directory")
        #expect(run.files.count == ids.count, "one file each, no collisions: \(run.files)")
        var owners: [String] = []
        for name in run.files {
            #expect(name.utf8.count <= 255)
            #expect(!name.contains("/") && name.hasPrefix("task_report_") && name.hasSuffix(".json"))
            var isDirectory: ObjCBool = false
            #expect(FileManager.default.fileExists(atPath: dir + "/" + name, isDirectory: &isDirectory) && !isDirectory.boolValue)
            let report = try JSONParser.parse(Array(try run.text(name).utf8))
            if case .string(let owner)? = report["userId"] { owners.append(owner) }
        }
        #expect(owners.sorted() == ids.sorted())
        let window = ReportWindow(start: at(0), end: at(60))
        #expect(run.files.contains(ReportFileName.make(userId: "../x", window: window)))
        #expect(ReportFileName.make(userId: "../x", window: window).hasPrefix("task_report_..%2Fx_"))
        #expect(ReportFileName.make(userId: "ünï", window: window).hasPrefix("task_report_%C3%BCn%C3%AF_"))
        #expect(ReportFileName.make(userId: long, window: window).contains("~"))
        #expect(try PGConnection(conninfo: db).execute("SELECT count(*) FROM meetperry.task").scalar == String(ids.count))
    }

    @Test func cronModeStartsEachWindowWhereTheLastEndedOnTheIntervalsGrid() throws {
        let db = try database(with: [])
        let conn = try PGConnection(conninfo: db)
        let schedule = CronSchedule(intervalSeconds: 2, delaySeconds: 0)
        // Early in a two-second slot, so the boundary below is the one the run finds.
        while Timestamp.now().microsecondsSinceEpoch % 2_000_000 > 1_000_000 { usleep(50_000) }
        let boundary = schedule.boundary(atOrBefore: Timestamp.now())
        try conn.execute("INSERT INTO meetperry.task (external_id, user_id, content, created_date) VALUES ('first', 'u1', 'x', $1)",
                         [boundary.adding(seconds: -1).canonical])
        let dir = try makeTemporaryDirectory("cron")
        let environment = ["REPORT_INTERVAL_SECONDS": "2", "REPORT_DELAY_SECONDS": "0"]
        let first = try runReporter([], conninfo: db, directory: dir, environment: environment)
        #expect(first.exitCode == 0, "\(first.stderr)")
        let runs1 = try conn.execute("SELECT (extract(epoch FROM window_start)*1000000)::int8, (extract(epoch FROM window_end)*1000000)::int8 FROM meetperry.report_run").rows
        #expect(runs1.count == 1)
        let end1 = Int64(runs1[0][1]!)!, start1 = Int64(runs1[0][0]!)!
        #expect(end1 == boundary.microsecondsSinceEpoch, "the first window ends on the last boundary before now")
        #expect(end1 - start1 == 2_000_000, "and covers one interval")
        #expect(first.files == [ReportFileName.make(userId: "u1", window: ReportWindow(start: Timestamp(microsecondsSinceEpoch: start1), end: boundary))])

        let end = Timestamp(microsecondsSinceEpoch: end1)
        try conn.execute("INSERT INTO meetperry.task (external_id, user_id, content, created_date) VALUES ('second', 'u1', 'y', $1)", [end.adding(seconds: 1).canonical])
        let rerun = try runReporter([], conninfo: db, directory: dir, environment: environment)
        #expect(rerun.exitCode == 0 && rerun.stderr.contains("nothing to report"), "no boundary has passed: \(rerun.stderr)")
        while Timestamp.now() < end.adding(seconds: 2) { usleep(20_000) }
        let second = try runReporter([], conninfo: db, directory: dir, environment: environment)
        #expect(second.exitCode == 0)
        let runs = try conn.execute("SELECT (extract(epoch FROM window_start)*1000000)::int8, (extract(epoch FROM window_end)*1000000)::int8 FROM meetperry.report_run ORDER BY id").rows
        #expect(runs.count == 2)
        #expect(Int64(runs[1][0]!)! == end1, "the second window starts exactly where the first ended")
        #expect(Int64(runs[1][1]!)! % 2_000_000 == 0, "and ends on the grid")
        let newest = second.files.first { $0.contains("_" + end.canonical + "_") }
        #expect(newest != nil)
        if let newest { #expect(try second.text(newest).contains(#""id": "second""#)) }
    }

    @Test func retentionRemovesOnlyItsOwnExpiredFilesAfterACronRun() throws {
        let db = try database(with: [])
        let dir = try makeTemporaryDirectory("retention")
        let now = Timestamp.now()
        func daysAgo(_ days: Double) -> Timestamp { Timestamp(microsecondsSinceEpoch: now.microsecondsSinceEpoch - Int64(days * 86_400_000_000)) }
        let old = ReportWindow(start: daysAgo(8.01), end: daysAgo(8)), recent = ReportWindow(start: daysAgo(6.01), end: daysAgo(6))
        let expired = [ReportFileName.make(userId: "alice", window: old), ReportFileName.make(userId: "a/b c", window: old),
                       ReportFileName.make(userId: String(repeating: "é", count: 200), window: old), RunManifest.fileName(for: old)]
        let kept = [ReportFileName.make(userId: "alice", window: recent), RunManifest.fileName(for: recent),
                    "notes.txt", "task_report_alice_2020-01-01T00:00:00Z_2020-01-02T00:00:00Z.json",   // not a name it writes
                    "task_report_bad name_\(old.start.canonical)_\(old.end.canonical).json",
                    "task_report_alice_\(old.start.canonical)_\(old.end.canonical).json.bak",
                    "manifest_x_\(old.start.canonical)_\(old.end.canonical).json"]
        for name in expired + kept { #expect(FileManager.default.createFile(atPath: dir + "/" + name, contents: Data("{}".utf8)), "\(name)") }
        let lookalikeDirectory = ReportFileName.make(userId: "bob", window: old)
        try FileManager.default.createDirectory(atPath: dir + "/" + lookalikeDirectory, withIntermediateDirectories: false)

        let onDemand = try runReporter(window, conninfo: db, directory: dir, environment: ["REPORT_RETENTION_DAYS": "7"])
        #expect(onDemand.exitCode == 0, "\(onDemand.stderr)")
        #expect(Set(expired).isSubset(of: onDemand.all), "an on-demand run removes nothing")

        let keepAll = try runReporter([], conninfo: db, directory: dir, environment: ["REPORT_RETENTION_DAYS": "0", "REPORT_DELAY_SECONDS": "0", "REPORT_INTERVAL_SECONDS": "1"])
        #expect(keepAll.exitCode == 0, "\(keepAll.stderr)")
        #expect(Set(expired).isSubset(of: keepAll.all), "0 keeps every file")

        waitForTheNextSecond()
        let cron = try runReporter(["--retention-days", "7"], conninfo: db, directory: dir, environment: ["REPORT_DELAY_SECONDS": "0", "REPORT_INTERVAL_SECONDS": "1"])
        #expect(cron.exitCode == 0, "\(cron.stderr)")
        let left = Set(cron.all)
        #expect(left.isDisjoint(with: expired), "expired reports and manifests removed: \(left.intersection(expired))")
        #expect(Set(kept + [lookalikeDirectory]).isSubset(of: left), "recent and foreign files stay: \(Set(kept).subtracting(left))")
        #expect(cron.stderr.contains("expired_files=4"), "\(cron.stderr)")
        #expect(try runReporter(["--retention-days", "-1"], conninfo: db, directory: dir).exitCode == 64)
    }

    @Test func everyRunReplacesTheMetricsFileAndAFailureKeepsTheLastSuccess() throws {
        let db = try database(with: [])
        try PGConnection(conninfo: db).execute("INSERT INTO meetperry.task (external_id, user_id, content, created_date) VALUES ('t1', 'u1', 'x', now() - interval '2 seconds'), ('t2', 'u2', 'y', now() - interval '3 seconds')")
        let metrics = try makeTemporaryDirectory("textfile") + "/meetperry_reporter.prom"
        func sample(_ name: String) throws -> Double? { metricSample(name, in: try String(contentsOfFile: metrics, encoding: .utf8)) }
        let before = Date().timeIntervalSince1970
        let ok = try runReporter(["--metrics-file", metrics], conninfo: db, environment: ["REPORT_DELAY_SECONDS": "0", "REPORT_INTERVAL_SECONDS": "1"])
        #expect(ok.exitCode == 0, "\(ok.stderr)")
        let success = try #require(try sample("meetperry_reporter_last_success_timestamp_seconds"))
        #expect(success >= before - 1 && success <= Date().timeIntervalSince1970 + 1)
        #expect(try sample("meetperry_reporter_last_exit_status") == 0)
        #expect(try sample("meetperry_reporter_last_run_users") == 2)
        #expect(try sample("meetperry_reporter_last_run_files") == 2)
        #expect(try sample("meetperry_reporter_last_run_tasks") == 2)
        #expect(try sample("meetperry_reporter_last_success_window_seconds") == 1)
        #expect(try (sample("meetperry_reporter_last_run_duration_seconds") ?? -1) > 0)
        let check = try runTool(try systemTool("promtool", package: "Debian's prometheus"), ["check", "metrics"], input: try String(contentsOfFile: metrics, encoding: .utf8))
        #expect(check.status == 0, "promtool check metrics: \(check.all)")

        let failed = try runReporter([], conninfo: "host=/nonexistent port=1 user=postgres dbname=x connect_timeout=2",
                                     environment: ["REPORT_METRICS_FILE": metrics])
        #expect(failed.exitCode == 1)
        #expect(try sample("meetperry_reporter_last_exit_status") == 1)
        #expect(try sample("meetperry_reporter_last_success_timestamp_seconds") == success, "a failed run keeps the last success")
        #expect(try sample("meetperry_reporter_last_success_window_seconds") == 1)
        #expect(try sample("meetperry_reporter_last_run_files") == nil, "no figures from a run that did not report")
        #expect(try (sample("meetperry_reporter_last_run_timestamp_seconds") ?? 0) >= success)
        #expect(try FileManager.default.contentsOfDirectory(atPath: (metrics as NSString).deletingLastPathComponent) == ["meetperry_reporter.prom"],
                "no temporary file left")

        let nowhere = try runReporter(["--metrics-file", "/nonexistent/dir/r.prom"], conninfo: db)
        #expect(nowhere.exitCode == 64)
        #expect(nowhere.stderr.contains("/nonexistent/dir"), "\(nowhere.stderr)")
    }

    @Test func aRunThatDiesBetweenFilesIsRedoneByTheNext() throws {
        let db = try database(with: (0..<5).map { event(.created, 30, "t\($0)", user: "user\($0)") })
        let dir = try makeTemporaryDirectory("crash")
        var config = ReporterConfiguration(conninfo: db)
        config.outputDirectory = dir
        config.intervalSeconds = 20 // at(n) is on this grid
        config.delaySeconds = 0
        struct Crash: Error {}
        var reporter = Reporter(configuration: config, logger: Logger(label: "test"))
        guard case .done = try reporter.run(now: at(30)) else { Issue.record("first run did not run"); return }

        reporter.afterEachFile = { count in if count == 2 { throw Crash() } }
        #expect(throws: Crash.self) { try reporter.run(now: at(60)) }
        let failedWindow = "_\(at(30).canonical)_\(at(60).canonical).json"
        let written = try FileManager.default.contentsOfDirectory(atPath: dir).filter { $0.hasSuffix(failedWindow) }
        #expect(written.count == 2, "the run stopped at the failure: \(written)")
        for name in written {
            #expect(throws: Never.self, "\(name) is whole") { try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + name)))) }
        }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).allSatisfy { $0.hasPrefix("task_report_") || $0.hasPrefix("manifest_") })
        #expect(try !FileManager.default.contentsOfDirectory(atPath: dir).contains(RunManifest.fileName(for: ReportWindow(start: at(30), end: at(60)))),
                "no manifest for a run that died")
        #expect(try PGConnection(conninfo: db).execute("SELECT count(*) FROM meetperry.report_run").scalar == "1", "the failed run is not recorded")

        reporter.afterEachFile = nil
        guard case .done(let redo) = try reporter.run(now: at(61)) else { Issue.record("second run did not run"); return }
        #expect(redo.window.start == at(30), "the next run covers the failed window again")
        #expect(redo.files == 5)
        guard case .done(let next) = try reporter.run(now: at(62)) else { Issue.record("third run did not run"); return }
        #expect(next.window.start == at(61))
    }

    @Test func aSecondRunAtOnceExits75() throws {
        let db = try database(with: [event(.created, 30, "t")])
        let holder = try PGConnection(conninfo: db)
        #expect(try holder.execute("SELECT pg_try_advisory_lock($1::int8)", [ReportStore.lockKey]).scalar == "t")
        let blocked = try runReporter(window, conninfo: db)
        #expect(blocked.exitCode == 75)
        #expect(blocked.stderr.contains("another reporter run holds the lock"))
        #expect(blocked.files.isEmpty)
        holder.close()
        #expect(try runReporter(window, conninfo: db).exitCode == 0)
    }

    @Test func userLimitsTheRunToOneUser() throws {
        let db = try database(with: [event(.created, 30, "t1", user: "alice"), event(.created, 30, "t2", user: "bob")])
        let run = try runReporter(window + ["--user", "bob"], conninfo: db)
        #expect(run.exitCode == 0)
        #expect(run.files == ["task_report_bob_\(at(0).canonical)_\(at(60).canonical).json"])
    }

    @Test func acceptsAnyTimestampFormForTheWindow() throws {
        let db = try database(with: [event(.created, 30, "t")])
        let start = at(0).canonical, end = at(60).canonical
        // The same instants written with an offset and without fractional digits.
        let run = try runReporter(["--from", String(start.prefix(19)) + "+00:00", "--to", String(end.prefix(10)) + " " + String(end.dropFirst(11).prefix(8))], conninfo: db)
        #expect(run.exitCode == 0, "\(run.stderr)")
        #expect(run.files == ["task_report_u1_\(start)_\(end).json"])
    }

    @Test func refusesBadArgumentsWithUsageExitAndAClearMessage() throws {
        let db = try database(with: [])
        let bad = try runReporter(["--from", "yesterday", "--to", at(60).canonical], conninfo: db)
        #expect(bad.exitCode == 64)
        #expect(bad.stderr.contains(#"--from "yesterday" is not an ISO 8601 date-time"#))
        #expect(try runReporter(["--from", at(0).canonical], conninfo: db).exitCode == 64)
        #expect(try runReporter(["--from", at(60).canonical, "--to", at(0).canonical], conninfo: db).exitCode == 64)
        #expect(try runReporter(window, conninfo: db, environment: ["REPORT_INTERVAL_SECONDS": "soon"]).exitCode == 64)
    }

    @Test func failuresExit1NamingWhatFailed() throws {
        let db = try database(with: [event(.created, 30, "t")])
        let file = try makeTemporaryDirectory("notadir") + "/file"
        _ = FileManager.default.createFile(atPath: file, contents: Data("x".utf8))
        let unwritable = try runReporter(window, conninfo: db, directory: file + "/reports")
        #expect(unwritable.exitCode == 1)
        #expect(unwritable.stderr.contains("report directory"))

        let noSchema = PostgresCluster.shared.conninfo(database: try PostgresCluster.shared.makeDatabase(applyChangeset: false))
        let schema = try runReporter(window, conninfo: noSchema)
        #expect(schema.exitCode == 1)
        #expect(schema.stderr.contains("apply changeset.sql"))

        let unreachable = try runReporter(window, conninfo: "host=/nonexistent port=1 user=postgres dbname=x connect_timeout=2")
        #expect(unreachable.exitCode == 1)
        #expect(unreachable.stderr.contains("cannot connect to PostgreSQL"))
    }
}

@Suite struct ReportWriterTests {
    struct Refused: Error {}

    func files(_ count: Int) -> [ReportWriter.File] {
        let window = ReportWindow(start: at(0), end: at(60))
        return (0..<count).map { n in
            var report = UserReport(userId: "user\(n)", window: window)
            report.add(TaskSnapshot(taskId: "t", content: "c", createdDate: at(30), completedDate: nil, deletedDate: nil))
            return ReportWriter.File(name: ReportFileName.make(userId: report.userId, window: window), bytes: report.render(), correction: false)
        }
    }

    @Test(arguments: [1, 4096, 1 << 20]) func writesEveryFileHandedOverBeforeFinishReturns(chunkBytes: Int) throws {
        let dir = try makeTemporaryDirectory("writer")
        let writer = ReportWriter(directory: try ReportDirectory(path: dir), capacity: 2, chunkBytes: chunkBytes, afterEachFile: nil)
        for file in files(200) { try writer.submit(file) }
        try writer.finish()
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).count == 200)
    }

    @Test func theFirstFailureStopsTheWriterAndReachesTheReader() throws {
        let dir = try makeTemporaryDirectory("writer-fails")
        let writer = ReportWriter(directory: try ReportDirectory(path: dir), capacity: 2, chunkBytes: 1, afterEachFile: { count in
            if count == 5 { throw Refused() }
        })
        var handedOver = 0
        #expect(throws: Refused.self, "a hand-off after the failure throws it") {
            for file in files(1000) {
                try writer.submit(file)
                handedOver += 1
            }
        }
        #expect(handedOver < 1000)
        #expect(throws: Refused.self) { try writer.finish() }
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir).count == 5, "nothing after the failure")
    }
}

@Suite struct ReportFileNameTests {
    let window = ReportWindow(start: Timestamp(microsecondsSinceEpoch: 0), end: Timestamp(microsecondsSinceEpoch: 15_000_000))

    @Test func encodesEveryByteOutsideTheSafeSet() {
        #expect(ReportFileName.make(userId: "aZ9._-", window: window) == "task_report_aZ9._-_1970-01-01T00:00:00.000000Z_1970-01-01T00:00:15.000000Z.json")
        #expect(ReportFileName.make(userId: "a/b c%", window: window).hasPrefix("task_report_a%2Fb%20c%25_"))
    }

    @Test func shortensLongNamesUniquelyWithoutSplittingAnEscape() {
        var names = Set<String>()
        for n in 150...256 {
            for fill in ["/", "a"] {
                let name = ReportFileName.make(userId: String(repeating: fill, count: n), window: window)
                #expect(name.utf8.count <= 255)
                #expect(!name.contains("%~") && !name.contains("%2~"), "escape cut in half: \(name)")
                names.insert(name)
            }
        }
        #expect(names.count == 107 * 2)
    }

    @Test func recognisesExactlyTheNamesItWrites() {
        for id in ["u1", "a/b c%", "..", "~x", String(repeating: "/", count: 300), String(repeating: "a", count: 300), "é\u{0}"] {
            let name = ReportFileName.make(userId: id, window: window)
            #expect(ReportFileName.window(of: name) == window, "\(name)")
        }
        #expect(ReportFileName.window(of: RunManifest.fileName(for: window)) == window)
        let stamps = "_1970-01-01T00:00:00.000000Z_1970-01-01T00:00:15.000000Z.json"
        for foreign in ["task_report_" + stamps.dropFirst(), "task_report_a b" + stamps, "task_report_a%2" + stamps, "task_report_a%2f" + stamps,
                        "task_report_a~0123" + stamps, "Task_report_a" + stamps, "task_report_a" + stamps + ".tmp", "manifest_a" + stamps,
                        "task_report_a_1970-01-01T00:00:00Z_1970-01-01T00:00:15Z.json",
                        "task_report_a_1970-01-01T00:00:15.000000Z_1970-01-01T00:00:00.000000Z.json", ".task_report.tmp-1-1.json"] {
            #expect(ReportFileName.window(of: foreign) == nil, "\(foreign)")
        }
    }
}

@Suite struct CronScheduleTests {
    private func t(_ seconds: Int64) -> Timestamp { Timestamp(microsecondsSinceEpoch: seconds * 1_000_000) }
    private func w(_ start: Int64, _ end: Int64) -> ReportWindow { ReportWindow(start: t(start), end: t(end)) }

    @Test func boundariesAreMultiplesOfTheIntervalSinceTheEpoch() {
        let schedule = CronSchedule(intervalSeconds: 15, delaySeconds: 0)
        #expect(schedule.boundary(atOrBefore: t(30)) == t(30), "a boundary is its own")
        #expect(schedule.boundary(atOrBefore: Timestamp(microsecondsSinceEpoch: 44_999_999)) == t(30))
        #expect(schedule.boundary(atOrBefore: t(0)) == t(0))
        #expect(schedule.boundary(atOrBefore: Timestamp(microsecondsSinceEpoch: -1)) == t(-15), "before the epoch, still down")
        #expect(schedule.boundary(atOrBefore: t(-15)) == t(-15))
    }

    @Test func theFirstRunCoversOneIntervalEndingAtTheLastBoundaryBeforeNowLessTheDelay() {
        let schedule = CronSchedule(intervalSeconds: 15, delaySeconds: 30)
        #expect(schedule.window(after: nil, now: Timestamp(microsecondsSinceEpoch: 1_000_077_123_456)) == w(1_000_020, 1_000_035))
        #expect(schedule.window(after: nil, now: t(1_000_080)) == w(1_000_035, 1_000_050))
        #expect(schedule.window(after: nil, now: t(1_000_079)) == w(1_000_020, 1_000_035))
    }

    @Test func eachRunStartsWhereTheLastEndedAndWaitsForTheNextBoundary() {
        let schedule = CronSchedule(intervalSeconds: 15, delaySeconds: 30)
        #expect(schedule.window(after: t(1_000_035), now: t(1_000_079)) == nil, "no boundary has passed since")
        #expect(schedule.window(after: t(1_000_035), now: t(1_000_080)) == w(1_000_035, 1_000_050))
        #expect(schedule.window(after: t(1_000_050), now: t(1_000_080)) == nil, "a run twice at once reports nothing")
    }

    @Test func missedRunsAreCaughtUpInOneWindowOnTheGrid() {
        let schedule = CronSchedule(intervalSeconds: 15, delaySeconds: 0)
        #expect(schedule.window(after: t(1_000_035), now: t(1_000_100)) == w(1_000_035, 1_000_095), "four intervals in one window")
    }

    @Test func aChangeOfIntervalBridgesToTheNewGrid() {
        // From 15 s windows to hourly ones: one bridging window from the last end to the last whole hour.
        let hourly = CronSchedule(intervalSeconds: 3600, delaySeconds: 0)
        #expect(hourly.window(after: t(3600 * 5 + 15), now: t(3600 * 5 + 30)) == nil, "nothing until the next whole hour")
        #expect(hourly.window(after: t(3600 * 5 + 15), now: t(3600 * 6 + 1)) == w(3600 * 5 + 15, 3600 * 6))
        // A cursor off the grid (an older reporter's) joins the grid the same way.
        let quarter = CronSchedule(intervalSeconds: 15, delaySeconds: 0)
        #expect(quarter.window(after: Timestamp(microsecondsSinceEpoch: 1_000_007_148_461), now: t(1_000_031))
                == ReportWindow(start: Timestamp(microsecondsSinceEpoch: 1_000_007_148_461), end: t(1_000_020)))
    }
}
