/// Text for a PostgreSQL array parameter (`$1::text[]`): every element
/// double-quoted with `"` and `\` escaped, so any string is one element;
/// nil is the unquoted `NULL`.
public enum PGArray {
    public static func literal(_ elements: some Sequence<String>) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        for element in elements {
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
            append(element, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    public static func literal(_ elements: some Sequence<String?>) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        for element in elements {
            if out.count > 1 { out.append(UInt8(ascii: ",")) }
            if let element { append(element, to: &out) } else { out.append(contentsOf: "NULL".utf8) }
        }
        out.append(UInt8(ascii: "}"))
        return String(decoding: out, as: UTF8.self)
    }

    /// One element, double-quoted; `"` and `\` escaped (copied whole when there are none).
    private static func append(_ element: String, to out: inout [UInt8]) {
        var element = element
        out.append(UInt8(ascii: "\""))
        element.withUTF8 { utf8 in
            if !utf8.contains(where: { $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
                out.append(contentsOf: utf8)
                return
            }
            for byte in utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { out.append(UInt8(ascii: "\\")) }
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
