import WebhookModel

/// `manifest_{start}_{end}.json`: written last by a cron run, after every
/// report file of its window and every correction it made are on disk, so a
/// downstream job that sees it knows the window is complete and which files
/// changed. When a later run corrects files of this window, it rewrites this
/// manifest too (after those files, atomically), with their new revisions:
/// reading one window's manifest is enough to know its current files. The
/// manifest holds one entry per file (it grows with the number of users,
/// never with the number of tasks).
public struct RunManifest: Sendable {
    /// One report file the manifest names.
    public struct Entry: Sendable, Equatable {
        public var file: String
        public var userId: String
        public var tasks: Int
        public var revision: Int
        /// The file's window (only for `correctedReports`: files of other windows).
        public var window: ReportWindow?

        public init(file: String, userId: String, tasks: Int, revision: Int, window: ReportWindow? = nil) {
            self.file = file
            self.userId = userId
            self.tasks = tasks
            self.revision = revision
            self.window = window
        }
    }

    /// What the run counted (see `Reporter.Summary`).
    public struct Counts: Sendable, Equatable {
        public var users = 0, files = 0, tasks = 0, lateEvents = 0, beyondHorizon = 0, corrections = 0
    }

    /// Why a manifest on disk could not be read back.
    public struct ReadError: Error, Sendable, CustomStringConvertible {
        public var file: String
        public var reason: String
        public var description: String { "\(file): \(reason)" }
    }

    public let window: ReportWindow
    /// 1 when the run of `window` writes it, +1 each time a correction rewrites it.
    public private(set) var revision = 1
    /// The run that wrote this revision (the window's own run, then the correcting one).
    public private(set) var run: ReportWindow
    public var counts = Counts()
    /// The files of `window`, in the order they were written.
    public private(set) var reports: [Entry] = []
    /// Files of earlier windows this window's run rewrote for late events.
    public private(set) var correctedReports: [Entry] = []

    public init(window: ReportWindow) {
        self.window = window
        self.run = window
    }

    public static func fileName(for window: ReportWindow) -> String {
        "manifest_" + window.start.canonical + "_" + window.end.canonical + ".json"
    }

    /// A report file of the run's own window.
    public mutating func addFile(_ name: String, report: UserReport, revision: Int) {
        reports.append(Entry(file: name, userId: report.userId, tasks: report.taskCount, revision: revision))
    }

    /// A report file of an earlier window, rewritten for late events.
    public mutating func addCorrection(_ name: String, report: UserReport, revision: Int) {
        correctedReports.append(Entry(file: name, userId: report.userId, tasks: report.taskCount, revision: revision, window: report.window))
    }

    /// Takes in files of this window that `run` rewrote: each replaces the
    /// entry of the same file, or is added (a user who gained a file); the
    /// file and task totals are counted again and the revision goes up.
    public mutating func correct(_ files: [Entry], by run: ReportWindow) {
        for var file in files {
            file.window = nil
            if let index = reports.firstIndex(where: { $0.file == file.file }) {
                reports[index] = file
            } else {
                reports.append(file)
            }
        }
        counts.files = reports.count
        counts.tasks = reports.reduce(0) { $0 + $1.tasks }
        counts.users = max(counts.users, Set(reports.map(\.userId)).count)
        revision += 1
        self.run = run
    }

