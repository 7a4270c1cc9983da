import HummingbirdCore
import Logging
import NIOCore
import WebhookModel
import NIOHTTP1

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
    let intake: WebhookIntake
    let sink: any LineSink
    let handOffs: SinkHandOffs
    let metrics: ReceiverMetrics
    let logger: Logger
    /// `/healthz`'s answer when all is well: the output never changes, so it is written once.
    let healthyBody: [UInt8]

    init(configuration: ReceiverConfiguration, intake: WebhookIntake, sink: any LineSink, metrics: ReceiverMetrics, logger: Logger) {
        self.configuration = configuration
        self.intake = intake
        self.sink = sink
        self.handOffs = SinkHandOffs(sink: sink)
        var body: [UInt8] = Array(#"{"status":"ok","output":"#.utf8)
        JSONWriter.appendQuoted(sink.mode, to: &body)
        body.append(UInt8(ascii: "}"))
        self.healthyBody = body
        self.metrics = metrics
        self.logger = logger
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                WebhookHTTPHandler(configuration: configuration, intake: intake, sink: sink, healthyBody: healthyBody,
                                   handOff: handOffs.handOff(for: channel.eventLoop), metrics: metrics, logger: self.logger))
            return Value(channel: channel)
        }
    }

    func handle(value: Value, logger: Logger) async {
        try? await value.channel.closeFuture.get()
    }
}

