import LibPQ
import TaskModel
import WebhookModel

/// One event read from the stream, with where it came from.
public struct IncomingEvent: Sendable {
    public let record: StreamRecord
    /// Its line number on stdin, or its sequence number in the JetStream stream.
    public var line: Int
    /// The line as read (for a reject), in the memory it was read into.
    public var input: LineBytes
    /// Who is told once it is committed or rejected (a JetStream message), if anyone.
    public var delivery: (any Delivery)?
    /// Its identity (`EventIdentity`), worked out here, where the record is
    /// the caller's own: read later out of a batch's array, the record would
    /// be copied (a retain of each string) to be hashed.
    let identity: EventKey

    public init(record: StreamRecord, line: Int, input: LineBytes, delivery: (any Delivery)? = nil) {
        let key = EventIdentity.key(of: record.webhook)
        identity = EventKey(high: key.high, low: key.low)
        self.record = record
        self.line = line
        self.input = input
        self.delivery = delivery
    }
}

/// Tasks fall into `count` fixed partitions (a hash of the task id); a
/// transaction takes the advisory locks of its partitions, in ascending
/// order, so two appliers never fold one task at the same time.
public enum TaskPartition {
    /// Fixed for all versions: appliers must agree on which lock guards which task.
    public static let count = 16
    /// `pg_advisory_xact_lock` key of partition 0 ("meetappl" in ASCII); partition p is this + p.
    static let firstLockKey: Int64 = 7_882_826_979_082_792_044

    /// The partition of a task: `hash(of:)` modulo `count`.
    public static func of(task taskId: String) -> Int {
        Int(hash(of: taskId) % UInt64(count))
    }

    /// FNV-1a (64-bit) of a task id's UTF-8 bytes.
    static func hash(of taskId: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in taskId.utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        return hash
    }

    /// `hash(of:)` through MurmurHash3's finaliser (every input bit moves
    /// every output bit): for tables and filters that take their bits from
    /// anywhere in it (`WrittenTasks`, `TaskSlotIndex`).
    static func mixedHash(of taskId: String) -> UInt64 {
        var hash = hash(of: taskId)
        hash ^= hash >> 33
        hash = hash &* 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        hash = hash &* 0xc4ce_b9fe_1a85_ec53
        hash ^= hash >> 33
        return hash
    }
}

/// An event identity as a cheap dictionary key (the 16 bytes of its uuid).
struct EventKey: Hashable, Sendable {
    var high: UInt64
    var low: UInt64

    init(high: UInt64, low: UInt64) {
        self.high = high
        self.low = low
    }

    init?(_ bytes: some Collection<UInt8>) {
        guard bytes.count == 16 else { return nil }
        var high: UInt64 = 0, low: UInt64 = 0
        for (i, byte) in bytes.enumerated() {
            if i < 8 { high = high << 8 | UInt64(byte) } else { low = low << 8 | UInt64(byte) }
        }
        self.high = high
        self.low = low
    }

    /// The uuid's text form (`8-4-4-4-12` lower-case hex digits), for a `uuid[]` parameter.
    var uuidText: String {
        String(unsafeUninitializedCapacity: 36) { out in
            let digits: StaticString = "0123456789abcdef"
            var o = 0
            for i in 0..<16 {
                if i == 4 || i == 6 || i == 8 || i == 10 { out[o] = UInt8(ascii: "-"); o += 1 }
                let half = i < 8 ? high : low
                let byte = UInt8(truncatingIfNeeded: half >> UInt64(56 - 8 * (i % 8)))
                out[o] = digits.utf8Start[Int(byte >> 4)]
                out[o + 1] = digits.utf8Start[Int(byte & 0xF)]
                o += 2
            }
            return o
        }
    }
}

/// A batch encoded for the database. Preparing is pure CPU work, done by
/// the reading thread while the previous batch is being committed.
public struct PreparedBatch: Sendable {
    public let items: [IncomingEvent]
    /// The identity of each item, in item order.
    let identities: [EventKey]
    /// One `COPY meetperry.task_event` row per item, in item order.
    let eventRows: BinaryCopyEncoder
    /// The batch's distinct task ids, in order of first appearance.
    let tasks: [String]
    /// The task of each item, as its index in `tasks`.
    let taskOfItem: [Int32]
    /// Each task's index in `tasks`.
    let taskNumbers: [String: Int32]
    /// The partition of each task (`TaskPartition`), by its index in `tasks`.
    let partitionOfTask: [UInt8]
    /// The partitions of the batch's tasks, ascending.
    let partitions: [Int]

