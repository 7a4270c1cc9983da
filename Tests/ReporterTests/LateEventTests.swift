import Foundation
import LibPQ
import Logging
import Synchronization
import TaskModel
import Testing
import TestSupport
import WebhookModel
@testable import ReporterCore

/// An instant `seconds` from now (negative: before).
private func fromNow(_ seconds: Double) -> Timestamp {
    Timestamp(microsecondsSinceEpoch: Timestamp.now().microsecondsSinceEpoch + Int64(seconds * 1_000_000))
}

private func webhook(_ kind: WebhookEvent, _ at: Timestamp, _ id: String, user: String = "u1", content: String = "c", done: Bool = false) -> Webhook {
    Webhook(event: kind, timestamp: at, userId: user, taskId: id, content: content, isCompleted: done)
}

/// Applies `events` with the built applier (a transaction of its own,
/// committed now); rejects are a failure unless `rejecting` (then returned).
@discardableResult
private func apply(_ events: [Webhook], to db: String, rejecting: Bool = false) throws -> [String] {
    let run = try runApplier(stream(events), conninfo: db)
    guard run.exitCode == 0, rejecting || run.rejects.isEmpty else { throw TestFailure("applier: \(run.exitCode) \(run.rejects) \(run.stderr)") }
    return run.rejects
}

/// The recorded cron windows, oldest first.
private func recordedWindows(_ db: String) throws -> [ReportWindow] {
    try PGConnection(conninfo: db).execute("""
        SELECT (extract(epoch FROM window_start) * 1000000)::int8, (extract(epoch FROM window_end) * 1000000)::int8
        FROM meetperry.report_run ORDER BY window_end
        """).rows.map { ReportWindow(start: Timestamp(microsecondsSinceEpoch: Int64($0[0]!)!), end: Timestamp(microsecondsSinceEpoch: Int64($0[1]!)!)) }
}

/// A cron run of the built reporter on a one-second grid, just past a
/// boundary it has not reported; no watermark unless asked.
private func cron(_ db: String, _ dir: String, _ environment: [String: String] = [:]) throws -> ReporterRun {
    waitForTheNextSecond()
    let run = try runReporter([], conninfo: db, directory: dir, environment: ["REPORT_DELAY_SECONDS": "0", "REPORT_INTERVAL_SECONDS": "1"].merging(environment) { $1 })
    guard run.exitCode == 0 else { throw TestFailure("reporter: \(run.exitCode) \(run.stderr)") }
    return run
}

/// What the built reporter writes now for `window` on demand (into a directory of its own).
private func onDemand(_ window: ReportWindow, user: String? = nil, _ db: String) throws -> ReporterRun {
    try runReporter(["--from", window.start.canonical, "--to", window.end.canonical] + (user.map { ["--user", $0] } ?? []), conninfo: db)
}

private func manifest(_ dir: String, _ window: ReportWindow) throws -> JSONValue {
    try JSONParser.parse(Array(try Data(contentsOf: URL(fileURLWithPath: dir + "/" + RunManifest.fileName(for: window)))))
}

/// (file, userId, window end) of each corrected report a manifest names.
private func corrected(_ manifest: JSONValue) -> [String] {
    guard case .array(let items)? = manifest["correctedReports"] else { return [] }
    return items.compactMap { if case .string(let name)? = $0["file"] { name } else { nil } }
}

private func isEmptyReport(_ bytes: Data) -> Bool {
    guard let report = try? JSONParser.parse(Array(bytes)) else { return false }
    return ["newIncompleteTasks", "completedTasks", "oldIncompleteTasks", "deletedTasks"].allSatisfy { report[$0] == .array([]) }
}

private func contents(_ dir: String, _ name: String) -> Data? { FileManager.default.contents(atPath: dir + "/" + name) }

