import FileIO
import Foundation
import Synchronization
import WebhookModel
#if canImport(Glibc)
import Glibc
#endif

/// Writes `{"line": N, "reason": "...", "input": "..."}` records to stdout, one
/// per rejected input (`"seq"` instead of `"line"` for a JetStream message:
/// its sequence number in the stream), and one per stored event a later one
/// made the rules refuse (`"refusedLater": true`; `line` is the later one's). The input is always written as a valid JSON string
/// (invalid UTF-8 becomes U+FFFD, control characters are escaped). Both the
/// reading thread (lines that do not decode) and the committing thread
/// (events the rules refuse) report here, so it is locked.
public final class RejectWriter: Sendable {
    private struct Output {
        var buffer: [UInt8] = []
        /// Set once stdout failed: rejects are then dropped, the applier goes on.
        var broken = false
    }

    private let fd: Int32
    /// `{"line":` or `{"seq":`.
    private let opening: [UInt8]
    private let output = Mutex(Output())

    /// `positionName`: what an input's number is (`line`, or `seq` in a stream).
    public init(fd: Int32 = 1, positionName: String = "line") {
        self.fd = fd
        self.opening = Array("{\"\(positionName)\":".utf8)
    }

    /// `refusedLater`: `input` is an event stored earlier (and accepted then)
    /// that the event at `line` made the rules refuse.
    public func reject(line: Int, reason: String, input: some Collection<UInt8>, truncated: Bool = false, refusedLater: Bool = false) {
        var record = opening
        record.append(contentsOf: String(line).utf8)
        record.append(contentsOf: ",\"reason\":".utf8)
        JSONWriter.appendQuoted(reason, to: &record)
        record.append(contentsOf: ",\"input\":".utf8)
        JSONWriter.appendQuoted(String(decoding: input, as: UTF8.self), to: &record)
        if truncated { record.append(contentsOf: ",\"inputTruncated\":true".utf8) }
        if refusedLater { record.append(contentsOf: ",\"refusedLater\":true".utf8) }
        record.append(contentsOf: "}\n".utf8)
        output.withLock { output in
            output.buffer.append(contentsOf: record)
            if output.buffer.count > 1 << 16 { write(&output) }
        }
    }

    /// Writes what is buffered. A closed stdout does not stop the applier:
    /// rejects are diagnostics, the database is the product.
    public func flush() {
        output.withLock { write(&$0) }
    }

    private func write(_ output: inout Output) {
        guard !output.buffer.isEmpty else { return }
        defer { output.buffer.removeAll(keepingCapacity: true) }
        guard !output.broken else { return }
        if output.buffer.withUnsafeBytes({ writeFully(fd, $0) }) != 0 { output.broken = true }
    }
}
