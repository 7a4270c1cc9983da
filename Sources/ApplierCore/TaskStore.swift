import DatabaseSchema
import LibPQ
import TaskModel
import WebhookModel

/// What the committer needs of the database: one prepared batch applied as
/// one transaction, or an error saying whether to retry (`PGError`'s
/// predicates). `TaskStore` is the PostgreSQL one; tests use a fake, so
/// batching, splitting and retries are tested in-process too.
public protocol BatchStore: AnyObject {
    func apply(_ batch: PreparedBatch) throws -> BatchOutcome
}

/// The applier's side of PostgreSQL: the SQL of each step `BatchSteps` asks
/// for, one batch in one transaction (the plan, `BatchPlan`, is the pure part). It reads which events
/// of the batch's tasks are stored already, copies only the new ones into
/// `meetperry.task_event`, and writes the folded row of every task that
/// gained an event into `meetperry.task`.
///
/// A transaction first takes the advisory locks of its tasks' partitions
/// (`TaskPartition`), in ascending order (so never a deadlock), and holds them
/// to commit: two transactions touching one task never overlap, so what it
/// read is still all there is when it writes, and a fold always sees every
/// event committed before it, whichever applier or connection committed it.
/// A handful of partition locks, not one per task, keeps PostgreSQL's shared
/// lock table small whatever the batch size. (The event log's primary key
/// still guards against a writer that takes no locks: such a conflict fails
/// the batch, which is then retried.)
///
/// Each store (one per connection) keeps a `TaskCache` of the tasks it has
/// just written: it bumps the versions of the partitions it writes
/// (`meetperry.partition_version`) under their locks, reads them after
/// taking the locks, and hands them to the cache, which forgets a partition
/// someone else wrote; it tells the cache what a batch did only once the
/// batch is committed, and to forget everything when a batch fails.
public final class TaskStore: BatchStore {
    private let connection: PGConnection
    /// Folded tasks that have no row yet, and those that have one.
    private var newTaskRows = BinaryCopyEncoder(columns: 6)
    private var updatesByAddress = RowUpdateArrays(locator: .tid)
    private var updatesOfCopiedIn = RowUpdateArrays(locator: .xid)
    /// How the next batch looks for its duplicates (the last one says: `BatchSteps.Mode`).
    private var mode = BatchSteps.Mode.live
    /// What this connection has just written, while no one else writes its partitions.
    private var cache: TaskCache

    /// `cacheBytes`: the task cache's budget (`TaskCache`); 0 keeps none.
    public init(connection: PGConnection, cacheBytes: Int = 0) throws(PGError) {
        self.connection = connection
        cache = TaskCache(budget: cacheBytes)
        try SchemaRequirement.prepare(connection, for: SchemaRequirement.applier)
        // The batch statements are thousands of small index look-ups (a task's
        // few events) whose row counts the planner cannot know. Its guesses
        // easily pass jit_above_cost, and compiling then costs more than
        // running; they can make a scan of the whole event log look cheaper
        // (it never is: that would slow every batch down as the log grows);
        // a bitmap scan only adds work to a look-up that finds a row or two;
        // and parallel workers (a process each, every batch) cost more than
        // the look-ups they would share. No table is scanned whole.
        // Its statements are prepared once (`queryPrepared`) and planned once,
        // generically: no plan of theirs depends on the values bound.
        try connection.set([
            "jit": "off", "enable_bitmapscan": "off", "enable_seqscan": "off", "max_parallel_workers_per_gather": "0",
            "plan_cache_mode": "force_generic_plan",
        ])
        if cache.isEnabled { try findIfEmpty() }
    }

    /// Tells the cache the partitions' versions if the database holds no
    /// task and no event (one statement: one snapshot), so that it can
    /// answer new tasks without reads (`TaskCache.foundEmpty`).
    private func findIfEmpty() throws(PGError) {
        var versions: [Int: Int64] = [:]
        for row in try connection.execute("""
            SELECT partition, version FROM meetperry.partition_version
            WHERE NOT EXISTS (SELECT FROM meetperry.task) AND NOT EXISTS (SELECT FROM meetperry.task_event)
            """).rows {
            guard let partition = row[0].flatMap({ Int($0) }), let version = row[1].flatMap({ Int64($0) }) else {
                throw PGError.unreadableRow("meetperry.partition_version")
            }
            versions[partition] = version
        }
        cache.foundEmpty(versions: versions)
    }

