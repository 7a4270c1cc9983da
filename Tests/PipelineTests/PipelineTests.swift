import Foundation
import LibPQ
import Testing
import TestSupport
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// `pipeline.sh` itself, as an operator runs it: its own private cluster in a
/// temporary state directory, the built binaries, real HTTP, real signals.
@Suite(.serialized) struct PipelineTests {
    /// One pipeline.sh run and where it keeps its state.
    final class Pipeline: @unchecked Sendable {
        let varDir: String
        let httpPort: Int
        let pgPort: Int
        let reportDir: String
        private(set) var process: ChildProcess?
        private var runs = 0

        /// The listening socket, when the test holds it as systemd holds meetperry.socket.
        let heldSocket: HeldListeningSocket?

        init(socketActivated: Bool = false) throws {
            varDir = try makeTemporaryDirectory("pipeline")
            chmod(varDir, 0o755)  // the postgres user must reach the cluster inside
            heldSocket = socketActivated ? try HeldListeningSocket() : nil
            httpPort = heldSocket?.port ?? freePort()
            pgPort = 20_000 + Int.random(in: 0..<20_000)
            reportDir = varDir + "/reports"
        }

        var extraEnvironment: [String: String] = [:]
        /// Run pipeline.sh as this unprivileged user (uid = gid), as meetperry.service runs it as `meetperry`.
        var user: UInt32?

        func start() throws {
            runs += 1
            let binDir = (executable("receiver") as NSString).deletingLastPathComponent
            let environment = [
                "MEETPERRY_VAR_DIR": varDir,
                "MEETPERRY_BIN_DIR": binDir,
                "HTTP_HOST": "127.0.0.1",
                // With the socket handed over, HTTP_PORT is another port: the socket's wins.
                "HTTP_PORT": String(heldSocket == nil ? httpPort : freePort()),
                "PIPELINE_PG_PORT": String(pgPort),
                "REPORT_DIR": reportDir,
                "REPORT_INTERVAL_SECONDS": "1",
                "REPORT_DELAY_SECONDS": "0",
                "DATABASE_URL": "",
                "DB_HOST": "",
                "LOG_LEVEL": "info",
            ].merging(extraEnvironment) { $1 }
            let out = ChildProcess.Stream.file(varDir + "/pipeline-\(runs).out"), err = ChildProcess.Stream.file(varDir + "/pipeline-\(runs).err")
            if let user {
                process = try ChildProcess("/usr/bin/setpriv", arguments: ["--reuid=\(user)", "--regid=\(user)", "--clear-groups", "/bin/bash", packageRoot() + "/pipeline.sh"],
                                           environment: environment, stdout: out, stderr: err)
            } else if let heldSocket {
                process = try heldSocket.activate("/bin/bash", arguments: [packageRoot() + "/pipeline.sh"], environment: environment, stdout: out, stderr: err)
            } else {
                process = try ChildProcess("/bin/bash", arguments: [packageRoot() + "/pipeline.sh"], environment: environment, stdout: out, stderr: err)
            }
            let deadline = Date().addingTimeInterval(120)
            while Date() < deadline {
                // Ready once this run's children are up (pipeline.pid is written then) and answer;
                // a receiver left over from a killed run must not pass for the new one.
                if pid("pipeline") == process!.pid,
                   let health = try? httpRequest(port: httpPort, "GET", "/healthz", headers: [:]), health.status == 200 { return }
                guard process!.isRunning else { throw TestFailure("pipeline.sh exited early: \(log)") }
                usleep(100_000)
            }
            throw TestFailure("pipeline.sh did not come up: \(log)")
        }

        /// A test that fails midway still stops what it started.
        deinit {
            if let process, process.isRunning {
                process.signal(SIGTERM)
                _ = try? process.waitForExit(timeout: 60)
            }
        }

        var log: String { (try? String(contentsOfFile: varDir + "/pipeline-\(runs).err", encoding: .utf8)) ?? "" }

