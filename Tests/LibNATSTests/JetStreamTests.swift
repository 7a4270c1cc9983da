import Foundation
import JetStreamSetup
import LibNATS
import Logging
import Synchronization
import Testing
import TestSupport

/// The libnats wrapper against a real nats-server: a stream made and read
/// back, publishes acknowledged (and a duplicate id stored once), a pull
/// consumer's fetch, ack, term and redelivery, and a publish with no server.
@Suite(.serialized) struct JetStreamTests {
    /// Collects acknowledgements by token.
    final class Acks: Sendable {
        let results = Mutex<[UInt64: PublishResult]>([:])
        func record(_ token: UInt64, _ result: PublishResult) { results.withLock { $0[token] = result } }
        func wait(for count: Int, timeout: Double = 10) -> [UInt64: PublishResult] {
            let deadline = Date().addingTimeInterval(timeout)
            while Date() < deadline {
                let now = results.withLock { $0 }
                if now.count >= count { return now }
                usleep(10_000)
            }
            return results.withLock { $0 }
        }
    }

    func connect(_ cluster: NATSCluster) throws -> NATSConnection {
        let connection = try NATSConnection(.init(servers: cluster.nodes.map(\.url), name: "test"))
        let deadline = Date().addingTimeInterval(10)
        while !connection.isConnected && Date() < deadline { usleep(10_000) }
        return connection
    }

    @Test func publishesFetchesAndSettlesMessages() throws {
        let cluster = try NATSCluster()
        let connection = try connect(cluster)
        let acks = Acks()
        let js = try JetStream(connection: connection, onAck: { acks.record($0, $1) })
        #expect(try js.streamInfo("T") == nil, "no stream yet")
        var settings = StreamSettings(name: "T", subjects: ["t.in"])
        settings.maxAgeNanoseconds = 3_600_000_000_000
        let made = try js.addStream(settings)
        #expect(made.settings == settings)

        for (token, id) in [(1, "a"), (2, "b"), (3, "a")] {
            try Array("message \(token)".utf8).withUnsafeBytes {
                try js.publish(subject: "t.in", data: $0, messageId: id, maxWaitMilliseconds: 5000, token: UInt64(token))
            }
        }
        let results = acks.wait(for: 3)
        guard case .stored(let first, false)? = results[1], case .stored(let second, false)? = results[2],
              case .stored(let third, true)? = results[3] else {
            Issue.record("unexpected acknowledgements: \(results)")
            return
        }
        #expect(first == 1 && second == 2 && third == 1, "the same id within the window is stored once")
        #expect(try js.streamInfo("T")?.messages == 2)

        try js.addConsumer(stream: "T", ConsumerSettings(durableName: "c", filterSubject: "t.in"))
        #expect(try js.consumerInfo(stream: "T", consumer: "c")?.settings.filterSubject == "t.in")
        let subscription = try PullSubscription(jetStream: js, stream: "T", consumer: "c")
        let fetched = try subscription.fetch(batch: 10, timeoutMilliseconds: 2000)
        #expect(fetched.map { String(decoding: $0.data, as: UTF8.self) } == ["message 1", "message 2"])
        #expect(fetched.map(\.streamSequence) == [1, 2] && fetched.allSatisfy { $0.deliveries == 1 })
        try fetched[0].ack()
        try fetched[1].nak()
        let again = try subscription.fetch(batch: 10, timeoutMilliseconds: 2000)
        #expect(again.map(\.streamSequence) == [2] && again.first?.deliveries == 2, "a nak'ed message comes again")
        try again[0].term()
        #expect(try subscription.fetch(batch: 10, timeoutMilliseconds: 300).isEmpty, "acknowledged and terminated: nothing more")
        let state = try js.consumerInfo(stream: "T", consumer: "c")
        #expect(state?.ackPending == 0 && state?.pending == 0)
    }

    @Test func withNoServerAPublishFailsAndNeverSucceeds() throws {
        let connection = try NATSConnection(.init(servers: ["nats://127.0.0.1:\(freePort())"], name: "test"))
        #expect(!connection.isConnected)
        let acks = Acks()
        let js = try JetStream(connection: connection, requestTimeoutMilliseconds: 500, onAck: { acks.record($0, $1) })
        do {
            try Array("x".utf8).withUnsafeBytes {
                try js.publish(subject: "t.in", data: $0, messageId: "x", maxWaitMilliseconds: 300, token: 7)
            }
            let results = acks.wait(for: 1, timeout: 5)
            guard case .failed(let error)? = results[7] else { Issue.record("expected a failure, got \(results)"); return }
            #expect(error.isTimeout)
        } catch {
            // Refused at once is as good: never stored, never acknowledged.
            #expect(acks.results.withLock { $0.isEmpty })
        }
        #expect(throws: NATSError.self) { try js.streamInfo("T") }
    }
}

