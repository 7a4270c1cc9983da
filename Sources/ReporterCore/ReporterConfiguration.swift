import WebhookModel

/// Everything one reporter run needs, resolved from flags and environment by the executable.
public struct ReporterConfiguration: Sendable {
    /// libpq connection string.
    public var conninfo: String
    /// Where the files go (`REPORT_DIR`, `--out`).
    public var outputDirectory: String = "./reports"
    /// Cron windows end on multiples of this since the epoch (`CronSchedule`);
    /// the first run ever covers one interval.
    public var intervalSeconds: Int = 15
    /// The watermark: a cron window ends this long before now, so webhooks
    /// up to this late are in the first report of their window.
    public var delaySeconds: Int = 30
    /// Late events up to this old rewrite the reports they change; 0 turns corrections off.
    public var correctionHours: Int = 72
    /// After a successful cron run, report and manifest files whose window
    /// ended more than this many days ago are removed; 0 keeps every file.
    public var retentionDays: Int = 7
    /// node_exporter textfile written after every run (`REPORT_METRICS_FILE`); nil: none.
    public var metricsFile: String?
    /// An explicit window (`--from`/`--to`); nil means cron mode.
    public var window: ReportWindow?
    /// Only this user (`--user`).
    public var user: String?

    public init(conninfo: String) {
        self.conninfo = conninfo
    }
}
