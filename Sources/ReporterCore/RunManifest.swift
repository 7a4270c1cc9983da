import WebhookModel

/// `manifest_{start}_{end}.json`: written last by a cron run, after every
/// report file of its window and every correction it made are on disk, so a
/// downstream job that sees it knows the window is complete and which files
/// changed. Entries are rendered as they are added (the manifest grows with
/// the number of files, never with the number of tasks).
public struct RunManifest: Sendable {
    public let window: ReportWindow
    private var files: [UInt8] = []
    private var corrections: [UInt8] = []

    public init(window: ReportWindow) {
        self.window = window
    }

    public static func fileName(for window: ReportWindow) -> String {
        "manifest_" + window.start.canonical + "_" + window.end.canonical + ".json"
    }

    /// A report file of the run's own window.
    public mutating func addFile(_ name: String, report: UserReport) {
        Self.appendEntry(&files, name: name, report: report, correction: false)
    }

    /// A report file of an earlier window, rewritten for late events.
    public mutating func addCorrection(_ name: String, report: UserReport) {
        Self.appendEntry(&corrections, name: name, report: report, correction: true)
    }

    public func render(summary: Reporter.Summary) -> [UInt8] {
        var out: [UInt8] = []
        out.append(contentsOf: "{\n  \"window\": ".utf8)
        Self.appendWindow(window, to: &out)
        out.append(contentsOf: ",\n  \"users\": \(summary.users), \"files\": \(summary.files), \"tasks\": \(summary.tasks),".utf8)
        out.append(contentsOf: "\n  \"lateEvents\": \(summary.lateEvents), \"lateEventsBeyondHorizon\": \(summary.beyondHorizon), \"corrections\": \(summary.corrections),".utf8)
        out.append(contentsOf: "\n  \"reports\": [".utf8)
        out.append(contentsOf: files)
        out.append(contentsOf: (files.isEmpty ? "]," : "\n  ],").utf8)
        out.append(contentsOf: "\n  \"correctedReports\": [".utf8)
        out.append(contentsOf: corrections)
        out.append(contentsOf: (corrections.isEmpty ? "]" : "\n  ]").utf8)
        out.append(contentsOf: "\n}\n".utf8)
        return out
    }

    private static func appendEntry(_ out: inout [UInt8], name: String, report: UserReport, correction: Bool) {
        out.append(contentsOf: (out.isEmpty ? "\n    {\"file\": " : ",\n    {\"file\": ").utf8)
        JSONWriter.appendQuoted(name, to: &out)
        out.append(contentsOf: ", \"userId\": ".utf8)
        JSONWriter.appendQuoted(report.userId, to: &out)
        out.append(contentsOf: ", \"tasks\": \(report.taskCount)".utf8)
        if correction {
            out.append(contentsOf: ", \"window\": ".utf8)
            appendWindow(report.window, to: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    private static func appendWindow(_ window: ReportWindow, to out: inout [UInt8]) {
        out.append(contentsOf: "{\"start\": \"".utf8)
        window.start.appendCanonical(to: &out)
        out.append(contentsOf: "\", \"end\": \"".utf8)
        window.end.appendCanonical(to: &out)
        out.append(contentsOf: "\"}".utf8)
    }
}
