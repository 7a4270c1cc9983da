import Foundation
@testable import LibPQ
import Logging
import Synchronization
import TaskModel
import Testing
import TestSupport
import WebhookModel
@testable import ApplierCore

func incoming(_ webhook: Webhook, line: Int) -> IncomingEvent {
    IncomingEvent(record: StreamRecord(webhook: webhook), line: line, input: LineBytes("line \(line)".utf8))
}

/// The committer's state as one value: each transition on its own, without threads.
@Suite struct CommitterStateTests {
    let batch = PreparedBatch([incoming(event(.created, 0), line: 1)])

    @Test func oneBatchWaitsWhileAnotherIsCommitted() {
        var state = CommitterState()
        #expect(state.isReady)
        guard case .taken = state.submit(batch) else { Issue.record("not taken"); return }
        #expect(!state.isReady, "one waits")
        guard case .full = state.submit(batch) else { Issue.record("a second should wait"); return }
        guard case .commit = state.next() else { Issue.record("the thread takes it"); return }
        #expect(!state.isReady, "one is being committed")
        guard case .taken = state.submit(batch) else { Issue.record("the place is free again"); return }
        var outcome = BatchOutcome()
        outcome.applied = 1
        state.committed(outcome)
        state.batchDone()
        guard case .commit = state.next() else { Issue.record("the waiting one is next"); return }
        state.committed(outcome)
        state.batchDone()
        guard case .wait = state.next() else { Issue.record("nothing left: wait"); return }
        #expect(state.counts.applied == 2 && state.counts.batches == 2)
    }

    @Test func finishingWaitsForWhatWasHandedIn() {
        var state = CommitterState()
        _ = state.submit(batch)
        state.finish()
        guard case .notYet = state.finished else { Issue.record("a batch still waits"); return }
        guard case .commit = state.next() else { Issue.record("it is still committed"); return }
        state.batchDone()
        guard case .done = state.finished else { Issue.record("done once it is"); return }
        guard case .exit = state.next() else { Issue.record("the thread ends"); return }
    }

    @Test func aFailureRefusesWhatWaitsAndWhatComes() {
        struct Broken: Error {}
        var state = CommitterState()
        _ = state.submit(batch)
        _ = state.next()
        _ = state.submit(batch)
        state.fail(Broken())
        #expect(state.waiting == nil && !state.isReady)
        guard case .refused(let error) = state.submit(batch), error is Broken else { Issue.record("refused with the failure"); return }
        guard case .failed = state.finished else { Issue.record("finish reports it"); return }
        guard case .exit = state.next() else { Issue.record("the thread ends"); return }
    }
}

/// What a batch does, without the database: new events and duplicates, the
/// tasks whose history must be read, the folded rows and each event's fate.
@Suite struct BatchPlanTests {
    @Test func duplicatesOfStoredEventsAndOfEachOtherAreDropped() {
        let created = event(.created, 0, id: "a")
        let batch = PreparedBatch([incoming(created, line: 1), incoming(created, line: 2), incoming(event(.created, 1, id: "b"), line: 3)])
        var stored = BatchPlan.Stored()
        stored.identities = [EventKey(EventIdentity.bytes(of: event(.created, 1, id: "b")))!]
        stored.latest = ["b": at(1)]
        stored.rowAddresses = ["b": RowAddress(block: 0, offset: 2)]
        let plan = BatchPlan(batch, stored: stored)
        #expect(plan.newItems == [0], "only the first a is new")
        #expect(plan.duplicates == 2)
        #expect(plan.tasksToRefold.isEmpty, "b gained nothing")
        let (rows, outcome, _) = plan.fold()
        #expect(rows.new.map(\.taskId) == ["a"] && rows.existing.isEmpty)
        #expect(outcome.applied == 1 && outcome.duplicates == 2 && outcome.rejected.isEmpty)
    }

    @Test func aTaskWithAHistoryIsFoldedFromAllOfItsEvents() {
        let completion = event(.updated, 5, id: "a", content: "done", done: true)
        let thief = event(.updated, 6, id: "a", user: "u2", content: "mine")
        let batch = PreparedBatch([incoming(completion, line: 1), incoming(thief, line: 2)])
        var stored = BatchPlan.Stored()
        stored.identities = [EventKey(EventIdentity.bytes(of: event(.created, 0, id: "a")))!]
        stored.latest = ["a": at(0)]
        stored.rowAddresses = ["a": RowAddress(block: 0, offset: 1)]
        var plan = BatchPlan(batch, stored: stored)
        #expect(plan.tasksToRefold == ["a"])
        let stored0 = event(.created, 0, id: "a", content: "Buy milk")
        plan.addStored(.init(webhook: stored0, identity: EventKey(EventIdentity.bytes(of: stored0))!, refusal: nil))
        let (rows, outcome, verdicts) = plan.fold()
        #expect(rows.new.isEmpty)
        #expect(rows.existing.map(\.state.content) == ["done"] && rows.existing.first?.state.completedDate == at(5))
        #expect(outcome.applied == 1)
        #expect(outcome.rejected.map(\.0.line) == [2], "another user's event is refused")
        #expect(verdicts == [.init(taskId: "a", identity: EventKey(EventIdentity.bytes(of: thief))!, refusal: .rejectedOwner)], "and that is stored")
    }

