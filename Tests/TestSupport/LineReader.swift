import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Reads a child's stdout on a thread of its own, splitting it into lines, so
/// the child never blocks on a full pipe unless the test wants it to.
public final class LineCollector: @unchecked Sendable {
    private let fd: Int32
    private let lock = NSCondition()
    private var lines: [String] = []
    private var partial: [UInt8] = []
    private var finished = false

    /// Starts reading `fd` at once (the caller keeps ownership of the descriptor).
    public init(fd: Int32) {
        self.fd = fd
        let thread = Thread { [self] in self.readLoop() }
        thread.start()
    }

    private func readLoop() {
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            lock.lock()
            if n <= 0 {
                finished = true
                lock.broadcast()
                lock.unlock()
                return
            }
            for byte in buffer[0..<n] {
                if byte == UInt8(ascii: "\n") {
                    lines.append(String(decoding: partial, as: UTF8.self))
                    partial.removeAll(keepingCapacity: true)
                } else {
                    partial.append(byte)
                }
            }
            lock.broadcast()
            lock.unlock()
        }
    }

    public var snapshot: [String] {
        lock.lock()
        defer { lock.unlock() }
        return lines
    }

    /// Bytes after the last newline (a split line, which must never happen).
    public var trailingPartialLine: [UInt8] {
        lock.lock()
        defer { lock.unlock() }
        return partial
    }

    /// Waits for end of file; returns every line.
    public func waitForEOF(timeout: Double = 120) throws -> [String] {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while !finished {
            if !lock.wait(until: deadline) { throw TestFailure("stdout did not reach EOF within \(timeout)s") }
        }
        return lines
    }

    /// Waits until at least `count` lines have arrived.
    public func waitForLines(_ count: Int, timeout: Double = 60) throws -> [String] {
        let deadline = Date().addingTimeInterval(timeout)
        lock.lock()
        defer { lock.unlock() }
        while lines.count < count {
            if finished || !lock.wait(until: deadline) {
                throw TestFailure("expected \(count) lines, got \(lines.count)")
            }
        }
        return lines
    }
}

/// Runs `body(i)` on `count` real threads (not the cooperative pool, which has
/// one thread per core) and waits for all of them.
public func onThreads(_ count: Int, _ body: @escaping @Sendable (Int) -> Void) {
    let group = DispatchGroup()
    for i in 0..<count {
        group.enter()
        let thread = Thread {
            body(i)
            group.leave()
        }
        thread.stackSize = 1 << 20
        thread.start()
    }
    group.wait()
}

/// A thread-safe list, for results gathered from `onThreads`.
public final class Collected<T>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [T] = []
    public init() {}
    public func append(_ item: T) { lock.lock(); items.append(item); lock.unlock() }
    public var all: [T] { lock.lock(); defer { lock.unlock() }; return items }
}

/// A value shared between a test and its threads (a stop flag, most often).
public final class Shared<Value>: @unchecked Sendable {
    private let lock = NSLock()
    private var stored: Value
    public init(_ value: Value) { stored = value }
    public var value: Value {
        get { lock.lock(); defer { lock.unlock() }; return stored }
        set { lock.lock(); stored = newValue; lock.unlock() }
    }
}

/// Polls `condition` every 50 ms; throws, naming `what`, if it is not met within `timeout` seconds.
public func waitUntil(_ what: String, timeout: Double = 60, _ condition: () -> Bool) throws {
    let deadline = Date().addingTimeInterval(timeout)
    while !condition() {
        if Date() > deadline { throw TestFailure("not within \(timeout)s: \(what)") }
        usleep(50_000)
    }
}
