import HummingbirdCore
import NIOCore
import NIOPosix
import Logging
import MetricsEndpoint
import ServiceLifecycle
import Synchronization

/// Assembles the receiver's HTTP server: HummingbirdCore's `Server` (bind,
/// connection cap, quiescing) serving every connection with `WebhookChannel`,
/// behind TLS when there are certificates; `InheritedSocketServer` instead
/// when systemd handed over the listening socket.
func buildServer(
    configuration: ReceiverConfiguration,
    sink: any LineSink,
    lifecycle: ReceiverLifecycle,
    metrics: ReceiverMetrics,
    certificates: TLSCertificates?,
    logger: Logger,
    onListening: (@Sendable (any Channel) async -> Void)? = nil
) throws -> any Service {
    let verifier = try configuration.webhookSecret.map { try SignatureVerifier(secret: $0) }
    let channel = WebhookChannel(
        configuration: configuration, lifecycle: lifecycle,
        intake: WebhookIntake(configuration: configuration, verifier: verifier),
        sink: sink, metrics: metrics, logger: logger)
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    if let socket = configuration.listenSocket {
        func server<Child: ServerChildChannel>(_ child: Child) -> any Service {
            InheritedSocketServer(descriptor: socket, childChannel: child, backlog: Int32(listenBacklog), maxConnections: configuration.maxConnections,
                                  eventLoopGroup: group, logger: logger, onServerRunning: onListening)
        }
        return certificates.map { server(ReloadingTLSChannel(base: channel, certificates: $0)) } ?? server(channel)
    }
    let serverConfiguration = ServerConfiguration(
        address: .hostname(configuration.host, port: configuration.port),
        backlog: listenBacklog,
        availableConnectionsDelegate: MaximumAvailableConnections(configuration.maxConnections, logger: logger)
    )
    if let certificates {
        return ReloadingTLSChannel(base: channel, certificates: certificates)
            .server(configuration: serverConfiguration, onServerRunning: onListening, eventLoopGroup: group, logger: logger)
    }
    return channel.server(configuration: serverConfiguration, onServerRunning: onListening, eventLoopGroup: group, logger: logger)
}

/// Connections the kernel completes before the receiver accepts them (more wait as SYNs).
let listenBacklog = 1024

/// Runs the receiver until SIGTERM/SIGINT (exit 0 after draining) or until the
/// output stream fails (throws `StreamWriter.Failure`).
///
/// Shutdown follows the receiver's lifecycle (`ReceiverLifecycle`):
/// graceful shutdown begins the drain (`/healthz` says so; the HTTP server
/// quiesces and answers what comes on open connections), the server's end
/// closes it (the writer writes and syncs what is queued, or, in JetStream
/// mode, the publisher waits for outstanding acknowledgements), and the
/// sinks' end stops it.
public func runReceiver(configuration: ReceiverConfiguration, outputFD: Int32 = 1, logger: Logger) async throws {
    let archive = try configuration.archivePath.map {
        try ArchiveFile(path: $0, rotateBytes: configuration.archiveRotateBytes, rotateDaily: configuration.archiveRotateDaily, logger: logger)
    }
    let metrics = ReceiverMetrics()
    let lifecycle = ReceiverLifecycle()
    func writer(outputFD: Int32?) -> StreamWriter {
        StreamWriter(
            outputFD: outputFD,
            archive: archive,
            capacity: configuration.queueCapacity,
            maxQueuedBytes: configuration.queueBytes,
            stallTimeout: .milliseconds(configuration.stallTimeoutMilliseconds),
            queueTimeout: .seconds(configuration.queueTimeoutSeconds),
            metrics: metrics,
            lifecycle: lifecycle,
            logger: logger
        )
    }
    // The sink, and its services in the order they start (they stop in reverse).
    let sink: any LineSink
    let sinkServices: [any Service]
    if let jetStream = configuration.jetStream {
        let publisher = try JetStreamPublisher(settings: jetStream, ackTimeout: .seconds(configuration.queueTimeoutSeconds),
                                               metrics: metrics, lifecycle: lifecycle, logger: logger)
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
    let certificates = try configuration.tlsCertificateFile.map { certificate in
        try TLSCertificates(certificateFile: certificate, keyFile: configuration.tlsKeyFile ?? certificate)
    }
    let scheme = certificates == nil ? "http" : "https"
    let address = configuration.listenSocket == nil
        ? "\(scheme)://\(configuration.host):\(configuration.port)"
        : "\(scheme)://\(configuration.listenAddress ?? "?") (socket fd \(configuration.listenSocket!) from the supervisor)"
    let listening = Atomic<Bool>(false)
    // Said once the socket is bound, not before: a start-up script may wait for this line.
    let server = try buildServer(configuration: configuration, sink: sink, lifecycle: lifecycle, metrics: metrics,
                                 certificates: certificates, logger: logger) { _ in
        listening.store(true, ordering: .relaxed)
        logger.notice("receiver listening", metadata: [
            "address": "\(address)",
            "output": "\(configuration.jetStream.map { "JetStream stream \($0.stream) at \($0.servers.joined(separator: ","))" } ?? "stdout")",
            "archive": "\(configuration.archivePath ?? "none")",
            "signatures": "\(configuration.webhookSecret == nil ? "off" : "on")",
        ])
    }
    let group = ServiceGroup(
        configuration: .init(
            services: sinkServices.map {
                .init(service: $0, successTerminationBehavior: .gracefullyShutdownGroup, failureTerminationBehavior: .gracefullyShutdownGroup)
            } + [
                .init(service: HTTPServerStage(server: server, lifecycle: lifecycle), successTerminationBehavior: .gracefullyShutdownGroup,
                      failureTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: ShutdownSequence(lifecycle: lifecycle), successTerminationBehavior: .ignore),
                .init(service: CertificateReloader(certificates: certificates, logger: logger), successTerminationBehavior: .ignore),
            ],
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: logger
        )
    )
    do {
        try await group.run()
    } catch where !listening.load(ordering: .relaxed) {
        // The server never came up: the address could not be bound (taken, not ours, no permission).
        throw ListenError(address: address, reason: "\(error)")
    }
    lifecycle.advance(to: .stopped)
    logger.info("receiver stopped")
}
