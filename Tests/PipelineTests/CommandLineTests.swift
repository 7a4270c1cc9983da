import Foundation
import Testing
import TestSupport

/// The three programs as one family on the command line: `--version` names
/// the program, `--help` reads as paragraphs, and a setting that cannot be
/// used exits 64 naming where it came from (the flag, or the variable).
@Suite struct CommandLineTests {
    /// Runs `program` with `arguments` and `environment`; its exit code and what it printed.
    func run(_ program: String, _ arguments: [String], environment: [String: String] = [:]) throws -> (code: Int32, out: String, err: String) {
        let run = try runTool(executable(program), arguments, environment: environment, timeout: 30)
        return (run.status, run.output, run.errors)
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

/// `scripts/install.sh` puts a release in place, and the units it installs
/// run those installed files: no build, no package installation.
@Suite struct InstallTests {
    @Test func installsTheReleaseAndUnitsThatRunIt() throws {
        let stage = try makeTemporaryDirectory("install")
        defer { try? FileManager.default.removeItem(atPath: stage) }
        let release = packageRoot() + "/.build/release"
        // The script builds only when the release binaries are missing; a test
        // provides them from this build instead, in a copy of the tree.
        let tree = try makeTemporaryDirectory("tree")
        defer { try? FileManager.default.removeItem(atPath: tree) }
        for item in ["scripts", "deploy", "pipeline.sh", "changeset.sql"] {
            try FileManager.default.copyItem(atPath: packageRoot() + "/" + item, toPath: tree + "/" + item)
        }
        try FileManager.default.createDirectory(atPath: tree + "/.build/release", withIntermediateDirectories: true)
        for program in ["receiver", "applier", "reporter"] {
            let built = FileManager.default.isExecutableFile(atPath: release + "/" + program) ? release + "/" + program : executable(program)
            try FileManager.default.copyItem(atPath: built, toPath: tree + "/.build/release/" + program)
        }
        let log = stage + ".log"
        let install = try ChildProcess("/bin/bash", arguments: [tree + "/scripts/install.sh"],
                                       environment: ["DESTDIR": stage, "PREFIX": "/opt/mp"], stdout: .null, stderr: .file(log))
        #expect(try install.waitForExit(timeout: 60) == 0, "\(String(describing: try? String(contentsOfFile: log, encoding: .utf8)))")
        for file in ["/opt/mp/lib/meetperry/bin/receiver", "/opt/mp/lib/meetperry/bin/applier", "/opt/mp/lib/meetperry/bin/reporter",
                     "/opt/mp/lib/meetperry/pipeline.sh", "/opt/mp/lib/meetperry/scripts/postgres.sh"] {
            #expect(FileManager.default.isExecutableFile(atPath: stage + file), "\(file)")
        }
        #expect(FileManager.default.fileExists(atPath: stage + "/opt/mp/lib/meetperry/changeset.sql"))
        #expect(FileManager.default.fileExists(atPath: stage + "/etc/meetperry.env"))
        for unit in ["meetperry.service", "meetperry-reporter.service", "meetperry-reporter.timer"] {
            let text = try String(contentsOfFile: stage + "/etc/systemd/system/" + unit, encoding: .utf8)
            #expect(!text.contains("@LIB@") && !text.contains("swift build") && !text.contains("apt-get") && !text.contains(".build/"), "\(unit)")
        }
        let service = try String(contentsOfFile: stage + "/etc/systemd/system/meetperry.service", encoding: .utf8)
        #expect(service.contains("ExecStart=/opt/mp/lib/meetperry/pipeline.sh"))
        #expect(service.contains("MEETPERRY_BIN_DIR=/opt/mp/lib/meetperry/bin"), "installed binaries: pipeline.sh builds nothing")
        let reporter = try String(contentsOfFile: stage + "/etc/systemd/system/meetperry-reporter.service", encoding: .utf8)
        // (through pipeline.sh's database rule, in sh: SystemdUnitTests runs it)
        #expect(reporter.contains("ExecStart=/bin/sh -c '") && reporter.contains("exec /opt/mp/lib/meetperry/bin/reporter'"), "\(reporter)")
    }
}
