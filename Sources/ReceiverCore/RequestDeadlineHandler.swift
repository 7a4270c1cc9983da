import Logging
import NIOCore
import NIOHTTP1

/// Closes a connection that does not deliver a whole request (head and body)
/// within `timeout` of opening, or of the answer to its previous request.
///
/// The idle timeout alone cannot stop a slow client: one that sends a byte a
/// second is never idle, and would hold its connection (and a slot of the
/// server) forever. While a complete request is being answered the clock is
/// stopped, so a slow downstream never cuts off a client that did its part.
/// Idle keep-alive connections are closed by the same clock.
final class RequestDeadlineHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private let timeout: TimeAmount
    private let logger: Logger
    /// When the connection started waiting for its client; nil while a complete request is answered.
    private var waitingSince: NIODeadline?
    /// One repeating check per connection (not a timer per request: this runs for every request).
    private var check: RepeatedTask?
    /// Requests received whole and not yet answered.
    private var unanswered = 0

    init(timeout: TimeAmount, logger: Logger) {
        self.timeout = timeout
        self.logger = logger
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
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
        if case .end = unwrapInboundIn(data) {
            unanswered += 1
            waitingSince = nil
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) {
            unanswered = max(0, unanswered - 1)
            if unanswered == 0 { waitingSince = .now() }
        }
        context.write(data, promise: promise)
    }

    private func start(_ context: ChannelHandlerContext) {
        guard check == nil else { return }
        waitingSince = .now()
        // Checked four times per timeout (at most once a second): a connection
        // is closed between `timeout` and 1.25 × `timeout` after it began waiting.
        let interval = max(TimeAmount.milliseconds(250), min(.seconds(1), TimeAmount.nanoseconds(timeout.nanoseconds / 4)))
        let loopBound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        check = context.eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { task in
            let (handler, context) = loopBound.value
            guard let since = handler.waitingSince, NIODeadline.now() - since >= handler.timeout else { return }
            task.cancel()
            handler.check = nil
            handler.logger.info("closing a connection that sent no whole request in time", metadata: ["timeout": "\(handler.timeout)"])
            context.close(promise: nil)
        }
    }
}
