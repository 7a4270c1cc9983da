import FileIO
import Foundation
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// Writes `{"line": N, "reason": "...", "input": "..."}` records to stdout, one
/// per rejected input (`"seq"` instead of `"line"` for a JetStream message:
/// its sequence number in the stream). The input is always written as a valid JSON string
/// (invalid UTF-8 becomes U+FFFD, control characters are escaped). Both the
/// reading thread (lines that do not decode) and the committing thread
/// (events the rules refuse) report here, so it is locked.
public final class RejectWriter: @unchecked Sendable {
    private let lock = NSLock()
    private let fd: Int32
    /// `{"line":` or `{"seq":`.
    private let opening: [UInt8]
    private var buffer: [UInt8] = []
    private var broken = false

    /// `positionName`: what an input's number is (`line`, or `seq` in a stream).
    public init(fd: Int32 = 1, positionName: String = "line") {
        self.fd = fd
        self.opening = Array("{\"\(positionName)\":".utf8)
    }

    public func reject(line: Int, reason: String, input: [UInt8], truncated: Bool = false) {
        lock.lock()
        defer { lock.unlock() }
        buffer.append(contentsOf: opening)
        buffer.append(contentsOf: String(line).utf8)
        buffer.append(contentsOf: ",\"reason\":".utf8)
        JSONWriter.appendQuoted(reason, to: &buffer)
        buffer.append(contentsOf: ",\"input\":".utf8)
        JSONWriter.appendQuoted(String(decoding: input, as: UTF8.self), to: &buffer)
        if truncated { buffer.append(contentsOf: ",\"inputTruncated\":true".utf8) }
        buffer.append(contentsOf: "}\n".utf8)
        if buffer.count > 1 << 16 { flushLocked() }
    }

    /// Writes what is buffered. A closed stdout does not stop the applier:
    /// rejects are diagnostics, the database is the product.
    public func flush() {
        lock.lock()
        defer { lock.unlock() }
        flushLocked()
    }

    private func flushLocked() {
        guard !buffer.isEmpty else { return }
        defer { buffer.removeAll(keepingCapacity: true) }
        guard !broken else { return }
        if buffer.withUnsafeBytes({ writeFully(fd, $0) }) != 0 { broken = true }
    }
}