    /// A refused event arriving again is refused again: from its stored
    /// verdict when its task gained nothing, from the fold when it did (and a
    /// verdict the fold changes is stored).
    @Test func duplicatesOfRefusedEventsAreRefusedAgain() {
        let creation = event(.created, 0, id: "a"), thief = event(.updated, 6, id: "a", user: "u2", content: "mine")
        let late = event(.created, 3, id: "a", content: "second created")
        func key(_ w: Webhook) -> EventKey { EventKey(EventIdentity.bytes(of: w))! }
        var stored = BatchPlan.Stored()
        stored.identities = [key(creation), key(thief), key(late)]
        stored.latest = ["a": at(6)]
        stored.rowAddresses = ["a": RowAddress(block: 0, offset: 1)]
        stored.refusals = [key(thief): .rejectedOwner, key(late): .rejectedConflict]

        let replay = BatchPlan(PreparedBatch([incoming(creation, line: 1), incoming(thief, line: 2), incoming(late, line: 3), incoming(thief, line: 4)]),
                               stored: stored)
        let (_, outcome, verdicts) = replay.fold()
        #expect(outcome.duplicates == 1 && outcome.applied == 0)
        #expect(outcome.rejected.map(\.0.line) == [2, 3, 4])
        #expect(outcome.rejected.map(\.1) == [.rejectedOwner, .rejectedConflict, .rejectedOwner])
        #expect(verdicts.isEmpty)

        // u2's own created, earlier than everything: u2 owns the task now, so the
        // stored verdicts of u1's events change and the thief's update is taken.
        let earlier = event(.created, -5, id: "a", user: "u2", content: "first")
        var plan = BatchPlan(PreparedBatch([incoming(earlier, line: 1), incoming(thief, line: 2)]), stored: stored)
        for w in [creation, thief, late] { plan.addStored(.init(webhook: w, identity: key(w), refusal: stored.refusals[key(w)])) }
        let (rows, again, changed) = plan.fold()
        #expect(rows.existing.first?.state.userId == "u2")
        #expect(again.rejected.isEmpty && again.duplicates == 1 && again.applied == 1)
        #expect(Set(changed.map(\.identity)) == [key(creation), key(thief), key(late)])
        #expect(changed.first { $0.identity == key(creation) }?.refusal == .rejectedOwner)
        #expect(changed.first { $0.identity == key(thief) }?.refusal == nil)
        // The same changes, to be said: each stored event's line, before and after, and the line that changed it.
        let said = Dictionary(uniqueKeysWithValues: again.verdictChanges.map { ($0.record.webhook, $0) })
        #expect(said.count == 3 && again.verdictChanges.allSatisfy { $0.causedBy == 1 })
        #expect(said[creation]?.before == nil && said[creation]?.after == .rejectedOwner)
        #expect(said[thief]?.before == .rejectedOwner && said[thief]?.after == nil)
        #expect(said[late]?.before == .rejectedConflict && said[late]?.after != nil && said[late]?.after != .rejectedConflict)
        #expect(outcome.verdictChanges.isEmpty, "a replay changes nothing")
    }

