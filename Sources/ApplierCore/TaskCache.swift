import TaskModel
import WebhookModel

/// What one connection's applier remembers of the tasks it has just written,
/// so that a batch of webhooks in the order senders send them (a completion
/// minutes after its creation, a retry seconds after its original) asks the
/// database nothing about them: each entry is what `BatchPlan` would
/// otherwise read back — the task's row as the rules see it, where the row
/// is, its latest event time and a mark (identity hash and stored verdict) of
/// each of its stored events. Pure and bounded: a byte budget, least recently
/// used out first; tested on values (`TaskCacheTests`), carried out by `TaskStore`.
///
/// Trust comes from `meetperry.partition_version`: every transaction that
/// writes a partition's tasks bumps that partition's version under the
/// partition's lock. The cache remembers the version its own last commit
/// left; a batch reads the versions after taking its locks (`recall`), and a
/// partition whose version moved (another applier, another connection, a
/// writer by hand that said so) is forgotten whole before anything of it is
/// used. Entries change only after a commit (`remember`); a failed batch
/// forgets everything (`forgetAll`). A row changed by a writer that bumps
/// nothing still fails the batch where it is updated (by its address), as
/// it always did.
///
/// A connection that found the database empty (`foundEmpty`) also knows
/// which tasks have nothing stored: in a partition whose version moved only
/// by its own commits since, a task it never wrote (`WrittenTasks`) is new,
/// and one the batch creates is answered as such without a read. A row put
/// in meanwhile by a writer that takes no locks is then found where the new
/// row is copied in (its task id is taken), and the batch is read again from
/// scratch.
struct TaskCache {
    /// A stored event: the low 62 bits of its identity, and its verdict in the
    /// lowest two (0 taken, 1 `owner_change`, 2 `conflicting_created`). A
    /// batch event matching a mark is a duplicate only if it is not later than
    /// the task's latest event (a duplicate never is), so a hash collision can
    /// at worst send a task to the database, never drop an event unseen —
    /// except one with an older timestamp whose 62 bits collide (2⁻⁶² per pair).
    struct Mark: Hashable {
        var bits: UInt64

        init(_ identity: EventKey, refusal: EventDisposition?) {
            bits = identity.low & ~3 | Self.code(refusal)
        }

        init(bits: UInt64) {
            self.bits = bits
        }

        func matches(_ identity: EventKey) -> Bool { bits & ~3 == identity.low & ~3 }

        var refusal: EventDisposition? {
            switch bits & 3 {
            case 1: return .rejectedOwner
            case 2: return .rejectedConflict
            default: return nil
            }
        }

        mutating func set(_ refusal: EventDisposition?) { bits = bits & ~3 | Self.code(refusal) }

        private static func code(_ refusal: EventDisposition?) -> UInt64 {
            switch refusal {
            case .rejectedOwner: return 1
            case .rejectedConflict: return 2
            default: return 0
            }
        }
    }

    /// The marks of one task's stored events, kept inline (no allocation of
    /// their own, 8-byte aligned: 34 bytes): up to `capacity`; a task with
    /// more is not remembered (`overflowed`), and is read like any other.
    struct Marks: RandomAccessCollection, MutableCollection, ExpressibleByArrayLiteral, Equatable {
        static let capacity = 4
        private var bits: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        private var stored: UInt8 = 0
        var count: Int { Int(stored) }
        /// More marks were appended than fit.
        private(set) var overflowed = false

        init() {}

        init(arrayLiteral marks: Mark...) {
            for mark in marks { append(mark) }
        }

        var startIndex: Int { 0 }
        var endIndex: Int { count }

        subscript(position: Int) -> Mark {
            get {
                switch position {
                case 0: return Mark(bits: bits.0)
                case 1: return Mark(bits: bits.1)
                case 2: return Mark(bits: bits.2)
                default: return Mark(bits: bits.3)
                }
            }
            set {
                switch position {
                case 0: bits.0 = newValue.bits
                case 1: bits.1 = newValue.bits
                case 2: bits.2 = newValue.bits
                default: bits.3 = newValue.bits
                }
            }
        }

