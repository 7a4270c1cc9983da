import WebhookModel

/// What the events committed since the previous run change in reports that
/// are already written. Pure (no database, no files), so the rules of a
/// correction are tested on their own.
///
/// A late event of a task changes that task's placement in the window its
/// timestamp falls in and possibly in every later one (a late completion
/// leaves the old-incomplete lists after it). So each owner with late events
/// is looked at again for every recorded window ending at or after their
/// earliest late event, and a window's file is rewritten when the placement
/// of one of the late tasks differs from what the previous run saw.
public struct CorrectionPlan: Sendable {
    /// Late events older than this are counted and logged, never corrected.
    public let horizonStart: Timestamp
    /// Every late event found, whatever became of it.
    public private(set) var lateEvents = 0
    /// Late events older than the horizon (their windows are not rewritten).
    public private(set) var beyondHorizon = 0
    public private(set) var earliestBeyondHorizon: Timestamp?
    /// Late events of tasks without a row yet (their `created` has not arrived): nothing to report.
    public private(set) var waitingForCreated = 0
    /// Per owner: the earliest late event within the horizon, and the tasks that had late events.
    public private(set) var earliestByUser: [String: Timestamp] = [:]
    public private(set) var lateTasksByUser: [String: Set<String>] = [:]

    public init(horizonStart: Timestamp) {
        self.horizonStart = horizonStart
    }

    public mutating func add(_ event: ReportStore.LateEvent) {
        lateEvents += 1
        guard event.occurredAt >= horizonStart else {
            beyondHorizon += 1
            earliestBeyondHorizon = min(earliestBeyondHorizon ?? event.occurredAt, event.occurredAt)
            return
        }
        guard let owner = event.owner else {
            waitingForCreated += 1
            return
        }
        earliestByUser[owner] = min(earliestByUser[owner] ?? event.occurredAt, event.occurredAt)
        lateTasksByUser[owner, default: []].insert(event.taskId)
    }

    /// Owners to look at again, in byte order (the order the database streams them).
    public var users: [String] { earliestByUser.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) } }

    /// The earliest late event within the horizon.
    public var earliest: Timestamp? { earliestByUser.values.min() }

    /// The reports of `user` that change, one per window (oldest first),
    /// rendered from `tasks` (every task of the user) exactly as an on-demand
    /// report of that window and user would be, except that a report whose
    /// lists became empty is kept (a stale file must not outlive its content).
    public func corrections(user: String, tasks: [StoredTask], windows: [ReportWindow]) -> [UserReport] {
        guard let earliest = earliestByUser[user], let lateIds = lateTasksByUser[user] else { return [] }
        let late = tasks.filter { lateIds.contains($0.row.taskId) }
        var reports: [UserReport] = []
        for window in windows where window.end >= earliest {
            let changed = late.contains { task in
                guard task.hasCreatedEvent else { return true } // a seed row: what was written is unknown
                let now = task.isCandidate(for: window) ? UserReport.placement(of: task.asOf(window.end), in: window) : nil
                let before = task.asOfBefore(window.end).flatMap { UserReport.placement(of: $0, in: window) }
                return now?.0 != before?.0 || now?.1 != before?.1
            }
            guard changed else { continue }
            var report = UserReport(userId: user, window: window)
            for task in tasks where task.isCandidate(for: window) {
                report.add(task.asOf(window.end))
            }
            reports.append(report)
        }
        return reports
    }
}
