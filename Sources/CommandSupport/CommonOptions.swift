import ArgumentParser
import Foundation
import JetStreamSetup
import LibPQ
import Logging

/// What the three programs share, as one protocol: a version line that
/// names the program, logging to stderr at the level their common options
/// ask for, the same exit statuses, and settings that cannot be used
/// reported as usage errors (exit 64) the same way.
public protocol MeetperryCommand: ParsableArguments {
    var common: CommonOptions { get }
}

extension MeetperryCommand {
    /// `receiver 0.2.0`.
    public static func versionLine(_ name: String) -> String { "\(name) \(meetperryVersion)" }

    /// Turns a setting that cannot be used into a usage error: the message
    /// names the flag or variable, and the program exits 64.
    public static func checkingSettings<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let error as Settings.InvalidSetting {
            throw ValidationError(error.description)
        } catch let error as JetStreamSettings.Invalid {
            throw ValidationError(error.description)
        }
    }

    /// Starts logging (stderr, one line per event) and returns the program's logger.
    public func startLogging(as label: String) -> Logger {
        LogSetup.bootstrap(level: (try? Settings().value(CommonOptions.logLevelSetting, flag: common.logLevel)) ?? "info")
        return Logger(label: label)
    }
}

/// Options every program takes (`@OptionGroup`).
public struct CommonOptions: ParsableArguments {
    public static let logLevelSetting = Setting("LOG_LEVEL", flag: "log-level", default: "info", valueName: "level",
                                                "trace, debug, info, notice, warning, error or critical")
    /// The settings every program reads.
    public static let settings: [any SettingDeclaration] = [logLevelSetting]

    @Option(name: Self.logLevelSetting.name, help: Self.logLevelSetting.help)
    public var logLevel: String?

    public init() {}

    public func validate() throws {
        let level = try Settings().value(Self.logLevelSetting, flag: logLevel)
        if Logger.Level(rawValue: level.lowercased()) == nil {
            let given = logLevel != nil ? "--log-level \(level)" : "LOG_LEVEL=\(level.debugDescription)"
            throw ValidationError("\(given) is not one of trace, debug, info, notice, warning, error, critical")
        }
    }
}

/// The database options of the applier and the reporter (`@OptionGroup`).
public struct DatabaseOptions: ParsableArguments {
    public static let databaseUrlSetting = Setting<String>(
        "DATABASE_URL", flag: "database-url", default: nil, valueName: "conninfo",
        "libpq connection string; wins over DATABASE_URL and the DB_HOST, DB_PORT, DB_USER, DB_NAME and DB_PASSWORD variables")
    /// `DATABASE_URL`, and the `DB_*` variables (no flags) `ConnectionString` reads when it is unset, with their defaults.
    public static let settings: [any SettingDeclaration] = [databaseUrlSetting] + ConnectionString.variables.map {
        Setting<String>($0.variable, flag: nil, default: $0.fallback, valueName: $0.key, "libpq's \($0.key)")
    }

    @Option(name: Self.databaseUrlSetting.name, help: Self.databaseUrlSetting.help)
    public var databaseUrl: String?

    public init() {}

    /// The libpq connection string: the flag, `DATABASE_URL`, or the `DB_*` variables.
    public var conninfo: String {
        var environment = ProcessInfo.processInfo.environment
        if let databaseUrl { environment["DATABASE_URL"] = databaseUrl }
        return ConnectionString.resolve(environment: environment)
    }
}

/// How every program ends: the same statuses with the same meanings in all
/// three (the numbers are sysexits.h's).
public enum ExitStatus: Int32, Sendable {
    /// Done: end of input, or a clean stop after committing what was read.
    case success = 0
    /// An error that retrying cannot fix, named on stderr.
    case failure = 1
    /// A flag or variable that cannot be used (EX_USAGE).
    case usage = 64
    /// The output cannot be written: stdout closed by its reader, the archive not openable (EX_IOERR).
    case outputFailed = 74
    /// JetStream mode refused: a nats-server older than meetperry trusts, or a
    /// stream with fewer replicas than `NATS_REPLICAS` (EX_UNAVAILABLE).
    case refusedCluster = 69
    /// Try again later: another run holds the lock, or stopped while the database was away (EX_TEMPFAIL).
    case tryAgainLater = 75

    public var exitCode: ExitCode { ExitCode(rawValue) }
}
