import NIOCore

/// A part (the end of a request without a body) may need no new bytes: this
/// empty buffer, made once (a generic type cannot hold it, and `ByteBuffer()`
/// allocates).
private let noBytes = ByteBuffer()

/// One HTTP/1.1 connection of the receiver as a value: which request is being
/// read, which one waits for its answer, when the client was last waited on,
/// and whether the connection is closing. Every event of the connection
/// (bytes received, a read asked for, an answer ready, the client's side
/// closed, the server draining, the clock) goes in, and what to do comes out
/// as an action; the NIO handler (`WebhookHTTPHandler`) only carries actions
/// out. It does no I/O and reads time only from its injected clock, so every
/// rule (one request at a time and in order, `Expect: 100-continue`, the body
/// limit, keep-alive, pipelining's read-ahead limit, the timeouts, draining)
/// is tested on values.
///
/// The clock: a connection must deliver each whole request (head and body)
/// within `request` of opening or of its previous answer, and one that sends
/// nothing at all is closed after `idle` (`drainIdle` while draining). While a
/// complete request is being answered the clock is stopped, so a slow
/// downstream never cuts off a client that did its part.
struct ConnectionStateMachine<C: Clock> where C.Duration == Duration {
    struct Limits: Equatable, Sendable {
        /// Time to deliver a whole request (`REQUEST_TIMEOUT_SECONDS`).
        var request: Duration
        /// Time to start one, when shorter (`IDLE_TIMEOUT_SECONDS`).
        var idle: Duration
        /// Time to start one while draining.
        var drainIdle: Duration = .seconds(1)
        /// `MAX_BODY_BYTES`: a longer body is read past, not kept, and answered 413.
        var maxBodyBytes: Int
        /// Bytes a client may send ahead of the answer to its request before the socket is no longer read.
        var readAhead: Int = 64 * 1024

        /// Limits as the receiver's configuration gives them.
        init(requestSeconds: Int, idleSeconds: Int, maxBodyBytes: Int) {
            self.request = .seconds(requestSeconds)
            self.idle = min(.seconds(idleSeconds), .seconds(requestSeconds))
            self.maxBodyBytes = maxBodyBytes
        }
    }

    /// A request whose head has been read, with its body so far.
    struct RequestInProgress: Equatable {
        var head: HTTP1RequestHead
        /// Nil until a byte of the body comes, and again once it passes the limit.
        var body: ByteBuffer?
        var tooLarge: Bool
    }

    /// The connection's phase, with what each phase needs to know; all plain
    /// values, so matching and moving it costs no reference counting (the
    /// request being read, which holds strings and bytes, is `request`).
    enum State: Equatable {
        /// Waiting for the client since `since` (the connection opened, or its
        /// last answer went out). `readHeld`: the channel asked to read while an
        /// answer was awaited and was held back; it reads again once the bytes run out.
        case reading(since: C.Instant, readHeld: Bool)
        /// A whole request (or a refusal) is being answered; nothing more is
        /// decoded and the clock is stopped. `answer`: what the answer's framing
        /// needs of the request (not the request itself, which the handler has).
        case answering(Answer, readHeld: Bool)
        /// Closing or closed: nothing more is decoded or answered.
        case closed
    }

    /// What the answer to a request needs of it.
    struct Answer: Equatable {
        /// The request asked for the connection to stay open (HTTP/1.1 unless `Connection: close`).
        var keepAlive: Bool
        var http10: Bool
        /// Not a `HEAD` request.
        var includeBody: Bool
        /// The connection closes after this answer whatever the request asked.
        var closeAfter: Bool

        init(_ head: HTTP1RequestHead?, closeAfter: Bool) {
            keepAlive = head?.keepAlive ?? false
            http10 = head?.version == .http10
            includeBody = head?.method != .head
            self.closeAfter = closeAfter
        }
    }

    /// Why a request is refused before it is served.
    enum Refusal: Equatable {
        /// Its bytes cannot be a request (the connection closes: where the next request starts is unknown).
        case unreadable(HTTP1ParseError)
        /// It asked (`Expect: 100-continue`) to send a body over the limit.
        case bodyTooLarge(limit: Int)
    }

