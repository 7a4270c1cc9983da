import TaskModel
import WebhookModel

/// A task as the database holds it: its row and, when the report needs
/// them, its events. One place decides how a task looks as of a window's
/// end, so the new window's report, a correction and an on-demand report of
/// the same window can never disagree.
public struct StoredTask: Sendable {
    /// One stored event, and whether the previous run's snapshot saw it
    /// (always true where that does not matter).
    public struct Event: Sendable, Equatable {
        public var webhook: Webhook
        public var seenBefore: Bool
    }

    public var row: TaskSnapshot
    public var events: [Event]

    public init(row: TaskSnapshot, events: [Event]) {
        self.row = row
        self.events = events
    }

    /// Whether the report query would return this row for `window` (see `ReportStore.streamTasks`).
    public func isCandidate(for window: ReportWindow) -> Bool {
        row.createdDate <= window.end && (row.deletedDate.map { $0 > window.start } ?? true)
    }

    /// The task as of `end`. With no event after `end` the row is exactly
    /// its state then; otherwise it is folded from its events up to `end`
    /// (the row still, when those make no task: a row the seed made).
    public func asOf(_ end: Timestamp) -> TaskSnapshot {
        guard events.contains(where: { $0.webhook.timestamp > end }) else { return row }
        return Self.fold(events.map(\.webhook), taskId: row.taskId, asOf: end) ?? row
    }

    /// The task as of `end` as the previous run saw it: folded from the events
    /// that run's snapshot held. Nil when it knew no `created`.
    public func asOfBefore(_ end: Timestamp) -> TaskSnapshot? {
        Self.fold(events.filter(\.seenBefore).map(\.webhook), taskId: row.taskId, asOf: end)
    }

    /// Whether the task has a `created` event at all (a row the seed made may not).
    public var hasCreatedEvent: Bool { events.contains { $0.webhook.event == .created } }

    static func fold(_ events: [Webhook], taskId: String, asOf end: Timestamp) -> TaskSnapshot? {
        guard let state = TaskRules.foldState(events, asOf: end).state else { return nil }
        return TaskSnapshot(taskId: taskId, content: state.content, createdDate: state.createdDate,
                            completedDate: state.completedDate, deletedDate: state.deletedDate)
    }
}
