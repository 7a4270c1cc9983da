import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1

/// How each accepted connection is served: NIO's HTTP/1.1 pipeline
/// (keep-alive, pipelining, chunked bodies, quiescing on shutdown) and then
/// `WebhookHTTPHandler`, all on the connection's event loop, with no task or
/// continuation per request. HummingbirdCore's `Server` binds, accepts,
/// caps connections and quiesces them on graceful shutdown.
struct WebhookChannel: ServerChildChannel {
    struct Value: ServerChildChannelValue {
        let channel: any Channel
    }

    let configuration: ReceiverConfiguration
    let intake: WebhookIntake
    let writer: StreamWriter
    let handOffs: WriterHandOffs
    let metrics: ReceiverMetrics
    let logger: Logger

    init(configuration: ReceiverConfiguration, intake: WebhookIntake, writer: StreamWriter, metrics: ReceiverMetrics, logger: Logger) {
        self.configuration = configuration
        self.intake = intake
        self.writer = writer
        self.handOffs = WriterHandOffs(writer: writer)
        self.metrics = metrics
        self.logger = logger
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            let pipeline = channel.pipeline.syncOperations
            try pipeline.configureHTTPServerPipeline(withPipeliningAssistance: true, withErrorHandling: true)
            try pipeline.addHandler(
                WebhookHTTPHandler(configuration: configuration, intake: intake, writer: writer,
                                   handOff: handOffs.handOff(for: channel.eventLoop), metrics: metrics, logger: self.logger))
            return Value(channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        try? await value.channel.closeFuture.get()
    }
}

/// One connection's requests: collects the body (up to `MAX_BODY_BYTES`),
/// runs the checks, hands the line to the writer and answers when the writer
/// says so (on this event loop: the writer wakes each loop once per batch).
/// `/healthz` and `/metrics` are answered here too.
///
/// It also keeps the connection's clock, in the same handler so that no part
/// of a request passes through more handlers than it must:
/// - `Expect: 100-continue` is answered at once, so a sender that asks sends
///   its body without waiting out its own timeout (curl's is a second);
/// - a connection must deliver each whole request (head and body) within
///   `REQUEST_TIMEOUT_SECONDS` of opening or of its previous answer, and one
///   that sends nothing at all is closed after `IDLE_TIMEOUT_SECONDS` if that
///   is shorter. The idle timeout alone cannot stop a slow client: one that
///   sends a byte a second is never idle. While a complete request is being
///   answered the clock is stopped, so a slow downstream never cuts off a
///   client that did its part.
final class WebhookHTTPHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private let configuration: ReceiverConfiguration
    private let intake: WebhookIntake
    private let writer: StreamWriter
    private let handOff: WriterHandOff
    private let metrics: ReceiverMetrics
    private let logger: Logger

    private var head: HTTPRequestHead?
    private var body: ByteBuffer?
    private var tooLarge = false
    /// When the connection began waiting for its client (opened, or answered
    /// its last request); nil while a complete request is being answered.
    private var waitingSince: NIODeadline?
    /// One repeating check per connection, not a timer per request.
    private var check: RepeatedTask?

