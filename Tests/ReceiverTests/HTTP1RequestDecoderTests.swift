import NIOCore
import Testing
import TestSupport
@testable import ReceiverCore

/// The HTTP/1.1 request decoder on plain buffers: framing, keep-alive, the
/// headers the receiver reads, every refusal with its status, and that how
/// the bytes are split across reads never changes what is decoded.
@Suite struct HTTP1RequestDecoderTests {
    /// What a connection's bytes decode to: the parts (bodies joined), and the refusal that ended them, if any.
    struct Decoded: Equatable {
        var heads: [HTTP1RequestHead] = []
        var bodies: [[UInt8]] = []
        var ends = 0
        var error: HTTP1ParseError?
    }

    /// Decodes `bytes` fed in pieces of the given sizes (the whole at once when empty).
    func decode(_ bytes: [UInt8], pieces: [Int] = []) -> Decoded {
        var decoder = HTTP1RequestDecoder()
        var buffer = ByteBuffer()
        var decoded = Decoded()
        var offset = 0
        var sizes = pieces.isEmpty ? [bytes.count] : pieces
        while offset < bytes.count || !sizes.isEmpty {
            let size = sizes.isEmpty ? bytes.count - offset : min(sizes.removeFirst(), bytes.count - offset)
            buffer.writeBytes(bytes[offset..<(offset + size)])
            offset += size
            do {
                while let part = try decoder.next(from: &buffer) {
                    switch part {
                    case .head(let head):
                        decoded.heads.append(head)
                        decoded.bodies.append([])
                    case .body(let chunk):
                        decoded.bodies[decoded.bodies.count - 1] += Array(chunk.readableBytesView)
                    case .end:
                        decoded.ends += 1
                    }
                }
            } catch {
                decoded.error = error
                return decoded
            }
            if offset >= bytes.count && sizes.isEmpty { break }
        }
        return decoded
    }

    func decode(_ text: String, pieces: [Int] = []) -> Decoded { decode(Array(text.utf8), pieces: pieces) }

    func status(_ text: String) -> Int? { decode(text).error.map { Int($0.status.code) } }

    let post = "POST /webhook HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}"

    @Test func aPostWithItsBodyAndEnd() {
        let decoded = decode(post)
        #expect(decoded.error == nil)
        #expect(decoded.heads.count == 1 && decoded.ends == 1)
        let head = decoded.heads[0]
        #expect(head.method == .post && head.path == "/webhook" && head.version == .http11 && head.keepAlive)
        #expect(head.framing == .length(7) && head.contentType == "application/json")
        #expect(decoded.bodies == [Array("{\"a\":1}".utf8)])
    }

    @Test func byteByByteDecodesTheSame() {
        let whole = decode(post + post)
        #expect(whole.heads.count == 2 && whole.ends == 2)
        #expect(decode(post + post, pieces: Array(repeating: 1, count: 400)) == whole)
    }

    @Test func aRequestWithoutABodyEndsAtItsHead() {
        let decoded = decode("GET /healthz?probe=1 HTTP/1.1\r\nHost: x\r\n\r\n")
        #expect(decoded.heads.map(\.path) == ["/healthz"])
        #expect(decoded.heads[0].method == .get && decoded.heads[0].framing == .length(0))
        #expect(decoded.ends == 1)
    }

    @Test func keepAliveFollowsTheVersionAndTheConnectionHeader() {
        #expect(decode("GET / HTTP/1.1\r\nHost: x\r\n\r\n").heads[0].keepAlive)
        #expect(!decode("GET / HTTP/1.1\r\nHost: x\r\nConnection: Close\r\n\r\n").heads[0].keepAlive)
        #expect(!decode("GET / HTTP/1.0\r\n\r\n").heads[0].keepAlive)
        #expect(decode("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").heads[0].keepAlive)
        #expect(!decode("GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade, close\r\n\r\n").heads[0].keepAlive)
        #expect(decode("HEAD / HTTP/1.0\r\n\r\n").heads[0].version == .http10)
    }