    /// Applies a batch atomically. On any error the transaction is rolled
    /// back (or the connection is gone) and nothing of the batch is kept, so
    /// the caller can retry the same batch on a new connection.
    /// The task cache remembers the batch only once it is committed, and
    /// forgets everything when it is not.
    public func apply(_ batch: PreparedBatch) throws -> BatchOutcome {
        guard batch.count > 0 else { return BatchOutcome() }
        do {
            var remember: TaskCache.Update?
            let outcome = try connection.transaction { () throws -> BatchOutcome in
                let (outcome, update) = try applyInTransaction(batch)
                remember = update
                return outcome
            }
            if let remember { cache.remember(remember) }
            return outcome
        } catch {
            cache.forgetAll()
            throw error
        }
    }

    /// Carries out the batch's steps (`BatchSteps`) one by one.
    private func applyInTransaction(_ batch: PreparedBatch) throws -> (BatchOutcome, TaskCache.Update?) {
        var steps = BatchSteps(batch, mode: mode, remembering: cache.isEnabled)
        while true {
            switch steps.next() {
            case .lockPartitions(let partitions):
                try lockPartitions(partitions)
                steps.locked()
            case .recall(let partitions):
                steps.recalled(cache.recall(batch, versions: try versions(of: partitions)))
            case .readOwnEvents(let indices):
                steps.read(ownEvents: try storedEvents(amongThoseOf: batch, indices))
            case .readStored(let tasks):
                steps.read(stored: try stored(tasks))
            case .readRows(let addresses):
                steps.read(rows: try rows(addresses))
            case .readHistories(let tasks):
                steps.read(histories: try storedEvents(of: tasks))
            case .write(let newItems, let rows, let verdicts, let partitions):
                // The partitions' versions first: this transaction's id comes with them (the event
                // log's column default, given once rather than worked out per row).
                let (versions, xactId) = try bumpVersions(of: partitions)
                let transaction = TransactionID(truncatingIfNeeded: xactId)  // as a row's xmin holds it
                // The new events go into the event log as they were encoded.
                try connection.copyIn(PreparedBatch.eventLogCopy, data: batch.eventRows.data(rows: newItems, appendingToEach: xactId))
                let addresses = try write(rows, of: batch)
                try store(verdicts)
                steps.written(addresses: addresses, versions: versions, transaction: transaction)
            case .done(let outcome, let next, let remember):
                mode = next
                return (outcome, remember)
            }
        }
    }

    /// The versions of these partitions (`meetperry.partition_version`), read under their locks.
    private func versions(of partitions: [Int]) throws -> [Int: Int64] {
        var versions: [Int: Int64] = [:]
        try connection.queryPrepared(
            "SELECT partition::int8, version FROM meetperry.partition_version WHERE partition = ANY($1::int4[])",
            binaryParameters: [Self.int4Array(partitions)], binary: true
        ) { row in
            guard let partition = row.int64(binary: 0), let version = row.int64(binary: 1) else {
                throw PGError.unreadableRow("meetperry.partition_version")
            }
            versions[Int(partition)] = version
        }
        return versions
    }

    /// Moves on the versions of the partitions this transaction writes (every
    /// writer does, under the partitions' locks: a cache of them is then
    /// known to be out of date); the versions they are at now, and this
    /// transaction's id.
    private func bumpVersions(of partitions: [Int]) throws -> (versions: [Int: Int64], xactId: Int64) {
        var versions: [Int: Int64] = [:]
        var xactId: Int64?
        try connection.queryPrepared("""
            UPDATE meetperry.partition_version SET version = version + 1 WHERE partition = ANY($1::int4[])
            RETURNING partition::int8, version, pg_current_xact_id()::text::int8
            """, binaryParameters: [Self.int4Array(partitions)], binary: true) { row in
            guard let partition = row.int64(binary: 0), let version = row.int64(binary: 1), let xact = row.int64(binary: 2) else {
                throw PGError.unreadableRow("meetperry.partition_version")
            }
            versions[Int(partition)] = version
            xactId = xact
        }
        guard versions.count == partitions.count, let xactId else {
            throw PGError.unreadableRow("meetperry.partition_version (partitions \(partitions) missing: apply changeset.sql)")
        }
        return (versions, xactId)
    }