        static func == (a: Marks, b: Marks) -> Bool {
            a.count == b.count && a.overflowed == b.overflowed && a.elementsEqual(b, by: { $0.bits == $1.bits })
        }

        mutating func append(_ mark: Mark) {
            guard count < Self.capacity else {
                overflowed = true
                return
            }
            stored += 1
            self[count - 1] = mark
        }

        static func += (marks: inout Marks, more: Marks) {
            for mark in more { marks.append(mark) }
            if more.overflowed { marks.overflowed = true }
        }
    }

    /// What is remembered of one task: all a batch needs to go on from its row.
    struct Entry: Equatable {
        var row: TaskState
        /// How its row is found: where it is, or (copied in: COPY says not
        /// where) by its task id, as the version this connection copied in.
        var locator: RowLocator
        /// The latest timestamp among its stored events.
        var latest: Timestamp
        var marks: Marks
    }

    /// What the cache made of one batch's tasks.
    struct Recall {
        /// What it knows of each task it answers, by task number (`PreparedBatch.tasks`).
        var cached: [Entry?] = []
        /// Which of the batch's events it knows are stored (with their verdicts).
        var stored = BatchPlan.Stored()
        /// Tasks it cannot answer (unknown, forgotten, or with an event not later
        /// than their latest that is not a duplicate): read from the database.
        var unanswered: [String] = []
        /// Counts, for metrics: tasks answered (`new` of them known to have nothing
        /// stored); tasks not answered (`unanswered.count`), of which `stale` were
        /// remembered in a partition found changed (so forgotten).
        var hits = 0
        var new = 0
        var misses: Int { unanswered.count }
        var stale = 0
    }

    /// After a commit: every task that gained an event, remembered again or forgotten.
    struct Update {
        /// The versions of the partitions the batch bumped (its writes): the latest known.
        var versions: [Int: Int64] = [:]
        var entries: [Entry] = []
        var forgotten: [String] = []
    }

    /// Whether a task in this state is worth remembering: a deleted task's
    /// history is over (what comes after its deletion changes nothing), so
    /// its memory is better spent on a live one; its retries are read.
    static func keeps(_ state: TaskState) -> Bool { state.deletedDate == nil }

    /// The budget, in bytes as `size(of:)` counts them, less what `written`
    /// takes once the database was found empty; 0 keeps nothing.
    private(set) var budget: Int
    private(set) var bytes = 0
    var count: Int { index.count }
    var isEnabled: Bool { budget > 0 }

    /// An entry where it is kept, flat (136 bytes, not the 160 of an `Entry`
    /// and its bookkeeping): its times as microseconds, its locator packed,
    /// no deletion date (a deleted task is not kept, `keeps`), with its
    /// neighbours in recency order.
    private struct Slot {
        var taskId: String
        var userId: String
        var content: String
        var createdDate: Int64
        /// `Slot.none`: not completed.
        var completedDate: Int64
        var latest: Int64
        /// `RowLocator`: an address as block << 16 | offset; copied in as
        /// `copiedInBit` | its transaction.
        var locator: UInt64
        var marks: Marks
        var generation: UInt32
        /// Neighbours in recency order (-1: none).
        var older: Int32
        var newer: Int32
        /// The task's tag in `index`.
        var tag: UInt32
        var partition: UInt8

        static let none = Int64.min
        static let copiedInBit: UInt64 = 1 << 63

        init(_ entry: Entry, generation: UInt32, partition: UInt8, tag: UInt32, older: Int32) {
            taskId = entry.row.taskId
            userId = entry.row.userId
            content = entry.row.content
            createdDate = entry.row.createdDate.microsecondsSinceEpoch
            completedDate = entry.row.completedDate?.microsecondsSinceEpoch ?? Self.none
            latest = entry.latest.microsecondsSinceEpoch
            switch entry.locator {
            case .address(let address): locator = UInt64(address.block) << 16 | UInt64(address.offset)
            case .copiedIn(let transaction): locator = Self.copiedInBit | UInt64(transaction)
            }
            marks = entry.marks
            self.generation = generation
            self.older = older
            newer = -1
            self.tag = tag
            self.partition = partition
        }

