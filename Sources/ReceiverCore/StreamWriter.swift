import Foundation
import FileIO
import Logging
import NIOCore
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The single owner of the receiver's output: a bounded queue in front of one
/// writer thread. Each accepted line is appended (and fsynced) to the archive
/// when there is one, then written whole to stdout, and only then is its
/// request told `.written` and answered 202. One thread writes, so lines are
/// never split or interleaved; the fsync is shared by every line that was
/// queued while the previous batch was being written (group commit), and
/// each line is answered the moment its last byte is taken.
///
/// Its whole state is one `WriterState` value under one lock; this class
/// does the I/O the state's transitions ask for. A reader that takes nothing
/// for `stallTimeout` makes the writer *stalled*: new webhooks are refused at
/// once and `/healthz` says so, and no sender waits longer than
/// `queueTimeout` for an answer.
///
/// Run it as a `Service`: once the receiver's lifecycle closes (the HTTP
/// server has answered everything) it drains the queue and returns; when
/// stdout is closed it fails everything waiting and throws
/// `StreamWriter.Failure.outputClosed`.
public final class StreamWriter: LineSink, Service, @unchecked Sendable {
    /// Who waits for a line: a callback to run on its event loop (no task per request).
    struct Ticket {
        let loop: any EventLoop
        let completion: @Sendable (LineOutcome) -> Void
    }

    /// Why the writer stopped for good.
    public typealias Failure = WriterFailure

    private let outputFD: Int32
    /// False: there is no stream, only the archive (JetStream mode with an
    /// archive): a line is done once archived.
    private let hasOutput: Bool
    private let maxQueuedBytes: Int
    private let archive: ArchiveFile?
    private let metrics: ReceiverMetrics?
    private let logger: Logger
    /// The receiver's lifecycle: the writer takes no new line once it closes.
    private let lifecycle: ReceiverLifecycle

    /// Guards `state`; signalled when a line arrives or shutdown begins.
    private let condition = NSCondition()
    private typealias State = WriterState<Ticket, CheckedContinuation<Failure?, Never>>
    private var state: State
    /// The lines of one direct write, end to end (used under the lock).
    private var directBuffer: [UInt8] = []

    /// - Parameters:
    ///   - outputFD: where the stream goes (stdout, 1, in production); nil:
    ///     nowhere, the writer only archives.
    ///   - archive: a durable copy written before the output, or nil.
    ///   - stallTimeout: a reader that takes nothing this long makes the writer stalled.
    ///   - queueTimeout: no sender waits longer than this for a stalled reader:
    ///     its line is taken back (or, the one line the reader has taken part
    ///     of, finished in the stream) and refused with 503.
    public init(
        outputFD: Int32? = 1, archive: ArchiveFile?, capacity: Int, maxQueuedBytes: Int,
        stallTimeout: Duration = .seconds(1), queueTimeout: Duration = .seconds(4),
        metrics: ReceiverMetrics? = nil, lifecycle: ReceiverLifecycle, logger: Logger
    ) {
        func nanoseconds(_ d: Duration) -> UInt64 {
            UInt64(d.components.seconds) * 1_000_000_000 + UInt64(d.components.attoseconds / 1_000_000_000)
        }
        self.state = WriterState(limits: .init(
            capacity: max(1, capacity), maxQueuedBytes: max(1, maxQueuedBytes),
            stallNanoseconds: nanoseconds(stallTimeout), queueTimeoutNanoseconds: nanoseconds(queueTimeout)))
        self.outputFD = outputFD ?? -1
        self.hasOutput = outputFD != nil
        self.maxQueuedBytes = max(1, maxQueuedBytes)
        self.archive = archive
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.logger = logger
    }

    /// Whether the reader has taken nothing for a while (`/healthz` answers 503).
    public var isStalled: Bool {
        condition.lock()
        defer { condition.unlock() }
        return state.isStalled
    }

    public var mode: String { archive == nil ? "stdout" : (outputFD < 0 ? "archive" : "stdout + archive") }

