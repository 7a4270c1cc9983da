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
    /// What the database holds of the batch's tasks.
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
        /// rules' state (`addRows`): read only when the batch has new events
        /// (the cache's come with them).
        var rows: [String: TaskState] = [:]
        /// A mark of each stored event of each task read whole (from the
        /// database's stored state, or the cache): what the cache remembers of them.
        var marks: [String: TaskCache.Marks] = [:]

        /// Both: what the cache answered and what was read of the other tasks
        /// (no task in both). The larger one is kept and the smaller added to it.
        mutating func merge(_ other: Stored) {
            guard identities.count + latest.count >= other.identities.count + other.latest.count else {
                var larger = other
                larger.merge(self)
                self = larger
                return
            }
            identities.formUnion(other.identities)
            rowAddresses.merge(other.rowAddresses) { $1 }
            refusals.merge(other.refusals) { $1 }
            latest.merge(other.latest) { $1 }
            rows.merge(other.rows) { $1 }
            marks.merge(other.marks) { $1 }
        }
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

    /// A task's row that the fold changed, by where the row is.
    struct RowUpdate: Equatable {
        var address: RowAddress
        var state: TaskState
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
    }
    /// Every event of each task that gained one.
    private(set) var eventsByTask: [String: TaskEvents] = [:]
    /// Tasks that gained only events later than all of theirs stored: they go on from their rows.
    private(set) var extending: Set<String> = []

    init(_ batch: PreparedBatch, stored: Stored) {
        self.batch = batch
        self.stored = stored
        var known = stored.identities
        known.reserveCapacity(known.count + batch.count)
        eventsByTask.reserveCapacity(batch.count)
        for (index, identity) in batch.identities.enumerated() {
            if known.insert(identity).inserted {
                newItems.append(index)
                let webhook = batch.items[index].record.webhook
                eventsByTask[webhook.taskId, default: TaskEvents()].add(webhook, at: index)
            } else {
                duplicateItems.append(index)
            }
        }
    }

    /// The rows to read (`addRows`): those of the tasks that gained an event, but the cache's.
    var rowsToRead: [RowAddress] { eventsByTask.keys.compactMap { stored.rows[$0] == nil ? stored.rowAddresses[$0] : nil } }

    /// Adds the rows of the tasks that gained an event, and picks the tasks
    /// that go on from theirs.
    mutating func addRows(_ rows: [String: TaskState]) {
        stored.rows.merge(rows) { $1 }
        for (taskId, events) in eventsByTask {
            guard let latest = stored.latest[taskId], let row = stored.rows[taskId], row.createdDate <= latest,
                  events.webhooks.allSatisfy({ $0.timestamp > latest }) else { continue }
            extending.insert(taskId)
        }
    }

    /// Tasks that gained an event and have stored ones, but cannot go on from their rows:
    /// their history must be read to fold them.
    var tasksToRefold: [String] { eventsByTask.keys.filter { stored.latest[$0] != nil && !extending.contains($0) } }

    /// Adds a stored event of a task that gained one.
    mutating func addStored(_ event: StoredEvent) {
        eventsByTask[event.webhook.taskId, default: TaskEvents()].webhooks.append(event.webhook)
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
    /// task still without a `created` has none), in `eventsByTask`'s order.
    func foldKeepingStates() -> (rows: Rows, outcome: BatchOutcome, verdicts: [VerdictChange], states: [TaskState?]) {
        var rows = Rows()
        var states: [TaskState?] = []
        states.reserveCapacity(eventsByTask.count)
        /// The verdict on each new event, by batch index.
        var dispositions = [EventDisposition](repeating: .applied, count: batch.count)
        /// The creation of each task folded again from stored events.
        var creations: [String: Webhook] = [:]
        for (taskId, events) in eventsByTask {
            if extending.contains(taskId), let row = stored.rows[taskId] {
                let (state, verdicts) = TaskRules.extend(row, with: events.webhooks)
                states.append(state)
                for (index, verdict) in zip(events.newIndices, verdicts) { dispositions[index] = verdict }
                if state != row, let address = stored.rowAddresses[taskId] { rows.existing.append(RowUpdate(address: address, state: state)) }
                continue
            }
            let (state, creation) = TaskRules.foldState(events.webhooks)
            for index in events.newIndices {
                dispositions[index] = TaskRules.disposition(of: batch.items[index].record.webhook, creation: creation)
            }
            if events.webhooks.count > events.newIndices.count { creations[taskId] = creation }
            states.append(state)
            guard let state else { continue }
            if let address = stored.rowAddresses[taskId] {
                if state != stored.rows[taskId] { rows.existing.append(RowUpdate(address: address, state: state)) }
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
                let cause = eventsByTask[event.webhook.taskId]?.newIndices.first.map { batch.items[$0].line } ?? 0
                outcome.verdictChanges.append(.init(record: StreamRecord(webhook: event.webhook, receivedAt: event.receivedAt, deliveryId: event.deliveryId),
                                                    before: event.refusal, after: refusal, causedBy: cause))
            }
            if let refusal { refusedNow[event.identity] = refusal }
        }
        // A duplicate shares the verdict of the event it repeats: as this fold
        // made it when its task was folded again; else (its task gained nothing,
        // or went on from its row, which leaves stored verdicts as they are) as stored.
        for index in duplicateItems {
            let identity = batch.identities[index], taskId = batch.items[index].record.webhook.taskId
            let foldedAgain = eventsByTask[taskId] != nil && !extending.contains(taskId)
            let refusal = refusedNow[identity] ?? (foldedAgain ? nil : stored.refusals[identity])
            if let refusal { outcome.rejected.append((batch.items[index], refusal)) } else { outcome.duplicates += 1 }
        }
        return (rows, outcome, verdicts, states)
    }

    /// What the cache is to remember once the batch commits: each task that
    /// gained an event as it is now (its state, where its row is now: `addresses`
    /// for the rows written, else where it was; its latest time; a mark of each
    /// stored event with its verdict as stored now), or forgotten when it has no
    /// row; and the partitions' versions the write left.
    /// `states` as `foldKeepingStates` made them: in `eventsByTask`'s order.
    func remembrance(states: [TaskState?], verdicts: [VerdictChange], addresses: [String: RowAddress],
                     versions: [Int: Int64]) -> TaskCache.Update {
        var update = TaskCache.Update(versions: versions)
        update.entries.reserveCapacity(eventsByTask.count)
        let verdictsByTask = verdicts.isEmpty ? [:] : Dictionary(grouping: verdicts, by: \.taskId)
        for ((taskId, events), state) in zip(eventsByTask, states) {
            guard let state, let address = addresses[taskId] ?? stored.rowAddresses[taskId] else {
                update.forgotten.append(taskId)
                continue
            }
            let changes = verdictsByTask[taskId] ?? []
            var marks = stored.marks[taskId] ?? TaskCache.Marks()
            for change in changes {
                if let i = marks.firstIndex(where: { $0.matches(change.identity) }) { marks[i].set(change.refusal) }
            }
            var latest = stored.latest[taskId]
            for index in events.newIndices {
                let identity = batch.identities[index]
                marks.append(TaskCache.Mark(identity, refusal: changes.first { $0.identity == identity }?.refusal))
                let timestamp = batch.items[index].record.webhook.timestamp
                if latest.map({ timestamp > $0 }) ?? true { latest = timestamp }
            }
            guard let latest, !marks.overflowed else {
                update.forgotten.append(taskId)
                continue
            }
            update.entries.append(TaskCache.Entry(row: state, address: address, latest: latest, marks: marks))
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
