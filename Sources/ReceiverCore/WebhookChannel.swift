import HummingbirdCore
import Logging
import NIOCore

/// How each accepted connection is served: one `WebhookHTTPHandler` reads
/// HTTP/1.1 from the socket's bytes and answers, on the connection's event
/// loop, with no task or continuation per request and no other handler per
/// request part. HummingbirdCore's `Server` binds, accepts, caps connections
/// and quiesces them on graceful shutdown.
struct WebhookChannel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let channel: any Channel
    }

    let configuration: ReceiverConfiguration
    let lifecycle: ReceiverLifecycle
    let intake: WebhookIntake
    let sink: any LineSink
    let handOffs: SinkHandOffs
    let metrics: ReceiverMetrics
    let logger: Logger
    /// `/healthz`'s answer when all is well: the output never changes, so it is written once.
    let healthyBody: [UInt8]

    init(configuration: ReceiverConfiguration, lifecycle: ReceiverLifecycle, intake: WebhookIntake, sink: any LineSink, metrics: ReceiverMetrics,
         logger: Logger) {
        self.configuration = configuration
        self.lifecycle = lifecycle
        self.intake = intake
        self.sink = sink
        self.handOffs = SinkHandOffs(sink: sink)
        self.healthyBody = HealthAnswer.healthy(output: sink.mode)
        self.metrics = metrics
        self.logger = logger
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                WebhookHTTPHandler(configuration: configuration, lifecycle: lifecycle, intake: intake, sink: sink, healthyBody: healthyBody,
                                   handOff: handOffs.handOff(for: channel.eventLoop), metrics: metrics, logger: self.logger,
                                   eventLoop: channel.eventLoop))
            return Value(channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        try? await value.channel.closeFuture.get()
    }
}
