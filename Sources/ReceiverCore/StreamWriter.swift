import Foundation
import Logging
import FileIO
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The single owner of the receiver's output: a bounded queue in front of one
/// writer thread. Each accepted line is appended (and fsynced) to the archive
/// when there is one, then written whole to stdout, and only then is its
/// request told `.written` and answered 202. One thread writes, so lines are
/// never split or interleaved; the fsync is shared by every line that was
/// queued while the previous batch was being written (group commit).
///
/// Run it as a `Service`: on graceful shutdown it drains the queue and
/// returns; when stdout is closed it fails everything waiting and throws
/// `StreamWriter.Failure.outputClosed`.
public final class StreamWriter: Service, @unchecked Sendable {
    /// What became of a submitted line.
    public enum Outcome: Sendable, Equatable {
        /// Written whole to stdout (and archived): the request may be answered 202.
        case written
        /// The queue is full: the reader is not keeping up. Answer 503 + Retry-After.
        case overloaded
        /// Not written, and the writer will not take lines now (shutting down,
        /// output closed, archive failing). Answer 503.
        case unavailable(String)
    }

    /// Why the writer stopped for good.
    public enum Failure: Error, CustomStringConvertible {
        case outputClosed(errno: Int32)
        case outputFailed(errno: Int32)

        public var description: String {
            switch self {
            case .outputClosed: return "stdout was closed by its reader (EPIPE): nothing downstream reads the stream"
            case .outputFailed(let e): return "writing to stdout failed: \(String(cString: strerror(e)))"
            }
        }
    }

    private struct Entry {
        var line: [UInt8]
        /// When it was queued (monotonic nanoseconds).
        var queuedAt: UInt64 = DispatchTime.now().uptimeNanoseconds
        var continuation: UnsafeContinuation<Outcome, Never>
    }

    private let outputFD: Int32
    private let archive: ArchiveFile?
    private let capacity: Int
    private let maxQueuedBytes: Int
    private let metrics: ReceiverMetrics?
    private let logger: Logger

    private let condition = NSCondition()
    private var queue: [Entry] = []
    private var queuedBytes = 0
    private var inFlight = 0
    private var closedReason: String?
    private var stopRequested = false
    private var failure: Failure?
    private var threadExited = false
    private var exitWaiters: [CheckedContinuation<Void, Never>] = []
    private var started = false

    /// - Parameters:
    ///   - outputFD: where the stream goes (stdout, 1, in production).
    ///   - archive: a durable copy written before the output, or nil.
    private let queueTimeoutNanoseconds: UInt64

    /// - Parameter queueTimeout: a line still queued (not yet being written)
    ///   this long after it arrived is taken back and refused with 503, so a
    ///   stalled reader never holds a sender for longer than that.
    public init(
        outputFD: Int32 = 1, archive: ArchiveFile?, capacity: Int, maxQueuedBytes: Int, queueTimeout: Duration = .seconds(10),
        metrics: ReceiverMetrics? = nil, logger: Logger
    ) {
        self.queueTimeoutNanoseconds = UInt64(queueTimeout.components.seconds) * 1_000_000_000 + UInt64(queueTimeout.components.attoseconds / 1_000_000_000)
        self.outputFD = outputFD
        self.archive = archive
        self.capacity = max(1, capacity)
        self.maxQueuedBytes = max(1, maxQueuedBytes)
        self.metrics = metrics
        self.logger = logger
    }

    /// Lines queued or being written right now.
    public var depth: Int { queueDepth() }

    private func queueDepth() -> Int {
        condition.lock()
        defer { condition.unlock() }
        return queue.count + inFlight
    }

    /// Queues one complete line (ending in `\n`) and waits until it is written
    /// or refused. Never blocks on a full queue: that is `.overloaded` at once.
    public func submit(_ line: [UInt8]) async -> Outcome {
        await withUnsafeContinuation { (continuation: UnsafeContinuation<Outcome, Never>) in
            condition.lock()
            if let closedReason {
                condition.unlock()
                continuation.resume(returning: .unavailable(closedReason))
                return
            }
            if queue.count >= capacity || (queuedBytes + line.count > maxQueuedBytes && !queue.isEmpty) {
                condition.unlock()
                continuation.resume(returning: .overloaded)
                return
            }
            queue.append(Entry(line: line, continuation: continuation))
            queuedBytes += line.count
            condition.signal()
            condition.unlock()
        }
    }

    /// Starts the writer thread; `run()` does this too.
    public func start() {
        condition.lock()
        defer { condition.unlock() }
        guard !started else { return }
        started = true
        // A pipe or socket is written without blocking, so that while its reader
        // stalls the writer can still refuse lines that waited too long. (Not a
        // terminal or file: their descriptions may be shared with the shell.)
        var info = stat()
        if fstat(outputFD, &info) == 0 && (info.st_mode & S_IFMT == S_IFIFO || info.st_mode & S_IFMT == S_IFSOCK) {
            _ = fcntl(outputFD, F_SETFL, fcntl(outputFD, F_GETFL) | O_NONBLOCK)
        }
        let thread = Thread { [self] in self.writeLoop() }
        thread.name = "stream-writer"
        thread.start()
    }

