/// The kind of change a webhook reports.
public enum WebhookEvent: String, Sendable, Hashable, CaseIterable, Comparable {
    case created, updated, deleted

    public static func < (lhs: WebhookEvent, rhs: WebhookEvent) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One validated webhook: what the TODO service said happened to a task, and when.
/// Its fields are exactly the event's identity (README.md, The applier).
public struct Webhook: Sendable, Hashable {
    /// The longest `userId` or `id` accepted, in UTF-8 bytes.
    public static let maxIdentifierBytes = 256

    public var event: WebhookEvent
    public var timestamp: Timestamp
    public var userId: String
    /// `metadata.id`: the TODO service's id of the task.
    public var taskId: String
    public var content: String
    public var isCompleted: Bool

    public init(event: WebhookEvent, timestamp: Timestamp, userId: String, taskId: String, content: String, isCompleted: Bool) {
        self.event = event
        self.timestamp = timestamp
        self.userId = userId
        self.taskId = taskId
        self.content = content
        self.isCompleted = isCompleted
    }
}

/// One line of the stream between receiver and applier: the webhook plus what
/// the receiver learned when it accepted it.
public struct StreamRecord: Sendable, Hashable {
    public var webhook: Webhook
    /// When the receiver accepted the webhook; absent in raw webhook bodies.
    public var receivedAt: Timestamp?
    /// The Standard Webhooks `webhook-id` header, when one came in.
    public var deliveryId: String?

    public init(webhook: Webhook, receivedAt: Timestamp? = nil, deliveryId: String? = nil) {
        self.webhook = webhook
        self.receivedAt = receivedAt
        self.deliveryId = deliveryId
    }
}

/// One problem with one field, located by its path in the document,
/// e.g. `["metadata", "isCompleted"]` / "expected a boolean".
public struct FieldIssue: Sendable, Equatable, CustomStringConvertible {
    public var loc: [String]
    public var msg: String

    public init(loc: [String], msg: String) {
        self.loc = loc
        self.msg = msg
    }

    public var description: String {
        (loc.isEmpty ? "(document)" : loc.joined(separator: ".")) + ": " + msg
    }
}

/// Why a document is not an acceptable webhook.
public enum WebhookDecodingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The bytes are not JSON at all.
    case malformedJSON(JSONSyntaxError)
    /// Valid JSON, but fields are missing, of the wrong type or out of range.
    case invalidFields([FieldIssue])
    /// Everything is valid except that `event` names no known event.
    case unknownEvent(String)

    public var description: String {
        switch self {
        case .malformedJSON(let error): return error.description
        case .invalidFields(let issues): return issues.map(\.description).joined(separator: "; ")
        case .unknownEvent(let name):
            return "unknown event \(JSONWriter.quoted(String(name.prefix(64)))); expected created, updated or deleted"
        }
    }
}

extension Webhook {
    /// Decodes and validates a webhook body (or a stream line) from raw bytes.
    /// The receiver's own lines are read as written (`CanonicalLineReader`);
    /// anything else is parsed as any JSON document.
    public static func decode(_ bytes: UnsafeBufferPointer<UInt8>) throws(WebhookDecodingError) -> StreamRecord {
        if let record = CanonicalLineReader.read(bytes) { return record }
        return try decodeDocument(bytes)
    }

    /// Decodes and validates a webhook body from raw bytes as any JSON document.
    static func decodeDocument(_ bytes: UnsafeBufferPointer<UInt8>) throws(WebhookDecodingError) -> StreamRecord {
        let document: JSONValue
        do {
            document = try JSONParser.parse(bytes)
        } catch {
            throw .malformedJSON(error)
        }
        return try decode(document)
    }

    public static func decode(_ bytes: [UInt8]) throws(WebhookDecodingError) -> StreamRecord {
        let result = bytes.withUnsafeBufferPointer { buffer in Result { () throws(WebhookDecodingError) in try decode(buffer) } }
        return try result.get()
    }

