import NIOCore
import NIOHTTP1

/// A request's head as the receiver needs it: the route, the framing of its
/// body, whether the connection stays open, and the few headers the checks
/// read (the first of each when a header is repeated).
struct HTTP1RequestHead: Equatable, Sendable {
    enum Method: Equatable, Sendable {
        case get, head, post, other
    }

    enum Version: Equatable, Sendable {
        case http10, http11
    }

    /// How the body is delimited (RFC 9112 §6).
    enum Framing: Equatable, Sendable {
        case length(Int)
        case chunked
    }

    var method: Method
    /// The request target up to any `?`.
    var path: String
    var version: Version
    var framing: Framing
    /// HTTP/1.1 unless `Connection: close`; HTTP/1.0 only with `Connection: keep-alive`.
    var keepAlive: Bool
    /// `Expect: 100-continue`.
    var expectsContinue: Bool
    var contentType: String?
    var webhookId: String?
    var webhookTimestamp: String?
    var webhookSignature: String?
}

/// What the decoder found in the bytes so far.
enum HTTP1RequestPart: Equatable, Sendable {
    case head(HTTP1RequestHead)
    /// Some of the body, in order (chunked framing already removed).
    case body(ByteBuffer)
    /// The request is complete; the next bytes are the next request.
    case end
}

/// Why a request cannot be read: the status to answer (the connection is
/// then closed, since where the next request starts is unknown) and a reason
/// for the sender.
struct HTTP1ParseError: Error, Equatable, CustomStringConvertible {
    var status: HTTPResponseStatus
    var reason: String

    var description: String { "\(status.code) \(reason)" }

    static func badRequest(_ reason: String) -> Self { Self(status: .badRequest, reason: reason) }
    static func headTooLarge(_ limit: Int) -> Self {
        Self(status: .requestHeaderFieldsTooLarge, reason: "the request line and headers are limited to \(limit) bytes and \(HTTP1RequestDecoder.maxHeaderCount) fields")
    }
    static func targetTooLong(_ limit: Int) -> Self { Self(status: .uriTooLong, reason: "the request target is limited to \(limit) bytes") }
    static let versionNotSupported = Self(status: .httpVersionNotSupported, reason: "only HTTP/1.0 and HTTP/1.1 are spoken here")
    static func notImplemented(_ reason: String) -> Self { Self(status: .notImplemented, reason: reason) }
}

/// HTTP/1.1 requests (RFC 9112) as a pure state machine over the bytes of one
/// connection: feed it the bytes received so far and it returns the next part
/// (head, body, end), or nil until more bytes come, or throws when the bytes
/// cannot be a request. It does no I/O and keeps no bytes of its own, so the
/// channel handler decides when to go on (one request at a time, in order)
/// and every rule is unit-tested on plain buffers.
///
/// Strict where leniency lets a request be read two ways (request
/// smuggling): a body framed by both `Content-Length` and
/// `Transfer-Encoding`, differing lengths, whitespace before a colon, folded
/// or control-character header values are refused, and so is what RFC 9112
/// §3.2 says a server MUST refuse: an HTTP/1.1 request without `Host`, and
/// any with two `Host` lines or one that is not a host and port. Lenient where RFC 9112
/// allows it: bare LF line ends, empty lines before a request, chunk
/// extensions and trailers (ignored).
struct HTTP1RequestDecoder {
    static let maxHeadBytes = 64 * 1024
    static let maxHeaderCount = 100
    static let maxTargetBytes = 8 * 1024
    /// A chunk-size line, extensions included.
    static let maxChunkLineBytes = 4 * 1024

    private enum State {
        /// Waiting for a whole head; the bytes before `scanned` hold no end of it.
        case head(scanned: Int)
        case body(remaining: Int)
        case chunkSize
        case chunkData(remaining: Int)
        /// The CRLF after a chunk's data.
        case chunkDataEnd
        /// Trailer lines after the last chunk; `bytes` of them so far.
        case trailers(bytes: Int)
    }

    private var state = State.head(scanned: 0)

    /// True between requests: no byte of the next one has been taken.
    var isBetweenRequests: Bool {
        if case .head(0) = state { return true }
        return false
    }

