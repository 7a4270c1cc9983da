/// Where the applier's inputs come from: stdin's lines (`LineReader`), or a
/// JetStream consumer's messages (`JetStreamInput`). One loop serves both.
public protocol ApplierInput: AnyObject {
    /// The next input, waiting at most `timeoutMilliseconds`.
    func next(timeoutMilliseconds: Int32) throws -> InputItem
    /// The next input already received, without waiting or receiving more:
    /// after a stop request, what was received is still applied.
    func nextBuffered() -> InputItem?
}

/// One input, or why there is none now.
public enum InputItem {
    /// `number`: the line number on stdin, or the message's stream sequence.
    case line(number: Int, bytes: LineBytes, delivery: (any Delivery)? = nil)
    /// Longer than the limit: only its first bytes are kept.
    case tooLong(number: Int, prefix: [UInt8], delivery: (any Delivery)? = nil)
    /// Nothing arrived within the timeout.
    case timeout
    /// A signal interrupted the wait (the caller checks why).
    case interrupted
    case endOfFile

    /// Nothing was read (a timeout or a signal).
    public var isIdle: Bool {
        switch self {
        case .timeout, .interrupted: return true
        default: return false
        }
    }
}