    @Test func readsTheWebhookHeadersWhateverTheirCase() {
        let head = decode("POST /webhook HTTP/1.1\r\nHost: x\r\nWEBHOOK-ID: msg_1\r\nwebhook-timestamp:  1700000000 \r\nWebhook-Signature: v1,abc\r\n"
                          + "content-type: application/json\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n").heads[0]
        #expect(head.webhookId == "msg_1" && head.webhookTimestamp == "1700000000" && head.webhookSignature == "v1,abc")
        #expect(head.contentType == "application/json" && head.expectsContinue)
        let repeated = decode("POST / HTTP/1.1\r\nHost: x\r\nwebhook-id: first\r\nwebhook-id: second\r\n\r\n").heads[0]
        #expect(repeated.webhookId == "first", "the first of a repeated header counts")
    }

    @Test func chunkedBodiesWithExtensionsAndTrailers() {
        let request = "POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
            + "4;name=value\r\n{\"a\"\r\n3\r\n:1}\r\n0\r\nX-Trailer: yes\r\n\r\n" + "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
        let whole = decode(request)
        #expect(whole.error == nil)
        #expect(whole.heads.map(\.path) == ["/webhook", "/healthz"] && whole.ends == 2)
        #expect(whole.heads[0].framing == .chunked)
        #expect(whole.bodies[0] == Array("{\"a\":1}".utf8))
        for size in [1, 2, 3, 5, 7, 11] {
            #expect(decode(request, pieces: Array(repeating: size, count: request.utf8.count)) == whole, "pieces of \(size)")
        }
    }

    /// RFC 9112 §3.2: "A server MUST respond with a 400 … to any HTTP/1.1
    /// request message that lacks a Host header field and to any request
    /// message that contains more than one Host header field line or a Host
    /// header field with an invalid field value."
    @Test func hostIsRequiredOnceAndMustBeAHost() {
        #expect(status("POST /webhook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}") == 400, "HTTP/1.1 without Host")
        #expect(decode("POST /webhook HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}").error?.reason == "an HTTP/1.1 request without Host")
        #expect(status("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n") == 400, "two Host lines, even equal")
        #expect(status("GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n") == 400, "two Host lines in HTTP/1.0 too")
        #expect(status("GET / HTTP/1.1\r\nHost: a b\r\n\r\n") == 400, "a space inside")
        #expect(status("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n") == 400, "a path")
        #expect(status("GET / HTTP/1.1\r\nHost: user@a\r\n\r\n") == 400, "user info")
        for valid in ["example.com", "127.0.0.1:8000", "[::1]:8000", "xn--bcher-kva.example", "", "a%20b"] {
            #expect(decode("GET / HTTP/1.1\r\nHost: \(valid)\r\n\r\n").error == nil, "Host: \(valid)")
        }
        #expect(decode("GET / HTTP/1.0\r\n\r\n").error == nil, "HTTP/1.0 needs no Host")
    }

    @Test func bareLineFeedsAndEmptyLinesBeforeARequestAreAccepted() {
        let decoded = decode("\r\n\nPOST /webhook HTTP/1.1\nHost: x\nContent-Length: 2\n\n{}")
        #expect(decoded.error == nil)
        #expect(decoded.bodies == [Array("{}".utf8)])
    }

    @Test func headerValuesMayHoldObsText() {
        let decoded = decode(Array("GET / HTTP/1.1\r\nHost: x\r\nX-Odd: ".utf8) + [0xE9, 0xFF] + Array("\r\n\r\n".utf8))
        #expect(decoded.error == nil && decoded.ends == 1)
    }

    @Test func framingThatCouldBeReadTwoWaysIsRefused() {
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2, 3\r\n\r\n") == 400)
        #expect(decode("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}").error == nil, "the same length twice is one length")
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +2\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Length : 2\r\n\r\n{}") == 400, "whitespace before the colon")
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n folded\r\n\r\n") == 400, "obsolete line folding")
        #expect(status("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n") == 501)
    }

