import CLibNATS

/// A failure reported by libnats or a NATS server: the library's status, the
/// JetStream error code when the server sent one, and the library's own text
/// (its last error on this thread), so callers can tell "try again" (timeout,
/// no server, no responders yet) from "this will never work" (bad settings).
public struct NATSError: Error, Sendable, CustomStringConvertible {
    /// The `natsStatus` value.
    public var status: UInt32
    /// The JetStream API error code (`jsErrCode`), 0 when none.
    public var jetStreamCode: Int
    public var message: String

    public init(status: UInt32, jetStreamCode: Int = 0, message: String) {
        self.status = status
        self.jetStreamCode = jetStreamCode
        self.message = message
    }

    /// An error from a call that returned `status`, with what was being done.
    static func from(_ status: natsStatus, jetStreamCode: jsErrCode = jsErrCode(rawValue: 0), doing what: String) -> NATSError {
        var lastStatus = NATS_OK
        var text = nats_GetLastError(&lastStatus).map { String(cString: $0) } ?? ""
        if text.isEmpty { text = String(cString: natsStatus_GetText(status)) }
        return NATSError(status: status.rawValue, jetStreamCode: Int(jetStreamCode.rawValue), message: "\(what): \(text)")
    }

    public var description: String {
        jetStreamCode == 0 ? message : "\(message) (JetStream error \(jetStreamCode))"
    }

    /// No answer in time (a request, a flush, an acknowledgement).
    public var isTimeout: Bool { status == NATS_TIMEOUT.rawValue }
    /// A stream or consumer that does not exist.
    public var isNotFound: Bool {
        status == NATS_NOT_FOUND.rawValue || jetStreamCode == Int(JSStreamNotFoundErr.rawValue)
            || jetStreamCode == Int(JSConsumerNotFoundErr.rawValue)
    }
    /// Whether waiting and trying again can succeed: a timeout, no server
    /// reachable, nobody answering yet (JetStream still electing a leader), a
    /// connection closed under the call.
    public var isTransient: Bool {
        switch status {
        case NATS_TIMEOUT.rawValue, NATS_NO_SERVER.rawValue, NATS_NO_RESPONDERS.rawValue, NATS_NOT_YET_CONNECTED.rawValue,
             NATS_CONNECTION_CLOSED.rawValue, NATS_CONNECTION_DISCONNECTED.rawValue, NATS_IO_ERROR.rawValue, NATS_STALE_CONNECTION.rawValue:
            return true
        default:
            // JetStream says so while the cluster elects a leader or a peer is away.
            return [JSClusterNotAvailErr, JSClusterNotLeaderErr, JSClusterNoPeersErr, JSInsufficientResourcesErr]
                .contains { Int($0.rawValue) == jetStreamCode }
        }
    }
}
