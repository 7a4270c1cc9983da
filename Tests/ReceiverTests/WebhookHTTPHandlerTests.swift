import Logging
import NIOCore
import NIOEmbedded
import Synchronization
import Testing
@testable import ReceiverCore

/// The receiver's connection handler in process, on NIO's `EmbeddedChannel`:
/// real bytes in, real answers out, time moved by hand; no receiver spawned,
/// no socket. What the machine decides, the handler must carry out.
@Suite struct WebhookHTTPHandlerTests {
    /// A sink that keeps what it is given and answers each line as told.
    final class RecordingSink: LineSink, @unchecked Sendable {
        let lines = Mutex<[String]>([])
        let outcome: LineOutcome
        init(outcome: LineOutcome = .written) { self.outcome = outcome }
        func submit(_ lines: [SubmittedLine], on eventLoop: any EventLoop) {
            for line in lines {
                self.lines.withLock { $0.append(String(decoding: line.bytes, as: UTF8.self)) }
                line.completion(outcome)
            }
        }
        var trouble: SinkTrouble? { nil }
        var mode: String { "test" }
    }

    struct Connection {
        let channel: EmbeddedChannel
        let sink: RecordingSink
        let lifecycle: ReceiverLifecycle

        init(requestTimeout: Int = 30, idleTimeout: Int = 10, maxBody: Int = 1024, outcome: LineOutcome = .written) throws {
            var configuration = ReceiverConfiguration()
            configuration.requestTimeoutSeconds = requestTimeout
            configuration.idleTimeoutSeconds = idleTimeout
            configuration.maxBodyBytes = maxBody
            channel = EmbeddedChannel()
            sink = RecordingSink(outcome: outcome)
            lifecycle = ReceiverLifecycle()
            let handler = WebhookHTTPHandler(
                configuration: configuration, lifecycle: lifecycle, intake: WebhookIntake(configuration: configuration, verifier: nil),
                sink: sink, healthyBody: HealthAnswer.healthy(output: sink.mode),
                handOff: SinkHandOff(loop: channel.eventLoop, sink: sink), metrics: ReceiverMetrics(),
                logger: Logger(label: "test"), eventLoop: channel.eventLoop)
            try channel.pipeline.syncOperations.addHandler(handler)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 9)).wait()
        }

        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
            channel.embeddedEventLoop.run()
        }

        /// Every answer written so far, as text.
        func written() throws -> String {
            var text = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) { text += String(buffer: buffer) }
            return text
        }

        /// The status codes of the answers written so far, in order.
        func statuses() throws -> [Int] {
            try written().components(separatedBy: "HTTP/1.1 ").dropFirst().compactMap { Int($0.prefix(3)) }
        }

        func advance(seconds: Int64) {
            channel.embeddedEventLoop.advanceTime(by: .seconds(seconds))
        }
    }

    static let webhook = #"{"event": "created", "timestamp": "2025-04-01T14:23:45-04:00", "metadata": {"userId": "1", "id": "42", "content": "Buy milk", "isCompleted": false}}"#

    func post(_ body: String = webhook, headers: String = "") -> String {
        "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\(headers)Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
    }

    @Test func aWebhookIsHandedToTheSinkAndAnswered202() throws {
        let connection = try Connection()
        try connection.send(post())
        #expect(connection.sink.lines.withLock { $0.count } == 1)
        let answer = try connection.written()
        #expect(answer.hasPrefix("HTTP/1.1 202 Accepted\r\n"))
        #expect(answer.hasSuffix(#"{"status":"accepted"}"#))
        #expect(connection.channel.isActive, "HTTP/1.1 keeps the connection")
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let connection = try Connection()
        try connection.send(post() + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n" + "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n" + post("{"))
        #expect(try connection.statuses() == [202, 200, 404, 422])
    }

    @Test func expectContinueIsAnsweredBeforeTheBodyAndATooLargeOneIsRefusedAtOnce() throws {
        let connection = try Connection()
        let request = post(headers: "Expect: 100-continue\r\n")
        let headEnd = request.range(of: "\r\n\r\n")!.upperBound
        try connection.send(String(request[..<headEnd]))
        #expect(try connection.written() == "HTTP/1.1 100 Continue\r\n\r\n")
        try connection.send(String(request[headEnd...]))
        #expect(try connection.statuses() == [202])

        let small = try Connection(maxBody: 10)
        try small.send(post(headers: "Expect: 100-continue\r\n").components(separatedBy: "\r\n\r\n")[0] + "\r\n\r\n")
        let refused = try small.written()
        #expect(refused.hasPrefix("HTTP/1.1 413 "))
        #expect(refused.contains("Connection: close\r\n"))
        #expect(!small.channel.isActive, "closed rather than read a body that may come anyway")
        #expect(small.sink.lines.withLock { $0.isEmpty })
    }

    @Test func aBodyOverTheLimitIsAnswered413AndTheConnectionGoesOn() throws {
        let connection = try Connection(maxBody: 10)
        try connection.send(post() + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try connection.statuses() == [413, 200])
        #expect(connection.channel.isActive)
    }

    @Test func unreadableBytesAreAnswered400AndTheConnectionClosed() throws {
        let connection = try Connection()
        try connection.send("POST /webhook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}" + post())
        let answer = try connection.written()
        #expect(answer.hasPrefix("HTTP/1.1 400 Bad Request\r\n"))
        #expect(answer.contains("an HTTP/1.1 request without Host"))
        #expect(!connection.channel.isActive)
        #expect(connection.sink.lines.withLock { $0.isEmpty }, "nothing after it is read")
    }

    @Test func anIdleConnectionIsClosedAtTheIdleLimitAndASlowOneAtTheRequestLimit() throws {
        let idle = try Connection(requestTimeout: 30, idleTimeout: 10)
        idle.advance(seconds: 9)
        #expect(idle.channel.isActive)
        idle.advance(seconds: 1)
        #expect(!idle.channel.isActive, "nothing sent for the idle limit")

        let slow = try Connection(requestTimeout: 30, idleTimeout: 10)
        for _ in 0..<29 {
            try slow.send("X")  // never a whole request line
            slow.advance(seconds: 1)
        }
        #expect(slow.channel.isActive, "a byte a second is never idle")
        slow.advance(seconds: 1)
        #expect(!slow.channel.isActive, "but must deliver a whole request within the request limit")
        #expect(try slow.written().isEmpty)
    }

    @Test func anAnsweredRequestRestartsTheClock() throws {
        let connection = try Connection(requestTimeout: 30, idleTimeout: 10)
        connection.advance(seconds: 8)
        try connection.send(post())
        connection.advance(seconds: 8)
        #expect(connection.channel.isActive, "8 s since the answer, not 16 s since opening")
        connection.advance(seconds: 2)
        #expect(!connection.channel.isActive)
    }

    @Test func drainingAnswersTheNextRequestThenClosesAndClosesIdleConnectionsAfterASecond() throws {
        let busy = try Connection()
        busy.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        try busy.send(post())
        let answer = try busy.written()
        #expect(answer.hasPrefix("HTTP/1.1 202 "), "a webhook on an open connection is still taken")
        #expect(answer.contains("Connection: close\r\n"))
        #expect(!busy.channel.isActive)

        let idle = try Connection()
        idle.channel.pipeline.fireUserInboundEventTriggered(ChannelShouldQuiesceEvent())
        #expect(idle.channel.isActive)
        idle.advance(seconds: 1)
        #expect(!idle.channel.isActive)
    }

    @Test func aClientThatClosesItsSideGetsTheAnswersToWhatItSentWhole() throws {
        let connection = try Connection()
        try connection.channel.writeInbound(ByteBuffer(string: post() + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        connection.channel.pipeline.fireUserInboundEventTriggered(ChannelEvent.inputClosed)
        connection.channel.embeddedEventLoop.run()
        #expect(try connection.statuses() == [202, 200])
        #expect(!connection.channel.isActive)
    }

    @Test func aSinkThatCannotTakeTheLineIsAnswered503WithRetryAfter() throws {
        let connection = try Connection(outcome: .overloaded)
        try connection.send(post())
        let answer = try connection.written()
        #expect(answer.hasPrefix("HTTP/1.1 503 "))
        #expect(answer.contains("Retry-After: 1\r\n"))
        #expect(connection.channel.isActive)
    }

    @Test func healthSaysDrainingOnceTheReceiverDrains() throws {
        let connection = try Connection()
        try connection.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(try connection.written().hasSuffix(#"{"status":"ok","output":"test"}"#))
        connection.lifecycle.advance(to: .draining)
        try connection.send("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        let answer = try connection.written()
        #expect(answer.hasPrefix("HTTP/1.1 503 "))
        #expect(answer.hasSuffix("\r\n\r\n"), "HEAD: no body")
    }
}
