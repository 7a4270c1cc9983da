/// Every task one connection has written since it found the database empty,
/// as a Bloom filter: fixed memory, nothing ever removed, and an answer that
/// is "maybe" or a sure "no". In a partition no one else has written since,
/// a task this says was never written has nothing stored — no row, no event —
/// so a batch of new tasks (an archive replayed into an empty database) need
/// not ask the database about them (`TaskCache.recall`). A wrong "maybe" (the
/// filter filling up) only costs that read; a "no" is never wrong.
struct WrittenTasks {
    /// The bits, 64 a word; their count is a power of two.
    private var words: [UInt64]
    private let bitMask: UInt64
    /// Bits set per task.
    static let probes = 4
    static let minimumBytes = 8

    /// Takes at most `bytes` (a power of two of them, at least 8).
    init(bytes: Int) {
        var words = 1
        while words * 2 * 8 <= bytes { words *= 2 }
        self.words = [UInt64](repeating: 0, count: words)
        bitMask = UInt64(words * 64 - 1)
    }

    var byteCount: Int { words.count * 8 }

    mutating func insert(_ taskId: String) {
        var (bit, step) = Self.hashes(taskId)
        for _ in 0..<Self.probes {
            let position = Int((bit & bitMask) >> 6)
            words[position] |= 1 << (bit & 63)
            bit &+= step
        }
    }

    /// False only for a task never inserted.
    func mayContain(_ taskId: String) -> Bool {
        var (bit, step) = Self.hashes(taskId)
        for _ in 0..<Self.probes {
            guard words[Int((bit & bitMask) >> 6)] & (1 << (bit & 63)) != 0 else { return false }
            bit &+= step
        }
        return true
    }

    /// Two independent 64-bit hashes of the id (FNV-1a, then two finalising
    /// mixes): the probes are the first plus multiples of the second (odd).
    private static func hashes(_ taskId: String) -> (UInt64, UInt64) {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in taskId.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        let first = mix(hash)
        return (first, mix(first ^ 0x9e37_79b9_7f4a_7c15) | 1)
    }

    /// MurmurHash3's 64-bit finaliser: every input bit moves every output bit.
    private static func mix(_ value: UInt64) -> UInt64 {
        var x = value
        x ^= x >> 33
        x = x &* 0xff51_afd7_ed55_8ccd
        x ^= x >> 33
        x = x &* 0xc4ce_b9fe_1a85_ec53
        x ^= x >> 33
        return x
    }
}