    public var firstLine: Int { items.first?.line ?? 0 }
    public var lastLine: Int { items.last?.line ?? 0 }
    public var count: Int { items.count }

    /// The event log's COPY: its columns in the order `init` encodes them,
    /// the transaction's id last (appended to each row as the batch is committed).
    static let eventLogCopy = """
        COPY meetperry.task_event
            (identity, event, external_id, user_id, content, is_completed, occurred_at, received_at, delivery_id, xact_id)
        FROM STDIN (FORMAT binary)
        """

    /// Computes identities and encodes the event log rows (`eventLogCopy`'s columns but the last).
    public init(_ items: [IncomingEvent]) {
        var encoder = BinaryCopyEncoder(columns: 9)
        var identities: [EventKey] = []
        identities.reserveCapacity(items.count)
        var taskNumbers: [String: Int32] = [:]
        taskNumbers.reserveCapacity(items.count)
        var tasks: [String] = []
        var taskOfItem: [Int32] = []
        var partitionOfTask: [UInt8] = []
        taskOfItem.reserveCapacity(items.count)
        var partitionMask: UInt32 = 0
        // Each item read where it is (through the buffer: an array's element
        // read is a copy of it, a retain of each string).
        items.withUnsafeBufferPointer { items in
            for i in items.indices {
                let number = taskNumbers[items[i].record.webhook.taskId, default: Int32(tasks.count)]
                if number == tasks.count {
                    taskNumbers[items[i].record.webhook.taskId] = number
                    tasks.append(items[i].record.webhook.taskId)
                    let partition = TaskPartition.of(task: items[i].record.webhook.taskId)
                    partitionOfTask.append(UInt8(partition))
                    partitionMask |= 1 << UInt32(partition)
                }
                taskOfItem.append(number)
                identities.append(items[i].identity)
                encoder.addUUID(high: items[i].identity.high, low: items[i].identity.low)
                encoder.add(items[i].record.webhook.event.rawValue)
                encoder.add(items[i].record.webhook.taskId)
                encoder.add(items[i].record.webhook.userId)
                encoder.add(items[i].record.webhook.content)
                encoder.add(items[i].record.webhook.isCompleted)
                encoder.addTimestamp(microsecondsSinceUnixEpoch: items[i].record.webhook.timestamp.microsecondsSinceEpoch)
                encoder.addTimestamp(microsecondsSinceUnixEpoch: items[i].record.receivedAt?.microsecondsSinceEpoch)
                encoder.add(items[i].record.deliveryId)
                encoder.endRow()
            }
        }
        self.items = items
        self.identities = identities
        self.eventRows = encoder
        self.tasks = tasks
        self.taskOfItem = taskOfItem
        self.taskNumbers = taskNumbers
        self.partitionOfTask = partitionOfTask
        self.partitions = (0..<TaskPartition.count).filter { partitionMask & (1 << UInt32($0)) != 0 }
    }

    /// The batch's items whose indices are in `range`, prepared on their own (a batch split in two).
    func part(_ range: Range<Int>) -> PreparedBatch {
        PreparedBatch(Array(items[range]))
    }
}

/// How many of a batch's tasks the cache (`TaskCache`) answered, and how
/// many it did not, of which how many it had remembered in a partition
/// another writer had changed since.
public struct TaskCacheLookups: Sendable, Equatable {
    public var hits = 0
    /// Of the hits: tasks known to have nothing stored (`TaskCache.foundEmpty`).
    public var new = 0
    public var misses = 0
    public var stale = 0

    mutating func add(_ other: TaskCacheLookups) {
        hits += other.hits
        new += other.new
        misses += other.misses
        stale += other.stale
    }
}

/// What one committed batch did.
public struct BatchOutcome: Sendable {
    public var applied = 0
    public var duplicates = 0
    public var pending = 0
    /// Events the rules refused, with the rule's verdict (its `rejectionReason` says why).
    public var rejected: [(IncomingEvent, EventDisposition)] = []
    /// What the task cache answered of the batch's tasks.
    public var cache = TaskCacheLookups()
    /// Stored events whose verdict this batch changed (an earlier `created`
    /// arrived), to be said once the batch is committed (`BatchCommitter`).
    public var verdictChanges: [VerdictChange] = []

    /// A stored event refused now that was not, or no longer refused, or refused for another reason.
    public struct VerdictChange: Sendable, Equatable {
        /// The stored event, as the line the receiver wrote for it.
        public var record: StreamRecord
        /// Its verdict before and after (nil: not refused).
        public var before: EventDisposition?
        public var after: EventDisposition?
        /// The line (or stream sequence) of the batch's first event of that task: what changed it.
        public var causedBy: Int
    }

    public init() {}
}
