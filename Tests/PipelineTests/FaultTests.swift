import Foundation
import LibPQ
import Testing
import TestSupport
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// Faults under load: a database that goes away, a disk that fills up,
/// processes killed at random. The promise checked everywhere: no webhook
/// that got a 202 is ever missing afterwards.
@Suite(.serialized) struct FaultTests {
    /// Posts webhooks from `threads` threads until told to stop; remembers every 202 and every other answer.
    final class Poster: @unchecked Sendable {
        let accepted = Collected<String>()
        let refused = Collected<Int>()
        private let stopFlag = Shared(false)
        private let done = DispatchGroup()

        init(port: @escaping @Sendable () -> Int, threads: Int = 4, prefix: String) {
            done.enter()
            Thread { [self] in
                onThreads(threads) { t in
                    var i = 0
                    while !self.stopFlag.value {
                        let id = "\(prefix)\(t)-\(i)"
                        i += 1
                        let body = webhookJSON(id: id, userId: "u\(t)", content: "load \(i)", isCompleted: i % 4 == 0, timestamp: Timestamp.now().canonical)
                        if let result = try? httpRequest(port: port(), body: body) {
                            if result.status == 202 { self.accepted.append(id) } else { self.refused.append(result.status) }
                            if result.status != 202 { usleep(20_000) }
                        } else {
                            usleep(50_000)  // nothing listening right now
                        }
                    }
                }
                self.done.leave()
            }.start()
        }

        func stop() {
            stopFlag.value = true
            done.wait()
        }
    }

    /// Every id in `ids` is in meetperry.task (waits up to a minute for the applier).
    func expectAllStored(_ ids: Set<String>, conninfo: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let db = try PGConnection(conninfo: conninfo)
        defer { db.close() }
        let query = "SELECT count(*) FROM unnest($1::text[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM meetperry.task t WHERE t.external_id = a.id)"
        var missing = "?"
        let deadline = Date().addingTimeInterval(60)
        repeat {
            missing = (try? db.execute(query, [PGArray.literal(ids)]).scalar ?? "?") ?? "?"
            if missing == "0" { break }
            usleep(200_000)
        } while Date() < deadline
        #expect(missing == "0", "acknowledged webhooks missing from meetperry.task: \(missing) of \(ids.count)", sourceLocation: sourceLocation)
    }

