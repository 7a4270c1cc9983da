import ArgumentParser
import CommandSupport
import Foundation
import LibPQ
import Logging
import ReporterCore
import WebhookModel

/// `reporter`: one run for cron, or one window on demand.
@main
struct ReporterCommand: ParsableCommand, MeetperryCommand {
    static let configuration = CommandConfiguration(
        commandName: "reporter",
        abstract: "Write task_report_{userId}_{start}_{end}.json for every user with tasks to report.",
        discussion: """
        Without --from/--to (cron mode) the window is (end of the last recorded run, \
        now - REPORT_DELAY_SECONDS]; the first run ever reports REPORT_INTERVAL_SECONDS up \
        to that watermark. Each cron run also rewrites the earlier reports that events \
        committed since the previous run change (up to REPORT_CORRECTION_HOURS old), then \
        writes manifest_{start}_{end}.json naming every file it wrote, and only then \
        records the run, so a failed run is redone, whole, by the next. After a recorded \
        run, report and manifest files of windows that ended more than REPORT_RETENTION_DAYS \
        ago are removed (names this program writes only; anything else in the directory is \
        left alone).

        --from/--to report any window (any timestamp form of the webhook contract) and do \
        not move the cron cursor.

        Every option has an environment variable (in brackets); the option wins.

        With REPORT_METRICS_FILE, every run ends by replacing that file with its metrics \
        (last success, duration, users, files, tasks, exit status) for node_exporter's \
        textfile collector.

        Exit status: 0 done; 1 an error (named on stderr); 64 bad settings; 75 another \
        run holds the lock.
        """,
        version: versionLine("reporter")
    )

    private typealias S = ReporterSettings

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: DatabaseOptions
    @Option(help: ArgumentHelp("Start of an on-demand window, exclusive (ISO 8601).", valueName: "time")) var from: String?
    @Option(help: ArgumentHelp("End of an on-demand window, inclusive (ISO 8601).", valueName: "time")) var to: String?
    @Option(help: ArgumentHelp("Report only this user.", valueName: "id")) var user: String?
    @Option(name: S.out.name, help: S.out.help) var out: String?
    @Option(name: S.intervalSeconds.name, help: S.intervalSeconds.help) var intervalSeconds: Int?
    @Option(name: S.delaySeconds.name, help: S.delaySeconds.help) var delaySeconds: Int?
    @Option(name: S.correctionHours.name, help: S.correctionHours.help) var correctionHours: Int?
    @Option(name: S.retentionDays.name, help: S.retentionDays.help) var retentionDays: Int?
    @Option(name: S.metricsFile.name, help: S.metricsFile.help) var metricsFile: String?

    func resolve() throws -> ReporterConfiguration {
        let settings = Settings()
        var config = ReporterConfiguration(conninfo: database.conninfo)
        try Self.checkingSettings {
            config.outputDirectory = try settings.value(S.out, flag: out)
            config.intervalSeconds = try settings.value(S.intervalSeconds, flag: intervalSeconds)
            config.delaySeconds = try settings.value(S.delaySeconds, flag: delaySeconds)
            config.correctionHours = try settings.value(S.correctionHours, flag: correctionHours)
            config.retentionDays = try settings.value(S.retentionDays, flag: retentionDays)
        }
        if let file = try Self.checkingSettings({ try settings.optional(S.metricsFile, flag: metricsFile) }), !file.isEmpty {
            let directory = (file as NSString).deletingLastPathComponent
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: directory.isEmpty ? "." : directory, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("REPORT_METRICS_FILE / --metrics-file \(JSONWriter.quoted(file)): the directory \(JSONWriter.quoted(directory)) does not exist")
            }
            config.metricsFile = file
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

    func validate() throws {
        _ = try resolve()
    }

    func run() throws {
        let config = try resolve()
        let logger = startLogging(as: "reporter")
        let started = ContinuousClock.now
        var summary: Reporter.Summary?
        var status = ExitStatus.success
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
            case .done(let done):
                summary = done
                logger.notice("reporter finished: \(done)")
            case .locked:
                logger.error("another reporter run holds the lock (pg_try_advisory_lock); not running twice at once")
                status = .tryAgainLater
            case .nothingToDo(let lastEnd, let watermark):
                logger.notice("nothing to report: the last run ended at \(lastEnd.canonical), not before the last window boundary \(watermark.canonical) at or before now - REPORT_DELAY_SECONDS")
            }
        } catch {
            logger.critical("reporter failed: \(error)")
            status = .failure
        }
        if let path = config.metricsFile {
            let elapsed = started.duration(to: .now)
            let run = ReporterMetricsFile.Run(exitStatus: status.rawValue, finishedAt: .now(),
                                              seconds: Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18, summary: summary)
            do {
                try ReporterMetricsFile(path: path).write(run)
            } catch {
                logger.error("the metrics file was not written: \(error)")
                if status == .success { status = .failure }
            }
        }
        if status != .success { throw status.exitCode }
    }
}
