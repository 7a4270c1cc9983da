/// The receiver's own line (`StreamRecord.appendCanonicalLine`) read as it
/// is written: its fields in their fixed order, each at its known place, no
/// document tree built. The applier reads millions of these lines; the
/// general parser costs it several times more per line.
///
/// It accepts only what the general path (`JSONParser` then
/// `Webhook.decode(_: JSONValue)`) accepts, with the same result: strings
/// without escapes or control characters, valid UTF-8, identifiers within
/// bounds, a known event, a timestamp `Timestamp` parses. Anything else,
/// however slight (a space, another field order, an escape, a field that
/// would be refused), is nil: the general path then decides, and says what
/// is wrong and where.
struct CanonicalLineReader {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
    }

    static func read(_ bytes: UnsafeBufferPointer<UInt8>) -> StreamRecord? {
        var reader = CanonicalLineReader(bytes)
        return reader.record()
    }

    private mutating func record() -> StreamRecord? {
        guard skip("{\"event\":"), let name = string(), let event = WebhookEvent(rawValue: name),
              skip(",\"timestamp\":"), let time = string(), let timestamp = try? Timestamp(parsing: time),
              skip(",\"metadata\":{\"userId\":"), let userId = identifier(),
              skip(",\"id\":"), let taskId = identifier(),
              skip(",\"content\":"), let content = string(),
              skip(",\"isCompleted\":") else { return nil }
        let isCompleted: Bool
        if skip("true}") {
            isCompleted = true
        } else if skip("false}") {
            isCompleted = false
        } else {
            return nil
        }
        var receivedAt: Timestamp?
        if skip(",\"receivedAt\":") {
            guard let text = string() else { return nil }
            receivedAt = try? Timestamp(parsing: text)  // as the general path: an unreadable one is left out
        }
        var deliveryId: String?
        if skip(",\"deliveryId\":") {
            guard let id = string() else { return nil }
            if !id.isEmpty { deliveryId = id }
        }
        guard skip("}"), index == bytes.count else { return nil }
        return StreamRecord(
            webhook: Webhook(event: event, timestamp: timestamp, userId: userId, taskId: taskId, content: content, isCompleted: isCompleted),
            receivedAt: receivedAt, deliveryId: deliveryId)
    }

    /// Moves past `literal` if the bytes go on with it.
    private mutating func skip(_ literal: StaticString) -> Bool {
        let count = literal.utf8CodeUnitCount
        guard bytes.count - index >= count else { return false }
        for offset in 0..<count where bytes[index + offset] != literal.utf8Start[offset] { return false }
        index += count
        return true
    }

    /// A quoted string with nothing to unescape, control characters or
    /// invalid UTF-8 in it (which the general path unescapes or refuses).
    private mutating func string() -> String? {
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { return nil }
        let start = index + 1
        var end = start
        var ascii = true
        while end < bytes.count {
            let byte = bytes[end]
            if byte == UInt8(ascii: "\"") { break }
            if byte == UInt8(ascii: "\\") || byte < 0x20 { return nil }
            if byte >= 0x80 { ascii = false }
            end += 1
        }
        guard end < bytes.count else { return nil }
        index = end + 1
        let text = UnsafeBufferPointer(rebasing: bytes[start..<end])
        return ascii ? String(decoding: text, as: UTF8.self) : String(validating: text, as: UTF8.self)
    }

    /// A string the general path takes as an identifier: not empty, not too long.
    private mutating func identifier() -> String? {
        guard let text = string(), !text.isEmpty, text.utf8.count <= Webhook.maxIdentifierBytes else { return nil }
        return text
    }
}
