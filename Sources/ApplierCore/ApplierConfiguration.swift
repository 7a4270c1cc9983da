import JetStreamSetup

/// Everything the applier needs, resolved from flags and environment by the executable.
public struct ApplierConfiguration: Sendable {
    /// libpq connection string.
    public var conninfo: String
    /// Events per transaction at most.
    public var batchSize: Int = 5000
    /// A batch is committed at the latest this long after its first event arrived.
    public var batchMilliseconds: Int = 50
    /// Longer lines are rejected (and skipped), not buffered.
    public var maxLineBytes: Int = 4 * 1_048_576
    /// After SIGTERM/SIGINT, how long to keep retrying an unreachable database before giving up (exit 75).
    public var shutdownTimeoutSeconds: Int = 30
    /// Connections committing in parallel, each for its own share of the task partitions.
    public var connections: Int = 2
    /// The task cache's budget in MiB, shared by the connections (`TaskCache`); 0: none.
    public var cacheMegabytes: Int = 32
    /// Longest wait between reconnection attempts.
    public var maxBackoffMilliseconds: Int = 5000
    /// `GET /metrics` on this port (0: any free one, logged); nil: no metrics endpoint.
    public var metricsPort: Int?
    /// The address the metrics endpoint binds to (loopback unless asked).
    public var metricsHost = "127.0.0.1"
    /// The receiver's archive (`ARCHIVE_PATH`), for `--replay-archive`.
    public var archivePath: String?
    /// Verified archive segments rotated longer ago than this are deleted; 0 keeps them all.
    public var archiveRetentionDays: Int = 7
    /// JetStream mode: read from the stream's durable consumer instead of stdin.
    public var jetStream: JetStreamSettings?

    public init(conninfo: String) {
        self.conninfo = conninfo
    }
}