        var entry: Entry {
            Entry(
                row: TaskState(taskId: taskId, userId: userId, content: content,
                               createdDate: Timestamp(microsecondsSinceEpoch: createdDate),
                               completedDate: completedDate == Self.none ? nil : Timestamp(microsecondsSinceEpoch: completedDate),
                               deletedDate: nil),
                locator: locator & Self.copiedInBit != 0
                    ? .copiedIn(by: TransactionID(truncatingIfNeeded: locator))
                    : .address(RowAddress(block: UInt32(truncatingIfNeeded: locator >> 16), offset: UInt16(truncatingIfNeeded: locator))),
                latest: Timestamp(microsecondsSinceEpoch: latest),
                marks: marks)
        }

        /// What its entry costs (`TaskCache.size(of:)`), read in place.
        var bytes: Int { TaskCache.size(taskId: taskId, userId: userId, content: content) }

        /// What a free slot holds: nothing on the heap.
        static let vacant = Slot(Entry(row: TaskState(taskId: "", userId: "", content: "", createdDate: Timestamp(microsecondsSinceEpoch: 0),
                                                      completedDate: nil, deletedDate: nil),
                                       locator: .copiedIn(by: 0), latest: Timestamp(microsecondsSinceEpoch: 0), marks: []),
                                 generation: 0, partition: 0, tag: 0, older: -1)
    }

    private var slots: [Slot] = []
    private var freeSlots: [Int32] = []
    private var index = TaskSlotIndex()
    private var newest: Int32 = -1
    private var oldest: Int32 = -1
    /// Per partition: entries made under an older generation are forgotten.
    private var generations = [UInt32](repeating: 0, count: TaskPartition.count)
    /// Per partition: the version this cache's contents are true at (nil: not known yet).
    private var versions = [Int64?](repeating: nil, count: TaskPartition.count)
    /// The partitions' versions when the database was found empty (nil: it
    /// was not, or that no longer counts after a failure).
    private var emptyAt: [Int64]?
    /// The tasks written since then (nil: the database was not found empty).
    private var written: WrittenTasks?
    /// Per partition: nothing is stored of its tasks but what `written` holds
    /// (its version has moved only by this cache's commits since it was empty).
    private var complete = [Bool](repeating: false, count: TaskPartition.count)

    init(budget: Int) {
        self.budget = max(0, budget)
        // Room for as many slots as the budget can hold, taken once: growing the
        // array by doubling copies it, and for a moment holds it twice (peak RSS).
        // Pages of it no slot used yet are never touched, so cost nothing.
        slots.reserveCapacity(min(self.budget / (MemoryLayout<Slot>.stride + TaskSlotIndex.bytesPerEntry), Self.reservedSlotsAtMost))
    }

    /// Beyond this many, the slots grow as an array does.
    static let reservedSlotsAtMost = 1 << 20

    /// The most the tasks written since the database was found empty take
    /// of the budget (a sixteenth at most): 4 Mi bits, wrong on about one
    /// "maybe" in 700 after 160,000 tasks, one in 35 after 500,000 (a wrong
    /// "maybe" costs the read made without this).
    static let writtenTasksBytes = 1 << 19

    /// The database held no task and no event when the partitions were at
    /// `versions` (all of them, read with that in one snapshot): from now on
    /// a task this cache never wrote, in a partition still at that version
    /// when first recalled and moved since only by this cache, is new.
    mutating func foundEmpty(versions found: [Int: Int64]) {
        guard budget / 16 >= WrittenTasks.minimumBytes, found.count == TaskPartition.count, written == nil else { return }
        emptyAt = (0..<TaskPartition.count).map { found[$0]! }
        let filter = WrittenTasks(bytes: min(Self.writtenTasksBytes, budget / 16))
        budget -= filter.byteCount
        written = filter
    }

    /// What an entry costs, roughly as malloc sees it: its slot (with its
    /// marks), its place in the index, its strings' storage when they do not
    /// fit inline (15 UTF-8 bytes).
    static func size(of entry: Entry) -> Int {
        size(taskId: entry.row.taskId, userId: entry.row.userId, content: entry.row.content)
    }

