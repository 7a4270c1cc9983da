#if canImport(Glibc)
import Glibc
#endif

/// Splits a file descriptor (stdin) into numbered lines without ever holding
/// more than one line: a line longer than `maxLineBytes` is reported as
/// `.tooLong` with its first bytes, and the rest of it is skipped. `\r\n` and
/// `\n` both end a line; a last line without a newline still counts.
public final class LineReader: ApplierInput {
    public typealias Item = InputItem

    /// Why reading failed (not EOF, not a signal).
    public struct ReadError: Error, CustomStringConvertible {
        public var errno: Int32
        public var description: String { "reading stdin failed: \(String(cString: strerror(errno)))" }
    }

    public let maxLineBytes: Int
    private let fd: Int32
    private var buffer: [UInt8]
    private var start = 0
    private var end = 0
    private var lineNumber = 0
    private var eof = false
    private var skippingLongLine = false
    private var longPrefix: [UInt8] = []

    public init(fd: Int32 = 0, maxLineBytes: Int = 4 * 1_048_576, bufferSize: Int = 1 << 20) {
        self.fd = fd
        self.maxLineBytes = maxLineBytes
        self.buffer = [UInt8](repeating: 0, count: max(bufferSize, 4096))
    }

    /// The next line, waiting at most `timeoutMilliseconds` (-1: forever).
    public func next(timeoutMilliseconds: Int32 = -1) throws -> InputItem {
        while true {
            if let item = takeLine() { return item }
            if eof {
                if start < end || skippingLongLine {
                    // The last line had no newline.
                    lineNumber += 1
                    let rest = Array(buffer[start..<end])
                    start = end
                    if skippingLongLine {
                        skippingLongLine = false
                        return .tooLong(number: lineNumber, prefix: longPrefix)
                    }
                    return .line(number: lineNumber, bytes: Self.trimCR(rest))
                }
                return .endOfFile
            }
            // Make room: move the partial line to the front, or drop it if it is too long.
            if start > 0 {
                buffer.withUnsafeMutableBufferPointer { b in
                    _ = memmove(b.baseAddress!, b.baseAddress! + start, end - start)
                }
                end -= start
                start = 0
            }
            if end == buffer.count {
                if buffer.count < maxLineBytes + 2 {
                    buffer.append(contentsOf: repeatElement(0, count: min(buffer.count, maxLineBytes + 2 - buffer.count)))
                } else {
                    if !skippingLongLine {
                        skippingLongLine = true
                        longPrefix = Array(buffer[0..<min(1024, end)])
                    }
                    start = 0
                    end = 0
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
            let n = buffer.withUnsafeMutableBufferPointer { b in read(fd, b.baseAddress! + end, b.count - end) }
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
        let newline = buffer.withUnsafeBufferPointer { b -> Int? in
            guard let p = memchr(b.baseAddress! + start, 0x0A, end - start) else { return nil }
            return UnsafeRawPointer(p) - UnsafeRawPointer(b.baseAddress!)
        }
        guard let newline else { return nil }
        lineNumber += 1
        defer { start = newline + 1 }
        if skippingLongLine {
            skippingLongLine = false
            return .tooLong(number: lineNumber, prefix: longPrefix)
        }
        if newline - start > maxLineBytes {
            return .tooLong(number: lineNumber, prefix: Array(buffer[start..<min(end, start + 1024)]))
        }
        return .line(number: lineNumber, bytes: Self.trimCR(Array(buffer[start..<newline])))
    }

    static func trimCR(_ bytes: [UInt8]) -> [UInt8] {
        bytes.last == 0x0D ? Array(bytes.dropLast()) : bytes
    }
}
