import ApplierCore
import ArgumentParser
import CommandSupport
import Foundation
import LibPQ
import Logging
import MetricsEndpoint

/// `applier`: NDJSON webhooks on stdin (or a JetStream stream) into PostgreSQL.
@main
struct ApplierCommand: ParsableCommand, MeetperryCommand {
    static let configuration = CommandConfiguration(
        commandName: "applier",
        abstract: "Apply a stream of TODO webhooks (NDJSON on stdin) to PostgreSQL.",
        discussion: """
        Rejected lines go to stdout as {"line","reason","input"} NDJSON; logs and a final \
        summary go to stderr. With NATS_URL set it reads the JetStream stream's durable \
        consumer instead of stdin, acknowledges each message once its batch has committed, \
        and writes rejects as {"seq","reason","input"}.

        With APPLIER_METRICS_PORT set it serves Prometheus metrics (meetperry_applier_*: lines \
        read, events by outcome, batches, commit latency, retries, reconnections, accepted \
        webhooks rejected by the rules, lag) on GET /metrics.

        Every option has an environment variable (in brackets); the option wins.

        Exit status: 0 when everything read is committed (end of input, or SIGTERM/SIGINT); \
        1 for what retrying cannot fix (changeset.sql not applied, the database refusing for \
        good, a database or password that does not exist); 64 for bad settings; 75 when \
        stopped while PostgreSQL was unreachable.
        """,
        version: versionLine("applier")
    )

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: DatabaseOptions
    @Option(help: ArgumentHelp("Events per transaction at most [APPLIER_BATCH_SIZE, default 5000].", valueName: "n"))
    var batchSize: Int?
    @Option(help: ArgumentHelp("Commit a batch at the latest this many ms after its first event [APPLIER_BATCH_MS, default 50].", valueName: "ms"))
    var batchMs: Int?
    @Option(help: ArgumentHelp("Connections committing in parallel, each for its own share of the tasks [APPLIER_CONNECTIONS, default 2].", valueName: "n"))
    var connections: Int?
    @Option(help: ArgumentHelp("Longest accepted line in bytes [APPLIER_MAX_LINE_BYTES, default 4194304].", valueName: "bytes"))
    var maxLineBytes: Int?
    @Option(help: ArgumentHelp("Seconds to keep retrying an unreachable database after SIGTERM [APPLIER_SHUTDOWN_TIMEOUT, default 30].", valueName: "s"))
    var shutdownTimeout: Int?
    @Option(help: ArgumentHelp("Serve Prometheus metrics on GET /metrics at this port; 0 picks a free one (logged) [APPLIER_METRICS_PORT, default off].",
                               valueName: "port"))
    var metricsPort: Int?
    @Option(help: ArgumentHelp("Address the metrics endpoint binds to [APPLIER_METRICS_HOST, default 127.0.0.1].", valueName: "address"))
    var metricsHost: String?
    @Option(help: ArgumentHelp("Apply this schema file (changeset.sql) to the database with these same settings, then exit; waits up to a minute for PostgreSQL to come up.",
                               valueName: "file"))
    var applyChangeset: String?
    @Flag(help: ArgumentHelp("Apply every archive segment not yet verified (ARCHIVE_PATH.<time>, oldest first), move each to applied/ beside it once all its lines are committed, delete verified ones past ARCHIVE_RETENTION_DAYS, then exit."))
    var replayArchive = false
    @Flag(help: ArgumentHelp("With --replay-archive: first make the current ARCHIVE_PATH a segment too (only while no receiver writes it)."))
    var sealArchive = false
    @Option(help: ArgumentHelp("The receiver's archive, for --replay-archive [ARCHIVE_PATH].", valueName: "file")) var archivePath: String?
    @Option(help: ArgumentHelp("Verified archive segments rotated longer ago than this many days are deleted by --replay-archive; 0 keeps all [ARCHIVE_RETENTION_DAYS, default 7].",
                               valueName: "days"))
    var archiveRetentionDays: Int?
    @OptionGroup(title: "JetStream mode (read the stream instead of stdin)") var jetStream: JetStreamOptions
    @Option(help: ArgumentHelp("Durable consumer the appliers share [NATS_CONSUMER, default appliers].", valueName: "name"))
    var natsConsumer: String?
    @Option(help: ArgumentHelp("When the consumer is made: seconds before a fetched, unacknowledged message goes to another applier [NATS_ACK_WAIT_SECONDS, default 30].",
                               valueName: "s"))
    var natsAckWaitSeconds: Int?