    private static func size(taskId: String, userId: String, content: String) -> Int {
        func heap(_ string: String) -> Int {
            let count = string.utf8.count
            return count <= 15 ? 0 : 32 + (count + 1 + 15) / 16 * 16
        }
        return MemoryLayout<Slot>.stride + TaskSlotIndex.bytesPerEntry + heap(taskId) + heap(userId) + heap(content)
    }

    /// Whether an entry can be kept at all: its marks all fit, it is not
    /// deleted (`keeps`; a slot has no room for a deletion date), and it is
    /// not larger than the whole budget.
    private func fits(_ entry: Entry, size: Int) -> Bool {
        !entry.marks.overflowed && Self.keeps(entry.row) && size <= budget
    }

    /// The slot of a task, by its `TaskPartition.mixedHash(of:)`.
    private func slot(of taskId: String, hash: UInt64) -> Int32? {
        index.slot(tag: TaskSlotIndex.tag(of: hash)) { slots[Int($0)].taskId == taskId }
    }

    /// Takes the partitions' versions as read under the batch's locks
    /// (forgetting each partition whose version is not the one this cache is
    /// true at), then answers what it can of the batch's tasks.
    mutating func recall(_ batch: PreparedBatch, versions read: [Int: Int64]) -> Recall {
        var recall = Recall()
        for (partition, version) in read where versions[partition] != version {
            // First seen at the version it was empty at, it holds nothing yet; moved by another writer, it may hold anything.
            complete[partition] = versions[partition] == nil && emptyAt?[partition] == version
            generations[partition] &+= 1
            versions[partition] = version
        }
        // Each task's slot (-1: not remembered, or not answerable; -2: known to have nothing stored).
        var slotOfTask = [Int32](repeating: -1, count: batch.tasks.count)
        // Only a task created in this batch is answered as new: its row is then copied in, which finds
        // one put in meanwhile by a writer that takes no locks (its id is taken). Other events would only be stored.
        var created: [Bool] = []
        if written != nil {
            created = Array(repeating: false, count: batch.tasks.count)
            for item in batch.items.indices where batch.items[item].record.webhook.event == .created { created[Int(batch.taskOfItem[item])] = true }
        }
        for (task, taskId) in batch.tasks.enumerated() {
            let hash = TaskPartition.mixedHash(of: taskId)
            guard let slot = slot(of: taskId, hash: hash) else {
                if let written, created[task], complete[Int(batch.partitionOfTask[task])], !written.mayContain(hash: hash) { slotOfTask[task] = Self.new }
                continue
            }
            guard slots[Int(slot)].generation == generations[Int(slots[Int(slot)].partition)] else {
                recall.stale += 1
                remove(slot)
                continue
            }
            slotOfTask[task] = slot
        }
        // Every event of an answered task is later than its latest, or a duplicate of a mark.
        var duplicates: [(item: Int, refusal: EventDisposition?)] = []
        for item in batch.items.indices {
            let task = Int(batch.taskOfItem[item])
            let slot = slotOfTask[task]
            guard slot >= 0 else { continue }
            guard batch.items[item].record.webhook.timestamp.microsecondsSinceEpoch <= slots[Int(slot)].latest else { continue }
            let identity = batch.identities[item]
            if let mark = slots[Int(slot)].marks.first(where: { $0.matches(identity) }) {
                duplicates.append((item, mark.refusal))
            } else {
                slotOfTask[task] = -1
            }
        }
        for (task, slot) in slotOfTask.enumerated() {
            if slot == Self.new {
                recall.hits += 1
                recall.new += 1
                continue
            }
            guard slot >= 0 else {
                recall.unanswered.append(batch.tasks[task])
                continue
            }
            if recall.cached.isEmpty { recall.cached = Array(repeating: nil, count: batch.tasks.count) }
            recall.hits += 1
            touch(slot)
            recall.cached[task] = slots[Int(slot)].entry
        }
        for (item, refusal) in duplicates where slotOfTask[Int(batch.taskOfItem[item])] >= 0 {
            recall.stored.identities.insert(batch.identities[item])
            if let refusal { recall.stored.refusals[batch.identities[item]] = refusal }
        }
        return recall
    }

