import Foundation
import LibNATS
import LibPQ
import Synchronization
import TaskModel
import Testing
import TestSupport
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// Receivers and appliers joined through a JetStream stream, run as
/// operators would: real nats-server processes (one, or a three-node
/// cluster), the built programs, real HTTP, SIGKILL for nodes and appliers.
/// What one `receiver | applier` pipe makes of the same webhooks is the
/// reference; every webhook that got a 202 must be in the database.
@Suite(.serialized) struct JetStreamPipelineTests {
    // MARK: - Programs

    /// An applier in JetStream mode, its rejects and log in files.
    final class JetStreamApplier: @unchecked Sendable {
        let process: ChildProcess
        let rejectsPath: String
        let stderrPath: String

        init(urls: String, database: String, directory: String, name: String, replicas: Int = 1) throws {
            rejectsPath = "\(directory)/\(name).rejects"
            stderrPath = "\(directory)/\(name).stderr"
            process = try ChildProcess(executable("applier"), arguments: ["--batch-ms", "20"], environment: [
                "NATS_URL": urls, "NATS_REPLICAS": String(replicas), "DATABASE_URL": database, "LOG_LEVEL": "info",
                // What a killed applier had fetched goes to the other within seconds, not the default half minute.
                "NATS_ACK_WAIT_SECONDS": "3",
            ], stdin: .null, stdout: .file(rejectsPath), stderr: .file(stderrPath))
        }

        var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
        var rejects: [String] { ((try? String(contentsOfFile: rejectsPath, encoding: .utf8)) ?? "").split(separator: "\n").map(String.init) }

        /// SIGTERM; returns the exit code and the summary's counts.
        func stop() throws -> (code: Int32, applied: Int, duplicates: Int) {
            process.signal(SIGTERM)
            let code = try process.waitForExit(timeout: 60)
            func count(_ name: String) -> Int {
                guard let range = stderr.range(of: "applier finished: ") else { return -1 }
                let summary = stderr[range.upperBound...]
                guard let field = summary.split(separator: " ").first(where: { $0.hasPrefix(name + "=") }) else { return -1 }
                return Int(field.dropFirst(name.count + 1)) ?? -1
            }
            return (code, count("applied"), count("duplicates"))
        }
    }

    func receiver(_ cluster: NATSCluster, replicas: Int = 1) throws -> RunningReceiver {
        try RunningReceiver(environment: ["NATS_URL": cluster.urls, "NATS_REPLICAS": String(replicas), "QUEUE_TIMEOUT_SECONDS": "2"],
                            stdout: .null)
    }

    /// The body a sender posts for `webhook`.
    func body(_ webhook: Webhook) -> [UInt8] {
        webhookJSON(event: webhook.event.rawValue, id: webhook.taskId, userId: webhook.userId, content: webhook.content,
                    isCompleted: webhook.isCompleted, timestamp: webhook.timestamp.canonical)
    }

    /// Posts `webhook` until it gets a 202, trying the receivers in turn and
    /// waiting after each 503 or refused connection (a sender that retries).
    /// Returns the statuses it saw, the 202 last; [] if it never got one.
    func deliver(_ webhook: Webhook, to ports: [Int], first: Int, deadline: Date) -> [Int] {
        var statuses: [Int] = []
        var attempt = first
        while Date() < deadline {
            let port = ports[attempt % ports.count]
            attempt += 1
            if let answer = try? HTTPConnection(port: port, timeoutSeconds: 10).request(body: body(webhook)) {
                statuses.append(answer.status)
                if answer.status == 202 { return statuses }
                guard answer.status == 503 else { return statuses }
            }
            usleep(100_000)
        }
        return []
    }

    /// Identities of every event stored in the event log.
    func storedIdentities(_ conninfo: String) throws -> Set<String> {
        let db = try PGConnection(conninfo: conninfo)
        return Set(try db.execute("SELECT identity::text FROM meetperry.task_event").rows.compactMap { $0[0] })
    }

    /// Waits until the event log holds `count` events; returns how many it holds.
    @discardableResult
    func waitForEvents(_ count: Int, in conninfo: String, timeout: Double) throws -> Int {
        let deadline = Date().addingTimeInterval(timeout)
        var stored = 0
        while Date() < deadline {
            if let db = try? PGConnection(conninfo: conninfo),
               let n = try? db.execute("SELECT count(*) FROM meetperry.task_event").scalar.flatMap({ Int($0) }) {
                stored = n
                if n >= count { return n }
            }
            usleep(200_000)
        }
        return stored
    }

