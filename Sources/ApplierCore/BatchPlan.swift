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
        /// rules' state (`addRows`): read only when the batch has new events.
        var rows: [String: TaskState] = [:]
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

    /// The rows to read (`addRows`): those of the tasks that gained an event.
    var rowsToRead: [RowAddress] { eventsByTask.keys.compactMap { stored.rowAddresses[$0] } }

    /// Adds the rows of the tasks that gained an event, and picks the tasks
    /// that go on from theirs.
    mutating func addRows(_ rows: [String: TaskState]) {
        stored.rows = rows
        for (taskId, events) in eventsByTask {
            guard let latest = stored.latest[taskId], let row = rows[taskId], row.createdDate <= latest,
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
        var rows = Rows()
        /// The verdict on each new event, by batch index.
        var dispositions = [EventDisposition](repeating: .applied, count: batch.count)
        /// The creation of each task folded again from stored events.
        var creations: [String: Webhook] = [:]
        for (taskId, events) in eventsByTask {
            if extending.contains(taskId), let row = stored.rows[taskId] {
                let (state, verdicts) = TaskRules.extend(row, with: events.webhooks)
                for (index, verdict) in zip(events.newIndices, verdicts) { dispositions[index] = verdict }
                if state != row, let address = stored.rowAddresses[taskId] { rows.existing.append(RowUpdate(address: address, state: state)) }
                continue
            }
            let (state, creation) = TaskRules.foldState(events.webhooks)
            for index in events.newIndices {
                dispositions[index] = TaskRules.disposition(of: batch.items[index].record.webhook, creation: creation)
            }
            if events.webhooks.count > events.newIndices.count { creations[taskId] = creation }
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
        return (rows, outcome, verdicts)
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
