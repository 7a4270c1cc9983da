import TaskModel

/// One batch's transaction as the steps its plan asks for, in order: lock
/// the batch's partitions; with a task cache, read the partitions' versions
/// and recall what the cache knows of the batch's tasks; read what it still
/// needs of the others (the batch's own events when replaying, what is
/// stored of its tasks, the rows of the tasks that gained an event, the
/// histories of those that must be folded again); write (the new events,
/// the rows, the verdicts, the versions of the partitions written); done,
/// with what became of each event and what the cache is to remember once
/// the batch commits. A read that would find nothing is not asked for. Pure: `TaskStore` is a
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
        /// Read the versions of these partitions and recall what the cache
        /// knows of the batch's tasks under them (`TaskCache.recall`); then `recalled(_:)`.
        case recall([Int])
        /// Read which of these events of the batch (indices) are stored, with their verdicts; then `read(ownEvents:)`.
        case readOwnEvents([Int])
        /// Read what is stored of these tasks; then `read(stored:)`.
        case readStored([String])
        /// Read these rows of `meetperry.task`; then `read(rows:)`.
        case readRows([RowAddress])
        /// Read every stored event of these tasks; then `read(histories:)`.
        case readHistories([String])
        /// Copy these new events (batch indices) into the event log, write
        /// these rows, store these verdicts, and bump the versions of these
        /// partitions (those of the tasks that gained an event); then
        /// `written(addresses:versions:transaction:)`.
        case write(newItems: [Int], rows: BatchPlan.Rows, verdicts: [BatchPlan.VerdictChange], partitions: [Int])
        /// The batch is applied (to commit); the next batch looks for its
        /// duplicates as `next` says; once committed, the cache remembers `remember`.
        case done(BatchOutcome, next: Mode, remember: TaskCache.Update?)
    }

    private enum State {
        case start
        case awaitingLock
        case awaitingRecall
        case awaitingOwnEvents(TaskCache.Recall)
        case awaitingStored(TaskCache.Recall)
        case awaitingRows(BatchPlan, next: Mode)
        case awaitingHistories(BatchPlan, next: Mode)
        case writing(BatchPlan, next: Mode)
        case awaitingWrite(BatchPlan, BatchOutcome, verdicts: [BatchPlan.VerdictChange], states: [TaskState?], next: Mode)
        case finished(BatchOutcome, next: Mode, remember: TaskCache.Update?)
        /// While a case's data is taken out to be changed: the state then holds
        /// no second reference to it, so it is changed in place, not copied.
        case modifying
    }

    let batch: PreparedBatch
    let mode: Mode
    /// Whether a cache is asked first and told after (`TaskCache.isEnabled`).
    let remembering: Bool
    private var state = State.start
    /// What the cache answered, for the outcome.
    private var lookups = TaskCacheLookups()

    init(_ batch: PreparedBatch, mode: Mode, remembering: Bool = false) {
        self.batch = batch
        self.mode = mode
        self.remembering = remembering
    }

    /// What to do now.
    mutating func next() -> Step {
        switch state {
        case .start:
            state = .awaitingLock
            return .lockPartitions(batch.partitions)
        case .awaitingLock:
            preconditionFailure("the partitions are to be locked first")
        case .awaitingRecall:
            return .recall(batch.partitions)
        case .awaitingOwnEvents(let recall):
            guard recall.unanswered.count < batch.tasks.count else { return .readOwnEvents(Array(batch.items.indices)) }
            let unanswered = Set(recall.unanswered)
            return .readOwnEvents(batch.items.indices.filter { unanswered.contains(batch.items[$0].record.webhook.taskId) })
        case .awaitingStored(let recall):
            return .readStored(recall.unanswered)
        case .awaitingRows(let plan, _):
            return .readRows(plan.rowsToRead)
        case .awaitingHistories(let plan, _):
            return .readHistories(plan.tasksToRefold)
        case .writing(let plan, let next):
            let (rows, outcome, verdicts, states) = plan.foldKeepingStates()
            state = .awaitingWrite(plan, outcome, verdicts: verdicts, states: states, next: next)
            let partitions = Set(plan.gained.map { batch.partitionOfTask[Int($0)] }).sorted().map(Int.init)
            return .write(newItems: plan.newItems, rows: rows, verdicts: verdicts, partitions: partitions)
        case .awaitingWrite:
            preconditionFailure("the batch is to be written first")
        case .modifying:
            preconditionFailure("the steps are in the middle of a change")
        case .finished(var outcome, let next, let remember):
            outcome.cache = lookups
            return .done(outcome, next: next, remember: remember)
        }
    }

    /// The partitions are locked.
    mutating func locked() {
        guard case .awaitingLock = state else { preconditionFailure("locked out of turn") }
        if remembering {
            state = .awaitingRecall
        } else {
            afterRecall(TaskCache.Recall(unanswered: batch.tasks))
        }
    }

    /// What the cache answered of the batch's tasks.
    mutating func recalled(_ recall: TaskCache.Recall) {
        guard case .awaitingRecall = state else { preconditionFailure("recalled out of turn") }
        afterRecall(recall)
    }

    /// Which of the batch's own events are stored (replaying): done if none is new.
    mutating func read(ownEvents stored: BatchPlan.Stored) {
        guard case .awaitingOwnEvents(let recall) = state else { preconditionFailure("own events read out of turn") }
        state = .modifying
        let duplicatesOnly = BatchPlan(batch, stored: Self.known(stored, recall), cached: recall.cached)
        state = duplicatesOnly.newItems.isEmpty ? .finished(duplicatesOnly.fold().outcome, next: .replaying, remember: nil) : .awaitingStored(recall)
    }

    /// What is stored of the tasks the cache did not answer.
    mutating func read(stored: BatchPlan.Stored) {
        guard case .awaitingStored(let recall) = state else { preconditionFailure("stored state read out of turn") }
        state = .modifying
        plan(recall, stored)
    }

    /// The rows of the tasks that gained an event.
    mutating func read(rows: [String: TaskState]) {
        guard case .awaitingRows(var plan, let next) = state else { preconditionFailure("rows read out of turn") }
        state = .modifying
        plan.addRows(rows)
        state = afterRows(plan, next: next)
    }

    /// The stored events of the tasks to fold again.
    mutating func read(histories events: [BatchPlan.StoredEvent]) {
        guard case .awaitingHistories(var plan, let next) = state else { preconditionFailure("histories read out of turn") }
        state = .modifying
        for event in events { plan.addStored(event) }
        state = .writing(plan, next: next)
    }

    /// The new events, rows and verdicts are written: the rows updated are
    /// now at `addresses` (by task number; empty without a cache), the rows
    /// copied in were by `transaction`, and the partitions bumped are at `versions`.
    mutating func written(addresses: [RowAddress?] = [], versions: [Int: Int64] = [:], transaction: TransactionID = 0) {
        guard case .awaitingWrite(let plan, let outcome, let verdicts, let states, let next) = state else {
            preconditionFailure("written out of turn")
        }
        let remember = remembering ? plan.remembrance(states: states, verdicts: verdicts, addresses: addresses, versions: versions, transaction: transaction) : nil
        state = .finished(outcome, next: next, remember: remember)
    }

    /// Reads what the cache did not answer (the own events first when
    /// replaying), or, when it answered every task, goes on to plan.
    private mutating func afterRecall(_ recall: TaskCache.Recall) {
        lookups = TaskCacheLookups(hits: recall.hits, new: recall.new, misses: remembering ? recall.misses : 0, stale: recall.stale)
        if recall.unanswered.isEmpty {
            plan(recall, BatchPlan.Stored())
        } else {
            state = mode == .replaying ? .awaitingOwnEvents(recall) : .awaitingStored(recall)
        }
    }

    /// The plan, from what the cache answered and what was read of the rest.
    private mutating func plan(_ recall: consuming TaskCache.Recall, _ stored: consuming BatchPlan.Stored) {
        let plan = BatchPlan(batch, stored: Self.known(stored, recall), cached: recall.cached)
        let next: Mode = plan.duplicates * 2 > batch.count ? .replaying : .live
        if plan.newItems.isEmpty {
            state = .finished(plan.fold().outcome, next: next, remember: nil)
        } else {
            state = afterStored(plan, next: next)
        }
    }

    /// What was read, with the batch's events the cache knows are stored (and their verdicts) added.
    private static func known(_ stored: consuming BatchPlan.Stored, _ recall: TaskCache.Recall) -> BatchPlan.Stored {
        stored.identities.formUnion(recall.stored.identities)
        stored.refusals.merge(recall.stored.refusals) { $1 }
        return stored
    }

    private func afterStored(_ plan: consuming BatchPlan, next: Mode) -> State {
        guard plan.rowsToRead.isEmpty else { return .awaitingRows(plan, next: next) }
        plan.addRows([:])
        return afterRows(plan, next: next)
    }

    private func afterRows(_ plan: BatchPlan, next: Mode) -> State {
        plan.tasksToRefold.isEmpty ? .writing(plan, next: next) : .awaitingHistories(plan, next: next)
    }
}
