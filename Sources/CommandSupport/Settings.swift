import Foundation

/// Resolves a setting: command-line flag, else environment variable, else
/// default. A value that is given but cannot be used is an error naming
/// where it came from (the flag, or the variable), never a silent default.
public struct Settings: Sendable {
    /// A setting that was given but is not usable.
    public struct InvalidSetting: Error, CustomStringConvertible {
        /// `--batch-size 0` or `APPLIER_BATCH_SIZE="0"`: where the value came from, and the value.
        public var given: String
        public var expected: String
        public var description: String { "\(given) is not \(expected)" }
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

    /// `flag`: the flag's name and what it was given (nil when it was not).
    public func int(_ flag: (name: String, value: Int?), _ variable: String, default defaultValue: Int, range: ClosedRange<Int>) throws -> Int {
        let value: Int
        let given: String
        if let flagged = flag.value {
            value = flagged
            given = "\(flag.name) \(flagged)"
        } else if let text = string(variable) {
            given = "\(variable)=\(text.debugDescription)"
            guard let parsed = Int(text.trimmingCharacters(in: .whitespaces)) else {
                throw InvalidSetting(given: given, expected: "a whole number")
            }
            value = parsed
        } else {
            return defaultValue
        }
        guard range.contains(value) else {
            throw InvalidSetting(given: given, expected: "within \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    public func bool(_ flag: Bool?, _ variable: String, default defaultValue: Bool) throws -> Bool {
        if let flag { return flag }
        guard let text = string(variable) else { return defaultValue }
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: throw InvalidSetting(given: "\(variable)=\(text.debugDescription)", expected: "true or false")
        }
    }
}

/// The version every program answers to `--version`, after its name.
public let meetperryVersion = "0.2.0"
