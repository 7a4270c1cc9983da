/// A parsed JSON document, kept deliberately small: the webhook decoder needs
/// to tell "missing" from "wrong type" for every field and to report where a
/// document is malformed, which `JSONDecoder` does not do in a user-friendly way.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    /// The number exactly as written (validated against the JSON grammar).
    case number(String)
    case string(String)
    case array([JSONValue])
    /// Members in document order; a repeated key keeps its last value on lookup.
    case object([(String, JSONValue)])

    /// The value of `key` when this is an object (last occurrence wins).
    public subscript(key: String) -> JSONValue? {
        guard case .object(let members) = self else { return nil }
        return members.last(where: { $0.0 == key })?.1
    }

    /// A short name of the value's type, for error messages.
    public var typeName: String {
        switch self {
        case .null: return "null"
        case .bool: return "a boolean"
        case .number: return "a number"
        case .string: return "a string"
        case .array: return "an array"
        case .object: return "an object"
        }
    }

    public static func == (lhs: JSONValue, rhs: JSONValue) -> Bool {
        switch (lhs, rhs) {
        case (.null, .null): return true
        case (.bool(let a), .bool(let b)): return a == b
        case (.number(let a), .number(let b)): return a == b
        case (.string(let a), .string(let b)): return a == b
        case (.array(let a), .array(let b)): return a == b
        case (.object(let a), .object(let b)):
            return a.count == b.count && zip(a, b).allSatisfy { $0.0 == $1.0 && $0.1 == $1.1 }
        default: return false
        }
    }
}

/// Why a byte sequence is not a JSON document, and at which byte offset.
public struct JSONSyntaxError: Error, Sendable, Equatable, CustomStringConvertible {
    public var offset: Int
    public var message: String

    public var description: String { "malformed JSON at byte \(offset): \(message)" }
}