    @Test func postgresGoneFor30SecondsLosesNoAcknowledgedWebhook() throws {
        let cluster = try PostgresCluster()
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        let dir = try makeTemporaryDirectory("outage")
        let applier = try ChildProcess(executable("applier"), arguments: ["--batch-ms", "50", "--batch-size", "200"],
                                       environment: ["DATABASE_URL": db], stdin: .pipe, stdout: .null, stderr: .file(dir + "/applier.stderr"))
        let receiver = try RunningReceiver(environment: ["QUEUE_CAPACITY": "64", "QUEUE_TIMEOUT_SECONDS": "2", "ARCHIVE_PATH": dir + "/archive.ndjson"],
                                           stdout: .fd(applier.stdinFD!), directory: dir)
        applier.closeStdin()
        let port = receiver.port
        let poster = Poster(port: { port }, prefix: "o")
        try waitUntil("webhooks flowing") { poster.accepted.all.count >= 200 }

        try cluster.stop(mode: "fast")
        let acceptedAtStop = poster.accepted.all.count
        // Ten seconds in, the applier has stopped reading and the pipe is full: a
        // new webhook waits QUEUE_TIMEOUT_SECONDS in the queue and is refused.
        sleep(10)
        let probe = try httpRequest(port: port, body: webhookJSON(id: "probe-during-outage"))
        #expect(probe.status == 503)
        #expect(probe.header("retry-after") != nil)
        sleep(20)
        let acceptedDuringOutage = poster.accepted.all.count - acceptedAtStop
        try cluster.start()
        try waitUntil("webhooks accepted again") { poster.accepted.all.count >= acceptedAtStop + acceptedDuringOutage + 200 }
        poster.stop()

        // While the applier's buffers and the pipe had room the receiver kept saying 202, then only 503.
        print("outage: \(acceptedDuringOutage) accepted during the outage, \(poster.refused.all.count) refused")
        #expect(acceptedDuringOutage > 0)
        #expect(poster.refused.all.allSatisfy { $0 == 503 })
        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit(timeout: 60) == 0)
        #expect(try applier.waitForExit(timeout: 60) == 0)
        try expectAllStored(Set(poster.accepted.all), conninfo: db)
        let log = (try? String(contentsOfFile: dir + "/applier.stderr", encoding: .utf8)) ?? ""
        #expect(log.contains("retrying"))
        try cluster.stop()
    }

    @Test func aFullArchiveDiskMeans503AndAClearLogLineUntilSpaceReturns() throws {
        let dir = try makeTemporaryDirectory("diskfull")
        let archive = dir + "/archive.ndjson"
        let port = freePort()
        // The archive's "disk" holds 16 KB: past it, writes fail with EFBIG as on a full disk.
        let receiver = try ChildProcess("/usr/bin/prlimit", arguments: ["--fsize=16384:unlimited", "--", executable("receiver")], environment: [
            "HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(port), "ARCHIVE_PATH": archive, "LOG_LEVEL": "warning",
        ], stdout: .pipe, stderr: .file(dir + "/receiver.stderr"))
        let lines = LineCollector(fd: receiver.stdoutFD!)
        try waitUntil("receiver up") { (try? httpRequest(port: port, "GET", "/healthz", headers: [:]))?.status == 200 }

        var statuses: [Int] = []
        var accepted: [String] = []
        for i in 0..<200 {
            let result = try httpRequest(port: port, body: webhookJSON(id: "d\(i)", content: String(repeating: "x", count: 100)))
            statuses.append(result.status)
            if result.status == 202 { accepted.append("d\(i)") }
            if result.status == 503 { #expect(result.header("retry-after") != nil) }
        }
        #expect(statuses.contains(202) && statuses.contains(503), "first accepted, then refused: \(Set(statuses))")
        #expect(statuses.drop(while: { $0 == 202 }).allSatisfy { $0 == 503 }, "once full, never a 202")
        let stderr = (try? String(contentsOfFile: dir + "/receiver.stderr", encoding: .utf8)) ?? ""
        #expect(stderr.contains("archive write failed"))
        #expect(receiver.isRunning, "a full disk is not a crash")

        // Space returns: the same process accepts again.
        let raise = try ChildProcess("/usr/bin/prlimit", arguments: ["--pid", String(receiver.pid), "--fsize=unlimited:unlimited"], stdout: .null)
        #expect(try raise.waitForExit() == 0)
        for i in 200..<220 {
            let result = try httpRequest(port: port, body: webhookJSON(id: "d\(i)"))
            #expect(result.status == 202)
            if result.status == 202 { accepted.append("d\(i)") }
        }
        receiver.signal(SIGTERM)
        #expect(try receiver.waitForExit() == 0)
        let out = try lines.waitForEOF()
        let archived = try String(contentsOfFile: archive, encoding: .utf8).split(separator: "\n").map(String.init)
        let ids = { (lines: [String]) in lines.compactMap { try? Webhook.decode(Array($0.utf8)).webhook.taskId } }
        #expect(ids(out) == accepted, "stdout has exactly the acknowledged webhooks")
        #expect(ids(archived) == accepted, "and so does the archive: no partial batch was left in it")
    }

    /// A seeded loop: each round kills the receiver, the applier or a running
    /// reporter with SIGKILL at a random moment under load, and restarts the
    /// pipeline when it went down. Afterwards: every 202 is in the database,
    /// every report file is whole, and the cron record has no gap or overlap.
    @Test func killNineAnywhereOverManyRoundsLosesNothing() throws {
        var random = SeededGenerator(seed: 20261125)
        let pipeline = try PipelineTests.Pipeline()
        try pipeline.start()
        let poster = Poster(port: { pipeline.httpPort }, prefix: "k")
        var killed: [String] = []
        for round in 0..<8 {
            usleep(UInt32(200_000 + random.next() % 1_300_000))
            let victim = ["receiver", "applier", "reporter"][Int(random.next() % 3)]
            if victim == "reporter" {
                // The reporter runs every second for a moment: catch one in the act.
                if let pid = try? pipeline.waitForProcess(named: "reporter", timeout: 5) {
                    kill(pid, SIGKILL)
                    killed.append("reporter")
                }
                continue
            }
            guard let pid = pipeline.pid(victim) else { throw TestFailure("round \(round): no \(victim) pid") }
            kill(pid, SIGKILL)
            killed.append(victim)
            #expect(try pipeline.process!.waitForExit(timeout: 60) == 1, "round \(round): pipeline exits 1 after losing its \(victim)")
            try pipeline.start()
        }
        try waitUntil("more webhooks after the last round") { poster.accepted.all.count >= 200 }
        poster.stop()
        print("kill -9 victims: \(killed)")
        #expect(killed.contains("receiver") && killed.contains("applier"), "victims: \(killed)")

        try expectAllStored(Set(poster.accepted.all), conninfo: pipeline.conninfo)
        // One more report run cleans what killed runs left; then every file is whole.
        sleep(2)
        #expect(try pipeline.stop(SIGINT) == 0)
        try pipeline.start()
        sleep(2)
        let names = (try? FileManager.default.contentsOfDirectory(atPath: pipeline.reportDir)) ?? []
        #expect(names.contains { $0.hasPrefix("task_report_") })
        for name in names {
            #expect(name.hasPrefix("task_report_") || name.hasPrefix("manifest_") || name.hasPrefix(".task_report.tmp-"))
            guard name.hasPrefix("task_report_") else { continue }
            let bytes = Array(FileManager.default.contents(atPath: pipeline.reportDir + "/" + name) ?? Data())
            let report = try? JSONParser.parse(bytes)
            #expect(report?["deletedTasks"] != nil, "\(name) is whole")
        }
        let db = try PGConnection(conninfo: pipeline.conninfo)
        let windows = try db.execute("""
            SELECT (extract(epoch FROM window_start) * 1000000)::int8, (extract(epoch FROM window_end) * 1000000)::int8
            FROM meetperry.report_run ORDER BY window_end
            """).rows.map { (Int64($0[0]!)!, Int64($0[1]!)!) }
        #expect(windows.count >= 2)
        for (previous, next) in zip(windows, windows.dropFirst()) {
            #expect(next.0 == previous.1, "each recorded window starts where the previous one ended")
        }
        #expect(windows.allSatisfy { $0.0 < $0.1 })
        db.close()
        #expect(try pipeline.stop(SIGINT) == 0)
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")
    }
}