    public var trouble: SinkTrouble? {
        isStalled ? SinkTrouble(status: "stalled", detail: "the stream reader is taking nothing") : nil
    }

    /// Hands in the lines accepted on `eventLoop` during one turn of it, in
    /// order, each complete (ending in `\n`), and calls each one's completion
    /// on that loop once it is written or refused: at once, on this thread,
    /// for lines written or refused right away (it never blocks on a full
    /// queue or a stalled reader: that is `.overloaded` at once). The writer
    /// wakes each event loop once per batch of answers, not once per line.
    public func submit(_ lines: [SubmittedLine], on eventLoop: any EventLoop) {
        guard !lines.isEmpty else { return }
        let tickets = lines.map { (bytes: $0.bytes, ticket: Ticket(loop: eventLoop, completion: $0.completion)) }
        let now = Self.now()
        var written = 0
        condition.lock()
        let answers: [LineOutcome?]
        if state.mayWriteDirectly {
            // Nothing is queued or being written: write the lines here and now,
            // with no hop to the writer thread and back (the usual case when
            // the reader keeps up). Whatever the output does not take at once,
            // the writer thread finishes.
            written = writeOnce(tickets)
            answers = state.wroteDirectly(tickets, written: written, now: now)
        } else {
            answers = tickets.map { state.submit($0.bytes, ticket: $0.ticket, now: now) }
        }
        condition.unlock()
        if answers.contains(where: { $0 == nil }) { condition.signal() }
        if written > 0 {
            let whole = zip(tickets, answers).filter { $0.1 == .written }
            recordWrite(since: now, bytes: whole.reduce(0) { $0 + $1.0.bytes.count }, lines: whole.count)
        }
        for (line, answer) in zip(tickets, answers) {
            guard let answer else { continue }
            if eventLoop.inEventLoop {
                line.ticket.completion(answer)
            } else {
                eventLoop.execute { line.ticket.completion(answer) }
            }
        }
    }

    private func recordWrite(since started: UInt64, bytes: Int, lines: Int) {
        guard let metrics else { return }
        metrics.writeDuration.recordNanoseconds(Int64(Self.now() - started))
        metrics.bytesWritten.increment(by: bytes)
        metrics.linesWritten.increment(by: lines)
    }

    /// One write(2) of as much of the lines, end to end, as the output takes
    /// without waiting; 0 when it takes nothing or fails (the writer thread
    /// then meets the failure). Called under the lock.
    private func writeOnce(_ lines: [(bytes: [UInt8], ticket: Ticket)]) -> Int {
        func write(_ bytes: UnsafeRawBufferPointer) -> Int {
            while true {
                let n = Glibc.write(outputFD, bytes.baseAddress!, bytes.count)
                if n >= 0 { return n }
                if errno != EINTR { return 0 }
            }
        }
        if lines.count == 1 { return lines[0].bytes.withUnsafeBytes(write) }
        directBuffer.removeAll(keepingCapacity: true)
        for line in lines { directBuffer.append(contentsOf: line.bytes) }
        return directBuffer.withUnsafeBytes(write)
    }

    /// Answers `tickets` on their event loops, one `execute` per loop for all of its callbacks.
    private static func deliver(_ tickets: [Ticket], _ outcome: LineOutcome) {
        var byLoop: [ObjectIdentifier: (any EventLoop, [@Sendable (LineOutcome) -> Void])] = [:]
        for ticket in tickets {
            byLoop[ObjectIdentifier(ticket.loop), default: (ticket.loop, [])].1.append(ticket.completion)
        }
        for (loop, completions) in byLoop.values {
            if completions.count == 1, let only = completions.first {
                loop.execute { only(outcome) }
            } else {
                loop.execute { for completion in completions { completion(outcome) } }
            }
        }
    }

