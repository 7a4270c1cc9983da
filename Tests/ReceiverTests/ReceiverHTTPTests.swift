import Foundation
import Testing
import TestSupport
import WebhookModel

/// HTTP/1.1 as senders speak it, through the built receiver: chunked
/// bodies, HTTP/1.0, HEAD, `Expect: 100-continue` with a body too large,
/// framing that could be read two ways, a client that half-closes after
/// pipelining, and the headers every answer carries.
@Suite(.serialized) struct ReceiverHTTPTests {
    func request(_ head: String, _ body: [UInt8] = []) -> [UInt8] { Array(head.utf8) + body }

    @Test func chunkedHTTP10AndHEADAreServed() throws {
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)

        // A chunked webhook, split anywhere, is one line.
        let body = webhookJSON(id: "chunked")
        let chunked = try HTTPConnection(port: receiver.port)
        try chunked.send(request("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 + String(20, radix: 16) + "\r\n", Array(body[..<20]) + Array("\r\n".utf8)))
        try chunked.send(Array((String(body.count - 20, radix: 16) + ";ext=1\r\n").utf8) + Array(body[20...]) + Array("\r\n0\r\n\r\n".utf8))
        let answer = try chunked.readResponse()
        #expect(answer.status == 202)
        #expect(answer.header("date") != nil, "every answer says when")
        #expect(answer.header("connection") == nil, "HTTP/1.1 keeps the connection without saying so")
        #expect(try chunked.request("GET", "/healthz", headers: [:]).status == 200, "and keeps it")

        // HTTP/1.0: closed after the answer unless keep-alive is asked for.
        let old = try HTTPConnection(port: receiver.port)
        try old.send(request("GET /healthz HTTP/1.0\r\n\r\n"))
        let oldAnswer = try old.readResponse()
        #expect(oldAnswer.status == 200 && oldAnswer.header("connection") == "close")
        #expect(old.waitForClose(timeout: 5))
        let kept = try HTTPConnection(port: receiver.port)
        try kept.send(request("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        #expect(try kept.readResponse().header("connection") == "keep-alive")
        try kept.send(request("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"))
        #expect(try kept.readResponse().status == 200, "a second request on the kept connection")

        // HEAD: the headers of the GET, no body (the next answer starts right after them).
        let head = try HTTPConnection(port: receiver.port)
        try head.send(request("HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"))
        let headAnswer = try head.readResponse(bodyless: true)
        #expect(headAnswer.status == 200 && headAnswer.header("content-length") == "33" && headAnswer.body.isEmpty)
        let after = try head.readResponse()
        #expect(after.text == #"{"status":"ok","output":"stdout"}"#)

        #expect(try lines.waitForLines(1).count == 1)
    }

    @Test func aBodyTooLargeForItsExpectIsRefusedBeforeItIsSent() throws {
        let receiver = try RunningReceiver(environment: ["MAX_BODY_BYTES": "100"])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let connection = try HTTPConnection(port: receiver.port, timeoutSeconds: 5)
        try connection.send(request("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5000\r\nExpect: 100-continue\r\n\r\n"))
        let answer = try connection.readResponse()
        #expect(answer.status == 413, "a final answer instead of 100 Continue")
        #expect(answer.header("connection") == "close")
        #expect(connection.waitForClose(timeout: 5))
        // Logged like every other refusal.
        let deadline = Date().addingTimeInterval(5)
        while !receiver.stderr.contains("status=413") && Date() < deadline { usleep(20_000) }
        #expect(receiver.stderr.contains("webhook refused") && receiver.stderr.contains("status=413"), "\(receiver.stderr)")
        _ = lines
    }

    /// `/metrics` off the public port: served on its own address, 404 on the public one.
    @Test func metricsCanListenOnAnAddressOfTheirOwn() throws {
        let metricsPort = freePort()
        let receiver = try RunningReceiver(environment: ["RECEIVER_METRICS_PORT": String(metricsPort)])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        #expect(try httpRequest(port: receiver.port, body: webhookJSON()).status == 202)
        let publicAnswer = try httpRequest(port: receiver.port, "GET", "/metrics", headers: [:])
        #expect(publicAnswer.status == 404, "\(publicAnswer.text)")
        let own = try httpRequest(port: metricsPort, "GET", "/metrics", headers: [:])
        #expect(own.status == 200 && metricSample(#"meetperry_receiver_requests_total{status="202"}"#, in: own.text) == 1, "\(own.text)")
        #expect(receiver.stderr.contains("serving metrics") && receiver.stderr.contains("127.0.0.1:\(metricsPort)"))
        _ = lines
    }

    @Test func framingThatCouldBeReadTwoWaysIsRefusedAndTheConnectionClosed() throws {
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        for framing in ["Content-Length: 4\r\nTransfer-Encoding: chunked", "Content-Length: 4\r\nContent-Length: 5",
                        "Transfer-Encoding: gzip, chunked"] {
            let connection = try HTTPConnection(port: receiver.port, timeoutSeconds: 5)
            try connection.send(request("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\(framing)\r\n\r\n0\r\n\r\n"))
            let answer = try connection.readResponse()
            #expect([400, 501].contains(answer.status), "\(framing)")
            #expect(answer.header("connection") == "close")
            #expect(connection.waitForClose(timeout: 5))
        }
        let version = try HTTPConnection(port: receiver.port, timeoutSeconds: 5)
        try version.send(request("GET /healthz HTTP/2.0\r\n\r\n"))
        #expect(try version.readResponse().status == 505)
        #expect(lines.snapshot.isEmpty)
    }

    @Test func aClientThatHalfClosesAfterPipeliningGetsEveryAnswer() throws {
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let connection = try HTTPConnection(port: receiver.port)
        var bytes: [UInt8] = []
        for n in 0..<3 {
            let body = webhookJSON(id: "half-\(n)")
            bytes += request("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n", body)
        }
        try connection.send(bytes)
        connection.shutdownWrite()
        let statuses = try (0..<3).map { _ in try connection.readResponse().status }
        #expect(statuses == [202, 202, 202])
        #expect(connection.waitForClose(timeout: 5), "then the receiver closes its side")
        let out = try lines.waitForLines(3)
        #expect(out.map { try? Webhook.decode(Array($0.utf8)).webhook.taskId } == ["half-0", "half-1", "half-2"])
    }
}
