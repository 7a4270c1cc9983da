import ArgumentParser
import CommandSupport
import FileIO
import Foundation
import Logging
import ReceiverCore

/// `receiver`: HTTP webhooks in, canonical NDJSON lines out on stdout.
@main
struct ReceiverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "receiver",
        abstract: "Accept TODO webhooks over HTTP and write each as one NDJSON line to stdout.",
        discussion: """
        Every flag has an environment variable (in brackets); the flag wins.
        With NATS_URL set, each webhook is published to a JetStream stream instead
        of stdout, and answered 202 once the stream has stored it.
        Exit status: 0 after a clean shutdown (SIGTERM/SIGINT), 64 for bad settings,
        74 when stdout is closed by its reader, 1 for any other failure.
        """,
        version: meetperryVersion
    )

    @Option(help: "Address to listen on [HTTP_HOST, default 0.0.0.0].") var httpHost: String?
    @Option(help: "Port to listen on [HTTP_PORT, default 8000].") var httpPort: Int?
    @Option(help: "Largest accepted body in bytes [MAX_BODY_BYTES, default 1048576].") var maxBodyBytes: Int?
    @Option(help: "Standard Webhooks secret 'whsec_…', or several separated by spaces (any may sign); unset means no signature check [WEBHOOK_SECRET].") var webhookSecret: String?
    @Option(help: "PEM certificate (chain) for HTTPS on the same port; re-read on SIGHUP [TLS_CERT_FILE].") var tlsCertFile: String?
    @Option(help: "PEM private key of that certificate [TLS_KEY_FILE].") var tlsKeyFile: String?
    @Option(help: "Append-only, fsynced copy of every accepted line [ARCHIVE_PATH].") var archivePath: String?
    @Option(help: "Rotate the archive before it passes this many bytes; 0: never by size [ARCHIVE_ROTATE_BYTES, default 67108864].") var archiveRotateBytes: Int?
    @Option(help: "Rotate the archive at each new UTC day: true or false [ARCHIVE_ROTATE_DAILY, default true].") var archiveRotateDaily: Bool?
    @Option(help: "Lines waiting for stdout before answering 503 [QUEUE_CAPACITY, default 4096].") var queueCapacity: Int?
    @Option(help: "Bytes waiting for stdout before answering 503 [QUEUE_BYTES, default 8388608].") var queueBytes: Int?
    @Option(help: "Seconds an idle connection is kept [IDLE_TIMEOUT_SECONDS, default 60].") var idleTimeoutSeconds: Int?
    @Option(help: "Seconds a webhook may wait for a stalled stdout reader before 503 [QUEUE_TIMEOUT_SECONDS, default 4].") var queueTimeoutSeconds: Int?
    @Option(help: "Milliseconds without the reader taking anything before new webhooks get 503 at once [STALL_TIMEOUT_MS, default 1000].") var stallTimeoutMs: Int?
    @Option(help: "Seconds a connection has to send each whole request [REQUEST_TIMEOUT_SECONDS, default 30].") var requestTimeoutSeconds: Int?
    @Option(help: "Connections open at once; more wait to be accepted [MAX_CONNECTIONS, default 4096].") var maxConnections: Int?
    @Option(help: "trace, debug, info, notice, warning, error or critical [LOG_LEVEL, default info].") var logLevel: String?
    @OptionGroup(title: "JetStream mode (stdout carries nothing; 202 once the stream has stored the webhook)") var jetStream: JetStreamOptions

    func resolve() throws -> ReceiverConfiguration {
        let settings = Settings()
        var config = ReceiverConfiguration()
        config.host = settings.string(httpHost, "HTTP_HOST", default: config.host)
        config.port = try settings.int(httpPort, "HTTP_PORT", default: config.port, range: 0...65535)
        config.maxBodyBytes = try settings.int(maxBodyBytes, "MAX_BODY_BYTES", default: config.maxBodyBytes, range: 1...(1 << 30))
        config.webhookSecret = webhookSecret ?? settings.string("WEBHOOK_SECRET")
        config.archivePath = archivePath ?? settings.string("ARCHIVE_PATH")
        config.tlsCertificateFile = tlsCertFile ?? settings.string("TLS_CERT_FILE")
        config.tlsKeyFile = tlsKeyFile ?? settings.string("TLS_KEY_FILE")
        switch (config.tlsCertificateFile, config.tlsKeyFile) {
        case (nil, nil):
            break
        case (let certificate?, let key?):
            do { _ = try TLSCertificates(certificateFile: certificate, keyFile: key) } catch { throw ValidationError("\(error)") }
        default:
            throw ValidationError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both for HTTPS, or neither")
        }
        config.archiveRotateBytes = try settings.int(archiveRotateBytes, "ARCHIVE_ROTATE_BYTES", default: config.archiveRotateBytes, range: 0...(1 << 40))
        config.archiveRotateDaily = try settings.bool(archiveRotateDaily, "ARCHIVE_ROTATE_DAILY", default: config.archiveRotateDaily)
        config.queueCapacity = try settings.int(queueCapacity, "QUEUE_CAPACITY", default: config.queueCapacity, range: 1...1_000_000)
        config.queueBytes = try settings.int(queueBytes, "QUEUE_BYTES", default: config.queueBytes, range: 1...(1 << 34))
        config.queueTimeoutSeconds = try settings.int(queueTimeoutSeconds, "QUEUE_TIMEOUT_SECONDS", default: config.queueTimeoutSeconds, range: 1...86_400)
        config.stallTimeoutMilliseconds = try settings.int(stallTimeoutMs, "STALL_TIMEOUT_MS", default: config.stallTimeoutMilliseconds, range: 10...3_600_000)
        config.requestTimeoutSeconds = try settings.int(requestTimeoutSeconds, "REQUEST_TIMEOUT_SECONDS", default: config.requestTimeoutSeconds, range: 1...86_400)
        config.maxConnections = try settings.int(maxConnections, "MAX_CONNECTIONS", default: config.maxConnections, range: 1...1_000_000)
        config.idleTimeoutSeconds = try settings.int(idleTimeoutSeconds, "IDLE_TIMEOUT_SECONDS", default: config.idleTimeoutSeconds, range: 1...86_400)
        config.jetStream = try jetStream.resolve(settings)
        if let secret = config.webhookSecret {
            do { _ = try SignatureVerifier(secret: secret) } catch { throw ValidationError("\(error)") }
        }
        return config
    }

    func run() async throws {
        let config: ReceiverConfiguration
        do { config = try resolve() } catch let error as Settings.InvalidSetting { throw ValidationError(error.description) }
        LogSetup.bootstrap(level: logLevel ?? Settings().string("LOG_LEVEL"))
        let logger = Logger(label: "receiver")
        // A closed stdout must surface as EPIPE from write(), not kill the process;
        // an archive past the file-size limit as EFBIG (503), not SIGXFSZ.
        signal(SIGPIPE, SIG_IGN)
        signal(SIGXFSZ, SIG_IGN)
        // SIGHUP reloads the TLS certificate (a dispatch source, which needs the
        // signal ignored); ignored from the first moment, so an early one cannot end the process.
        signal(SIGHUP, SIG_IGN)
        raiseOpenFileLimit(to: config.maxConnections + 64, logger: logger)
        do {
            try await runReceiver(configuration: config, logger: logger)
        } catch let failure as StreamWriter.Failure {
            logger.critical("exiting: \(failure)")
            throw ExitCode(74)
        } catch let error as SystemCallError {
            logger.critical("cannot open the archive: \(error)")
            throw ExitCode(74)
        }
    }
}


/// Lifts the soft limit on open files (often 1024) towards the hard limit, so
/// that `MAX_CONNECTIONS` connections can actually be open.
func raiseOpenFileLimit(to wanted: Int, logger: Logger) {
    var limit = rlimit()
    guard getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < rlim_t(wanted) else { return }
    limit.rlim_cur = min(rlim_t(wanted), limit.rlim_max)
    if setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit) != 0 || limit.rlim_cur < rlim_t(wanted) {
        logger.warning("the open-file limit is below MAX_CONNECTIONS", metadata: ["limit": "\(limit.rlim_cur)"])
    }
}
