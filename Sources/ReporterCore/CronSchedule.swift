import WebhookModel

/// Which window a cron run reports: windows end on multiples of the
/// interval counted from the Unix epoch (UTC), so their boundaries do not
/// move with the moment cron happens to start a run, a consumer can predict
/// every file name, and two deployments with one interval agree on windows.
/// Pure (the clock is a parameter), so the rule is tested on values.
///
/// - A run reports (end of the last recorded window, the last boundary at or
///   before now − delay].
/// - The first run ever reports one interval up to that boundary.
/// - Missed runs are caught up in one window that spans every interval
///   missed (its start is the last recorded end, its end a boundary).
/// - After a change of interval, or a cursor left by an older reporter off
///   the grid, the first window runs from the last recorded end to the new
///   grid's next boundary; from then on every window is on the grid.
public struct CronSchedule: Sendable, Equatable {
    public var intervalSeconds: Int
    public var delaySeconds: Int

    public init(intervalSeconds: Int, delaySeconds: Int) {
        precondition(intervalSeconds > 0, "the interval is at least one second")
        self.intervalSeconds = intervalSeconds
        self.delaySeconds = delaySeconds
    }

    /// The latest boundary (a multiple of the interval since the epoch) at or before `t`.
    public func boundary(atOrBefore t: Timestamp) -> Timestamp {
        let interval = Int64(intervalSeconds) * 1_000_000
        let micros = t.microsecondsSinceEpoch
        let floored = micros >= 0 ? micros / interval : -((-micros + interval - 1) / interval)
        return Timestamp(microsecondsSinceEpoch: floored * interval)
    }

    /// What a cron run at `now` reports after a run that ended at `lastEnd`
    /// (nil: none recorded yet): a window, or nothing to do when no boundary
    /// has passed since.
    public func window(after lastEnd: Timestamp?, now: Timestamp) -> ReportWindow? {
        let end = boundary(atOrBefore: now.adding(seconds: -delaySeconds))
        let start = lastEnd ?? end.adding(seconds: -intervalSeconds)
        guard start < end else { return nil }
        return ReportWindow(start: start, end: end)
    }
}
