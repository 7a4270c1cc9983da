/// Encodes rows for `COPY … FROM STDIN` in PostgreSQL's text format: columns
/// separated by tabs, `\N` for NULL, and backslash, tab, newline and carriage
/// return escaped, so any text from a webhook is carried as data.
public struct CopyEncoder {
    public private(set) var bytes: [UInt8] = []
    private var columnInRow = 0

    public init() {}

    public mutating func removeAll() {
        bytes.removeAll(keepingCapacity: true)
        columnInRow = 0
    }

    private mutating func separate() {
        if columnInRow > 0 { bytes.append(0x09) }
        columnInRow += 1
    }

    public mutating func add(_ value: String?) {
        separate()
        guard let value else {
            bytes.append(0x5C); bytes.append(UInt8(ascii: "N"))
            return
        }
        for byte in value.utf8 {
            switch byte {
            case 0x5C: bytes.append(0x5C); bytes.append(0x5C)
            case 0x09: bytes.append(0x5C); bytes.append(UInt8(ascii: "t"))
            case 0x0A: bytes.append(0x5C); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(0x5C); bytes.append(UInt8(ascii: "r"))
            default: bytes.append(byte)
            }
        }
    }

    /// Appends already-safe ASCII (numbers, canonical timestamps, hex).
    public mutating func addRaw(_ ascii: [UInt8]) {
        separate()
        bytes.append(contentsOf: ascii)
    }

    public mutating func endRow() {
        bytes.append(0x0A)
        columnInRow = 0
    }
}
