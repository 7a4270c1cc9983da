import TaskModel
import WebhookModel

/// What one batch does, worked out without the database, in two steps:
/// given what is stored of its tasks, which of its events are new (every
/// other is a duplicate, of a stored event or of one earlier in the batch);
/// then, given the stored events of the tasks that gained one, each such
/// task's row as the rules fold it, and what became of each new event.
/// `TaskStore` does the reading and writing around it.
struct BatchPlan {
    /// What the database holds of the batch's tasks.
    struct Stored {
        /// Every stored event identity of those tasks.
        var identities: Set<EventKey> = []
        /// Tasks with at least one stored event.
        var tasksWithHistory: Set<String> = []
        /// Tasks with a row in `meetperry.task`.
        var tasksWithRow: Set<String> = []
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
    private(set) var duplicates = 0
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
                duplicates += 1
            }
        }
    }

    /// Tasks that gained an event and have stored ones: their history must be read to fold them.
    var tasksToRefold: [String] { eventsByTask.keys.filter(stored.tasksWithHistory.contains) }

    /// Adds a stored event of a task that gained one.
    mutating func addStored(_ event: Webhook) {
        eventsByTask[event.taskId, default: []].append(event)
    }

    /// Folds every task that gained an event from all of its events: the rows
    /// to write, and what became of each new event.
    func fold() -> (rows: Rows, outcome: BatchOutcome) {
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
        outcome.duplicates = duplicates
        for index in newItems {
            let item = batch.items[index]
            let webhook = item.record.webhook
            switch TaskRules.disposition(of: webhook, creation: creations[webhook.taskId]) {
            case .applied: outcome.applied += 1
            case .pending: outcome.pending += 1
            case let refusal: outcome.rejected.append((item, refusal))
            }
        }
        return (rows, outcome)
    }
}
