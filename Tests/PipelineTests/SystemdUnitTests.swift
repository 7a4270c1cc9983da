import Foundation
import Testing
import TestSupport
#if canImport(Glibc)
import Glibc
#endif

/// The units `scripts/install.sh` puts in place, read by systemd's own
/// checker: every line of every unit is one systemd accepts
/// (`systemd-analyze verify` says nothing), the JetStream units name the
/// installed files under `PREFIX`, and the env files are installed too.
@Suite struct SystemdUnitTests {
    /// Installs into a temporary `PREFIX` (units and env files there too) with this build's binaries.
    func install() throws -> (prefix: String, units: [String]) {
        let prefix = try makeTemporaryDirectory("install")
        let build = URL(fileURLWithPath: executable("receiver")).deletingLastPathComponent().path
        let run = try runTool("/bin/bash", [packageRoot() + "/scripts/install.sh"], environment: [
            "PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin",
            "PREFIX": prefix, "SYSTEMD_UNIT_DIR": prefix + "/units", "MEETPERRY_BUILD_DIR": build,
            "MEETPERRY_ENV_FILE": prefix + "/meetperry.env", "MEETPERRY_JETSTREAM_ENV_FILE": prefix + "/meetperry-jetstream.env",
        ])
        guard run.status == 0 else { throw TestFailure("install.sh: \(run.all)") }
        let units = try FileManager.default.contentsOfDirectory(atPath: prefix + "/units").sorted().map { prefix + "/units/" + $0 }
        return (prefix, units)
    }

    @Test func everyInstalledUnitIsOneSystemdAcceptsWhole() throws {
        let analyze = try systemTool("systemd-analyze", package: "systemd")
        let (prefix, units) = try install()
        #expect(units.map { ($0 as NSString).lastPathComponent } == [
            "meetperry-applier.service", "meetperry-receiver.service", "meetperry-receiver.socket", "meetperry-reporter.service",
            "meetperry-reporter.timer", "meetperry.service", "meetperry.socket",
        ])
        for unit in units {
            let verify = try runTool(analyze, ["verify", unit])
            #expect(verify.status == 0 && verify.all.isEmpty, "\(unit): \(verify.all)")
            let text = try String(contentsOfFile: unit, encoding: .utf8)
            #expect(!text.contains("@LIB@") && !text.contains("/usr/local/lib/meetperry"), "\(unit) names the installed files under PREFIX")
        }
        #expect(FileManager.default.fileExists(atPath: prefix + "/meetperry.env"))
        #expect(FileManager.default.fileExists(atPath: prefix + "/meetperry-jetstream.env"))
        // Every service runs unprivileged and sandboxed: systemd's own rating, from 9.6
        // ("UNSAFE": root, nothing restricted) for the two that ran as root before.
        for unit in units where unit.hasSuffix(".service") {
            let security = try runTool(analyze, ["security", "--offline=yes", unit])
            let rating = security.all.split(separator: "\n").last { $0.contains("Overall exposure level") }
                .flatMap { $0.split(separator: ":").last?.split(separator: " ").first }.flatMap { Double($0) }
            #expect(rating.map { $0 <= 2.0 } == true, "\(unit): \(security.all.suffix(300))")
        }
        for name in ["meetperry.service", "meetperry-reporter.service"] {
            let text = try String(contentsOfFile: prefix + "/units/" + name, encoding: .utf8)
            #expect(text.contains("\nUser=meetperry\n") && text.contains("\nProtectSystem=strict\n"), "\(name)")
        }
        // A refusal (69) or a bad setting (64) is not restarted in a loop.
        for name in ["meetperry-receiver.service", "meetperry-applier.service"] {
            let text = try String(contentsOfFile: prefix + "/units/" + name, encoding: .utf8)
            #expect(text.contains("RestartPreventExitStatus=64 69") && text.contains("DynamicUser=yes"), "\(name)")
        }
    }

    /// One story for the private cluster: with the env file as installed (no
    /// database set), pipeline.sh runs its own cluster and the reporter
    /// unit's run, by the same rule, reaches it. The unit's command is run as
    /// systemd would run it (`$$` is `$`), with the installed env file's
    /// variables, and the state directory where this test's pipeline keeps it.
    @Test func theTimersReporterReachesThePipelinesPrivateClusterFromTheInstalledEnvFile() throws {
        let (prefix, _) = try install()
        let pipeline = try PipelineTests.Pipeline()
        pipeline.extraEnvironment = ["PIPELINE_REPORTER": "off"]
        try pipeline.start()
        #expect(try httpRequest(port: pipeline.httpPort, body: webhookJSON(id: "reported")).status == 202)
        func here(_ text: String) -> String { text.replacingOccurrences(of: "/var/lib/meetperry", with: pipeline.varDir) }
        var environment = ["PATH": ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin", "PIPELINE_PG_PORT": String(pipeline.pgPort)]
        for line in try String(contentsOfFile: prefix + "/meetperry.env", encoding: .utf8).split(separator: "\n")
        where !line.hasPrefix("#") && line.contains("=") {
            let parts = line.split(separator: "=", maxSplits: 1).map(String.init)
            environment[parts[0]] = here(parts.count > 1 ? parts[1] : "")
        }
        #expect(environment["DATABASE_URL"] == nil && environment["DB_HOST"] == nil, "the installed env file sets no database")
        let unit = try String(contentsOfFile: prefix + "/units/meetperry-reporter.service", encoding: .utf8)
        guard let execStart = unit.split(separator: "\n").first(where: { $0.hasPrefix("ExecStart=") }) else { throw TestFailure("no ExecStart") }
        let command = here(String(execStart.dropFirst("ExecStart=".count))).replacingOccurrences(of: "$$", with: "$")
        #expect(command.hasPrefix("/bin/sh -c '") && command.hasSuffix("'"), "\(command)")
        let script = String(command.dropFirst("/bin/sh -c '".count).dropLast())
        let run = try runTool("/bin/sh", ["-c", script], environment: environment, timeout: 90)
        #expect(run.status == 0 && run.errors.contains("reporter finished"), "\(run.all)")
        #expect(try pipeline.stop(SIGTERM) == 0)
    }

    /// The checker is not a formality: a key in the wrong section is what it reports.
    @Test func theCheckerReportsAKeyInTheWrongSection() throws {
        let analyze = try systemTool("systemd-analyze", package: "systemd")
        let dir = try makeTemporaryDirectory("unit")
        let unit = dir + "/broken.service"
        try "[Unit]\nDescription=x\n[Service]\nExecStart=/bin/true\nStartLimitIntervalSec=0\n".write(toFile: unit, atomically: true, encoding: .utf8)
        let verify = try runTool(analyze, ["verify", unit])
        #expect(verify.all.contains("Unknown key 'StartLimitIntervalSec' in section [Service]"), "\(verify.all)")
    }
}
