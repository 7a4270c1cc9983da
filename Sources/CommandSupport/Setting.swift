import ArgumentParser
import Foundation

/// A value a setting can hold, read from an environment variable's text.
public protocol SettingValue: Sendable, CustomStringConvertible {
    /// The value `text` means, or nil when it means none.
    static func parse(_ text: String) -> Self?
    /// What a usable value is, for the message naming one that is not.
    static var expected: String { get }
}

extension String: SettingValue {
    public static func parse(_ text: String) -> String? { text }
    public static var expected: String { "a string" }
}

extension Int: SettingValue {
    public static func parse(_ text: String) -> Int? { Int(text.trimmingCharacters(in: .whitespaces)) }
    public static var expected: String { "a whole number" }
}

extension Bool: SettingValue {
    /// `true`/`false` (also `1`/`0`, `yes`/`no`, `on`/`off`).
    public static func parse(_ text: String) -> Bool? {
        switch text.lowercased() {
        case "true", "1", "yes", "on": return true
        case "false", "0", "no", "off": return false
        default: return nil
        }
    }

    public static var expected: String { "true or false" }
}

/// What every setting says of itself, whatever its value's type: the
/// contract README's configuration table is checked against.
public protocol SettingDeclaration: Sendable {
    var variable: String { get }
    /// `--http-port`, or nil for a variable without a flag.
    var flagName: String? { get }
    /// The default as help and README write it (`8000`, `unset`).
    var defaultText: String { get }
}

/// One setting of a program, declared once: its environment variable, its
/// flag, its default, the values it takes and what it means. The flag's
/// `@Option` takes its name and help from here, `Settings` resolves it from
/// here (the flag, else the variable, else the default), and a test checks
/// README's configuration table against every program's declarations, so
/// the help, the code and the documentation cannot drift apart.
public struct Setting<Value: SettingValue>: SettingDeclaration {
    public let variable: String
    /// The long flag without its dashes (`http-port`), or nil.
    public let flag: String?
    /// The value when neither the flag nor the variable is given; nil: unset.
    public let defaultValue: Value?
    /// How the default reads when it is not the value itself (`off`, `the public port`).
    public let defaultWording: String?
    /// The whole numbers a setting of them may take.
    public let range: ClosedRange<Int>?
    public let meaning: String
    public let valueName: String

    public init(_ variable: String, flag: String?, default defaultValue: Value?, wording: String? = nil, range: ClosedRange<Int>? = nil,
                valueName: String, _ meaning: String) {
        self.variable = variable
        self.flag = flag
        self.defaultValue = defaultValue
        self.defaultWording = wording
        self.range = range
        self.valueName = valueName
        self.meaning = meaning
    }

    public var flagName: String? { flag.map { "--" + $0 } }

    public var defaultText: String { defaultWording ?? defaultValue?.description ?? "unset" }

    /// The flag's name for `@Option(name:)`.
    public var name: NameSpecification { .customLong(flag ?? variable.lowercased()) }

    /// The flag's help: what it means, then `[VARIABLE, default …]`.
    public var help: ArgumentHelp {
        let shown = defaultWording ?? defaultValue?.description
        return ArgumentHelp("\(meaning) [\(variable)\(shown.map { ", default \($0)" } ?? "")].", valueName: valueName)
    }
}
