import WebhookModel

/// The state of one task in `meetperry.task`, as the rules derive it.
public struct TaskState: Sendable, Hashable {
    public var taskId: String
    public var userId: String
    public var content: String
    public var createdDate: Timestamp
    public var completedDate: Timestamp?
    public var deletedDate: Timestamp?

    public init(taskId: String, userId: String, content: String, createdDate: Timestamp, completedDate: Timestamp?, deletedDate: Timestamp?) {
        self.taskId = taskId
        self.userId = userId
        self.content = content
        self.createdDate = createdDate
        self.completedDate = completedDate
        self.deletedDate = deletedDate
    }
}

/// What the rules made of one event of a task.
public enum EventDisposition: Sendable, Hashable {
    /// Part of the task's state (including events after the deletion, which are kept but change nothing).
    case applied
    /// An `updated` / `deleted` whose `created` has not arrived yet.
    case pending
    /// Another `created` for the same task lost to an earlier one.
    case rejectedConflict
    /// Sent by a user other than the task's creator.
    case rejectedOwner

    /// How a refusal is kept in the event log (`meetperry.task_event.rejection`)
    /// and named in metrics; nil for an event the rules take.
    public var rejectionCode: String? {
        switch self {
        case .rejectedConflict: return "conflicting_created"
        case .rejectedOwner: return "owner_change"
        case .applied, .pending: return nil
        }
    }

    /// The refusal a stored `rejection` code names (nil for an unknown code).
    public init?(rejectionCode code: String) {
        switch code {
        case "conflicting_created": self = .rejectedConflict
        case "owner_change": self = .rejectedOwner
        default: return nil
        }
    }

    public var rejectionReason: String? {
        switch self {
        case .rejectedConflict: return "conflicting created event: the task was already created by an earlier event"
        case .rejectedOwner: return "userId differs from the task's creator: a task never changes owner"
        case .applied, .pending: return nil
        }
    }
}

/// The applier's rules (README.md, The applier) as a pure function: the state of a task is a function of the
/// *set* of its events. Events are put in one total order first (timestamp,
/// then created < updated < deleted, then the rest of the identity byte-wise),
/// so neither arrival order nor duplicates can change the outcome.
public enum TaskRules {
    /// The total order every rule walks in.
    static func precedes(_ a: Webhook, _ b: Webhook) -> Bool {
        if a.timestamp != b.timestamp { return a.timestamp < b.timestamp }
        if a.event != b.event { return rank(a.event) < rank(b.event) }
        return identityBytesPrecede(a, b)
    }

    static func rank(_ event: WebhookEvent) -> Int {
        switch event {
        case .created: return 0
        case .updated: return 1
        case .deleted: return 2
        }
    }

    /// Byte-wise comparison of the rest of the identity: userId, content, isCompleted (false first), id.
    static func identityBytesPrecede(_ a: Webhook, _ b: Webhook) -> Bool {
        if a.userId != b.userId { return a.userId.utf8.lexicographicallyPrecedes(b.userId.utf8) }
        if a.content != b.content { return a.content.utf8.lexicographicallyPrecedes(b.content.utf8) }
        if a.isCompleted != b.isCompleted { return !a.isCompleted }
        return a.taskId.utf8.lexicographicallyPrecedes(b.taskId.utf8)
    }

    /// Folds every event known for one task (any order, duplicates allowed).
    ///
    /// - Parameter asOf: consider only events timestamped at or before this
    ///   instant (the reporter judges a window as of its end); nil for all.
    /// - Returns: the task's state (nil while no `created` is known) and what
    ///   became of each distinct event.
    public static func fold(_ events: [Webhook], asOf: Timestamp? = nil) -> (state: TaskState?, dispositions: [Webhook: EventDisposition]) {
        let (state, creation) = foldState(events, asOf: asOf)
        var dispositions: [Webhook: EventDisposition] = [:]
        for event in events where asOf.map({ event.timestamp <= $0 }) ?? true {
            dispositions[event] = disposition(of: event, creation: creation)
        }
        return (state, dispositions)
    }

