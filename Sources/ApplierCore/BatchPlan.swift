import TaskModel
import WebhookModel

/// What one batch does, worked out without the database, in two steps:
/// given what is stored of its tasks, which of its events are new (every
/// other is a duplicate, of a stored event or of one earlier in the batch),
/// and which tasks need their history read back; then each task that gained
/// an event gets its row as the rules make it, with what became of each event of the batch,
/// and which stored verdicts (`task_event.rejection`) changed. A duplicate of
/// a refused event is refused again: from the fold when its task gained an
/// event, else from the stored verdict. `TaskStore` does the reading and
/// writing around it.
///
/// The common case costs no history: a task whose new events all come after
/// every stored one (later timestamps: the usual case when webhooks arrive
/// in time order) goes on from its row (`TaskRules.extend`), which is the
/// fold of its stored events, kept so under the partition locks. Only the
/// others (an event older than one stored, pending events, a row without
/// events) are folded again from all of their events.
struct BatchPlan {
    /// What the database holds of the batch's tasks (those the cache did not answer).
    struct Stored {
        /// Every stored event identity of those tasks.
        var identities: Set<EventKey> = []
        /// Tasks with a row in `meetperry.task`, with where the row is.
        var rowAddresses: [String: RowAddress] = [:]
        /// The stored events the rules refuse, with the refusal.
        var refusals: [EventKey: EventDisposition] = [:]
        /// The latest timestamp among each task's stored events (a task with none has no history).
        var latest: [String: Timestamp] = [:]
        /// The rows (with a creation date) of tasks that gained an event, as the
        /// rules' state (`addRows`): read only when the batch has new events.
        var rows: [String: TaskState] = [:]
        /// A mark of each stored event of each task read whole: what the cache is to remember of them.
        var marks: [String: TaskCache.Marks] = [:]
    }

    /// A stored event of a task that gained one, with its stored verdict (and
    /// what else its line held, to say so should the verdict change).
    struct StoredEvent {
        var webhook: Webhook
        var identity: EventKey
        var refusal: EventDisposition?
        var receivedAt: Timestamp? = nil
        var deliveryId: String? = nil
    }

    /// A stored event whose verdict the fold changed (`refusal` nil: no longer refused).
    struct VerdictChange: Equatable {
        var taskId: String
        var identity: EventKey
        var refusal: EventDisposition?
    }

    /// A task's row that the fold changed, by how the row is found.
    struct RowUpdate: Equatable {
        var locator: RowLocator
        var state: TaskState
        /// The task's number in the batch (`PreparedBatch.tasks`).
        var task: Int32 = -1
    }

    /// The folded rows to write.
    struct Rows {
        /// Tasks without a row yet: copied in.
        var new: [TaskState] = []
        /// Tasks with a row that changed: updated (an unchanged row is left alone,
        /// so a replay never touches `updated_date`).
        var existing: [RowUpdate] = []
    }

    let batch: PreparedBatch
    private(set) var stored: Stored
    /// What the cache answered, by task number (`PreparedBatch.tasks`; empty: no cache).
    let cached: [TaskCache.Entry?]
    /// The indices of the batch's new events, in batch order.
    private(set) var newItems: [Int] = []
    /// The indices of the rest: duplicates of stored events or of earlier ones in the batch.
    private(set) var duplicateItems: [Int] = []
    var duplicates: Int { duplicateItems.count }
    /// The stored events of tasks that gained one (added by `addStored`).
    private var storedEvents: [StoredEvent] = []
    /// The events of one task that gained one.
    struct TaskEvents {
        /// The new ones (in batch order), then (once added) the stored ones.
        var webhooks: [Webhook] = []
        /// The batch indices of the new ones: `webhooks`' first elements.
        var newIndices: [Int] = []
        /// Whether it goes on from its row (its new events all come after its stored ones).
        var extending = false
    }
    /// Every event of each task, by task number (none for a task that gained nothing).
    private var events: [TaskEvents]
    /// The numbers of the tasks that gained an event, in order of their first new one.
    private(set) var gained: [Int32] = []

