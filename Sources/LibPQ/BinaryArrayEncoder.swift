/// A one-dimensional array in PostgreSQL's binary form (what `array_recv`
/// reads), to bind as a binary parameter (`PGConnection.query(_:binaryParameters:)`):
/// a statement takes many rows' values as a few arrays (`unnest($1::tid[], …)`)
/// with nothing escaped or parsed on either side, and needs no table to stage them in.
/// The server checks the element type against the parameter's, so each
/// encoder takes values of its `element` type only.
public struct BinaryArrayEncoder: Sendable {
    /// The element types the applier binds, by their type OID (`pg_type.oid`).
    public enum Element: UInt32, Sendable {
        case bool = 16, int8 = 20, int4 = 23, text = 25, tid = 27, xid = 28, timestamptz = 1184, uuid = 2950
    }

    public let element: Element
    private var values = BinaryValueWriter()
    /// How many elements have been added.
    public private(set) var count = 0
    private var hasNull = false

    public init(of element: Element) {
        self.element = element
    }

    /// A `text[]` of these strings.
    public init(texts: some Sequence<String>) {
        self.init(of: .text)
        for text in texts { add(text) }
    }

    /// Starts over with no elements, keeping capacity.
    public mutating func removeAll() {
        values.bytes.removeAll(keepingCapacity: true)
        count = 0
        hasNull = false
    }

    /// The parameter's bytes: the header (dimensions, whether any element is
    /// NULL, the element type, the length and lower bound), then the elements.
    public var data: [UInt8] {
        var header = BinaryValueWriter()
        header.bytes.reserveCapacity(20 + values.bytes.count)
        header.int32(count == 0 ? 0 : 1)  // an empty array has no dimension
        header.int32(hasNull ? 1 : 0)
        header.int32(element.rawValue)
        if count > 0 {
            header.int32(UInt32(count))
            header.int32(1)
        }
        header.bytes.append(contentsOf: values.bytes)
        return header.bytes
    }

    private mutating func begin(_ type: Element) {
        precondition(type == element, "BinaryArrayEncoder: a \(type) element in an array of \(element)")
        count += 1
    }

    public mutating func addNull() {
        count += 1
        hasNull = true
        values.null()
    }

    public mutating func add(_ text: String) {
        begin(.text)
        values.text(text)
    }

    /// A `uuid` given as its two big-endian halves.
    public mutating func addUUID(high: UInt64, low: UInt64) {
        begin(.uuid)
        values.uuid(high: high, low: low)
    }

    public mutating func add(_ value: Int32) {
        begin(.int4)
        values.int4(value)
    }

    public mutating func add(_ value: Int64) {
        begin(.int8)
        values.int8(value)
    }

    public mutating func addTID(block: UInt32, offset: UInt16) {
        begin(.tid)
        values.tid(block: block, offset: offset)
    }

    public mutating func addXID(_ xid: UInt32) {
        begin(.xid)
        values.xid(xid)
    }

    /// A `timestamptz` from microseconds since the Unix epoch, or NULL.
    public mutating func addTimestamp(microsecondsSinceUnixEpoch micros: Int64?) {
        guard let micros else { return addNull() }
        begin(.timestamptz)
        values.timestamp(microsecondsSinceUnixEpoch: micros)
    }
}
