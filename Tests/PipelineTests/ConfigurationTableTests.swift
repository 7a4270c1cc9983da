import CommandSupport
import Foundation
import Testing
import TestSupport
@testable import ApplierCommand
@testable import ReceiverCommand
@testable import ReporterCommand

/// README's configuration table against the programs' own declarations of
/// their settings (`ReceiverSettings`, `ApplierSettings`, `ReporterSettings`
/// and the shared option groups): every setting a program reads has a row
/// naming its variable, its flag and its default as the program has them,
/// and every row names a setting some program reads (or says whose it is).
@Suite struct ConfigurationTableTests {
    /// One row of README's table: its variables, flags and defaults, each
    /// list in the row's order (`A` / `B` cells).
    struct Row {
        var variables: [String]
        var flags: [String]
        var defaults: [String]
    }

    /// Variables README documents that no program declares, and whose they are.
    static let notThePrograms = [
        "LISTEN_FDS": "systemd's socket activation", "LISTEN_PID": "systemd's socket activation",
        "LOG_MAX_BYTES": "pipeline.sh's", "LOG_RETENTION_DAYS": "pipeline.sh's",
    ]

    static func table() throws -> [Row] {
        let readme = try String(contentsOfFile: packageRoot() + "/README.md", encoding: .utf8)
        guard let section = readme.components(separatedBy: "\n## Configuration\n").dropFirst().first?.components(separatedBy: "\n## ").first else {
            Issue.record("README.md has no Configuration section")
            return []
        }
        func list(_ cell: Substring) -> [String] {
            let text = cell.trimmingCharacters(in: .whitespaces)
            guard !text.isEmpty else { return [] }
            return text.components(separatedBy: " / ").map { $0.replacingOccurrences(of: "`", with: "").trimmingCharacters(in: .whitespaces) }
        }
        return section.split(separator: "\n").filter { $0.hasPrefix("| `") }.map { line in
            let cells = line.dropFirst().split(separator: "|", omittingEmptySubsequences: false)
            return Row(variables: list(cells[0]), flags: list(cells[1]), defaults: list(cells[2]))
        }
    }

    static let programs: [(String, [any SettingDeclaration])] = [
        ("receiver", ReceiverSettings.all), ("applier", ApplierSettings.all), ("reporter", ReporterSettings.all),
    ]

    @Test(arguments: programs.map(\.0))
    func everySettingOfTheProgramHasItsRowWithItsFlagAndDefault(program: String) throws {
        let rows = try Self.table()
        let settings = Self.programs.first { $0.0 == program }!.1
        #expect(settings.count > 5)
        for setting in settings {
            guard let row = rows.first(where: { $0.variables.contains(setting.variable) }),
                  let index = row.variables.firstIndex(of: setting.variable)
            else {
                Issue.record("\(program): \(setting.variable) has no row in README's configuration table")
                continue
            }
            let flag = row.flags.isEmpty ? nil : row.flags[row.flags.count == row.variables.count ? index : 0]
            #expect(flag == setting.flagName, "\(program): \(setting.variable)'s flag")
            let shown = row.defaults[row.defaults.count == row.variables.count ? index : 0]
            #expect(shown == setting.defaultText, "\(program): \(setting.variable)'s default")
        }
    }

    @Test func everyRowNamesASettingSomeProgramReads() throws {
        let declared = Set(Self.programs.flatMap { $0.1.map(\.variable) })
        let rows = try Self.table()
        #expect(rows.count > 30)
        for variable in rows.flatMap(\.variables) where !declared.contains(variable) {
            #expect(Self.notThePrograms[variable] != nil, "README documents \(variable), which no program reads")
        }
    }

    /// pipeline.sh exports some settings before it starts the programs
    /// (`${HTTP_PORT:-8000}`); where it falls back to a plain value, that value
    /// is the program's own default (its own paths, such as `ARCHIVE_PATH`, aside).
    @Test func pipelineShFallsBackToTheProgramsOwnDefaults() throws {
        let script = try String(contentsOfFile: packageRoot() + "/pipeline.sh", encoding: .utf8)
        let declared = Dictionary(Self.programs.flatMap(\.1).map { ($0.variable, $0.defaultText) }, uniquingKeysWith: { first, _ in first })
        let fallback = try Regex(#"\$\{([A-Z_]+):-([^}$]+)\}"#)
        var checked: Set<String> = []
        for match in script.matches(of: fallback) {
            guard let variable = match.output[1].substring.map(String.init), let value = match.output[2].substring.map(String.init),
                  let expected = declared[variable] else { continue }
            #expect(value == expected, "pipeline.sh's fallback for \(variable)")
            checked.insert(variable)
        }
        #expect(checked.isSuperset(of: ["HTTP_HOST", "HTTP_PORT", "REPORT_INTERVAL_SECONDS"]), "\(checked.sorted())")
    }

    @Test func eachProgramsHelpNamesEachOfItsFlagsWithItsVariable() throws {
        for (program, settings) in Self.programs {
            let help = try runTool(executable(program), ["--help"]).output
            for setting in settings {
                guard let flag = setting.flagName else { continue }
                #expect(help.contains(flag), "\(program) --help names \(flag)")
            }
            #expect(help.replacingOccurrences(of: "\n", with: " ").contains("[LOG_LEVEL, default info]"), "\(program) --help")
        }
    }
}
