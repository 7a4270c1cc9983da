import LibPQ
import WebhookModel

extension CopyEncoder {
    /// A timestamptz column in canonical UTC form, or NULL.
    mutating func addTimestamp(_ timestamp: Timestamp?) {
        guard let timestamp else { return addNull() }
        addRaw { timestamp.appendCanonical(to: &$0) }
    }
}
