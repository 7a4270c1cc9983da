import ApplierCore
import CommandSupport
import TaskModel

/// The applier's settings, each declared once (variable, flag, default,
/// range, meaning): its flags, their help, their resolution and README's
/// configuration table all come from here. Defaults are
/// `ApplierConfiguration`'s own.
enum ApplierSettings {
    private static let defaults = ApplierConfiguration(conninfo: "")

    static let batchSize = Setting("APPLIER_BATCH_SIZE", flag: "batch-size", default: defaults.batchSize, range: 1...1_000_000, valueName: "n",
                                   "Events per transaction at most")
    static let batchMs = Setting("APPLIER_BATCH_MS", flag: "batch-ms", default: defaults.batchMilliseconds, range: 0...3_600_000, valueName: "ms",
                                 "Commit a batch at the latest this many ms after its first event")
    static let connections = Setting("APPLIER_CONNECTIONS", flag: "connections", default: defaults.connections, range: 1...TaskPartition.count,
                                     valueName: "n", "Connections committing in parallel, each for its own share of the tasks")
    static let cacheMegabytes = Setting("APPLIER_CACHE_MB", flag: "cache-mb", default: defaults.cacheMegabytes, range: 0...65_536, valueName: "MiB",
                                        "Memory for the tasks just written, so later events of them read nothing back; 0: none")
    static let maxLineBytes = Setting("APPLIER_MAX_LINE_BYTES", flag: "max-line-bytes", default: defaults.maxLineBytes, range: 1024...(1 << 30),
                                      valueName: "bytes", "Longest accepted line in bytes")
    static let shutdownTimeout = Setting("APPLIER_SHUTDOWN_TIMEOUT", flag: "shutdown-timeout", default: defaults.shutdownTimeoutSeconds,
                                         range: 0...86_400, valueName: "s", "Seconds to keep retrying an unreachable database after SIGTERM")
    static let metricsPort = Setting<Int>("APPLIER_METRICS_PORT", flag: "metrics-port", default: nil, wording: "off", range: 0...65_535,
                                          valueName: "port", "Serve Prometheus metrics on GET /metrics at this port; 0 picks a free one (logged)")
    static let metricsHost = Setting("APPLIER_METRICS_HOST", flag: "metrics-host", default: defaults.metricsHost, valueName: "address",
                                     "Address the metrics endpoint binds to")
    static let archivePath = Setting<String>("ARCHIVE_PATH", flag: "archive-path", default: nil, valueName: "file",
                                             "The receiver's archive, for --replay-archive")
    static let archiveRetentionDays = Setting(
        "ARCHIVE_RETENTION_DAYS", flag: "archive-retention-days", default: defaults.archiveRetentionDays, range: 0...36_500, valueName: "days",
        "Verified archive segments rotated longer ago than this many days are deleted by --replay-archive; 0 keeps all")

    /// Every setting the applier reads, for the README check.
    static let all: [any SettingDeclaration] = [
        batchSize, batchMs, connections, cacheMegabytes, maxLineBytes, shutdownTimeout, metricsPort, metricsHost, archivePath, archiveRetentionDays,
        JetStreamOptions.natsConsumerSetting, JetStreamOptions.natsAckWaitSecondsSetting,
    ] + CommonOptions.settings + DatabaseOptions.settings + JetStreamOptions.settings
}
