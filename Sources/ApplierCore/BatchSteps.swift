import TaskModel

/// One batch's transaction as the steps its plan asks for, in order: lock
/// the batch's partitions; read what it needs (the batch's own events when
/// replaying, what is stored of its tasks, the rows of the tasks that gained
/// an event, the histories of those that must be folded again); write (the
/// new events, the rows, the verdicts); done, with what became of each event.
/// A read that would find nothing is not asked for. Pure: `TaskStore` is a
/// loop that carries out each step and hands back what it read, and tests
/// walk the steps on values.
///
/// How the batch looks for its duplicates is its `Mode`, given by the last
/// batch (`.done` says which the next one takes): live input reads what is
/// stored of all of its tasks at once; a replay (mostly duplicates) first
/// looks up the batch's own events, and reads its tasks' state only if one
/// of them is new.
struct BatchSteps {
    enum Mode: Equatable, Sendable {
        /// Read what is stored of every task of the batch first: one round
        /// trip, two index descents per task.
        case live
        /// The last batch was mostly duplicates (an archive replayed): first
        /// look up the batch's own events, one index look-up each; a task's
        /// state costs two look-ups and all of its stored events, which a
        /// batch of duplicates does not need.
        case replaying
    }

    enum Step {
        /// Take the advisory locks of these partitions, in this (ascending) order; then `locked()`.
        case lockPartitions([Int])
        /// Read which of the batch's own events are stored, with their verdicts; then `read(ownEvents:)`.
        case readOwnEvents
        /// Read what is stored of the batch's tasks; then `read(stored:)`.
        case readStored
        /// Read these rows of `meetperry.task`; then `read(rows:)`.
        case readRows([RowAddress])
        /// Read every stored event of these tasks; then `read(histories:)`.
        case readHistories([String])
        /// Copy these new events (batch indices) into the event log, write
        /// these rows and store these verdicts; then `written()`.
        case write(newItems: [Int], rows: BatchPlan.Rows, verdicts: [BatchPlan.VerdictChange])
        /// The batch is applied (to commit); the next batch looks for its duplicates as `next` says.
        case done(BatchOutcome, next: Mode)
    }

    private enum State {
        case start
        case awaitingLock
        case awaitingOwnEvents
        case awaitingStored
        case awaitingRows(BatchPlan, next: Mode)
        case awaitingHistories(BatchPlan, next: Mode)
        case writing(BatchPlan, next: Mode)
        case awaitingWrite(BatchOutcome, next: Mode)
        case finished(BatchOutcome, next: Mode)
    }

    let batch: PreparedBatch
    let mode: Mode
    private var state = State.start

    init(_ batch: PreparedBatch, mode: Mode) {
        self.batch = batch
        self.mode = mode
    }

    /// What to do now.
    mutating func next() -> Step {
        switch state {
        case .start:
            state = .awaitingLock
            return .lockPartitions(batch.partitions)
        case .awaitingLock:
            preconditionFailure("the partitions are to be locked first")
        case .awaitingOwnEvents:
            return .readOwnEvents
        case .awaitingStored:
            return .readStored
        case .awaitingRows(let plan, _):
            return .readRows(plan.rowsToRead)
        case .awaitingHistories(let plan, _):
            return .readHistories(plan.tasksToRefold)
        case .writing(let plan, let next):
            let (rows, outcome, verdicts) = plan.fold()
            state = .awaitingWrite(outcome, next: next)
            return .write(newItems: plan.newItems, rows: rows, verdicts: verdicts)
        case .awaitingWrite:
            preconditionFailure("the batch is to be written first")
        case .finished(let outcome, let next):
            return .done(outcome, next: next)
        }
    }

    /// The partitions are locked.
    mutating func locked() {
        guard case .awaitingLock = state else { preconditionFailure("locked out of turn") }
        state = mode == .replaying ? .awaitingOwnEvents : .awaitingStored
    }

    /// Which of the batch's own events are stored (replaying): done if none is new.
    mutating func read(ownEvents stored: BatchPlan.Stored) {
        guard case .awaitingOwnEvents = state else { preconditionFailure("own events read out of turn") }
        let duplicatesOnly = BatchPlan(batch, stored: stored)
        state = duplicatesOnly.newItems.isEmpty ? .finished(duplicatesOnly.fold().outcome, next: .replaying) : .awaitingStored
    }

    /// What is stored of the batch's tasks.
    mutating func read(stored: BatchPlan.Stored) {
        guard case .awaitingStored = state else { preconditionFailure("stored state read out of turn") }
        var plan = BatchPlan(batch, stored: stored)
        let next: Mode = plan.duplicates * 2 > batch.count ? .replaying : .live
        if plan.newItems.isEmpty {
            state = .finished(plan.fold().outcome, next: next)
        } else if plan.rowsToRead.isEmpty {
            plan.addRows([:])
            state = afterRows(plan, next: next)
        } else {
            state = .awaitingRows(plan, next: next)
        }
    }

    /// The rows of the tasks that gained an event.
    mutating func read(rows: [String: TaskState]) {
        guard case .awaitingRows(var plan, let next) = state else { preconditionFailure("rows read out of turn") }
        plan.addRows(rows)
        state = afterRows(plan, next: next)
    }

    /// The stored events of the tasks to fold again.
    mutating func read(histories events: [BatchPlan.StoredEvent]) {
        guard case .awaitingHistories(var plan, let next) = state else { preconditionFailure("histories read out of turn") }
        for event in events { plan.addStored(event) }
        state = .writing(plan, next: next)
    }

    /// The new events, rows and verdicts are written.
    mutating func written() {
        guard case .awaitingWrite(let outcome, let next) = state else { preconditionFailure("written out of turn") }
        state = .finished(outcome, next: next)
    }

    private func afterRows(_ plan: BatchPlan, next: Mode) -> State {
        plan.tasksToRefold.isEmpty ? .writing(plan, next: next) : .awaitingHistories(plan, next: next)
    }
}