    /// `stored`: what was read of the tasks the cache did not answer, and
    /// which of the batch's events the cache knows are stored; `cached`: the
    /// cache's answers, by task number.
    init(_ batch: PreparedBatch, stored: Stored, cached: [TaskCache.Entry?] = []) {
        self.batch = batch
        self.stored = stored
        self.cached = cached
        events = Array(repeating: TaskEvents(), count: batch.tasks.count)
        var known = stored.identities
        known.reserveCapacity(known.count + batch.count)
        for (index, identity) in batch.identities.enumerated() {
            if known.insert(identity).inserted {
                newItems.append(index)
                let task = Int(batch.taskOfItem[index])
                if events[task].newIndices.isEmpty { gained.append(Int32(task)) }
                events[task].add(batch.items[index].record.webhook, at: index)
            } else {
                duplicateItems.append(index)
            }
        }
    }

    /// Task `task`'s latest stored event time, how its row is found, its row: from the cache, else as read.
    private func latest(_ task: Int) -> Timestamp? { cached.isEmpty ? stored.latest[batch.tasks[task]] : cached[task]?.latest ?? stored.latest[batch.tasks[task]] }
    private func locator(_ task: Int) -> RowLocator? {
        if !cached.isEmpty, let locator = cached[task]?.locator { return locator }  // the locator alone: the entry is not copied
        return stored.rowAddresses[batch.tasks[task]].map(RowLocator.address)
    }
    private func row(_ task: Int) -> TaskState? { cached.isEmpty ? stored.rows[batch.tasks[task]] : cached[task]?.row ?? stored.rows[batch.tasks[task]] }

    /// Whether the cache answered task `task` (asked through a field, so its entry is not copied).
    private func isCached(_ task: Int) -> Bool { !cached.isEmpty && cached[task]?.latest != nil }

    /// The rows to read (`addRows`): those of the tasks that gained an event, but the cache's.
    var rowsToRead: [RowAddress] {
        gained.compactMap { task in isCached(Int(task)) ? nil : stored.rowAddresses[batch.tasks[Int(task)]] }
    }

    /// Adds the rows of the tasks that gained an event, and picks the tasks
    /// that go on from theirs.
    mutating func addRows(_ rows: [String: TaskState]) {
        stored.rows = rows
        for task in gained.lazy.map(Int.init) {
            guard let latest = latest(task), let row = row(task), row.createdDate <= latest,
                  events[task].webhooks.allSatisfy({ $0.timestamp > latest }) else { continue }
            events[task].extending = true
        }
    }

    /// Tasks that gained an event and have stored ones, but cannot go on from their rows:
    /// their history must be read to fold them.
    var tasksToRefold: [String] {
        gained.lazy.map(Int.init).filter { latest($0) != nil && !events[$0].extending }.map { batch.tasks[$0] }
    }

    /// Adds a stored event of a task that gained one.
    mutating func addStored(_ event: StoredEvent) {
        guard let task = batch.taskNumbers[event.webhook.taskId] else { return }
        events[Int(task)].webhooks.append(event.webhook)
        storedEvents.append(event)
    }

    /// Folds every task that gained an event (from its row, or from all of its
    /// events): the rows to write, what became of each event of the batch, and
    /// the verdicts to store (every new event the rules refuse, every stored
    /// one whose verdict changed).
    func fold() -> (rows: Rows, outcome: BatchOutcome, verdicts: [VerdictChange]) {
        let folded = foldKeepingStates()
        return (folded.rows, folded.outcome, folded.verdicts)
    }

