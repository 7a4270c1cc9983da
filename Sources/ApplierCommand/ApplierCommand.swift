import ApplierCore
import ArgumentParser
import CommandSupport
import Foundation
import LibPQ
import Logging

/// `applier`: NDJSON webhooks on stdin into PostgreSQL.
@main
struct ApplierCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "applier",
        abstract: "Apply a stream of TODO webhooks (NDJSON on stdin) to PostgreSQL.",
        discussion: """
        Rejected lines go to stdout as {"line","reason","input"} NDJSON; logs and a final
        summary go to stderr. With NATS_URL set, it reads the JetStream stream's durable
        consumer instead of stdin, acknowledges each message once its batch has committed,
        and writes rejects as {"seq","reason","input"}. The database is DATABASE_URL, or DB_HOST/DB_PORT/DB_USER/
        DB_NAME/DB_PASSWORD. Exit status: 0 when everything read is committed (EOF or
        SIGTERM/SIGINT), 1 on a fatal error (e.g. changeset.sql not applied), 64 for bad
        settings, 75 when stopped while PostgreSQL was unreachable.
        """,
        version: meetperryVersion
    )

    @Option(help: "Events per transaction at most [APPLIER_BATCH_SIZE, default 5000].") var batchSize: Int?
    @Option(help: "Commit a batch at the latest this many ms after its first event [APPLIER_BATCH_MS, default 50].") var batchMs: Int?
    @Option(help: "Connections committing in parallel, each for its own share of the tasks [APPLIER_CONNECTIONS, default 2].") var connections: Int?
    @Option(help: "Longest accepted line in bytes [APPLIER_MAX_LINE_BYTES, default 4194304].") var maxLineBytes: Int?
    @Option(help: "Seconds to keep retrying an unreachable database after SIGTERM [APPLIER_SHUTDOWN_TIMEOUT, default 30].") var shutdownTimeout: Int?
    @Option(help: "libpq connection string; wins over DATABASE_URL and DB_* [DATABASE_URL].") var databaseUrl: String?
    @Option(help: "trace, debug, info, notice, warning, error or critical [LOG_LEVEL, default info].") var logLevel: String?
    @OptionGroup(title: "JetStream mode (read the stream instead of stdin)") var jetStream: JetStreamOptions
    @Option(help: "Durable consumer the appliers share [NATS_CONSUMER, default appliers].") var natsConsumer: String?
    @Option(help: "When the consumer is made: seconds before a fetched, unacknowledged message goes to another applier [NATS_ACK_WAIT_SECONDS, default 30].") var natsAckWaitSeconds: Int?

    func run() throws {
        let settings = Settings()
        var environment = ProcessInfo.processInfo.environment
        if let databaseUrl { environment["DATABASE_URL"] = databaseUrl }
        var config = ApplierConfiguration(conninfo: ConnectionString.resolve(environment: environment))
        do {
            config.batchSize = try settings.int(batchSize, "APPLIER_BATCH_SIZE", default: config.batchSize, range: 1...1_000_000)
            config.batchMilliseconds = try settings.int(batchMs, "APPLIER_BATCH_MS", default: config.batchMilliseconds, range: 0...3_600_000)
            config.connections = try settings.int(connections, "APPLIER_CONNECTIONS", default: config.connections, range: 1...TaskStore.partitionCount)
            config.maxLineBytes = try settings.int(maxLineBytes, "APPLIER_MAX_LINE_BYTES", default: config.maxLineBytes, range: 1024...(1 << 30))
            config.shutdownTimeoutSeconds = try settings.int(shutdownTimeout, "APPLIER_SHUTDOWN_TIMEOUT", default: config.shutdownTimeoutSeconds, range: 0...86_400)
            config.jetStream = try jetStream.resolve(settings, consumer: settings.string(natsConsumer, "NATS_CONSUMER", default: "appliers"))
            config.jetStream?.ackWaitSeconds = try settings.int(natsAckWaitSeconds, "NATS_ACK_WAIT_SECONDS", default: 30, range: 1...86_400)
        } catch let error as Settings.InvalidSetting {
            throw ValidationError(error.description)
        }
        LogSetup.bootstrap(level: logLevel ?? settings.string("LOG_LEVEL"))
        let logger = Logger(label: "applier")
        signal(SIGPIPE, SIG_IGN)
        ShutdownSignal.install()
        logger.info("applier reading \(config.jetStream.map { "JetStream stream \($0.stream), consumer \($0.consumer)" } ?? "stdin")", metadata: [
            "database": "\(ConnectionString.redacted(config.conninfo))", "batch.size": "\(config.batchSize)", "batch.ms": "\(config.batchMilliseconds)",
        ])
        let applier: Applier
        do {
            applier = try Applier(configuration: config, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        let display = TerminalProgress()
        if let display {
            applier.progress = { counts, done in
                if done { return display.finish() }
                display.update("read \(counts.read) lines, applied \(counts.applied), duplicates \(counts.duplicates), rejected \(counts.rejected), \(Int(Double(counts.read) / max(counts.seconds, 0.001))) events/s")
            }
        }
        let exit = applier.run()
        if exit != .done { throw ExitCode(exit.rawValue) }
    }
}
