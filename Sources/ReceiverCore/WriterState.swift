#if canImport(Glibc)
import Glibc
#endif

/// Why the stream writer stopped for good.
public enum WriterFailure: Error, Equatable, CustomStringConvertible {
    case outputClosed(errno: Int32)
    case outputFailed(errno: Int32)

    public var description: String {
        switch self {
        case .outputClosed: return "stdout was closed by its reader (EPIPE): nothing downstream reads the stream"
        case .outputFailed(let e): return "writing to stdout failed: \(String(cString: strerror(e)))"
        }
    }
}

/// The stream writer's whole state as one value: its lifecycle (started or
/// not, how lines may be written, running, stalled, draining, failed and
/// why, exited and who waits for that), the lines waiting, and the batch
/// being written. Every event — the writer started, a webhook submitted,
/// bytes taken by the reader, the output blocked, a failure, a drain, the
/// thread free — is a mutating function that returns which senders to answer
/// (each event answers with one outcome, named on it) or what the thread does
/// next; no I/O, threads or clocks here (times come in as arguments), so each
/// transition is tested on its own. `StreamWriter` holds one of these under
/// one lock and does the I/O.
///
/// Who writes the output: the writer thread, and, for speed, the thread that
/// submits a line when `mayWriteDirectly` says nothing could come before it
/// or interleave with it (no archive to fsync, a pipe that does not block,
/// nothing queued, no batch under way). That saves two thread hops per
/// webhook when the reader keeps up; `mayWriteDirectly` is the one place
/// that decides, under the writer's lock.
///
/// The promises it keeps: a line is answered `.written` only once its last
/// byte is taken; a line refused was never handed to the output, except the
/// one line a stalled output has taken part of (it is finished in the
/// stream, so the stream stays whole, but its sender is not kept waiting);
/// while the output makes no progress for `stallNanoseconds`, new lines are
/// refused at once; no sender waits longer than `queueTimeoutNanoseconds`
/// for a stalled output.
struct WriterState<Ticket, Waiter> {
    enum Phase: Equatable {
        /// Taking lines and writing them (lines submitted before the thread starts wait for it).
        case running
        /// The output has taken nothing for a while: new lines are refused at once.
        case stalled
        /// Shutting down: no new lines; what is queued is still written.
        case draining
        /// The output is gone (or failed): nothing is taken or written any more.
        case failed(WriterFailure)
        /// The writer thread ended, drained or after this failure.
        case exited(WriterFailure?)
    }

    /// The answer of a submission refused because the output failed.
    static var outputClosed: String { "the output stream is closed" }

    /// How a sender is answered.
    typealias Answer = LineOutcome

    struct Limits {
        var capacity: Int
        var maxQueuedBytes: Int
        var stallNanoseconds: UInt64
        var queueTimeoutNanoseconds: UInt64
    }

    struct Line {
        var bytes: [UInt8]
        var ticket: Ticket
        var queuedAt: UInt64
        var answered = false
    }

    /// What the writer thread does next.
    enum Next {
        /// Write these lines' bytes, in order, from this byte offset (archive
        /// them first when there is an archive and the offset is 0; a batch with
        /// an offset was started by a direct write, which is never archived).
        case write([[UInt8]], from: Int)
        /// Nothing to write: wait for a line (or for the drain to finish).
        case wait
        /// Stalled with nothing left to write: wait for the output to take bytes again (`outputReady`).
        case waitForOutput
        /// Drained or failed: the thread ends, telling these waiters (`awaitExit`) how.
        case exit(WriterFailure?, waiters: [Waiter])
    }

    /// What `awaitExit` says.
    enum ExitWait {
        /// The thread has ended (or never started), so there is nothing to wait for.
        case exited(WriterFailure?)
        /// The waiter is told when the thread ends.
        case waiting
    }

    let limits: Limits
    private(set) var phase: Phase = .running
    private(set) var queue: [Line] = []
    private(set) var queuedBytes = 0
    /// The batch being written, the byte offset where each of its lines ends,
    /// how many of its bytes the output took, and how many lines are written.
    private(set) var batch: [Line] = []
    private var batchEnds: [Int] = []
    private(set) var batchWritten = 0
    private var linesWritten = 0
    /// How many lines of the batch are still to be written (fewer than the
    /// batch when lines not yet started were taken back), and where their bytes end.
    private var kept = 0
    private(set) var batchEnd = 0
    /// When the output last took bytes, or the batch started.
    private var lastProgress: UInt64 = 0
    /// The writer thread was started; whether submitting threads may write the output themselves.
    private(set) var started = false
    private(set) var writesDirectly = false
    /// Who waits for the thread to end.
    private var exitWaiters: [Waiter] = []

