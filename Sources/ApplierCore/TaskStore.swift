import LibPQ
import TaskModel
import WebhookModel

/// The applier's side of PostgreSQL: applies one batch of events as one
/// transaction. Within it, the batch's tasks are locked (advisory locks, in
/// key order, so concurrent appliers serialise per task and never deadlock),
/// new events go into `meetperry.task_event` (duplicates fall away on its
/// primary key), and every task that gained an event is folded again from
/// all of its events and upserted into `meetperry.task`.
public final class TaskStore {
    /// One event read from the stream, with where it came from.
    public struct Incoming: Sendable {
        public var record: StreamRecord
        public var line: Int
        public var input: [UInt8]

        public init(record: StreamRecord, line: Int, input: [UInt8]) {
            self.record = record
            self.line = line
            self.input = input
        }
    }

    /// What one committed batch did.
    public struct BatchOutcome: Sendable {
        public var applied = 0
        public var duplicates = 0
        public var pending = 0
        /// Events the rules refused, with why.
        public var rejected: [(Incoming, String)] = []
    }

    /// The schema is not there or not what this version needs.
    public struct SchemaError: Error, CustomStringConvertible {
        public var description: String
    }

    private let connection: PGConnection
    private var encoder = CopyEncoder()

    public init(connection: PGConnection) throws {
        self.connection = connection
        try Self.checkSchema(connection)
        try connection.execute("SET TIME ZONE 'UTC'")
        try connection.execute("""
            CREATE TEMP TABLE IF NOT EXISTS incoming_event (
                identity uuid, event text, external_id text, user_id text, content text,
                is_completed boolean, occurred_at timestamptz, received_at timestamptz, delivery_id text
            ) ON COMMIT DELETE ROWS
            """)
        try connection.execute("""
            CREATE TEMP TABLE IF NOT EXISTS derived_task (
                external_id text, user_id text, content text,
                created_date timestamptz, completed_date timestamptz, deleted_date timestamptz
            ) ON COMMIT DELETE ROWS
            """)
    }

    public static func checkSchema(_ connection: PGConnection) throws {
        let present = try connection.execute("""
            SELECT to_regclass('meetperry.task') IS NOT NULL AND to_regclass('meetperry.task_event') IS NOT NULL
            """).scalar
        guard present == "t" else {
            throw SchemaError(description: "meetperry.task or meetperry.task_event does not exist: apply changeset.sql first (psql -f changeset.sql)")
        }
    }

    /// Applies a batch atomically. On any error the transaction is rolled
    /// back (or the connection is gone) and nothing of the batch is kept, so
    /// the caller can retry the same batch on a new connection.
    public func apply(_ batch: [Incoming]) throws -> BatchOutcome {
        guard !batch.isEmpty else { return BatchOutcome() }
        try connection.execute("BEGIN")
        do {
            let outcome = try applyInTransaction(batch)
            try connection.execute("COMMIT")
            return outcome
        } catch {
            if connection.isHealthy { _ = try? connection.execute("ROLLBACK") }
            throw error
        }
    }