    /// Stops taking new lines, writes what is queued, and lets the thread exit.
    public func stop() {
        condition.lock()
        if closedReason == nil { closedReason = "the receiver is shutting down" }
        stopRequested = true
        condition.signal()
        condition.unlock()
    }

    /// Waits for the writer thread to exit; throws if it stopped because the output failed.
    public func waitUntilStopped() async throws {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if threadExited || !started {
                condition.unlock()
                continuation.resume()
                return
            }
            exitWaiters.append(continuation)
            condition.unlock()
        }
        if let failure = currentFailure() { throw failure }
    }

    private func currentFailure() -> Failure? {
        condition.lock()
        defer { condition.unlock() }
        return failure
    }

    public func run() async throws {
        start()
        try await withGracefulShutdownHandler {
            try await withTaskCancellationHandler {
                try await self.waitUntilStopped()
            } onCancel: {
                self.stop()
            }
        } onGracefulShutdown: {
            self.stop()
        }
    }

    // MARK: - The writer thread

    private func writeLoop() {
        var buffer: [UInt8] = []
        while true {
            condition.lock()
            while queue.isEmpty && !stopRequested {
                // Idle: look at the output once a second, so a reader that went
                // away is noticed (and the receiver exits for a restart) even
                // when no webhook arrives to find out by writing.
                if !condition.wait(until: Date().addingTimeInterval(1)) && queue.isEmpty && !stopRequested && outputHungUp() {
                    failure = .outputClosed(errno: EPIPE)
                    closedReason = "the output stream is closed"
                    stopRequested = true
                    logger.critical("stream output failed; refusing all further webhooks", metadata: ["error": "\(failure!)"])
                }
            }
            if queue.isEmpty {
                threadExited = true
                let waiters = exitWaiters
                exitWaiters = []
                condition.unlock()
                waiters.forEach { $0.resume() }
                return
            }
            let batch = queue
            queue = []
            queuedBytes = 0
            inFlight = batch.count
            condition.unlock()

            buffer.removeAll(keepingCapacity: true)
            for entry in batch { buffer.append(contentsOf: entry.line) }
            if buffer.capacity > 4 * maxQueuedBytes { buffer = [] }

            if let archive {
                do {
                    let started = DispatchTime.now()
                    try archive.append(buffer)
                    metrics?.archiveDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds))
                } catch {
                    logger.error("archive write failed; answering 503 until it recovers", metadata: ["error": "\(error)", "lines": "\(batch.count)"])
                    finish(batch, with: .unavailable("the archive cannot be written"))
                    continue
                }
            }
            let started = DispatchTime.now()
            let result = buffer.withUnsafeBytes { writeFully(outputFD, $0, whileBlocked: expireStaleEntries) }
            if result == 0 {
                if let metrics {
                    metrics.writeDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds))
                    metrics.bytesWritten.increment(by: buffer.count)
                    metrics.linesWritten.increment(by: batch.count)
                }
                finish(batch, with: .written)
                continue
            }
            let failure: Failure = result == EPIPE ? .outputClosed(errno: result) : .outputFailed(errno: result)
            logger.critical("stream output failed; refusing all further webhooks", metadata: ["error": "\(failure)"])
            condition.lock()
            self.failure = failure
            closedReason = "the output stream is closed"
            stopRequested = true
            let stranded = queue
            queue = []
            queuedBytes = 0
            condition.unlock()
            finish(batch, with: .unavailable("the output stream is closed"))
            finish(stranded, with: .unavailable("the output stream is closed"))
        }
    }

    /// While the reader is not taking data: refuses (503) every line that has
    /// waited in the queue longer than the queue timeout. Only lines not yet
    /// handed to write() are taken back, so nothing refused was written.
    private func expireStaleEntries() {
        let cutoff = DispatchTime.now().uptimeNanoseconds &- queueTimeoutNanoseconds
        condition.lock()
        guard let first = queue.first, first.queuedAt < cutoff else {
            condition.unlock()
            return
        }
        let stale = queue.filter { $0.queuedAt < cutoff }
        queue.removeAll { $0.queuedAt < cutoff }
        queuedBytes = queue.reduce(0) { $0 + $1.line.count }
        condition.unlock()
        logger.warning("the stream reader is stalled: refusing lines queued too long", metadata: ["lines": "\(stale.count)"])
        for entry in stale { entry.continuation.resume(returning: .overloaded) }
    }

    /// Whether the output is a pipe or socket whose reader has gone (POLLERR/POLLHUP on the write end).
    private func outputHungUp() -> Bool {
        var pfd = pollfd(fd: outputFD, events: Int16(POLLOUT), revents: 0)
        guard poll(&pfd, 1, 0) == 1 else { return false }
        return pfd.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0
    }

    private func finish(_ entries: [Entry], with outcome: Outcome) {
        condition.lock()
        inFlight = 0
        let depth = queue.count
        condition.unlock()
        metrics?.queueDepth.record(depth)
        for entry in entries { entry.continuation.resume(returning: outcome) }
    }
}
