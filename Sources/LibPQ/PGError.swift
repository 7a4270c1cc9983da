import CLibPQ

/// A failure reported by libpq or the server, with the SQLSTATE when there is one,
/// so callers can tell "try again" (connection lost, server restarting) from
/// "this will never work" (missing table, bad SQL, a database that does not exist).
/// Made by the factories below; the predicates say what a caller may do about it.
public struct PGError: Error, Sendable, CustomStringConvertible {
    public enum Kind: Sendable, Equatable {
        /// Could not connect, or the connection broke.
        case connection
        /// The server refused a statement.
        case query
        /// COPY could not send or finish.
        case copy
        /// The database is not what this program needs (changeset.sql not
        /// applied, or a row it cannot read).
        case schema
        /// Rows read under the program's locks changed before it wrote them.
        case conflict
    }

    public var kind: Kind
    public var sqlState: SQLState?
    public var message: String

    public init(kind: Kind, sqlState: SQLState? = nil, message: String) {
        self.kind = kind
        self.sqlState = sqlState
        self.message = message
    }

    public var description: String {
        let text = message.split(whereSeparator: \.isNewline).joined(separator: " ")
        if let sqlState { return "\(text) (SQLSTATE \(sqlState))" }
        return text
    }

    // MARK: - Factories

    /// Connecting failed with libpq's `message`. The server's reason for
    /// turning a connection away reaches libpq as text only, so the ones
    /// retrying cannot fix (no such database or role, a wrong password, no
    /// pg_hba.conf entry) are recognised from it and given their SQLSTATE.
    static func connectionFailed(_ message: String) -> PGError {
        let refusals: [(String, SQLState)] = [
            ("does not exist", .invalidCatalogName),  // database "x" / role "x" does not exist
            ("password authentication failed", .invalidPassword),
            ("no password supplied", .invalidPassword),
            ("no pg_hba.conf entry", .invalidAuthorizationSpecification),
            ("authentication failed", .invalidAuthorizationSpecification),
        ]
        let state = refusals.first { message.contains($0.0) }?.1
        return PGError(kind: .connection, sqlState: state, message: "cannot connect to PostgreSQL: " + message)
    }

    static let connectionClosed = PGError(kind: .connection, message: "the connection to PostgreSQL is closed")

    /// What the server (or libpq, for a broken connection) said of a statement.
    static func statementFailed(_ message: String, sqlState: String?, connectionBroken: Bool) -> PGError {
        PGError(kind: connectionBroken ? .connection : .query, sqlState: sqlState.map(SQLState.init(rawValue:)), message: message)
    }

    static func copyFailed(_ message: String) -> PGError { PGError(kind: .copy, message: message) }

    /// The schema is missing or older than this program: `what` names it.
    public static func schemaMissing(_ what: String) -> PGError {
        PGError(kind: .schema, message: "\(what) does not exist or is older than this program: apply changeset.sql first (psql -f changeset.sql)")
    }

    /// A stored row this program cannot read: `what` names the table.
    public static func unreadableRow(_ what: String) -> PGError {
        PGError(kind: .schema, message: "\(what) holds a row this program cannot read")
    }

    /// Rows read under the applier's locks were gone or changed when it wrote
    /// them: a writer that takes no locks was at work. A write conflict: read
    /// again and retried, a few times.
    public static func rowsChangedUnderLock(_ what: String) -> PGError {
        PGError(kind: .conflict, message: "rows of \(what) changed between reading and writing them (another writer that takes no locks, or a trigger?)")
    }

    // MARK: - What to do about it

    /// Whether waiting and retrying on a new connection can succeed: broken
    /// connections (not a refusal), a server starting or shutting down, too
    /// many clients, serialization failures and deadlocks.
    public var isTransient: Bool {
        if kind == .connection { return sqlState.map { !$0.isRefusal } ?? true }
        guard let sqlState else { return false }
        return sqlState.errorClass == "08" || SQLState.transient.contains(sqlState)
    }

    /// A unique key taken between a read and a write (another writer, or an
    /// id the sequence handed out that a row put in by other means holds), or
    /// rows changed between them.
    public var isWriteConflict: Bool { sqlState == .uniqueViolation || kind == .conflict }

    /// The data's fault, not the statement's: a data exception (class 22) or
    /// an integrity constraint violation (class 23).
    public var isDataError: Bool { sqlState.map { $0.errorClass == "22" || $0.errorClass == "23" } ?? false }
}

extension PGError {
    /// A five-character SQLSTATE, with names for the ones meetperry acts on.
    public struct SQLState: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
        public var rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }

        public var description: String { rawValue }
        /// The first two characters: `08` connection exception, `22` data exception, `23` integrity constraint…
        public var errorClass: Substring { rawValue.prefix(2) }

        public static let uniqueViolation = SQLState(rawValue: "23505")
        public static let undefinedTable = SQLState(rawValue: "42P01")
        public static let invalidCatalogName = SQLState(rawValue: "3D000")
        public static let invalidPassword = SQLState(rawValue: "28P01")
        public static let invalidAuthorizationSpecification = SQLState(rawValue: "28000")
        public static let adminShutdown = SQLState(rawValue: "57P01")
        public static let crashShutdown = SQLState(rawValue: "57P02")
        public static let cannotConnectNow = SQLState(rawValue: "57P03")
        public static let tooManyConnections = SQLState(rawValue: "53300")
        public static let configurationLimitExceeded = SQLState(rawValue: "53400")
        public static let serializationFailure = SQLState(rawValue: "40001")
        public static let deadlockDetected = SQLState(rawValue: "40P01")
        public static let lockNotAvailable = SQLState(rawValue: "55P03")

        static let transient: Set<SQLState> = [
            .adminShutdown, .crashShutdown, .cannotConnectNow, .tooManyConnections, .configurationLimitExceeded,
            .serializationFailure, .deadlockDetected, .lockNotAvailable,
        ]

        /// The server turned the connection away for good: retrying cannot help.
        var isRefusal: Bool { self == .invalidCatalogName || self == .invalidPassword || self == .invalidAuthorizationSpecification }
    }
}
