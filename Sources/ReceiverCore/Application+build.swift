import HummingbirdCore
import NIOCore
import NIOPosix
import Logging
import MetricsEndpoint
import ServiceLifecycle

/// Assembles the receiver's HTTP server: HummingbirdCore's `Server` (bind,
/// connection cap, quiescing) serving every connection with `WebhookChannel`,
/// behind TLS when there are certificates.
func buildServer(
    configuration: ReceiverConfiguration,
    sink: any LineSink,
    state: ReceiverState,
    metrics: ReceiverMetrics,
    certificates: TLSCertificates?,
    logger: Logger
) throws -> any Service {
    let verifier = try configuration.webhookSecret.map { try SignatureVerifier(secret: $0) }
    let channel = WebhookChannel(
        configuration: configuration,
        intake: WebhookIntake(configuration: configuration, state: state, verifier: verifier),
        sink: sink, metrics: metrics, logger: logger)
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
/// requests, then the writer writes and syncs what is queued (or, in
/// JetStream mode, the publisher waits for outstanding acknowledgements).
public func runReceiver(configuration: ReceiverConfiguration, outputFD: Int32 = 1, logger: Logger) async throws {
    let archive = try configuration.archivePath.map {
        try ArchiveFile(path: $0, rotateBytes: configuration.archiveRotateBytes, rotateDaily: configuration.archiveRotateDaily, logger: logger)
    }
    let metrics = ReceiverMetrics()
    func writer(outputFD: Int32?) -> StreamWriter {
        StreamWriter(
            outputFD: outputFD,
            archive: archive,
            capacity: configuration.queueCapacity,
            maxQueuedBytes: configuration.queueBytes,
            stallTimeout: .milliseconds(configuration.stallTimeoutMilliseconds),
            queueTimeout: .seconds(configuration.queueTimeoutSeconds),
            metrics: metrics,
            logger: logger
        )
    }
    // The sink, and its services in the order they start (they stop in reverse).
    let sink: any LineSink
    let sinkServices: [any Service]
    if let jetStream = configuration.jetStream {
        let publisher = try JetStreamPublisher(settings: jetStream, ackTimeout: .seconds(configuration.queueTimeoutSeconds),
                                               metrics: metrics, logger: logger)
        if archive != nil {
            let archiver = writer(outputFD: nil)
            sink = ArchivingSink(archive: archiver, then: publisher)
            sinkServices = [publisher, archiver]
        } else {
            sink = publisher
            sinkServices = [publisher]
        }
    } else {
        let stdout = writer(outputFD: outputFD)
        sink = stdout
        sinkServices = [stdout]
    }
    metrics.recordOutput(sink.mode)
    // /metrics off the public port, when asked.
    let metricsServer = try configuration.metricsPort.map { port in
        try MetricsServer(host: configuration.metricsHost, port: port) { metrics.exposition() }
    }
    defer { metricsServer?.close() }
    if let metricsServer {
        logger.info("serving metrics", metadata: ["address": "\(configuration.metricsHost):\(metricsServer.port)", "path": "/metrics"])
    }
    let state = ReceiverState()
    let certificates = try configuration.tlsCertificateFile.map { certificate in
        try TLSCertificates(certificateFile: certificate, keyFile: configuration.tlsKeyFile ?? certificate)
    }
    let server = try buildServer(configuration: configuration, sink: sink, state: state, metrics: metrics,
                                 certificates: certificates, logger: logger)
    let group = ServiceGroup(
        configuration: .init(
            services: sinkServices.map {
                .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
            } + [
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
        "output": "\(configuration.jetStream.map { "JetStream stream \($0.stream) at \($0.servers.joined(separator: ","))" } ?? "stdout")",
        "archive": "\(configuration.archivePath ?? "none")",
        "signatures": "\(configuration.webhookSecret == nil ? "off" : "on")",
    ])
    try await group.run()
    logger.info("receiver stopped")
}
