import Crypto
import WebhookModel

/// `task_report_{userId}_{start}_{end}.json`, safe whatever the user id is.
///
/// Every byte of the id outside `[A-Za-z0-9._-]` is written `%XX`, so `/`,
/// `..`, NUL, spaces, control bytes and non-ASCII can neither leave the report
/// directory nor make two ids collide (the encoding is injective). A name that
/// would pass 255 bytes keeps a prefix of the encoded id and ends it with `~`
/// and 16 hex digits of SHA-256 of the whole id; `~` never appears in an
/// unshortened name (it would be `%7E`), so shortened and plain names cannot
/// collide either.
public enum ReportFileName {
    /// The longest name most file systems take.
    public static let maxBytes = 255

    public static func make(userId: String, window: ReportWindow) -> String {
        let suffix = "_" + window.start.canonical + "_" + window.end.canonical + ".json"
        let prefix = "task_report_"
        let encoded = percentEncode(userId)
        let room = maxBytes - prefix.utf8.count - suffix.utf8.count
        if encoded.count <= room {
            return prefix + String(decoding: encoded, as: UTF8.self) + suffix
        }
        let digest = SHA256.hash(data: Array(userId.utf8)).prefix(8)
        let tag = "~" + digest.map { byte in
            let hex = Array("0123456789abcdef".utf8)
            return String(decoding: [hex[Int(byte >> 4)], hex[Int(byte & 0xF)]], as: UTF8.self)
        }.joined()
        var keep = room - tag.utf8.count
        // Never cut a %XX in half.
        if keep >= 1, encoded[keep - 1] == UInt8(ascii: "%") { keep -= 1 }
        else if keep >= 2, encoded[keep - 2] == UInt8(ascii: "%") { keep -= 2 }
        return prefix + String(decoding: encoded[..<keep], as: UTF8.self) + tag + suffix
    }

    /// The window of a file this program could have written: a report
    /// (`make`) or a cron run's manifest (`RunManifest.fileName`); nil for any
    /// other name, so pruning never touches a file it does not own.
    public static func window(of name: String) -> ReportWindow? {
        let bytes = Array(name.utf8)
        let stamp = 27 // YYYY-MM-DDTHH:MM:SS.ffffffZ
        let tail = 1 + stamp + 1 + stamp + 5 // _start_end.json
        guard bytes.count > tail, bytes.count <= maxBytes, name.hasSuffix(".json") else { return nil }
        let head = bytes[..<(bytes.count - tail)]
        let stamps = bytes[(bytes.count - tail)...]
        guard stamps[stamps.startIndex] == UInt8(ascii: "_"), stamps[stamps.startIndex + 1 + stamp] == UInt8(ascii: "_") else { return nil }
        func timestamp(at offset: Int) -> Timestamp? {
            let text = String(decoding: stamps[(stamps.startIndex + offset)..<(stamps.startIndex + offset + stamp)], as: UTF8.self)
            guard let t = try? Timestamp(parsing: text), t.canonical == text else { return nil }
            return t
        }
        guard let start = timestamp(at: 1), let end = timestamp(at: 2 + stamp), start < end else { return nil }
        let headText = String(decoding: head, as: UTF8.self)
        if headText == "manifest" { return ReportWindow(start: start, end: end) }
        let prefix = Array("task_report_".utf8)
        guard head.starts(with: prefix), isEncodedId(head.dropFirst(prefix.count)) else { return nil }
        return ReportWindow(start: start, end: end)
    }

    /// Whether `id` is what `make` writes for some user id: safe bytes and
    /// `%XX` escapes, optionally ended by `~` and 16 lowercase hex digits.
    static func isEncodedId(_ id: ArraySlice<UInt8>) -> Bool {
        var body = id
        if let tilde = id.firstIndex(of: UInt8(ascii: "~")) {
            let tag = id[(tilde + 1)...]
            guard tag.count == 16, tag.allSatisfy({ (0x30...0x39).contains($0) || (0x61...0x66).contains($0) }) else { return false }
            body = id[..<tilde]
        }
        guard !body.isEmpty else { return false }
        var i = body.startIndex
        while i < body.endIndex {
            let byte = body[i]
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                i += 1
            case UInt8(ascii: "%"):
                guard body.endIndex - i >= 3, body[(i + 1)...(i + 2)].allSatisfy({ (0x30...0x39).contains($0) || (0x41...0x46).contains($0) }) else { return false }
                i += 3
            default:
                return false
            }
        }
        return true
    }

    static func percentEncode(_ text: String) -> [UInt8] {
        let hex = Array("0123456789ABCDEF".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count)
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                 UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "-"):
                out.append(byte)
            default:
                out.append(UInt8(ascii: "%"))
                out.append(hex[Int(byte >> 4)])
                out.append(hex[Int(byte & 0xF)])
            }
        }
        return out
    }
}
