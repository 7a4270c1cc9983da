import Testing
import TaskModel
import TestSupport
import WebhookModel
@testable import ApplierCore

/// The task cache on values: what it answers, what it refuses to, what it
/// forgets and when, and that it keeps to its budget.
@Suite struct TaskCacheTests {
    func key(_ webhook: Webhook) -> EventKey { EventKey(EventIdentity.bytes(of: webhook))! }

    /// A cached task `id`: created at minute 0 (and stored so), its row at `offset`.
    func entry(_ id: String, offset: UInt16 = 1, content: String = "c") -> TaskCache.Entry {
        let created = event(.created, 0, id: id, content: content)
        return TaskCache.Entry(row: TaskRules.foldState([created]).state!, locator: .address(RowAddress(block: 0, offset: offset)), latest: at(0),
                               marks: [TaskCache.Mark(key(created), refusal: nil)])
    }

    /// Every partition at version 0.
    let unchanged = Dictionary(uniqueKeysWithValues: (0..<TaskPartition.count).map { ($0, Int64(0)) })

    func remembering(_ entries: [TaskCache.Entry], budget: Int = 1 << 20) -> TaskCache {
        var cache = TaskCache(budget: budget)
        _ = cache.recall(PreparedBatch([]), versions: unchanged)
        cache.remember(TaskCache.Update(entries: entries))
        return cache
    }

    @Test func laterEventsAndRetriesAreAnsweredOlderOnesAndUnknownTasksAreNot() {
        var cache = remembering([entry("a"), entry("b"), entry("c")])
        let batch = PreparedBatch([
            incoming(event(.updated, 5, id: "a", done: true), line: 1),  // later: answered
            incoming(event(.created, 0, id: "b"), line: 2),              // a retry: answered, a duplicate
            incoming(event(.updated, 0, id: "c", content: "same minute, not stored"), line: 3),  // not later, not stored
            incoming(event(.created, 0, id: "d"), line: 4),              // unknown
        ])
        let recall = cache.recall(batch, versions: unchanged)
        #expect(recall.hits == 2 && recall.misses == 2 && recall.stale == 0)
        #expect(Set(recall.unanswered) == ["c", "d"])
        #expect(recall.stored.identities == [batch.identities[1]], "the retry is known stored; the later event is not")
        #expect(recall.cached.compactMap { $0?.row.taskId } == ["a", "b"] && recall.cached[0]?.locator == .address(RowAddress(block: 0, offset: 1)))
    }

    /// A mark matches only an event not later than the latest: a later event
    /// whose identity's bits collide with a stored one is new, and goes on from the row.
    @Test func aMarkThatMatchesALaterEventDoesNotMakeItADuplicate() {
        var stored = entry("a")
        let later = event(.updated, 5, id: "a", done: true)
        stored.marks.append(TaskCache.Mark(key(later), refusal: nil))  // as if a stored event had the same bits
        var cache = remembering([stored])
        let recall = cache.recall(PreparedBatch([incoming(later, line: 1)]), versions: unchanged)
        #expect(recall.hits == 1 && recall.stored.identities.isEmpty)
    }

    @Test func aRefusedStoredEventsRetryIsRefusedAgain() {
        var refused = entry("a")
        let stranger = event(.updated, 0, id: "a", user: "u2")
        refused.marks.append(TaskCache.Mark(key(stranger), refusal: .rejectedOwner))
        var cache = remembering([refused])
        let recall = cache.recall(PreparedBatch([incoming(stranger, line: 1)]), versions: unchanged)
        #expect(recall.stored.refusals == [key(stranger): .rejectedOwner])
    }

    /// A partition whose version is not the one the cache's last commit left
    /// is forgotten whole, its tasks counted as changed; the others stay.
    @Test func aPartitionAnotherWriterChangedIsForgotten() {
        let ids = (0..<40).map { "task\($0)" }
        var cache = remembering(ids.map { entry($0) })
        let moved = TaskPartition.of(task: "task0")
        var versions = unchanged
        versions[moved] = 3
        let batch = PreparedBatch(ids.enumerated().map { incoming(event(.deleted, 9, id: $1), line: $0 + 1) })
        let recall = cache.recall(batch, versions: versions)
        let inMoved = ids.filter { TaskPartition.of(task: $0) == moved }
        #expect(recall.stale == inMoved.count && Set(recall.unanswered) == Set(inMoved) && recall.hits == ids.count - inMoved.count)
        #expect(inMoved.allSatisfy { cache.entry(of: $0) == nil })
        // At that version it is trusted again (with nothing in it).
        #expect(cache.recall(batch, versions: versions).stale == 0)
        // The next commit's versions are taken as the cache's own.
        cache.remember(TaskCache.Update(versions: [moved: 4], entries: [entry("task0")]))
        versions[moved] = 4
        #expect(cache.recall(PreparedBatch([incoming(event(.deleted, 9, id: "task0"), line: 1)]), versions: versions).hits == 1)
    }

