import Logging
import NIOCore
import NIOHTTP1

/// One connection's requests, from bytes to answers, as a thin shell around
/// `ConnectionStateMachine`: each channel event goes to the machine, and the
/// handler carries out the action it returns (write `100 Continue`, route a
/// whole request, write an answer and go on or close, hold or resume reads,
/// schedule the next check of the clock). What it adds is I/O alone: routing
/// (`WebhookRoute`), the webhook's checks (`WebhookIntake`), the hand-off to
/// the sink (stdout or JetStream; the answer comes back on this event loop
/// once the sink says so), encoding answers, metrics and logs.
///
/// The rules it obeys live in the machine: one request at a time and in
/// order, nothing read past 64 KiB sent ahead of an answer, a request that
/// cannot be read answered 400 (or 413, 414, 431, 501, 505) and the
/// connection closed, the request and idle timeouts with the clock stopped
/// while a request is answered, and on graceful shutdown each connection
/// answered and closed, or closed after a second idle.
final class WebhookHTTPHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let configuration: ReceiverConfiguration
    private let lifecycle: ReceiverLifecycle
    private let intake: WebhookIntake
    private let sink: any LineSink
    private let healthyBody: [UInt8]
    private let handOff: SinkHandOff
    private let metrics: ReceiverMetrics
    private let logger: Logger

    /// The connection's state, on its event loop's clock.
    private var machine: ConnectionStateMachine<EventLoopClock>
    private var encoder = HTTP1ResponseEncoder()
    /// The one pending check of the clock.
    private var check: Scheduled<Void>?

    init(configuration: ReceiverConfiguration, lifecycle: ReceiverLifecycle, intake: WebhookIntake, sink: any LineSink, healthyBody: [UInt8],
         handOff: SinkHandOff, metrics: ReceiverMetrics, logger: Logger, eventLoop: any EventLoop) {
        let limits = ConnectionStateMachine<EventLoopClock>.Limits(
            requestSeconds: configuration.requestTimeoutSeconds, idleSeconds: configuration.idleTimeoutSeconds,
            maxBodyBytes: configuration.maxBodyBytes)
        self.machine = ConnectionStateMachine(limits: limits, clock: EventLoopClock(loop: eventLoop))
        self.configuration = configuration
        self.lifecycle = lifecycle
        self.intake = intake
        self.sink = sink
        self.healthyBody = healthyBody
        self.handOff = handOff
        self.metrics = metrics
        self.logger = logger
    }

    // MARK: - Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startClock(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startClock(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        stopClock()
    }

    func channelInactive(context: ChannelHandlerContext) {
        stopClock()
        machine.closed()
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        machine.received(unwrapInboundIn(data))
        drive(context)
    }

    func read(context: ChannelHandlerContext) {
        switch machine.readRequested() {
        case .read: context.read()
        case .hold: break
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            perform(machine.drain(), context: context)
        case ChannelEvent.inputClosed:
            perform(machine.clientClosedInput(), context: context)
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("closing a connection after an error", metadata: ["error": "\(error)"])
        perform(machine.close(), context: context)
    }

    // MARK: - Requests

    /// Carries out the machine's actions until it waits for bytes or an answer.
    private func drive(_ context: ChannelHandlerContext) {
        while true {
            let action = machine.next()
            guard perform(action, context: context) else { return }
        }
    }

    /// Carries out one action of `next()`; true when `next()` is to be asked again.
    @discardableResult
    private func perform(_ action: ConnectionStateMachine<EventLoopClock>.Action, context: ChannelHandlerContext) -> Bool {
        switch action {
        case .wait:
            return false
        case .read:
            context.read()
            return false
        case .close:
            context.close(promise: nil)
            return false
        case .sendContinue:
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(staticString: HTTP1ResponseEncoder.continueResponse)), promise: nil)
            return true
        case .refuse(.unreadable(let error)):
            logger.info("refusing a request that cannot be read", metadata: ["status": "\(error.status.code)", "reason": "\(error.reason)"])
            return send(APIError(error.status, error.status.reasonPhrase.lowercased(), detail: .text(error.reason)), context: context)
        case .refuse(.bodyTooLarge(let limit)):
            let error = APIError(.payloadTooLarge, "body too large", detail: .text("the limit is \(limit) bytes"))
            logger.info("webhook refused", metadata: ["status": "\(error.status.code)", "reason": "\(error.logText)"])
            return send(error, context: context)
        case .serve(let head, let body, let tooLarge):
            return serve(head, body: body, tooLarge: tooLarge, context: context)
        }
    }

    /// Answers a whole request now (true) or once the sink has the webhook (false).
    private func serve(_ head: HTTP1RequestHead, body: ByteBuffer?, tooLarge: Bool, context: ChannelHandlerContext) -> Bool {
        let route = WebhookRoute.of(head, metricsOnOwnPort: configuration.metricsPort != nil)
        switch route {
        case .webhook:
            return receive(head, body: body, tooLarge: tooLarge, context: context)
        case .health:
            if lifecycle.phase >= .draining {
                return send(.serviceUnavailable, body: context.channel.allocator.buffer(staticString: HealthAnswer.draining), context: context)
            } else if let trouble = sink.trouble {
                let body = HealthAnswer.trouble(status: trouble.status, detail: trouble.detail)
                return send(.serviceUnavailable, body: context.channel.allocator.buffer(bytes: body), context: context)
            }
            return send(.ok, body: context.channel.allocator.buffer(bytes: healthyBody), context: context)
        case .metrics:
            return send(.ok, body: context.channel.allocator.buffer(bytes: metrics.exposition()),
                        contentType: "text/plain; version=0.0.4; charset=utf-8", context: context)
        case .methodNotAllowed, .notFound:
            return send(route.error!, context: context)
        }
    }

    private func receive(_ head: HTTP1RequestHead, body: ByteBuffer?, tooLarge: Bool, context: ChannelHandlerContext) -> Bool {
        let headers = WebhookIntake.Headers(
            contentType: head.contentType, webhookId: head.webhookId,
            webhookTimestamp: head.webhookTimestamp, webhookSignature: head.webhookSignature)
        switch intake.check(headers, body: body.map { Array($0.readableBytesView) } ?? [], tooLarge: tooLarge) {
        case .failure(let error):
            logger.info("webhook refused", metadata: ["status": "\(error.status.code)", "reason": "\(error.logText)"])
            return send(error, context: context)
        case .success(let accepted):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            handOff.submit(SubmittedLine(bytes: accepted.line, messageId: accepted.messageId) { outcome in
                let (handler, context) = bound.value
                let goOn: Bool
                if let refusal = handler.intake.answer(outcome) {
                    goOn = handler.send(refusal, context: context)
                } else {
                    goOn = handler.send(.accepted, body: context.channel.allocator.buffer(staticString: #"{"status":"accepted"}"#), context: context)
                }
                if goOn { handler.drive(context) }
            })
            return false
        }
    }

    // MARK: - Answers

    private func send(_ error: APIError, context: ChannelHandlerContext) -> Bool {
        send(error.status, body: context.channel.allocator.buffer(bytes: error.body), extra: error.headers, context: context)
    }

    /// Writes the answer to the request waiting for one (or to a request that
    /// could not be read) as the machine says: true when the
    /// connection goes on to its next request, false when it closes.
    private func send(_ status: HTTPResponseStatus, body: ByteBuffer, contentType: String = "application/json", extra: [(String, String)] = [],
                      context: ChannelHandlerContext) -> Bool {
        metrics.countRequest(status: Int(status.code))
        switch machine.answer() {
        case .drop:
            return false
        case .write(let connection, let includeBody):
            let response = encoder.encode(status, contentType: contentType, body: body, headers: extra, connection: connection,
                                          includeBody: includeBody, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(response), promise: nil)
            return true
        case .writeAndClose(let includeBody):
            let response = encoder.encode(status, contentType: contentType, body: body, headers: extra, connection: .close,
                                          includeBody: includeBody, allocator: context.channel.allocator)
            context.writeAndFlush(wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
            return false
        }
    }

    // MARK: - The clock

    private func startClock(_ context: ChannelHandlerContext) {
        guard check == nil else { return }
        schedule(at: machine.firstCheck(), context: context)
    }

    private func stopClock() {
        check?.cancel()
        check = nil
    }

    /// One pending check per connection, moved when the machine asks.
    private func schedule(at instant: EventLoopClock.Instant, context: ChannelHandlerContext) {
        stopClock()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        check = context.eventLoop.scheduleTask(deadline: instant.deadline) {
            let (handler, context) = bound.value
            handler.check = nil
            handler.perform(handler.machine.timeoutFired(), context: context)
        }
    }

    private func perform(_ action: ConnectionStateMachine<EventLoopClock>.TimeoutAction, context: ChannelHandlerContext) {
        switch action {
        case .check(let instant):
            schedule(at: instant, context: context)
        case .close(let limit):
            stopClock()
            logger.info("closing a connection that sent no whole request in time", metadata: ["timeout": "\(limit)"])
            context.close(promise: nil)
        case .stop:
            stopClock()
        }
    }
}
