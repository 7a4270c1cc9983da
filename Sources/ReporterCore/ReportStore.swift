import DatabaseSchema
import LibPQ
import TaskModel
import WebhookModel

/// The reporter's side of PostgreSQL: the single-runner lock, the cron
/// cursor (`meetperry.report_run`), one consistent snapshot per run, the
/// events committed since the previous run, and the stream of tasks a
/// report is judged from.
public final class ReportStore {
    /// `pg_try_advisory_lock` key of the reporter ("meetperr" in ASCII).
    static let lockKey = "7882826979136762482"

    /// The latest recorded cron run: where the next window starts, and the
    /// snapshot it read under (nil for runs recorded before corrections existed).
    public struct PreviousRun: Sendable {
        public var window: ReportWindow
        public var snapshot: String?
    }

    /// A task with events committed since the previous run's snapshot and
    /// timestamped at or before that run's end: those events' times, and the
    /// task as stored now with all of its events marked with whether the
    /// previous snapshot saw them (nil while the task has no row that can be
    /// placed: its `created` has not arrived).
    public struct LateTask: Sendable {
        public var taskId: String
        public var lateEventTimes: [Timestamp]
        /// The row's owner now.
        public var owner: String?
        public var task: StoredTask?

        public init(taskId: String, lateEventTimes: [Timestamp], owner: String?, task: StoredTask?) {
            self.taskId = taskId
            self.lateEventTimes = lateEventTimes
            self.owner = owner
            self.task = task
        }
    }

    private let connection: PGConnection

    public init(conninfo: String) throws {
        connection = try PGConnection(conninfo: conninfo)
        try SchemaRequirement.prepare(connection, for: SchemaRequirement.reporter)
    }

    /// Takes the single-runner lock for as long as this connection lives;
    /// false when another run holds it.
    public func tryLock() throws -> Bool {
        try connection.execute("SELECT pg_try_advisory_lock($1::int8)", [Self.lockKey]).scalar == "t"
    }

    /// The latest recorded run, if any.
    public func previousRun() throws -> PreviousRun? {
        let rows = try connection.execute("""
            SELECT (extract(epoch FROM window_start) * 1000000)::int8, (extract(epoch FROM window_end) * 1000000)::int8, snapshot::text
            FROM meetperry.report_run ORDER BY window_end DESC, id DESC LIMIT 1
            """).rows
        guard let row = rows.first, let start = row[0].flatMap(Int64.init), let end = row[1].flatMap(Int64.init) else { return nil }
        return PreviousRun(window: ReportWindow(start: Timestamp(microsecondsSinceEpoch: start), end: Timestamp(microsecondsSinceEpoch: end)),
                           snapshot: row[2])
    }

    /// Records a finished cron run: the next window starts at its end, and its
    /// corrections look for what `snapshot` did not see.
    public func recordRun(_ window: ReportWindow, snapshot: String, summary: Reporter.Summary) throws {
        try connection.execute("""
            INSERT INTO meetperry.report_run (window_start, window_end, users, files, tasks, snapshot, late_events, corrected_files)
            VALUES ($1, $2, $3, $4, $5, $6::pg_snapshot, $7, $8)
            """,
            [window.start.canonical, window.end.canonical, String(summary.users), String(summary.files), String(summary.tasks),
             snapshot, String(summary.lateEvents), String(summary.corrections)]
        )
    }

    /// Runs `body` in one read-only REPEATABLE READ transaction, handing it
    /// the snapshot every statement inside reads under (`pg_current_snapshot()`,
    /// taken by the transaction's first statement).
    public func readConsistently<R>(_ body: (String) throws -> R) throws -> R {
        try connection.transaction("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY") {
            guard let snapshot = try connection.execute("SELECT pg_current_snapshot()::text").scalar else {
                throw PGError(kind: .query, message: "PostgreSQL returned no snapshot")
            }
            return try body(snapshot)
        }
    }

    /// The ends of recorded cron windows that end at or after `earliest`, oldest first.
    public func reportedWindows(endingAtOrAfter earliest: Timestamp) throws -> [ReportWindow] {
        try connection.execute("""
            SELECT (extract(epoch FROM window_start) * 1000000)::int8, (extract(epoch FROM window_end) * 1000000)::int8
            FROM meetperry.report_run WHERE window_end >= $1::timestamptz ORDER BY window_end, id
            """, [earliest.canonical]).rows.compactMap { row in
            guard let start = row[0].flatMap(Int64.init), let end = row[1].flatMap(Int64.init) else { return nil }
            return ReportWindow(start: Timestamp(microsecondsSinceEpoch: start), end: Timestamp(microsecondsSinceEpoch: end))
        }
    }