    @Test func theBudgetHoldsTheMostRecentlyUsedAndEntriesAreSmall() {
        let one = TaskCache.size(of: entry("task-0000001"))
        #expect(one <= 152, "a task with short ids and one event: \(one) bytes")
        #expect(TaskCache.size(of: entry("task-0000001", content: String(repeating: "x", count: 1000))) > one + 1000)
        var cache = remembering([], budget: one * 5)
        for i in 0..<10 { cache.remember(TaskCache.Update(entries: [entry("task\(i)")])) }
        #expect(cache.count == 5 && cache.bytes <= one * 5)
        #expect((5..<10).allSatisfy { cache.entry(of: "task\($0)") != nil }, "the last five remembered")
        // task5 is used, then one more is remembered: task6, the least recently used, goes.
        _ = cache.recall(PreparedBatch([incoming(event(.deleted, 9, id: "task5"), line: 1)]), versions: unchanged)
        cache.remember(TaskCache.Update(entries: [entry("new")]))
        #expect(cache.entry(of: "task5") != nil && cache.entry(of: "task6") == nil && cache.entry(of: "new") != nil)
        #expect(cache.count == 5)
        // Nothing is kept with no budget.
        #expect(remembering([entry("a")], budget: 0).count == 0)
    }

    @Test func aTaskWithMoreEventsThanMarksFitIsNotKept() {
        var many = entry("a")
        for minute in 1...TaskCache.Marks.capacity { many.marks.append(TaskCache.Mark(key(event(.updated, minute, id: "a")), refusal: nil)) }
        #expect(many.marks.overflowed && many.marks.count == TaskCache.Marks.capacity)
        var cache = remembering([entry("a")])
        cache.remember(TaskCache.Update(entries: [many]))
        #expect(cache.entry(of: "a") == nil && cache.count == 0, "the old entry is gone too")
    }

    @Test func aTaskThatGainedEventsButHasNoEntryNowIsForgotten() {
        var cache = remembering([entry("a")])
        cache.remember(TaskCache.Update(forgotten: ["a"]))
        #expect(cache.entry(of: "a") == nil && cache.count == 0 && cache.bytes == 0)
    }

    // MARK: - New tasks, once the database was found empty

    /// Every partition at `version`.
    func everyPartition(at version: Int64) -> [Int: Int64] {
        Dictionary(uniqueKeysWithValues: (0..<TaskPartition.count).map { ($0, version) })
    }

    /// The versions after a commit that bumped the partitions of `tasks`.
    func bumped(_ tasks: [String], from versions: [Int: Int64]) -> [Int: Int64] {
        var after = versions
        for task in Set(tasks.map(TaskPartition.of(task:))) { after[task]! += 1 }
        return after
    }

    @Test func aCacheThatFoundTheDatabaseEmptyAnswersTheTasksABatchCreatesAsNew() {
        var cache = TaskCache(budget: 1 << 20)
        cache.foundEmpty(versions: unchanged)
        let first = PreparedBatch([
            incoming(event(.created, 0, id: "a"), line: 1),
            incoming(event(.created, 0, id: "b"), line: 2),
            incoming(event(.updated, 1, id: "p", done: true), line: 3),  // not created here: it would only be stored
        ])
        let recall = cache.recall(first, versions: unchanged)
        #expect(recall.hits == 2 && recall.new == 2 && recall.unanswered == ["p"] && recall.cached.isEmpty)
        // Committed: a remembered, b and p written but not kept (deleted, pending).
        var versions = bumped(["a", "b", "p"], from: unchanged)
        cache.remember(TaskCache.Update(versions: versions, entries: [entry("a")], forgotten: ["b", "p"]))
        let second = PreparedBatch([
            incoming(event(.updated, 5, id: "a", done: true), line: 1),  // remembered
            incoming(event(.created, 0, id: "b"), line: 2),              // written, forgotten: read
            incoming(event(.created, 0, id: "p"), line: 3),              // its pending update is stored: read
            incoming(event(.created, 0, id: "c"), line: 4),              // never written: new
        ])
        let again = cache.recall(second, versions: versions)
        #expect(again.hits == 2 && again.new == 1 && Set(again.unanswered) == ["b", "p"])
        #expect(again.cached.count == 4 && again.cached[0] != nil && again.cached[3] == nil)
        // Another writer moves a's partition: nothing of it is known any more, not even that a task is new.
        versions = bumped(["a"], from: versions)
        let partitionOfA = TaskPartition.of(task: "a")
        let sameAsA = (0..<1000).map { "n\($0)" }.first { TaskPartition.of(task: $0) == partitionOfA && $0 != "a" }!
        let otherThanA = (0..<1000).map { "n\($0)" }.first { TaskPartition.of(task: $0) != partitionOfA }!
        let third = cache.recall(PreparedBatch([incoming(event(.created, 0, id: sameAsA), line: 1), incoming(event(.created, 0, id: otherThanA), line: 2)]),
                                 versions: versions)
        #expect(third.new == 1 && third.unanswered == [sameAsA], "\(third.unanswered)")
    }

