import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress display on stderr, redrawn in place at most twice a
/// second, and only when stderr is a terminal: under systemd, cron or a pipe
/// the programs stay quiet and line-oriented.
public final class TerminalProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var lastDraw: UInt64 = 0
    private var drawn = false

    /// nil when stderr is not a terminal.
    public init?() {
        guard isatty(2) == 1 else { return nil }
    }

    /// Redraws the line if half a second has passed since the last time.
    public func update(_ text: @autoclosure () -> String) {
        let now = DispatchTime.now().uptimeNanoseconds
        lock.lock()
        defer { lock.unlock() }
        guard now - lastDraw >= 500_000_000 else { return }
        lastDraw = now
        write("\r\u{1B}[K" + text())
        drawn = true
    }

    /// Clears the line, so the next log line starts clean.
    public func finish() {
        lock.lock()
        defer { lock.unlock() }
        if drawn { write("\r\u{1B}[K") }
        drawn = false
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
