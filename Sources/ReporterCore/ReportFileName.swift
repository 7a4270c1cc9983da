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
