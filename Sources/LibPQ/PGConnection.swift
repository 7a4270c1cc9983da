import CLibPQ
#if canImport(Glibc)
import Glibc
#endif

/// One libpq connection. The only place in meetperry that calls libpq: every
/// statement goes through `PQexecParams` (or `PQexecPrepared`) with bound
/// parameters, text or binary (never string-built SQL), every `PGresult` is
/// cleared on every path before a function returns, and errors come back as
/// `PGError` with their SQLSTATE.
///
/// Not thread-safe: one connection belongs to one task at a time.
public final class PGConnection {
    private var conn: OpaquePointer?
    /// The statements `queryPrepared` has prepared on this connection, by their text.
    private var preparedNames: [String: String] = [:]

    /// Connects with a libpq connection string (URI or key=value).
    public init(conninfo: String) throws(PGError) {
        conn = PQconnectdb(conninfo)
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            let message = conn.map { String(cString: PQerrorMessage($0)) } ?? "out of memory"
            if let conn { PQfinish(conn) }
            self.conn = nil
            throw .connectionFailed(message)
        }
        // Notices (e.g. "relation already exists, skipping") are not errors; keep them off stderr.
        PQsetNoticeProcessor(conn, { _, _ in }, nil)
    }

    deinit { close() }

    public func close() {
        if let conn { PQfinish(conn) }
        conn = nil
    }

    /// Whether the connection is still usable (not closed, not broken).
    public var isHealthy: Bool {
        guard let conn else { return false }
        return PQstatus(conn) == CONNECTION_OK
    }

    private func handle() throws(PGError) -> OpaquePointer {
        guard let conn, PQstatus(conn) == CONNECTION_OK else {
            throw .connectionClosed
        }
        return conn
    }

    private func connectionError(_ conn: OpaquePointer) -> PGError {
        .statementFailed(String(cString: PQerrorMessage(conn)), sqlState: nil, connectionBroken: true)
    }

    /// Turns a result into rows or a typed error, and clears it.
    private func consume(_ result: OpaquePointer?, _ conn: OpaquePointer) throws(PGError) -> QueryResult {
        guard let result else { throw connectionError(conn) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return QueryResult(columns: [], rows: [], affectedRows: Self.affected(result))
        case PGRES_TUPLES_OK, PGRES_SINGLE_TUPLE:
            return QueryResult(copying: result)
        default:
            throw Self.error(from: result, conn: conn)
        }
    }

    static func affected(_ result: OpaquePointer) -> Int {
        Int(String(cString: PQcmdTuples(result))) ?? 0
    }

    static func error(from result: OpaquePointer, conn: OpaquePointer) -> PGError {
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
        var message = String(cString: PQresultErrorMessage(result))
        if message.isEmpty { message = String(cString: PQerrorMessage(conn)) }
        // Errors the server sends carry a SQLSTATE; one without it was made by
        // libpq itself: the connection broke (server gone, network, protocol).
        let broken = PQstatus(conn) != CONNECTION_OK || state == nil
        return .statementFailed(message, sqlState: state, connectionBroken: broken)
    }

    /// Runs one statement with text parameters bound as `$1, $2, …` (nil is NULL).
    @discardableResult
    public func execute(_ sql: String, _ parameters: [String?] = []) throws(PGError) -> QueryResult {
        let conn = try handle()
        let result = withCStrings(parameters) { values in
            PQexecParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, 0)
        }
        return try consume(result, conn)
    }

    /// Runs one statement with bound text parameters and hands each row of its
    /// result to `body` (no copies into Swift arrays); the result is cleared
    /// when this returns or throws. For results that fit in memory. With
    /// `binary`, values come in PostgreSQL's binary format (see `stream`).
    public func query(_ sql: String, _ parameters: [String?] = [], binary: Bool = false, _ body: (RowView) throws -> Void) throws {
        let conn = try handle()
        let result = withCStrings(parameters) { values in
            PQexecParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, binary ? 1 : 0)
        }
        try rows(of: result, conn, body)
    }

    /// `query` with binary parameters (`BinaryArrayEncoder.data`, say), bound
    /// as `$1, $2, …`; the statement gives each its type (`$1::tid[]`).
    public func query(_ sql: String, binaryParameters parameters: [[UInt8]], binary: Bool = false, _ body: (RowView) throws -> Void) throws {
        let conn = try handle()
        let result = withBinaryParameters(parameters) { values, lengths, formats in
            PQexecParams(conn, sql, Int32(parameters.count), nil, values, lengths, formats, binary ? 1 : 0)
        }
        try rows(of: result, conn, body)
    }

    /// `query(_:binaryParameters:)` through a statement prepared on this
    /// connection the first time its text is run (`PQprepare`, named here):
    /// parsed and planned once, not at every execution. For the statements a
    /// program runs over and over; their text is fixed, the values bound.
    public func queryPrepared(_ sql: String, binaryParameters parameters: [[UInt8]], binary: Bool = false, _ body: (RowView) throws -> Void) throws {
        let conn = try handle()
        let name: String
        if let known = preparedNames[sql] {
            name = known
        } else {
            name = "meetperry_\(preparedNames.count + 1)"
            let prepared = PQprepare(conn, name, sql, 0, nil)
            _ = try consume(prepared, conn)
            preparedNames[sql] = name
        }
        let result = withBinaryParameters(parameters) { values, lengths, formats in
            PQexecPrepared(conn, name, Int32(parameters.count), values, lengths, formats, binary ? 1 : 0)
        }
        try rows(of: result, conn, body)
    }

    /// Hands each row of a statement's result to `body`, then clears it.
    private func rows(of result: OpaquePointer?, _ conn: OpaquePointer, _ body: (RowView) throws -> Void) throws {
        guard let result else { throw connectionError(conn) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
            for row in 0..<PQntuples(result) { try body(RowView(result: result, row: row)) }
        default:
            throw Self.error(from: result, conn: conn)
        }
    }

    /// Runs `body` in one transaction (`begin` opens it: `BEGIN`, or with an
    /// isolation level): committed when `body` returns, rolled back when it
    /// throws (or the connection is gone), so a caller can retry the whole.
    public func transaction<R>(_ begin: String = "BEGIN", _ body: () throws -> R) throws -> R {
        try execute(begin)
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            if isHealthy { _ = try? execute("ROLLBACK") }
            throw error
        }
    }

    /// Sets run-time parameters for this session (`set_config`, values bound, never spliced).
    public func set(_ parameters: KeyValuePairs<String, String>) throws(PGError) {
        for (name, value) in parameters {
            try execute("SELECT set_config($1, $2, false)", [name, value])
        }
    }

    /// Throws `PGError.schemaMissing` unless every relation (`schema.table`)
    /// and every column (`schema.table.column`) exists: one question for the
    /// whole contract a program relies on.
    public func verifySchema(relations: [String], columns: [String] = []) throws(PGError) {
        let present = try execute("""
            SELECT coalesce(bool_and(to_regclass(r) IS NOT NULL), true)
                   AND coalesce((SELECT bool_and(EXISTS (
                       SELECT FROM information_schema.columns
                       WHERE table_schema = split_part(c, '.', 1) AND table_name = split_part(c, '.', 2) AND column_name = split_part(c, '.', 3)))
                       FROM unnest($2::text[]) AS c), true)
            FROM unnest($1::text[]) AS r
            """, [PGArray.literal(relations), PGArray.literal(columns)]).scalar
        guard present == "t" else {
            throw .schemaMissing((relations + columns).joined(separator: ", "))
        }
    }

    /// Runs several statements separated by `;` with no parameters (scripts such as changeset.sql).
    public func executeScript(_ sql: String) throws(PGError) {
        let conn = try handle()
        _ = try consume(PQexec(conn, sql), conn)
    }

    /// Sends `data` (COPY rows in the statement's format, e.g. `BinaryCopyEncoder`'s) through `COPY … FROM STDIN`.
    /// Returns the number of rows the server reports.
    @discardableResult
    public func copyIn(_ sql: String, data: [UInt8]) throws(PGError) -> Int {
        let conn = try handle()
        let start = PQexec(conn, sql)
        guard let start else { throw connectionError(conn) }
        guard PQresultStatus(start) == PGRES_COPY_IN else {
            defer { PQclear(start) }
            throw Self.error(from: start, conn: conn)
        }
        PQclear(start)
        var sendFailed = false
        var offset = 0
        let chunk = 1 << 20
        while offset < data.count && !sendFailed {
            let n = min(chunk, data.count - offset)
            let rc = data.withUnsafeBytes { raw in
                PQputCopyData(conn, raw.baseAddress!.assumingMemoryBound(to: CChar.self) + offset, Int32(n))
            }
            if rc != 1 { sendFailed = true }
            offset += n
        }
        if PQputCopyEnd(conn, sendFailed ? "client failed to send data" : nil) != 1 { sendFailed = true }
        // Drain every result so none leaks and the connection is ready again.
        var firstError: PGError?
        var rows = 0
        while let result = PQgetResult(conn) {
            if PQresultStatus(result) == PGRES_COMMAND_OK {
                rows = Self.affected(result)
            } else if firstError == nil {
                firstError = Self.error(from: result, conn: conn)
            }
            PQclear(result)
        }
        if let firstError { throw firstError }
        if sendFailed { throw PGError.copyFailed(String(cString: PQerrorMessage(conn))) }
        return rows
    }

    /// Runs a query and hands each row to `body` as it arrives (libpq
    /// single-row mode), so a result of any size is never held in memory.
    /// `body` may throw to stop early; the rest of the result is discarded.
    /// With `binary`, values come in PostgreSQL's binary format: read them
    /// with `RowView.timestampMicroseconds(binary:)`, `int64(binary:)` and the
    /// text accessors (text and json are the same bytes in both formats).
    public func stream(_ sql: String, _ parameters: [String?] = [], binary: Bool = false, _ body: (RowView) throws -> Void) throws {
        let conn = try handle()
        let sent = withCStrings(parameters) { values in
            PQsendQueryParams(conn, sql, Int32(parameters.count), nil, values, nil, nil, binary ? 1 : 0)
        }
        guard sent == 1 else { throw connectionError(conn) }
        PQsetSingleRowMode(conn)
        var failure: Error?
        while let result = PQgetResult(conn) {
            defer { PQclear(result) }
            if failure != nil { continue }
            switch PQresultStatus(result) {
            case PGRES_SINGLE_TUPLE:
                do { try body(RowView(result: result, row: 0)) } catch { failure = error }
            case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
                break
            default:
                failure = Self.error(from: result, conn: conn)
            }
        }
        if let failure { throw failure }
    }
}

