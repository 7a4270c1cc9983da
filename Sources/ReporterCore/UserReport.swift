import WebhookModel

/// One task as of a window's end: the facts the four lists are judged on.
public struct TaskSnapshot: Sendable, Equatable {
    public var taskId: String
    public var content: String
    public var createdDate: Timestamp
    public var completedDate: Timestamp?
    public var deletedDate: Timestamp?

    public init(taskId: String, content: String, createdDate: Timestamp, completedDate: Timestamp?, deletedDate: Timestamp?) {
        self.taskId = taskId
        self.content = content
        self.createdDate = createdDate
        self.completedDate = completedDate
        self.deletedDate = deletedDate
    }
}

/// The report of one user for one window: tasks are sorted into the four
/// lists (README.md, The reporter) as they are added, and rendered as the report file.
public struct UserReport: Sendable {
    public struct Entry: Sendable, Equatable {
        public var id: String
        public var content: String
        public var at: Timestamp
    }

    /// Which version of a file this is and which run wrote it (README.md,
    /// What a consumer can rely on).
    public struct Stamp: Sendable, Equatable {
        /// 1 when the window's file is first written, +1 each time it is written again.
        public var revision: Int
        /// The window of the cron run that wrote the file; nil for an on-demand run.
        public var run: ReportWindow?

        public init(revision: Int, run: ReportWindow?) {
            self.revision = revision
            self.run = run
        }
    }

    public let userId: String
    public let window: ReportWindow
    public var stamp: Stamp?
    public private(set) var newIncomplete: [Entry] = []
    public private(set) var completed: [Entry] = []
    public private(set) var oldIncomplete: [Entry] = []
    public private(set) var deleted: [Entry] = []

    public init(userId: String, window: ReportWindow) {
        self.userId = userId
        self.window = window
    }

    /// Tasks placed in at least one list.
    public var taskCount: Int { newIncomplete.count + completed.count + oldIncomplete.count + deleted.count }
    public var isEmpty: Bool { taskCount == 0 }

    /// The four lists of a report.
    public enum List: Sendable, Equatable {
        case newIncomplete, completed, oldIncomplete, deleted
    }

    /// Where a task (already judged as of the window's end) goes: a list and
    /// its entry, or nil when it is in none.
    public static func placement(of task: TaskSnapshot, in window: ReportWindow) -> (List, Entry)? {
        let end = window.end
        guard task.createdDate <= end else { return nil }
        let deletedAtEnd = task.deletedDate.flatMap { $0 <= end ? $0 : nil }
        let completedAtEnd = task.completedDate.flatMap { $0 <= end ? $0 : nil }
        if let deletedAtEnd {
            return window.contains(deletedAtEnd) ? (.deleted, Entry(id: task.taskId, content: task.content, at: deletedAtEnd)) : nil
        }
        if let completedAtEnd {
            return window.contains(completedAtEnd) ? (.completed, Entry(id: task.taskId, content: task.content, at: completedAtEnd)) : nil
        }
        let entry = Entry(id: task.taskId, content: task.content, at: task.createdDate)
        return task.createdDate > window.start ? (.newIncomplete, entry) : (.oldIncomplete, entry)
    }

    /// Places a task (already judged as of the window's end) in its list, if any.
    public mutating func add(_ task: TaskSnapshot) {
        guard let (list, entry) = Self.placement(of: task, in: window) else { return }
        switch list {
        case .newIncomplete: newIncomplete.append(entry)
        case .completed: completed.append(entry)
        case .oldIncomplete: oldIncomplete.append(entry)
        case .deleted: deleted.append(entry)
        }
    }

    /// The file's bytes: fixed layout, lists sorted by (time, id byte-wise), so
    /// the same window always gives the same bytes.
    public func render() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256 + taskCount * 120)
        func raw(_ s: StaticString) { out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)) }
        raw("{\n  \"userId\": ")
        JSONWriter.appendQuoted(userId, to: &out)
        raw(",\n  \"period\": {\"start\": \"")
        window.start.appendCanonical(to: &out)
        raw("\", \"end\": \"")
        window.end.appendCanonical(to: &out)
        raw("\"},\n")
        if let stamp {
            raw("  \"revision\": ")
            out.append(contentsOf: String(stamp.revision).utf8)
            if let run = stamp.run {
                raw(", \"run\": {\"start\": \"")
                run.start.appendCanonical(to: &out)
                raw("\", \"end\": \"")
                run.end.appendCanonical(to: &out)
                raw("\"},\n")
            } else {
                raw(", \"run\": {\"onDemand\": true},\n")
            }
        }
        func list(_ name: StaticString, _ entries: [Entry], last: Bool = false) {
            raw("  \"")
            raw(name)
            raw("\": [")
            let sorted = entries.sorted { a, b in
                a.at != b.at ? a.at < b.at : a.id.utf8.lexicographicallyPrecedes(b.id.utf8)
            }
            for (i, entry) in sorted.enumerated() {
                raw(i == 0 ? "\n    {\"id\": " : ",\n    {\"id\": ")
                JSONWriter.appendQuoted(entry.id, to: &out)
                raw(", \"content\": ")
                JSONWriter.appendQuoted(entry.content, to: &out)
                raw(", \"createdOrCompletedAt\": \"")
                entry.at.appendCanonical(to: &out)
                raw("\"}")
            }
            if !sorted.isEmpty { raw("\n  ") }
            raw(last ? "]\n" : "],\n")
        }
        list("newIncompleteTasks", newIncomplete)
        list("completedTasks", completed)
        list("oldIncompleteTasks", oldIncomplete)
        list("deletedTasks", deleted, last: true)
        raw("}\n")
        return out
    }

    /// The revision a rendered report file carries: 1 for a file written
    /// before revisions existed, nil when `bytes` is no report.
    /// The line is found by its place in the fixed layout: a quote inside the
    /// user id or a task's content is escaped, so it cannot fake one.
    public static func revision(ofRendered bytes: [UInt8]) -> Int? {
        let marker = Array("\n  \"revision\": ".utf8)
        guard bytes.starts(with: Array("{\n  \"userId\": ".utf8)) else { return nil }
        guard let lists = bytes.firstRange(of: Array("\n  \"newIncompleteTasks\"".utf8)) else { return nil }
        guard let found = bytes[..<lists.lowerBound].firstRange(of: marker) else { return 1 }
        var value = 0
        for byte in bytes[found.upperBound...] {
            guard byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9") else { break }
            value = value * 10 + Int(byte - UInt8(ascii: "0"))
            if value > 1_000_000_000 { return nil }
        }
        return value
    }
}
