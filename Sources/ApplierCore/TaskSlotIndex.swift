/// Where each task `TaskCache` remembers is kept (its slot), by task id: an
/// open-addressing table of 8-byte buckets, each a 32-bit tag of the id's
/// hash and the slot. A `Dictionary<String, Int32>` costs about 48 bytes an
/// entry and hashes every id with SipHash at each look-up; this costs 11–21
/// bytes (a load of 3/8 to 3/4) and one FNV-1a pass (`TaskPartition.mixedHash`,
/// which the caller already has for the written-tasks filter). The tag
/// places a bucket (its low bits) and screens candidates; the caller
/// compares ids in the slot found, so a tag shared by two ids costs one
/// string comparison, never a wrong answer. Pure, tested against a
/// `Dictionary` (`TaskCacheTests`).
struct TaskSlotIndex {
    /// 0: empty; else the tag in the high 32 bits and the slot + 1 in the low 32.
    private var buckets: [UInt64]
    private var mask: Int
    private(set) var count = 0

    init() {
        buckets = [UInt64](repeating: 0, count: 16)
        mask = 15
    }

    /// The tag of a task id, from its `TaskPartition.mixedHash(of:)`.
    static func tag(of hash: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: hash >> 32) }

    /// What a table of `count` entries takes, as `TaskCache.size(of:)` counts it per entry.
    static let bytesPerEntry = 16

    /// The slot of the task with this tag for which `isTask` says yes.
    func slot(tag: UInt32, where isTask: (Int32) -> Bool) -> Int32? {
        var bucket = Int(tag) & mask
        while buckets[bucket] != 0 {
            let held = buckets[bucket]
            if UInt32(truncatingIfNeeded: held >> 32) == tag {
                let slot = Int32(truncatingIfNeeded: held & 0xffff_ffff) - 1
                if isTask(slot) { return slot }
            }
            bucket = (bucket + 1) & mask
        }
        return nil
    }

    /// Adds a task not in the table.
    mutating func insert(tag: UInt32, slot: Int32) {
        if (count + 1) * 4 > buckets.count * 3 { grow() }
        place(UInt64(tag) << 32 | UInt64(UInt32(slot + 1)))
        count += 1
    }

    /// Removes the task with this tag kept in `slot` (it must be in the table).
    mutating func remove(tag: UInt32, slot: Int32) {
        let held = UInt64(tag) << 32 | UInt64(UInt32(slot + 1))
        var hole = Int(tag) & mask
        while buckets[hole] != held { hole = (hole + 1) & mask }
        // Backward shift: each later bucket of the run that may move into the hole does,
        // so no look-up ever stops early at an empty bucket that used to be full.
        var next = (hole + 1) & mask
        while buckets[next] != 0 {
            let home = Int(UInt32(truncatingIfNeeded: buckets[next] >> 32)) & mask
            // It may move if its home is not in the cyclic range (hole, next].
            if (next - home) & mask >= (next - hole) & mask {
                buckets[hole] = buckets[next]
                hole = next
            }
            next = (next + 1) & mask
        }
        buckets[hole] = 0
        count -= 1
    }

    mutating func removeAll() {
        buckets = [UInt64](repeating: 0, count: 16)
        mask = 15
        count = 0
    }

    private mutating func place(_ held: UInt64) {
        var bucket = Int(UInt32(truncatingIfNeeded: held >> 32)) & mask
        while buckets[bucket] != 0 { bucket = (bucket + 1) & mask }
        buckets[bucket] = held
    }

    private mutating func grow() {
        let old = buckets
        buckets = [UInt64](repeating: 0, count: old.count * 2)
        mask = buckets.count - 1
        for held in old where held != 0 { place(held) }
    }
}
