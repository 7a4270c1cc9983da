/// Text for a PostgreSQL array parameter (`$1::text[]`): every element
/// double-quoted with `"` and `\` escaped, so any string is one element;
/// nil is the unquoted `NULL`.
public enum PGArray {
    public static func literal(_ elements: some Sequence<String>) -> String {
        literal(elements.lazy.map { Optional($0) })
    }

    public static func literal(_ elements: some Sequence<String?>) -> String {
        var out: [UInt8] = [UInt8(ascii: "{")]
        var first = true
        for element in elements {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            guard let element else {
                out.append(contentsOf: "NULL".utf8)
                continue
            }
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
