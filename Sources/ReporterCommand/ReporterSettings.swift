import CommandSupport
import ReporterCore

/// The reporter's settings, each declared once (variable, flag, default,
/// range, meaning): its flags, their help, their resolution and README's
/// configuration table all come from here. Defaults are
/// `ReporterConfiguration`'s own. (`--from`, `--to` and `--user` are one
/// run's arguments, not settings: they have no variables.)
enum ReporterSettings {
    private static let defaults = ReporterConfiguration(conninfo: "")

    static let out = Setting("REPORT_DIR", flag: "out", default: defaults.outputDirectory, valueName: "dir",
                             "Directory for the files; created if missing")
    static let intervalSeconds = Setting(
        "REPORT_INTERVAL_SECONDS", flag: "interval-seconds", default: defaults.intervalSeconds, range: 1...(366 * 86_400), valueName: "s",
        "Cron windows end on multiples of this many seconds since the Unix epoch; the first run covers one interval")
    static let delaySeconds = Setting("REPORT_DELAY_SECONDS", flag: "delay-seconds", default: defaults.delaySeconds, range: 0...(366 * 86_400),
                                      valueName: "s", "A cron window ends at the last boundary at least this many seconds before now")
    static let correctionHours = Setting("REPORT_CORRECTION_HOURS", flag: "correction-hours", default: defaults.correctionHours,
                                         range: 0...(24 * 366), valueName: "h", "Rewrite reports changed by events up to this many hours late; 0: off")
    static let retentionDays = Setting(
        "REPORT_RETENTION_DAYS", flag: "retention-days", default: defaults.retentionDays, range: 0...36_600, valueName: "days",
        "After each cron run, remove this program's report and manifest files of windows that ended more than this many days ago; 0 keeps all")
    static let metricsFile = Setting<String>(
        "REPORT_METRICS_FILE", flag: "metrics-file", default: nil, valueName: "file",
        "After every run, replace this file with the run's metrics in node_exporter's textfile-collector format (name it *.prom)")

    /// Every setting the reporter reads, for the README check.
    static let all: [any SettingDeclaration] = [out, intervalSeconds, delaySeconds, correctionHours, retentionDays, metricsFile]
        + CommonOptions.settings + DatabaseOptions.settings
}