    /// What became of `event`, given the `created` that made its task (nil while none is known).
    @inlinable
    public static func disposition(of event: Webhook, creation: Webhook?) -> EventDisposition {
        guard let creation else { return .pending }
        if event.userId != creation.userId { return .rejectedOwner }
        if event.event == .created && event != creation { return .rejectedConflict }
        return .applied
    }

    /// The fold continued: `state` is what `foldState` made of a task's
    /// events so far, and every one of `events` (distinct events) comes after
    /// all of those in the rules' order (its timestamp is later than theirs).
    /// Then the walk simply goes on from `state`: no earlier event needs to be
    /// seen again. Returns the new state and what became of each of `events`,
    /// in their order: a `created` is always a conflict here (the task's
    /// creation came earlier), and an event of another user than the creator
    /// is refused.
    public static func extend(_ state: TaskState, with events: [Webhook]) -> (state: TaskState, dispositions: [EventDisposition]) {
        var state = state
        var dispositions = [EventDisposition](repeating: .applied, count: events.count)
        // Most tasks gain one event a batch: no order to work out then.
        if events.count == 1 {
            dispositions[0] = extend(&state, with: events[0])
        } else {
            for index in events.indices.sorted(by: { precedes(events[$0], events[$1]) }) { dispositions[index] = extend(&state, with: events[index]) }
        }
        return (state, dispositions)
    }

    /// `extend` with one event, `state` changed in place: what became of the event.
    @inlinable
    public static func extend(_ state: inout TaskState, with event: Webhook) -> EventDisposition {
        precondition(event.timestamp > state.createdDate, "extend() is for events after the task's history")
        if event.userId != state.userId { return .rejectedOwner }
        if event.event == .created { return .rejectedConflict }
        apply(event, to: &state)
        return .applied
    }

    /// One step of the walk in time order, for an event the rules apply: the
    /// earliest deletion ends the history (later events change nothing), and
    /// an update timestamped before the creation changes nothing either.
    @inlinable
    static func apply(_ event: Webhook, to state: inout TaskState) {
        switch event.event {
        case .created:
            return
        case .deleted:
            if state.deletedDate == nil { state.deletedDate = event.timestamp }
        case .updated:
            guard state.deletedDate == nil, event.timestamp >= state.createdDate else { return }
            state.content = event.content
            if event.isCompleted {
                if state.completedDate == nil { state.completedDate = event.timestamp }
            } else {
                state.completedDate = nil
            }
        }
    }

    /// `foldState` of a task's only event, without an array to hold it: a
    /// `created` makes the task as it says; anything else waits for one.
    @inlinable
    public static func foldState(of event: Webhook) -> (state: TaskState?, creation: Webhook?) {
        event.event == .created ? (TaskState(madeBy: event), event) : (nil, nil)
    }

    /// The state alone, and the `created` that made the task: one sort and one
    /// walk, no hashing (this runs for every task of every batch).
    public static func foldState(_ events: [Webhook], asOf: Timestamp? = nil) -> (state: TaskState?, creation: Webhook?) {
        var sorted = asOf.map { limit in events.filter { $0.timestamp <= limit } } ?? events
        // Sorting shares nothing: one event (a new task's `created`) is left as it is, not copied to be sorted.
        if sorted.count > 1 { sorted.sort(by: precedes) }
        // The earliest `created` (ties: smaller identity) makes the task.
        guard let creation = sorted.first(where: { $0.event == .created }) else { return (nil, nil) }

        // Walk in time order (`apply`). Duplicates are equal under the order, so adjacent.
        var state = TaskState(madeBy: creation)
        var previous: Webhook?
        for event in sorted {
            if event == previous { continue }
            previous = event
            guard disposition(of: event, creation: creation) == .applied else { continue }
            apply(event, to: &state)
        }
        return (state, creation)
    }
}

extension TaskState {
    /// A task as its `created` makes it, before any other event.
    @usableFromInline
    init(madeBy creation: Webhook) {
        self.init(taskId: creation.taskId, userId: creation.userId, content: creation.content, createdDate: creation.timestamp,
                  completedDate: creation.isCompleted ? creation.timestamp : nil, deletedDate: nil)
    }
}