    @Test func aBodyWithTwoMediaTypesIsRefused() {
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\n{}") == 400)
        #expect(status("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\ncontent-type: application/json\r\nContent-Length: 2\r\n\r\n{}") == 400,
                "even the same one twice: RFC 9110 allows one")
        #expect(decode("POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}").heads.first?.contentType == "application/json")
    }

    @Test func malformedRequestsAreRefusedWithTheirStatus() {
        #expect(status("GET /\r\n\r\n") == 400)
        #expect(status("GET  / HTTP/1.1\r\nHost: x\r\n\r\n") == 400, "two spaces")
        #expect(status("G(T / HTTP/1.1\r\nHost: x\r\n\r\n") == 400, "a method that is not a token")
        #expect(status("GET / HTTP/2.0\r\n\r\n") == 505)
        #expect(status("GET / HTTQ/1.1\r\n\r\n") == 400)
        #expect(status("GET /a\u{7F}b HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\u{0}b\r\n\r\n") == 400, "NUL in a value")
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n") == 400, "a bare CR in a value")
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nno colon\r\n\r\n") == 400)
        #expect(status("\rGET / HTTP/1.1\r\nHost: x\r\n\r\n") == 400)
        #expect(decode([0xFF, 0xFE, 0x00, 0x13, 0x37] + Array(" / HTTP/1.1\r\nHost: x\r\n\r\n".utf8)).error?.status.code == 400)
    }

    @Test func limitsOnTheHead() {
        #expect(status("GET /" + String(repeating: "a", count: HTTP1RequestDecoder.maxTargetBytes) + " HTTP/1.1\r\nHost: x\r\n\r\n") == 414)
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\n" + String(repeating: "X-A: 1\r\n", count: HTTP1RequestDecoder.maxHeaderCount + 1) + "\r\n") == 431)
        #expect(status("GET / HTTP/1.1\r\nHost: x\r\nX-Huge: " + String(repeating: "a", count: HTTP1RequestDecoder.maxHeadBytes) + "\r\n\r\n") == 431)
        // A head that never ends is refused once it passes the limit, not buffered on.
        var decoder = HTTP1RequestDecoder()
        var buffer = ByteBuffer(string: "GET / HTTP/1.1\r\nHost: x\r\nX-Huge: ")
        #expect((try? decoder.next(from: &buffer)) == .some(nil))
        buffer.writeString(String(repeating: "a", count: HTTP1RequestDecoder.maxHeadBytes))
        #expect(throws: HTTP1ParseError.headTooLarge(HTTP1RequestDecoder.maxHeadBytes)) { try decoder.next(from: &buffer) }
    }

    @Test func malformedChunksAreRefused() {
        let head = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
        #expect(status(head + "g\r\n") == 400)
        #expect(status(head + "1x\r\n") == 400)
        #expect(status(head + "2\r\nabc\r\n") == 400, "longer than its size")
        #expect(status(head + "1000000000000000\r\n") == 400, "a size past 15 hex digits")
        #expect(status(head + String(repeating: "1", count: 5000)) == 400, "a size line that never ends")
    }

    /// Seeded fuzzing: mutated requests never crash or hang the decoder, and
    /// however the bytes are split, they decode to the same parts or the same refusal.
    @Test func mutatedRequestsDecodeTheSameHoweverTheyAreSplit() {
        let seeds = [
            post,
            "POST /webhook HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nwebhook-id: m\r\n\r\n3;x=y\r\nabc\r\n0\r\nT: 1\r\n\r\n",
            "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n\r\nHEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
        ].map { Array($0.utf8) }
        let tokens = ["\r\n", "\n", "\r", ":", " ", "\t", ",", ";", "0", "f", "chunked", "Content-Length: 3\r\n",
                      "Transfer-Encoding: chunked\r\n", "HTTP/1.1", "\r\n\r\n", "\u{0}"].map { Array($0.utf8) }
        var g = SeededGenerator(seed: 11)
        var completed = 0
        for _ in 0..<3_000 {
            var bytes = seeds[Int(g.next() % UInt64(seeds.count))]
            for _ in 0..<(1 + Int(g.next() % 3)) {
                let at = Int(g.next() % UInt64(bytes.count + 1))
                switch g.next() % 4 {
                case 0 where at < bytes.count: bytes[at] = UInt8(truncatingIfNeeded: g.next())
                case 1: bytes.insert(contentsOf: tokens[Int(g.next() % UInt64(tokens.count))], at: at)
                case 2 where at < bytes.count: bytes.remove(at: at)
                default: bytes.insert(UInt8(truncatingIfNeeded: g.next() % 128), at: at)
                }
            }
            let whole = decode(bytes)
            if whole.error == nil && whole.ends > 0 { completed += 1 }
            let pieces = (0..<bytes.count).map { _ in 1 + Int(g.next() % 9) }
            #expect(decode(bytes, pieces: pieces) == whole, "\(String(decoding: bytes, as: UTF8.self).debugDescription)")
        }
        #expect(completed > 100, "some mutations stay valid requests")
    }
}