    /// What the handler does after `next()`.
    enum Action: Equatable {
        /// Nothing until more bytes come or an answer is given.
        case wait
        /// A read was held back (pipelining past the read-ahead limit): read again.
        case read
        /// Write `100 Continue`, then call `next()` again.
        case sendContinue
        /// A whole request: route it and `answer` it, now or later; until then
        /// nothing after it is decoded.
        case serve(HTTP1RequestHead, body: ByteBuffer?, tooLarge: Bool)
        /// Answer this refusal (`answer`, which closes the connection).
        case refuse(Refusal)
        /// Close the connection.
        case close
    }

    /// What the handler does with an answer it gives.
    enum AnswerAction: Equatable {
        /// Write it with this `Connection` header, then call `next()`.
        case write(connection: HTTP1ResponseEncoder.Connection, includeBody: Bool)
        /// Write it with `Connection: close`, then close the connection.
        case writeAndClose(includeBody: Bool)
        /// The connection is gone (or no request waits): write nothing.
        case drop
    }

    enum ReadAction: Equatable {
        case read
        /// Not now: enough is waiting behind the request being answered.
        case hold
    }

    enum TimeoutAction: Equatable {
        /// Check again at this instant.
        case check(at: C.Instant)
        /// The client took longer than `limit`: close the connection.
        case close(limit: Duration)
        /// The connection is closed: no more checks.
        case stop
    }

    let limits: Limits
    let clock: C
    private(set) var state: State
    /// Graceful shutdown began: each answer closes the connection, and idleness is cut short.
    private(set) var draining = false
    /// The client closed its side: what it sent whole is answered, then the connection closes.
    private(set) var inputClosed = false
    /// Bytes received and not yet decoded (outside `state`, so appending never copies them).
    private var received: ByteBuffer?
    /// The request being read, once its head has come (only while `.reading`;
    /// outside `state`, so its body grows in place).
    private(set) var request: RequestInProgress?
    private var decoder = HTTP1RequestDecoder()

    init(limits: Limits, clock: C) {
        self.limits = limits
        self.clock = clock
        self.state = .reading(since: clock.now, readHeld: false)
    }

    /// Bytes decoded or waiting: for tests and the read-ahead rule.
    var bufferedBytes: Int { received?.readableBytes ?? 0 }

    // MARK: - Events

    /// Bytes from the client; `next()` decodes them.
    mutating func received(_ bytes: ByteBuffer) {
        if case .closed = state { return }
        if received == nil {
            received = bytes
        } else {
            var bytes = bytes
            received!.writeBuffer(&bytes)
        }
    }

    /// Decodes from the bytes received until there is something to do.
    mutating func next() -> Action {
        while true {
            guard case .reading(let since, let readHeld) = state else { return .wait }
            // Taken out, so that slices of it kept as the body do not make it copy.
            var bytes = received ?? noBytes
            received = nil
            let part: HTTP1RequestPart?
            do {
                part = try decoder.next(from: &bytes)
            } catch {
                request = nil
                state = .answering(Answer(nil, closeAfter: true), readHeld: false)
                return .refuse(.unreadable(error))
            }
            if bytes.readableBytes > 0 {
                if part == nil && bytes.readerIndex > 16 * 1024 { bytes.discardReadBytes() }
                received = bytes
            }
            guard let part else {
                if inputClosed { return close() }
                if readHeld {
                    state = .reading(since: since, readHeld: false)
                    return .read
                }
                return .wait
            }
            switch part {
            case .head(let head):
                let (expectsBody, tooLarge): (Bool, Bool)
                switch head.framing {
                case .length(let length): (expectsBody, tooLarge) = (length > 0, length > limits.maxBodyBytes)
                case .chunked: (expectsBody, tooLarge) = (true, false)
                }
                if head.expectsContinue && head.version == .http11 && expectsBody {
                    // Asked before sending a body that is too large: say so now, and
                    // close rather than read a body the sender may send anyway.
                    // Otherwise told at once, a sender that asks sends its body
                    // without waiting out its own timeout (curl's is a second).
                    guard tooLarge else {
                        request = RequestInProgress(head: head, body: nil, tooLarge: false)
                        return .sendContinue
                    }
                    state = .answering(Answer(head, closeAfter: true), readHeld: false)
                    return .refuse(.bodyTooLarge(limit: limits.maxBodyBytes))
                }
                request = RequestInProgress(head: head, body: nil, tooLarge: tooLarge)
            case .body(var chunk):
                guard request != nil, !request!.tooLarge else { continue }
                if (request!.body?.readableBytes ?? 0) + chunk.readableBytes > limits.maxBodyBytes {
                    request!.tooLarge = true
                    request!.body = nil
                } else if request!.body == nil {
                    request!.body = chunk
                } else {
                    request!.body!.writeBuffer(&chunk)
                }
            case .end:
                guard let whole = request else { continue }
                request = nil
                state = .answering(Answer(whole.head, closeAfter: false), readHeld: readHeld)
                return .serve(whole.head, body: whole.body, tooLarge: whole.tooLarge)
            }
        }
    }

