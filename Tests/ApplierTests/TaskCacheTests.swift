import Testing
import TaskModel
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
        #expect(one <= 224, "a task with short ids and one event: \(one) bytes")
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
}
