#if canImport(Glibc)
import Glibc
#endif

/// Splits a file descriptor (stdin) into numbered lines without ever holding
/// more than one line: a line longer than `maxLineBytes` is reported as
/// `.tooLong` with its first bytes, and the rest of it is skipped. `\r\n` and
/// `\n` both end a line; a last line without a newline still counts.
///
/// A line is handed out where it was read (`LineBytes`: a range of the
/// reader's `LineChunk`), not copied into an array of its own. The reader
/// reads on into the chunk's free end; a full chunk is compacted in place if
/// no line holds it any more, else left to its lines and the partial line
/// copied into a new one. So a chunk is full before it is left: the lines
/// alive (a few batches') hold about their own size in chunks.
public final class LineReader: ApplierInput {
    public typealias Item = InputItem

    /// Why reading failed (not EOF, not a signal).
    public struct ReadError: Error, CustomStringConvertible {
        public var errno: Int32
        public var description: String { "reading stdin failed: \(String(cString: strerror(errno)))" }
    }

    public let maxLineBytes: Int
    private let fd: Int32
    /// Where lines are read into: `bufferSize` bytes, grown for a long line (up to `maxLineBytes`).
    private var chunk: LineChunk
    /// The unread part of the chunk: from the end of the last line cut to the end of what was read.
    private var start = 0
    private var end = 0
    private var lineNumber = 0
    private var eof = false
    private var skippingLongLine = false
    private var longPrefix: [UInt8] = []

    public init(fd: Int32 = 0, maxLineBytes: Int = 4 * 1_048_576, bufferSize: Int = 1 << 18) {
        self.fd = fd
        self.maxLineBytes = maxLineBytes
        chunk = LineChunk(capacity: max(bufferSize, 4096))
    }

    /// The next line, waiting at most `timeoutMilliseconds` (-1: forever).
    public func next(timeoutMilliseconds: Int32 = -1) throws -> InputItem {
        while true {
            if let item = takeLine() { return item }
            if eof {
                if start < end || skippingLongLine {
                    // The last line had no newline.
                    lineNumber += 1
                    let rest = LineBytes(chunk, start..<end)
                    start = end
                    if skippingLongLine {
                        skippingLongLine = false
                        return .tooLong(number: lineNumber, prefix: longPrefix)
                    }
                    return .line(number: lineNumber, bytes: Self.trimCR(rest))
                }
                return .endOfFile
            }
            // A full chunk: the partial line moves to the front of this one (when no line holds
            // it any more) or of a new one, grown for a long line; a line too long is dropped.
            if end == chunk.bytes.count {
                let partial = end - start
                if partial == chunk.bytes.count && partial >= maxLineBytes + 2 {
                    if !skippingLongLine {
                        skippingLongLine = true
                        longPrefix = Array(chunk.bytes[0..<min(1024, end)])
                    }
                    start = 0
                    end = 0
                } else {
                    let capacity = partial < chunk.bytes.count ? chunk.bytes.count : min(chunk.bytes.count * 2, maxLineBytes + 2)
                    if capacity == chunk.bytes.count && isKnownUniquelyReferenced(&chunk) {
                        _ = memmove(chunk.bytes.baseAddress!, chunk.bytes.baseAddress! + start, partial)
                    } else {
                        let fresh = LineChunk(capacity: capacity)
                        fresh.bytes.baseAddress!.update(from: chunk.bytes.baseAddress! + start, count: partial)
                        chunk = fresh
                    }
                    start = 0
                    end = partial
                }
            }
            if timeoutMilliseconds >= 0 {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ready = poll(&pfd, 1, timeoutMilliseconds)
                if ready == 0 { return .timeout }
                if ready < 0 {
                    if errno == EINTR { return .interrupted }
                    throw ReadError(errno: errno)
                }
            }
            let n = read(fd, chunk.bytes.baseAddress! + end, chunk.bytes.count - end)
            if n > 0 {
                end += n
            } else if n == 0 {
                eof = true
            } else if errno == EINTR {
                return .interrupted
            } else if errno == EAGAIN {
                continue
            } else {
                throw ReadError(errno: errno)
            }
        }
    }

    /// The next complete line already read from the descriptor, without
    /// reading more: after a stop request, what was read is still applied.
    public func nextBuffered() -> Item? {
        takeLine()
    }

    private func takeLine() -> Item? {
        guard start < end else { return nil }
        let base = chunk.bytes.baseAddress!
        let newline: Int? = memchr(base + start, 0x0A, end - start).map { UnsafeRawPointer($0) - UnsafeRawPointer(base) }
        guard let newline else { return nil }
        lineNumber += 1
        defer { start = newline + 1 }
        if skippingLongLine {
            skippingLongLine = false
            return .tooLong(number: lineNumber, prefix: longPrefix)
        }
        if newline - start > maxLineBytes {
            return .tooLong(number: lineNumber, prefix: Array(chunk.bytes[start..<min(end, start + 1024)]))
        }
        return .line(number: lineNumber, bytes: Self.trimCR(LineBytes(chunk, start..<newline)))
    }

    static func trimCR(_ bytes: LineBytes) -> LineBytes {
        bytes.last == 0x0D ? LineBytes(bytes.chunk, bytes.startIndex..<bytes.endIndex - 1) : bytes
    }
}