    /// A task's mark in `recall` for one known to have nothing stored.
    private static let new: Int32 = -2

    /// After the batch committed: the versions it leaves, and its tasks as they are now.
    mutating func remember(_ update: Update) {
        for (partition, version) in update.versions { versions[partition] = version }
        for taskId in update.forgotten {
            let hash = TaskPartition.mixedHash(of: taskId)
            written?.insert(hash: hash)
            if let slot = slot(of: taskId, hash: hash) { remove(slot) }
        }
        for entry in update.entries {
            let hash = TaskPartition.mixedHash(of: entry.row.taskId)
            written?.insert(hash: hash)
            let size = Self.size(of: entry)
            if let slot = slot(of: entry.row.taskId, hash: hash) {
                guard fits(entry, size: size) else {
                    remove(slot)
                    continue
                }
                // In place: the same task, so the same partition and tag; made under this generation now.
                let partition = slots[Int(slot)].partition, tag = slots[Int(slot)].tag
                let older = slots[Int(slot)].older, newer = slots[Int(slot)].newer
                bytes += size - slots[Int(slot)].bytes
                slots[Int(slot)] = Slot(entry, generation: generations[Int(partition)], partition: partition, tag: tag, older: older)
                slots[Int(slot)].newer = newer
                touch(slot)
            } else if fits(entry, size: size) {
                insert(entry, tag: TaskSlotIndex.tag(of: hash), size: size)
            }
        }
        while bytes > budget, oldest >= 0 { remove(oldest) }
    }

    /// After a batch failed (a conflict, a lost connection): whatever its
    /// cause, nothing remembered is trusted again until read.
    mutating func forgetAll() {
        slots.removeAll(keepingCapacity: true)
        freeSlots.removeAll()
        index.removeAll()
        newest = -1
        oldest = -1
        bytes = 0
        versions = [Int64?](repeating: nil, count: TaskPartition.count)
        // Which versions were its own commits' is no longer known: no task is known new again.
        emptyAt = nil
        complete = [Bool](repeating: false, count: TaskPartition.count)
    }

    /// The remembered entry of a task, if it is still trusted (for tests).
    func entry(of taskId: String) -> Entry? {
        guard let slot = slot(of: taskId, hash: TaskPartition.mixedHash(of: taskId)),
              slots[Int(slot)].generation == generations[Int(slots[Int(slot)].partition)] else { return nil }
        return slots[Int(slot)].entry
    }

    // MARK: - The slots, in recency order

    private mutating func insert(_ entry: Entry, tag: UInt32, size: Int) {
        let partition = TaskPartition.of(task: entry.row.taskId)
        let slot = Slot(entry, generation: generations[partition], partition: UInt8(partition), tag: tag, older: newest)
        let position: Int32
        if let free = freeSlots.popLast() {
            position = free
            slots[Int(free)] = slot
        } else {
            position = Int32(slots.count)
            slots.append(slot)
        }
        if newest >= 0 { slots[Int(newest)].newer = position }
        newest = position
        if oldest < 0 { oldest = position }
        index.insert(tag: tag, slot: position)
        bytes += size
    }

    private mutating func remove(_ position: Int32) {
        unlink(position)
        index.remove(tag: slots[Int(position)].tag, slot: position)
        bytes -= slots[Int(position)].bytes
        slots[Int(position)] = .vacant
        freeSlots.append(position)
    }

    /// Makes a slot the most recently used.
    private mutating func touch(_ position: Int32) {
        guard position != newest else { return }
        unlink(position)
        slots[Int(position)].older = newest
        slots[Int(position)].newer = -1
        if newest >= 0 { slots[Int(newest)].newer = position }
        newest = position
        if oldest < 0 { oldest = position }
    }

    private mutating func unlink(_ position: Int32) {
        let older = slots[Int(position)].older, newer = slots[Int(position)].newer
        if older >= 0 { slots[Int(older)].newer = newer } else { oldest = newer }
        if newer >= 0 { slots[Int(newer)].older = older } else { newest = older }
        slots[Int(position)].older = -1
        slots[Int(position)].newer = -1
    }
}
