import Crypto
import WebhookModel

/// The identity of an event (event, id, userId, content, isCompleted,
/// timestamp as an instant) as a fixed-size key: the first 16 bytes of
/// SHA-256 over the length-prefixed fields, written as a UUID. The event
/// log's primary key, so a duplicate is a conflict the database sees; and,
/// in JetStream mode, the receiver's `Nats-Msg-Id`, so a sender's retry is
/// stored once.
public enum EventIdentity {
    public static func uuid(of webhook: Webhook) -> String {
        bytes(of: webhook).withUnsafeBytes { format($0) }
    }

    /// The same identity as the 16 bytes of a binary `uuid`.
    public static func bytes(of webhook: Webhook) -> [UInt8] {
        var taskId = webhook.taskId, userId = webhook.userId, content = webhook.content
        var message: [UInt8] = []
        message.reserveCapacity(64 + taskId.utf8.count + userId.utf8.count + content.utf8.count)
        appendField(webhook.event.rawValue.utf8, to: &message)
        taskId.withUTF8 { appendField($0, to: &message) }
        userId.withUTF8 { appendField($0, to: &message) }
        content.withUTF8 { appendField($0, to: &message) }
        appendLength(1, to: &message)
        message.append(webhook.isCompleted ? 1 : 0)
        appendLength(8, to: &message)
        let micros = UInt64(bitPattern: webhook.timestamp.microsecondsSinceEpoch)
        for shift in stride(from: 56, through: 0, by: -8) { message.append(UInt8(truncatingIfNeeded: micros >> UInt64(shift))) }
        let digest = message.withUnsafeBytes { SHA256.hash(data: $0) }
        return digest.withUnsafeBytes { Array($0.prefix(16)) }
    }

    /// A field: its length (4 bytes, big-endian), then its bytes.
    private static func appendField(_ bytes: some Collection<UInt8>, to message: inout [UInt8]) {
        appendLength(bytes.count, to: &message)
        message.append(contentsOf: bytes)
    }

    private static func appendLength(_ count: Int, to message: inout [UInt8]) {
        let length = UInt32(count)
        message.append(UInt8(truncatingIfNeeded: length >> 24))
        message.append(UInt8(truncatingIfNeeded: length >> 16))
        message.append(UInt8(truncatingIfNeeded: length >> 8))
        message.append(UInt8(truncatingIfNeeded: length))
    }

    static func format(_ bytes: UnsafeRawBufferPointer) -> String {
        let hex: StaticString = "0123456789abcdef"
        return String(unsafeUninitializedCapacity: 36) { out in
            var o = 0
            for (i, byte) in bytes.enumerated() {
                if i == 4 || i == 6 || i == 8 || i == 10 { out[o] = UInt8(ascii: "-"); o += 1 }
                out[o] = hex.utf8Start[Int(byte >> 4)]
                out[o + 1] = hex.utf8Start[Int(byte & 0xF)]
                o += 2
            }
            return o
        }
    }
}