    /// Starts the writer thread; `run()` does this too.
    public func start() {
        condition.lock()
        defer { condition.unlock() }
        // A pipe or socket is written without blocking, so that while its reader
        // stalls the writer can still answer the senders waiting for it. (Not a
        // terminal or file: their descriptions may be shared with the shell.)
        var info = stat()
        let kind = hasOutput && fstat(outputFD, &info) == 0 ? info.st_mode & S_IFMT : 0
        // Direct writes never wait: a pipe or socket without blocking, or /dev/null
        // and such. (Not a terminal, a disk file, nor with an archive to fsync first.)
        let writesDirectly = archive == nil && (kind == S_IFIFO || kind == S_IFSOCK || kind == S_IFCHR && isatty(outputFD) == 0)
        guard state.start(writesDirectly: writesDirectly) else { return }
        if kind == S_IFIFO || kind == S_IFSOCK {
            _ = fcntl(outputFD, F_SETFL, fcntl(outputFD, F_GETFL) | O_NONBLOCK)
        }
        startThread()
    }

    private func startThread() {
        let thread = Thread { [self] in self.writeLoop() }
        thread.name = "stream-writer"
        thread.start()
    }

    /// Stops taking new lines, writes what is queued, and lets the thread exit.
    public func stop() {
        condition.lock()
        state.drain()
        condition.signal()
        condition.unlock()
    }

    /// Waits for the writer thread to exit; throws if it stopped because the output failed.
    public func waitUntilStopped() async throws {
        let failure = await withCheckedContinuation { (continuation: CheckedContinuation<Failure?, Never>) in
            condition.lock()
            let wait = state.awaitExit(continuation)
            condition.unlock()
            if case .exited(let failure) = wait { continuation.resume(returning: failure) }
        }
        if let failure { throw failure }
    }

    /// Writes until the lifecycle closes (not at graceful shutdown itself:
    /// connections still open may be answered 202 until the HTTP server ends).
    /// Returns at its turn in the group's graceful shutdown, not before: to a
    /// `ServiceGroup`, a service that ends before it is told to has failed.
    public func run() async throws {
        start()
        lifecycle.when(.closing) { self.stop() }
        try await withTaskCancellationHandler {
            try await self.waitUntilStopped()
        } onCancel: {
            self.stop()
        }
        try? await gracefulShutdown()
    }

    // MARK: - The writer thread

    private static func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

    /// Runs a transition under the lock, then answers the senders it returns outside it.
    private func transition(_ answer: LineOutcome, _ body: (inout State) -> [Ticket]) {
        condition.lock()
        let tickets = body(&state)
        condition.unlock()
        if !tickets.isEmpty { Self.deliver(tickets, answer) }
    }

    private func writeLoop() {
        var buffer: [UInt8] = []
        var batchDone = false
        while true {
            condition.lock()
            // The batch just written is finished under the same lock as the next one starts.
            if batchDone {
                state.finishBatch()
                batchDone = false
            }
            let lines: [[UInt8]]
            var resumeAt = 0
            switch state.nextBatch(now: Self.now()) {
            case .exit(let failure, let waiters):
                condition.unlock()
                waiters.forEach { $0.resume(returning: failure) }
                return
            case .wait:
                // Idle: look at the output once a second, so a reader that went
                // away is noticed (and the receiver exits for a restart) even
                // when no webhook arrives to find out by writing.
                if !condition.wait(until: Date().addingTimeInterval(1)) && outputHungUp() {
                    condition.unlock()
                    fail(.outputClosed(errno: EPIPE))
                } else {
                    condition.unlock()
                }
                continue
            case .waitForOutput:
                condition.unlock()
                var pfd = pollfd(fd: outputFD, events: Int16(POLLOUT), revents: 0)
                if poll(&pfd, 1, 100) == 1 {
                    if pfd.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0 {
                        fail(.outputClosed(errno: EPIPE))
                    } else {
                        condition.lock()
                        state.outputReady(now: Self.now())
                        condition.unlock()
                        logger.notice("the stream reader is taking lines again")
                    }
                } else {
                    transition(.overloaded) { $0.blocked(now: Self.now()) }
                }
                continue
            case .write(let batch, let offset):
                lines = batch
                resumeAt = offset
            }
            metrics?.queueDepth.record(state.depth)
            condition.unlock()

            buffer.removeAll(keepingCapacity: buffer.capacity <= 4 * maxQueuedBytes)
            for line in lines { buffer.append(contentsOf: line) }

            if let archive, resumeAt == 0 {
                do {
                    let started = Self.now()
                    try archive.append(buffer)
                    metrics?.archiveDuration.recordNanoseconds(Int64(Self.now() - started))
                } catch {
                    logger.error("archive write failed; answering 503 until it recovers", metadata: ["error": "\(error)", "lines": "\(lines.count)"])
                    transition(.unavailable("the archive cannot be written")) { $0.refuseBatch() }
                    continue
                }
            }
            let started = Self.now()
            if let error = writeBatch(buffer, from: resumeAt) {
                fail(error == EPIPE ? .outputClosed(errno: error) : .outputFailed(errno: error))
                continue
            }
            recordWrite(since: started, bytes: buffer.count, lines: lines.count)
            batchDone = true
        }
    }

