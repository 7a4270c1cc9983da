import Hummingbird
import HummingbirdCore
import NIOCore
import Logging
import ServiceLifecycle

/// Assembles the receiver's HTTP application: routes, error shape, server
/// settings. Tests call this too.
public func buildApplication(
    configuration: ReceiverConfiguration,
    writer: StreamWriter,
    state: ReceiverState,
    metrics: ReceiverMetrics,
    certificates: TLSCertificates? = nil,
    logger: Logger
) throws -> some ApplicationProtocol {
    let verifier = try configuration.webhookSecret.map { try SignatureVerifier(secret: $0) }
    let router = Router(context: BasicRequestContext.self)
    router.add(middleware: MetricsMiddleware(metrics: metrics))
    router.add(middleware: JSONErrorMiddleware())
    WebhookController(configuration: configuration, writer: writer, state: state, verifier: verifier)
        .addRoutes(to: router)
    router.get("/metrics") { _, _ -> Response in
        Response(
            status: .ok,
            headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: metrics.exposition()))
        )
    }
    let requestTimeout = TimeAmount.seconds(Int64(configuration.requestTimeoutSeconds))
    let http1 = HTTP1Channel.Configuration(
        additionalChannelHandlers: [ExpectContinueHandler(), RequestDeadlineHandler(timeout: requestTimeout, logger: logger)],
        idleTimeout: .seconds(Int64(configuration.idleTimeoutSeconds))
    )
    let server: HTTPServerBuilder = if let certificates {
        HTTPServerBuilder { responder in
            ReloadingTLSChannel(base: HTTP1Channel(responder: responder, configuration: http1), certificates: certificates)
        }
    } else {
        .http1(configuration: http1)
    }
    return Application(
        router: router,
        server: server,
        configuration: .init(
            address: .hostname(configuration.host, port: configuration.port),
            serverName: nil,
            backlog: 1024,
            availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections, logger: logger)
        ),
        logger: logger
    )
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
    let app = try buildApplication(configuration: configuration, writer: writer, state: state, metrics: metrics,
                                   certificates: certificates, logger: logger)
    let group = ServiceGroup(
        configuration: .init(
            services: [
                .init(service: writer, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: app, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup),
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