    init(limits: Limits) {
        self.limits = limits
    }

    var isStalled: Bool { phase == .stalled }

    /// Why the writer stopped for good, if it did.
    var failure: WriterFailure? {
        switch phase {
        case .failed(let failure): return failure
        case .exited(let failure): return failure
        default: return nil
        }
    }
    /// Lines queued or in the batch and not yet answered.
    var depth: Int { queue.count + batch.count(where: { !$0.answered }) }

    // MARK: - Events

    /// The writer thread starts; false when it already has. `writesDirectly`:
    /// the output never blocks the submitting thread and no archive has to be
    /// fsynced first, so lines may be written by the thread that submits them.
    mutating func start(writesDirectly: Bool) -> Bool {
        guard !started else { return false }
        started = true
        self.writesDirectly = writesDirectly
        return true
    }

    /// Someone waits for the thread to end.
    mutating func awaitExit(_ waiter: Waiter) -> ExitWait {
        if case .exited(let failure) = phase { return .exited(failure) }
        guard started else { return .exited(nil) }
        exitWaiters.append(waiter)
        return .waiting
    }

    /// A sender hands in a line. nil: queued (answered later); otherwise the answer now.
    mutating func submit(_ bytes: [UInt8], ticket: Ticket, now: UInt64) -> Answer? {
        switch phase {
        case .failed, .exited(.some): return .unavailable(Self.outputClosed)
        case .draining, .exited(nil): return .unavailable("the receiver is shutting down")
        case .stalled: return .overloaded
        case .running: break
        }
        if queue.count >= limits.capacity || (queuedBytes + bytes.count > limits.maxQueuedBytes && !queue.isEmpty) {
            return .overloaded
        }
        queue.append(Line(bytes: bytes, ticket: ticket, queuedAt: now))
        queuedBytes += bytes.count
        return nil
    }

    /// Whether the submitting thread may write a line to the output itself,
    /// now: direct writes allowed (`start`), running, nothing queued and no
    /// batch under way, so nothing can come before it or interleave with it
    /// (the caller holds the lock).
    var mayWriteDirectly: Bool { writesDirectly && phase == .running && queue.isEmpty && batch.isEmpty }

    /// The submitting thread wrote `written` bytes of `lines` (end to end, in
    /// order) itself, after `mayWriteDirectly`. Returns the answer due now for
    /// each line, nil for those answered later: lines wholly taken are
    /// `.written`; the line the output stopped inside becomes, with every line
    /// after it, the batch under way, which the writer thread finishes; when
    /// it stopped between two lines, the rest are submitted as usual.
    mutating func wroteDirectly(_ lines: [(bytes: [UInt8], ticket: Ticket)], written: Int, now: UInt64) -> [Answer?] {
        precondition(mayWriteDirectly && written >= 0 && written <= lines.reduce(0) { $0 + $1.bytes.count }, "a direct write out of turn")
        var answers: [Answer?] = []
        answers.reserveCapacity(lines.count)
        var offset = 0
        var index = 0
        while index < lines.count, offset + lines[index].bytes.count <= written {
            offset += lines[index].bytes.count
            answers.append(.written)
            index += 1
        }
        guard index < lines.count else { return answers }
        if offset == written {
            for line in lines[index...] { answers.append(submit(line.bytes, ticket: line.ticket, now: now)) }
            return answers
        }
        startBatch(lines[index...].map { Line(bytes: $0.bytes, ticket: $0.ticket, queuedAt: now) }, written: written - offset, now: now)
        answers.append(contentsOf: repeatElement(nil, count: batch.count))
        return answers
    }

    /// The writer thread is free: the next batch is everything queued.
    mutating func nextBatch(now: UInt64) -> Next {
        if case .failed(let failure) = phase { return exit(failure) }
        // A direct write the output took only part of: the writer thread finishes it.
        if !batch.isEmpty && batchWritten < batchEnd { return .write(batch.map(\.bytes), from: batchWritten) }
        precondition(batch.isEmpty, "a batch started while another is being written")
        if queue.isEmpty {
            switch phase {
            case .draining: return exit(nil)
            case .stalled: return .waitForOutput
            default: return .wait
            }
        }
        startBatch(queue, written: 0, now: now)
        queue = []
        queuedBytes = 0
        return .write(batch.map(\.bytes), from: 0)
    }

    private mutating func exit(_ failure: WriterFailure?) -> Next {
        phase = .exited(failure)
        let waiters = exitWaiters
        exitWaiters = []
        return .exit(failure, waiters: waiters)
    }