    /// `fold`, with the state each task that gained an event is left in (a
    /// task still without a `created` has none), in `gained`'s order.
    func foldKeepingStates() -> (rows: Rows, outcome: BatchOutcome, verdicts: [VerdictChange], states: [TaskState?]) {
        var rows = Rows()
        var states: [TaskState?] = []
        states.reserveCapacity(gained.count)
        /// The verdict on each new event, by batch index.
        var dispositions = [EventDisposition](repeating: .applied, count: batch.count)
        /// The creation of each task folded again from stored events.
        var creations: [String: Webhook] = [:]
        for task in gained.lazy.map(Int.init) {
            let events = events[task]
            if events.extending, let row = row(task) {
                let (state, verdicts) = TaskRules.extend(row, with: events.webhooks)
                states.append(state)
                for (index, verdict) in zip(events.newIndices, verdicts) { dispositions[index] = verdict }
                if state != row, let locator = locator(task) { rows.existing.append(RowUpdate(locator: locator, state: state, task: Int32(task))) }
                continue
            }
            let (state, creation) = TaskRules.foldState(events.webhooks)
            for index in events.newIndices {
                dispositions[index] = TaskRules.disposition(of: batch.items[index].record.webhook, creation: creation)
            }
            if events.webhooks.count > events.newIndices.count { creations[batch.tasks[task]] = creation }
            states.append(state)
            guard let state else { continue }
            if let locator = locator(task) {
                if state != row(task) { rows.existing.append(RowUpdate(locator: locator, state: state, task: Int32(task))) }
            } else {
                rows.new.append(state)
            }
        }
        var outcome = BatchOutcome()
        var verdicts: [VerdictChange] = []
        /// What this fold refuses, of the new events and of the stored ones folded again.
        var refusedNow: [EventKey: EventDisposition] = [:]
        for index in newItems {
            switch dispositions[index] {
            case .applied: outcome.applied += 1
            case .pending: outcome.pending += 1
            case let refusal:
                outcome.rejected.append((batch.items[index], refusal))
                verdicts.append(VerdictChange(taskId: batch.items[index].record.webhook.taskId, identity: batch.identities[index], refusal: refusal))
                refusedNow[batch.identities[index]] = refusal
            }
        }
        for event in storedEvents {
            let refusal = event.refusal(creation: creations[event.webhook.taskId])
            if refusal != event.refusal {
                verdicts.append(VerdictChange(taskId: event.webhook.taskId, identity: event.identity, refusal: refusal))
                let cause = batch.taskNumbers[event.webhook.taskId].flatMap { events[Int($0)].newIndices.first }.map { batch.items[$0].line } ?? 0
                outcome.verdictChanges.append(.init(record: StreamRecord(webhook: event.webhook, receivedAt: event.receivedAt, deliveryId: event.deliveryId),
                                                    before: event.refusal, after: refusal, causedBy: cause))
            }
            if let refusal { refusedNow[event.identity] = refusal }
        }
        // A duplicate shares the verdict of the event it repeats: as this fold
        // made it when its task was folded again; else (its task gained nothing,
        // or went on from its row, which leaves stored verdicts as they are) as stored.
        for index in duplicateItems {
            let identity = batch.identities[index], task = Int(batch.taskOfItem[index])
            let foldedAgain = !events[task].newIndices.isEmpty && !events[task].extending
            let refusal = refusedNow[identity] ?? (foldedAgain ? nil : stored.refusals[identity])
            if let refusal { outcome.rejected.append((batch.items[index], refusal)) } else { outcome.duplicates += 1 }
        }
        return (rows, outcome, verdicts, states)
    }