        func pid(_ name: String) -> pid_t? {
            (try? String(contentsOfFile: varDir + "/run/\(name).pid", encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
        }

        var conninfo: String { "host=\(varDir)/postgres port=\(pgPort) user=postgres dbname=meetperry connect_timeout=5" }

        /// Waits for a process of the built `name` started by this pipeline; returns its pid.
        func waitForProcess(named name: String, timeout: Double) throws -> pid_t {
            let binary = URL(fileURLWithPath: executable(name)).resolvingSymlinksInPath().path
            let marker = Array("MEETPERRY_VAR_DIR=\(varDir)".utf8) + [0]
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                    guard let pid = pid_t(entry),
                          (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(entry)/exe")) == binary,
                          let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ"),
                          [UInt8](environ).firstRange(of: marker) != nil else { continue }
                    return pid
                }
                usleep(1_000)
            }
            throw TestFailure("no \(name) of this pipeline ran within \(timeout)s")
        }

        /// Every process still running that was started by this pipeline (they inherit its environment).
        func survivors() -> [String] {
            let marker = Array("MEETPERRY_VAR_DIR=\(varDir)".utf8) + [0]
            var found: [String] = []
            for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] {
                guard let pid = Int32(entry), pid != getpid() else { continue }
                guard let environ = FileManager.default.contents(atPath: "/proc/\(entry)/environ") else { continue }
                let bytes = [UInt8](environ)
                let cmdline = String(decoding: FileManager.default.contents(atPath: "/proc/\(entry)/cmdline") ?? Data(), as: UTF8.self)
                    .replacingOccurrences(of: "\0", with: " ")
                if bytes.firstRange(of: marker) != nil || cmdline.contains("\(varDir)/postgres/data") {
                    found.append("\(pid): \(cmdline)")
                }
            }
            return found
        }

        func stop(_ signal: Int32 = SIGINT) throws -> Int32 {
            guard let process else { return 0 }
            process.signal(signal)
            return try process.waitForExit(timeout: 120)
        }
    }

    @Test func everyAcknowledgedWebhookSurvivesAKilledApplier() throws {
        let pipeline = try Pipeline()
        try pipeline.start()
        let accepted = Collected<String>()
        let stopPosting = Shared(false)
        let posters = DispatchGroup()
        posters.enter()
        Thread {
            onThreads(4) { t in
                var i = 0
                while !stopPosting.value {
                    let id = "p\(t)-\(i)"
                    i += 1
                    let body = webhookJSON(id: id, userId: "u\(t)", isCompleted: i % 3 == 0, timestamp: Timestamp.now().canonical)
                    if let result = try? httpRequest(port: pipeline.httpPort, body: body), result.status == 202 {
                        accepted.append(id)
                    } else {
                        usleep(20_000)
                    }
                }
            }
            posters.leave()
        }.start()

        // Mid-stream: the applier is killed outright.
        try waitUntil("300 webhooks accepted") { accepted.all.count >= 300 }
        guard let applier = pipeline.pid("applier") else { throw TestFailure("no applier pid: \(pipeline.log)") }
        kill(applier, SIGKILL)
        // The pipeline notices, stops acknowledging and exits non-zero for its supervisor.
        #expect(try pipeline.process!.waitForExit(timeout: 60) == 1)
        #expect(pipeline.log.contains("the applier exited"))
        let acknowledgedBeforeRestart = accepted.all.count

        // The supervisor starts it again: the replay puts back whatever the dead applier held.
        try pipeline.start()
        #expect(pipeline.log.contains("replaying"))
        try waitUntil("100 more accepted after the restart") { accepted.all.count >= acknowledgedBeforeRestart + 100 }
        stopPosting.value = true
        posters.wait()

        let ids = Set(accepted.all)
        let db = try PGConnection(conninfo: pipeline.conninfo)
        try waitUntil("every accepted webhook stored") {
            let stored = (try? db.execute("SELECT count(*) FROM meetperry.task WHERE external_id = ANY($1::text[])", [PGArray.literal(ids)]).scalar) ?? nil
            return stored == String(ids.count)
        }
        let missing = try db.execute("SELECT count(*) FROM unnest($1::text[]) AS a(id) WHERE NOT EXISTS (SELECT 1 FROM meetperry.task t WHERE t.external_id = a.id)",
                                     [PGArray.literal(ids)]).scalar
        #expect(missing == "0", "every webhook that got a 202 is in meetperry.task")
        db.close()

        // The reporter runs every second and writes per-user files.
        try waitUntil("report files") { ((try? FileManager.default.contentsOfDirectory(atPath: pipeline.reportDir)) ?? []).contains { $0.hasPrefix("task_report_u") } }

        #expect(try pipeline.stop(SIGINT) == 0)
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")
    }