    public func render() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(512 + (reports.count + correctedReports.count) * 160)
        out.append(contentsOf: "{\n  \"window\": ".utf8)
        Self.appendWindow(window, to: &out)
        out.append(contentsOf: ",\n  \"revision\": \(revision), \"run\": ".utf8)
        Self.appendWindow(run, to: &out)
        out.append(contentsOf: ",\n  \"users\": \(counts.users), \"files\": \(counts.files), \"tasks\": \(counts.tasks),".utf8)
        out.append(contentsOf: "\n  \"lateEvents\": \(counts.lateEvents), \"lateEventsBeyondHorizon\": \(counts.beyondHorizon), \"corrections\": \(counts.corrections),".utf8)
        Self.appendList("reports", reports, to: &out)
        out.append(UInt8(ascii: ","))
        Self.appendList("correctedReports", correctedReports, to: &out)
        out.append(contentsOf: "\n}\n".utf8)
        return out
    }

    private static func appendList(_ name: String, _ entries: [Entry], to out: inout [UInt8]) {
        out.append(contentsOf: "\n  \"\(name)\": [".utf8)
        for (index, entry) in entries.enumerated() {
            out.append(contentsOf: (index == 0 ? "\n    {\"file\": " : ",\n    {\"file\": ").utf8)
            JSONWriter.appendQuoted(entry.file, to: &out)
            out.append(contentsOf: ", \"userId\": ".utf8)
            JSONWriter.appendQuoted(entry.userId, to: &out)
            out.append(contentsOf: ", \"tasks\": \(entry.tasks), \"revision\": \(entry.revision)".utf8)
            if let window = entry.window {
                out.append(contentsOf: ", \"window\": ".utf8)
                appendWindow(window, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        }
        out.append(contentsOf: (entries.isEmpty ? "]" : "\n  ]").utf8)
    }

    private static func appendWindow(_ window: ReportWindow, to out: inout [UInt8]) {
        out.append(contentsOf: "{\"start\": \"".utf8)
        window.start.appendCanonical(to: &out)
        out.append(contentsOf: "\", \"end\": \"".utf8)
        window.end.appendCanonical(to: &out)
        out.append(contentsOf: "\"}".utf8)
    }
}

extension RunManifest {
    /// Reads back a manifest this program wrote (`file` names it in errors).
    /// One written before revisions existed reads as revision 1 with files of revision 1.
    public init(parsing bytes: [UInt8], file: String) throws(ReadError) {
        func fail(_ reason: String) -> ReadError { ReadError(file: file, reason: reason) }
        let json: JSONValue
        do { json = try JSONParser.parse(bytes) } catch { throw fail("not JSON: \(error)") }
        func window(_ value: JSONValue?, _ path: String) throws(ReadError) -> ReportWindow {
            guard case .string(let start)? = value?["start"], case .string(let end)? = value?["end"],
                  let from = try? Timestamp(parsing: start), let to = try? Timestamp(parsing: end) else {
                throw fail("\(path) is not a window")
            }
            return ReportWindow(start: from, end: to)
        }
        func int(_ value: JSONValue?, _ path: String, default fallback: Int? = nil) throws(ReadError) -> Int {
            if value == nil, let fallback { return fallback }
            guard case .number(let text)? = value, let number = Int(text) else { throw fail("\(path) is not a whole number") }
            return number
        }
        func entries(_ name: String, windowed: Bool) throws(ReadError) -> [Entry] {
            guard case .array(let items)? = json[name] else { throw fail("\(name) is not an array") }
            var result: [Entry] = []
            for (index, item) in items.enumerated() {
                let path = "\(name)[\(index)]"
                guard case .string(let file)? = item["file"], case .string(let user)? = item["userId"] else {
                    throw fail("\(path) has no file and userId")
                }
                result.append(Entry(file: file, userId: user, tasks: try int(item["tasks"], path + ".tasks"),
                                    revision: try int(item["revision"], path + ".revision", default: 1),
                                    window: windowed ? try window(item["window"], path + ".window") : nil))
            }
            return result
        }
        self.init(window: try window(json["window"], "window"))
        revision = try int(json["revision"], "revision", default: 1)
        run = json["run"] == nil ? self.window : try window(json["run"], "run")
        counts = Counts(users: try int(json["users"], "users"), files: try int(json["files"], "files"), tasks: try int(json["tasks"], "tasks"),
                        lateEvents: try int(json["lateEvents"], "lateEvents", default: 0),
                        beyondHorizon: try int(json["lateEventsBeyondHorizon"], "lateEventsBeyondHorizon", default: 0),
                        corrections: try int(json["corrections"], "corrections", default: 0))
        reports = try entries("reports", windowed: false)
        correctedReports = try entries("correctedReports", windowed: true)
    }
}
