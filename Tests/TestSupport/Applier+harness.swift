import Foundation
import LibPQ
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// What one run of the applier executable did.
public struct ApplierRun: Sendable {
    public var exitCode: Int32
    public var rejects: [String]
    public var stderr: String

    /// The line numbers of the rejects, in output order.
    public var rejectedLines: [Int] {
        rejects.compactMap { line in
            guard let value = try? JSONParser.parse(Array(line.utf8)), case .number(let n)? = value["line"] else { return nil }
            return Int(n)
        }
    }
}

/// Runs the built `applier` on `input` (fed through a real pipe) against `conninfo`.
public func runApplier(_ input: [UInt8], conninfo: String, arguments: [String] = [], environment: [String: String] = [:]) throws -> ApplierRun {
    let dir = try makeTemporaryDirectory("applier")
    var env = environment
    env["DATABASE_URL"] = conninfo
    let process = try ChildProcess(executable("applier"), arguments: arguments, environment: env, stdin: .pipe, stdout: .pipe, stderr: .file(dir + "/stderr"))
    let out = LineCollector(fd: process.stdoutFD!)
    process.writeStdin(input)
    process.closeStdin()
    let code = try process.waitForExit(timeout: 300)
    let rejects = try out.waitForEOF()
    return ApplierRun(exitCode: code, rejects: rejects, stderr: (try? String(contentsOfFile: dir + "/stderr", encoding: .utf8)) ?? "")
}

/// The canonical NDJSON of a list of webhooks, one line each.
public func stream(_ webhooks: [Webhook]) -> [UInt8] {
    var out: [UInt8] = []
    for w in webhooks { StreamRecord(webhook: w).appendCanonicalLine(to: &out) }
    return out
}

/// The task table as comparable text rows (ids and updated_date left out unless asked).
public func taskRows(_ conninfo: String, includeSurrogates: Bool = false) throws -> [[String?]] {
    let db = try PGConnection(conninfo: conninfo)
    try db.execute("SET TIME ZONE 'UTC'")
    let extra = includeSurrogates ? ", id::text, updated_date::text" : ""
    return try db.execute("""
        SELECT external_id, user_id, content, created_date::text, completed_date::text, deleted_date::text\(extra)
        FROM meetperry.task ORDER BY external_id
        """).rows
}

/// `receiver | applier` on a real pipe, as an operator composes them; the
/// applier's rejects and log are files in `directory`.
public final class ReceiverApplierPipe: @unchecked Sendable {
    public let directory: String
    public let applier: ChildProcess
    public let receiver: RunningReceiver

    public init(database conninfo: String, applierArguments: [String] = ["--batch-ms", "10"]) throws {
        directory = try makeTemporaryDirectory("pipe")
        applier = try ChildProcess(executable("applier"), arguments: applierArguments, environment: ["DATABASE_URL": conninfo],
                                   stdin: .pipe, stdout: .file(directory + "/rejects"), stderr: .file(directory + "/applier.stderr"))
        receiver = try RunningReceiver(stdout: .fd(applier.stdinFD!), directory: directory)
        applier.closeStdin()  // the receiver holds the only write end now
    }

    /// SIGTERM to the receiver; the applier ends at EOF. Returns both exit codes.
    public func stop() throws -> (receiver: Int32, applier: Int32) {
        receiver.process.signal(SIGTERM)
        let receiverCode = try receiver.process.waitForExit()
        return (receiverCode, try applier.waitForExit(timeout: 120))
    }

    public var rejects: String { (try? String(contentsOfFile: directory + "/rejects", encoding: .utf8)) ?? "" }
}
