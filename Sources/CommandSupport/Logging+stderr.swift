import Logging

/// Logs go to stderr only, one line per event: stdout is data.
public enum LogSetup {
    public static func bootstrap(level: String?) {
        let level = level.flatMap { Logger.Level(rawValue: $0.lowercased()) } ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}
