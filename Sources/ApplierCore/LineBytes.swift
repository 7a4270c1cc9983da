/// Memory the reader reads input into, shared by the lines cut from it
/// (`LineBytes`). The reader writes only past the last line it has cut, and
/// a line's bytes never change once cut, so lines are read on any thread
/// while the reader goes on writing beyond them; the memory is freed with
/// the last line (or reader) holding it.
final class LineChunk: @unchecked Sendable {
    let bytes: UnsafeMutableBufferPointer<UInt8>

    init(capacity: Int) {
        bytes = .allocate(capacity: capacity)
    }

    deinit { bytes.deallocate() }
}

/// One input line's bytes: a range of a `LineChunk`, not an array of its
/// own, so a batch's events keep their lines (for a reject) without an
/// allocation and a copy each.
public struct LineBytes: RandomAccessCollection, Sendable {
    let chunk: LineChunk
    public let startIndex: Int
    public let endIndex: Int

    init(_ chunk: LineChunk, _ range: Range<Int>) {
        self.chunk = chunk
        startIndex = range.lowerBound
        endIndex = range.upperBound
    }

    /// A line of its own (a JetStream message's data, a test's line).
    public init(_ bytes: some Collection<UInt8>) {
        chunk = LineChunk(capacity: Swift.max(bytes.count, 1))
        _ = chunk.bytes.initialize(from: bytes)
        startIndex = 0
        endIndex = bytes.count
    }

    public subscript(position: Int) -> UInt8 { chunk.bytes[position] }

    public func withUnsafeBufferPointer<R, E: Error>(_ body: (UnsafeBufferPointer<UInt8>) throws(E) -> R) throws(E) -> R {
        try body(UnsafeBufferPointer(rebasing: chunk.bytes[startIndex..<endIndex]))
    }
}
