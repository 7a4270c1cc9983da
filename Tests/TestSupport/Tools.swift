import Foundation

/// What a program run to its end printed, and how it ended.
public struct ToolRun: Sendable {
    public var status: Int32
    public var output: String
    public var errors: String
    /// Both streams, for a failure message.
    public var all: String { output + errors }
}

/// Runs `path` with `arguments` to its end (stdin from `input` when given),
/// capturing stdout and stderr apart.
public func runTool(_ path: String, _ arguments: [String], input: String? = nil, environment: [String: String] = [:],
                    timeout: Double = 120) throws -> ToolRun {
    let dir = try makeTemporaryDirectory("run")
    defer { try? FileManager.default.removeItem(atPath: dir) }
    var stdin = ChildProcess.Stream.null
    if let input {
        _ = FileManager.default.createFile(atPath: dir + "/in", contents: Data(input.utf8))
        stdin = .file(dir + "/in")
    }
    let process = try ChildProcess(path, arguments: arguments, environment: environment, stdin: stdin,
                                   stdout: .file(dir + "/out"), stderr: .file(dir + "/err"))
    let status = try process.waitForExit(timeout: timeout)
    return ToolRun(status: status, output: (try? String(contentsOfFile: dir + "/out", encoding: .utf8)) ?? "",
                   errors: (try? String(contentsOfFile: dir + "/err", encoding: .utf8)) ?? "")
}

/// The full path of a program the tests need from the system (`promtool`,
/// `schemathesis`…), or a failure saying which package provides it.
public func systemTool(_ name: String, package: String) throws -> String {
    for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":")
    where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
        return "\(dir)/\(name)"
    }
    throw TestFailure("\(name) not found on PATH: install \(package) (.ci/run does)")
}

/// The value of sample `series` (a metric name, with its labels as written:
/// `name{label="x"}`) in a Prometheus text exposition, or nil.
public func metricSample(_ series: String, in exposition: String) -> Double? {
    for line in exposition.split(separator: "\n") where line.hasPrefix(series + " ") {
        return Double(line.dropFirst(series.count + 1).split(separator: " ").first ?? "")
    }
    return nil
}
