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

    private typealias S = ApplierSettings

    @OptionGroup var common: CommonOptions
    @OptionGroup var database: DatabaseOptions
    @Option(name: S.batchSize.name, help: S.batchSize.help) var batchSize: Int?
    @Option(name: S.batchMs.name, help: S.batchMs.help) var batchMs: Int?
    @Option(name: S.connections.name, help: S.connections.help) var connections: Int?
    @Option(name: S.cacheMegabytes.name, help: S.cacheMegabytes.help) var cacheMb: Int?
    @Option(name: S.maxLineBytes.name, help: S.maxLineBytes.help) var maxLineBytes: Int?
    @Option(name: S.shutdownTimeout.name, help: S.shutdownTimeout.help) var shutdownTimeout: Int?
    @Option(name: S.metricsPort.name, help: S.metricsPort.help) var metricsPort: Int?
    @Option(name: S.metricsHost.name, help: S.metricsHost.help) var metricsHost: String?
    @Option(help: ArgumentHelp("Apply this schema file (changeset.sql) to the database with these same settings, then exit; waits up to a minute for PostgreSQL to come up.",
                               valueName: "file"))
    var applyChangeset: String?
    @Flag(help: ArgumentHelp("Apply every archive segment not yet verified (ARCHIVE_PATH.<time>, oldest first), move each to applied/ beside it once all its lines are committed, delete verified ones past ARCHIVE_RETENTION_DAYS, then exit."))
    var replayArchive = false
    @Flag(help: ArgumentHelp("With --replay-archive: first make the current ARCHIVE_PATH a segment too (only while no receiver writes it)."))
    var sealArchive = false
    @Option(name: S.archivePath.name, help: S.archivePath.help) var archivePath: String?
    @Option(name: S.archiveRetentionDays.name, help: S.archiveRetentionDays.help) var archiveRetentionDays: Int?
    @OptionGroup(title: "JetStream mode (read the stream instead of stdin)") var jetStream: JetStreamOptions
    @Option(name: JetStreamOptions.natsConsumerSetting.name, help: JetStreamOptions.natsConsumerSetting.help) var natsConsumer: String?
    @Option(name: JetStreamOptions.natsAckWaitSecondsSetting.name, help: JetStreamOptions.natsAckWaitSecondsSetting.help) var natsAckWaitSeconds: Int?

    func resolve() throws -> ApplierConfiguration {
        try Self.checkingSettings {
            let settings = Settings()
            var config = ApplierConfiguration(conninfo: database.conninfo)
            config.batchSize = try settings.value(S.batchSize, flag: batchSize)
            config.batchMilliseconds = try settings.value(S.batchMs, flag: batchMs)
            config.connections = try settings.value(S.connections, flag: connections)
            config.cacheMegabytes = try settings.value(S.cacheMegabytes, flag: cacheMb)
            config.maxLineBytes = try settings.value(S.maxLineBytes, flag: maxLineBytes)
            config.shutdownTimeoutSeconds = try settings.value(S.shutdownTimeout, flag: shutdownTimeout)
            config.metricsPort = try settings.optional(S.metricsPort, flag: metricsPort)
            config.metricsHost = try settings.value(S.metricsHost, flag: metricsHost)
            config.archivePath = try settings.optional(S.archivePath, flag: archivePath)
            config.archiveRetentionDays = try settings.value(S.archiveRetentionDays, flag: archiveRetentionDays)
            config.jetStream = try jetStream.resolve(settings, consumer: settings.value(JetStreamOptions.natsConsumerSetting, flag: natsConsumer))
            config.jetStream?.ackWaitSeconds = try settings.value(JetStreamOptions.natsAckWaitSecondsSetting, flag: natsAckWaitSeconds)
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
            "cache.mb": "\(config.cacheMegabytes)",
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