    /// What one `receiver | applier` pipe makes of `webhooks` posted in this order.
    func pipeReference(_ webhooks: [Webhook]) throws -> [[String?]] {
        let cluster = PostgresCluster.shared
        let db = cluster.conninfo(database: try cluster.makeDatabase())
        let pipe = try ReceiverApplierPipe(database: db)
        let connection = try HTTPConnection(port: pipe.receiver.port)
        for webhook in webhooks {
            let status = try connection.request(body: body(webhook)).status
            guard status == 202 else { throw TestFailure("the reference pipe answered \(status)") }
        }
        _ = try pipe.stop()
        return try taskRows(db)
    }

    func streamLeader(_ cluster: NATSCluster) -> Int? {
        guard let connection = try? NATSConnection(.init(servers: cluster.nodes.map(\.url), name: "test")) else { return nil }
        let deadline = Date().addingTimeInterval(10)
        while !connection.isConnected && Date() < deadline { usleep(20_000) }
        guard let js = try? JetStream(connection: connection, requestTimeoutMilliseconds: 2000),
              let leader = try? js.streamInfo("MEETPERRY")?.leader else { return nil }
        connection.close()
        return cluster.index(named: leader)
    }

    // MARK: - Tests

    /// Two receivers and two appliers on one database through an R3 stream on
    /// three nodes; thousands of webhooks with duplicates, shuffled, posted
    /// across both receivers by senders that retry 503s. Mid-load the stream
    /// leader is killed and started again, and so is an applier; at the end
    /// all three nodes restart. The table equals the pipe's, and every 202 is in it.
    @Test func aThreeNodeClusterLosesNoAcknowledgedWebhookThroughKilledNodesAndAppliers() throws {
        let cluster = try NATSCluster(nodes: 3)
        let postgres = PostgresCluster.shared
        let db = postgres.conninfo(database: try postgres.makeDatabase())
        let dir = try makeTemporaryDirectory("scaleout")
        let receivers = [try receiver(cluster, replicas: 3), try receiver(cluster, replicas: 3)]
        let appliers = Mutex([try JetStreamApplier(urls: cluster.urls, database: db, directory: dir, name: "a0", replicas: 3),
                              try JetStreamApplier(urls: cluster.urls, database: db, directory: dir, name: "a1", replicas: 3)])

        var generator = SeededGenerator(seed: 12)
        let histories = (0..<400).map { randomHistory(taskId: "task\($0)", using: &generator) }
        var shuffled = histories.flatMap { $0 }
        shuffled += shuffled.shuffled(using: &generator).prefix(shuffled.count / 10)  // duplicates
        shuffled.shuffle(using: &generator)
        let posts = shuffled
        #expect(posts.count > 1500, "thousands of webhooks: \(posts.count)")

        let ports = receivers.map(\.port)
        let accepted = Mutex<[Int]>([])
        let saw503 = Atomic<Int>(0)
        let lost = Atomic<Int>(0)
        let progress = Atomic<Int>(0)
        let happened = Mutex<[String]>([])
        let disrupted = Atomic<Bool>(false)
        @Sendable func note(_ event: String) { happened.withLock { $0.append("\(event) after \(progress.load(ordering: .relaxed)) posts") } }
        let deadline = Date().addingTimeInterval(240)
        let senders = 8
        let disruptions = Thread {
            func wait(until share: Double) { while progress.load(ordering: .relaxed) < Int(Double(posts.count) * share) && Date() < deadline { usleep(10_000) } }
            wait(until: 0.3)
            if let leader = self.streamLeader(cluster) {
                cluster.kill(leader)
                note("killed the stream leader \(cluster.nodes[leader].name)")
                usleep(2_000_000)
                if (try? cluster.start(leader)) != nil { note("started \(cluster.nodes[leader].name) again") }
            }
            wait(until: 0.6)
            let killed = appliers.withLock { $0[0] }
            killed.process.signal(SIGKILL)
            _ = try? killed.process.waitForExit()
            note("killed an applier")
            if let restarted = try? JetStreamApplier(urls: cluster.urls, database: db, directory: dir, name: "a0-again", replicas: 3) {
                appliers.withLock { $0[0] = restarted }
            }
            disrupted.store(true, ordering: .releasing)
        }
        disruptions.start()
        onThreads(senders) { sender in
            for index in stride(from: sender, to: posts.count, by: senders) {
                // The last tenth waits for the disruptions, so they all land mid-load
                // however fast the first nine tenths went.
                if index >= posts.count * 9 / 10 {
                    while !disrupted.load(ordering: .acquiring) && Date() < deadline { usleep(10_000) }
                }
                let statuses = self.deliver(posts[index], to: ports, first: index, deadline: deadline)
                if statuses.last == 202 { accepted.withLock { $0.append(index) } } else { lost.add(1, ordering: .relaxed) }
                if statuses.contains(503) { saw503.add(1, ordering: .relaxed) }
                progress.add(1, ordering: .relaxed)
                usleep(3_000)  // a paced load, so the disruptions land in the middle of it
            }
        }
        while !disruptions.isFinished { usleep(50_000) }
        #expect(lost.load(ordering: .relaxed) == 0, "every webhook got its 202 in the end")
        let log = happened.withLock { $0 }
        #expect(log.count == 3, "\(log)")
        #expect(log.allSatisfy { !$0.hasSuffix("after \(posts.count) posts") }, "all of it mid-load: \(log)")

        // All three nodes restart (a data-center power cut); the appliers carry on.
        for index in cluster.nodes.indices { cluster.kill(index) }
        for index in cluster.nodes.indices { try cluster.start(index, wait: false) }
        for index in cluster.nodes.indices { try cluster.waitUntilReady(index) }

        let distinct = Set(posts.map(EventIdentity.uuid(of:)))
        let stored = try waitForEvents(distinct.count, in: db, timeout: 180)
        #expect(stored == distinct.count, "every distinct event reached the event log (\(stored) of \(distinct.count))")
        let acknowledged = Set(accepted.withLock { $0 }.map { EventIdentity.uuid(of: posts[$0]) })
        #expect(acknowledged.isSubset(of: try storedIdentities(db)), "every 202 is in the database")
        #expect(try taskRows(db) == (try pipeReference(posts)), "the table is what one receiver | applier pipe makes")
        for applier in appliers.withLock({ $0 }) {
            #expect(try applier.stop().code == 0)
        }
        print("scale-out: \(posts.count) posts, \(saw503.load(ordering: .relaxed)) of them saw a 503 and were sent again; \(log)")
    }

