import NIOCore

/// What became of an accepted webhook's line.
public enum LineOutcome: Sendable, Equatable {
    /// Handed on for good — written whole to stdout (and archived), or stored
    /// by the JetStream stream: the request may be answered 202.
    case written
    /// Not handed on: the reader is not keeping up (queue full, or stalled). Answer 503 + Retry-After.
    case overloaded
    /// Not handed on, and the sink takes no lines now (shutting down, output
    /// closed, archive failing, no NATS server, no acknowledgement). Answer 503.
    case unavailable(String)
}

/// One accepted webhook on its way out.
public struct SubmittedLine: Sendable {
    /// The canonical line, ending in `\n`.
    public var bytes: [UInt8]
    /// The event's identity, when the sink needs one (JetStream's `Nats-Msg-Id`).
    public var messageId: String?
    /// Runs on the submitting event loop once the line is handed on or refused.
    public var completion: @Sendable (LineOutcome) -> Void

    public init(bytes: [UInt8], messageId: String? = nil, completion: @escaping @Sendable (LineOutcome) -> Void) {
        self.bytes = bytes
        self.messageId = messageId
        self.completion = completion
    }
}

/// Why a sink would refuse new lines now; `/healthz` answers 503 with it.
public struct SinkTrouble: Sendable, Equatable {
    /// `stalled`, `unavailable`.
    public var status: String
    public var detail: String
}

/// Where the receiver's accepted lines go: stdout (`StreamWriter`) or a
/// JetStream stream (`JetStreamPublisher`). Either answers every line, and
/// only a line handed on for good is `.written`.
public protocol LineSink: AnyObject, Sendable {
    /// Hands in the lines accepted on `eventLoop` during one turn of it, in
    /// order; each one's completion runs on that loop once the line is
    /// handed on or refused (at once, on this thread, when that is known now).
    func submit(_ lines: [SubmittedLine], on eventLoop: any EventLoop)
    /// Why new lines would be refused now, or nil.
    var trouble: SinkTrouble? { get }
    /// Where lines go, as `/healthz` says: `stdout`, `jetstream`, …
    var mode: String { get }
}
