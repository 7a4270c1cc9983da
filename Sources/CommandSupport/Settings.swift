import Foundation

/// Resolves a setting the way SPEC §1 says: command-line flag, else
/// environment variable, else default. A variable that is set but cannot be
/// read as its type is an error naming the variable, not a silent default.
public struct Settings: Sendable {
    /// A setting that was given but is not usable.
    public struct InvalidSetting: Error, CustomStringConvertible {
        public var name: String
        public var value: String
        public var expected: String
        public var description: String { "\(name)=\(value.debugDescription) is not \(expected)" }
    }

    private let environment: [String: String]

    public init(environment: [String: String] = ProcessInfo.processInfo.environment) {
        self.environment = environment
    }

    /// The variable's value when it is set and not empty.
    public func string(_ name: String) -> String? {
        guard let value = environment[name], !value.isEmpty else { return nil }
        return value
    }

    public func string(_ flag: String?, _ name: String, default defaultValue: String) -> String {
        flag ?? string(name) ?? defaultValue
    }

    public func int(_ flag: Int?, _ name: String, default defaultValue: Int, range: ClosedRange<Int>) throws -> Int {
        let value: Int
        if let flag {
            value = flag
        } else if let text = string(name) {
            guard let parsed = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw InvalidSetting(name: name, value: text, expected: "a whole number")
            }
            value = parsed
        } else {
            return defaultValue
        }
        guard range.contains(value) else {
            throw InvalidSetting(name: name, value: String(value), expected: "within \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }
}

extension Settings {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    public func bool(_ flag: Bool?, _ name: String, default defaultValue: Bool) throws -> Bool {
        if let flag { return flag }
        guard let text = string(name) else { return defaultValue }
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw InvalidSetting(name: name, value: text, expected: "true or false")
        }
    }
}

/// The version every program answers to `--version`.
public let meetperryVersion = "0.1.0"