    /// Every server down: the receiver answers 503 (never 202) and says so on
    /// /healthz; once the server is back it accepts again, and the applier
    /// resumes without losing an event or applying one twice.
    @Test func withEveryServerDownTheReceiverSays503AndBothResumeWhenItReturns() throws {
        let cluster = try NATSCluster()
        let postgres = PostgresCluster.shared
        let db = postgres.conninfo(database: try postgres.makeDatabase())
        let dir = try makeTemporaryDirectory("down")
        let receiver = try receiver(cluster)
        let applier = try JetStreamApplier(urls: cluster.urls, database: db, directory: dir, name: "applier")
        let before = (0..<30).map { Webhook(event: .created, timestamp: Timestamp(microsecondsSinceEpoch: 1_750_000_000_000_000 + Int64($0)),
                                            userId: "u", taskId: "before\($0)", content: "c", isCompleted: false) }
        for webhook in before { #expect(try httpRequest(port: receiver.port, body: body(webhook)).status == 202) }
        #expect(try waitForEvents(30, in: db, timeout: 30) == 30)

        cluster.kill(0)
        let during = (0..<20).map { Webhook(event: .updated, timestamp: Timestamp(microsecondsSinceEpoch: 1_750_000_100_000_000 + Int64($0)),
                                            userId: "u", taskId: "before\($0)", content: "edited", isCompleted: true) }
        var statuses: [Int] = []
        for webhook in during { statuses.append(try httpRequest(port: receiver.port, body: body(webhook)).status) }
        #expect(statuses.allSatisfy { $0 == 503 }, "no server, no 202: \(statuses)")
        let health = try httpRequest(port: receiver.port, "GET", "/healthz", headers: [:])
        #expect(health.status == 503 && health.text.contains("no NATS server reachable"))

        try cluster.start(0)
        try receiver.waitUntilHealthy()
        // A sender that retries after a 503: right after the restart a publish
        // can still time out (every write is fsynced, and CI's disks are busy).
        let deadline = Date().addingTimeInterval(60)
        for webhook in during + during.prefix(5) {
            let statuses = deliver(webhook, to: [receiver.port], first: 0, deadline: deadline)
            #expect(statuses.last == 202, "once the server is back every webhook gets its 202: \(statuses) \(receiver.stderr)")
        }
        #expect(try waitForEvents(50, in: db, timeout: 60) == 50)
        let rows = try taskRows(db)
        #expect(rows.count == 30)
        #expect(rows.filter { $0[2] == "edited" && $0[4] != nil }.count == 20)
        let summary = try applier.stop()
        #expect(summary.code == 0)
        #expect(summary.applied == 50, "each distinct event applied once: \(applier.stderr)")
        #expect(summary.duplicates >= 0)
    }

    /// A message in the stream that is not a webhook: one reject on stdout
    /// (with its stream sequence), terminated, never delivered again; the
    /// messages around it are applied.
    @Test func aMessageThatIsNotAWebhookIsRejectedOnceAndTerminated() throws {
        let cluster = try NATSCluster()
        let postgres = PostgresCluster.shared
        let db = postgres.conninfo(database: try postgres.makeDatabase())
        let dir = try makeTemporaryDirectory("garbage")
        let applier = try JetStreamApplier(urls: cluster.urls, database: db, directory: dir, name: "applier")
        let connection = try NATSConnection(.init(servers: [cluster.nodes[0].url], name: "test"))
        let deadline = Date().addingTimeInterval(20)
        while !connection.isConnected && Date() < deadline { usleep(20_000) }
        let acks = Mutex<[UInt64: Bool]>([:])
        let js = try JetStream(connection: connection) { token, result in
            if case .stored = result { acks.withLock { $0[token] = true } }
        }
        // The applier makes the stream and its consumer.
        while (try? js.consumerInfo(stream: "MEETPERRY", consumer: "appliers")) == nil && Date() < deadline { usleep(50_000) }
        let messages: [[UInt8]] = [
            Array("not json at all".utf8),
            [],
            stream([Webhook(event: .created, timestamp: Timestamp(microsecondsSinceEpoch: 1_750_000_000_000_000), userId: "u", taskId: "fine",
                            content: "ok", isCompleted: false)]).dropLast(),
            Array(#"{"event":"archived","timestamp":"2025-01-01T00:00:00Z","metadata":{"userId":"u","id":"x","content":"","isCompleted":false}}"#.utf8),
        ]
        for (token, message) in messages.enumerated() {
            try message.withUnsafeBytes { try js.publish(subject: "meetperry.webhooks", data: $0, messageId: "m\(token)", maxWaitMilliseconds: 5000, token: UInt64(token)) }
        }
        while acks.withLock({ $0.count }) < messages.count && Date() < deadline { usleep(20_000) }
        #expect(try waitForEvents(1, in: db, timeout: 30) == 1)
        var rejects: [String] = []
        while rejects.count < 3 && Date() < deadline { rejects = applier.rejects; usleep(50_000) }
        #expect(rejects.count == 3, "\(rejects)")
        #expect(rejects.map { try? JSONParser.parse(Array($0.utf8))["seq"] } == [.number("1"), .number("2"), .number("4")])
        #expect(rejects[2].contains("unknown event"))
        // Terminated and acknowledged: nothing is waiting to be delivered again.
        var state = try js.consumerInfo(stream: "MEETPERRY", consumer: "appliers")
        while (state?.ackPending ?? 1) > 0 && Date() < deadline {
            usleep(50_000)
            state = try js.consumerInfo(stream: "MEETPERRY", consumer: "appliers")
        }
        #expect(state?.ackPending == 0 && state?.pending == 0 && state?.redelivered == 0)
        #expect(try applier.stop().code == 0)
        // Another applier on the same consumer finds nothing to redo.
        let second = try JetStreamApplier(urls: cluster.urls, database: db, directory: dir, name: "second")
        usleep(1_500_000)
        #expect(second.rejects.isEmpty)
        #expect(try second.stop().applied == 0)
        connection.close()
    }
}
