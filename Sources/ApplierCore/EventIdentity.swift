import Crypto
import WebhookModel

/// The identity of an event (SPEC §4: event, id, userId, content,
/// isCompleted, timestamp as an instant) as a fixed-size key: the first 16
/// bytes of SHA-256 over the length-prefixed fields, written as a UUID. The
/// event log's primary key, so a duplicate is a conflict the database sees.
public enum EventIdentity {
    public static func uuid(of webhook: Webhook) -> String {
        var hasher = SHA256()
        func field(_ bytes: some Collection<UInt8>) {
            var length = UInt32(bytes.count).bigEndian
            withUnsafeBytes(of: &length) { hasher.update(bufferPointer: $0) }
            hasher.update(data: Array(bytes))
        }
        field(webhook.event.rawValue.utf8)
        field(webhook.taskId.utf8)
        field(webhook.userId.utf8)
        field(webhook.content.utf8)
        field([webhook.isCompleted ? 1 : 0])
        var micros = webhook.timestamp.microsecondsSinceEpoch.bigEndian
        withUnsafeBytes(of: &micros) { field(Array($0)) }
        return format(Array(hasher.finalize().prefix(16)))
    }

    /// A 64-bit key for `pg_advisory_xact_lock`, the same for every event of a task.
    public static func lockKey(taskId: String) -> Int64 {
        let digest = Array(SHA256.hash(data: Array(taskId.utf8)))
        var key: Int64 = 0
        for byte in digest.prefix(8) { key = key << 8 | Int64(byte) }
        return key
    }

    static func format(_ bytes: [UInt8]) -> String {
        let hex = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        out.reserveCapacity(36)
        for (i, byte) in bytes.enumerated() {
            if i == 4 || i == 6 || i == 8 || i == 10 { out.append(UInt8(ascii: "-")) }
            out.append(hex[Int(byte >> 4)])
            out.append(hex[Int(byte & 0xF)])
        }
        return String(decoding: out, as: UTF8.self)
    }
}