    /// The next part from the front of `buffer` (consumed from it), or nil
    /// when `buffer` does not hold one yet.
    mutating func next(from buffer: inout ByteBuffer) throws(HTTP1ParseError) -> HTTP1RequestPart? {
        switch state {
        case .head(let scanned):
            return try nextHead(from: &buffer, scanned: scanned)
        case .body(let remaining):
            if remaining == 0 {
                state = .head(scanned: 0)
                return .end
            }
            guard let slice = takeData(from: &buffer, upTo: remaining) else { return nil }
            state = .body(remaining: remaining - slice.readableBytes)
            return .body(slice)
        case .chunkSize:
            guard let line = try takeLine(from: &buffer, limit: Self.maxChunkLineBytes, what: "a chunk size line") else { return nil }
            let size = try Self.chunkSize(line)
            state = size == 0 ? .trailers(bytes: 0) : .chunkData(remaining: size)
            return try next(from: &buffer)
        case .chunkData(let remaining):
            guard let slice = takeData(from: &buffer, upTo: remaining) else { return nil }
            state = slice.readableBytes == remaining ? .chunkDataEnd : .chunkData(remaining: remaining - slice.readableBytes)
            return .body(slice)
        case .chunkDataEnd:
            guard let line = try takeLine(from: &buffer, limit: 2, what: "the end of a chunk") else { return nil }
            guard line.isEmpty else { throw .badRequest("a chunk is longer than its size says") }
            state = .chunkSize
            return try next(from: &buffer)
        case .trailers(let bytes):
            var total = bytes
            while true {
                let before = buffer.readableBytes
                guard let line = try takeLine(from: &buffer, limit: Self.maxHeadBytes - total, what: "the trailer section") else {
                    state = .trailers(bytes: total)
                    return nil
                }
                total += before - buffer.readableBytes
                if line.isEmpty {
                    state = .head(scanned: 0)
                    return .end
                }
                // Trailer fields are read past, not used; they must still be fields.
                try Self.checkField(line)
            }
        }
    }

    // MARK: - The head

    private mutating func nextHead(from buffer: inout ByteBuffer, scanned: Int) throws(HTTP1ParseError) -> HTTP1RequestPart? {
        // Empty lines before a request line are skipped (RFC 9112 §2.2).
        if scanned == 0 {
            while let first = buffer.getInteger(at: buffer.readerIndex, as: UInt8.self), first == .lf || first == .cr {
                if first == .cr {
                    guard let second = buffer.getInteger(at: buffer.readerIndex + 1, as: UInt8.self) else { return nil }
                    guard second == .lf else { throw .badRequest("a bare CR before the request line") }
                    buffer.moveReaderIndex(forwardBy: 2)
                } else {
                    buffer.moveReaderIndex(forwardBy: 1)
                }
            }
        }
        let found: (end: Int, scanned: Int) = buffer.withUnsafeReadableBytes { Self.findHeadEnd($0, from: scanned) }
        guard found.end > 0 else {
            if buffer.readableBytes > Self.maxHeadBytes { throw .headTooLarge(Self.maxHeadBytes) }
            state = .head(scanned: found.scanned)
            return nil
        }
        guard found.end <= Self.maxHeadBytes else { throw .headTooLarge(Self.maxHeadBytes) }
        let head = try buffer.withUnsafeReadableBytes { bytes in
            Result { () throws(HTTP1ParseError) in try Self.parseHead(UnsafeRawBufferPointer(rebasing: bytes[..<found.end])) }
        }.get()
        buffer.moveReaderIndex(forwardBy: found.end)
        switch head.framing {
        case .length(let length): state = .body(remaining: length)
        case .chunked: state = .chunkSize
        }
        return .head(head)
    }

    /// The offset just past the empty line that ends the head (0: not there
    /// yet), and how far the bytes were looked at without finding it.
    private static func findHeadEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> (end: Int, scanned: Int) {
        var index = start
        while index < bytes.count {
            guard bytes[index] == .lf else {
                index += 1
                continue
            }
            // A line ended at `index`; an empty line after it ends the head.
            guard index + 1 < bytes.count else { return (0, index) }
            if bytes[index + 1] == .lf { return (index + 2, index) }
            if bytes[index + 1] == .cr {
                guard index + 2 < bytes.count else { return (0, index) }
                if bytes[index + 2] == .lf { return (index + 3, index) }
            }
            index += 1
        }
        return (0, index)
    }

    /// The header fields the decoder reads.
    private enum Field {
        case host, contentLength, transferEncoding, connection, expect, contentType, webhookId, webhookTimestamp, webhookSignature

