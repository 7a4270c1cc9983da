import LibPQ
import TaskModel
import WebhookModel

/// The reporter's side of PostgreSQL: the single-runner lock, the cron
/// cursor (`meetperry.report_run`) and the stream of tasks judged as of a
/// window's end.
public final class ReportStore {
    /// `pg_try_advisory_lock` key of the reporter ("meetperr" in ASCII).
    static let lockKey = "7882826979136762482"

    /// The schema is not there: changeset.sql was not applied.
    public struct SchemaError: Error, CustomStringConvertible {
        public var description: String
    }

    private let connection: PGConnection

    public init(conninfo: String) throws {
        connection = try PGConnection(conninfo: conninfo)
        let present = try connection.execute("""
            SELECT to_regclass('meetperry.task') IS NOT NULL AND to_regclass('meetperry.task_event') IS NOT NULL
               AND to_regclass('meetperry.report_run') IS NOT NULL
            """).scalar
        guard present == "t" else {
            throw SchemaError(description: "meetperry.task, task_event or report_run does not exist: apply changeset.sql first (psql -f changeset.sql)")
        }
        try connection.execute("SET TIME ZONE 'UTC'")
    }

    /// Takes the single-runner lock for as long as this connection lives;
    /// false when another run holds it.
    public func tryLock() throws -> Bool {
        try connection.execute("SELECT pg_try_advisory_lock($1::int8)", [Self.lockKey]).scalar == "t"
    }

    /// The end of the latest recorded run, if any.
    public func lastRunEnd() throws -> Timestamp? {
        let micros = try connection.execute(
            "SELECT (extract(epoch FROM max(window_end)) * 1000000)::int8 FROM meetperry.report_run"
        ).scalar
        return micros.flatMap(Int64.init).map(Timestamp.init(microsecondsSinceEpoch:))
    }

    /// Records a finished cron run: the next window starts at its end.
    public func recordRun(_ window: ReportWindow, users: Int, files: Int, tasks: Int) throws {
        try connection.execute(
            "INSERT INTO meetperry.report_run (window_start, window_end, users, files, tasks) VALUES ($1, $2, $3, $4, $5)",
            [window.start.canonical, window.end.canonical, String(users), String(files), String(tasks)]
        )
    }

    /// Every task that may be in a list of the window, ordered by user (bytes)
    /// then task id, streamed in libpq's single-row mode (one row in memory at a
    /// time; unlike a cursor, the server may plan it in parallel). A task with events after the
    /// window's end is judged from its events up to the end; any other task
    /// from its row, which then is exactly its state at the end.
    public func streamTasks(_ window: ReportWindow, user: String?, _ body: (String, TaskSnapshot) throws -> Void) throws {
        try connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        do {
            try connection.stream("""
                WITH later AS (
                    SELECT DISTINCT external_id FROM meetperry.task_event WHERE occurred_at > $2::timestamptz
                )
                SELECT t.user_id, t.external_id, coalesce(t.content, ''),
                       t.created_date, t.completed_date, t.deleted_date,
                       CASE WHEN l.external_id IS NOT NULL THEN (
                           SELECT json_agg(json_build_array(e.event, e.user_id, e.content, e.is_completed,
                                                            (extract(epoch FROM e.occurred_at) * 1000000)::int8))
                           FROM meetperry.task_event e
                           WHERE e.external_id = t.external_id AND e.occurred_at <= $2::timestamptz)
                       END
                FROM meetperry.task t LEFT JOIN later l ON l.external_id = t.external_id
                WHERE t.external_id IS NOT NULL
                  AND t.created_date <= $2::timestamptz
                  AND (t.deleted_date IS NULL OR t.deleted_date > $1::timestamptz)
                  AND ($3::text IS NULL OR t.user_id = $3::text)
                ORDER BY t.user_id COLLATE "C", t.external_id COLLATE "C"
                """, [window.start.canonical, window.end.canonical, user], binary: true) { row in
                guard let userId = row[0], let taskId = row[1], let content = row[2], let created = row.timestampMicroseconds(binary: 3) else {
                    throw SchemaError(description: "meetperry.task holds a row the reporter cannot read")
                }
                var snapshot = TaskSnapshot(
                    taskId: taskId, content: content,
                    createdDate: Timestamp(microsecondsSinceEpoch: created),
                    completedDate: row.timestampMicroseconds(binary: 4).map(Timestamp.init(microsecondsSinceEpoch:)),
                    deletedDate: row.timestampMicroseconds(binary: 5).map(Timestamp.init(microsecondsSinceEpoch:))
                )
                if let history = row[6], let asOfEnd = try Self.judge(history, taskId: taskId, asOf: window.end) {
                    snapshot = asOfEnd
                }
                try body(userId, snapshot)
            }
            try connection.execute("COMMIT")
        } catch {
            if connection.isHealthy { _ = try? connection.execute("ROLLBACK") }
            throw error
        }
    }

    /// Folds a task's events (a JSON array of [event, userId, content, isCompleted, micros]) as of `asOf`.
    static func judge(_ history: String, taskId: String, asOf: Timestamp) throws -> TaskSnapshot? {
        guard case .array(let items) = try JSONParser.parse(Array(history.utf8)) else { return nil }
        var events: [Webhook] = []
        events.reserveCapacity(items.count)
        for item in items {
            guard case .array(let f) = item, f.count == 5,
                  case .string(let name) = f[0], let event = WebhookEvent(rawValue: name),
                  case .string(let userId) = f[1], case .string(let content) = f[2],
                  case .bool(let done) = f[3], case .number(let micros) = f[4], let at = Int64(micros) else {
                throw SchemaError(description: "meetperry.task_event holds an event the reporter cannot read")
            }
            events.append(Webhook(event: event, timestamp: Timestamp(microsecondsSinceEpoch: at), userId: userId,
                                  taskId: taskId, content: content, isCompleted: done))
        }
        guard let state = TaskRules.foldState(events, asOf: asOf).state else { return nil }
        return TaskSnapshot(taskId: taskId, content: state.content, createdDate: state.createdDate,
                            completedDate: state.completedDate, deletedDate: state.deletedDate)
    }
}