    private func applyInTransaction(_ batch: [Incoming]) throws -> BatchOutcome {
        // 1. Lock every task of the batch, in key order.
        let keys = Set(batch.map { EventIdentity.lockKey(taskId: $0.record.webhook.taskId) }).sorted()
        try connection.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest($1::int8[]) AS k ORDER BY k) AS locks",
            ["{" + keys.map(String.init).joined(separator: ",") + "}"]
        )

        // 2. Stage the batch and keep the events never seen before.
        var identities: [String: [Incoming]] = [:]
        encoder.removeAll()
        for item in batch {
            let w = item.record.webhook
            let identity = EventIdentity.uuid(of: w)
            identities[identity, default: []].append(item)
            encoder.addRaw(Array(identity.utf8))
            encoder.addRaw(Array(w.event.rawValue.utf8))
            encoder.add(w.taskId)
            encoder.add(w.userId)
            encoder.add(w.content)
            encoder.addRaw(w.isCompleted ? [UInt8(ascii: "t")] : [UInt8(ascii: "f")])
            encoder.addRaw(Array(w.timestamp.canonical.utf8))
            encoder.add(item.record.receivedAt?.canonical)
            encoder.add(item.record.deliveryId)
            encoder.endRow()
        }
        try connection.copyIn("COPY incoming_event FROM STDIN", data: encoder.bytes)
        let inserted = try connection.execute("""
            INSERT INTO meetperry.task_event
                (identity, event, external_id, user_id, content, is_completed, occurred_at, received_at, delivery_id)
            SELECT DISTINCT ON (identity)
                identity, event, external_id, user_id, content, is_completed, occurred_at, received_at, delivery_id
            FROM incoming_event
            ON CONFLICT (identity) DO NOTHING
            RETURNING identity::text
            """)
        let newIdentities = Set(inserted.rows.compactMap { $0.first ?? nil })

        var outcome = BatchOutcome()
        // Everything delivered more than once, in this batch or before, is a duplicate.
        for (identity, items) in identities {
            outcome.duplicates += newIdentities.contains(identity) ? items.count - 1 : items.count
        }
        guard !newIdentities.isEmpty else { return outcome }

        // 3. Fold every task that gained an event from all of its events.
        let touched = "{" + newIdentities.sorted().joined(separator: ",") + "}"
        var eventsByTask: [String: [Webhook]] = [:]
        try connection.stream("""
            SELECT e.event, e.external_id, e.user_id, e.content, e.is_completed,
                   (extract(epoch FROM e.occurred_at) * 1000000)::int8
            FROM meetperry.task_event e
            WHERE e.external_id IN (SELECT external_id FROM incoming_event WHERE identity = ANY($1::uuid[]))
            """, [touched]) { row in
            guard let event = row[0].flatMap(WebhookEvent.init(rawValue:)), let taskId = row[1], let userId = row[2],
                  let content = row[3], let completed = row[4], let micros = row[5].flatMap(Int64.init) else {
                throw SchemaError(description: "meetperry.task_event holds a row this applier cannot read")
            }
            eventsByTask[taskId, default: []].append(Webhook(
                event: event, timestamp: Timestamp(microsecondsSinceEpoch: micros),
                userId: userId, taskId: taskId, content: content, isCompleted: completed == "t"))
        }

        encoder.removeAll()
        var derivedRows = 0
        var dispositions: [Webhook: EventDisposition] = [:]
        for (_, events) in eventsByTask {
            let (state, byEvent) = TaskRules.fold(events)
            dispositions.merge(byEvent) { a, _ in a }
            guard let state else { continue }
            encoder.add(state.taskId)
            encoder.add(state.userId)
            encoder.add(state.content)
            encoder.addRaw(Array(state.createdDate.canonical.utf8))
            encoder.add(state.completedDate?.canonical)
            encoder.add(state.deletedDate?.canonical)
            encoder.endRow()
            derivedRows += 1
        }
        if derivedRows > 0 {
            try connection.copyIn("COPY derived_task FROM STDIN", data: encoder.bytes)
            // Rows that would not change are left alone, so a replay never touches updated_date.
            try connection.execute("""
                INSERT INTO meetperry.task AS t (external_id, user_id, content, created_date, completed_date, deleted_date)
                SELECT external_id, user_id, content, created_date, completed_date, deleted_date FROM derived_task
                ON CONFLICT (external_id) DO UPDATE SET
                    user_id = EXCLUDED.user_id, content = EXCLUDED.content, created_date = EXCLUDED.created_date,
                    completed_date = EXCLUDED.completed_date, deleted_date = EXCLUDED.deleted_date
                WHERE (t.user_id, t.content, t.created_date, t.completed_date, t.deleted_date)
                    IS DISTINCT FROM (EXCLUDED.user_id, EXCLUDED.content, EXCLUDED.created_date, EXCLUDED.completed_date, EXCLUDED.deleted_date)
                """)
        }

        // 4. Say what became of each new event.
        for identity in newIdentities {
            guard let items = identities[identity], let first = items.first else { continue }
            switch dispositions[first.record.webhook] ?? .pending {
            case .applied: outcome.applied += 1
            case .pending: outcome.pending += 1
            case let other: outcome.rejected.append((first, other.rejectionReason ?? "rejected"))
            }
        }
        return outcome
    }
}