    /// A task whose new events all come after its stored ones goes on from its
    /// row, without its history; one with an older new event is folded again.
    @Test func laterEventsGoOnFromTheRowAndAnOlderOneRefolds() {
        let row = TaskState(taskId: "a", userId: "u1", content: "c", createdDate: at(0), completedDate: nil, deletedDate: nil)
        var stored = BatchPlan.Stored()
        stored.identities = [EventKey(EventIdentity.bytes(of: event(.created, 0, id: "a")))!]
        stored.rowAddresses = ["a": RowAddress(block: 0, offset: 1), "b": RowAddress(block: 7, offset: 2)]
        stored.latest = ["a": at(0), "b": at(10)]
        let done = event(.updated, 5, id: "a", content: "done", done: true), thief = event(.updated, 6, id: "a", user: "u2")
        let again = event(.created, 7, id: "a"), older = event(.updated, 9, id: "b", content: "older than b's latest")
        var plan = BatchPlan(PreparedBatch([incoming(done, line: 1), incoming(thief, line: 2), incoming(again, line: 3),
                                            incoming(older, line: 4), incoming(done, line: 5)]), stored: stored)
        #expect(Set(plan.rowsToRead) == [RowAddress(block: 0, offset: 1), RowAddress(block: 7, offset: 2)])
        plan.addRows(["a": row, "b": TaskState(taskId: "b", userId: "u1", content: "c", createdDate: at(0), completedDate: nil, deletedDate: nil)])
        #expect(plan.tasksToRefold == ["b"], "only b's history is read")
        let (rows, outcome, verdicts) = plan.fold()
        #expect(rows.existing.first { $0.state.taskId == "a" } == .init(locator: .address(RowAddress(block: 0, offset: 1)), state: TaskState(taskId: "a", userId: "u1", content: "done", createdDate: at(0),
                                                                    completedDate: at(5), deletedDate: nil), task: 0))
        #expect(outcome.applied == 1 && outcome.duplicates == 1 && outcome.pending == 1, "(b is folded without its history here: pending)")
        #expect(outcome.rejected.map(\.0.line) == [2, 3] && outcome.rejected.map(\.1) == [.rejectedOwner, .rejectedConflict])
        #expect(Set(verdicts.map(\.refusal)) == [.rejectedOwner, .rejectedConflict])
    }

    /// An identity key prints as the identity's uuid (the text a `uuid[]` parameter carries).
    @Test func anIdentityKeyPrintsAsItsUUID() {
        for webhook in [event(.created, 0, id: "a"), event(.updated, 7, id: "ünï", user: "u\"2", content: "x"), event(.deleted, -3, id: "")] {
            #expect(EventKey(EventIdentity.bytes(of: webhook))?.uuidText == EventIdentity.uuid(of: webhook))
        }
        #expect(EventKey([UInt8](repeating: 0, count: 16))?.uuidText == "00000000-0000-0000-0000-000000000000")
        #expect(EventKey([UInt8](repeating: 0xff, count: 16))?.uuidText == "ffffffff-ffff-ffff-ffff-ffffffffffff")
    }

    @Test func eventsBeforeTheirCreatedArePendingAndMakeNoRow() {
        let batch = PreparedBatch([incoming(event(.updated, 3, id: "p"), line: 1)])
        let (rows, outcome, _) = BatchPlan(batch, stored: .init()).fold()
        #expect(rows.new.isEmpty && rows.existing.isEmpty)
        #expect(outcome.pending == 1)
    }
}

/// The committer's retries, splits and give-ups in-process, against a store
/// that fails as told: no PostgreSQL needed to prove them.
@Suite struct BatchCommitterTests {
    /// A store that applies everything (each event applied) unless told to fail.
    final class FakeStore: BatchStore, @unchecked Sendable {
        let lock = NSLock()
        var transientFailures = 0
        /// Lines whose presence in a batch makes the database refuse it for its data.
        var refusedLines: Set<Int> = []
        var conflictLines: Set<Int> = []
        private(set) var committed: [Int] = []
        private(set) var attempts = 0

        func apply(_ batch: PreparedBatch) throws -> BatchOutcome {
            lock.lock()
            defer { lock.unlock() }
            attempts += 1
            if transientFailures > 0 {
                transientFailures -= 1
                throw PGError(kind: .connection, message: "server closed the connection unexpectedly")
            }
            let lines = batch.items.map(\.line)
            if lines.contains(where: refusedLines.contains) {
                throw PGError(kind: .query, sqlState: .init(rawValue: "22021"), message: "invalid byte sequence")
            }
            if lines.contains(where: conflictLines.contains) {
                throw PGError(kind: .query, sqlState: .uniqueViolation, message: "duplicate key value violates unique constraint")
            }
            committed += lines
            var outcome = BatchOutcome()
            outcome.applied = batch.count
            return outcome
        }
    }

    func committer(_ store: FakeStore, rejectsTo path: String, stop: StopToken = StopToken(), shutdownTimeout: Int = 30) -> (BatchCommitter, RejectWriter) {
        var configuration = ApplierConfiguration(conninfo: "")
        configuration.maxBackoffMilliseconds = 1
        configuration.shutdownTimeoutSeconds = shutdownTimeout
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        let rejects = RejectWriter(fd: fd)
        return (BatchCommitter(configuration: configuration, logger: Logger(label: "test"), rejects: rejects, stop: stop, connect: { store }), rejects)
    }