    /// Fills in the verdicts (`task_event.rejection`) of an event log written
    /// before they were stored. changeset.sql only records that need
    /// (`meetperry.pending_fill`) when it adds the column: the rules, and so
    /// which creation wins a tie, are the applier's, and this is where they
    /// are applied. Under every partition lock, in one transaction: each task
    /// with a row is folded from its events, its refusals stored, and the need
    /// removed. Nil when nothing is pending (one look-up on each connection);
    /// else how many tasks were folded. Cut short, it is done again, whole, by
    /// the next connection.
    public func fillPendingVerdicts() throws -> Int? {
        let pending = "SELECT count(*) FROM meetperry.pending_fill WHERE what = 'task_event.rejection'"
        guard try connection.execute("SELECT to_regclass('meetperry.pending_fill') IS NOT NULL").scalar == "t",
              try connection.execute(pending).scalar != "0" else { return nil }
        return try connection.transaction { () throws -> Int? in
            try lockPartitions(Array(0..<TaskPartition.count))
            _ = try bumpVersions(of: Array(0..<TaskPartition.count))
            // Another connection may have filled them while this one waited for the locks.
            guard try connection.execute(pending).scalar != "0" else { return nil }
            var folded = 0
            var after = ""
            while true {
                let tasks = try connection.execute(
                    "SELECT external_id FROM meetperry.task WHERE external_id > $1 ORDER BY external_id LIMIT 1000", [after]
                ).rows.compactMap { $0[0] }
                guard let last = tasks.last else { break }
                after = last
                var verdicts: [BatchPlan.VerdictChange] = []
                for (taskId, events) in Dictionary(grouping: try storedEvents(of: tasks), by: \.webhook.taskId) {
                    let creation = TaskRules.foldState(events.map(\.webhook)).creation
                    for event in events {
                        let refusal = event.refusal(creation: creation)
                        if refusal != event.refusal { verdicts.append(.init(taskId: taskId, identity: event.identity, refusal: refusal)) }
                    }
                }
                try store(verdicts)
                folded += tasks.count
            }
            try connection.execute("DELETE FROM meetperry.pending_fill WHERE what = 'task_event.rejection'")
            return folded
        }
    }

    /// The advisory locks of the batch's partitions, in ascending order.
    private func lockPartitions(_ partitions: [Int]) throws {
        var keys = BinaryArrayEncoder(of: .int8)
        for partition in partitions { keys.add(TaskPartition.firstLockKey + Int64(partition)) }
        try connection.queryPrepared(
            "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT k FROM unnest($1::int8[]) AS k ORDER BY k) AS locks",
            binaryParameters: [keys.data]
        ) { _ in }
    }

    /// Partition numbers as an `int4[]` parameter.
    private static func int4Array(_ partitions: [Int]) -> [UInt8] {
        var array = BinaryArrayEncoder(of: .int4)
        for partition in partitions { array.add(Int32(partition)) }
        return array.data
    }

    /// What is stored of the batch's tasks: each stored event's identity,
    /// verdict and time, and where each task's row is (index look-ups, one
    /// per task and table). No content: rows are read only when the batch has new
    /// events (`rows`), and events only for the tasks that must be folded
    /// again (`storedEvents`).
    private func stored(_ tasks: [String]) throws -> BatchPlan.Stored {
        var stored = BatchPlan.Stored()
        stored.identities.reserveCapacity(tasks.count * 3)
        let remembering = cache.isEnabled
        var group = StoredGroup(taskId: "")
        try connection.queryPrepared("""
            SELECT external_id, identity, rejection, occurred_at, NULL::tid FROM meetperry.task_event WHERE external_id = ANY($1::text[])
            UNION ALL
            SELECT external_id, NULL, NULL, NULL, ctid FROM meetperry.task WHERE external_id = ANY($1::text[])
            """, binaryParameters: [BinaryArrayEncoder(texts: tasks).data], binary: true) { row in
            // Each table's rows come grouped by task (index order): a task id is
            // decoded, hashed and stored once per group, not once per event.
            if row.withBytes(0, { !$0.elementsEqual(group.bytes) }) ?? true {
                group.flush(into: &stored)
                guard let taskId = row.string(0) else { throw PGError.unreadableRow("meetperry.task_event") }
                group = StoredGroup(taskId: taskId)
            }
            switch row.withBytes(1, { EventKey($0) }) {
            case nil: // NULL: a row of meetperry.task
                guard let address = row.withBytes(4, RowAddress.init(tid:)) ?? nil else { throw PGError.unreadableRow("meetperry.task") }
                stored.rowAddresses[group.taskId] = address
            case .some(nil):
                throw PGError.unreadableRow("meetperry.task_event")
            case .some(let identity?):
                guard let micros = row.timestampMicroseconds(binary: 3) else { throw PGError.unreadableRow("meetperry.task_event") }
                stored.identities.insert(identity)
                let occurred = Timestamp(microsecondsSinceEpoch: micros)
                if group.latest.map({ occurred > $0 }) ?? true { group.latest = occurred }
                let refusal = try row.string(2).map(Self.refusal)
                if let refusal { stored.refusals[identity] = refusal }
                if remembering { group.marks.append(TaskCache.Mark(identity, refusal: refusal)) }
            }
        }
        group.flush(into: &stored)
        return stored
    }

