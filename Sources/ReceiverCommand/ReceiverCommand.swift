import ArgumentParser
import CommandSupport
import FileIO
import Foundation
import JetStreamSetup
import Logging
import ReceiverCore

/// `receiver`: HTTP webhooks in, canonical NDJSON lines out on stdout.
@main
struct ReceiverCommand: AsyncParsableCommand, MeetperryCommand {
    static let configuration = CommandConfiguration(
        commandName: "receiver",
        abstract: "Accept TODO webhooks over HTTP and write each as one NDJSON line to stdout.",
        discussion: """
        With NATS_URL set, each webhook is published to a JetStream stream instead of \
        stdout, and answered 202 once the stream has stored it.

        Every option has an environment variable (in brackets); the option wins.

        Under systemd socket activation (LISTEN_FDS=1, LISTEN_PID: see sd_listen_fds(3)) \
        the receiver serves the listening socket it is given on fd 3, and HTTP_HOST and \
        HTTP_PORT are not bound; a restart then refuses no connection.

        Exit status: 0 after a clean shutdown (SIGTERM/SIGINT); 64 for bad settings; 74 \
        when stdout is closed by its reader or the archive cannot be opened; 1 for any \
        other failure.
        """,
        version: versionLine("receiver")
    )

    @OptionGroup var common: CommonOptions
    @Option(help: ArgumentHelp("Address to listen on [HTTP_HOST, default 0.0.0.0].", valueName: "address")) var httpHost: String?
    @Option(help: ArgumentHelp("Port to listen on [HTTP_PORT, default 8000].", valueName: "port")) var httpPort: Int?
    @Option(help: ArgumentHelp("Largest accepted body in bytes [MAX_BODY_BYTES, default 1048576].", valueName: "bytes")) var maxBodyBytes: Int?
    @Option(help: ArgumentHelp("Standard Webhooks secret 'whsec_…', or several separated by spaces (any may sign); unset means no signature check [WEBHOOK_SECRET].",
                               valueName: "secrets"))
    var webhookSecret: String?
    @Option(help: ArgumentHelp("PEM certificate (chain) for HTTPS on the same port; re-read on SIGHUP [TLS_CERT_FILE].", valueName: "file"))
    var tlsCertFile: String?
    @Option(help: ArgumentHelp("PEM private key of that certificate [TLS_KEY_FILE].", valueName: "file")) var tlsKeyFile: String?
    @Option(help: ArgumentHelp("Append-only, fsynced copy of every accepted line [ARCHIVE_PATH].", valueName: "file")) var archivePath: String?
    @Option(help: ArgumentHelp("Rotate the archive before it passes this many bytes; 0: never by size [ARCHIVE_ROTATE_BYTES, default 67108864].", valueName: "bytes"))
    var archiveRotateBytes: Int?
    @Option(help: ArgumentHelp("Rotate the archive at each new UTC day: true or false [ARCHIVE_ROTATE_DAILY, default true].", valueName: "bool"))
    var archiveRotateDaily: Bool?
    @Option(help: ArgumentHelp("Lines waiting for stdout before answering 503 [QUEUE_CAPACITY, default 4096].", valueName: "n")) var queueCapacity: Int?
    @Option(help: ArgumentHelp("Bytes waiting for stdout before answering 503 [QUEUE_BYTES, default 8388608].", valueName: "bytes")) var queueBytes: Int?
    @Option(help: ArgumentHelp("Seconds an idle connection is kept [IDLE_TIMEOUT_SECONDS, default 60].", valueName: "s")) var idleTimeoutSeconds: Int?
    @Option(help: ArgumentHelp("Serve GET /metrics on this port of its own instead of the public one (which then answers 404 there); 0 picks a free one (logged) [RECEIVER_METRICS_PORT, default: the public port].",
                               valueName: "port"))
    var metricsPort: Int?
    @Option(help: ArgumentHelp("Address the metrics port binds to [RECEIVER_METRICS_HOST, default 127.0.0.1].", valueName: "address"))
    var metricsHost: String?
    @Option(help: ArgumentHelp("Seconds a webhook may wait for a stalled stdout reader (or the stream's acknowledgement) before 503 [QUEUE_TIMEOUT_SECONDS, default 4].",
                               valueName: "s"))
    var queueTimeoutSeconds: Int?
    @Option(help: ArgumentHelp("Milliseconds without the reader taking anything before new webhooks get 503 at once [STALL_TIMEOUT_MS, default 1000].", valueName: "ms"))
    var stallTimeoutMs: Int?
    @Option(help: ArgumentHelp("Seconds a connection has to send each whole request [REQUEST_TIMEOUT_SECONDS, default 30].", valueName: "s"))
    var requestTimeoutSeconds: Int?
    @Option(help: ArgumentHelp("Connections open at once; more wait to be accepted [MAX_CONNECTIONS, default 4096].", valueName: "n")) var maxConnections: Int?
    @OptionGroup(title: "JetStream mode (stdout carries nothing; 202 once the stream has stored the webhook)") var jetStream: JetStreamOptions

