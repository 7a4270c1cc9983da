import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// The built `receiver` executable running on a free loopback port, its
/// stdout on a pipe the test holds and its stderr in a file.
public final class RunningReceiver: @unchecked Sendable {
    public let process: ChildProcess
    public let port: Int
    public let stderrPath: String

    public init(environment: [String: String] = [:], stdout: ChildProcess.Stream = .pipe, directory: String? = nil) throws {
        let dir = try directory ?? makeTemporaryDirectory("receiver")
        port = freePort()
        stderrPath = dir + "/receiver.stderr"
        var env = environment
        env["HTTP_HOST"] = "127.0.0.1"
        env["HTTP_PORT"] = String(port)
        process = try ChildProcess(executable("receiver"), environment: env, stdout: stdout, stderr: .file(stderrPath))
        try waitUntilHealthy()
    }

    public func waitUntilHealthy(timeout: Double = 30) throws {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            if let result = try? httpRequest(port: port, "GET", "/healthz", headers: [:]), result.status == 200 { return }
            guard process.isRunning else { throw TestFailure("receiver exited early: \(stderr)") }
            usleep(50_000)
        }
        throw TestFailure("receiver did not become healthy on port \(port): \(stderr)")
    }

    public var stderr: String { (try? String(contentsOfFile: stderrPath, encoding: .utf8)) ?? "" }
}

/// A webhook body as the TODO service would send it.
public func webhookJSON(
    event: String = "created",
    id: String = "42",
    userId: String = "1",
    content: String = "Buy milk",
    isCompleted: Bool = false,
    timestamp: String = "2025-04-01T14:23:45-04:00"
) -> [UInt8] {
    func q(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case _ where scalar.value < 0x20: out += String(format: "\\u%04x", scalar.value)
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
    let text = #"{"event":\#(q(event)),"timestamp":\#(q(timestamp)),"metadata":{"userId":\#(q(userId)),"id":\#(q(id)),"content":\#(q(content)),"isCompleted":\#(isCompleted)}}"#
    return Array(text.utf8)
}
