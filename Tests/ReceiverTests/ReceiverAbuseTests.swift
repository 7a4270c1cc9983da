import Foundation
import Testing
import TestSupport
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// Hostile and broken HTTP clients on loopback: the receiver keeps serving
/// everyone else, memory stays bounded, and slow or idle connections are
/// closed after REQUEST_TIMEOUT_SECONDS.
@Suite(.serialized) struct ReceiverAbuseTests {
    func serves(_ receiver: RunningReceiver) throws -> Bool {
        try httpRequest(port: receiver.port, body: webhookJSON(id: "still-serving-\(Int.random(in: 0..<1_000_000))")).status == 202
    }

    @Test func aClientSendingAByteASecondIsClosedWhileOthersAreServed() throws {
        let receiver = try RunningReceiver(environment: ["REQUEST_TIMEOUT_SECONDS": "2", "IDLE_TIMEOUT_SECONDS": "60"])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let slow = try HTTPConnection(port: receiver.port)
        let request = Array("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n".utf8)
        let started = Date()
        var closed = false
        for byte in request {
            if (try? slow.send([byte])) == nil { closed = true; break }
            #expect(try serves(receiver))
            if slow.waitForClose(timeout: 0.25) { closed = true; break }
        }
        if !closed { closed = slow.waitForClose(timeout: 5) }
        #expect(closed, "the slow connection is closed")
        #expect(Date().timeIntervalSince(started) < 6)
        #expect(receiver.stderr.contains("closing a connection that sent no whole request in time"))
        _ = lines
    }

    @Test func aBodyThatNeverEndsIsCutOffAndAnEndlessChunkedOneIsRefused() throws {
        let receiver = try RunningReceiver(environment: ["REQUEST_TIMEOUT_SECONDS": "2", "MAX_BODY_BYTES": "4096"])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let stalled = try HTTPConnection(port: receiver.port)
        try stalled.send(Array("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"event\":".utf8))
        #expect(try serves(receiver))
        #expect(stalled.waitForClose(timeout: 6), "a body that stops short is closed after the request timeout")

        let endless = try HTTPConnection(port: receiver.port)
        try endless.send(Array("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n".utf8))
        var answer: HTTPResult?
        for _ in 0..<64 {
            if (try? endless.send(Array("400\r\n".utf8) + [UInt8](repeating: 0x20, count: 1024) + Array("\r\n".utf8))) == nil { break }
        }
        answer = try? endless.readResponse()
        #expect(answer?.status == 413 || endless.waitForClose(timeout: 5))
        #expect(try serves(receiver))
        #expect(lines.snapshot.count >= 1)
    }

    @Test func aThousandIdleConnectionsNeitherBlockOthersNorGrowMemoryAndAreClosed() throws {
        var limit = rlimit()
        getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
        if limit.rlim_cur < 4096 { limit.rlim_cur = min(4096, limit.rlim_max); setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) }
        let receiver = try RunningReceiver(environment: ["REQUEST_TIMEOUT_SECONDS": "3"])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let before = receiver.process.residentBytes ?? 0
        var idle: [HTTPConnection] = []
        for _ in 0..<1000 { idle.append(try HTTPConnection(port: receiver.port)) }
        // Half of them even start a request and stop.
        for connection in idle.prefix(500) { try connection.send(Array("POST /webhook HTTP/1.1\r\nHost: x\r\n".utf8)) }
        let started = Date()
        #expect(try serves(receiver))
        #expect(Date().timeIntervalSince(started) < 2, "served at once despite 1,000 idle connections")
        let during = receiver.process.residentBytes ?? 0
        #expect(during - before < 64 * 1_048_576, "RSS grew by \(during - before) bytes")
        // All of them are closed by the server after the request timeout.
        let closed = idle.filter { $0.waitForClose(timeout: 10) }.count
        #expect(closed == 1000)
        #expect(try serves(receiver))
        _ = lines
    }

    @Test func oversizedHeadersAndGarbageAreRefusedWithoutHarm() throws {
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let big = try HTTPConnection(port: receiver.port)
        let huge = String(repeating: "a", count: 200_000)
        try? big.send(Array("POST /webhook HTTP/1.1\r\nHost: x\r\nX-Huge: \(huge)\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}".utf8))
        let bigAnswer = try? big.readResponse()
        #expect(bigAnswer == nil || (400..<500).contains(bigAnswer!.status), "status \(String(describing: bigAnswer?.status))")
        #expect(try serves(receiver))

        let garbage = try HTTPConnection(port: receiver.port)
        try garbage.send([0xFF, 0xFE, 0x00, 0x13, 0x37] + Array(" / HTTP/1.1\r\n\r\n".utf8))
        let garbageAnswer = try? garbage.readResponse()
        #expect(garbageAnswer == nil || garbageAnswer!.status == 400)
        #expect(try serves(receiver))

        // Non-UTF-8 in the body: a 422 naming the problem, not a crash.
        let binary = try httpRequest(port: receiver.port, body: Array(#"{"event":"created","timestamp":"2025-01-01T00:00:00Z","metadata":{"userId":"1","id":""#.utf8) + [0xC3, 0x28] + Array(#"","content":"","isCompleted":false}}"#.utf8))
        #expect(binary.status == 422)
        #expect(binary.text.contains("invalid UTF-8"))
        // Non-ASCII header values are just values.
        let odd = try HTTPConnection(port: receiver.port)
        try odd.send(Array("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nX-Odd: ".utf8) + [0xE9, 0xFF] + Array("\r\nContent-Length: \(webhookJSON(id: "odd").count)\r\n\r\n".utf8) + webhookJSON(id: "odd"))
        let oddAnswer = try? odd.readResponse()
        #expect(oddAnswer == nil || [202, 400].contains(oddAnswer!.status))
        #expect(try serves(receiver))
        _ = lines
    }

    @Test func pipelinedRequestsAreAnsweredInOrder() throws {
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let connection = try HTTPConnection(port: receiver.port)
        func request(_ body: [UInt8]) -> [UInt8] {
            Array("POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
        }
        try connection.send(request(webhookJSON(id: "first")) + request(webhookJSON(event: "archived")) + request(Array("{".utf8)) + request(webhookJSON(id: "last")))
        let statuses = try (0..<4).map { _ in try connection.readResponse().status }
        #expect(statuses == [202, 400, 422, 202])
        let out = try lines.waitForLines(2)
        #expect(out.map { try? Webhook.decode(Array($0.utf8)).webhook.taskId } == ["first", "last"])
    }
}
