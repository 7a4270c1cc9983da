import TaskModel
import WebhookModel

/// What the events committed since the previous run change in reports that
/// are already written. Pure (no database, no files), so the rules of a
/// correction are tested on their own.
///
/// A late event of a task changes that task's placement in the window its
/// timestamp falls in and possibly in every later one (a late completion
/// leaves the old-incomplete lists after it), and a late, earlier `created`
/// from another user moves the task to that user altogether. So for every
/// recorded window ending at or after a task's earliest late event, the plan
/// compares where the task was (its owner and list, folded from the events
/// the previous run saw) with where it is now (its row's owner, and its list
/// as an on-demand report of that window would judge it), and every user
/// whose file of that window differs, the former owner as much as the new
/// one, has that file rewritten.
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
    /// The tasks with late events within the horizon, each with its earliest such event.
    public private(set) var lateTasks: [(task: StoredTask, owner: String, earliest: Timestamp)] = []
    /// Per user, the recorded windows whose file is rewritten, oldest first (see `decide`).
    public private(set) var rewrites: [String: [ReportWindow]] = [:]

    public init(horizonStart: Timestamp) {
        self.horizonStart = horizonStart
    }

    public mutating func add(_ late: ReportStore.LateTask) {
        lateEvents += late.lateEventTimes.count
        let within = late.lateEventTimes.filter { $0 >= horizonStart }
        for time in late.lateEventTimes where time < horizonStart {
            beyondHorizon += 1
            earliestBeyondHorizon = min(earliestBeyondHorizon ?? time, time)
        }
        guard let earliest = within.min() else { return }
        guard let task = late.task, let owner = late.owner else {
            waitingForCreated += within.count
            return
        }
        lateTasks.append((task, owner, earliest))
    }

    /// The earliest late event within the horizon.
    public var earliest: Timestamp? { lateTasks.map(\.earliest).min() }

    /// Compares each late task's placement before and now in every recorded
    /// window (`windows`, oldest first) ending at or after its earliest late
    /// event, and records which users' files of which windows change.
    public mutating func decide(windows: [ReportWindow]) {
        var changed: [String: Set<ReportWindow>] = [:]
        for (task, ownerNow, earliest) in lateTasks {
            let seen = task.events.filter(\.seenBefore).map(\.webhook)
            // A row the seed made has no `created`: what was written for it is unknown.
            let seedRow = !task.hasCreatedEvent
            let ownerBefore = seedRow ? ownerNow : TaskRules.foldState(seen).state?.userId
            for window in windows where window.end >= earliest {
                let now = task.isCandidate(for: window) ? UserReport.placement(of: task.asOf(window.end), in: window) : nil
                if seedRow {
                    if now != nil { changed[ownerNow, default: []].insert(window) }
                    continue
                }
                let before = task.asOfBefore(window.end).flatMap { UserReport.placement(of: $0, in: window) }
                for user in Set([ownerBefore, ownerNow].compactMap { $0 }) {
                    let wasHere = user == ownerBefore ? before : nil
                    let isHere = user == ownerNow ? now : nil
                    if wasHere?.0 != isHere?.0 || wasHere?.1 != isHere?.1 { changed[user, default: []].insert(window) }
                }
            }
        }
        rewrites = changed.mapValues { $0.sorted { $0.end < $1.end } }
    }

    /// Users with a file to rewrite, in byte order (the order the database streams them).
    public var users: [String] { rewrites.keys.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) } }

    /// The reports of `user` that change, one per window (oldest first),
    /// rendered from `tasks` (every task the user owns now) exactly as an
    /// on-demand report of that window and user would be, except that a
    /// report whose lists became empty is kept (a stale file must not outlive
    /// its content).
    public func corrections(user: String, tasks: [StoredTask]) -> [UserReport] {
        (rewrites[user] ?? []).map { window in
            var report = UserReport(userId: user, window: window)
            for task in tasks where task.isCandidate(for: window) {
                report.add(task.asOf(window.end))
            }
            return report
        }
    }
}
