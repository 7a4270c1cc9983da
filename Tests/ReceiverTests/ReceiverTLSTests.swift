import Foundation
import Testing
import TestSupport
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// A self-signed certificate for 127.0.0.1 and localhost, made with openssl.
private func makeCertificate(in dir: String, name: String) throws -> (certificate: String, key: String) {
    let certificate = "\(dir)/\(name).crt", key = "\(dir)/\(name).key"
    let openssl = try ChildProcess("/usr/bin/openssl", arguments: [
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", key, "-out", certificate, "-days", "2", "-subj", "/CN=\(name)",
        "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ], stdout: .null, stderr: .null)
    guard try openssl.waitForExit() == 0 else { throw TestFailure("openssl could not make a certificate") }
    return (certificate, key)
}

/// Runs a program to its end; its exit status and what it printed.
private func run(_ path: String, _ arguments: [String], dir: String) throws -> (status: Int32, output: String) {
    let (status, output, errors) = try runSeparately(path, arguments, dir: dir)
    return (status, output + errors)
}

/// The same, with stdout and stderr apart.
private func runSeparately(_ path: String, _ arguments: [String], dir: String) throws -> (status: Int32, output: String, errors: String) {
    let run = try runTool(path, arguments, timeout: 60)
    return (run.status, run.output, run.errors)
}

/// `curl` POSTing a webhook over HTTPS, trusting `ca`; prints the status code last.
private func curlPost(port: Int, ca: String, body: [UInt8], dir: String, extra: [String] = []) throws -> (status: Int32, output: String) {
    let file = dir + "/body-\(UInt32.random(in: 0...UInt32.max)).json"
    _ = FileManager.default.createFile(atPath: file, contents: Data(body))
    return try run("/usr/bin/curl", ["-sS", "--cacert", ca, "-H", "Content-Type: application/json", "--data-binary", "@" + file,
                                     "-o", "/dev/null", "-w", "%{http_code}"] + extra + ["https://127.0.0.1:\(port)/webhook"], dir: dir)
}

/// The built receiver serving HTTPS; ready once curl gets an answer from /healthz.
private final class TLSReceiver {
    let process: ChildProcess
    let port = freePort()
    let stderrPath: String
    let lines: LineCollector

    init(certificate: String, key: String, dir: String) throws {
        stderrPath = dir + "/receiver.stderr"
        process = try ChildProcess(executable("receiver"), environment: [
            "HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(port), "TLS_CERT_FILE": certificate, "TLS_KEY_FILE": key,
        ], stdout: .pipe, stderr: .file(stderrPath))
        lines = LineCollector(fd: process.stdoutFD!)
        try waitUntil("the receiver answers over HTTPS", timeout: 30) {
            (try? run("/usr/bin/curl", ["-sS", "--cacert", certificate, "-o", "/dev/null", "-w", "%{http_code}",
                                        "https://127.0.0.1:\(port)/healthz"], dir: dir).output.hasSuffix("200")) == true
                || !process.isRunning
        }
        guard process.isRunning else { throw TestFailure("receiver exited: \(stderr)") }
    }

    var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
}

@Suite struct ReceiverTLSTests {
    @Test func servesHTTPSWithTheGivenCertificateAndRefusesPlainHTTP() throws {
        let dir = try makeTemporaryDirectory("tls")
        let pair = try makeCertificate(in: dir, name: "first")
        let receiver = try TLSReceiver(certificate: pair.certificate, key: pair.key, dir: dir)
        let posted = try curlPost(port: receiver.port, ca: pair.certificate, body: webhookJSON(id: "over-tls"), dir: dir)
        #expect(posted.status == 0 && posted.output.hasSuffix("202"), "\(posted.output)")
        let line = try receiver.lines.waitForLines(1)[0]
        #expect(try Webhook.decode(Array(line.utf8)).webhook.taskId == "over-tls")

        // Plain HTTP to the TLS port gets no HTTP answer at all.
        #expect((try? httpRequest(port: receiver.port, body: webhookJSON(id: "plain")))?.status != 202)
        let plain = try run("/usr/bin/curl", ["-sS", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                              "-H", "Content-Type: application/json", "--data", "{}",
                                              "http://127.0.0.1:\(receiver.port)/webhook"], dir: dir)
        #expect(plain.status != 0, "curl over plain HTTP must fail: \(plain.output)")
        // A client that does not trust the certificate refuses it.
        let untrusted = try run("/usr/bin/curl", ["-sS", "-o", "/dev/null", "https://127.0.0.1:\(receiver.port)/healthz"], dir: dir)
        #expect(untrusted.status != 0)

        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        #expect(try receiver.lines.waitForEOF().count == 1, "only the HTTPS webhook was accepted")
    }

    @Test func sighupLoadsANewCertificateWithoutDroppingOpenConnections() throws {
        let dir = try makeTemporaryDirectory("tls-reload")
        let first = try makeCertificate(in: dir, name: "first")
        let second = try makeCertificate(in: dir, name: "second")
        let certificate = dir + "/live.crt", key = dir + "/live.key"
        try FileManager.default.copyItem(atPath: first.certificate, toPath: certificate)
        try FileManager.default.copyItem(atPath: first.key, toPath: key)
        let receiver = try TLSReceiver(certificate: certificate, key: key, dir: dir)

        // A client on one keep-alive connection: a webhook, then (once told) another on the same connection.
        let go = dir + "/go"
        let script = """
        import http.client, os, ssl, sys, time
        context = ssl.create_default_context(cafile=sys.argv[2])
        connection = http.client.HTTPSConnection("127.0.0.1", int(sys.argv[1]), context=context, timeout=30)
        body = '{"event":"created","timestamp":"2025-01-01T00:00:00Z","metadata":{"userId":"1","id":"%s","content":"c","isCompleted":false}}'
        for n, name in enumerate(["before-reload", "after-reload"]):
            if n == 1:
                while not os.path.exists(sys.argv[3]): time.sleep(0.05)
            connection.request("POST", "/webhook", body % name, {"Content-Type": "application/json"})
            response = connection.getresponse(); response.read()
            print(response.status, flush=True)
        """
        let client = try ChildProcess("/usr/bin/python3", arguments: ["-c", script, String(receiver.port), first.certificate, go],
                                      stdout: .pipe, stderr: .file(dir + "/client.err"))
        let statuses = LineCollector(fd: client.stdoutFD!)
        #expect(try statuses.waitForLines(1) == ["202"])

        // certbot renews: the files change, then SIGHUP.
        try FileManager.default.removeItem(atPath: certificate)
        try FileManager.default.removeItem(atPath: key)
        try FileManager.default.copyItem(atPath: second.certificate, toPath: certificate)
        try FileManager.default.copyItem(atPath: second.key, toPath: key)
        receiver.process.signal(SIGHUP)
        try waitUntil("the receiver reloads") { receiver.stderr.contains("TLS certificate and key reloaded") }
        #expect(receiver.process.isRunning)

        // New connections see the new certificate (and only trust in it works)...
        let trustingNew = try curlPost(port: receiver.port, ca: second.certificate, body: webhookJSON(id: "new-connection"), dir: dir)
        #expect(trustingNew.output.hasSuffix("202"), "\(trustingNew.output)")
        let trustingOld = try curlPost(port: receiver.port, ca: first.certificate, body: webhookJSON(id: "refused"), dir: dir)
        #expect(trustingOld.status != 0, "the old certificate is no longer served")
        // ...while the connection opened before the reload goes on.
        _ = FileManager.default.createFile(atPath: go, contents: nil)
        #expect(try statuses.waitForLines(2) == ["202", "202"], "\((try? String(contentsOfFile: dir + "/client.err", encoding: .utf8)) ?? "")")
        #expect(try client.waitForExit() == 0)

        // A reload with a broken key keeps serving the last good pair.
        _ = FileManager.default.createFile(atPath: key, contents: Data("not a key".utf8))
        receiver.process.signal(SIGHUP)
        try waitUntil("the failed reload is logged") { receiver.stderr.contains("keeping the previous TLS certificate") }
        #expect(try curlPost(port: receiver.port, ca: second.certificate, body: webhookJSON(id: "still-served"), dir: dir).output.hasSuffix("202"))

        receiver.process.signal(SIGTERM)
        #expect(try receiver.process.waitForExit() == 0)
        let ids = try receiver.lines.waitForEOF().map { try Webhook.decode(Array($0.utf8)).webhook.taskId }
        #expect(ids == ["before-reload", "new-connection", "after-reload", "still-served"])
    }

    @Test func unusableCertificateFilesStopStartUpNamingTheFile() throws {
        let dir = try makeTemporaryDirectory("tls-bad")
        let pair = try makeCertificate(in: dir, name: "good")
        let other = try makeCertificate(in: dir, name: "other")
        func start(_ environment: [String: String]) throws -> (Int32, String) {
            let log = dir + "/stderr-\(UInt32.random(in: 0...UInt32.max))"
            let process = try ChildProcess(executable("receiver"), environment: ["HTTP_HOST": "127.0.0.1", "HTTP_PORT": String(freePort())]
                .merging(environment) { $1 }, stdout: .null, stderr: .file(log))
            return (try process.waitForExit(), (try? String(contentsOfFile: log, encoding: .utf8)) ?? "")
        }
        let missing = try start(["TLS_CERT_FILE": pair.certificate, "TLS_KEY_FILE": dir + "/missing.key"])
        #expect(missing.0 == 64)
        #expect(missing.1.contains("TLS_KEY_FILE \(dir)/missing.key"), "\(missing.1)")
        let mismatched = try start(["TLS_CERT_FILE": pair.certificate, "TLS_KEY_FILE": other.key])
        #expect(mismatched.0 == 64)
        #expect(mismatched.1.contains("is not the private key of the certificate"), "\(mismatched.1)")
        let notACertificate = try start(["TLS_CERT_FILE": pair.key, "TLS_KEY_FILE": pair.key])
        #expect(notACertificate.0 == 64)
        #expect(notACertificate.1.contains("TLS_CERT_FILE \(pair.key)"), "\(notACertificate.1)")
        let alone = try start(["TLS_CERT_FILE": pair.certificate])
        #expect(alone.0 == 64)
        #expect(alone.1.contains("go together"))
    }

    @Test func expect100ContinueIsAnsweredAtOnce() throws {
        let receiver = try RunningReceiver()
        let dir = try makeTemporaryDirectory("expect")
        let file = dir + "/body.json"
        // curl (7.88) sends `Expect: 100-continue` for bodies over 1 MB, or when told, and then waits for
        // the 100 before the body (here up to 30 s: a receiver that never says it would hold curl that long).
        _ = FileManager.default.createFile(atPath: file, contents: Data(webhookJSON(id: "expecting", content: String(repeating: "x", count: 4000))))
        let result = try runSeparately("/usr/bin/curl", ["-sv", "-H", "Content-Type: application/json", "-H", "Expect: 100-continue", "--data-binary", "@" + file,
                                               "--expect100-timeout", "30", "-o", "/dev/null", "-w", "%{http_code}",
                                               "http://127.0.0.1:\(receiver.port)/webhook"], dir: dir)
        #expect(result.errors.contains("> Expect: 100-continue"), "curl asked for it")
        #expect(result.errors.contains("< HTTP/1.1 100 Continue"), "and the receiver said go on: \(result.errors)")
        #expect(result.output == "202")
    }
}