    func resolve() throws -> ApplierConfiguration {
        try Self.checkingSettings {
            let settings = Settings()
            var config = ApplierConfiguration(conninfo: database.conninfo)
            config.batchSize = try settings.int(("--batch-size", batchSize), "APPLIER_BATCH_SIZE", default: config.batchSize, range: 1...1_000_000)
            config.batchMilliseconds = try settings.int(("--batch-ms", batchMs), "APPLIER_BATCH_MS", default: config.batchMilliseconds, range: 0...3_600_000)
            config.connections = try settings.int(("--connections", connections), "APPLIER_CONNECTIONS", default: config.connections,
                                                  range: 1...TaskPartition.count)
            config.maxLineBytes = try settings.int(("--max-line-bytes", maxLineBytes), "APPLIER_MAX_LINE_BYTES", default: config.maxLineBytes,
                                                   range: 1024...(1 << 30))
            config.shutdownTimeoutSeconds = try settings.int(("--shutdown-timeout", shutdownTimeout), "APPLIER_SHUTDOWN_TIMEOUT",
                                                             default: config.shutdownTimeoutSeconds, range: 0...86_400)
            if metricsPort != nil || settings.string("APPLIER_METRICS_PORT") != nil {
                config.metricsPort = try settings.int(("--metrics-port", metricsPort), "APPLIER_METRICS_PORT", default: 0, range: 0...65_535)
            }
            config.metricsHost = settings.string(metricsHost, "APPLIER_METRICS_HOST", default: config.metricsHost)
            config.archivePath = archivePath ?? settings.string("ARCHIVE_PATH")
            config.archiveRetentionDays = try settings.int(("--archive-retention-days", archiveRetentionDays), "ARCHIVE_RETENTION_DAYS",
                                                           default: config.archiveRetentionDays, range: 0...36_500)
            config.jetStream = try jetStream.resolve(settings, consumer: settings.string(natsConsumer, "NATS_CONSUMER", default: "appliers"))
            config.jetStream?.ackWaitSeconds = try settings.int(("--nats-ack-wait-seconds", natsAckWaitSeconds), "NATS_ACK_WAIT_SECONDS",
                                                                default: 30, range: 1...86_400)
            return config
        }
    }

    func validate() throws {
        let config = try resolve()
        if sealArchive && !replayArchive { throw ValidationError("--seal-archive goes with --replay-archive") }
        if replayArchive && config.archivePath == nil { throw ValidationError("--replay-archive needs the archive: set ARCHIVE_PATH (or --archive-path)") }
        if replayArchive && config.jetStream != nil { throw ValidationError("--replay-archive reads the archive, not JetStream: unset NATS_URL for it") }
    }

    func run() throws {
        let config = try resolve()
        let logger = startLogging(as: "applier")
        if let applyChangeset { return try Self.apply(changeset: applyChangeset, to: config.conninfo, logger: logger) }
        signal(SIGPIPE, SIG_IGN)
        let stop = StopToken.onSignals()
        if replayArchive { return try Self.replay(config, seal: sealArchive, stop: stop, logger: logger) }
        logger.info("applier reading \(config.jetStream.map { "JetStream stream \($0.stream), consumer \($0.consumer)" } ?? "stdin")", metadata: [
            "database": "\(ConnectionString.redacted(config.conninfo))", "batch.size": "\(config.batchSize)", "batch.ms": "\(config.batchMilliseconds)",
        ])
        let applier: Applier
        var server: MetricsServer?
        defer { server?.close() }
        do {
            let metrics = config.metricsPort.map { _ in ApplierMetrics() }
            if let metrics, let port = config.metricsPort {
                server = try MetricsServer(host: config.metricsHost, port: port) { metrics.exposition() }
                logger.info("serving metrics", metadata: ["address": "\(config.metricsHost):\(server!.port)", "path": "/metrics"])
            }
            applier = try Applier(configuration: config, logger: logger, stop: stop, metrics: metrics)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitStatus.failure.exitCode
        }
        let display = TerminalProgress()
        if let display {
            applier.progress = { counts, done in
                if done { return display.finish() }
                display.update("read \(counts.read) lines, applied \(counts.applied), duplicates \(counts.duplicates), rejected \(counts.rejected), \(counts.rate) events/s")
            }
        }
        try Self.exit(applier.run())
    }

    static func exit(_ outcome: Applier.Outcome) throws {
        switch outcome {
        case .done: return
        case .failed: throw ExitStatus.failure.exitCode
        case .gaveUp: throw ExitStatus.tryAgainLater.exitCode
        case .refused: throw ExitStatus.refusedCluster.exitCode
        }
    }

    /// `--replay-archive`: one applier per pending segment (its rejects on stdout, as live).
    static func replay(_ config: ApplierConfiguration, seal: Bool, stop: StopToken, logger: Logger) throws {
        let replay = ArchiveReplay(archivePath: config.archivePath!, retentionDays: config.archiveRetentionDays, sealCurrent: seal)
        let result: ArchiveReplay.Result
        do {
            result = try replay.run(logger: logger) { fd in try Applier(configuration: config, logger: logger, stop: stop, inputFD: fd) }
        } catch {
            logger.critical("archive: \(error)")
            throw ExitStatus.failure.exitCode
        }
        if let (segment, outcome) = result.stoppedAt {
            logger.critical("archive: stopped at \(segment); it and the segments after it stay pending")
            // Stopped by a signal with everything read committed: try again later.
            try exit(outcome == .done ? .gaveUp : outcome)
        }
    }

    /// Runs the schema file on the database the applier would use (so a
    /// script needs no second copy of the connection settings), retrying
    /// for a minute while PostgreSQL is not up yet.
    static func apply(changeset path: String, to conninfo: String, logger: Logger) throws {
        let sql: String
        do { sql = try String(contentsOfFile: path, encoding: .utf8) } catch {
            logger.critical("cannot read \(path): \(error)")
            throw ExitStatus.failure.exitCode
        }
        let deadline = Date().addingTimeInterval(60)
        while true {
            do {
                let connection = try PGConnection(conninfo: conninfo)
                try connection.executeScript(sql)
                logger.notice("applied \(path)", metadata: ["database": "\(ConnectionString.redacted(conninfo))"])
                return
            } catch where error.isTransient && Date() < deadline {
                usleep(500_000)
            } catch {
                logger.critical("cannot apply \(path): \(error)")
                throw ExitStatus.failure.exitCode
            }
        }
    }
}
