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

    mutating func insert(_ taskId: String) {
        let (word, bits) = place(taskId)
        words[word] |= bits
    }

    /// False only for a task never inserted.
    func mayContain(_ taskId: String) -> Bool {
        let (word, bits) = place(taskId)
        return words[word] & bits == bits
    }

    /// A task's word (from one half of a 64-bit hash) and its `probes` bits in
    /// it (six bits of the other half each). The hash: the partition's hash of
    /// the id (`TaskPartition.hash(of:)`), then MurmurHash3's finaliser (every
    /// input bit moves every output bit).
    private func place(_ taskId: String) -> (Int, UInt64) {
        var hash = TaskPartition.hash(of: taskId)
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        hash = hash &* 0xc4ce_b9fe_1a85_ec53
        hash ^= hash >> 33
        var bits: UInt64 = 0
        var rest = hash >> 32
        for _ in 0..<Self.probes {
            bits |= 1 << (rest & 63)
            rest >>= 6
        }
        return (Int(hash & wordMask), bits)
    }
}