    /// The answer to the request waiting for one is ready.
    mutating func answer() -> AnswerAction {
        guard case .answering(let answer, let readHeld) = state else { return .drop }
        // A client that closed its side still gets answers to the requests it sent whole.
        guard !answer.closeAfter && !draining && answer.keepAlive else {
            closed()
            return .writeAndClose(includeBody: answer.includeBody)
        }
        state = .reading(since: clock.now, readHeld: readHeld)
        return .write(connection: answer.http10 ? .keepAlive : .default, includeBody: answer.includeBody)
    }

    /// The channel asks to read from the socket.
    mutating func readRequested() -> ReadAction {
        // While a request waits for its answer, a client may send on (pipelining)
        // up to a limit; past it, the socket is not read until the answer is out.
        // (Holding every read would cost two epoll_ctl calls per request.)
        guard bufferedBytes >= limits.readAhead, case .answering(let answer, _) = state else { return .read }
        state = .answering(answer, readHeld: true)
        return .hold
    }

    /// The client closed its side: nothing more will come.
    mutating func clientClosedInput() -> Action {
        inputClosed = true
        // Answer what is complete, then close.
        guard case .reading = state else { return .wait }
        return close()
    }

    /// Graceful shutdown began. Not closed at once: a connection just accepted
    /// has its request on the way, and a busy keep-alive one its next. Each is
    /// answered (and closed); one idle for `drainIdle` is closed by the clock,
    /// which is to be checked at the instant returned.
    mutating func drain() -> TimeoutAction {
        draining = true
        return timeoutFired()
    }

    /// The connection is to close (an error): `.close` if it was open, else `.wait`.
    mutating func close() -> Action {
        if case .closed = state { return .wait }
        closed()
        return .close
    }

    /// The channel became inactive.
    mutating func closed() {
        state = .closed
        received = nil
        request = nil
    }

    // MARK: - The clock

    /// When to check the clock first (as the connection opens).
    func firstCheck() -> C.Instant {
        clock.now.advanced(by: shortestLimit)
    }

    /// The check is due: close the connection, or check again later.
    mutating func timeoutFired() -> TimeoutAction {
        let now = clock.now
        switch state {
        case .closed:
            return .stop
        case .answering:
            // The clock is stopped; once answered, the client has at least this long.
            return .check(at: now.advanced(by: shortestLimit))
        case .reading(let since, _):
            let started = request != nil || bufferedBytes > 0 || !decoder.isBetweenRequests
            let limit = started ? limits.request : shortestLimit
            let deadline = since.advanced(by: limit)
            guard now >= deadline else { return .check(at: deadline) }
            closed()
            return .close(limit: limit)
        }
    }

    /// The limit for a client that has not begun a request.
    private var shortestLimit: Duration {
        draining ? min(limits.idle, limits.drainIdle) : limits.idle
    }
}
