import Foundation
import Logging
import WebhookModel

/// One reporter run: takes the single-runner lock, picks the window (the
/// cron cursor, or the one asked for), streams the tasks user by user,
/// writes one file per user with something to report, makes them durable,
/// and only then (in cron mode) records the run.
public struct Reporter {
    /// How the run ended; the executable exits with `code`.
    public enum Outcome: Equatable, Sendable {
        case done(Summary)
        /// Another run holds the lock (exit 75).
        case locked
        /// The last recorded run ends at or after now: nothing to do.
        case nothingToDo(lastEnd: Timestamp)
    }

    /// What a run did, for the final log line.
    public struct Summary: Equatable, Sendable, CustomStringConvertible {
        public var window: ReportWindow
        public var users = 0
        public var files = 0
        public var tasks = 0
        public var seconds = 0.0
        public var description: String {
            "window=\(window) users=\(users) files=\(files) tasks=\(tasks) seconds=\(String(format: "%.3f", seconds))"
        }
    }

    public let configuration: ReporterConfiguration
    public let logger: Logger
    /// Called after each file is renamed into place (tests use it to fail mid-run).
    public var afterEachFile: ((Int) throws -> Void)?
    /// Called after each user with the counts so far (the executable draws them on a terminal).
    public var progress: ((Summary) -> Void)?

    public init(configuration: ReporterConfiguration, logger: Logger) {
        self.configuration = configuration
        self.logger = logger
    }

    public func run(now: Timestamp = .now()) throws -> Outcome {
        let started = DispatchTime.now()
        let directory = try ReportDirectory(path: configuration.outputDirectory)
        let store = try ReportStore(conninfo: configuration.conninfo)
        guard try store.tryLock() else { return .locked }
        directory.removeLeftovers()

        let cron = configuration.window == nil
        let window: ReportWindow
        if let asked = configuration.window {
            window = asked
        } else {
            let end = now
            let start = try store.lastRunEnd()
                ?? Timestamp(microsecondsSinceEpoch: end.microsecondsSinceEpoch - Int64(configuration.intervalSeconds) * 1_000_000)
            guard start < end else { return .nothingToDo(lastEnd: start) }
            window = ReportWindow(start: start, end: end)
        }
        logger.info("reporting", metadata: ["window": "\(window)", "mode": "\(cron ? "cron" : "on demand")", "directory": "\(directory.path)"])

        var summary = Summary(window: window)
        var current: UserReport?
        func finish(_ report: UserReport?) throws {
            guard let report, !report.isEmpty else { return }
            try directory.write(name: ReportFileName.make(userId: report.userId, window: window), bytes: report.render())
            summary.files += 1
            summary.tasks += report.taskCount
            try afterEachFile?(summary.files)
        }
        func report() {
            guard let progress else { return }
            summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            progress(summary)
        }
        try store.streamTasks(window, user: configuration.user) { userId, task in
            if current?.userId != userId {
                try finish(current)
                current = UserReport(userId: userId, window: window)
                summary.users += 1
                report()
            }
            current!.add(task)
        }
        try finish(current)
        try directory.sync()
        if cron {
            try store.recordRun(window, users: summary.users, files: summary.files, tasks: summary.tasks)
        }
        summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
        return .done(summary)
    }
}
