import WebhookModel

/// Everything one reporter run needs, resolved from flags and environment by the executable.
public struct ReporterConfiguration: Sendable {
    /// libpq connection string.
    public var conninfo: String
    /// Where the files go (`REPORT_DIR`, `--out`).
    public var outputDirectory: String = "./reports"
    /// Length of the first cron window, when no run is recorded yet.
    public var intervalSeconds: Int = 15
    /// An explicit window (`--from`/`--to`); nil means cron mode.
    public var window: ReportWindow?
    /// Only this user (`--user`).
    public var user: String?

    public init(conninfo: String) {
        self.conninfo = conninfo
    }
}
