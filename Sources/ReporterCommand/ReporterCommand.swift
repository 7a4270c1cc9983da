import ArgumentParser
import CommandSupport
import Foundation
import LibPQ
import Logging
import ReporterCore
import WebhookModel

/// `reporter`: one run for cron, or one window on demand.
@main
struct ReporterCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "reporter",
        abstract: "Write task_report_{userId}_{start}_{end}.json for every user with tasks to report.",
        discussion: """
        Without --from/--to (cron mode) the window is (end of the last recorded run,
        now - REPORT_DELAY_SECONDS]; the first run ever reports REPORT_INTERVAL_SECONDS up
        to that watermark. Each cron run also rewrites the earlier reports that events
        committed since the previous run change (up to REPORT_CORRECTION_HOURS old), then
        writes manifest_{start}_{end}.json naming every file it wrote, and only then
        records the run, so a failed run is redone, whole, by the next.
        --from/--to report any window (any timestamp form of the webhook contract) and do
        not move the cron cursor. The database is DATABASE_URL, or DB_HOST/DB_PORT/DB_USER/
        DB_NAME/DB_PASSWORD. Exit status: 0 done, 1 error (named on stderr), 64 bad
        settings, 75 another run holds the lock.
        """,
        version: meetperryVersion
    )

    @Option(help: "Start of an on-demand window, exclusive (ISO 8601).") var from: String?
    @Option(help: "End of an on-demand window, inclusive (ISO 8601).") var to: String?
    @Option(help: "Report only this user.") var user: String?
    @Option(help: "Directory for the files; created if missing [REPORT_DIR, default ./reports].") var out: String?
    @Option(help: "Length of the first cron window in seconds [REPORT_INTERVAL_SECONDS, default 15].") var intervalSeconds: Int?
    @Option(help: "Cron windows end this many seconds before now [REPORT_DELAY_SECONDS, default 30].") var delaySeconds: Int?
    @Option(help: "Rewrite reports changed by events up to this many hours late; 0: off [REPORT_CORRECTION_HOURS, default 72].") var correctionHours: Int?
    @Option(help: "libpq connection string; wins over DATABASE_URL and DB_* [DATABASE_URL].") var databaseUrl: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical [LOG_LEVEL, default info].") var logLevel: String?

    func resolve() throws -> ReporterConfiguration {
        let settings = Settings()
        var environment = ProcessInfo.processInfo.environment
        if let databaseUrl { environment["DATABASE_URL"] = databaseUrl }
        var config = ReporterConfiguration(conninfo: ConnectionString.resolve(environment: environment))
        config.outputDirectory = settings.string(out, "REPORT_DIR", default: config.outputDirectory)
        do {
            config.intervalSeconds = try settings.int(intervalSeconds, "REPORT_INTERVAL_SECONDS", default: config.intervalSeconds, range: 1...(366 * 86_400))
            config.delaySeconds = try settings.int(delaySeconds, "REPORT_DELAY_SECONDS", default: config.delaySeconds, range: 0...(366 * 86_400))
            config.correctionHours = try settings.int(correctionHours, "REPORT_CORRECTION_HOURS", default: config.correctionHours, range: 0...(24 * 366))
        } catch let error as Settings.InvalidSetting {
            throw ValidationError(error.description)
        }
        switch (from, to) {
        case (nil, nil):
            break
        case (let from?, let to?):
            let start = try Self.timestamp(from, "--from"), end = try Self.timestamp(to, "--to")
            guard start < end else { throw ValidationError("--from (\(start.canonical)) must be before --to (\(end.canonical))") }
            config.window = ReportWindow(start: start, end: end)
        default:
            throw ValidationError("--from and --to go together: give both for an on-demand window, or neither for cron mode")
        }
        if let user {
            guard !user.isEmpty, user.utf8.count <= 256 else { throw ValidationError("--user must be 1 to 256 bytes") }
            config.user = user
        }
        return config
    }

    static func timestamp(_ text: String, _ flag: String) throws -> Timestamp {
        do { return try Timestamp(parsing: text) } catch {
            throw ValidationError("\(flag) \(JSONWriter.quoted(text)) is not an ISO 8601 date-time: \(error.message)")
        }
    }

    func run() throws {
        let config = try resolve()
        LogSetup.bootstrap(level: logLevel ?? Settings().string("LOG_LEVEL"))
        let logger = Logger(label: "reporter")
        do {
            var reporter = Reporter(configuration: config, logger: logger)
            let display = TerminalProgress()
            if let display {
                reporter.progress = { display.update("users \($0.users), files \($0.files), tasks \($0.tasks), \(String(format: "%.1f", $0.seconds)) s") }
            }
            let outcome: Reporter.Outcome
            do {
                defer { display?.finish() }
                outcome = try reporter.run()
            }
            switch outcome {
            case .done(let summary):
                logger.notice("reporter finished: \(summary)")
            case .locked:
                logger.error("another reporter run holds the lock (pg_try_advisory_lock); not running twice at once")
                throw ExitCode(75)
            case .nothingToDo(let lastEnd, let watermark):
                logger.notice("nothing to report: the last run ended at \(lastEnd.canonical), not before the watermark \(watermark.canonical) (now - REPORT_DELAY_SECONDS)")
            }
        } catch let error as ExitCode {
            throw error
        } catch {
            logger.critical("reporter failed: \(error)")
            throw ExitCode(1)
        }
    }
}
