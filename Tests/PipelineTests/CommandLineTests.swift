import Foundation
import Testing
import TestSupport

/// The three programs as one family on the command line: `--version` names
/// the program, `--help` reads as paragraphs, and a setting that cannot be
/// used exits 64 naming where it came from (the flag, or the variable).
@Suite struct CommandLineTests {
    /// Runs `program` with `arguments` and `environment`; its exit code and what it printed.
    func run(_ program: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (code: Int32, out: String, err: String) {
        let dir = try makeTemporaryDirectory("cli")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let process = try ChildProcess(executable(program), arguments: arguments, environment: environment,
                                       stdout: .file(dir + "/out"), stderr: .file(dir + "/err"))
        let code = try process.waitForExit(timeout: 30)
        return (code, (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
                (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
    }

    @Test(arguments: ["receiver", "applier", "reporter"]) func versionNamesTheProgram(program: String) throws {
        let version = try run(program, ["--version"])
        #expect(version.code == 0)
        #expect(version.out.range(of: #"^\#(program) [0-9]+\.[0-9]+\.[0-9]+\n$"#, options: .regularExpression) != nil, "\(version.out)")
    }

    @Test(arguments: ["receiver", "applier", "reporter"]) func helpIsParagraphsNotAWordALine(program: String) throws {
        let help = try run(program, ["--help"])
        #expect(help.code == 0)
        let lines = help.out.split(separator: "\n", omittingEmptySubsequences: true).map { $0.trimmingCharacters(in: .whitespaces) }
        let lonely = lines.filter { !$0.contains(" ") && !$0.hasPrefix("-") && !$0.hasSuffix(":") && !$0.hasSuffix("]") && !$0.hasSuffix(".") }
        #expect(lonely.isEmpty, "lines of one word: \(lonely)")
        #expect(help.out.contains("--log-level <level>"))
        #expect(help.out.contains("Exit status"))
    }

    @Test func aSettingThatCannotBeUsedNamesWhereItCameFrom() throws {
        let flag = try run("applier", ["--batch-size", "0"])
        #expect(flag.code == 64)
        #expect(flag.err.contains("--batch-size 0 is not within"), "\(flag.err)")
        let variable = try run("applier", [], environment: ["APPLIER_BATCH_SIZE": "lots"])
        #expect(variable.code == 64)
        #expect(variable.err.contains(#"APPLIER_BATCH_SIZE="lots" is not a whole number"#), "\(variable.err)")
        let port = try run("receiver", [], environment: ["HTTP_PORT": "eighty"])
        #expect(port.code == 64 && port.err.contains("HTTP_PORT"))
        let level = try run("reporter", ["--log-level", "loud"])
        #expect(level.code == 64 && level.err.contains("--log-level loud is not one of"))
        let subject = try run("receiver", [], environment: ["NATS_URL": "nats://127.0.0.1:1", "NATS_SUBJECT": "a.*"])
        #expect(subject.code == 64 && subject.err.contains("NATS_SUBJECT"))
        let window = try run("reporter", ["--from", "2025-01-02T00:00:00Z", "--to", "2025-01-01T00:00:00Z"])
        #expect(window.code == 64 && window.err.contains("must be before --to"))
    }
}
