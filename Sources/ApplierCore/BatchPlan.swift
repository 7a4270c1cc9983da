import TaskModel
import WebhookModel

/// What one batch does, worked out without the database, in two steps:
/// given what is stored of its tasks, which of its events are new (every
/// other is a duplicate, of a stored event or of one earlier in the batch);
/// then, given the stored events of the tasks that gained one, each such
/// task's row as the rules fold it, what became of each event of the batch,
/// and which stored verdicts (`task_event.rejection`) changed. A duplicate of
/// a refused event is refused again: from the fold when its task gained an
/// event, else from the stored verdict. `TaskStore` does the reading and
/// writing around it.
struct BatchPlan {
    /// What the database holds of the batch's tasks.
    struct Stored {
        /// Every stored event identity of those tasks.
        var identities: Set<EventKey> = []
        /// Tasks with at least one stored event.
        var tasksWithHistory: Set<String> = []
        /// Tasks with a row in `meetperry.task`.
        var tasksWithRow: Set<String> = []
        /// The stored events the rules refuse, with the refusal.
        var refusals: [EventKey: EventDisposition] = [:]
    }

    /// A stored event of a task that gained one, with its stored verdict.
    struct StoredEvent {
        var webhook: Webhook
        var identity: EventKey
        var refusal: EventDisposition?
    }

    /// A stored event whose verdict the fold changed (`refusal` nil: no longer refused).
    struct VerdictChange: Equatable {
        var taskId: String
        var identity: EventKey
        var refusal: EventDisposition?
    }

    /// The folded rows to write.
    struct Rows {
        /// Tasks without a row yet: copied in.
        var new: [TaskState] = []
        /// Tasks with a row: updated where they changed.
        var existing: [TaskState] = []
    }

    let batch: PreparedBatch
    let stored: Stored
    /// The indices of the batch's new events, in batch order.
    private(set) var newItems: [Int] = []
    /// The indices of the rest: duplicates of stored events or of earlier ones in the batch.
    private(set) var duplicateItems: [Int] = []
    var duplicates: Int { duplicateItems.count }
    /// The stored events of tasks that gained one (added by `addStored`).
    private var storedEvents: [StoredEvent] = []
    /// Every event of each task that gained one: the new ones, then (once added) the stored ones.
    private(set) var eventsByTask: [String: [Webhook]] = [:]

    init(_ batch: PreparedBatch, stored: Stored) {
        self.batch = batch
        self.stored = stored
        var known = stored.identities
        for (index, identity) in batch.identities.enumerated() {
            if known.insert(identity).inserted {
                newItems.append(index)
                let webhook = batch.items[index].record.webhook
                eventsByTask[webhook.taskId, default: []].append(webhook)
            } else {
                duplicateItems.append(index)
            }
        }
    }

    /// Tasks that gained an event and have stored ones: their history must be read to fold them.
    var tasksToRefold: [String] { eventsByTask.keys.filter(stored.tasksWithHistory.contains) }

    /// Adds a stored event of a task that gained one.
    mutating func addStored(_ event: StoredEvent) {
        eventsByTask[event.webhook.taskId, default: []].append(event.webhook)
        storedEvents.append(event)
    }

    /// Folds every task that gained an event from all of its events: the rows
    /// to write, what became of each event of the batch, and the verdicts to
    /// store (every new event the rules refuse, every stored one whose verdict changed).
    func fold() -> (rows: Rows, outcome: BatchOutcome, verdicts: [VerdictChange]) {
        var rows = Rows()
        var creations: [String: Webhook] = [:]
        creations.reserveCapacity(eventsByTask.count)
        for (taskId, events) in eventsByTask {
            let (state, creation) = TaskRules.foldState(events)
            creations[taskId] = creation
            guard let state else { continue }
            if stored.tasksWithRow.contains(taskId) { rows.existing.append(state) } else { rows.new.append(state) }
        }
        var outcome = BatchOutcome()
        var verdicts: [VerdictChange] = []
        for index in newItems {
            let item = batch.items[index]
            let webhook = item.record.webhook
            switch TaskRules.disposition(of: webhook, creation: creations[webhook.taskId]) {
            case .applied: outcome.applied += 1
            case .pending: outcome.pending += 1
            case let refusal:
                outcome.rejected.append((item, refusal))
                verdicts.append(VerdictChange(taskId: webhook.taskId, identity: batch.identities[index], refusal: refusal))
            }
        }
        for event in storedEvents {
            let verdict = TaskRules.disposition(of: event.webhook, creation: creations[event.webhook.taskId])
            let refusal = verdict.rejectionCode == nil ? nil : verdict
            if refusal != event.refusal {
                verdicts.append(VerdictChange(taskId: event.webhook.taskId, identity: event.identity, refusal: refusal))
            }
        }
        for index in duplicateItems {
            let item = batch.items[index]
            let webhook = item.record.webhook
            let refusal: EventDisposition?
            if eventsByTask[webhook.taskId] != nil {
                let verdict = TaskRules.disposition(of: webhook, creation: creations[webhook.taskId])
                refusal = verdict.rejectionCode == nil ? nil : verdict
            } else {
                refusal = stored.refusals[batch.identities[index]]
            }
            if let refusal { outcome.rejected.append((item, refusal)) } else { outcome.duplicates += 1 }
        }
        return (rows, outcome, verdicts)
    }
}
