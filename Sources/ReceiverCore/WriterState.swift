/// The stream writer's whole state as one value: the phase it is in, the
/// lines waiting, and the batch being written. Every event — a webhook
/// submitted, bytes taken by the reader, the output blocked, a failure, a
/// drain — is a mutating function that returns which senders to answer and
/// how; no I/O, threads or clocks here (times come in as arguments), so each
/// transition is tested on its own. `StreamWriter` holds one of these under
/// one lock and does the I/O.
///
/// The promises it keeps: a line is answered `.written` only once its last
/// byte is taken; a line refused was never handed to the output, except the
/// one line a stalled output has taken part of (it is finished in the
/// stream, so the stream stays whole, but its sender is not kept waiting);
/// while the output makes no progress for `stallNanoseconds`, new lines are
/// refused at once; no sender waits longer than `queueTimeoutNanoseconds`
/// for a stalled output.
struct WriterState<Ticket> {
    enum Phase: Equatable {
        /// Taking lines and writing them.
        case running
        /// The output has taken nothing for a while: new lines are refused at once.
        case stalled
        /// Shutting down: no new lines; what is queued is still written.
        case draining
        /// The output is gone (or failed): nothing is taken or written any more.
        case failed(String)
    }

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
        /// Drained or failed: the thread ends.
        case exit
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

    init(limits: Limits) {
        self.limits = limits
    }

    var isStalled: Bool { phase == .stalled }
    /// Lines queued or in the batch and not yet answered.
    var depth: Int { queue.count + batch.count(where: { !$0.answered }) }

    // MARK: - Events

    /// A sender hands in a line. nil: queued (answered later); otherwise the answer now.
    mutating func submit(_ bytes: [UInt8], ticket: Ticket, now: UInt64) -> Answer? {
        switch phase {
        case .failed(let reason): return .unavailable(reason)
        case .draining: return .unavailable("the receiver is shutting down")
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
    /// now: running, nothing queued and no batch under way, so nothing can
    /// come before it or interleave with it (the caller holds the lock).
    var mayWriteDirectly: Bool { phase == .running && queue.isEmpty && batch.isEmpty }

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
        if case .failed = phase { return .exit }
        // A direct write the output took only part of: the writer thread finishes it.
        if !batch.isEmpty && batchWritten < batchEnd { return .write(batch.map(\.bytes), from: batchWritten) }
        precondition(batch.isEmpty, "a batch started while another is being written")
        if queue.isEmpty {
            switch phase {
            case .draining: return .exit
            case .stalled: return .waitForOutput
            default: return .wait
            }
        }
        startBatch(queue, written: 0, now: now)
        queue = []
        queuedBytes = 0
        return .write(batch.map(\.bytes), from: 0)
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

    /// The output took `count` more bytes of the batch: the lines now whole are written.
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
    /// output has taken part of stays in the stream, its sender refused too.
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

    /// The archive could not take the batch: none of it was written anywhere; its senders are refused.
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

    /// The output is gone: everyone waiting is refused, and nothing more is taken.
    mutating func fail(_ reason: String) -> [Ticket] {
        phase = .failed(reason)
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
        if case .failed = phase { return }
        phase = .draining
    }
}