        init?(name: UnsafeRawBufferPointer) {
            func named(_ expected: StaticString) -> Bool { HTTP1RequestDecoder.equalsIgnoringCase(name, expected) }
            switch name.count {
            case 4 where named("host"): self = .host
            case 6 where named("expect"): self = .expect
            case 10 where named("connection"): self = .connection
            case 10 where named("webhook-id"): self = .webhookId
            case 12 where named("content-type"): self = .contentType
            case 14 where named("content-length"): self = .contentLength
            case 17 where named("transfer-encoding"): self = .transferEncoding
            case 17 where named("webhook-timestamp"): self = .webhookTimestamp
            case 17 where named("webhook-signature"): self = .webhookSignature
            default: return nil
            }
        }
    }

    /// Whether `bytes` are `expected` (ASCII, lower-case), ignoring case.
    private static func equalsIgnoringCase(_ bytes: UnsafeRawBufferPointer, _ expected: StaticString) -> Bool {
        guard bytes.count == expected.utf8CodeUnitCount else { return false }
        let other = UnsafeRawBufferPointer(start: expected.utf8Start, count: expected.utf8CodeUnitCount)
        for index in 0..<bytes.count where lowercased(bytes[index]) != other[index] { return false }
        return true
    }

    private static func equals(_ bytes: UnsafeRawBufferPointer, _ expected: StaticString) -> Bool {
        bytes.elementsEqual(UnsafeRawBufferPointer(start: expected.utf8Start, count: expected.utf8CodeUnitCount))
    }

    /// The next line of `bytes` from `start`, without its line end (CRLF or
    /// LF), and where the line after it starts; nil at the end.
    private static func line(in bytes: UnsafeRawBufferPointer, from start: Int) -> (UnsafeRawBufferPointer, next: Int)? {
        var index = start
        while index < bytes.count && bytes[index] != .lf { index += 1 }
        guard index < bytes.count else { return nil }
        let end = index > start && bytes[index - 1] == .cr ? index - 1 : index
        return (UnsafeRawBufferPointer(rebasing: bytes[start..<end]), index + 1)
    }

