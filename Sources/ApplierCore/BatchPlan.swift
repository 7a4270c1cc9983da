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
    /// What a task gained in the batch. Its new events are a list through
    /// the batch's items (`first`, then `nextNew`), not an array of their
    /// own: most tasks gain one event a batch, and an array (or a copy of
    /// the event) for each was a good part of the applier's allocations.
    struct Gain {
        /// The first and last of its new events (batch indices; -1: none).
        var first: Int32 = -1
        var last: Int32 = -1
        var count: Int32 = 0
        /// Whether it goes on from its row (its new events all come after its stored ones).
        var extending = false
        /// Whether its stored events were added (`addStored`): it is folded again from them.
        var hasStored = false
    }
    /// What each task gained, by task number.
    private var gains: [Gain]
    /// The next new event of the same task, by batch index (-1: the last).
    private var nextNew: [Int32]
    /// The stored events of the tasks folded again, by task number.
    private var storedWebhooks: [Int32: [Webhook]] = [:]
    /// The numbers of the tasks that gained an event, in order of their first new one.
    private(set) var gained: [Int32] = []

    /// `stored`: what was read of the tasks the cache did not answer, and
    /// which of the batch's events the cache knows are stored; `cached`: the
    /// cache's answers, by task number.
    init(_ batch: PreparedBatch, stored: Stored, cached: [TaskCache.Entry?] = []) {
        self.batch = batch
        self.stored = stored
        self.cached = cached
        gains = Array(repeating: Gain(), count: batch.tasks.count)
        nextNew = Array(repeating: -1, count: batch.count)
        var known = stored.identities
        known.reserveCapacity(known.count + batch.count)
        for (index, identity) in batch.identities.enumerated() {
            if known.insert(identity).inserted {
                newItems.append(index)
                let task = Int(batch.taskOfItem[index])
                if gains[task].count == 0 {
                    gained.append(Int32(task))
                    gains[task].first = Int32(index)
                } else {
                    nextNew[Int(gains[task].last)] = Int32(index)
                }
                gains[task].last = Int32(index)
                gains[task].count += 1
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
    /// Its row's creation date (the row not copied).
    private func rowCreated(_ task: Int) -> Timestamp? {
        if !cached.isEmpty, let created = cached[task]?.row.createdDate { return created }
        return stored.rows[batch.tasks[task]]?.createdDate
    }

    /// The batch indices of task `task`'s new events, in batch order.
    private func newItems(of task: Int) -> ItemList { ItemList(links: nextNew, current: gains[task].first) }

    struct ItemList: Sequence, IteratorProtocol {
        let links: [Int32]
        var current: Int32
        mutating func next() -> Int? {
            guard current >= 0 else { return nil }
            defer { current = links[Int(current)] }
            return Int(current)
        }
    }

    /// Every event of task `task`: its new ones (in batch order), then its stored ones.
    private func webhooks(of task: Int) -> [Webhook] {
        var webhooks = newItems(of: task).map { batch.items[$0].record.webhook }
        if gains[task].hasStored { webhooks += storedWebhooks[Int32(task)] ?? [] }
        return webhooks
    }

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
            guard let latest = latest(task), let created = rowCreated(task), created <= latest,
                  newItems(of: task).allSatisfy({ batch.items[$0].record.webhook.timestamp > latest }) else { continue }
            gains[task].extending = true
        }
    }

    /// Tasks that gained an event and have stored ones, but cannot go on from their rows:
    /// their history must be read to fold them.
    var tasksToRefold: [String] {
        gained.lazy.map(Int.init).filter { latest($0) != nil && !gains[$0].extending }.map { batch.tasks[$0] }
    }

    /// Adds a stored event of a task that gained one.
    mutating func addStored(_ event: StoredEvent) {
        guard let task = batch.taskNumbers[event.webhook.taskId] else { return }
        gains[Int(task)].hasStored = true
        storedWebhooks[task, default: []].append(event.webhook)
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
        // Events read where they are (through the buffer: an array's element read is a copy of it, a retain of each string).
        batch.items.withUnsafeBufferPointer { items in
            for task in gained.lazy.map(Int.init) {
                let gain = gains[task]
                if gain.extending, let row = row(task) {
                    var state = row
                    if gain.count == 1 {
                        let index = Int(gain.first)
                        dispositions[index] = TaskRules.extend(&state, with: items[index].record.webhook)
                    } else {
                        let verdicts: [EventDisposition]
                        (state, verdicts) = TaskRules.extend(row, with: webhooks(of: task))
                        for (index, verdict) in zip(newItems(of: task), verdicts) { dispositions[index] = verdict }
                    }
                    states.append(state)
                    if state != row, let locator = locator(task) { rows.existing.append(RowUpdate(locator: locator, state: state, task: Int32(task))) }
                    continue
                }
                // A new task's one event (its creation, most often) is folded where it is.
                let (state, creation) = gain.count == 1 && !gain.hasStored
                    ? TaskRules.foldState(of: items[Int(gain.first)].record.webhook)
                    : TaskRules.foldState(webhooks(of: task))
                for index in newItems(of: task) {
                    dispositions[index] = TaskRules.disposition(of: items[index].record.webhook, creation: creation)
                }
                if gain.hasStored { creations[batch.tasks[task]] = creation }
                states.append(state)
                guard let state else { continue }
                if let locator = locator(task) {
                    if state != row(task) { rows.existing.append(RowUpdate(locator: locator, state: state, task: Int32(task))) }
                } else {
                    rows.new.append(state)
                }
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
                let cause = batch.taskNumbers[event.webhook.taskId].map { gains[Int($0)].first }.flatMap { $0 >= 0 ? batch.items[Int($0)].line : nil } ?? 0
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
            let foldedAgain = gains[task].count > 0 && !gains[task].extending
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
            for index in newItems(of: task) {
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
}