/// meetperry's stream and consumer made the first time, and left as they
/// are (and logged) when an operator made them otherwise.
@Suite(.serialized) struct JetStreamSetupTests {
    @Test func makesTheStreamAndConsumerOnceAndUsesOthersAsTheyAre() throws {
        let cluster = try NATSCluster()
        let connection = try NATSConnection(.init(servers: [cluster.nodes[0].url], name: "test"))
        let deadline = Date().addingTimeInterval(10)
        while !connection.isConnected && Date() < deadline { usleep(10_000) }
        let js = try JetStream(connection: connection)
        let logger = Logger(label: "test")
        var settings = JetStreamSettings(servers: [cluster.nodes[0].url])
        settings.ackWaitSeconds = 7
        let made = try JetStreamSetup.ensureStream(js, settings, logger: logger)
        #expect(made.settings.maxAgeNanoseconds == 168 * 3_600 * 1_000_000_000 && made.settings.replicas == 1)
        #expect(made.settings.duplicateWindowNanoseconds == 120_000_000_000 && made.settings.fileStorage)
        #expect(made.settings.subjects == ["meetperry.webhooks"])
        try JetStreamSetup.ensureConsumer(js, settings, logger: logger)
        #expect(try js.consumerInfo(stream: "MEETPERRY", consumer: "appliers")?.settings.ackWaitNanoseconds == 7_000_000_000)

        // Asked again with other settings: the existing ones stay.
        var other = settings
        other.maxAgeHours = 1
        other.ackWaitSeconds = 60
        #expect(try JetStreamSetup.ensureStream(js, other, logger: logger).settings.maxAgeNanoseconds == made.settings.maxAgeNanoseconds)
        try JetStreamSetup.ensureConsumer(js, other, logger: logger)
        #expect(try js.consumerInfo(stream: "MEETPERRY", consumer: "appliers")?.settings.ackWaitNanoseconds == 7_000_000_000)
        connection.close()
    }

    @Test func refusesServersNamesAndSubjectsItCannotUse() throws {
        #expect(try JetStreamSettings.servers(from: "nats://a:4222, b:4223") == ["nats://a:4222", "nats://b:4223"])
        for bad in ["", "nats://a", "http://a:1", "nats://a:0", "nats://a:99999", "a b:1"] {
            #expect(throws: JetStreamSettings.Invalid.self, "\(bad)") { try JetStreamSettings.servers(from: bad) }
        }
        #expect(throws: JetStreamSettings.Invalid.self) { try JetStreamSettings.checkName("MEET.PERRY", variable: "NATS_STREAM") }
        #expect(throws: JetStreamSettings.Invalid.self) { try JetStreamSettings.checkSubject("a.*", variable: "NATS_SUBJECT") }
        #expect(throws: JetStreamSettings.Invalid.self) { try JetStreamSettings.checkSubject("a..b", variable: "NATS_SUBJECT") }
        try JetStreamSettings.checkSubject("meetperry.webhooks", variable: "NATS_SUBJECT")
    }
}

/// What a server says of itself when a client connects, and the release order JetStream mode's minimum relies on.
@Suite struct ServerAnnouncementTests {
    @Test func anInfoLineGivesTheVersionTheNameAndTheClusterURLs() throws {
        let line = #"INFO {"server_id":"NABC","server_name":"nats-2","version":"2.15.1","proto":1,"go":"go1.24","host":"0.0.0.0","port":4222,"#
            + #""headers":true,"jetstream":true,"max_payload":1048576,"connect_urls":["10.0.0.1:4222","10.0.0.3:4222"]}"#
        let announced = try ServerAnnouncement.parse(line, url: "nats://nats-2:4222")
        #expect(announced.serverName == "nats-2" && announced.version.text == "2.15.1" && announced.jetStream)
        #expect(announced.connectURLs == ["10.0.0.1:4222", "10.0.0.3:4222"])
        #expect(throws: NATSError.self) { try ServerAnnouncement.parse("-ERR 'Authorization Violation'", url: "x:1") }
        #expect(throws: NATSError.self) { try ServerAnnouncement.parse(#"INFO {"server_id":"x"}"#, url: "x:1") }
        #expect(ServerAnnouncement.address("tls://user:pw@[::1]:4443/") == "::1:4443")
        #expect(ServerAnnouncement.address("nats-1.internal:4222") == "nats-1.internal:4222")
    }

    @Test func releasesOrderAsSemanticVersionsDo() throws {
        let minimum = ServerCheck.minimumVersion
        for older in ["2.9.10", "2.10.23", "2.12.2", "2.12.3-beta.1", "v2.11.11", "1.99.99"] {
            #expect(try #require(ServerVersion(older)) < minimum, "\(older)")
        }
        for newer in ["2.12.3", "v2.12.3", "2.12.4", "2.15.1", "2.15.1+binary", "3.0.0"] {
            #expect(!(try #require(ServerVersion(newer)) < minimum), "\(newer)")
        }
        #expect(ServerVersion("2.12") == nil && ServerVersion("two") == nil && ServerVersion("2.x.1") == nil)
    }
}

/// The three-node cluster configuration `deploy/jetstream/` ships is one nats-server accepts.
@Suite struct DeployedClusterConfigTests {
    @Test(arguments: [1, 2, 3]) func nodeConfigurationIsValid(node: Int) throws {
        let path = packageRoot() + "/deploy/jetstream/nats-\(node).conf"
        let dir = try makeTemporaryDirectory("natsconf")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let server = try NATSCluster.currentServer()
        let check = try ChildProcess(server, arguments: ["-t", "-c", path], stdout: .file(dir + "/out"), stderr: .file(dir + "/err"))
        #expect(try check.waitForExit(timeout: 30) == 0, "\(String(describing: try? String(contentsOfFile: dir + "/err", encoding: .utf8)))")
        let text = try String(contentsOfFile: path, encoding: .utf8)
        #expect(text.contains("server_name: nats-\(node)") && text.contains("jetstream"))
        #expect(!text.contains("nats-\(node).internal:6222"), "a node does not route to itself")
        // Durable before acknowledged: every node fsyncs each write before it counts towards a quorum,
        // and all three say the same in their jetstream block (the tests and benchmarks run nats-1's).
        let settings = try NATSCluster.deployJetStreamSettings()
        #expect(settings.contains("sync_interval: always"), "\(settings)")
        let block = text[text.range(of: "jetstream {")!.upperBound...].prefix { $0 != "}" }
        for line in settings { #expect(block.contains(line), "nats-\(node).conf has \(line)") }
    }
}
