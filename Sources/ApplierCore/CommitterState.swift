/// A committer's whole state as one value: whether it runs, the one batch
/// that may wait for it, whether one is being committed, why it stopped, and
/// the counts. Every event — a batch handed in, the thread asking for work,
/// a batch done, a failure, the finish — is a mutating function that returns
/// what to do; no threads, locks or I/O here, so each transition is tested
/// on its own. `BatchCommitter` holds one under one lock, waits, and works.
struct CommitterState {
    enum Phase {
        /// Taking batches.
        case running
        /// `finish` was asked: what is handed in is still committed, then the thread ends.
        case finishing
        /// Stopped for good; `failure` says why.
        case failed
    }

    /// What became of a batch handed in.
    enum Handover {
        case taken
        /// A batch already waits: wait, then hand it in again.
        case full
        /// The committer stopped for good.
        case refused(any Error)
    }

    /// What the committing thread does next.
    enum Next {
        case commit(PreparedBatch)
        /// Nothing to do yet: wait for a batch or the finish.
        case wait
        /// Finished or failed: the thread ends.
        case exit
    }

    /// Whether everything handed in is committed.
    enum Finish {
        case notYet
        case done(ApplierSummary)
        case failed(any Error)
    }

    private(set) var phase = Phase.running
    private(set) var waiting: PreparedBatch?
    private(set) var busy = false
    private(set) var failure: (any Error)?
    private(set) var counts = ApplierSummary()

    /// Whether a batch handed in now would start committing without waiting behind another.
    var isReady: Bool { phase != .failed && waiting == nil && !busy }

    mutating func submit(_ batch: PreparedBatch) -> Handover {
        if let failure { return .refused(failure) }
        guard waiting == nil else { return .full }
        waiting = batch
        return .taken
    }

    mutating func next() -> Next {
        if phase == .failed { return .exit }
        if let batch = waiting {
            waiting = nil
            busy = true
            return .commit(batch)
        }
        return phase == .finishing ? .exit : .wait
    }

    /// The batch being committed is done: these counts are its own.
    mutating func committed(_ outcome: BatchOutcome) {
        counts.batches += 1
        counts.cache.add(outcome.cache)
        counts.applied += outcome.applied
        counts.duplicates += outcome.duplicates
        counts.pending += outcome.pending
        counts.rejected += outcome.rejected.count
    }

    /// An event the database refused on its own (a split batch): rejected.
    mutating func rejectedAlone() {
        counts.rejected += 1
    }

    /// The batch under way is done with (committed, split and committed, or rejected).
    mutating func batchDone() {
        busy = false
    }

    /// Retrying cannot help: the committer stops, and whatever waits is refused.
    mutating func fail(_ error: any Error) {
        phase = .failed
        failure = error
        busy = false
        waiting = nil
    }

    mutating func finish() {
        if phase == .running { phase = .finishing }
    }

    var finished: Finish {
        if let failure { return .failed(failure) }
        return phase == .finishing && waiting == nil && !busy ? .done(counts) : .notYet
    }
}