    /// The stored events of one task, as `stored` reads them in a row.
    private struct StoredGroup {
        var taskId: String
        var bytes: [UInt8]
        var latest: Timestamp?
        var marks = TaskCache.Marks()

        init(taskId: String) {
            self.taskId = taskId
            bytes = Array(taskId.utf8)
        }

        func flush(into stored: inout BatchPlan.Stored) {
            guard let latest else { return }
            stored.latest[taskId] = max(latest, stored.latest[taskId] ?? latest)
            if !marks.isEmpty { stored.marks[taskId, default: TaskCache.Marks()] += marks }
        }
    }

    /// Which of the batch's events are stored, with their verdicts: a
    /// `Stored` with nothing else in it, enough for a batch of duplicates.
    private func storedEvents(amongThoseOf batch: PreparedBatch, _ indices: [Int]) throws -> BatchPlan.Stored {
        var stored = BatchPlan.Stored()
        stored.identities.reserveCapacity(indices.count)
        var taskIds = BinaryArrayEncoder(of: .text), identities = BinaryArrayEncoder(of: .uuid)
        for index in indices {
            taskIds.add(batch.items[index].record.webhook.taskId)
            identities.addUUID(high: batch.identities[index].high, low: batch.identities[index].low)
        }
        try connection.queryPrepared("""
            SELECT e.identity, e.rejection FROM unnest($1::text[], $2::uuid[]) AS k(external_id, identity)
            JOIN meetperry.task_event e ON e.external_id = k.external_id AND e.identity = k.identity
            """, binaryParameters: [taskIds.data, identities.data], binary: true) { row in
            guard let identity = row.withBytes(0, { EventKey($0) }) ?? nil else { throw PGError.unreadableRow("meetperry.task_event") }
            stored.identities.insert(identity)
            if let code = row.string(1) { stored.refusals[identity] = try Self.refusal(code) }
        }
        return stored
    }

    /// The rows at these addresses that have a creation date, as the rules' state, by task id.
    private func rows(_ addresses: [RowAddress]) throws -> [String: TaskState] {
        guard !addresses.isEmpty else { return [:] }
        var rows: [String: TaskState] = [:]
        rows.reserveCapacity(addresses.count)
        var tids = BinaryArrayEncoder(of: .tid)
        for address in addresses { tids.addTID(block: address.block, offset: address.offset) }
        try connection.queryPrepared("""
            SELECT external_id, user_id, content, created_date, completed_date, deleted_date FROM meetperry.task WHERE ctid = ANY($1::tid[])
            """, binaryParameters: [tids.data], binary: true) { row in
            guard let taskId = row.string(0), let userId = row.string(1), let content = row.string(2) else {
                throw PGError.unreadableRow("meetperry.task")
            }
            guard let created = row.timestampMicroseconds(binary: 3) else { return }  // a seed row without a creation date
            rows[taskId] = TaskState(
                taskId: taskId, userId: userId, content: content, createdDate: Timestamp(microsecondsSinceEpoch: created),
                completedDate: row.timestampMicroseconds(binary: 4).map(Timestamp.init(microsecondsSinceEpoch:)),
                deletedDate: row.timestampMicroseconds(binary: 5).map(Timestamp.init(microsecondsSinceEpoch:)))
        }
        return rows
    }

    /// Every stored event of `tasks`, with its identity, stored verdict, and
    /// the rest of its line (`received_at`, `delivery_id`).
    private func storedEvents(of tasks: [String]) throws -> [BatchPlan.StoredEvent] {
        guard !tasks.isEmpty else { return [] }
        var events: [BatchPlan.StoredEvent] = []
        try connection.queryPrepared("""
            SELECT e.external_id, e.identity, e.rejection, \(StoredEvent.columns),
                   (extract(epoch FROM e.received_at) * 1000000)::int8, e.delivery_id
            FROM meetperry.task_event e WHERE e.external_id = ANY($1::text[])
            """, binaryParameters: [BinaryArrayEncoder(texts: tasks).data], binary: true) { row in
            guard let taskId = row.string(0), let identity = row.withBytes(1, { EventKey($0) }) ?? nil else {
                throw PGError.unreadableRow("meetperry.task_event")
            }
            events.append(BatchPlan.StoredEvent(webhook: try StoredEvent.webhook(taskId: taskId, row: row, from: 3), identity: identity,
                                                refusal: try row.string(2).map(Self.refusal),
                                                receivedAt: row.int64(binary: 8).map(Timestamp.init(microsecondsSinceEpoch:)),
                                                deliveryId: row.string(9)))
        }
        return events
    }

