import Foundation
import Testing
import TestSupport
import WebhookModel
@testable import ReceiverCore

/// The built `receiver` executable, its stdout on a real pipe, spoken to over real HTTP.
@Suite(.serialized) struct ReceiverProcessTests {
    func json(_ bytes: [UInt8]) throws -> JSONValue { try JSONParser.parse(bytes) }

    func taskIds(_ lines: [String]) throws -> [String] {
        try lines.map { line in
            let record = try Webhook.decode(Array(line.utf8))
            return record.webhook.taskId
        }
    }

    @Test func answersEveryStatusOfTheContract() throws {
        let receiver = try RunningReceiver(environment: ["MAX_BODY_BYTES": "1000"])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let port = receiver.port

        let accepted = try httpRequest(port: port, headers: ["Content-Type": "application/json; charset=utf-8", "webhook-id": "msg_1"], body: webhookJSON())
        #expect(accepted.status == 202)
        #expect(try json(accepted.body)["status"] == .string("accepted"))

        let unknown = try httpRequest(port: port, body: webhookJSON(event: "archived"))
        #expect(unknown.status == 400)
        #expect(try json(unknown.body)["error"] == .string("unknown event"))

        let invalid = try httpRequest(port: port, body: Array(#"{"event":"created","timestamp":"2025-02-30T10:00:00Z","metadata":{"userId":"1","id":"9","content":"x","isCompleted":"no"}}"#.utf8))
        #expect(invalid.status == 422)
        guard case .array(let detail)? = try json(invalid.body)["detail"] else { Issue.record("no detail list"); return }
        #expect(detail.map { $0["loc"] } == [.array([.string("timestamp")]), .array([.string("metadata"), .string("isCompleted")])])
        #expect(detail[1]["msg"] == .string("expected a boolean, got a string"))

        let malformed = try httpRequest(port: port, body: Array("{\"event\": ".utf8))
        #expect(malformed.status == 422)

        let notJSON = try httpRequest(port: port, headers: ["Content-Type": "text/plain"], body: webhookJSON())
        #expect(notJSON.status == 415)
        let noType = try httpRequest(port: port, headers: [:], body: webhookJSON())
        #expect(noType.status == 415)

        let tooLarge = try httpRequest(port: port, body: webhookJSON(content: String(repeating: "x", count: 2000)))
        #expect(tooLarge.status == 413)

        let wrongMethod = try httpRequest(port: port, "GET", "/webhook", headers: [:])
        #expect(wrongMethod.status == 405)
        #expect(wrongMethod.header("allow") == "POST")
        #expect(try httpRequest(port: port, "DELETE", "/webhook", headers: [:]).status == 405)

        let notFound = try httpRequest(port: port, "POST", "/hooks", body: webhookJSON())
        #expect(notFound.status == 404)
        #expect(try json(notFound.body)["error"] != nil)

        let health = try httpRequest(port: port, "GET", "/healthz", headers: [:])
        #expect(health.status == 200)
        #expect(try json(health.body) == .object([("status", .string("ok")), ("output", .string("stdout"))]))

        // Every answer above is counted by status; the write path is measured.
        let metrics = try httpRequest(port: port, "GET", "/metrics", headers: [:])
        #expect(metrics.status == 200)
        #expect(metrics.header("content-type")?.hasPrefix("text/plain") == true)
        for (status, count) in [(202, 1), (400, 1), (401, 0), (404, 1), (405, 2), (413, 1), (415, 2), (422, 2)] where count > 0 {
            #expect(metrics.text.contains(#"meetperry_receiver_requests_total{status="\#(status)"} \#(count)"#), "status \(status)")
        }
        #expect(metrics.text.contains("meetperry_receiver_stream_lines_total 1"))
        #expect(metrics.text.contains("meetperry_receiver_stream_write_seconds_count 1"))
        #expect(metrics.text.contains("meetperry_receiver_queue_depth"))
        #expect(metrics.text.contains("meetperry_receiver_stream_bytes_total"))

        // Only the one valid webhook reached the stream.
        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        let out = try lines.waitForEOF()
        #expect(out.count == 1)
        let record = try Webhook.decode(Array(out[0].utf8))
        #expect(record.deliveryId == "msg_1")
        #expect(record.receivedAt != nil)
        #expect(out[0].hasPrefix(#"{"event":"created","timestamp":"2025-04-01T18:23:45.000000Z","metadata":{"userId":"1","id":"42","content":"Buy milk","isCompleted":false},"receivedAt":""#))
    }

    @Test func writesEveryTimestampFormInCanonicalUTC() throws {
        let forms = [
            ("2025-04-01T14:23:45-04:00", "2025-04-01T18:23:45.000000Z"),
            ("2025-04-01 14:23:45.5+0200", "2025-04-01T12:23:45.500000Z"),
            ("2025-04-01T14:23:45.123456789Z", "2025-04-01T14:23:45.123457Z"),
            ("2025-04-01T14:23:45", "2025-04-01T14:23:45.000000Z"),
        ]
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        for (i, form) in forms.enumerated() {
            #expect(try httpRequest(port: receiver.port, body: webhookJSON(id: "t\(i)", timestamp: form.0)).status == 202)
        }
        let impossible = try httpRequest(port: receiver.port, body: webhookJSON(timestamp: "2025-02-30T00:00:00Z"))
        #expect(impossible.status == 422)
        let out = try lines.waitForLines(forms.count)
        for (i, form) in forms.enumerated() {
            #expect(out[i].contains(#""timestamp":"\#(form.1)""#))
        }
    }

    @Test func writesExactlyOneWholeLinePerAcceptedWebhookUnderConcurrency() throws {
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let threads = 16, perThread = 250
        let accepted = Collected<String>()
        let failures = Collected<String>()
        onThreads(threads) { t in
            do {
                var connection = try HTTPConnection(port: receiver.port)
                for i in 0..<perThread {
                    // Odd threads reconnect every time; some bodies are larger than a pipe's atomic write.
                    if t % 2 == 1 { connection = try HTTPConnection(port: receiver.port) }
                    let id = "t\(t)-\(i)"
                    let content = String(repeating: "\(t)", count: i % 50 == 0 ? 9000 : 20)
                    let result = try connection.request(body: webhookJSON(id: id, content: content))
                    if result.status == 202 { accepted.append(id) } else { failures.append("\(id): \(result.status)") }
                }
            } catch {
                failures.append("thread \(t): \(error)")
            }
        }
        #expect(failures.all.isEmpty)
        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        let out = try lines.waitForEOF()
        #expect(lines.trailingPartialLine.isEmpty)
        #expect(out.count == threads * perThread)
        #expect(Set(try taskIds(out)) == Set(accepted.all))
        #expect(Set(out).count == out.count)
    }

    @Test func slowReaderGets503WithBoundedMemoryAndEveryAcceptedLineLater() throws {
        let receiver = try RunningReceiver(environment: ["QUEUE_CAPACITY": "8"])
        let accepted = Collected<String>()
        let refused = Collected<HTTPResult>()
        let refusedIds = Collected<String>()
        let errors = Collected<String>()
        let content = String(repeating: "m", count: 2000)
        let done = DispatchGroup()
        done.enter()
        Thread {
            // More senders than the queue and the batch being written can hold,
            // so some are always free to be told 503.
            onThreads(24) { t in
                for i in 0..<30 {
                    do {
                        let result = try httpRequest(port: receiver.port, body: webhookJSON(id: "s\(t)-\(i)", content: content))
                        if result.status == 202 { accepted.append("s\(t)-\(i)") } else { refused.append(result); refusedIds.append("s\(t)-\(i)") }
                    } catch {
                        errors.append("\(error)")
                    }
                }
            }
            done.leave()
        }.start()

        // Nobody reads stdout yet: the pipe fills, then the queue, then 503s come back at once.
        let deadline = Date().addingTimeInterval(60)
        while refused.all.count < 100 && Date() < deadline { usleep(20_000) }
        #expect(refused.all.count >= 100)
        #expect(refused.all.allSatisfy { $0.status == 503 && $0.header("retry-after") != nil })
        let rss = receiver.process.residentBytes ?? 0
        #expect(rss < 128 * 1_048_576, "RSS \(rss) bytes with a stalled reader")

        // The reader resumes: every 202 comes out. (A line the reader had taken
        // part of when its sender's wait ran out is finished in the stream though
        // refused: a retry of it is a duplicate, which the applier ignores.)
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        done.wait()
        #expect(errors.all.isEmpty)
        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        let out = try taskIds(try lines.waitForEOF())
        #expect(Set(accepted.all).isSubset(of: out), "every 202 is in the stream")
        #expect(Set(out).subtracting(accepted.all).isSubset(of: refusedIds.all))
        #expect(out.count - accepted.all.count <= 3, "at most a line per stall is both refused and written: \(out.count - accepted.all.count)")
        #expect(Set(out).count == out.count)
        #expect(accepted.all.count + refused.all.count == 24 * 30)
    }

    @Test func aStalledReaderNeverHoldsASenderPastItsDeadline() throws {
        let receiver = try RunningReceiver(environment: ["QUEUE_TIMEOUT_SECONDS": "3"])
        let statuses = Collected<Int>()
        let accepted = Collected<String>()
        let unanswered = Collected<String>()
        let content = String(repeating: "q", count: 4000)
        // Nobody reads stdout. 32 senders, 13 webhooks of 4 KB each, every sender
        // giving up after 5 s (Shopify's deadline) as a real one would.
        onThreads(32) { t in
            var connection = try? HTTPConnection(port: receiver.port, timeoutSeconds: 5)
            for i in 0..<13 {
                let id = "d\(t)-\(i)"
                do {
                    guard let open = connection else { throw TestFailure("no connection") }
                    let result = try open.request(body: webhookJSON(id: id, content: content))
                    statuses.append(result.status)
                    if result.status == 202 { accepted.append(id) }
                    if result.status == 503 && result.header("retry-after") == nil { unanswered.append("\(id): 503 without Retry-After") }
                } catch {
                    unanswered.append(id)
                    connection = try? HTTPConnection(port: receiver.port, timeoutSeconds: 5)
                }
            }
        }
        #expect(unanswered.all.isEmpty, "\(unanswered.all.count) of \(32 * 13) got no answer within 5 s: \(unanswered.all.prefix(5))")
        #expect(statuses.all.allSatisfy { $0 == 202 || $0 == 503 })
        #expect(statuses.all.filter { $0 == 503 }.count > 0)
        let health = try httpRequest(port: receiver.port, "GET", "/healthz")
        #expect(health.status == 503 && health.text.contains("stalled"), "a load balancer is told to go elsewhere")
        #expect((receiver.process.residentBytes ?? 0) < 128 * 1_048_576)

        // The reader resumes: every 202 is in the stream, and the receiver is healthy again.
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        try waitUntil("healthy again") { (try? httpRequest(port: receiver.port, "GET", "/healthz"))?.status == 200 }
        #expect(try httpRequest(port: receiver.port, body: webhookJSON(id: "after-the-stall")).status == 202)
        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        let out = Set(try taskIds(try lines.waitForEOF()))
        #expect(Set(accepted.all + ["after-the-stall"]).isSubset(of: out))
        #expect(receiver.stderr.contains("the stream reader is stalled"))
    }

    @Test func sigtermUnderLoadKeepsEveryPromise() throws {
        let receiver = try RunningReceiver()
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let accepted = Collected<String>()
        let posted = Collected<String>()
        let done = DispatchGroup()
        done.enter()
        Thread {
            onThreads(8) { t in
                var i = 0
                while true {
                    let id = "g\(t)-\(i)"
                    i += 1
                    posted.append(id)
                    guard let result = try? httpRequest(port: receiver.port, body: webhookJSON(id: id)) else { return }
                    if result.status == 202 { accepted.append(id) }
                    if result.status == 503 { return }
                }
            }
            done.leave()
        }.start()
        while accepted.all.count < 300 { usleep(10_000) }
        receiver.process.signal(SIGTERM)
        done.wait()
        #expect(try receiver.process.waitForExit() == 0)
        let out = try lines.waitForEOF()
        let written = Set(try taskIds(out))
        #expect(Set(accepted.all).isSubset(of: written), "a 202 is missing from stdout")
        #expect(written.isSubset(of: Set(posted.all)))
        #expect(lines.trailingPartialLine.isEmpty)
    }

    @Test func closedStdoutMeansNo202AndAnIOErrorExit() throws {
        let receiver = try RunningReceiver()
        receiver.process.closeStdout()
        var statuses: [Int] = []
        for i in 0..<5 {
            if let result = try? httpRequest(port: receiver.port, body: webhookJSON(id: "c\(i)")) { statuses.append(result.status) }
        }
        #expect(!statuses.isEmpty)
        #expect(statuses.allSatisfy { $0 == 503 }, "statuses: \(statuses)")
        #expect(try receiver.process.waitForExit() == 74)
        #expect(receiver.stderr.contains("EPIPE"))
    }

    @Test func aReaderThatGoesAwayIsNoticedWithoutTraffic() throws {
        let receiver = try RunningReceiver()
        receiver.process.closeStdout()
        // No webhook arrives to hit EPIPE: the idle writer looks at its output itself.
        #expect(try receiver.process.waitForExit(timeout: 10) == 74)
        #expect(receiver.stderr.contains("EPIPE"))
    }

    @Test func verifiesStandardWebhooksSignatures() throws {
        let secret = "whsec_" + Data("a test secret of some length".utf8).base64EncodedString()
        let receiver = try RunningReceiver(environment: ["WEBHOOK_SECRET": secret])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let signer = try SignatureVerifier(secret: secret)
        let body = webhookJSON(id: "signed")
        let now = String(Int(Date().timeIntervalSince1970))
        func post(id: String, timestamp: String, signature: String?, body: [UInt8]) throws -> Int {
            var headers = ["Content-Type": "application/json", "webhook-id": id, "webhook-timestamp": timestamp]
            headers["webhook-signature"] = signature
            return try httpRequest(port: receiver.port, headers: headers, body: body).status
        }
        let good = signer.signature(id: "msg_ok", timestamp: now, body: body)
        #expect(try post(id: "msg_ok", timestamp: now, signature: "v1,Zm9v \(good)", body: body) == 202)
        #expect(try post(id: "msg_ok", timestamp: now, signature: good, body: webhookJSON(id: "tampered")) == 401)
        #expect(try post(id: "msg_ok", timestamp: now, signature: nil, body: body) == 401)
        let old = String(Int(Date().timeIntervalSince1970) - 600)
        #expect(try post(id: "msg_old", timestamp: old, signature: signer.signature(id: "msg_old", timestamp: old, body: body), body: body) == 401)
        let wrongKey = try SignatureVerifier(secret: "whsec_" + Data("another secret".utf8).base64EncodedString())
        #expect(try post(id: "msg_ok", timestamp: now, signature: wrongKey.signature(id: "msg_ok", timestamp: now, body: body), body: body) == 401)
        let out = try lines.waitForLines(1)
        #expect(try Webhook.decode(Array(out[0].utf8)).deliveryId == "msg_ok")
        receiver.process.signal(SIGINT)
        #expect(try receiver.process.waitForExit() == 0)
        #expect(try lines.waitForEOF().count == 1)
    }

    @Test func acceptsEitherOfTwoSecretsWhileOneIsRotated() throws {
        let old = "whsec_" + Data("the secret being retired".utf8).base64EncodedString()
        let new = "whsec_" + Data("the secret taking over".utf8).base64EncodedString()
        let receiver = try RunningReceiver(environment: ["WEBHOOK_SECRET": "\(old) \(new)"])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let now = String(Int(Date().timeIntervalSince1970))
        func post(_ id: String, signedWith secret: String) throws -> Int {
            let body = webhookJSON(id: id)
            let signature = try SignatureVerifier(secret: secret).signature(id: id, timestamp: now, body: body)
            return try httpRequest(port: receiver.port, headers: ["Content-Type": "application/json", "webhook-id": id,
                                                                  "webhook-timestamp": now, "webhook-signature": signature], body: body).status
        }
        #expect(try post("msg_old", signedWith: old) == 202)
        #expect(try post("msg_new", signedWith: new) == 202)
        #expect(try post("msg_other", signedWith: "whsec_" + Data("a third secret".utf8).base64EncodedString()) == 401)
        #expect(try lines.waitForLines(2).count == 2)
        receiver.process.signal(SIGINT)
        #expect(try receiver.process.waitForExit() == 0)

        let badSecond = try ChildProcess(executable("receiver"), environment: ["WEBHOOK_SECRET": "\(old) whsec_!!"], stdout: .null, stderr: .null)
        #expect(try badSecond.waitForExit() == 64, "an unusable second secret stops start-up")
    }

    @Test func archivesEveryAcceptedLineBeforeAnswering() throws {
        let dir = try makeTemporaryDirectory()
        let archive = dir + "/archive.ndjson"
        let receiver = try RunningReceiver(environment: ["ARCHIVE_PATH": archive])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        let accepted = Collected<String>()
        onThreads(8) { t in
            for i in 0..<50 {
                let id = "a\(t)-\(i)"
                if (try? httpRequest(port: receiver.port, body: webhookJSON(id: id)))?.status == 202 {
                    accepted.append(id)
                    // The promise: by the time of the 202, the line is on disk.
                    let onDisk = (try? String(contentsOfFile: archive, encoding: .utf8)) ?? ""
                    if !onDisk.contains(#""id":"\#(id)""#) { accepted.append("MISSING \(id)") }
                }
            }
        }
        #expect(accepted.all.filter { $0.hasPrefix("MISSING") }.isEmpty)
        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        let out = try lines.waitForEOF()
        let archived = try String(contentsOfFile: archive, encoding: .utf8).split(separator: "\n").map(String.init)
        #expect(archived == out)
        #expect(out.count == 400)
    }

    @Test func rotatesTheArchiveBySizeWithoutLosingOrSplittingALine() throws {
        let dir = try makeTemporaryDirectory()
        let archive = dir + "/archive.ndjson"
        let receiver = try RunningReceiver(environment: ["ARCHIVE_PATH": archive, "ARCHIVE_ROTATE_BYTES": "2000"])
        let lines = LineCollector(fd: receiver.process.stdoutFD!)
        onThreads(4) { t in
            for i in 0..<25 { _ = try? httpRequest(port: receiver.port, body: webhookJSON(id: "r\(t)-\(i)")) }
        }
        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        let out = try lines.waitForEOF()
        #expect(out.count == 100)
        let files = try FileManager.default.contentsOfDirectory(atPath: dir).sorted()
        let segments = files.filter { $0.hasPrefix("archive.ndjson.") }
        #expect(segments.count >= 5, "segments: \(files)")
        #expect(segments.allSatisfy { $0.range(of: #"^archive\.ndjson\.\d{8}T\d{6}\.\d{6}Z$"#, options: .regularExpression) != nil })
        var archived: [String] = []
        for name in segments + ["archive.ndjson"] {
            let text = try String(contentsOfFile: dir + "/" + name, encoding: .utf8)
            #expect(text.isEmpty || text.hasSuffix("\n"))
            if name != "archive.ndjson" { #expect(text.utf8.count <= 2000 || text.split(separator: "\n").count == 1) }
            archived += text.split(separator: "\n").map(String.init)
        }
        #expect(archived == out, "segments in name order hold every line once, in stream order")
    }

    @Test func refusesBadSettingsWithUsageExit() throws {
        let bad = try ChildProcess(executable("receiver"), environment: ["HTTP_PORT": "eighty"], stdout: .null)
        #expect(try bad.waitForExit() == 64)
        let badSecret = try ChildProcess(executable("receiver"), environment: ["WEBHOOK_SECRET": "whsec_!!"], stdout: .null)
        #expect(try badSecret.waitForExit() == 64)
    }
}