    /// Every task with an event committed after `snapshot` was taken (its
    /// transaction is not visible in it) and timestamped at or before
    /// `through`, one per task. Reads only the tail of the event log (BRIN on
    /// `xact_id`), then those tasks' rows and events by their ids (index
    /// look-ups: a join would let the planner, which cannot tell how few late
    /// events there are, scan the whole task table).
    public func lateTasks(notVisibleIn snapshot: String, through: Timestamp, _ body: (LateTask) throws -> Void) throws {
        var times: [String: [Timestamp]] = [:]
        try connection.stream("""
            SELECT e.external_id, (extract(epoch FROM e.occurred_at) * 1000000)::int8
            FROM meetperry.task_event e
            WHERE e.xact_id >= pg_snapshot_xmin($1::pg_snapshot)::text::int8
              AND NOT pg_visible_in_snapshot(e.xact_id::text::xid8, $1::pg_snapshot)
              AND e.occurred_at <= $2::timestamptz
            """, [snapshot, through.canonical], binary: true) { row in
            guard let taskId = row[0], let micros = row.int64(binary: 1) else { throw PGError.unreadableRow("meetperry.task_event") }
            times[taskId, default: []].append(Timestamp(microsecondsSinceEpoch: micros))
        }
        guard !times.isEmpty else { return }
        var found: [String: (owner: String, task: StoredTask)] = [:]
        try connection.stream("""
            SELECT t.user_id, t.external_id, t.content, t.created_date, t.completed_date, t.deleted_date,
                   \(Self.history(seenIn: "$2"))
            FROM meetperry.task t
            WHERE t.external_id = ANY($1::text[]) AND t.created_date IS NOT NULL  -- a row without one cannot be placed
            """, [PGArray.literal(Array(times.keys)), snapshot], binary: true) { row in
            let (owner, task) = try Self.decodeTask(row)
            found[task.row.taskId] = (owner, task)
        }
        for (taskId, lateEventTimes) in times.sorted(by: { $0.key.utf8.lexicographicallyPrecedes($1.key.utf8) }) {
            let stored = found[taskId]
            try body(LateTask(taskId: taskId, lateEventTimes: lateEventTimes, owner: stored?.owner, task: stored?.task))
        }
    }

    /// Every task that may be in a list of `window`, ordered by user (bytes)
    /// then task id, streamed in libpq's single-row mode (one row in memory at
    /// a time). A task with events after the window's end comes with all of
    /// its events, to be judged from those up to the end (`StoredTask.asOf`).
    ///
    /// With `corrections`, every task of those users comes too, each with all
    /// of its events marked with whether the previous run's snapshot saw them,
    /// so one pass over the task table serves the window and the corrections
    /// (such a task may not belong in the window: see `StoredTask.isCandidate`).
    public func streamTasks(_ window: ReportWindow, user: String?, corrections: (users: [String], previous: String)? = nil,
                            _ body: (String, StoredTask) throws -> Void) throws {
        try connection.stream("""
            WITH later AS (
                SELECT DISTINCT external_id FROM meetperry.task_event WHERE occurred_at > $2::timestamptz
            )
            SELECT t.user_id, t.external_id, t.content,
                   t.created_date, t.completed_date, t.deleted_date,
                   CASE WHEN l.external_id IS NOT NULL OR t.user_id = ANY($4::text[]) THEN \(Self.history(seenIn: "$5")) END
            FROM meetperry.task t LEFT JOIN later l ON l.external_id = t.external_id
            WHERE t.created_date IS NOT NULL  -- a row another tool put in without one cannot be placed
              AND ((t.created_date <= $2::timestamptz AND (t.deleted_date IS NULL OR t.deleted_date > $1::timestamptz))
                   OR t.user_id = ANY($4::text[]))
              AND ($3::text IS NULL OR t.user_id = $3::text)
            ORDER BY t.user_id COLLATE "C", t.external_id COLLATE "C"
            """, [window.start.canonical, window.end.canonical, user, PGArray.literal(corrections?.users ?? []), corrections?.previous],
            binary: true) { row in
            let (owner, task) = try Self.decodeTask(row)
            try body(owner, task)
        }
    }

    /// The select-list item holding all events of task row `t`, each marked
    /// with whether the snapshot in parameter `snapshot` saw it (read by `decodeEvents`).
    static func history(seenIn snapshot: String) -> String {
        """
        (SELECT json_agg(json_build_array(\(StoredEvent.columns),
                                          coalesce(pg_visible_in_snapshot(e.xact_id::text::xid8, \(snapshot)::pg_snapshot), true)))
         FROM meetperry.task_event e WHERE e.external_id = t.external_id)
        """
    }

    /// One row of the task query: the owner, the row's facts and, when asked for, the task's events.
    static func decodeTask(_ row: RowView) throws -> (String, StoredTask) {
        guard let userId = row[0], let taskId = row[1], let content = row[2], let created = row.timestampMicroseconds(binary: 3) else {
            throw PGError.unreadableRow("meetperry.task")
        }
        let snapshot = TaskSnapshot(
            taskId: taskId, content: content,
            createdDate: Timestamp(microsecondsSinceEpoch: created),
            completedDate: row.timestampMicroseconds(binary: 4).map(Timestamp.init(microsecondsSinceEpoch:)),
            deletedDate: row.timestampMicroseconds(binary: 5).map(Timestamp.init(microsecondsSinceEpoch:))
        )
        let events = try row[6].map { try decodeEvents($0, taskId: taskId) } ?? []
        return (userId, StoredTask(row: snapshot, events: events))
    }

    /// A task's events as aggregated above: a JSON array of [`StoredEvent.columns`…, seenBefore].
    static func decodeEvents(_ history: String, taskId: String) throws -> [StoredTask.Event] {
        guard case .array(let items) = try JSONParser.parse(Array(history.utf8)) else { return [] }
        return try items.map { item in
            guard case .array(let fields) = item, fields.count == 6, case .bool(let seen) = fields[5] else {
                throw PGError.unreadableRow("meetperry.task_event")
            }
            return StoredTask.Event(webhook: try StoredEvent.webhook(taskId: taskId, json: fields), seenBefore: seen)
        }
    }
}
