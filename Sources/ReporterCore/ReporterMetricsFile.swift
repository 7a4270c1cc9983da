import FileIO
import Foundation
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// The reporter runs from cron and is gone before anyone could scrape it, so
/// its metrics go to a file in node_exporter's textfile-collector convention
/// (`--collector.textfile.directory`, names ending `.prom`), replaced
/// atomically after every run, failed runs included. The time of the last
/// success is carried over from the previous file, so a failing reporter
/// keeps reporting when it last succeeded.
public struct ReporterMetricsFile: Sendable {
    public var path: String

    /// What one run leaves for the next scrape.
    public struct Run: Sendable, Equatable {
        public var exitStatus: Int32
        public var finishedAt: Timestamp
        public var seconds: Double
        /// Nil unless the run reported (or found nothing to do: a success).
        public var summary: Reporter.Summary?

        public init(exitStatus: Int32, finishedAt: Timestamp, seconds: Double, summary: Reporter.Summary?) {
            self.exitStatus = exitStatus
            self.finishedAt = finishedAt
            self.seconds = seconds
            self.summary = summary
        }
    }

    static let lastSuccess = "meetperry_reporter_last_success_timestamp_seconds"
    static let lastWindow = "meetperry_reporter_last_success_window_seconds"

    public init(path: String) {
        self.path = path
    }

    /// Writes the file for `run` (temporary file in the same directory, then rename).
    public func write(_ run: Run) throws {
        let previous = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
        let bytes = Array(Self.render(run, previous: previous).utf8)
        let directory = (path as NSString).deletingLastPathComponent
        let temporary = (directory.isEmpty ? "." : directory) + "/." + (path as NSString).lastPathComponent + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o644)
        guard fd >= 0 else { throw SystemCallError(operation: "cannot create the metrics file", path: temporary, errno: errno) }
        var failure = bytes.withUnsafeBytes { writeFully(fd, $0) }
        if close(fd) != 0 && failure == 0 { failure = errno }
        if failure == 0 && rename(temporary, path) != 0 { failure = errno }
        if failure != 0 {
            unlink(temporary)
            throw SystemCallError(operation: "cannot write the metrics file", path: path, errno: failure)
        }
    }

    /// The file's text: this run's figures, and the last success (this run's,
    /// or the one `previous` recorded, or 0 when there never was one, so
    /// an alert on its age fires for a reporter that has never succeeded).
    static func render(_ run: Run, previous: String) -> String {
        let succeeded = run.exitStatus == 0
        let seconds = { (t: Timestamp) in String(format: "%.6f", Double(t.microsecondsSinceEpoch) / 1e6) }
        let lastSuccessAt = succeeded ? seconds(run.finishedAt) : (value(of: lastSuccess, in: previous) ?? "0")
        let window = run.summary.map { String(format: "%.6f", Double($0.window.end.microsecondsSinceEpoch - $0.window.start.microsecondsSinceEpoch) / 1e6) }
        var out = ""
        func gauge(_ name: String, _ help: String, _ value: String?) {
            guard let value else { return }
            out += "# HELP \(name) \(help)\n# TYPE \(name) gauge\n\(name) \(value)\n"
        }
        gauge(lastSuccess, "When the reporter last finished a run with exit status 0 (Unix time).", lastSuccessAt)
        gauge(lastWindow, "Length of the last successful run's window: about the cron interval.",
              (succeeded ? window : nil) ?? value(of: lastWindow, in: previous))
        gauge("meetperry_reporter_last_run_timestamp_seconds", "When the last run finished, successful or not (Unix time).", seconds(run.finishedAt))
        gauge("meetperry_reporter_last_exit_status", "Exit status of the last run: 0 done, 1 error, 64 bad settings, 75 another run held the lock.",
              String(run.exitStatus))
        gauge("meetperry_reporter_last_run_duration_seconds", "How long the last run took.", String(format: "%.6f", run.seconds))
        if let summary = run.summary {
            gauge("meetperry_reporter_last_run_users", "Users with something to report in the last run's window.", String(summary.users))
            gauge("meetperry_reporter_last_run_files", "Report files the last run wrote for its window.", String(summary.files))
            gauge("meetperry_reporter_last_run_tasks", "Tasks in the last run's reports.", String(summary.tasks))
            gauge("meetperry_reporter_last_run_corrected_files", "Reports of earlier windows the last run rewrote for late events.", String(summary.corrections))
            gauge("meetperry_reporter_last_run_expired_files", "Files past the retention the last run removed.", String(summary.expiredFiles))
        }
        return out
    }

    /// The value of an unlabelled sample `name` in a text exposition, if it is a number.
    static func value(of name: String, in text: String) -> String? {
        for line in text.split(separator: "\n") where line.hasPrefix(name + " ") {
            let value = line.dropFirst(name.count + 1)
            return Double(value) != nil ? String(value) : nil
        }
        return nil
    }
}
