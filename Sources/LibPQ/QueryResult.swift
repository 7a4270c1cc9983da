import CLibPQ

/// The rows of a finished statement, copied out of the `PGresult` (which is
/// cleared at once), as text values; nil is SQL NULL.
public struct QueryResult: Sendable {
    public var columns: [String]
    public var rows: [[String?]]
    /// Rows inserted/updated/deleted, for commands.
    public var affectedRows: Int

    init(columns: [String], rows: [[String?]], affectedRows: Int) {
        self.columns = columns
        self.rows = rows
        self.affectedRows = affectedRows
    }

    init(copying result: OpaquePointer) {
        let rowCount = Int(PQntuples(result))
        let columnCount = Int(PQnfields(result))
        columns = (0..<columnCount).map { String(cString: PQfname(result, Int32($0))) }
        let view = (0..<rowCount).map { RowView(result: result, row: Int32($0)) }
        rows = view.map { row in (0..<columnCount).map { row[$0] } }
        affectedRows = rowCount
    }

    /// The first column of the first row, if any.
    public var scalar: String? { rows.first?.first ?? nil }
}

/// One row of a live result, valid only inside the callback that receives it.
public struct RowView {
    let result: OpaquePointer
    let row: Int32

    public var count: Int { Int(PQnfields(result)) }

    public subscript(column: Int) -> String? {
        let c = Int32(column)
        if PQgetisnull(result, row, c) == 1 { return nil }
        return String(cString: PQgetvalue(result, row, c))
    }

    /// A binary-format `int8` column; nil for NULL.
    public func int64(binary column: Int) -> Int64? {
        let c = Int32(column)
        guard PQgetisnull(result, row, c) == 0, PQgetlength(result, row, c) == 8, let raw = PQgetvalue(result, row, c) else { return nil }
        var value: UInt64 = 0
        for i in 0..<8 { value = value << 8 | UInt64(UInt8(bitPattern: raw[i])) }
        return Int64(bitPattern: value)
    }

    /// A binary-format `int4` column; nil for NULL.
    public func int32(binary column: Int) -> Int32? {
        withBytes(column) { bytes in
            bytes.count == 4 ? Int32(bitPattern: bytes.reduce(0) { $0 << 8 | UInt32($1) }) : nil
        } ?? nil
    }

    /// A binary-format `timestamptz` column as microseconds since 1970-01-01
    /// UTC (the wire value counts from 2000-01-01); nil for NULL.
    public func timestampMicroseconds(binary column: Int) -> Int64? {
        int64(binary: column).map { $0 + 946_684_800_000_000 }
    }

    /// The raw bytes of a column (binary format: the type's wire form), valid
    /// only inside `body`; nil for NULL.
    public func withBytes<R>(_ column: Int, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R? {
        let c = Int32(column)
        guard PQgetisnull(result, row, c) == 0, let raw = PQgetvalue(result, row, c) else { return nil }
        return try body(UnsafeRawBufferPointer(start: raw, count: Int(PQgetlength(result, row, c))))
    }

    /// A text column by its length (either format; text may not end at a NUL); nil for NULL.
    public func string(_ column: Int) -> String? {
        withBytes(column) { String(decoding: $0, as: UTF8.self) }
    }

    /// A binary-format `boolean` column; nil for NULL.
    public func bool(binary column: Int) -> Bool? {
        withBytes(column) { $0.count == 1 ? $0[0] != 0 : nil } ?? nil
    }
}
