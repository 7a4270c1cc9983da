import Crypto
import Foundation

/// Checks Standard Webhooks signatures: `webhook-signature` carries one or more
/// space-separated `v1,<base64 HMAC-SHA256("id.timestamp.body")>`, and the
/// `webhook-timestamp` must be within `tolerance` of now. Several secrets may
/// be configured (space-separated) so a secret can be rotated without
/// downtime: a signature valid under any of them is accepted. Comparison is
/// constant-time, and every candidate is checked against every secret.
// SymmetricKey is an immutable value that swift-crypto has not marked Sendable.
public struct SignatureVerifier: @unchecked Sendable {
    /// Why a signature was refused; the message goes back to the sender in the 401.
    public enum Failure: Error, Equatable, CustomStringConvertible {
        case missingHeader(String)
        case badTimestamp
        case staleTimestamp
        case noMatchingSignature

        public var description: String {
            switch self {
            case .missingHeader(let name): return "missing \(name) header"
            case .badTimestamp: return "webhook-timestamp is not a Unix time in seconds"
            case .staleTimestamp: return "webhook-timestamp is more than 5 minutes from the receiver's clock"
            case .noMatchingSignature: return "no v1 signature in webhook-signature matches"
            }
        }
    }

    /// Why a configured secret cannot be used; reported at start-up.
    public struct InvalidSecret: Error, CustomStringConvertible {
        /// Which secret of the list (1-based) is unusable.
        public var position = 1
        public var description: String {
            "WEBHOOK_SECRET's secret number \(position) must be base64, with or without the 'whsec_' prefix (Standard Webhooks format: whsec_<base64>); several secrets are separated by spaces"
        }
    }

    public static let defaultTolerance: Int64 = 300

    private let keys: [SymmetricKey]
    private let tolerance: Int64

    /// - Parameter secret: one or more `whsec_<base64>` separated by spaces; the prefix is optional.
    public init(secret: String, tolerance: Int64 = SignatureVerifier.defaultTolerance) throws {
        var keys: [SymmetricKey] = []
        for (index, one) in secret.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).enumerated() {
            let encoded = one.hasPrefix("whsec_") ? String(one.dropFirst(6)) : String(one)
            guard let raw = Data(base64Encoded: encoded), !raw.isEmpty else { throw InvalidSecret(position: index + 1) }
            keys.append(SymmetricKey(data: raw))
        }
        guard !keys.isEmpty else { throw InvalidSecret() }
        self.keys = keys
        self.tolerance = tolerance
    }

    /// The `v1,<base64>` signature of a message under the first secret, as a sender would write it.
    public func signature(id: String, timestamp: String, body: some DataProtocol) -> String {
        "v1," + Data(mac(keys[0], id: id, timestamp: timestamp, body: body)).base64EncodedString()
    }

    private func mac(_ key: SymmetricKey, id: String, timestamp: String, body: some DataProtocol) -> HashedAuthenticationCode<SHA256> {
        var hmac = HMAC<SHA256>(key: key)
        hmac.update(data: Data(id.utf8))
        hmac.update(data: [UInt8(ascii: ".")])
        hmac.update(data: Data(timestamp.utf8))
        hmac.update(data: [UInt8(ascii: ".")])
        hmac.update(data: body)
        return hmac.finalize()
    }

    /// Returns nil when one of the signatures is valid, else why none is.
    public func check(id: String?, timestamp: String?, signatures: String?, body: some DataProtocol, now: Int64) -> Failure? {
        guard let id, !id.isEmpty else { return .missingHeader("webhook-id") }
        guard let timestamp, !timestamp.isEmpty else { return .missingHeader("webhook-timestamp") }
        guard let signatures, !signatures.isEmpty else { return .missingHeader("webhook-signature") }
        guard timestamp.utf8.count <= 19, timestamp.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }), let seconds = Int64(timestamp) else {
            return .badTimestamp
        }
        guard abs(now - seconds) <= tolerance else { return .staleTimestamp }
        let expected = keys.map { mac($0, id: id, timestamp: timestamp, body: body) }
        var matched = false
        for candidate in signatures.split(separator: " ", omittingEmptySubsequences: true) {
            guard candidate.hasPrefix("v1,"), let decoded = Data(base64Encoded: String(candidate.dropFirst(3))) else { continue }
            // Check every candidate against every secret so the time taken does not reveal which one matched.
            for mac in expected where mac == decoded { matched = true }
        }
        return matched ? nil : .noMatchingSignature
    }
}