    init(configuration: ReceiverConfiguration, intake: WebhookIntake, writer: StreamWriter, handOff: WriterHandOff,
         metrics: ReceiverMetrics, logger: Logger) {
        self.configuration = configuration
        self.intake = intake
        self.writer = writer
        self.handOff = handOff
        self.metrics = metrics
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { startClock(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        startClock(context)
        context.fireChannelActive()
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            self.head = head
            if let expect = head.headers.first(name: "expect"), expect.lowercased() == "100-continue" {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
            body = nil
            tooLarge = head.headers.first(name: "content-length").flatMap(Int.init).map { $0 > configuration.maxBodyBytes } ?? false
        case .body(var chunk):
            guard !tooLarge else { return }
            if (body?.readableBytes ?? 0) + chunk.readableBytes > configuration.maxBodyBytes {
                tooLarge = true
                body = nil
            } else if body == nil {
                body = chunk
            } else {
                body!.writeBuffer(&chunk)
            }
        case .end:
            guard let head else { return }
            self.head = nil
            waitingSince = nil
            respond(to: head, context: context)
        }
    }

    private func startClock(_ context: ChannelHandlerContext) {
        guard check == nil else { return }
        waitingSince = .now()
        let request = TimeAmount.seconds(Int64(configuration.requestTimeoutSeconds))
        let idle = min(request, TimeAmount.seconds(Int64(configuration.idleTimeoutSeconds)))
        // Checked four times per limit (at most once a second): a connection is
        // closed between the limit and 1.25 × the limit after it began waiting.
        let interval = max(TimeAmount.milliseconds(250), min(.seconds(1), TimeAmount.nanoseconds(idle.nanoseconds / 4)))
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        check = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
            let (handler, context) = bound.value
            guard let since = handler.waitingSince else { return }
            let limit = handler.head == nil ? idle : request
            guard NIODeadline.now() - since >= limit else { return }
            task.cancel()
            handler.check = nil
            handler.logger.info("closing a connection that sent no whole request in time", metadata: ["timeout": "\(limit)"])
            context.close(promise: nil)
        }
    }

    private func respond(to head: HTTPRequestHead, context: ChannelHandlerContext) {
        let path = head.uri.split(separator: "?", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
        switch (path, head.method) {
        case ("/webhook", .POST):
            receive(head, context: context)
        case ("/webhook", _):
            send(APIError(.methodNotAllowed, "method not allowed", detail: .text("use POST"), headers: [("Allow", "POST")]), to: head, context: context)
        case ("/healthz", .GET), ("/healthz", .HEAD):
            if intake.state.isDraining {
                send(.serviceUnavailable, #"{"status":"draining"}"#, to: head, context: context)
            } else if writer.isStalled {
                send(.serviceUnavailable, #"{"status":"stalled","detail":"the stream reader is taking nothing"}"#, to: head, context: context)
            } else {
                send(.ok, #"{"status":"ok"}"#, to: head, context: context)
            }
        case ("/metrics", .GET):
            send(.ok, body: context.channel.allocator.buffer(bytes: metrics.exposition()),
                 contentType: "text/plain; version=0.0.4; charset=utf-8", to: head, context: context)
        default:
            send(APIError(.notFound, "not found", detail: .text("POST webhooks to /webhook")), to: head, context: context)
        }
    }

    private func receive(_ head: HTTPRequestHead, context: ChannelHandlerContext) {
        let bytes = body.map { Array($0.readableBytesView) } ?? []
        body = nil
        let headers = WebhookIntake.Headers(
            contentType: head.headers.first(name: "content-type"),
            webhookId: head.headers.first(name: "webhook-id"),
            webhookTimestamp: head.headers.first(name: "webhook-timestamp"),
            webhookSignature: head.headers.first(name: "webhook-signature"))
        switch intake.check(headers, body: bytes, tooLarge: tooLarge) {
        case .failure(let error):
            logger.info("webhook refused", metadata: ["status": "\(error.status.code)", "reason": "\(error.logText)"])
            send(error, to: head, context: context)
        case .success(let line):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            handOff.submit(line) { outcome in
                let (handler, context) = bound.value
                if let refusal = handler.intake.answer(outcome) {
                    handler.send(refusal, to: head, context: context)
                } else {
                    handler.send(.accepted, #"{"status":"accepted"}"#, to: head, context: context)
                }
            }
        }
    }

    private func send(_ error: APIError, to head: HTTPRequestHead, context: ChannelHandlerContext) {
        send(error.status, body: context.channel.allocator.buffer(bytes: error.body), contentType: "application/json",
             extra: error.headers, to: head, context: context)
    }

    private func send(_ status: HTTPResponseStatus, _ body: StaticString, to head: HTTPRequestHead, context: ChannelHandlerContext) {
        send(status, body: context.channel.allocator.buffer(staticString: body), contentType: "application/json", to: head, context: context)
    }

    private func send(_ status: HTTPResponseStatus, body: ByteBuffer, contentType: String, extra: [(String, String)] = [],
                      to head: HTTPRequestHead, context: ChannelHandlerContext) {
        metrics.countRequest(status: Int(status.code))
        guard context.channel.isActive else { return }
        var headers = HTTPHeaders()
        headers.reserveCapacity(4 + extra.count)
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        for (name, value) in extra { headers.add(name: name, value: value) }
        let keepAlive = head.isKeepAlive
        if !keepAlive {
            headers.add(name: "Connection", value: "close")
        } else if head.version.major == 1 && head.version.minor == 0 {
            headers.add(name: "Connection", value: "keep-alive")
        }
        waitingSince = .now()
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if head.method != .HEAD {
            context.write(wrapOutboundOut(.body(.byteBuffer(body))), promise: nil)
        }
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(.end(nil))).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }
}
