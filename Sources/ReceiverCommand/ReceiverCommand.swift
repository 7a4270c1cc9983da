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
    private typealias S = ReceiverSettings

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
    @Option(name: S.httpHost.name, help: S.httpHost.help) var httpHost: String?
    @Option(name: S.httpPort.name, help: S.httpPort.help) var httpPort: Int?
    @Option(name: S.maxBodyBytes.name, help: S.maxBodyBytes.help) var maxBodyBytes: Int?
    @Option(name: S.webhookSecret.name, help: S.webhookSecret.help) var webhookSecret: String?
    @Option(name: S.tlsCertFile.name, help: S.tlsCertFile.help) var tlsCertFile: String?
    @Option(name: S.tlsKeyFile.name, help: S.tlsKeyFile.help) var tlsKeyFile: String?
    @Option(name: S.archivePath.name, help: S.archivePath.help) var archivePath: String?
    @Option(name: S.archiveRotateBytes.name, help: S.archiveRotateBytes.help) var archiveRotateBytes: Int?
    @Option(name: S.archiveRotateDaily.name, help: S.archiveRotateDaily.help) var archiveRotateDaily: Bool?
    @Option(name: S.queueCapacity.name, help: S.queueCapacity.help) var queueCapacity: Int?
    @Option(name: S.queueBytes.name, help: S.queueBytes.help) var queueBytes: Int?
    @Option(name: S.idleTimeoutSeconds.name, help: S.idleTimeoutSeconds.help) var idleTimeoutSeconds: Int?
    @Option(name: S.metricsPort.name, help: S.metricsPort.help) var metricsPort: Int?
    @Option(name: S.metricsHost.name, help: S.metricsHost.help) var metricsHost: String?
    @Option(name: S.queueTimeoutSeconds.name, help: S.queueTimeoutSeconds.help) var queueTimeoutSeconds: Int?
    @Option(name: S.stallTimeoutMs.name, help: S.stallTimeoutMs.help) var stallTimeoutMs: Int?
    @Option(name: S.requestTimeoutSeconds.name, help: S.requestTimeoutSeconds.help) var requestTimeoutSeconds: Int?
    @Option(name: S.maxConnections.name, help: S.maxConnections.help) var maxConnections: Int?
    @OptionGroup(title: "JetStream mode (stdout carries nothing; 202 once the stream has stored the webhook)") var jetStream: JetStreamOptions

    func resolve() throws -> ReceiverConfiguration {
        let settings = Settings()
        var config = ReceiverConfiguration()
        try Self.checkingSettings {
            config.host = try settings.value(S.httpHost, flag: httpHost)
            config.port = try settings.value(S.httpPort, flag: httpPort)
            config.maxBodyBytes = try settings.value(S.maxBodyBytes, flag: maxBodyBytes)
            config.webhookSecret = try settings.optional(S.webhookSecret, flag: webhookSecret)
            config.tlsCertificateFile = try settings.optional(S.tlsCertFile, flag: tlsCertFile)
            config.tlsKeyFile = try settings.optional(S.tlsKeyFile, flag: tlsKeyFile)
            config.archivePath = try settings.optional(S.archivePath, flag: archivePath)
            config.archiveRotateBytes = try settings.value(S.archiveRotateBytes, flag: archiveRotateBytes)
            config.archiveRotateDaily = try settings.value(S.archiveRotateDaily, flag: archiveRotateDaily)
            config.queueCapacity = try settings.value(S.queueCapacity, flag: queueCapacity)
            config.queueBytes = try settings.value(S.queueBytes, flag: queueBytes)
            config.queueTimeoutSeconds = try settings.value(S.queueTimeoutSeconds, flag: queueTimeoutSeconds)
            config.stallTimeoutMilliseconds = try settings.value(S.stallTimeoutMs, flag: stallTimeoutMs)
            config.requestTimeoutSeconds = try settings.value(S.requestTimeoutSeconds, flag: requestTimeoutSeconds)
            config.maxConnections = try settings.value(S.maxConnections, flag: maxConnections)
            config.idleTimeoutSeconds = try settings.value(S.idleTimeoutSeconds, flag: idleTimeoutSeconds)
            config.jetStream = try jetStream.resolve(settings)
            config.metricsPort = try settings.optional(S.metricsPort, flag: metricsPort)
            config.metricsHost = try settings.value(S.metricsHost, flag: metricsHost)
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