    /// What the cache is to remember once the batch commits: each task that
    /// gained an event as it is now (its state; how its row is found now:
    /// `addresses` for the rows updated, by task number, else as before,
    /// or copied in by `transaction` for a new row; its latest time; a mark
    /// of each stored event with its verdict as stored now), or forgotten
    /// when it has no row, or is deleted; and the partitions' versions the
    /// write left. `states` as `foldKeepingStates` made them: in `gained`'s order.
    func remembrance(states: [TaskState?], verdicts: [VerdictChange], addresses: [RowAddress?],
                     versions: [Int: Int64], transaction: TransactionID) -> TaskCache.Update {
        var update = TaskCache.Update(versions: versions)
        update.entries.reserveCapacity(gained.count)
        let verdictsByTask = verdicts.isEmpty ? [:] : Dictionary(grouping: verdicts, by: \.taskId)
        for (task, state) in zip(gained.lazy.map(Int.init), states) {
            let taskId = batch.tasks[task]
            // A task with a state has a row now: updated (its address returned), left as it was, or copied in.
            let locator = (addresses.isEmpty ? nil : addresses[task]).map(RowLocator.address) ?? locator(task) ?? .copiedIn(by: transaction)
            guard let state, TaskCache.keeps(state) else {
                update.forgotten.append(taskId)
                continue
            }
            let changes = verdictsByTask.isEmpty ? [] : verdictsByTask[taskId] ?? []
            var marks = (cached.isEmpty ? nil : cached[task]?.marks) ?? stored.marks[taskId] ?? TaskCache.Marks()
            for change in changes {
                if let i = marks.firstIndex(where: { $0.matches(change.identity) }) { marks[i].set(change.refusal) }
            }
            var latest = latest(task)
            for index in events[task].newIndices {
                let identity = batch.identities[index]
                marks.append(TaskCache.Mark(identity, refusal: changes.first { $0.identity == identity }?.refusal))
                let timestamp = batch.items[index].record.webhook.timestamp
                if latest.map({ timestamp > $0 }) ?? true { latest = timestamp }
            }
            guard let latest, !marks.overflowed else {
                update.forgotten.append(taskId)
                continue
            }
            update.entries.append(TaskCache.Entry(row: state, locator: locator, latest: latest, marks: marks))
        }
        return update
    }
}

extension BatchPlan.StoredEvent {
    /// What `task_event.rejection` is to hold for this event, given its
    /// task's creation: the rules' refusal, or nil when they take it.
    func refusal(creation: Webhook?) -> EventDisposition? {
        let verdict = TaskRules.disposition(of: webhook, creation: creation)
        return verdict.rejectionCode == nil ? nil : verdict
    }
}

extension BatchPlan.TaskEvents {
    mutating func add(_ webhook: Webhook, at index: Int) {
        webhooks.append(webhook)
        newIndices.append(index)
    }
}

/// How a batch finds a task's row to update it.
enum RowLocator: Equatable, Sendable {
    /// Where it is (`RowAddress`): read, or returned by an update, under the partition locks.
    case address(RowAddress)
    /// Copied in by this connection's transaction `by` (COPY says not where):
    /// found by its task id (an index look-up, which the update would
    /// otherwise make in a read of its own), and only while it is still the
    /// version that transaction made (`xmin`): a row someone else changed or
    /// deleted since fails the batch, as a moved row does. (Learning the
    /// copied rows' addresses instead, by a range scan of the table's new
    /// blocks, was tried: an update found by address skips the page pruning
    /// an index look-up does, so the next update of the row found no room
    /// beside it and was not HOT, 245k of 468k instead of 464k; slower.)
    case copiedIn(by: TransactionID)
}

/// A PostgreSQL transaction id as a row's `xmin` holds it: the low 32 bits
/// of `pg_current_xact_id()`.
typealias TransactionID = UInt32

/// Where a row of `meetperry.task` is: its `ctid` (block, line). Read under
/// the partition locks, a row stays where it is until the transaction ends
/// (only a writer that takes no locks could move it, and the update notices),
/// so a batch reads and updates its rows without an index look-up.
struct RowAddress: Hashable, Sendable {
    var block: UInt32
    var offset: UInt16

    /// The `tid` literal: `(block,offset)`.
    var literal: String { "(\(block),\(offset))" }
}
