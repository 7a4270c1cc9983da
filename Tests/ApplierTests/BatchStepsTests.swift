import Testing
import TaskModel
import WebhookModel
@testable import ApplierCore

/// A batch's transaction step by step, on values: which reads it asks for,
/// in which order, and which it skips; what it writes; how the replay mode
/// goes from one batch to the next. `TaskStore` carries the same steps out in SQL.
@Suite struct BatchStepsTests {
    func key(_ webhook: Webhook) -> EventKey { EventKey(EventIdentity.bytes(of: webhook))! }

    /// A step as a line, so a sequence of them reads (and compares) plainly.
    func describe(_ step: BatchSteps.Step) -> String {
        switch step {
        case .lockPartitions(let partitions): return "lock \(partitions.count)"
        case .recall(let partitions): return "recall \(partitions.count)"
        case .readOwnEvents: return "read own events"
        case .readStored(let tasks): return "read stored \(tasks.sorted())"
        case .readRows(let addresses): return "read rows \(addresses.count)"
        case .readHistories(let tasks): return "read histories \(tasks.sorted())"
        case .write(let newItems, let rows, let verdicts, _):
            return "write events \(newItems), \(rows.new.count) new rows, \(rows.existing.count) updated, \(verdicts.count) verdicts"
        case .done(let outcome, let next, _):
            return "done applied \(outcome.applied) duplicates \(outcome.duplicates) rejected \(outcome.rejected.count), next \(next)"
        }
    }

    /// Walks the steps, answering each read from `stored`, `rows` and `histories`; returns the steps as lines.
    func walk(_ batch: PreparedBatch, mode: BatchSteps.Mode, stored: BatchPlan.Stored = .init(), rows: [String: TaskState] = [:],
              histories: [BatchPlan.StoredEvent] = []) -> [String] {
        var steps = BatchSteps(batch, mode: mode)
        var said: [String] = []
        while said.count < 10 {
            let step = steps.next()
            said.append(describe(step))
            switch step {
            case .lockPartitions: steps.locked()
            case .recall: Issue.record("no cache, no recall")
            case .readOwnEvents: steps.read(ownEvents: stored)
            case .readStored: steps.read(stored: stored)
            case .readRows: steps.read(rows: rows)
            case .readHistories: steps.read(histories: histories)
            case .write: steps.written()
            case .done: return said
            }
        }
        Issue.record("no end: \(said)")
        return said
    }

