import HummingbirdCore
import NIOCore
import NIOPosix
import Logging
import ServiceLifecycle

/// Assembles the receiver's HTTP server: HummingbirdCore's `Server` (bind,
/// connection cap, quiescing) serving every connection with `WebhookChannel`,
/// behind TLS when there are certificates.
func buildServer(
    configuration: ReceiverConfiguration,
    writer: StreamWriter,
    state: ReceiverState,
    metrics: ReceiverMetrics,
    certificates: TLSCertificates?,
    logger: Logger
) throws -> any Service {
    let verifier = try configuration.webhookSecret.map { try SignatureVerifier(secret: $0) }
    let channel = WebhookChannel(
        configuration: configuration,
        intake: WebhookIntake(configuration: configuration, state: state, verifier: verifier),
        writer: writer, metrics: metrics, logger: logger)
    let serverConfiguration = ServerConfiguration(
        address: .hostname(configuration.host, port: configuration.port),
        backlog: 1024,
        availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections, logger: logger)
    )
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    if let certificates {
        return ReloadingTLSChannel(base: channel, certificates: certificates)
            .server(configuration: serverConfiguration, eventLoopGroup: group, logger: logger)
    }
    return channel.server(configuration: serverConfiguration, eventLoopGroup: group, logger: logger)
}

/// Runs the receiver until SIGTERM/SIGINT (exit 0 after draining) or until the
/// output stream fails (throws `StreamWriter.Failure`).
///
/// Services shut down in reverse order: the drain flag flips first (healthz
/// and new webhooks get 503), then the HTTP server finishes in-flight
/// requests, then the writer writes and syncs what is queued.
public func runReceiver(configuration: ReceiverConfiguration, outputFD: Int32 = 1, logger: Logger) async throws {
    let archive = try configuration.archivePath.map {
        try ArchiveFile(path: $0, rotateBytes: configuration.archiveRotateBytes, rotateDaily: configuration.archiveRotateDaily, logger: logger)
    }
    let metrics = ReceiverMetrics()
    let writer = StreamWriter(
        outputFD: outputFD,
        archive: archive,
        capacity: configuration.queueCapacity,
        maxQueuedBytes: configuration.queueBytes,
        stallTimeout: .milliseconds(configuration.stallTimeoutMilliseconds),
        queueTimeout: .seconds(configuration.queueTimeoutSeconds),
        metrics: metrics,
        logger: logger
    )
    let state = ReceiverState()
    let certificates = try configuration.tlsCertificateFile.map { certificate in
        try TLSCertificates(certificateFile: certificate, keyFile: configuration.tlsKeyFile ?? certificate)
    }
    let server = try buildServer(configuration: configuration, writer: writer, state: state, metrics: metrics,
                                 certificates: certificates, logger: logger)
    let group = ServiceGroup(
        configuration: .init(
            services: [
                .init(service: writer, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: server, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: DrainTrigger(state: state), successTerminationBehavior: .ignore),
                .init(service: CertificateReloader(certificates: certificates, logger: logger), successTerminationBehavior: .ignore),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
    )
    logger.info("receiver listening", metadata: [
        "address": "\(certificates == nil ? "http" : "https")://\(configuration.host):\(configuration.port)",
        "archive": "\(configuration.archivePath ?? "none")",
        "signatures": "\(configuration.webhookSecret == nil ? "off" : "on")",
    ])
    try await group.run()
    logger.info("receiver stopped")
}