/// Calls `body` with a C array of NUL-terminated copies of `strings` (nil stays NULL).
func withCStrings<R>(_ strings: [String?], _ body: ([UnsafePointer<CChar>?]) -> R) -> R {
    let copies: [UnsafeMutablePointer<CChar>?] = strings.map { $0.map { strdup($0) } ?? nil }
    defer { copies.forEach { free($0) } }
    return body(copies.map { $0.map { UnsafePointer($0) } })
}

/// Calls `body` with what libpq takes for binary parameters: a C array of
/// pointers to each of `buffers`' bytes (valid for the call), their lengths, and their formats (all binary).
func withBinaryParameters<R>(_ buffers: [[UInt8]], _ body: ([UnsafePointer<CChar>?], [Int32], [Int32]) -> R) -> R {
    let lengths = buffers.map { Int32($0.count) }
    let formats = [Int32](repeating: 1, count: buffers.count)
    func nest(_ index: Int, _ pointers: inout [UnsafePointer<CChar>?]) -> R {
        guard index < buffers.count else { return body(pointers, lengths, formats) }
        return buffers[index].withUnsafeBytes { raw in
            pointers.append(raw.baseAddress?.assumingMemoryBound(to: CChar.self))
            return nest(index + 1, &pointers)
        }
    }
    var pointers: [UnsafePointer<CChar>?] = []
    pointers.reserveCapacity(buffers.count)
    return nest(0, &pointers)
}
