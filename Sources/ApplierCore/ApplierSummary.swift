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
        return sum
    }

    public var line: String {
        let rate = seconds > 0 ? Double(read) / seconds : 0
        return "read=\(read) applied=\(applied) duplicates=\(duplicates) pending=\(pending) rejected=\(rejected) batches=\(batches) seconds=\(String(format: "%.3f", seconds)) events/s=\(Int(rate))"
    }
}

#if canImport(Foundation)
import Foundation
#endif
