import CLibPQ

/// A failure reported by libpq or the server, with the SQLSTATE when there is one,
/// so callers can tell "try again" (connection lost, server restarting) from
/// "this will never work" (missing table, bad SQL).
public struct PGError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Could not connect, or the connection broke.
        case connection
        /// The server refused a statement.
        case query
        /// COPY could not send or finish.
        case copy
    }

    public var kind: Kind
    /// Five-character SQLSTATE, e.g. `42P01` for an undefined table.
    public var sqlState: String?
    public var message: String

    public init(kind: Kind, sqlState: String? = nil, message: String) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
    }

    public var description: String {
        let text = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        if let sqlState { return "\(text) (SQLSTATE \(sqlState))" }
        return text
    }

    /// Whether waiting and retrying on a new connection can succeed: broken
    /// connections, a server starting or shutting down, too many clients,
    /// serialization failures and deadlocks.
    public var isTransient: Bool {
        if kind == .connection { return true }
        guard let sqlState else { return false }
        if sqlState.hasPrefix("08") { return true }  // connection exception
        switch sqlState {
        case "57P01", "57P02", "57P03",  // admin/crash shutdown, cannot connect now
             "53300", "53400",           // too many connections, configuration limit
             "40001", "40P01",           // serialization failure, deadlock
             "55P03":                    // lock not available
            return true
        default:
            return false
        }
    }
}
