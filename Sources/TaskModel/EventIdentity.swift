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
        withBytes(of: webhook) { Array($0) }
    }

    /// The identity's 16 bytes, handed to `body` without an array made for
    /// them or for the message hashed.
    public static func withBytes<Result>(of webhook: Webhook, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
        digest(of: webhook).withUnsafeBytes { body(UnsafeRawBufferPointer(rebasing: $0.prefix(16))) }
    }

    /// The identity's 16 bytes as two big-endian halves (the applier does
    /// this per event: no closure, so the caller's webhook is read in place).
    public static func key(of webhook: Webhook) -> (high: UInt64, low: UInt64) {
        digest(of: webhook).withUnsafeBytes { bytes in
            var high: UInt64 = 0, low: UInt64 = 0
            for i in 0..<8 { high = high << 8 | UInt64(bytes[i]) }
            for i in 8..<16 { low = low << 8 | UInt64(bytes[i]) }
            return (high, low)
        }
    }

    private static func digest(of webhook: Webhook) -> SHA256Digest {
        let taskId = webhook.taskId.utf8, userId = webhook.userId.utf8, content = webhook.content.utf8
        // Six 4-byte lengths (four text fields, the flag, the time), the flag's byte, the time's 8, the texts.
        let capacity = 6 * 4 + 1 + 8 + webhook.event.rawValue.utf8.count + taskId.count + userId.count + content.count
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: capacity) { buffer in
            var message = MessageWriter(buffer: buffer)
            message.appendField(webhook.event.rawValue.utf8)
            message.appendText(taskId)
            message.appendText(userId)
            message.appendText(content)
            message.appendLength(1)
            message.append(webhook.isCompleted ? 1 : 0)
            message.appendLength(8)
            let micros = UInt64(bitPattern: webhook.timestamp.microsecondsSinceEpoch)
            for shift in stride(from: 56, through: 0, by: -8) { message.append(UInt8(truncatingIfNeeded: micros >> UInt64(shift))) }
            // The incremental form: `hash(data:)` would copy the message into an array first.
            var hasher = SHA256()
            hasher.update(bufferPointer: UnsafeRawBufferPointer(UnsafeMutableBufferPointer(rebasing: buffer[..<message.count])))
            return hasher.finalize()
        }
    }

    /// The message hashed, written into a buffer made large enough for it.
    private struct MessageWriter {
        let buffer: UnsafeMutableBufferPointer<UInt8>
        var count = 0

        mutating func append(_ byte: UInt8) {
            buffer[count] = byte
            count += 1
        }

        /// A field: its length (4 bytes, big-endian), then its bytes.
        mutating func appendField(_ bytes: some Collection<UInt8>) {
            appendLength(bytes.count)
            for byte in bytes { append(byte) }
        }

        /// A text field, from its contiguous UTF-8 where it has one (a native string always does).
        mutating func appendText(_ utf8: String.UTF8View) {
            if utf8.withContiguousStorageIfAvailable({ appendField($0) }) == nil { appendField(utf8) }
        }

        mutating func appendLength(_ count: Int) {
            let length = UInt32(count)
            append(UInt8(truncatingIfNeeded: length >> 24))
            append(UInt8(truncatingIfNeeded: length >> 16))
            append(UInt8(truncatingIfNeeded: length >> 8))
            append(UInt8(truncatingIfNeeded: length))
        }
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