    /// A partition first seen at another version than the one the database
    /// was found empty at was written meanwhile; a failure ends what the cache
    /// knows of which versions were its own; a cache not told the database was
    /// empty knows no task is new.
    @Test func noTaskIsNewWhereAnotherWriterMayHaveWritten() {
        let batch = PreparedBatch([incoming(event(.created, 0, id: "a"), line: 1)])
        var writtenMeanwhile = TaskCache(budget: 1 << 20)
        writtenMeanwhile.foundEmpty(versions: unchanged)
        #expect(writtenMeanwhile.recall(batch, versions: everyPartition(at: 1)).unanswered == ["a"])

        var failed = TaskCache(budget: 1 << 20)
        failed.foundEmpty(versions: unchanged)
        #expect(failed.recall(batch, versions: unchanged).new == 1)
        failed.forgetAll()
        #expect(failed.recall(batch, versions: unchanged).unanswered == ["a"])

        var notEmpty = TaskCache(budget: 1 << 20)
        #expect(notEmpty.recall(batch, versions: unchanged).unanswered == ["a"])
        // No budget, or too little to spare a sixteenth for the filter: nothing is known new, the budget is left whole.
        for budget in [0, 100] {
            var small = TaskCache(budget: budget)
            small.foundEmpty(versions: unchanged)
            #expect(small.budget == budget && small.recall(batch, versions: unchanged).new == 0)
        }
    }

    /// The filter never says "no" for a task it holds, and says "maybe" for
    /// few it does not at the size the cache gives it.
    @Test func theWrittenTasksFilterIsNeverWrongOnNo() {
        var written = WrittenTasks(bytes: TaskCache.writtenTasksBytes)
        #expect(written.byteCount == TaskCache.writtenTasksBytes)
        let tasks = (0..<160_000).map { "task-\($0)" }
        for task in tasks { written.insert(task) }
        #expect(tasks.allSatisfy(written.mayContain))
        let wrong = (0..<100_000).filter { written.mayContain("other-\($0)") }.count
        #expect(wrong < 300, "\(wrong) of 100,000 tasks never written said maybe")
        #expect(WrittenTasks(bytes: 100).byteCount == 64 && WrittenTasks(bytes: 0).byteCount == WrittenTasks.minimumBytes)
    }

    /// An entry comes back from its slot as it went in: an address or a
    /// copy's transaction, a completion or none, all four marks with their
    /// verdicts, long strings.
    @Test func anEntryIsKeptExactly() {
        var done = entry("task-with-a-longer-id-than-fits-inline", content: String(repeating: "é", count: 100))
        done.row.completedDate = at(7)
        done.locator = .copiedIn(by: .max)
        done.latest = at(7)
        for minute in 1...3 { done.marks.append(TaskCache.Mark(key(event(.updated, minute, id: done.row.taskId)), refusal: minute == 2 ? .rejectedOwner : nil)) }
        var far = entry("b", offset: .max)
        far.locator = .address(RowAddress(block: .max, offset: .max))
        let cache = remembering([done, far, entry("c")])
        #expect(cache.entry(of: done.row.taskId) == done && cache.entry(of: "b") == far && cache.entry(of: "c") == entry("c"))
        // A deleted task has no slot (a slot keeps no deletion date): it is not kept.
        var deleted = entry("d")
        deleted.row.deletedDate = at(9)
        #expect(remembering([deleted]).entry(of: "d") == nil)
    }

    /// The slot index agrees with a dictionary through inserts and removals,
    /// with tags drawn from a few values so that runs, wrap-around and the
    /// backward shift of a removal are all exercised.
    @Test func theSlotIndexAgreesWithADictionary() {
        var generator = SeededGenerator(seed: 23)
        for tags in [UInt32(1), 7, 64, .max] {
            var index = TaskSlotIndex()
            var expected: [Int32: UInt32] = [:]  // slot: tag
            for _ in 0..<6_000 {
                if expected.count >= 1_000 || !expected.isEmpty && Int.random(in: 0..<3, using: &generator) == 0 {
                    let slot = expected.keys.randomElement(using: &generator)!
                    index.remove(tag: expected[slot]!, slot: slot)
                    expected[slot] = nil
                } else {
                    var slot: Int32
                    repeat { slot = Int32.random(in: 0..<5_000, using: &generator) } while expected[slot] != nil
                    let tag = tags == .max ? UInt32.random(in: 0...UInt32.max, using: &generator) : UInt32.random(in: 0..<tags, using: &generator) &* 0x9e37_79b9
                    index.insert(tag: tag, slot: slot)
                    expected[slot] = tag
                }
            }
            #expect(index.count == expected.count)
            let found = expected.allSatisfy { slot, tag in index.slot(tag: tag) { $0 == slot } == slot }
            #expect(found, "every slot found by its tag (\(tags) tags)")
            let absent = (Int32(5_000)..<5_100).allSatisfy { slot in index.slot(tag: UInt32(slot)) { $0 == slot } == nil }
            #expect(absent)
        }
    }
}