    func batch(_ lines: ClosedRange<Int>) -> PreparedBatch {
        PreparedBatch(lines.map { incoming(event(.created, $0, id: "t\($0)"), line: $0) })
    }

    func rejectedLines(_ path: String) -> [Int] {
        ((try? String(contentsOfFile: path, encoding: .utf8)) ?? "").split(separator: "\n").compactMap { line in
            guard case .number(let n)? = try? JSONParser.parse(Array(line.utf8))["line"] else { return nil }
            return Int(n)
        }
    }

    @Test func aBrokenConnectionIsRetriedAndTheBatchCommittedOnce() throws {
        let store = FakeStore()
        store.transientFailures = 3
        let path = try makeTemporaryDirectory("committer") + "/rejects"
        let (committer, _) = committer(store, rejectsTo: path)
        try committer.start()
        try committer.submit(batch(1...10))
        let counts = try committer.finish()
        #expect(store.committed == Array(1...10))
        #expect(store.attempts == 4)
        #expect(counts.applied == 10 && counts.batches == 1)
    }

    @Test func aBatchTheDatabaseRefusesIsSplitUntilTheCulpritStandsAlone() throws {
        let store = FakeStore()
        store.refusedLines = [7]
        store.conflictLines = [3]
        let path = try makeTemporaryDirectory("committer") + "/rejects"
        let (committer, rejects) = committer(store, rejectsTo: path)
        try committer.start()
        try committer.submit(batch(1...10))
        let counts = try committer.finish()
        rejects.flush()
        #expect(Set(store.committed) == Set(1...10).subtracting([3, 7]), "everything else committed")
        #expect(rejectedLines(path).sorted() == [3, 7], "a key taken for good is the data's fault too")
        #expect(counts.rejected == 2 && counts.applied == 8)
    }

    @Test func askedToStopWhileTheDatabaseIsAwayItGivesUpAfterTheTimeout() throws {
        let store = FakeStore()
        store.transientFailures = 1
        let stop = StopToken()
        let path = try makeTemporaryDirectory("committer") + "/rejects"
        let (committer, _) = committer(store, rejectsTo: path, stop: stop, shutdownTimeout: 0)
        try committer.start()
        store.lock.lock()
        store.transientFailures = Int.max
        store.lock.unlock()
        stop.request()
        try committer.submit(batch(1...3))
        #expect(throws: BatchCommitter.GaveUp.self) { try committer.finish() }
        #expect(store.committed.isEmpty)
    }

    @Test func anErrorRetryingCannotFixStopsItAtOnce() throws {
        final class Missing: BatchStore {
            func apply(_ batch: PreparedBatch) throws -> BatchOutcome { throw PGError.schemaMissing("meetperry.task") }
        }
        var configuration = ApplierConfiguration(conninfo: "")
        configuration.maxBackoffMilliseconds = 1
        let committer = BatchCommitter(configuration: configuration, logger: Logger(label: "test"), rejects: RejectWriter(fd: -1),
                                       stop: StopToken(), connect: { Missing() })
        try committer.start()
        try committer.submit(batch(1...2))
        #expect(throws: BatchCommitter.Fatal.self) { try committer.finish() }
        #expect(throws: BatchCommitter.Fatal.self) { try committer.submit(batch(3...4)) }
    }
}

/// What PostgreSQL's answers mean to a caller.
@Suite struct PGErrorTests {
    @Test func refusalsAtConnectAreNotRetriedAndBreakagesAre() {
        #expect(!PGError.connectionFailed(#"FATAL:  database "nope" does not exist"#).isTransient)
        #expect(!PGError.connectionFailed(#"FATAL:  password authentication failed for user "x""#).isTransient)
        #expect(!PGError.connectionFailed("FATAL:  no pg_hba.conf entry for host").isTransient)
        #expect(PGError.connectionFailed("connection to server on socket failed: No such file or directory").isTransient)
        #expect(PGError.connectionFailed("FATAL:  the database system is starting up").isTransient)
        #expect(PGError(kind: .query, sqlState: .deadlockDetected, message: "").isTransient)
        #expect(!PGError(kind: .query, sqlState: .undefinedTable, message: "").isTransient)
        #expect(PGError(kind: .query, sqlState: .uniqueViolation, message: "").isWriteConflict)
        #expect(PGError(kind: .query, sqlState: .init(rawValue: "22P02"), message: "").isDataError)
        #expect(!PGError.schemaMissing("meetperry.task").isTransient)
    }
}
