import NIOCore
import NIOHTTP1
#if canImport(Glibc)
import Glibc
#endif

/// The receiver's answers as bytes on the wire, in one buffer each: status
/// line, `Date`, `Content-Type`, `Content-Length`, the answer's own headers,
/// `Connection` when it says something the version does not, then the body.
/// Only the receiver's own values are written here, never a sender's bytes.
struct HTTP1ResponseEncoder {
    /// What the `Connection` header says.
    enum Connection {
        /// Nothing: the version's default (HTTP/1.1 keeps the connection).
        case `default`
        case keepAlive
        case close
    }

    static let continueResponse: StaticString = "HTTP/1.1 100 Continue\r\n\r\n"

    private var dateSecond = -1
    private var dateField: [UInt8] = []

    mutating func encode(
        _ status: HTTPResponseStatus, contentType: String, body: ByteBuffer, headers extra: [(String, String)] = [],
        connection: Connection, includeBody: Bool, allocator: ByteBufferAllocator
    ) -> ByteBuffer {
        var out = allocator.buffer(capacity: 160 + (includeBody ? body.readableBytes : 0))
        out.writeStaticString("HTTP/1.1 ")
        out.writeString(String(status.code))
        out.writeStaticString(" ")
        out.writeString(status.reasonPhrase)
        out.writeStaticString("\r\n")
        out.writeBytes(currentDateField())
        out.writeStaticString("Content-Type: ")
        out.writeString(contentType)
        out.writeStaticString("\r\nContent-Length: ")
        out.writeString(String(body.readableBytes))
        out.writeStaticString("\r\n")
        for (name, value) in extra {
            out.writeString(name)
            out.writeStaticString(": ")
            out.writeString(value)
            out.writeStaticString("\r\n")
        }
        switch connection {
        case .default: break
        case .keepAlive: out.writeStaticString("Connection: keep-alive\r\n")
        case .close: out.writeStaticString("Connection: close\r\n")
        }
        out.writeStaticString("\r\n")
        if includeBody {
            var body = body
            out.writeBuffer(&body)
        }
        return out
    }

    /// `Date: Sun, 06 Nov 1994 08:49:37 GMT\r\n`, made once a second.
    private mutating func currentDateField() -> [UInt8] {
        let now = time(nil)
        if now != dateSecond {
            dateSecond = now
            dateField = Array("Date: \(Self.imfFixdate(now))\r\n".utf8)
        }
        return dateField
    }

    /// RFC 9110's IMF-fixdate of a time in seconds since 1970.
    static func imfFixdate(_ seconds: Int) -> String {
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ n: Int32) -> String { n < 10 ? "0\(n)" : "\(n)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
