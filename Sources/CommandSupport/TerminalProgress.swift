import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A one-line progress display on stderr, redrawn in place at most twice a
/// second, and only when stderr is a terminal: under systemd, cron or a pipe
/// the programs stay quiet and line-oriented.
public final class TerminalProgress: Sendable {
    /// When the line was last drawn, and whether one is on the screen.
    private let line = Mutex((lastDraw: UInt64(0), drawn: false))

    /// nil when stderr is not a terminal.
    public init?() {
        guard isatty(2) == 1 else { return nil }
    }

    /// Redraws the line if half a second has passed since the last time.
    public func update(_ text: @autoclosure () -> String) {
        let now = DispatchTime.now().uptimeNanoseconds
        line.withLock { line in
            guard now - line.lastDraw >= 500_000_000 else { return }
            line.lastDraw = now
            write("\r\u{1B}[K" + text())
            line.drawn = true
        }
    }

    /// Clears the line, so the next log line starts clean.
    public func finish() {
        line.withLock { line in
            if line.drawn { write("\r\u{1B}[K") }
            line.drawn = false
        }
    }

    private func write(_ text: String) {
        var bytes = Array(text.utf8)
        _ = bytes.withUnsafeMutableBytes { Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
