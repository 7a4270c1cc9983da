/// Encodes rows for `COPY … FROM STDIN (FORMAT binary)`: each value as its
/// length and PostgreSQL's binary form. Nothing is escaped or parsed on
/// either side (no timestamp or UUID text), which is what makes it cheaper
/// than the text format for the applier's writes. Every row must
/// carry the `columns` values its table expects, in order.
public struct BinaryCopyEncoder: Sendable {
    private var values = BinaryValueWriter()
    /// The stream so far: the header and the finished rows (and the row being built).
    public var bytes: [UInt8] { values.bytes }
    private let columns: Int
    /// Values added to the row being built; 0 between rows.
    private var columnInRow = 0
    /// Where each finished row starts in `bytes`, and the end of the last one.
    private var rowBounds: [Int] = []

    public init(columns: Int) {
        self.columns = columns
        removeAll()
    }

    /// Starts over with an empty stream (the header only), keeping capacity.
    public mutating func removeAll() {
        values.bytes.removeAll(keepingCapacity: true)
        values.bytes.append(contentsOf: [0x50, 0x47, 0x43, 0x4F, 0x50, 0x59, 0x0A, 0xFF, 0x0D, 0x0A, 0x00]) // "PGCOPY\n\377\r\n\0"
        values.int32(0) // flags
        values.int32(0) // header extension length
        columnInRow = 0
        rowBounds.removeAll(keepingCapacity: true)
        rowBounds.append(bytes.count)
    }

    /// Whether any row has been added since the last `removeAll`.
    public var isEmpty: Bool { rowCount == 0 }

    /// How many rows have been added.
    public var rowCount: Int { rowBounds.count - 1 }

    /// The stream to send: the rows and the trailer. The encoder is left as it was.
    public var data: [UInt8] {
        precondition(columnInRow == 0, "BinaryCopyEncoder: a row was started but not ended")
        var out = bytes
        out.append(0xFF); out.append(0xFF)
        return out
    }

    /// A stream of only some of the rows (by their position, in the order
    /// given), copied as they were encoded.
    public func data(rows: some Sequence<Int>) -> [UInt8] {
        precondition(columnInRow == 0, "BinaryCopyEncoder: a row was started but not ended")
        var out: [UInt8] = []
        out.append(contentsOf: bytes[..<rowBounds[0]])
        for row in rows { out.append(contentsOf: bytes[rowBounds[row]..<rowBounds[row + 1]]) }
        out.append(0xFF); out.append(0xFF)
        return out
    }

    /// Like `data(rows:)`, with one more value at the end of every row: an
    /// `int8` the same for all (say, the transaction's id), so rows encoded
    /// before it was known need not be encoded again.
    public func data(rows: some Sequence<Int>, appendingToEach value: Int64) -> [UInt8] {
        precondition(columnInRow == 0, "BinaryCopyEncoder: a row was started but not ended")
        var trailer = BinaryCopyEncoder(columns: 1)
        trailer.add(value)
        let field = trailer.bytes[(trailer.rowBounds[0] + 2)...]  // its length and value, without the field count
        let count = UInt16(columns + 1)
        var out: [UInt8] = []
        out.append(contentsOf: bytes[..<rowBounds[0]])
        for row in rows {
            out.append(UInt8(truncatingIfNeeded: count >> 8)); out.append(UInt8(truncatingIfNeeded: count))
            out.append(contentsOf: bytes[(rowBounds[row] + 2)..<rowBounds[row + 1]])
            out.append(contentsOf: field)
        }
        out.append(0xFF); out.append(0xFF)
        return out
    }

    private mutating func beginValue() {
        if columnInRow == 0 { values.int16(UInt16(columns)) }
        columnInRow += 1
        precondition(columnInRow <= columns, "BinaryCopyEncoder: more values than the \(columns) columns")
    }

    public mutating func endRow() {
        precondition(columnInRow == columns, "BinaryCopyEncoder: \(columnInRow) values for \(columns) columns")
        columnInRow = 0
        rowBounds.append(bytes.count)
    }

    public mutating func addNull() {
        beginValue()
        values.null()
    }

    /// A `text` value (its UTF-8 bytes), or NULL.
    public mutating func add(_ text: String?) {
        guard let text else { return addNull() }
        add(text)
    }

    /// A `text` value, read where it is (no copy of the string to reach its bytes).
    public mutating func add(_ text: String) {
        beginValue()
        values.text(text)
    }

    /// A `uuid` value: exactly 16 bytes.
    public mutating func addUUID(_ uuid: some Collection<UInt8>) {
        beginValue()
        values.uuid(uuid)
    }

    /// A uuid given as its two big-endian halves.
    public mutating func addUUID(high: UInt64, low: UInt64) {
        beginValue()
        values.uuid(high: high, low: low)
    }

    public mutating func add(_ value: Bool) {
        beginValue()
        values.bool(value)
    }

    public mutating func add(_ value: Int32) {
        beginValue()
        values.int4(value)
    }

    public mutating func add(_ value: Int64) {
        beginValue()
        values.int8(value)
    }

    /// A `tid` (a row's `ctid`): its block and its line in the block.
    public mutating func addTID(block: UInt32, offset: UInt16) {
        beginValue()
        values.tid(block: block, offset: offset)
    }

    /// An `xid` (a 32-bit transaction id, such as a row's `xmin`).
    public mutating func addXID(_ xid: UInt32) {
        beginValue()
        values.xid(xid)
    }

    /// A `timestamptz` value from microseconds since the Unix epoch, or NULL.
    public mutating func addTimestamp(microsecondsSinceUnixEpoch micros: Int64?) {
        guard let micros else { return addNull() }
        beginValue()
        values.timestamp(microsecondsSinceUnixEpoch: micros)
    }
}