    /// Writes the batch's bytes as the reader takes them, answering each line
    /// once it is whole; while the reader takes nothing, lets the state refuse
    /// those who waited too long (which may cut the batch short). Returns the
    /// errno that ended it, or nil.
    private func writeBatch(_ buffer: [UInt8], from offset: Int) -> Int32? {
        guard hasOutput else {
            // Archived is all there is to do.
            if buffer.count > offset { transition(.written) { $0.wrote(buffer.count - offset, now: Self.now()) } }
            return nil
        }
        return buffer.withUnsafeBytes { bytes -> Int32? in
            guard let base = bytes.baseAddress else { return nil }
            var written = offset
            // Where the batch ends; only this thread's transitions move it (a stall cuts it short).
            var end = bytes.count
            var wasStalled = false
            while true {
                guard written < end else { return nil }
                let n = write(outputFD, base + written, end - written)
                if n > 0 {
                    written += n
                    condition.lock()
                    let done = state.wrote(n, now: Self.now())
                    end = state.batchEnd
                    condition.unlock()
                    if !done.isEmpty { Self.deliver(done, .written) }
                    if wasStalled {
                        wasStalled = false
                        logger.notice("the stream reader is taking lines again")
                    }
                    continue
                }
                let error = n < 0 ? errno : EIO
                if error == EINTR { continue }
                guard error == EAGAIN || error == EWOULDBLOCK else { return error }
                var pfd = pollfd(fd: outputFD, events: Int16(POLLOUT), revents: 0)
                if poll(&pfd, 1, 100) == 0 {
                    condition.lock()
                    let refused = state.blocked(now: Self.now())
                    let stalled = state.isStalled
                    end = state.batchEnd
                    condition.unlock()
                    if stalled && !wasStalled {
                        wasStalled = true
                        logger.warning("the stream reader is stalled: refusing new webhooks until it takes lines again")
                    }
                    if !refused.isEmpty {
                        logger.warning("refusing webhooks that waited too long for the stalled reader", metadata: ["lines": "\(refused.count)"])
                        Self.deliver(refused, .overloaded)
                    }
                }
            }
        }
    }

    /// The output failed for good: everyone waiting is refused and the thread ends.
    private func fail(_ failure: Failure) {
        logger.critical("stream output failed; refusing all further webhooks", metadata: ["error": "\(failure)"])
        transition(.unavailable(State.outputClosed)) { $0.fail(failure) }
    }

    /// Whether the output is a pipe or socket whose reader has gone (POLLERR/POLLHUP on the write end).
    private func outputHungUp() -> Bool {
        guard hasOutput else { return false }
        var pfd = pollfd(fd: outputFD, events: Int16(POLLOUT), revents: 0)
        guard poll(&pfd, 1, 0) == 1 else { return false }
        return pfd.revents & Int16(POLLERR | POLLHUP | POLLNVAL) != 0
    }
}
