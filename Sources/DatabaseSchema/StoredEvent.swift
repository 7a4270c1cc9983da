import LibPQ
import WebhookModel

/// The event log (`meetperry.task_event`) as both the applier and the
/// reporter read it: a stored event's columns, in one order, and the one
/// decoder that makes them a webhook again, whether they come as a binary
/// row or inside a JSON aggregate.
public enum StoredEvent {
    /// The select list of a stored event `e`: event, user_id, content,
    /// is_completed, and occurred_at as microseconds since 1970.
    public static let columns = "e.event, e.user_id, e.content, e.is_completed, (extract(epoch FROM e.occurred_at) * 1000000)::int8"

    /// The webhook of task `taskId` from a stored event's fields; throws when they cannot be one.
    public static func webhook(taskId: String, event: String?, userId: String?, content: String?, isCompleted: Bool?,
                               microseconds: Int64?) throws(PGError) -> Webhook {
        guard let event = event.flatMap(WebhookEvent.init(rawValue:)), let userId, let content, let isCompleted, let microseconds else {
            throw .unreadableRow("meetperry.task_event")
        }
        return Webhook(event: event, timestamp: Timestamp(microsecondsSinceEpoch: microseconds), userId: userId, taskId: taskId,
                       content: content, isCompleted: isCompleted)
    }

    /// From a binary row holding `columns` from column `first` on.
    public static func webhook(taskId: String, row: RowView, from first: Int) throws(PGError) -> Webhook {
        try webhook(taskId: taskId, event: row.string(first), userId: row.string(first + 1), content: row.string(first + 2),
                    isCompleted: row.bool(binary: first + 3), microseconds: row.int64(binary: first + 4))
    }

    /// From a JSON array that starts with `columns` (`json_build_array(<columns>, …)`).
    public static func webhook(taskId: String, json fields: [JSONValue]) throws(PGError) -> Webhook {
        func text(_ index: Int) -> String? {
            guard index < fields.count, case .string(let value) = fields[index] else { return nil }
            return value
        }
        var isCompleted: Bool?
        if fields.count > 3, case .bool(let value) = fields[3] { isCompleted = value }
        var microseconds: Int64?
        if fields.count > 4, case .number(let value) = fields[4] { microseconds = Int64(value) }
        return try webhook(taskId: taskId, event: text(0), userId: text(1), content: text(2), isCompleted: isCompleted, microseconds: microseconds)
    }
}

/// What each program needs of the schema, checked once when it connects
/// (`PGConnection.verifySchema`): an older or missing schema is a clear
/// "apply changeset.sql" at start, not a failure halfway.
public enum SchemaRequirement {
    public static let applier = (relations: ["meetperry.task", "meetperry.task_event", "meetperry.partition_version"], columns: ["meetperry.task_event.rejection"])
    public static let reporter = (
        relations: ["meetperry.task", "meetperry.task_event", "meetperry.report_run"],
        columns: ["meetperry.task_event.xact_id", "meetperry.report_run.snapshot"]
    )

    /// Verifies `requirement` on `connection` and sets the session to UTC, as both programs read and write times.
    public static func prepare(_ connection: PGConnection, for requirement: (relations: [String], columns: [String])) throws(PGError) {
        try connection.verifySchema(relations: requirement.relations, columns: requirement.columns)
        try connection.set(["TimeZone": "UTC"])
    }
}