    @Test func aBatchOfNewTasksReadsWhatIsStoredOnceAndWritesThem() {
        let batch = PreparedBatch([incoming(event(.created, 0, id: "a"), line: 1), incoming(event(.created, 0, id: "b"), line: 2)])
        #expect(walk(batch, mode: .live) == [
            "lock \(batch.partitions.count)", "read stored [\"a\", \"b\"]", "write events [0, 1], 2 new rows, 0 updated, 0 verdicts",
            "done applied 2 duplicates 0 rejected 0, next live",
        ], "no rows and no histories to read: none is asked for")
    }

    @Test func aBatchOfDuplicatesWritesNothingAndTheNextOneLooksForItsOwnEventsFirst() {
        let created = event(.created, 0, id: "a")
        let batch = PreparedBatch([incoming(created, line: 1)])
        var stored = BatchPlan.Stored()
        stored.identities = [key(created)]
        stored.latest = ["a": at(0)]
        #expect(walk(batch, mode: .live, stored: stored) == [
            "lock 1", "read stored [\"a\"]", "done applied 0 duplicates 1 rejected 0, next replaying",
        ])
        #expect(walk(batch, mode: .replaying, stored: stored) == [
            "lock 1", "read own events", "done applied 0 duplicates 1 rejected 0, next replaying",
        ], "replaying: the task's state is not read when nothing is new")
        let fresh = PreparedBatch([incoming(event(.created, 0, id: "b"), line: 1)])
        #expect(walk(fresh, mode: .replaying) == [
            "lock 1", "read own events", "read stored [\"b\"]", "write events [0], 1 new rows, 0 updated, 0 verdicts",
            "done applied 1 duplicates 0 rejected 0, next live",
        ], "a new event: the state is read after all, and the replay is over")
    }

    @Test func aTaskWhoseNewEventsComeAfterItsStoredOnesGoesOnFromItsRow() {
        let created = event(.created, 0, id: "a")
        var stored = BatchPlan.Stored()
        stored.identities = [key(created)]
        stored.latest = ["a": at(0)]
        stored.rowAddresses = ["a": RowAddress(block: 0, offset: 1)]
        let row = TaskRules.foldState([created]).0!
        let completion = PreparedBatch([incoming(event(.updated, 5, id: "a", done: true), line: 1)])
        #expect(walk(completion, mode: .live, stored: stored, rows: ["a": row]) == [
            "lock 1", "read stored [\"a\"]", "read rows 1", "write events [0], 0 new rows, 1 updated, 0 verdicts",
            "done applied 1 duplicates 0 rejected 0, next live",
        ], "no history read")
    }

    @Test func anEventOlderThanAStoredOneMakesItsTaskBeFoldedAgainFromItsHistory() {
        let created = event(.created, 0, id: "a"), completed = event(.updated, 10, id: "a", done: true)
        var stored = BatchPlan.Stored()
        stored.identities = [key(created), key(completed)]
        stored.latest = ["a": at(10)]
        stored.rowAddresses = ["a": RowAddress(block: 0, offset: 1)]
        let row = TaskRules.foldState([created, completed]).0!
        let thief = event(.updated, 5, id: "a", user: "u2", content: "mine")
        let history = [created, completed].map { BatchPlan.StoredEvent(webhook: $0, identity: key($0), refusal: nil) }
        #expect(walk(PreparedBatch([incoming(thief, line: 1)]), mode: .live, stored: stored, rows: ["a": row], histories: history) == [
            "lock 1", "read stored [\"a\"]", "read rows 1", "read histories [\"a\"]", "write events [0], 0 new rows, 0 updated, 1 verdicts",
            "done applied 0 duplicates 0 rejected 1, next live",
        ], "late and from another user: folded again, refused, its verdict stored, the row unchanged")
    }

    /// A database as far as the steps need one: the batches committed so far
    /// (events, rows, where they are and which transaction wrote them) and
    /// the partitions' versions.
    struct FakeDatabase {
        var events: [String: [BatchPlan.StoredEvent]] = [:]
        var rows: [String: (RowAddress, TaskState, writer: TransactionID)] = [:]
        var versions = [Int64](repeating: 0, count: TaskPartition.count)
        var nextOffset: UInt16 = 1
        var nextTransaction: TransactionID = 7

        func stored(_ tasks: [String]) -> BatchPlan.Stored {
            var stored = BatchPlan.Stored()
            for taskId in tasks {
                for event in events[taskId] ?? [] {
                    stored.identities.insert(event.identity)
                    if let refusal = event.refusal { stored.refusals[event.identity] = refusal }
                    stored.latest[taskId] = max(stored.latest[taskId] ?? event.webhook.timestamp, event.webhook.timestamp)
                    stored.marks[taskId, default: TaskCache.Marks()].append(TaskCache.Mark(event.identity, refusal: event.refusal))
                }
                if let address = rows[taskId]?.0 { stored.rowAddresses[taskId] = address }
            }
            return stored
        }
    }

    /// Walks one batch with a cache, carrying out each step on `database`,
    /// and commits it (the cache remembers) unless `commit` is false (it forgets all).
    func walk(_ batch: PreparedBatch, cache: inout TaskCache, database: inout FakeDatabase, commit: Bool = true) -> [String] {
        var steps = BatchSteps(batch, mode: .live, remembering: true)
        var said: [String] = []
        var written = database
        while said.count < 12 {
            let step = steps.next()
            said.append(describe(step))
            switch step {
            case .lockPartitions: steps.locked()
            case .recall(let partitions):
                let recall = cache.recall(batch, versions: Dictionary(uniqueKeysWithValues: partitions.map { ($0, database.versions[$0]) }))
                said[said.count - 1] += ": \(recall.hits) answered"
                steps.recalled(recall)
            case .readOwnEvents: Issue.record("live, not replaying")
            case .readStored(let tasks): steps.read(stored: database.stored(tasks))
            case .readRows(let addresses):
                steps.read(rows: Dictionary(uniqueKeysWithValues: database.rows.values.filter { addresses.contains($0.0) }.map { ($0.1.taskId, $0.1) }))
            case .readHistories(let tasks): steps.read(histories: tasks.flatMap { database.events[$0] ?? [] })
            case .write(let newItems, let rows, let verdicts, let partitions):
                var addresses = [RowAddress?](repeating: nil, count: batch.tasks.count)
                for index in newItems {
                    let w = batch.items[index].record.webhook
                    let refusal = verdicts.first { $0.identity == batch.identities[index] }?.refusal
                    written.events[w.taskId, default: []].append(.init(webhook: w, identity: batch.identities[index], refusal: refusal))
                }
                let transaction = written.nextTransaction
                written.nextTransaction += 1
                for update in rows.existing {  // found as the locator says, or the batch would fail
                    let row = written.rows[update.state.taskId]
                    switch update.locator {
                    case .address(let address): #expect(row?.0 == address, "\(update.state.taskId) is not at \(address)")
                    case .copiedIn(let writer): #expect(row?.writer == writer, "\(update.state.taskId) was not copied in by \(writer)")
                    }
                }
                for (state, returned) in rows.new.map({ ($0, false) }) + rows.existing.map({ ($0.state, true) }) {  // every write moves the row
                    let address = RowAddress(block: 0, offset: written.nextOffset)
                    written.nextOffset += 1
                    written.rows[state.taskId] = (address, state, transaction)
                    if returned { addresses[Int(batch.taskNumbers[state.taskId]!)] = address }  // COPY does not say where
                }
                for partition in partitions { written.versions[partition] += 1 }
                steps.written(addresses: addresses, versions: Dictionary(uniqueKeysWithValues: partitions.map { ($0, written.versions[$0]) }),
                              transaction: transaction)
            case .done(_, _, let remember):
                if commit {
                    database = written
                    if let remember { cache.remember(remember) }
                } else {
                    cache.forgetAll()
                }
                return said
            }
        }
        Issue.record("no end: \(said)")
        return said
    }

    /// In the order senders send: the completion and the retry of a task this
    /// connection has just written read nothing back; a partition another
    /// writer bumped is read again; a batch that was not committed leaves
    /// nothing remembered.
    @Test func aTaskJustWrittenIsAnsweredFromTheCacheUntilItsPartitionChanges() {
        var cache = TaskCache(budget: 1 << 20)
        var database = FakeDatabase()
        let created = event(.created, 0, id: "a"), other = event(.created, 1, id: "b")
        let batch = PreparedBatch([incoming(created, line: 1), incoming(other, line: 2)])
        #expect(walk(batch, cache: &cache, database: &database) == [
            "lock \(batch.partitions.count)", "recall \(batch.partitions.count): 0 answered", "read stored [\"a\", \"b\"]",
            "write events [0, 1], 2 new rows, 0 updated, 0 verdicts", "done applied 2 duplicates 0 rejected 0, next live",
        ])
        #expect(cache.entry(of: "a")?.row == database.rows["a"]?.1 && cache.entry(of: "a")?.locator == .copiedIn(by: 7), "copied in: where is not known")

        let completion = PreparedBatch([incoming(event(.updated, 5, id: "a", done: true), line: 3), incoming(created, line: 4)])
        #expect(walk(completion, cache: &cache, database: &database) == [
            "lock 1", "recall 1: 1 answered", "write events [0], 0 new rows, 1 updated, 0 verdicts",
            "done applied 1 duplicates 1 rejected 0, next live",
        ], "the row and the retry's identity come from the cache: nothing is read")
        #expect(cache.entry(of: "a")?.locator == database.rows["a"].map { .address($0.0) }, "where the update moved the row")
        #expect(cache.entry(of: "a")?.marks.count == 2)

        // Another writer (an applier elsewhere) bumps a's partition: a is read again, b is still answered.
        database.versions[TaskPartition.of(task: "a")] += 1
        let both = PreparedBatch([incoming(event(.updated, 9, id: "a", content: "edited"), line: 5),
                                  incoming(event(.updated, 9, id: "b", content: "edited"), line: 6)])
        let sameBoth = TaskPartition.of(task: "a") == TaskPartition.of(task: "b")
        #expect(walk(both, cache: &cache, database: &database) == [
            "lock \(both.partitions.count)", "recall \(both.partitions.count): \(sameBoth ? 0 : 1) answered",
            "read stored \(sameBoth ? ["a", "b"] : ["a"])",
            "read rows \(sameBoth ? 2 : 1)",
            "write events [0, 1], 0 new rows, 2 updated, 0 verdicts", "done applied 2 duplicates 0 rejected 0, next live",
        ])

        // A batch that fails (rolled back) leaves nothing trusted: the next one reads.
        let late = PreparedBatch([incoming(event(.updated, 20, id: "b", content: "after"), line: 7)])
        #expect(walk(late, cache: &cache, database: &database, commit: false).contains("recall 1: 1 answered"))
        #expect(cache.count == 0)
        #expect(walk(late, cache: &cache, database: &database)[1...2] == ["recall 1: 0 answered", "read stored [\"b\"]"])

        // A deleted task is not kept: its history is over.
        _ = walk(PreparedBatch([incoming(event(.deleted, 30, id: "b"), line: 8)]), cache: &cache, database: &database)
        #expect(cache.entry(of: "b") == nil && database.rows["b"]?.1.deletedDate != nil)
    }

    /// An event older than the task's latest cannot go on from the row: the
    /// task is read and folded again, as without a cache, and remembered as it is after.
    @Test func anOlderEventSendsItsTaskToTheDatabase() {
        var cache = TaskCache(budget: 1 << 20)
        var database = FakeDatabase()
        _ = walk(PreparedBatch([incoming(event(.created, 0, id: "a"), line: 1), incoming(event(.updated, 10, id: "a", done: true), line: 2)]),
                 cache: &cache, database: &database)
        let thief = PreparedBatch([incoming(event(.updated, 5, id: "a", user: "u2", content: "mine"), line: 3)])
        #expect(walk(thief, cache: &cache, database: &database) == [
            "lock 1", "recall 1: 0 answered", "read stored [\"a\"]", "read rows 1", "read histories [\"a\"]",
            "write events [0], 0 new rows, 0 updated, 1 verdicts", "done applied 0 duplicates 0 rejected 1, next live",
        ])
        #expect(cache.entry(of: "a")?.marks.map(\.refusal) == [nil, nil, .rejectedOwner])
        // Its retry is a duplicate of a refused event: refused again, from the cache.
        #expect(walk(thief, cache: &cache, database: &database) == [
            "lock 1", "recall 1: 1 answered", "done applied 0 duplicates 0 rejected 1, next replaying",
        ])
    }
}