    /// A stored `rejection` code as the rules' refusal.
    private static func refusal(_ code: String) throws -> EventDisposition {
        guard let refusal = EventDisposition(rejectionCode: code) else { throw PGError.unreadableRow("meetperry.task_event (rejection \(JSONWriter.quoted(code)))") }
        return refusal
    }

    /// Stores the verdicts the fold made or changed (`task_event.rejection`):
    /// new events the rules refuse, stored ones whose verdict changed. Rare,
    /// so one statement when there are any, none otherwise.
    private func store(_ verdicts: [BatchPlan.VerdictChange]) throws {
        guard !verdicts.isEmpty else { return }
        try connection.execute("""
            UPDATE meetperry.task_event e SET rejection = v.rejection
            FROM unnest($1::text[], $2::uuid[], $3::text[]) AS v(external_id, identity, rejection)
            WHERE e.external_id = v.external_id AND e.identity = v.identity AND e.rejection IS DISTINCT FROM v.rejection
            """, [PGArray.literal(verdicts.map(\.taskId)), PGArray.literal(verdicts.map(\.identity.uuidText)),
                  PGArray.literal(verdicts.map { $0.refusal?.rejectionCode })])
    }

    /// A task without a row is copied in; a row that changed is updated where
    /// it is, or (copied in by an earlier transaction of this connection, so
    /// where is not known) found by its task id while it is still the version
    /// that transaction made. A row not found is one a writer that takes no
    /// locks moved, changed or deleted: the batch fails, to be read again from
    /// scratch. With a cache, where each row updated is now (an update moves
    /// a row), by the task's number in the batch; else nothing.
    private func write(_ rows: BatchPlan.Rows, of batch: PreparedBatch) throws -> [RowAddress?] {
        let remembering = cache.isEnabled
        newTaskRows.removeAll()
        updatesByAddress.removeAll()
        updatesOfCopiedIn.removeAll()
        // Rows read where they are (through the buffers: an array's element read is a copy of it, a retain of each string).
        rows.new.withUnsafeBufferPointer { new in
            for index in new.indices { Self.encode(new[index], into: &newTaskRows) }
        }
        rows.existing.withUnsafeBufferPointer { existing in
            for index in existing.indices {
                if case .copiedIn = existing[index].locator {
                    updatesOfCopiedIn.add(existing[index])
                } else {
                    updatesByAddress.add(existing[index])
                }
            }
        }
        var addresses: [RowAddress?] = remembering ? Array(repeating: nil, count: batch.tasks.count) : []
        if !newTaskRows.isEmpty {
            try connection.copyIn("""
                COPY meetperry.task (external_id, user_id, content, created_date, completed_date, deleted_date)
                FROM STDIN (FORMAT binary)
                """, data: newTaskRows.data)
        }
        var updated = 0
        for updates in [updatesByAddress, updatesOfCopiedIn] where updates.count > 0 {
            try connection.queryPrepared(updates.statement, binaryParameters: updates.parameters, binary: true) { row in
                // A row written: its task (its number in the batch) and where it is now.
                guard let task = row.int32(binary: 0), task >= 0, Int(task) < batch.tasks.count,
                      let address = row.withBytes(1, RowAddress.init(tid:)) ?? nil else {
                    throw PGError.unreadableRow("meetperry.task")
                }
                if remembering { addresses[Int(task)] = address }
                updated += 1
            }
        }
        // The rows were read (or written) under the partition locks; only a writer that takes none can have changed them.
        guard updated == rows.existing.count else { throw PGError.rowsChangedUnderLock("meetperry.task") }
        return addresses
    }

    /// One `meetperry.task` row (its seed columns but the id) for COPY.
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

extension RowAddress {
    /// From a `tid` in binary: the block (4 bytes) and the line (2), big-endian.
    init?(tid bytes: UnsafeRawBufferPointer) {
        guard bytes.count == 6 else { return nil }
        block = bytes.prefix(4).reduce(0) { $0 << 8 | UInt32($1) }
        offset = bytes.suffix(2).reduce(0) { $0 << 8 | UInt16($1) }
    }
}
