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
}
