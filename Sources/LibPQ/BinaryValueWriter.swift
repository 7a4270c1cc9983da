/// PostgreSQL's binary form of one value, framed as both binary COPY rows and
/// binary array parameters frame it: a 4-byte big-endian length (-1 for
/// NULL), then the type's `*_send` bytes. One place for each type's encoding:
/// `BinaryCopyEncoder` writes values as a row's fields, `BinaryArrayEncoder`
/// as an array's elements.
struct BinaryValueWriter: Sendable {
    var bytes: [UInt8] = []

    /// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01T00:00:00Z).
    static let postgresEpochOffsetMicros: Int64 = 946_684_800_000_000

    mutating func null() { int32(UInt32(bitPattern: -1)) }

    /// `text`: its UTF-8 bytes, read where they are (no copy of the string to reach them).
    mutating func text(_ text: String) {
        int32(UInt32(text.utf8.count))
        if text.utf8.withContiguousStorageIfAvailable({ bytes.append(contentsOf: $0) }) == nil {
            bytes.append(contentsOf: text.utf8)
        }
    }

    /// `uuid`: exactly 16 bytes.
    mutating func uuid(_ uuid: some Collection<UInt8>) {
        precondition(uuid.count == 16, "a uuid is 16 bytes")
        int32(16)
        bytes.append(contentsOf: uuid)
    }

    /// `uuid` given as its two big-endian halves.
    mutating func uuid(high: UInt64, low: UInt64) {
        int32(16)
        withUnsafeBytes(of: (high.bigEndian, low.bigEndian)) { bytes.append(contentsOf: $0) }
    }

    mutating func bool(_ value: Bool) {
        int32(1)
        bytes.append(value ? 1 : 0)
    }

    mutating func int4(_ value: Int32) {
        int32(4)
        int32(UInt32(bitPattern: value))
    }

    mutating func int8(_ value: Int64) {
        int32(8)
        int64(UInt64(bitPattern: value))
    }

    /// `tid` (a row's `ctid`): its block and its line in the block.
    mutating func tid(block: UInt32, offset: UInt16) {
        int32(6)
        int32(block)
        int16(offset)
    }

    /// `xid` (a 32-bit transaction id, such as a row's `xmin`).
    mutating func xid(_ xid: UInt32) {
        int32(4)
        int32(xid)
    }

    /// `timestamptz` from microseconds since the Unix epoch.
    mutating func timestamp(microsecondsSinceUnixEpoch micros: Int64) {
        int32(8)
        int64(UInt64(bitPattern: micros - Self.postgresEpochOffsetMicros))
    }

    mutating func int16(_ value: UInt16) {
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    mutating func int32(_ value: UInt32) {
        bytes.append(UInt8(truncatingIfNeeded: value >> 24))
        bytes.append(UInt8(truncatingIfNeeded: value >> 16))
        bytes.append(UInt8(truncatingIfNeeded: value >> 8))
        bytes.append(UInt8(truncatingIfNeeded: value))
    }

    mutating func int64(_ value: UInt64) {
        int32(UInt32(truncatingIfNeeded: value >> 32))
        int32(UInt32(truncatingIfNeeded: value))
    }
}
