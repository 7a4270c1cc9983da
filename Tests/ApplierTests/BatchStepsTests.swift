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
        case .readOwnEvents: return "read own events"
        case .readStored: return "read stored"
        case .readRows(let addresses): return "read rows \(addresses.count)"
        case .readHistories(let tasks): return "read histories \(tasks.sorted())"
        case .write(let newItems, let rows, let verdicts):
            return "write events \(newItems), \(rows.new.count) new rows, \(rows.existing.count) updated, \(verdicts.count) verdicts"
        case .done(let outcome, let next):
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
            "lock \(batch.partitions.count)", "read stored", "write events [0, 1], 2 new rows, 0 updated, 0 verdicts",
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
            "lock 1", "read stored", "done applied 0 duplicates 1 rejected 0, next replaying",
        ])
        #expect(walk(batch, mode: .replaying, stored: stored) == [
            "lock 1", "read own events", "done applied 0 duplicates 1 rejected 0, next replaying",
        ], "replaying: the task's state is not read when nothing is new")
        let fresh = PreparedBatch([incoming(event(.created, 0, id: "b"), line: 1)])
        #expect(walk(fresh, mode: .replaying) == [
            "lock 1", "read own events", "read stored", "write events [0], 1 new rows, 0 updated, 0 verdicts",
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
            "lock 1", "read stored", "read rows 1", "write events [0], 0 new rows, 1 updated, 0 verdicts",
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
            "lock 1", "read stored", "read rows 1", "read histories [\"a\"]", "write events [0], 0 new rows, 0 updated, 1 verdicts",
            "done applied 0 duplicates 0 rejected 1, next live",
        ], "late and from another user: folded again, refused, its verdict stored, the row unchanged")
    }
}