    /// `lines` become the batch under way, of which the output has taken `written` bytes.
    private mutating func startBatch(_ lines: [Line], written: Int, now: UInt64) {
        batch = lines
        batchEnds = []
        batchEnds.reserveCapacity(lines.count)
        var end = 0
        for line in lines {
            end += line.bytes.count
            batchEnds.append(end)
        }
        batchEnd = end
        kept = lines.count
        batchWritten = written
        linesWritten = 0
        lastProgress = now
    }

    /// The output took `count` more bytes of the batch: the lines now whole are written (`.written`).
    mutating func wrote(_ count: Int, now: UInt64) -> [Ticket] {
        precondition(count > 0 && batchWritten + count <= batchEnd, "wrote more than the batch holds")
        batchWritten += count
        lastProgress = now
        if phase == .stalled { phase = .running }
        var done: [Ticket] = []
        while linesWritten < batch.count, batchEnds[linesWritten] <= batchWritten {
            if !batch[linesWritten].answered {
                batch[linesWritten].answered = true
                done.append(batch[linesWritten].ticket)
            }
            linesWritten += 1
        }
        return done
    }

    /// The output took nothing for a moment. Past `stallNanoseconds` the writer
    /// is stalled; every sender that has waited `queueTimeoutNanoseconds` is
    /// refused: queued lines, and lines of the batch not yet started (the batch
    /// is cut before the first of them, with everything after it). The line the
    /// output has taken part of stays in the stream, its sender refused too
    /// (all `.overloaded`).
    mutating func blocked(now: UInt64) -> [Ticket] {
        if phase == .running, now > lastProgress, now - lastProgress >= limits.stallNanoseconds { phase = .stalled }
        guard phase == .stalled || phase == .draining else { return [] }
        func waitedTooLong(_ line: Line) -> Bool { now > line.queuedAt && now - line.queuedAt >= limits.queueTimeoutNanoseconds }
        var refused: [Ticket] = []
        // Queued lines, oldest first.
        let stale = queue.prefix(while: waitedTooLong).count
        if stale > 0 {
            refused += queue[..<stale].map(\.ticket)
            queuedBytes -= queue[..<stale].reduce(0) { $0 + $1.bytes.count }
            queue.removeFirst(stale)
        }
        // The batch: the line under way (part of it taken) stays; the first line
        // not started is taken back when it waited too long, with all after it.
        let underWay = linesWritten < kept && batchWritten > (linesWritten == 0 ? 0 : batchEnds[linesWritten - 1])
        let firstNotStarted = linesWritten + (underWay ? 1 : 0)
        if firstNotStarted < kept, waitedTooLong(batch[firstNotStarted]) {
            for index in firstNotStarted..<kept where !batch[index].answered {
                batch[index].answered = true
                refused.append(batch[index].ticket)
            }
            kept = firstNotStarted
            batchEnd = kept == 0 ? 0 : batchEnds[kept - 1]
        }
        // The line under way will be finished, but its sender is not kept waiting.
        if underWay, !batch[linesWritten].answered, waitedTooLong(batch[linesWritten]) {
            batch[linesWritten].answered = true
            refused.append(batch[linesWritten].ticket)
        }
        return refused
    }

    /// The stalled output can take bytes again (poll says writable): lines are taken again.
    mutating func outputReady(now: UInt64) {
        lastProgress = now
        if phase == .stalled { phase = .running }
    }

    /// The batch's bytes are all taken (or it was refused as a whole): the writer is free.
    mutating func finishBatch() {
        precondition(batchWritten == batchEnd, "a batch finished before its bytes were written")
        batch = []
        batchEnds = []
        batchWritten = 0
        batchEnd = 0
        kept = 0
        linesWritten = 0
    }

    /// The archive could not take the batch: none of it was written anywhere; its senders are refused (`.unavailable`).
    mutating func refuseBatch() -> [Ticket] {
        precondition(batchWritten == 0, "a batch refused after part of it was written")
        let refused = batch.filter { !$0.answered }.map(\.ticket)
        batch = []
        batchEnds = []
        batchEnd = 0
        kept = 0
        linesWritten = 0
        return refused
    }

    /// The output is gone: everyone waiting is refused (`.unavailable`, `outputClosed`), and nothing more is taken.
    mutating func fail(_ failure: WriterFailure) -> [Ticket] {
        phase = .failed(failure)
        let refused = batch.filter { !$0.answered }.map(\.ticket) + queue.map(\.ticket)
        for index in batch.indices { batch[index].answered = true }
        queue = []
        queuedBytes = 0
        batchEnd = batchWritten
        kept = linesWritten
        return refused
    }

    /// Shutdown begins: no new lines; what is queued is still written.
    mutating func drain() {
        switch phase {
        case .failed, .exited: return
        case .running, .stalled, .draining: phase = .draining
        }
    }
}
