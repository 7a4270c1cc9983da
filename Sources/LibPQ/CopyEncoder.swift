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
        guard var value else {
            bytes.append(0x5C); bytes.append(UInt8(ascii: "N"))
            return
        }
        value.withUTF8 { utf8 in
            // Most text needs no escaping: copy it in one go.
            guard utf8.contains(where: { $0 == 0x5C || $0 == 0x09 || $0 == 0x0A || $0 == 0x0D }) else {
                bytes.append(contentsOf: utf8)
                return
            }
            for byte in utf8 {
                switch byte {
                case 0x5C: bytes.append(0x5C); bytes.append(0x5C)
                case 0x09: bytes.append(0x5C); bytes.append(UInt8(ascii: "t"))
                case 0x0A: bytes.append(0x5C); bytes.append(UInt8(ascii: "n"))
                case 0x0D: bytes.append(0x5C); bytes.append(UInt8(ascii: "r"))
                default: bytes.append(byte)
                }
            }
        }
    }

    /// Appends already-safe ASCII (numbers, canonical timestamps, UUIDs, `t`/`f`).
    public mutating func addRaw(_ ascii: some Sequence<UInt8>) {
        separate()
        bytes.append(contentsOf: ascii)
    }

    /// Lets `write` append already-safe ASCII as one column, without a temporary.
    public mutating func addRaw(_ write: (inout [UInt8]) -> Void) {
        separate()
        write(&bytes)
    }

    /// A NULL column.
    public mutating func addNull() {
        separate()
        bytes.append(0x5C); bytes.append(UInt8(ascii: "N"))
    }

    public mutating func endRow() {
        bytes.append(0x0A)
        columnInRow = 0
    }
}

/// Text for a PostgreSQL array parameter (`$1::text[]`): every element
/// double-quoted with `"` and `\` escaped, so any string is one element.
public enum PGArray {
    public static func literal(_ elements: some Sequence<String>) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        for element in elements {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out.append(UInt8(ascii: "\""))
            for byte in element.utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
            out.append(UInt8(ascii: "\""))
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }
}
