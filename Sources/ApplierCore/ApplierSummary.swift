import Foundation

/// Counters the applier reports on stderr when it ends.
public struct ApplierSummary: Sendable, Equatable {
    /// Lines read that held something (blank lines are not counted).
    public var read = 0
    public var applied = 0
    public var duplicates = 0
    public var pending = 0
    public var rejected = 0
    public var batches = 0
    public var seconds: Double = 0
    /// What the task cache answered, over all batches.
    public var cache = TaskCacheLookups()

    public init() {}

    /// Both sets of counts together (the reader's and the committer's).
    func adding(_ other: ApplierSummary) -> ApplierSummary {
        var sum = self
        sum.read += other.read
        sum.applied += other.applied
        sum.duplicates += other.duplicates
        sum.pending += other.pending
        sum.rejected += other.rejected
        sum.batches += other.batches
        sum.cache.add(other.cache)
        return sum
    }

    /// Lines read per second: whole above 100, with a decimal or two below
    /// (64 lines in 177 s is 0.36, not 0).
    public var rate: String {
        guard seconds > 0 else { return "0" }
        let perSecond = Double(read) / seconds
        switch perSecond {
        case 100...: return String(Int(perSecond.rounded()))
        case 1..<100: return String(format: "%.1f", perSecond)
        default: return String(format: "%.2f", perSecond)
        }
    }

    /// The task cache's line, when it was asked at all: how many of the
    /// batches' tasks it answered (the same task in two batches counts twice).
    public var cacheLine: String? {
        let asked = cache.hits + cache.misses
        guard asked > 0 else { return nil }
        return "task cache: answered \(cache.hits) of \(asked) task look-ups (\(String(format: "%.1f", 100 * Double(cache.hits) / Double(asked))) %), "
            + "\(cache.new) of them new tasks with nothing stored; \(cache.stale) found changed by another writer"
    }

    public var line: String {
        "read=\(read) applied=\(applied) duplicates=\(duplicates) pending=\(pending) rejected=\(rejected) batches=\(batches) seconds=\(String(format: "%.3f", seconds)) events/s=\(rate)"
    }
}