    private static func parseHead(_ bytes: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> HTTP1RequestHead {
        guard let (requestLine, afterRequestLine) = line(in: bytes, from: 0) else { throw .badRequest("no request line") }

        // method SP request-target SP HTTP-version
        guard let firstSpace = requestLine.firstIndex(of: .space),
              let lastSpace = requestLine.lastIndex(of: .space), firstSpace < lastSpace
        else { throw .badRequest("the request line is not: method, target, version") }
        let methodBytes = UnsafeRawBufferPointer(rebasing: requestLine[..<firstSpace])
        let target = UnsafeRawBufferPointer(rebasing: requestLine[(firstSpace + 1)..<lastSpace])
        let versionBytes = UnsafeRawBufferPointer(rebasing: requestLine[(lastSpace + 1)...])
        guard !methodBytes.isEmpty, methodBytes.allSatisfy(isTokenByte) else { throw .badRequest("the method is not a token") }
        guard !target.isEmpty, target.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else {
            throw .badRequest("the request target is empty or holds spaces or control characters")
        }
        guard target.count <= maxTargetBytes else { throw .targetTooLong(maxTargetBytes) }
        let version: HTTP1RequestHead.Version
        if equals(versionBytes, "HTTP/1.1") {
            version = .http11
        } else if equals(versionBytes, "HTTP/1.0") {
            version = .http10
        } else if versionBytes.count == 8 && versionBytes.starts(with: "HTTP/".utf8) && isDigit(versionBytes[5])
                    && versionBytes[6] == .dot && isDigit(versionBytes[7]) {
            throw .versionNotSupported
        } else {
            throw .badRequest("the request line does not end in an HTTP version")
        }
        let method: HTTP1RequestHead.Method =
            equals(methodBytes, "POST") ? .post : equals(methodBytes, "GET") ? .get : equals(methodBytes, "HEAD") ? .head : .other
        let pathEnd = target.firstIndex(of: .questionMark) ?? target.count
        var head = HTTP1RequestHead(
            method: method, path: String(decoding: target[..<pathEnd], as: UTF8.self), version: version,
            framing: .length(0), keepAlive: version == .http11, expectsContinue: false)

        var contentLength: Int?
        var transferCodings: [[UInt8]]?
        var hostLines = 0
        var fields = 0
        var next = afterRequestLine
        while let (fieldLine, after) = line(in: bytes, from: next), !fieldLine.isEmpty {
            next = after
            fields += 1
            guard fields <= maxHeaderCount else { throw .headTooLarge(maxHeadBytes) }
            let (name, value) = try checkField(fieldLine)
            switch Field(name: name) {
            case .host:
                // RFC 9112 §3.2: one Host line, holding a host and perhaps a port.
                hostLines += 1
                guard hostLines == 1 else { throw .badRequest("Host is given twice") }
                guard value.allSatisfy(isHostByte) else { throw .badRequest("Host is not a host name or address and a port") }
            case .contentLength:
                for element in listElements(value) {
                    guard !element.isEmpty, element.count <= 18, element.allSatisfy(isDigit) else {
                        throw .badRequest("Content-Length is not a number of bytes")
                    }
                    let length = element.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
                    guard contentLength == nil || contentLength == length else { throw .badRequest("Content-Length is given twice, differently") }
                    contentLength = length
                }
            case .transferEncoding:
                transferCodings = (transferCodings ?? []) + listElements(value).map { $0.map(lowercased) }
            case .connection:
                for option in listElements(value).map({ $0.map(lowercased) }) {
                    if option.elementsEqual("close".utf8) { head.keepAlive = false }
                    if option.elementsEqual("keep-alive".utf8) && version == .http10 { head.keepAlive = true }
                }
            case .expect:
                head.expectsContinue = equalsIgnoringCase(value, "100-continue")
            case .contentType:
                // Two media types for one body: which one the sender meant is a guess (RFC 9110 allows one).
                guard head.contentType == nil else { throw .badRequest("Content-Type is given twice") }
                head.contentType = String(decoding: value, as: UTF8.self)
            case .webhookId:
                if head.webhookId == nil { head.webhookId = String(decoding: value, as: UTF8.self) }
            case .webhookTimestamp:
                if head.webhookTimestamp == nil { head.webhookTimestamp = String(decoding: value, as: UTF8.self) }
            case .webhookSignature:
                if head.webhookSignature == nil { head.webhookSignature = String(decoding: value, as: UTF8.self) }
            case nil:
                break
            }
        }
        // RFC 9112 §3.2: an HTTP/1.1 request without Host is refused.
        guard hostLines == 1 || version == .http10 else { throw .badRequest("an HTTP/1.1 request without Host") }
        if let codings = transferCodings {
            guard version == .http11 else { throw .badRequest("Transfer-Encoding is not HTTP/1.0") }
            guard contentLength == nil else { throw .badRequest("both Content-Length and Transfer-Encoding frame the body") }
            guard codings.last?.elementsEqual("chunked".utf8) == true else { throw .badRequest("Transfer-Encoding does not end in chunked") }
            guard codings.count == 1 else { throw .notImplemented("only the chunked transfer coding is understood") }
            head.framing = .chunked
        } else {
            head.framing = .length(contentLength ?? 0)
        }
        return head
    }

    /// A field line's name and value (trimmed); throws when it is not one.
    @discardableResult
    private static func checkField(_ line: UnsafeRawBufferPointer) throws(HTTP1ParseError) -> (UnsafeRawBufferPointer, UnsafeRawBufferPointer) {
        if let first = line.first, first == .space || first == .tab {
            throw .badRequest("a folded header line (obsolete line folding is not accepted)")
        }
        guard let colon = line.firstIndex(of: .colon) else { throw .badRequest("a header line without a colon") }
        let name = UnsafeRawBufferPointer(rebasing: line[..<colon])
        guard !name.isEmpty, name.allSatisfy(isTokenByte) else {
            throw .badRequest("a header name that is empty or holds spaces or separators")
        }
        var value = UnsafeRawBufferPointer(rebasing: line[(colon + 1)...])
        while let first = value.first, first == .space || first == .tab { value = UnsafeRawBufferPointer(rebasing: value.dropFirst()) }
        while let last = value.last, last == .space || last == .tab { value = UnsafeRawBufferPointer(rebasing: value.dropLast()) }
        // Field values: visible bytes, spaces, tabs and obs-text; no control characters.
        guard value.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == .tab }) else {
            throw .badRequest("a header value holds a control character")
        }
        return (name, value)
    }

    /// The elements of a comma-separated list value, trimmed, empty ones dropped.
    private static func listElements(_ value: UnsafeRawBufferPointer) -> [[UInt8]] {
        value.split(separator: .comma).map { element in
            Array(element.drop(while: { $0 == .space || $0 == .tab }).reversed().drop(while: { $0 == .space || $0 == .tab }).reversed())
        }.filter { !$0.isEmpty }
    }

    // MARK: - Bodies

    private func takeData(from buffer: inout ByteBuffer, upTo remaining: Int) -> ByteBuffer? {
        guard buffer.readableBytes > 0 else { return nil }
        return buffer.readSlice(length: min(remaining, buffer.readableBytes))
    }

    /// One line (without its CRLF or LF) from the front of `buffer`, or nil
    /// until it is whole; throws when it would pass `limit` bytes.
    private func takeLine(from buffer: inout ByteBuffer, limit: Int, what: String) throws(HTTP1ParseError) -> [UInt8]? {
        let view = buffer.readableBytesView
        guard let lf = view.firstIndex(of: .lf) else {
            if view.count > limit { throw .badRequest("\(what) is too long") }
            return nil
        }
        var line = Array(view[view.startIndex..<lf])
        guard line.count <= limit else { throw .badRequest("\(what) is too long") }
        if line.last == .cr { line.removeLast() }
        buffer.moveReaderIndex(forwardBy: lf - view.startIndex + 1)
        return line
    }

    private static func checkField(_ line: [UInt8]) throws(HTTP1ParseError) {
        _ = try line.withUnsafeBytes { bytes in Result { () throws(HTTP1ParseError) in try checkField(bytes) } }.get()
    }

    /// `chunk-size [chunk-ext]`: hexadecimal digits, then nothing or extensions.
    private static func chunkSize(_ line: [UInt8]) throws(HTTP1ParseError) -> Int {
        let digits = line.prefix(while: isHexDigit)
        guard !digits.isEmpty, digits.count <= 15 else { throw .badRequest("a chunk size is not a hexadecimal number") }
        let rest = line[digits.count...]
        if let first = rest.first {
            guard first == .semicolon || first == .space || first == .tab,
                  rest.allSatisfy({ $0 >= 0x20 && $0 != 0x7F || $0 == .tab })
            else { throw .badRequest("a chunk size is followed by something other than extensions") }
        }
        return digits.reduce(0) { $0 * 16 + hexValue($1) }
    }

    // MARK: - Bytes

    private static func isDigit(_ byte: UInt8) -> Bool { byte >= 0x30 && byte <= 0x39 }
    private static func isHexDigit(_ byte: UInt8) -> Bool { isDigit(byte) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x66) }
    private static func hexValue(_ byte: UInt8) -> Int { isDigit(byte) ? Int(byte - 0x30) : Int(byte | 0x20) - 0x61 + 10 }
    private static func lowercased(_ byte: UInt8) -> UInt8 { byte >= 0x41 && byte <= 0x5A ? byte | 0x20 : byte }

    /// What `Host` may hold (RFC 3986 host and port): reg-name's unreserved,
    /// percent-encoded and sub-delims bytes, `:` and the brackets of an IP literal.
    private static func isHostByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        case UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), UInt8(ascii: "~"), UInt8(ascii: "%"), UInt8(ascii: "!"),
             UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "'"), UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "*"),
             UInt8(ascii: "+"), UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: "="), UInt8(ascii: ":"), UInt8(ascii: "["),
             UInt8(ascii: "]"): return true
        default: return false
        }
    }

    /// RFC 9110 tchar: letters, digits and ``!#$%&'*+-.^_`|~``.
    private static func isTokenByte(_ byte: UInt8) -> Bool {
        switch byte {
        case 0x30...0x39, 0x41...0x5A, 0x61...0x7A: return true
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
             UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"),
             UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"): return true
        default: return false
        }
    }
}

extension UInt8 {
    fileprivate static let lf = UInt8(ascii: "\n")
    fileprivate static let cr = UInt8(ascii: "\r")
    fileprivate static let space = UInt8(ascii: " ")
    fileprivate static let tab = UInt8(ascii: "\t")
    fileprivate static let colon = UInt8(ascii: ":")
    fileprivate static let comma = UInt8(ascii: ",")
    fileprivate static let semicolon = UInt8(ascii: ";")
    fileprivate static let dot = UInt8(ascii: ".")
    fileprivate static let questionMark = UInt8(ascii: "?")
}