    func resolve() throws -> ReceiverConfiguration {
        let settings = Settings()
        var config = ReceiverConfiguration()
        config.host = settings.string(httpHost, "HTTP_HOST", default: config.host)
        config.webhookSecret = webhookSecret ?? settings.string("WEBHOOK_SECRET")
        config.archivePath = archivePath ?? settings.string("ARCHIVE_PATH")
        config.tlsCertificateFile = tlsCertFile ?? settings.string("TLS_CERT_FILE")
        config.tlsKeyFile = tlsKeyFile ?? settings.string("TLS_KEY_FILE")
        try Self.checkingSettings {
            config.port = try settings.int(("--http-port", httpPort), "HTTP_PORT", default: config.port, range: 0...65535)
            config.maxBodyBytes = try settings.int(("--max-body-bytes", maxBodyBytes), "MAX_BODY_BYTES", default: config.maxBodyBytes, range: 1...(1 << 30))
            config.archiveRotateBytes = try settings.int(("--archive-rotate-bytes", archiveRotateBytes), "ARCHIVE_ROTATE_BYTES",
                                                         default: config.archiveRotateBytes, range: 0...(1 << 40))
            config.archiveRotateDaily = try settings.bool(archiveRotateDaily, "ARCHIVE_ROTATE_DAILY", default: config.archiveRotateDaily)
            config.queueCapacity = try settings.int(("--queue-capacity", queueCapacity), "QUEUE_CAPACITY", default: config.queueCapacity, range: 1...1_000_000)
            config.queueBytes = try settings.int(("--queue-bytes", queueBytes), "QUEUE_BYTES", default: config.queueBytes, range: 1...(1 << 34))
            config.queueTimeoutSeconds = try settings.int(("--queue-timeout-seconds", queueTimeoutSeconds), "QUEUE_TIMEOUT_SECONDS",
                                                          default: config.queueTimeoutSeconds, range: 1...86_400)
            config.stallTimeoutMilliseconds = try settings.int(("--stall-timeout-ms", stallTimeoutMs), "STALL_TIMEOUT_MS",
                                                               default: config.stallTimeoutMilliseconds, range: 10...3_600_000)
            config.requestTimeoutSeconds = try settings.int(("--request-timeout-seconds", requestTimeoutSeconds), "REQUEST_TIMEOUT_SECONDS",
                                                            default: config.requestTimeoutSeconds, range: 1...86_400)
            config.maxConnections = try settings.int(("--max-connections", maxConnections), "MAX_CONNECTIONS", default: config.maxConnections,
                                                     range: 1...1_000_000)
            config.idleTimeoutSeconds = try settings.int(("--idle-timeout-seconds", idleTimeoutSeconds), "IDLE_TIMEOUT_SECONDS",
                                                         default: config.idleTimeoutSeconds, range: 1...86_400)
            config.jetStream = try jetStream.resolve(settings)
            if metricsPort != nil || settings.string("RECEIVER_METRICS_PORT") != nil {
                config.metricsPort = try settings.int(("--metrics-port", metricsPort), "RECEIVER_METRICS_PORT", default: 0, range: 0...65_535)
            }
            config.metricsHost = settings.string(metricsHost, "RECEIVER_METRICS_HOST", default: config.metricsHost)
        }
        // A listening socket from systemd (meetperry.socket) wins over HTTP_HOST and HTTP_PORT.
        do {
            if let activation = try SocketActivation.parse(environment: ProcessInfo.processInfo.environment, pid: getpid()) {
                config.listenAddress = try activation.adopt()
                config.listenSocket = activation.descriptor
            }
        } catch {
            throw ValidationError("\(error)")
        }
        return config
    }

    /// Every setting, and the files and secrets they name, before anything starts.
    func validate() throws {
        let config = try resolve()
        switch (config.tlsCertificateFile, config.tlsKeyFile) {
        case (nil, nil):
            break
        case (let certificate?, let key?):
            do { _ = try TLSCertificates(certificateFile: certificate, keyFile: key) } catch { throw ValidationError("\(error)") }
        default:
            throw ValidationError("TLS_CERT_FILE and TLS_KEY_FILE go together: set both for HTTPS, or neither")
        }
        if let secret = config.webhookSecret {
            do { _ = try SignatureVerifier(secret: secret) } catch { throw ValidationError("\(error)") }
        }
    }

    func run() async throws {
        let config = try resolve()
        let logger = startLogging(as: "receiver")
        // A closed stdout must surface as EPIPE from write(), not kill the process;
        // an archive past the file-size limit as EFBIG (503), not SIGXFSZ.
        signal(SIGPIPE, SIG_IGN)
        signal(SIGXFSZ, SIG_IGN)
        // SIGHUP reloads the TLS certificate (a dispatch source, which needs the
        // signal ignored); ignored from the first moment, so an early one cannot end the process.
        signal(SIGHUP, SIG_IGN)
        raiseOpenFileLimit(to: config.maxConnections + 64, logger: logger)
        SocketActivation.unsetVariables()
        do {
            try await runReceiver(configuration: config, logger: logger)
        } catch let failure as StreamWriter.Failure {
            logger.critical("exiting: \(failure)")
            throw ExitStatus.outputFailed.exitCode
        } catch let error as SystemCallError {
            logger.critical("cannot open the archive: \(error)")
            throw ExitStatus.outputFailed.exitCode
        } catch let error as ListenError {
            logger.critical("\(error)")
            throw ExitStatus.failure.exitCode
        } catch let refusal as JetStreamRefusal {
            logger.critical("refusing JetStream mode: \(refusal)")
            throw ExitStatus.refusedCluster.exitCode
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
