import LibPQ
import TaskModel
import WebhookModel

/// The applier's side of PostgreSQL: applies one batch of events as one
/// transaction. It reads which events of the batch's tasks are already stored,
/// copies only the new ones into `meetperry.task_event` (a duplicate — an
/// identity already there or earlier in the batch — is dropped here), and
/// folds every task that gained an event again from all of its events into
/// `meetperry.task`.
///
/// Tasks fall into `partitionCount` fixed partitions (a hash of the task id).
/// A transaction first takes the advisory locks of the partitions its events
/// belong to, in ascending order (so never a deadlock), and holds them to
/// commit: two transactions touching one task never overlap, so what it read
/// is still all there is when it writes, and a fold always sees every event
/// committed before it, whichever applier or connection committed it. A
/// handful of partition locks, not one per task, keeps PostgreSQL's shared
/// lock table small whatever the batch size, and lets one applier commit
/// disjoint partitions on several connections at once. (The event log's
/// primary key still guards against a writer that takes no locks: such a
/// conflict fails the batch, which is then retried.)
public final class TaskStore {
    /// One event read from the stream, with where it came from.
    public struct Incoming: Sendable {
        public var record: StreamRecord
        /// Its line number on stdin, or its sequence number in the JetStream stream.
        public var line: Int
        public var input: [UInt8]
        /// Who is told once it is committed or rejected (a JetStream message), if anyone.
        public var delivery: (any Delivery)?

        public init(record: StreamRecord, line: Int, input: [UInt8], delivery: (any Delivery)? = nil) {
            self.record = record
            self.line = line
            self.input = input
            self.delivery = delivery
        }
    }

    /// A batch encoded for the database. Preparing is pure CPU work, done by
    /// the reading thread while the previous batch is being committed.
    public struct PreparedBatch: Sendable {
        public let items: [Incoming]
        /// The identity of each item, in item order.
        let identities: [EventKey]
        /// One `COPY meetperry.task_event` row per item, in item order.
        let eventRows: BinaryCopyEncoder
        /// The batch's distinct task ids, as a `text[]` parameter.
        let taskIds: String
        /// The partitions of the batch's tasks, ascending.
        let partitions: [Int]

        public var firstLine: Int { items.first?.line ?? 0 }
        public var lastLine: Int { items.last?.line ?? 0 }
        public var count: Int { items.count }
    }

    /// An event identity as a cheap dictionary key (the 16 bytes of its uuid).
    struct EventKey: Hashable, Sendable {
        var high: UInt64
        var low: UInt64