/// One connection's requests, from bytes to answers: `HTTP1RequestDecoder`
/// reads them (keep-alive, pipelining, chunked bodies, `Expect:
/// 100-continue`), one at a time and in order; the body is collected (up to
/// `MAX_BODY_BYTES`), checked, and the line handed to the sink (stdout or
/// JetStream); the answer goes out once the sink says so (on this event
/// loop: the sink wakes each loop once per batch of answers). `/healthz` and `/metrics` are answered here too.
///
/// While a request waits for its answer, nothing after it is decoded, and
/// past 64 KiB sent ahead nothing more is read from the socket (so a
/// pipelining client is pushed back on, not buffered without bound). A request that cannot be read is answered 400 (or 413,
/// 414, 431, 501, 505) and the connection closed. On graceful shutdown an
/// idle connection is closed at once and a busy one after its answer.
///
/// It also keeps the connection's clock: a connection must deliver each
/// whole request (head and body) within `REQUEST_TIMEOUT_SECONDS` of opening
/// or of its previous answer, and one that sends nothing at all is closed
/// after `IDLE_TIMEOUT_SECONDS` if that is shorter. The idle timeout alone
/// cannot stop a slow client: one that sends a byte a second is never idle.
/// While a complete request is being answered the clock is stopped, so a
/// slow downstream never cuts off a client that did its part.
final class WebhookHTTPHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let configuration: ReceiverConfiguration
    private let intake: WebhookIntake
    private let sink: any LineSink
    private let healthyBody: [UInt8]
    private let handOff: SinkHandOff
    private let metrics: ReceiverMetrics
    private let logger: Logger

    /// While draining, a connection waiting this long for its client's next
    /// request is closed (otherwise the idle timeout applies).
    static let drainIdleLimit = TimeAmount.seconds(1)
    /// Bytes a client may send ahead of the answer to its request before the socket is no longer read.
    static let readAheadLimit = 64 * 1024
    /// A part (the end of a request without a body) may need no new bytes.
    private static let noBytes = ByteBuffer()
    private var decoder = HTTP1RequestDecoder()
    private var encoder = HTTP1ResponseEncoder()
    /// Bytes received and not yet decoded.
    private var received: ByteBuffer?
    /// The request being read, its body so far, and whether that passed `MAX_BODY_BYTES` (then it is not kept).
    private var request: HTTP1RequestHead?
    private var body: ByteBuffer?
    private var bodyTooLarge = false
    /// A whole request waits for its answer: nothing more is decoded or read.
    private var answering = false
    /// The channel asked to read while a request was being answered.
    private var readHeld = false
    /// Inside `serveReceived` (an answer given at once must not re-enter it).
    private var serving = false
    /// Graceful shutdown began: each answer closes the connection, and idleness is cut short.
    private var quiescing = false
    private var inputClosed = false
    /// The connection is being closed: nothing more is decoded or answered.
    private var closing = false
    /// When the connection began waiting for its client (opened, or answered
    /// its last request); nil while a complete request is being answered.
    private var waitingSince: NIODeadline?
    /// One repeating check per connection, not a timer per request.
    private var check: RepeatedTask?

    init(configuration: ReceiverConfiguration, intake: WebhookIntake, sink: any LineSink, healthyBody: [UInt8], handOff: SinkHandOff,
         metrics: ReceiverMetrics, logger: Logger) {
        self.configuration = configuration
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
        check?.cancel()
        check = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        closing = true
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !closing else { return }
        var bytes = unwrapInboundIn(data)
        if received == nil {
            received = bytes
        } else {
            received!.writeBuffer(&bytes)
        }
        serveReceived(context)
    }

    func read(context: ChannelHandlerContext) {
        // While a request waits for its answer, a client may send on (pipelining)
        // up to a limit; past it, the socket is not read until the answer is out.
        // (Holding every read would cost two epoll_ctl calls per request.)
        if answering && (received?.readableBytes ?? 0) >= Self.readAheadLimit {
            readHeld = true
        } else {
            context.read()
        }
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        switch event {
        case is ChannelShouldQuiesceEvent:
            // Not closed at once: a connection just accepted has its request on
            // the way, and a busy keep-alive one its next. Each is answered (and
            // closed); one idle for `drainIdleLimit` is closed by the clock.
            quiescing = true
        case ChannelEvent.inputClosed:
            // Nothing more will come: answer what is complete, then close.
            inputClosed = true
            if !answering { close(context) }
        default:
            context.fireUserInboundEventTriggered(event)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("closing a connection after an error", metadata: ["error": "\(error)"])
        close(context)
    }

    // MARK: - Requests

    /// Decodes and serves requests from the bytes received, one at a time,
    /// until one waits for its answer or the bytes run out.
    private func serveReceived(_ context: ChannelHandlerContext) {
        guard !serving else { return }
        serving = true
        defer { serving = false }
        while !answering && !closing {
            // Taken out, so that slices of it kept as the body do not make it copy.
            var bytes = received ?? Self.noBytes
            received = nil
            let part: HTTP1RequestPart?
            do {
                part = try decoder.next(from: &bytes)
            } catch {
                refuse(error, context: context)
                return
            }
            if bytes.readableBytes > 0 {
                if part == nil && bytes.readerIndex > 16 * 1024 { bytes.discardReadBytes() }
                received = bytes
            }
            guard let part else { break }
            switch part {
            case .head(let head):
                begin(head, context: context)
            case .body(let chunk):
                collect(chunk)
            case .end:
                guard let head = request else { continue }
                request = nil
                answering = true
                waitingSince = nil
                respond(to: head, context: context)
            }
        }
        if !answering {
            if inputClosed || closing {
                close(context)
            } else if readHeld {
                readHeld = false
                context.read()
            }
        }
    }

    private func begin(_ head: HTTP1RequestHead, context: ChannelHandlerContext) {
        request = head
        body = nil
        let expectsBody: Bool
        switch head.framing {
        case .length(let length):
            bodyTooLarge = length > configuration.maxBodyBytes
            expectsBody = length > 0
        case .chunked:
            bodyTooLarge = false
            expectsBody = true
        }
        guard head.expectsContinue && head.version == .http11 && expectsBody else { return }
        if bodyTooLarge {
            // Asked before sending a body that is too large: say so now, and
            // close rather than read a body the sender may send anyway.
            request = nil
            answering = true
            let error = APIError(.payloadTooLarge, "body too large", detail: .text("the limit is \(configuration.maxBodyBytes) bytes"))
            logger.info("webhook refused", metadata: ["status": "\(error.status.code)", "reason": "\(error.logText)"])
            send(error, to: head, context: context, close: true)
        } else {
            // Told at once, a sender that asks sends its body without waiting out its own timeout (curl's is a second).
            context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(staticString: HTTP1ResponseEncoder.continueResponse)), promise: nil)
        }
    }

    private func collect(_ chunk: ByteBuffer) {
        guard !bodyTooLarge else { return }
        var chunk = chunk
        if (body?.readableBytes ?? 0) + chunk.readableBytes > configuration.maxBodyBytes {
            bodyTooLarge = true
            body = nil
        } else if body == nil {
            body = chunk
        } else {
            body!.writeBuffer(&chunk)
        }
    }

    /// A request that cannot be read: answered, and the connection closed
    /// (where the next request would start is unknown).
    private func refuse(_ error: HTTP1ParseError, context: ChannelHandlerContext) {
        logger.info("refusing a request that cannot be read", metadata: ["status": "\(error.status.code)", "reason": "\(error.reason)"])
        received = nil
        request = nil
        answering = true
        let status = error.status
        let message = status.reasonPhrase.lowercased()
        send(APIError(status, message, detail: .text(error.reason)), to: nil, context: context, close: true)
    }

    private func respond(to head: HTTP1RequestHead, context: ChannelHandlerContext) {
        switch (head.path, head.method) {
        case ("/webhook", .post):
            receive(head, context: context)
        case ("/webhook", _):
            send(APIError(.methodNotAllowed, "method not allowed", detail: .text("use POST"), headers: [("Allow", "POST")]), to: head, context: context)
        case ("/healthz", .get), ("/healthz", .head):
            if intake.state.isDraining {
                send(.serviceUnavailable, #"{"status":"draining"}"#, to: head, context: context)
            } else if let trouble = sink.trouble {
                var body: [UInt8] = Array(#"{"status":"#.utf8)
                JSONWriter.appendQuoted(trouble.status, to: &body)
                body += Array(#","detail":"#.utf8)
                JSONWriter.appendQuoted(trouble.detail, to: &body)
                body.append(UInt8(ascii: "}"))
                send(.serviceUnavailable, body: context.channel.allocator.buffer(bytes: body), contentType: "application/json", to: head, context: context)
            } else {
                send(.ok, body: context.channel.allocator.buffer(bytes: healthyBody), contentType: "application/json", to: head, context: context)
            }
        case ("/metrics", _) where configuration.metricsPort != nil:
            send(APIError(.notFound, "not found", detail: .text("metrics are served on their own port")), to: head, context: context)
        case ("/metrics", .get), ("/metrics", .head):
            send(.ok, body: context.channel.allocator.buffer(bytes: metrics.exposition()),
                 contentType: "text/plain; version=0.0.4; charset=utf-8", to: head, context: context)
        case ("/healthz", _), ("/metrics", _):
            send(APIError(.methodNotAllowed, "method not allowed", detail: .text("use GET or HEAD"), headers: [("Allow", "GET, HEAD")]),
                 to: head, context: context)
        default:
            send(APIError(.notFound, "not found", detail: .text("POST webhooks to /webhook")), to: head, context: context)
        }
    }

    private func receive(_ head: HTTP1RequestHead, context: ChannelHandlerContext) {
        let bytes = body.map { Array($0.readableBytesView) } ?? []
        body = nil
        let headers = WebhookIntake.Headers(
            contentType: head.contentType, webhookId: head.webhookId,
            webhookTimestamp: head.webhookTimestamp, webhookSignature: head.webhookSignature)
        switch intake.check(headers, body: bytes, tooLarge: bodyTooLarge) {
        case .failure(let error):
            logger.info("webhook refused", metadata: ["status": "\(error.status.code)", "reason": "\(error.logText)"])
            send(error, to: head, context: context)
        case .success(let accepted):
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            handOff.submit(SubmittedLine(bytes: accepted.line, messageId: accepted.messageId) { outcome in
                let (handler, context) = bound.value
                if let refusal = handler.intake.answer(outcome) {
                    handler.send(refusal, to: head, context: context)
                } else {
                    handler.send(.accepted, #"{"status":"accepted"}"#, to: head, context: context)
                }
            })
        }
    }

    // MARK: - Answers

    private func send(_ error: APIError, to head: HTTP1RequestHead?, context: ChannelHandlerContext, close: Bool = false) {
        send(error.status, body: context.channel.allocator.buffer(bytes: error.body), contentType: "application/json",
             extra: error.headers, to: head, context: context, close: close)
    }

    private func send(_ status: HTTPResponseStatus, _ body: StaticString, to head: HTTP1RequestHead, context: ChannelHandlerContext) {
        send(status, body: context.channel.allocator.buffer(staticString: body), contentType: "application/json", to: head, context: context)
    }

    /// Writes the answer to the request waiting for one (`head`; nil when the
    /// request could not be read), then goes on with the next request, or
    /// closes the connection when it is not kept.
    private func send(_ status: HTTPResponseStatus, body: ByteBuffer, contentType: String, extra: [(String, String)] = [],
                      to head: HTTP1RequestHead?, context: ChannelHandlerContext, close: Bool = false) {
        metrics.countRequest(status: Int(status.code))
        precondition(answering, "an answer to no request")
        answering = false
        guard !closing, context.channel.isActive else { return }
        // A client that closed its side still gets answers to the requests it sent whole.
        let keepAlive = !close && !quiescing && head?.keepAlive == true
        let connection: HTTP1ResponseEncoder.Connection = !keepAlive ? .close : head?.version == .http10 ? .keepAlive : .default
        let response = encoder.encode(status, contentType: contentType, body: body, headers: extra, connection: connection,
                                      includeBody: head?.method != .head, allocator: context.channel.allocator)
        waitingSince = .now()
        if keepAlive {
            context.writeAndFlush(wrapOutboundOut(response), promise: nil)
            serveReceived(context)
        } else {
            closing = true
            received = nil
            context.writeAndFlush(wrapOutboundOut(response)).assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    private func close(_ context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        received = nil
        context.close(promise: nil)
    }

    // MARK: - The clock

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
            let started = handler.request != nil || (handler.received?.readableBytes ?? 0) > 0 || !handler.decoder.isBetweenRequests
            let limit = started ? request : handler.quiescing ? min(idle, Self.drainIdleLimit) : idle
            guard NIODeadline.now() - since >= limit else { return }
            task.cancel()
            handler.check = nil
            handler.logger.info("closing a connection that sent no whole request in time", metadata: ["timeout": "\(limit)"])
            handler.close(context)
        }
    }
}