/// A report file without its revision line (the one line where a cron file and an on-demand one differ).
private func unstamped(_ data: Data?) -> Data? {
    guard let data else { return nil }
    let lines = String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
    return Data(lines.filter { !$0.hasPrefix(#"  "revision": "#) }.joined(separator: "\n").utf8)
}

/// The revision a cron file carries.
private func revision(_ data: Data?) -> Int? {
    data.flatMap { try? JSONParser.parse(Array($0)) }.flatMap { if case .number(let n)? = $0["revision"] { Int(n) } else { nil } }
}

/// Every file a cron directory holds for each recorded window equals what an
/// on-demand run of that window writes now (but for its revision line),
/// except files whose lists became empty (on demand writes none; the cron
/// directory keeps them, emptied); and the window's own manifest names
/// exactly those files, with their revisions and task counts.
private func expectCronFilesMatchOnDemand(_ db: String, _ dir: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let windows = try recordedWindows(db)
    #expect(!windows.isEmpty, sourceLocation: sourceLocation)
    let cronFiles = try FileManager.default.contentsOfDirectory(atPath: dir)
    for window in windows {
        let fresh = try onDemand(window, db)
        let suffix = "_\(window.start.canonical)_\(window.end.canonical).json"
        for name in fresh.files {
            #expect(unstamped(contents(dir, name)) == unstamped(contents(fresh.directory, name)), "\(name) differs from the on-demand report", sourceLocation: sourceLocation)
        }
        for name in cronFiles where name.hasPrefix("task_report_") && name.hasSuffix(suffix) && !fresh.files.contains(name) {
            #expect(contents(dir, name).map(isEmptyReport) == true, "\(name) has tasks an on-demand run does not report", sourceLocation: sourceLocation)
        }
        // The window's own manifest names exactly its files, with their revisions and task counts.
        let own = try manifest(dir, window)
        guard case .array(let entries)? = own["reports"] else { Issue.record("no manifest for \(window)", sourceLocation: sourceLocation); continue }
        let named = Dictionary(entries.compactMap { entry -> (String, JSONValue)? in
            if case .string(let file)? = entry["file"] { (file, entry) } else { nil }
        }) { a, _ in a }
        let onDisk = cronFiles.filter { $0.hasPrefix("task_report_") && $0.hasSuffix(suffix) }
        #expect(Set(named.keys) == Set(onDisk), "the manifest of \(window) names its files", sourceLocation: sourceLocation)
        for name in onDisk {
            let file = contents(dir, name)
            #expect(named[name]?["revision"] == revision(file).map { .number(String($0)) }, "\(name)'s revision", sourceLocation: sourceLocation)
            let tasks = file.flatMap { try? JSONParser.parse(Array($0)) }.map { report in
                ["newIncompleteTasks", "completedTasks", "oldIncompleteTasks", "deletedTasks"].reduce(0) { count, list in
                    if case .array(let items)? = report[list] { count + items.count } else { count }
                }
            }
            #expect(named[name]?["tasks"] == tasks.map { .number(String($0)) }, "\(name)'s task count", sourceLocation: sourceLocation)
        }
    }
}

@Suite(.serialized) struct LateEventTests {
    @Test func aLateCompletionAndDeletionRewriteTheirWindowAndTheOnesAfter() throws {
        let db = try database(with: [])
        let created = fromNow(-120)
        try apply([webhook(.created, created, "a", content: "to do"), webhook(.created, created, "b", content: "to drop"),
                   webhook(.created, created, "c", user: "u2")], to: db)
        let dir = try makeTemporaryDirectory("late")
        let environment: [String: String] = [:]
        for _ in 0..<3 { _ = try cron(db, dir, environment) }
        let windows = try recordedWindows(db)
        try #require(windows.count == 3)
        let (w1, w2, w3) = (windows[0], windows[1], windows[2])
        let u1File = { (w: ReportWindow) in ReportFileName.make(userId: "u1", window: w) }
        let w1Before = contents(dir, u1File(w1))
        #expect(w1Before != nil)
        let w2Before = try #require(contents(dir, u1File(w2)))
        #expect(String(decoding: w2Before, as: UTF8.self).contains(#""id": "a""#), "a and b are old incomplete tasks in the second window")

        // A completion of a and a deletion of b, timestamped inside the second window, arrive now.
        let inW2 = Timestamp(microsecondsSinceEpoch: (w2.start.microsecondsSinceEpoch + w2.end.microsecondsSinceEpoch) / 2)
        try apply([webhook(.updated, inW2, "a", content: "done", done: true), webhook(.deleted, inW2, "b", content: "to drop")], to: db)

        let fourth = try cron(db, dir, environment)
        #expect(fourth.stderr.contains("corrections=2 late_events=2 beyond_horizon=0"), "\(fourth.stderr)")
        let w4 = try recordedWindows(db)[3]
        let names = corrected(try manifest(dir, w4))
        #expect(names == [u1File(w2), u1File(w3)], "the manifest names both rewritten files, oldest window first")

        // The second window now lists the completion and the deletion, byte for byte as on demand.
        let w2Now = try onDemand(w2, user: "u1", db)
        #expect(w2Now.files == [u1File(w2)])
        #expect(unstamped(contents(dir, u1File(w2))) == unstamped(contents(w2Now.directory, u1File(w2))))
        let w2Text = String(decoding: contents(dir, u1File(w2)) ?? Data(), as: UTF8.self)
        #expect(w2Text.contains(#""completedTasks": [\#n    {"id": "a", "content": "done""#), "\(w2Text)")
        #expect(w2Text.contains(#""deletedTasks": [\#n    {"id": "b""#), "\(w2Text)")
        // The third window had both as old incomplete: now it has nothing, and says so.
        #expect(contents(dir, u1File(w3)).map(isEmptyReport) == true)
        #expect(try onDemand(w3, user: "u1", db).files.isEmpty)
        // The first window ended before the late events: untouched. u2 had no late event: untouched.
        #expect(contents(dir, u1File(w1)) == w1Before)
        #expect(!names.contains { $0.contains("_u2_") })
        // The new window reports u2 only (a is completed, b deleted before it).
        #expect(fourth.files.filter { $0.hasSuffix("_\(w4.start.canonical)_\(w4.end.canonical).json") } == [ReportFileName.make(userId: "u2", window: w4)])

        // A correction is made once: the next run finds nothing late.
        let fifth = try cron(db, dir, environment)
        #expect(fifth.stderr.contains("corrections=0 late_events=0"), "\(fifth.stderr)")
        try expectCronFilesMatchOnDemand(db, dir)
    }

    @Test func aTaskThatTurnsOutToBeSomeoneElsesLeavesTheFormerOwnersFiles() throws {
        let db = try database(with: [])
        // Task 600 created by u6, reported in u6's files for three windows.
        try apply([webhook(.created, fromNow(-60), "600", user: "u6", content: "u6's"), webhook(.created, fromNow(-60), "601", user: "u1")], to: db)
        let dir = try makeTemporaryDirectory("owner")
        for _ in 0..<3 { _ = try cron(db, dir) }
        let windows = try recordedWindows(db)
        let u6Files = windows.map { ReportFileName.make(userId: "u6", window: $0) }
        #expect(u6Files.allSatisfy { String(decoding: contents(dir, $0) ?? Data(), as: UTF8.self).contains(#""id": "600""#) })
        #expect(u6Files.allSatisfy { revision(contents(dir, $0)) == 1 }, "a file first written is revision 1")

        // A creation from u1, timestamped earlier, arrives: the task is u1's, u6's creation an owner_change.
        try apply([webhook(.created, fromNow(-90), "600", user: "u1", content: "u1's")], to: db, rejecting: true)
        let fourth = try cron(db, dir)
        #expect(fourth.stderr.contains("corrections=6 late_events=1"), "three files of u1 and three of u6: \(fourth.stderr)")
        for (window, name) in zip(windows, u6Files) {
            #expect(contents(dir, name).map(isEmptyReport) == true, "u6's \(name) is emptied")
            #expect(revision(contents(dir, name)) == 2, "and is revision 2")
            #expect(try onDemand(window, user: "u6", db).files.isEmpty, "as on demand, where u6 has nothing")
            let own = try manifest(dir, window)
            #expect(own["revision"] == .number("2"), "the window's own manifest is rewritten")
            guard case .array(let entries)? = own["reports"] else { Issue.record("no reports in \(own)"); continue }
            let u6Entry = entries.first { $0["userId"] == .string("u6") }
            #expect(u6Entry?["tasks"] == .number("0") && u6Entry?["revision"] == .number("2"), "\(entries)")
            let u1Entry = entries.first { $0["userId"] == .string("u1") }
            #expect(u1Entry?["tasks"] == .number("2") && u1Entry?["revision"] == .number("2"), "\(entries)")
            #expect(own["tasks"] == .number("2"), "the totals are counted again")
        }
        let w4 = try recordedWindows(db)[3]
        #expect(Set(corrected(try manifest(dir, w4))) == Set(u6Files + windows.map { ReportFileName.make(userId: "u1", window: $0) }))
        try expectCronFilesMatchOnDemand(db, dir)
    }

    @Test func anOnDemandRunOverAFileGoesUpOneRevisionAndSaysItIsOnDemand() throws {
        let db = try database(with: [])
        try apply([webhook(.created, fromNow(-30), "a")], to: db)
        let dir = try makeTemporaryDirectory("on-demand-revision")
        _ = try cron(db, dir)
        let window = try #require(try recordedWindows(db).first)
        let name = ReportFileName.make(userId: "u1", window: window)
        #expect(String(decoding: contents(dir, name) ?? Data(), as: UTF8.self).contains(
            #""revision": 1, "run": {"start": "\#(window.start.canonical)", "end": "\#(window.end.canonical)"}"#))
        for expected in [2, 3] {
            let run = try runReporter(["--from", window.start.canonical, "--to", window.end.canonical], conninfo: db, directory: dir)
            #expect(run.exitCode == 0, "\(run.stderr)")
            let text = String(decoding: contents(dir, name) ?? Data(), as: UTF8.self)
            #expect(text.contains(#""revision": \#(expected), "run": {"onDemand": true}"#), "\(text)")
        }
        #expect(try onDemand(window, db).files.map { contents(try onDemand(window, db).directory, $0).map { String(decoding: $0, as: UTF8.self) } }
            .allSatisfy { $0?.contains(#""revision": 1, "run": {"onDemand": true}"#) == true }, "a new directory: revision 1")
    }

    @Test func theWatermarkPutsAnEventUpToTheDelayLateInItsFirstReport() throws {
        let db = try database(with: [])
        let dir = try makeTemporaryDirectory("watermark")
        let before = Timestamp.now()
        _ = try cron(db, dir, ["REPORT_DELAY_SECONDS": "3"])
        let after = Timestamp.now()
        let first = try #require(try recordedWindows(db).first)
        #expect(first.end > before.adding(seconds: -4) && first.end <= after.adding(seconds: -3), "the window ends on the last boundary at least 3 s before now")
        #expect(first.end.microsecondsSinceEpoch % 1_000_000 == 0)
        #expect(first.end.microsecondsSinceEpoch - first.start.microsecondsSinceEpoch == 1_000_000)

        // An event timestamped after that end arrives 2 s late: within the delay.
        let at = first.end.adding(seconds: 1)
        while Timestamp.now() < at.adding(seconds: 2) { usleep(50_000) }
        try apply([webhook(.created, at, "late-but-within-the-delay")], to: db)
        while Timestamp.now() < at.adding(seconds: 3) { usleep(50_000) }
        let second = try cron(db, dir, ["REPORT_DELAY_SECONDS": "3"])
        let window = try recordedWindows(db)[1]
        #expect(window.contains(at))
        let text = String(decoding: contents(dir, ReportFileName.make(userId: "u1", window: window)) ?? Data(), as: UTF8.self)
        #expect(text.contains(#""newIncompleteTasks": [\#n    {"id": "late-but-within-the-delay""#), "in the first report of its window: \(text)")
        #expect(second.stderr.contains("corrections=0 late_events=0"), "no correction was needed")
    }

    @Test func lateEventsBeyondTheHorizonAreCountedAndLoggedNotCorrected() throws {
        let db = try database(with: [])
        try apply([webhook(.created, fromNow(-3 * 3600), "old")], to: db)
        let dir = try makeTemporaryDirectory("horizon")
        let environment = ["REPORT_CORRECTION_HOURS": "1"]
        _ = try cron(db, dir, environment)
        let first = try recordedWindows(db)[0]
        let name = ReportFileName.make(userId: "u1", window: first)
        let written = try #require(contents(dir, name))

        // Completed two hours ago, arriving now: an hour past the horizon.
        try apply([webhook(.updated, fromNow(-2 * 3600), "old", done: true)], to: db)
        let second = try cron(db, dir, environment)
        #expect(second.stderr.contains("corrections=0 late_events=1 beyond_horizon=1"), "\(second.stderr)")
        #expect(second.stderr.contains("late events older than the correction horizon are not corrected"))
        #expect(contents(dir, name) == written, "no file touched")
        #expect(try onDemand(first, db).files.map { unstamped(contents(try onDemand(first, db).directory, $0)) } != [unstamped(written)],
                "(an on-demand run would report it differently: there was something to correct)")
        let m = try manifest(dir, try recordedWindows(db)[1])
        #expect(m["lateEventsBeyondHorizon"] == .number("1"))
        #expect(corrected(m).isEmpty)
    }

    @Test func twoAppliersCommittingWhileTheReporterRunsMissNoLateEvent() throws {
        let db = try database(with: [])
        let dir = try makeTemporaryDirectory("concurrent")
        var random = SeededGenerator(seed: 10)
        // 300 tasks over 6 users, each created (some twice), maybe edited, completed or deleted,
        // all timestamped over the last 20 s and the next 4 s, applied in random
        // order by two appliers in small transactions while the reporter runs.
        let base = Timestamp.now().microsecondsSinceEpoch - 20_000_000
        func someTime() -> Timestamp { Timestamp(microsecondsSinceEpoch: base + Int64(random.next() % 24_000_000)) }
        var events: [Webhook] = []
        for n in 0..<300 {
            let user = "user\(n % 6)", id = "t\(n)"
            let created = someTime()
            events.append(webhook(.created, created, id, user: user, content: "v0"))
            // Some tasks get a second creation at another time: from another
            // user (whichever is earlier owns the task), or from the same user
            // (the earlier one is the creation), so late events flip owners and
            // creations. Each other user has that one task, so a file left
            // stale by a flip is not rewritten by chance for another task's sake.
            if n % 7 == 0 { events.append(webhook(.created, someTime(), id, user: "owner\(n)", content: "v0")) }
            if n % 5 == 0 { events.append(webhook(.created, someTime(), id, user: user, content: "other")) }
            for _ in 0..<(random.next() % 3) {
                let later = max(created, someTime())
                switch random.next() % 3 {
                case 0: events.append(webhook(.updated, later, id, user: user, content: "v\(random.next() % 9)"))
                case 1: events.append(webhook(.updated, later, id, user: user, content: "v0", done: random.next() % 2 == 0))
                default: events.append(webhook(.deleted, later, id, user: user, content: "v0"))
                }
            }
        }
        events.shuffle(using: &random)
        let halves = [Array(events.enumerated().filter { $0.offset % 2 == 0 }.map(\.element)),
                      Array(events.enumerated().filter { $0.offset % 2 == 1 }.map(\.element))]
        let failures = Mutex<[String]>([])
        let appliersDone = Mutex(0)
        let group = DispatchGroup()
        for half in halves {
            DispatchQueue.global().async(group: group) {
                for start in stride(from: 0, to: half.count, by: 10) {
                    do { try apply(Array(half[start..<min(start + 10, half.count)]), to: db, rejecting: true) } catch {
                        failures.withLock { $0.append("\(error)") }
                    }
                }
                appliersDone.withLock { $0 += 1 }
            }
        }
        var runs = 0
        while appliersDone.withLock({ $0 }) < 2 {
            _ = try cron(db, dir)
            runs += 1
        }
        group.wait()
        #expect(failures.withLock { $0 }.isEmpty)
        // Everything is committed; one more run corrects what the last runs missed.
        usleep(100_000)
        let last = try cron(db, dir)
        #expect(runs >= 3, "the reporter ran while the appliers committed")
        #expect(try PGConnection(conninfo: db).execute("SELECT sum(corrected_files) FROM meetperry.report_run").scalar.flatMap(Int.init) ?? 0 > 0,
                "late events were corrected along the way: \(last.stderr)")
        try expectCronFilesMatchOnDemand(db, dir)
    }

    @Test func aRunThatDiesBetweenACorrectionAndItsManifestIsRedone() throws {
        let db = try database(with: [event(.created, 10, "t1"), event(.created, 10, "t2", user: "u2")])
        let dir = try makeTemporaryDirectory("crash-correction")
        var config = ReporterConfiguration(conninfo: db)
        config.outputDirectory = dir
        config.intervalSeconds = 20 // at(n) is on this grid
        config.delaySeconds = 0
        config.correctionHours = 24 * 366 * 10
        var reporter = Reporter(configuration: config, logger: Logger(label: "test"))
        _ = try reporter.run(now: at(30))
        _ = try reporter.run(now: at(40))
        let w2 = ReportWindow(start: at(30), end: at(40))
        try apply([event(.updated, 35, "t1", done: true)], to: db)

        struct Crash: Error {}
        reporter.afterEachFile = { count in if count == 1 { throw Crash() } }
        #expect(throws: Crash.self) { try reporter.run(now: at(50)) }
        let fixed = ReportFileName.make(userId: "u1", window: w2)
        #expect(String(decoding: contents(dir, fixed) ?? Data(), as: UTF8.self).contains(#""completedTasks": [\#n    {"id": "t1""#),
                "the correction was written before the run died")
        #expect(!FileManager.default.fileExists(atPath: dir + "/" + RunManifest.fileName(for: ReportWindow(start: at(40), end: at(50)))))

        reporter.afterEachFile = nil
        guard case .done(let redo) = try reporter.run(now: at(51)) else { Issue.record("the next run did not run"); return }
        #expect(redo.window == ReportWindow(start: at(40), end: at(51)))
        #expect(redo.corrections == 1, "the correction is made again")
        #expect(corrected(try manifest(dir, redo.window)) == [fixed], "and named in the manifest of the run that finished")
        #expect(unstamped(contents(dir, fixed)) == unstamped(contents(try onDemand(w2, user: "u1", db).directory, fixed)))
    }
}

@Suite struct CorrectionPlanTests {
    /// A task as the store would stream it: its row folded from all of `events`, each marked seen or not.
    private func stored(_ id: String, _ events: [(Webhook, Bool)]) -> StoredTask {
        let all = events.map(\.0)
        let state = TaskRules.foldState(all).state!
        return StoredTask(row: TaskSnapshot(taskId: id, content: state.content, createdDate: state.createdDate,
                                            completedDate: state.completedDate, deletedDate: state.deletedDate),
                          events: events.map { StoredTask.Event(webhook: $0.0, seenBefore: $0.1) })
    }

    /// The late task the store reports for `task`: its unseen events, its owner now.
    private func late(_ task: StoredTask, owner: String) -> ReportStore.LateTask {
        ReportStore.LateTask(taskId: task.row.taskId, lateEventTimes: task.events.filter { !$0.seenBefore }.map(\.webhook.timestamp),
                             owner: owner, task: task)
    }

    private let windows = [ReportWindow(start: at(0), end: at(10)), ReportWindow(start: at(10), end: at(20)), ReportWindow(start: at(20), end: at(30))]

    @Test func countsEventsPastTheHorizonAndThoseWithoutATaskWithoutCorrectingThem() {
        var plan = CorrectionPlan(horizonStart: at(10))
        plan.add(.init(taskId: "a", lateEventTimes: [at(5)], owner: "u1", task: nil))
        plan.add(.init(taskId: "b", lateEventTimes: [at(15)], owner: nil, task: nil))
        let c = stored("c", [(event(.created, 1, "c", user: "u2"), true), (event(.updated, 12, "c", user: "u2", content: "x"), false),
                             (event(.updated, 25, "c", user: "u2", content: "y"), false)])
        plan.add(late(c, owner: "u2"))
        #expect(plan.lateEvents == 4 && plan.beyondHorizon == 1 && plan.waitingForCreated == 1)
        #expect(plan.earliestBeyondHorizon == at(5))
        #expect(plan.earliest == at(12))
        plan.decide(windows: windows)
        #expect(plan.users == ["u2"])
        #expect(plan.rewrites["u2"] == [windows[1], windows[2]])
    }

    @Test func rewritesTheWindowOfALateCompletionAndEveryLaterOneItEmpties() {
        var plan = CorrectionPlan(horizonStart: at(0))
        let task = stored("a", [(event(.created, 5, "a"), true), (event(.updated, 15, "a", done: true), false)])
        plan.add(late(task, owner: "u1"))
        plan.decide(windows: windows)
        let reports = plan.corrections(user: "u1", tasks: [task])
        #expect(reports.map(\.window) == [windows[1], windows[2]], "not the first window: it ended before the completion")
        #expect(reports[0].completed.map(\.id) == ["a"])
        #expect(reports[1].isEmpty, "the later window keeps a file, with empty lists")
    }

    @Test func leavesAloneWindowsWhoseListsTheLateEventDoesNotChange() {
        var plan = CorrectionPlan(horizonStart: at(0))
        // An edit after the task was deleted changes nothing anywhere.
        let task = stored("a", [(event(.created, 5, "a"), true), (event(.deleted, 8, "a"), true), (event(.updated, 15, "a", content: "x"), false)])
        plan.add(late(task, owner: "u1"))
        plan.decide(windows: windows)
        #expect(plan.rewrites.isEmpty)
        #expect(plan.corrections(user: "u1", tasks: [task]).isEmpty)
    }

    @Test func aLateEarlierCreationFromAnotherUserRewritesTheFormerOwnersFilesToo() {
        var plan = CorrectionPlan(horizonStart: at(0))
        // Reported as u6's since 12; a creation from u1 at 3 arrives late and wins.
        let task = stored("600", [(event(.created, 12, "600", user: "u6"), true), (event(.created, 3, "600", user: "u1"), false)])
        plan.add(late(task, owner: "u1"))
        plan.decide(windows: windows)
        #expect(plan.users == ["u1", "u6"])
        #expect(plan.rewrites["u1"] == windows, "u1 gains the task in every window from its creation on")
        #expect(plan.rewrites["u6"] == [windows[1], windows[2]], "u6 loses it wherever it was listed")
        let emptied = plan.corrections(user: "u6", tasks: [])
        #expect(emptied.count == 2 && emptied.allSatisfy { $0.isEmpty }, "emptied: u6 owns nothing now")
        #expect(plan.corrections(user: "u1", tasks: [task]).map { $0.taskCount } == [1, 1, 1])
    }

    @Test func aLateCreationOfATaskNobodyHadReportedRewritesOnlyItsOwner() {
        var plan = CorrectionPlan(horizonStart: at(0))
        let task = stored("n", [(event(.created, 15, "n", user: "u2"), false)])
        plan.add(late(task, owner: "u2"))
        plan.decide(windows: windows)
        #expect(plan.rewrites == ["u2": [windows[1], windows[2]]])
    }
}