        init?(_ bytes: some Collection<UInt8>) {
            guard bytes.count == 16 else { return nil }
            var high: UInt64 = 0, low: UInt64 = 0
            for (i, byte) in bytes.enumerated() {
                if i < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
            }
            self.high = high
            self.low = low
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

    /// Fixed for all versions: appliers must agree on which lock guards which task.
    public static let partitionCount = 16
    /// `pg_advisory_xact_lock` key of partition 0 ("meetappl" in ASCII); partition p is this + p.
    static let firstLockKey: Int64 = 7_882_826_979_082_792_044

    /// The partition of a task: FNV-1a (64-bit) of its id, modulo `partitionCount`.
    public static func partition(ofTask taskId: String) -> Int {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in taskId.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return Int(hash % UInt64(partitionCount))
    }

    private let connection: PGConnection
    /// Folded tasks that have no row yet, and those that have one.
    private var newTaskRows = BinaryCopyEncoder(columns: 6)
    private var derivedRows = BinaryCopyEncoder(columns: 6)

    public init(connection: PGConnection) throws {
        self.connection = connection
        try Self.checkSchema(connection)
        try connection.execute("SET TIME ZONE 'UTC'")
        // The batch statements are thousands of small index look-ups (a task's
        // few events) whose row counts the planner cannot know. Its guesses
        // easily pass jit_above_cost, and compiling then costs more than
        // running; they can make a scan of the whole event log look cheaper
        // (it never is: that would slow every batch down as the log grows);
        // and a bitmap scan only adds work to a look-up that finds a row or
        // two. The only tables scanned whole are this session's temp tables.
        try connection.execute("SET jit = off")
        try connection.execute("SET enable_bitmapscan = off")
        try connection.execute("SET enable_seqscan = off")
        // Nor are they worth parallel workers: starting them (a process each,
        // every batch) cost more than the look-ups they were meant to share.
        try connection.execute("SET max_parallel_workers_per_gather = 0")
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

    /// Computes identities and encodes the event log rows.
    public static func prepare(_ items: [Incoming]) -> PreparedBatch {
        var encoder = BinaryCopyEncoder(columns: 9)
        var identities: [EventKey] = []
        identities.reserveCapacity(items.count)
        var taskIds = Set<String>()
        var partitionMask: UInt32 = 0
        for item in items {
            let w = item.record.webhook
            if taskIds.insert(w.taskId).inserted {
                partitionMask |= 1 << UInt32(partition(ofTask: w.taskId))
            }
            let identity = EventIdentity.bytes(of: w)
            identities.append(EventKey(identity)!)
            encoder.addUUID(identity)
            encoder.add(w.event.rawValue)
            encoder.add(w.taskId)
            encoder.add(w.userId)
            encoder.add(w.content)
            encoder.add(w.isCompleted)
            encoder.addTimestamp(microsecondsSinceUnixEpoch: w.timestamp.microsecondsSinceEpoch)
            encoder.addTimestamp(microsecondsSinceUnixEpoch: item.record.receivedAt?.microsecondsSinceEpoch)
            encoder.add(item.record.deliveryId)
            encoder.endRow()
        }
        let partitions = (0..<partitionCount).filter { partitionMask & (1 << UInt32($0)) != 0 }
        return PreparedBatch(items: items, identities: identities, eventRows: encoder,
                             taskIds: PGArray.literal(taskIds), partitions: partitions)
    }

    /// Applies a batch atomically. On any error the transaction is rolled
    /// back (or the connection is gone) and nothing of the batch is kept, so
    /// the caller can retry the same batch on a new connection.
    public func apply(_ batch: PreparedBatch) throws -> BatchOutcome {
        guard batch.count > 0 else { return BatchOutcome() }
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

    private func applyInTransaction(_ batch: PreparedBatch) throws -> BatchOutcome {
        // 1. Lock the batch's partitions, in ascending order.
        let keys = batch.partitions.map { String(Self.firstLockKey + Int64($0)) }
        try connection.execute(
            "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest($1::int8[]) AS k ORDER BY k) AS locks",
            ["{" + keys.joined(separator: ",") + "}"]
        )

        // 2. Which events of these tasks are stored already, and which tasks
        //    have a row? Identities only (the event log's primary key holds them
        //    all) and ids only: index look-ups, one per task and table.
        var known = Set<EventKey>()
        var tasksWithHistory = Set<String>()
        var tasksWithRow = Set<String>()
        try connection.query("""
            SELECT external_id, identity FROM meetperry.task_event WHERE external_id = ANY($1::text[])
            UNION ALL
            SELECT external_id, NULL FROM meetperry.task WHERE external_id = ANY($1::text[])
            """, [batch.taskIds], binary: true) { row in
            guard let taskId = row.string(0) else {
                throw SchemaError(description: "meetperry.task_event holds a row this applier cannot read")
            }
            switch row.withBytes(1, { EventKey($0) }) {
            case nil: // NULL: a row of meetperry.task
                tasksWithRow.insert(taskId)
            case .some(nil):
                throw SchemaError(description: "meetperry.task_event.identity is not a uuid")
            case .some(let identity?):
                known.insert(identity)
                tasksWithHistory.insert(taskId)
            }
        }

        // 3. Everything delivered more than once, before or in this batch, is a duplicate.
        var outcome = BatchOutcome()
        var newItems: [Int] = []
        var eventsByTask: [String: [Webhook]] = [:]
        for (index, identity) in batch.identities.enumerated() {
            if known.insert(identity).inserted {
                newItems.append(index)
                let webhook = batch.items[index].record.webhook
                eventsByTask[webhook.taskId, default: []].append(webhook)
            } else {
                outcome.duplicates += 1
            }
        }
        guard !newItems.isEmpty else { return outcome }

        // 4. The earlier events of the tasks that gained one and have a history.
        let refold = eventsByTask.keys.filter(tasksWithHistory.contains)
        if !refold.isEmpty {
            try connection.query("""
                SELECT event, external_id, user_id, content, is_completed, occurred_at
                FROM meetperry.task_event WHERE external_id = ANY($1::text[])
                """, [PGArray.literal(refold)], binary: true) { row in
                guard let event = row.string(0).flatMap(WebhookEvent.init(rawValue:)), let taskId = row.string(1),
                      let userId = row.string(2), let content = row.string(3), let completed = row.bool(binary: 4),
                      let micros = row.timestampMicroseconds(binary: 5) else {
                    throw SchemaError(description: "meetperry.task_event holds a row this applier cannot read")
                }
                let webhook = Webhook(event: event, timestamp: Timestamp(microsecondsSinceEpoch: micros),
                                      userId: userId, taskId: taskId, content: content, isCompleted: completed)
                eventsByTask[taskId, default: []].append(webhook)
            }
        }

        // 5. The new events go into the event log as they were encoded.
        try connection.copyIn("""
            COPY meetperry.task_event
                (identity, event, external_id, user_id, content, is_completed, occurred_at, received_at, delivery_id)
            FROM STDIN (FORMAT binary)
            """, data: batch.eventRows.data(rows: newItems))

        // 6. Fold every task that gained an event from all of its events. A
        //    task without a row is copied in; one with a row is updated if changed.
        newTaskRows.removeAll()
        derivedRows.removeAll()
        var creations: [String: Webhook] = [:]
        creations.reserveCapacity(eventsByTask.count)
        for (taskId, events) in eventsByTask {
            let (state, creation) = TaskRules.foldState(events)
            creations[taskId] = creation
            guard let state else { continue }
            if tasksWithRow.contains(taskId) {
                Self.encode(state, into: &derivedRows)
            } else {
                Self.encode(state, into: &newTaskRows)
            }
        }
        if !newTaskRows.isEmpty {
            try connection.copyIn("""
                COPY meetperry.task (external_id, user_id, content, created_date, completed_date, deleted_date)
                FROM STDIN (FORMAT binary)
                """, data: newTaskRows.data)
        }
        if !derivedRows.isEmpty {
            try connection.copyIn("COPY derived_task FROM STDIN (FORMAT binary)", data: derivedRows.data)
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

        // 7. Say what became of each new event.
        for index in newItems {
            let item = batch.items[index]
            let webhook = item.record.webhook
            switch TaskRules.disposition(of: webhook, creation: creations[webhook.taskId]) {
            case .applied: outcome.applied += 1
            case .pending: outcome.pending += 1
            case let other: outcome.rejected.append((item, other.rejectionReason ?? "rejected"))
            }
        }
        return outcome
    }

    /// One `meetperry.task` row (its seed columns) for COPY.
    private static func encode(_ state: TaskState, into rows: inout BinaryCopyEncoder) {
        rows.add(state.taskId)
        rows.add(state.userId)
        rows.add(state.content)
        rows.addTimestamp(microsecondsSinceUnixEpoch: state.createdDate.microsecondsSinceEpoch)
        rows.addTimestamp(microsecondsSinceUnixEpoch: state.completedDate?.microsecondsSinceEpoch)
        rows.addTimestamp(microsecondsSinceUnixEpoch: state.deletedDate?.microsecondsSinceEpoch)
        rows.endRow()
    }
}
