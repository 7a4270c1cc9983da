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

    /// The setting's value: the flag's (`flag`, nil when not given), else
    /// its variable's, else its default (nil: unset). A value given that is
    /// not one (or outside the setting's range) throws, naming where it came from.
    public func optional<Value>(_ setting: Setting<Value>, flag: Value?) throws -> Value? {
        let value: Value
        let given: String
        if let flag {
            value = flag
            given = "\(setting.flagName ?? setting.variable) \(flag)"
        } else if let text = string(setting.variable) {
            given = "\(setting.variable)=\(text.debugDescription)"
            guard let parsed = Value.parse(text) else { throw InvalidSetting(given: given, expected: Value.expected) }
            value = parsed
        } else {
            return setting.defaultValue
        }
        if let range = setting.range, let number = value as? Int, !range.contains(number) {
            throw InvalidSetting(given: given, expected: "within \(range.lowerBound)...\(range.upperBound)")
        }
        return value
    }

    /// The value of a setting that has a default (`optional` for one that may be unset).
    public func value<Value>(_ setting: Setting<Value>, flag: Value?) throws -> Value {
        guard let value = try optional(setting, flag: flag) else {
            preconditionFailure("\(setting.variable) is declared without a default")
        }
        return value
    }
}

/// The version every program answers to `--version`, after its name.
public let meetperryVersion = "0.2.0"