    /// Validates a parsed document, collecting every problem rather than stopping at the first.
    public static func decode(_ document: JSONValue) throws(WebhookDecodingError) -> StreamRecord {
        guard case .object = document else {
            throw .invalidFields([FieldIssue(loc: [], msg: "expected a JSON object, got \(document.typeName)")])
        }
        var issues: [FieldIssue] = []

        func string(_ value: JSONValue?, _ loc: [String]) -> String? {
            guard let value else { issues.append(FieldIssue(loc: loc, msg: "field required")); return nil }
            guard case .string(let s) = value else {
                issues.append(FieldIssue(loc: loc, msg: "expected a string, got \(value.typeName)"))
                return nil
            }
            // PostgreSQL text cannot hold U+0000; refuse it here rather than fail a batch later.
            var text = s
            if text.withUTF8({ $0.contains(0) }) {
                issues.append(FieldIssue(loc: loc, msg: "must not contain the NUL character (\\u0000)"))
                return nil
            }
            return s
        }
        func identifier(_ value: JSONValue?, _ loc: [String]) -> String? {
            guard let s = string(value, loc) else { return nil }
            if s.isEmpty {
                issues.append(FieldIssue(loc: loc, msg: "must not be empty"))
                return nil
            }
            if s.utf8.count > maxIdentifierBytes {
                issues.append(FieldIssue(loc: loc, msg: "longer than \(maxIdentifierBytes) bytes"))
                return nil
            }
            return s
        }

        var event: WebhookEvent?
        var unknownEvent: String?
        if let name = string(document["event"], ["event"]) {
            if let known = WebhookEvent(rawValue: name) { event = known } else { unknownEvent = name }
        }

        var timestamp: Timestamp?
        if let text = string(document["timestamp"], ["timestamp"]) {
            do {
                timestamp = try Timestamp(parsing: text)
            } catch {
                issues.append(FieldIssue(loc: ["timestamp"], msg: "expected an ISO 8601 date-time: \(error.message)"))
            }
        }

        var userId: String?, taskId: String?, content: String?, isCompleted: Bool?
        switch document["metadata"] {
        case nil:
            issues.append(FieldIssue(loc: ["metadata"], msg: "field required"))
        case .some(let metadata):
            if case .object = metadata {
                userId = identifier(metadata["userId"], ["metadata", "userId"])
                taskId = identifier(metadata["id"], ["metadata", "id"])
                content = string(metadata["content"], ["metadata", "content"])
                switch metadata["isCompleted"] {
                case nil: issues.append(FieldIssue(loc: ["metadata", "isCompleted"], msg: "field required"))
                case .bool(let b)?: isCompleted = b
                case .some(let other):
                    issues.append(FieldIssue(loc: ["metadata", "isCompleted"], msg: "expected a boolean, got \(other.typeName)"))
                }
            } else {
                issues.append(FieldIssue(loc: ["metadata"], msg: "expected an object, got \(metadata.typeName)"))
            }
        }

        // receivedAt / deliveryId are the receiver's additions; a raw webhook has none.
        var receivedAt: Timestamp?
        if case .string(let text)? = document["receivedAt"] { receivedAt = try? Timestamp(parsing: text) }
        var deliveryId: String?
        if case .string(let id)? = document["deliveryId"], !id.isEmpty { deliveryId = id }

        if !issues.isEmpty {
            if let unknownEvent {
                issues.insert(FieldIssue(loc: ["event"], msg: "unknown event \(JSONWriter.quoted(String(unknownEvent.prefix(64)))); expected created, updated or deleted"), at: 0)
            }
            throw .invalidFields(issues)
        }
        if let unknownEvent { throw .unknownEvent(unknownEvent) }
        guard let event, let timestamp, let userId, let taskId, let content, let isCompleted else {
            // Unreachable: every nil above recorded an issue.
            throw .invalidFields([FieldIssue(loc: [], msg: "incomplete webhook")])
        }
        return StreamRecord(
            webhook: Webhook(event: event, timestamp: timestamp, userId: userId, taskId: taskId, content: content, isCompleted: isCompleted),
            receivedAt: receivedAt,
            deliveryId: deliveryId
        )
    }
}

extension StreamRecord {
    /// The canonical NDJSON line (with its trailing `\n`) the receiver writes:
    /// fixed field order, UTC timestamps with six fractional digits.
    public func canonicalLine() -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + webhook.content.utf8.count)
        appendCanonicalLine(to: &out)
        return out
    }

    public func appendCanonicalLine(to out: inout [UInt8]) {
        func raw(_ s: StaticString) { out.append(contentsOf: UnsafeBufferPointer(start: s.utf8Start, count: s.utf8CodeUnitCount)) }
        raw("{\"event\":\"")
        out.append(contentsOf: webhook.event.rawValue.utf8)
        raw("\",\"timestamp\":\"")
        webhook.timestamp.appendCanonical(to: &out)
        raw("\",\"metadata\":{\"userId\":")
        JSONWriter.appendQuoted(webhook.userId, to: &out)
        raw(",\"id\":")
        JSONWriter.appendQuoted(webhook.taskId, to: &out)
        raw(",\"content\":")
        JSONWriter.appendQuoted(webhook.content, to: &out)
        raw(webhook.isCompleted ? ",\"isCompleted\":true}" : ",\"isCompleted\":false}")
        if let receivedAt {
            raw(",\"receivedAt\":\"")
            receivedAt.appendCanonical(to: &out)
            raw("\"")
        }
        if let deliveryId {
            raw(",\"deliveryId\":")
            JSONWriter.appendQuoted(deliveryId, to: &out)
        }
        raw("}\n")
    }
}