    /// meetperry.socket + meetperry.service: systemd holds the port and hands it
    /// to pipeline.sh, which gives it to the receiver alone. A restart of the
    /// whole pipeline (the service) then refuses no sender: what arrives while
    /// it restarts waits in the socket's backlog and is answered by the next receiver.
    @Test func aRestartWithTheSocketHeldRefusesNoSenderAndLosesNo202() throws {
        let pipeline = try Pipeline(socketActivated: true)
        try pipeline.start()
        #expect(pipeline.log.contains("serving the listening socket systemd handed over (port \(pipeline.httpPort))"))
        // The receiver alone holds the socket (besides systemd, here the test): no other
        // child (the cluster, the applier, the loops, the rotators), nor pipeline.sh, keeps it open.
        func holders() -> [String] {
            guard let inode = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(pipeline.heldSocket!.fd)") else { return ["?"] }
            return pipeline.survivors().filter { entry in
                let pid = entry.prefix { $0 != ":" }
                let fds = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []
                return fds.contains { (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\($0)")) == inode }
            }
        }
        let receiverPID = try #require(pipeline.pid("receiver"))
        try waitUntil("the receiver alone holds the socket (the banner's probes are done)", timeout: 10) {
            holders().map { String($0.prefix { $0 != ":" }) } == [String(receiverPID)]
        }

        let stop = Shared(false)
        let accepted = Collected<String>()
        let troubles = Collected<String>()
        let senders = DispatchGroup()
        senders.enter()
        Thread {
            onThreads(4) { t in
                var connection: HTTPConnection?
                var i = 0
                while !stop.value {
                    let id = "h\(t)-\(i)"
                    i += 1
                    do {
                        // Odd senders open a connection per webhook; even ones keep theirs while the receiver does.
                        if connection == nil || t % 2 == 1 { connection = try HTTPConnection(port: pipeline.httpPort, timeoutSeconds: 90) }
                        let result = try connection!.request(body: webhookJSON(id: id, userId: "h\(t)", timestamp: Timestamp.now().canonical))
                        if result.status == 202 { accepted.append(id) } else { troubles.append("\(id): \(result.status)") }
                        if result.header("connection") == "close" { connection = nil }
                    } catch {
                        troubles.append("\(id): \(error)")
                        connection = nil
                    }
                }
            }
            senders.leave()
        }.start()

        try waitUntil("200 webhooks accepted") { accepted.all.count >= 200 }
        let before = accepted.all.count
        let restartBegun = Date()
        #expect(try pipeline.stop(SIGTERM) == 0)
        try pipeline.start()
        let restartSeconds = Date().timeIntervalSince(restartBegun)
        try waitUntil("200 more accepted after the restart") { accepted.all.count >= before + 200 }
        stop.value = true
        senders.wait()
        print("socket-activated pipeline restart: \(String(format: "%.1f", restartSeconds)) s from SIGTERM to the next pipeline's /healthz; \(accepted.all.count) webhooks answered 202, troubles: \(troubles.all.count)")
        #expect(troubles.all.isEmpty, "\(troubles.all.prefix(5))")

        let ids = Set(accepted.all)
        let db = try PGConnection(conninfo: pipeline.conninfo)
        defer { db.close() }
        try waitUntil("every accepted webhook stored") {
            let stored = (try? db.execute("SELECT count(*) FROM meetperry.task WHERE external_id = ANY($1::text[])", [PGArray.literal(ids)]).scalar) ?? nil
            return stored == String(ids.count)
        }
        #expect(try pipeline.stop(SIGTERM) == 0)
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")
    }

    /// meetperry.service runs as the system user meetperry, not root: pipeline.sh,
    /// its private cluster (PostgreSQL run as that user: no runuser, no postgres
    /// account) and every program it starts run unprivileged and write only the
    /// state directory. Here as `nobody`, in a state directory it owns.
    @Test func itRunsAsAnUnprivilegedUserWithItsPrivateCluster() throws {
        let pipeline = try Pipeline()
        let nobody: UInt32 = 65534
        #expect(chown(pipeline.varDir, nobody, nobody) == 0)
        pipeline.user = nobody
        try pipeline.start()
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "unprivileged")).status == 202)
        let db = try PGConnection(conninfo: pipeline.conninfo)
        defer { db.close() }
        try waitUntil("the webhook is stored") {
            (try? db.execute("SELECT count(*) FROM meetperry.task WHERE external_id = 'unprivileged'").scalar) == "1"
        }
        // Every process of the pipeline, the PostgreSQL server included, runs as that user.
        func uid(_ entry: String) -> String? {
            let pid = entry.prefix { $0 != ":" }
            return (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8))?.split(separator: "\n")
                .first { $0.hasPrefix("Uid:") }?.split(whereSeparator: { $0 == "\t" || $0 == " " }).dropFirst().first.map(String.init)
        }
        let processes = pipeline.survivors()
        #expect(processes.contains { $0.contains("postgres") } && processes.contains { $0.contains("receiver") }, "\(processes)")
        #expect(processes.allSatisfy { uid($0) == nil || uid($0) == String(nobody) }, "\(processes.map { "\($0) uid \(uid($0) ?? "?")" })")
        // All it wrote in its state directory is its own (pipeline-N.out/.err are the test's, its stdout and stderr).
        let foreign = try runTool("/usr/bin/find", [pipeline.varDir, "!", "-user", String(nobody), "!", "-name", "pipeline-*"])
        #expect(foreign.output.isEmpty, "\(foreign.output)")
        #expect(try pipeline.stop(SIGTERM) == 0)
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")
    }

    /// Logs and rejects rotate past LOG_MAX_BYTES without losing or splitting a
    /// line, and rotated ones past LOG_RETENTION_DAYS are pruned; nothing else is.
    @Test func logsAndRejectsRotateAndArePruned() throws {
        let pipeline = try Pipeline()
        pipeline.extraEnvironment = ["LOG_MAX_BYTES": "4000", "LOG_RETENTION_DAYS": "3", "PIPELINE_HOUSEKEEPING_SECONDS": "1"]
        let old = ["applier.log.20200101T000000Z", "rejects.ndjson.20200101T000000Z-0001"]
        let foreign = ["notes.log.20200101T000000Z", "rejects.ndjson.bak", "applier.log.20200101"]
        for name in old + foreign {
            let path = pipeline.varDir + "/" + name
            #expect(FileManager.default.createFile(atPath: path, contents: Data("x\n".utf8)))
            try FileManager.default.setAttributes([.modificationDate: Date().addingTimeInterval(-10 * 86_400)], ofItemAtPath: path)
        }
        try pipeline.start()
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "owned", userId: "owner")).status == 202)
        // Each intruder's edit is accepted, then refused by the rules: a reject line and a log warning each.
        let intruders = 60
        for i in 0..<intruders {
            let body = webhookJSON(event: "updated", id: "owned", userId: "intruder\(i)", content: String(repeating: "z", count: 100))
            #expect(try httpRequest(port: pipeline.httpPort, body: body).status == 202)
        }
        func files(_ prefix: String) -> [String] {
            ((try? FileManager.default.contentsOfDirectory(atPath: pipeline.varDir)) ?? []).filter { $0.hasPrefix(prefix) }.sorted()
        }
        func rejects() -> [String] {
            files("rejects.ndjson").filter { !old.contains($0) && !foreign.contains($0) }.flatMap { name in
                ((try? String(contentsOfFile: pipeline.varDir + "/" + name, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init)
            }
        }
        do {
            try waitUntil("every reject written") { rejects().count == intruders }
        } catch {
            // Once seen (1 run in 7, under load), never reproduced: say everything there is to know.
            let applierLog = (try? String(contentsOfFile: pipeline.varDir + "/applier.log", encoding: .utf8)) ?? ""
            Issue.record("\(rejects().count) of \(intruders) rejects in \(files("rejects.ndjson")): \(rejects())\npipeline: \(pipeline.log.suffix(3000))\napplier.log: \(applierLog.suffix(3000))")
            throw error
        }
        try waitUntil("the expired rotated files pruned") { old.allSatisfy { !FileManager.default.fileExists(atPath: pipeline.varDir + "/" + $0) } }
        #expect(try pipeline.stop(SIGINT) == 0)
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")

        let lines = rejects()
        #expect(lines.count == intruders)
        #expect(lines.allSatisfy { (try? JSONParser.parse(Array($0.utf8))) != nil }, "every line whole")
        #expect(Set(lines.map { $0.contains("never changes owner") }) == [true])
        #expect(files("rejects.ndjson.").count >= 3, "rotated at 4,000 bytes: \(files("rejects.ndjson"))")
        #expect(files("applier.log.").count >= 2, "the applier's log too: \(files("applier.log"))")
        for name in files("rejects.ndjson") + files("applier.log") where !foreign.contains(name) {
            let size = (try FileManager.default.attributesOfItem(atPath: pipeline.varDir + "/" + name)[.size] as? Int) ?? 0
            #expect(size <= 4000, "\(name): \(size) bytes")
        }
        for name in foreign { #expect(FileManager.default.fileExists(atPath: pipeline.varDir + "/" + name), "\(name) is not the pipeline's to prune") }
    }

    @Test func rotatedArchiveSegmentsAreVerifiedSoAStartReplaysOnlyWhatIsNeeded() throws {
        let pipeline = try Pipeline()
        pipeline.extraEnvironment = ["ARCHIVE_ROTATE_BYTES": "2000", "PIPELINE_HOUSEKEEPING_SECONDS": "1"]
        try pipeline.start()
        for i in 0..<60 { #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "seg\(i)")).status == 202) }
        let archive = pipeline.varDir + "/archive"
        let applied = archive + "/applied"
        // The receiver rotated several segments; the housekeeper replays each and moves it aside.
        try waitUntil("segments verified") { ((try? FileManager.default.contentsOfDirectory(atPath: applied)) ?? []).count >= 2 }
        #expect(try pipeline.stop(SIGTERM) == 0)
        let pending = try FileManager.default.contentsOfDirectory(atPath: archive).filter { $0.hasPrefix("archive.ndjson.") }
        try pipeline.start()
        // The next start replays the unverified rest only, never the verified segments.
        let replayed = pipeline.log.components(separatedBy: "\n").first { $0.contains("replaying") } ?? ""
        #expect(replayed.isEmpty || replayed.contains("replaying \(pending.count + 1) segment(s)") || replayed.contains("replaying \(pending.count) segment(s)"),
                "\(replayed) with \(pending.count) unverified")
        let db = try PGConnection(conninfo: pipeline.conninfo)
        #expect(try db.execute("SELECT count(*) FROM meetperry.task WHERE external_id LIKE 'seg%'").scalar == "60")
        db.close()

        // SIGHUP to pipeline.sh (a certificate renewal) reaches the receiver and stops nothing.
        // (Sent until the receiver says so: one that lands in its first milliseconds,
        // before it listens for SIGHUP, is ignored, which is harmless at start-up.)
        let script = try #require(pipeline.pid("pipeline"))
        try waitUntil("the receiver got SIGHUP") {
            kill(script, SIGHUP)
            usleep(200_000)
            return ((try? String(contentsOfFile: pipeline.varDir + "/receiver.log", encoding: .utf8)) ?? "").contains("SIGHUP: no TLS certificate to reload")
        }
        #expect(pipeline.log.contains("SIGHUP: passed to the receiver"))
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "after-hup")).status == 202)
        #expect(try pipeline.stop(SIGTERM) == 0)
    }

    @Test func aKilledPipelineScriptIsCleanedUpByTheNextStart() throws {
        let pipeline = try Pipeline()
        try pipeline.start()
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "before-kill")).status == 202)
        let oldReceiver = pipeline.pid("receiver")
        pipeline.process!.signal(SIGKILL)
        _ = try pipeline.process!.waitForExit()
        // Its loops notice within a second; its receiver and applier are stopped by the next start.
        try pipeline.start()
        #expect(pipeline.log.contains("a previous pipeline left running") || oldReceiver.map { kill($0, 0) != 0 } == true)
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "after-kill")).status == 202)
        let db = try PGConnection(conninfo: pipeline.conninfo)
        try waitUntil("both stored") {
            (try? db.execute("SELECT count(*) FROM meetperry.task WHERE external_id IN ('before-kill', 'after-kill')").scalar) == "2"
        }
        db.close()
        #expect(try pipeline.stop(SIGINT) == 0)
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")
    }

    @Test func ctrlCStopsEveryProcessItStartedAndTheNextStartReusesTheData() throws {
        let pipeline = try Pipeline()
        try pipeline.start()
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "kept")).status == 202)
        let started = ["receiver", "applier", "pipeline"].compactMap(pipeline.pid)
        #expect(started.count == 3)
        #expect(!pipeline.survivors().isEmpty)

        #expect(try pipeline.stop(SIGINT) == 0, "\(pipeline.log)")
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")
        #expect(started.allSatisfy { kill($0, 0) != 0 })
        #expect(pipeline.log.contains("stopped"))
        let leftovers = ((try? FileManager.default.contentsOfDirectory(atPath: pipeline.reportDir)) ?? []).filter { !$0.hasPrefix("task_report_") && !$0.hasPrefix("manifest_") }
        #expect(leftovers.isEmpty, "no half-written report files: \(leftovers)")

        // Second start: the same cluster and data, nothing to initialise again.
        try pipeline.start()
        #expect(!pipeline.log.contains("creating a private PostgreSQL cluster"))
        let db = try PGConnection(conninfo: pipeline.conninfo)
        #expect(try db.execute("SELECT count(*) FROM meetperry.task WHERE external_id = 'kept'").scalar == "1")
        db.close()
        #expect(try pipeline.stop(SIGTERM) == 0)
        #expect(pipeline.survivors().isEmpty, "left behind: \(pipeline.survivors())")
    }

    /// One pipeline per state directory: a second start refuses and says
    /// which one runs, and the first goes on untouched. Its banner's commands
    /// work as printed: the curl line takes the time it is run at, the psql
    /// line names the user.
    /// The port taken by another program: no "meetperry is running" banner
    /// (the other program's answers do not count), the receiver's own error
    /// naming the address on the terminal, and exit 1.
    @Test func aTakenPortIsReportedNotAnnounced() throws {
        let port = freePort()
        let squatter = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(squatter) }
        var yes: Int32 = 1
        setsockopt(squatter, SOL_SOCKET, SO_REUSEADDR, &yes, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(squatter, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        #expect(bound == 0 && listen(squatter, 16) == 0)
        let pipeline = try Pipeline()
        let dir = try makeTemporaryDirectory("taken")
        let run = try ChildProcess("/bin/bash", arguments: [packageRoot() + "/pipeline.sh"], environment: [
            "MEETPERRY_VAR_DIR": pipeline.varDir,
            "MEETPERRY_BIN_DIR": (executable("receiver") as NSString).deletingLastPathComponent,
            "HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(port), "PIPELINE_PG_PORT": String(pipeline.pgPort),
            "DATABASE_URL": "", "DB_HOST": "", "PIPELINE_REPORTER": "off",
        ], stdout: .null, stderr: .file(dir + "/err"))
        #expect(try run.waitForExit(timeout: 120) == 1)
        let terminal = (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? ""
        #expect(!terminal.contains("meetperry is running"), "\(terminal)")
        #expect(terminal.contains("cannot listen on http://127.0.0.1:\(port)") && terminal.contains("Address already in use"), "\(terminal)")
    }

    /// With a secret set, the banner's try-line is signed, and run as printed it gets a 202.
    @Test func theBannersTryLineIsSignedWhenASecretIsSetAndWorks() throws {
        let secret = "whsec_" + Data((0..<24).map { UInt8($0 + 65) }).base64EncodedString()
        let pipeline = try Pipeline()
        pipeline.extraEnvironment = ["WEBHOOK_SECRET": secret, "PIPELINE_REPORTER": "off"]
        try pipeline.start()
        let deadline = Date().addingTimeInterval(10)
        while !pipeline.log.contains("Ctrl-C stops everything") && Date() < deadline { usleep(50_000) }
        let banner = pipeline.log
        #expect(banner.contains("webhook-signature: v1,"), "\(banner)")
        let lines = banner.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) }
            .filter { $0.hasPrefix("body=") || $0.hasPrefix("id=") || $0.hasPrefix("sig=") || $0.hasPrefix("curl ") }
        #expect(lines.count == 4, "\(banner)")
        let tryIt = try runTool("/bin/bash", ["-c", lines.joined(separator: "\n").replacingOccurrences(of: "curl -i", with: "curl -s -o /dev/null -w '%{http_code}'")],
                                environment: ["WEBHOOK_SECRET": secret, "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"])
        #expect(tryIt.output == "202", "\(tryIt.all)")
        #expect(try pipeline.stop(SIGTERM) == 0)
    }

    @Test func aSecondPipelineOnTheSameStateRefusesToStart() throws {
        let pipeline = try Pipeline()
        try pipeline.start()
        let first = pipeline.pid("pipeline")
        let dir = try makeTemporaryDirectory("second")
        let second = try ChildProcess("/bin/bash", arguments: [packageRoot() + "/pipeline.sh"], environment: [
            "MEETPERRY_VAR_DIR": pipeline.varDir,
            "MEETPERRY_BIN_DIR": (executable("receiver") as NSString).deletingLastPathComponent,
            "HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(freePort()), "PIPELINE_PG_PORT": String(pipeline.pgPort),
            "DATABASE_URL": "", "DB_HOST": "",
        ], stdout: .null, stderr: .file(dir + "/err"))
        #expect(try second.waitForExit(timeout: 30) == 1)
        let refusal = (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? ""
        #expect(refusal.contains("another pipeline.sh (pid \(first ?? 0)) runs on"), "\(refusal)")
        #expect(pipeline.pid("pipeline") == first)
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "still")).status == 202, "the first goes on")

        let deadline = Date().addingTimeInterval(10)
        while !pipeline.log.contains("Ctrl-C stops everything") && Date() < deadline { usleep(50_000) }
        let banner = pipeline.log
        #expect(banner.contains(#""timestamp":"'"$(date -u +%Y-%m-%dT%H:%M:%SZ)"'""#), "the curl line takes the time it is run at")
        #expect(banner.contains("/postgres port=\(pipeline.pgPort) user=postgres dbname=meetperry\"") && banner.contains("psql \"host="))
        #expect(try pipeline.stop(SIGTERM) == 0)
    }
}
