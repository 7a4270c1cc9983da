/// Every task one connection has written since it found the database empty,
/// as a Bloom filter: fixed memory, nothing ever removed, and an answer that
/// is "maybe" or a sure "no". In a partition no one else has written since,
/// a task this says was never written has nothing stored — no row, no event —
/// so a batch of new tasks (an archive replayed into an empty database) need
/// not ask the database about them (`TaskCache.recall`). A wrong "maybe" (the
/// filter filling up) only costs that read; a "no" is never wrong.
struct WrittenTasks {
    /// The bits, 64 a word; their count is a power of two. A task's bits are
    /// all in one word (one cache line to touch, not four).
    private var words: [UInt64]
    private let wordMask: UInt64
    /// Bits set per task.
    static let probes = 4
    static let minimumBytes = 8

    /// Takes at most `bytes` (a power of two of them, at least 8).
    init(bytes: Int) {
        var words = 1
        while words * 2 * 8 <= bytes { words *= 2 }
        self.words = [UInt64](repeating: 0, count: words)
        wordMask = UInt64(words - 1)
    }

    var byteCount: Int { words.count * 8 }

    mutating func insert(_ taskId: String) { insert(hash: TaskPartition.mixedHash(of: taskId)) }

    /// False only for a task never inserted.
    func mayContain(_ taskId: String) -> Bool { mayContain(hash: TaskPartition.mixedHash(of: taskId)) }

    /// The same, for a task's `TaskPartition.mixedHash(of:)` worked out already.
    mutating func insert(hash: UInt64) {
        let (word, bits) = place(hash)
        words[word] |= bits
    }

    func mayContain(hash: UInt64) -> Bool {
        let (word, bits) = place(hash)
        return words[word] & bits == bits
    }

    /// A task's word (from one half of its mixed hash) and its `probes` bits
    /// in it (six bits of the other half each).
    private func place(_ hash: UInt64) -> (Int, UInt64) {
        var bits: UInt64 = 0
        var rest = hash >> 32
        for _ in 0..<Self.probes {
            bits |= 1 << (rest & 63)
            rest >>= 6
        }
        return (Int(hash & wordMask), bits)
    }
}
