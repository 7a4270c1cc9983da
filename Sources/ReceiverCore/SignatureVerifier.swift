import Crypto
import Foundation

/// Checks Standard Webhooks signatures: `webhook-signature` carries one or more
/// space-separated `v1,<base64 HMAC-SHA256("id.timestamp.body")>`, and the
/// `webhook-timestamp` must be within `tolerance` of now. Comparison is
/// constant-time (swift-crypto's `safeCompare`).
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
        public var description: String { "WEBHOOK_SECRET must be 'whsec_' followed by base64 (Standard Webhooks format)" }
    }

    public static let defaultTolerance: Int64 = 300

    private let key: SymmetricKey
    private let tolerance: Int64

    /// - Parameter secret: `whsec_<base64>`; the prefix is optional.
    public init(secret: String, tolerance: Int64 = SignatureVerifier.defaultTolerance) throws {
        let encoded = secret.hasPrefix("whsec_") ? String(secret.dropFirst(6)) : secret
        guard let raw = Data(base64Encoded: encoded), !raw.isEmpty else { throw InvalidSecret() }
        self.key = SymmetricKey(data: raw)
        self.tolerance = tolerance
    }

    /// The `v1,<base64>` signature of a message, as a sender would write it.
    public func signature(id: String, timestamp: String, body: some DataProtocol) -> String {
        "v1," + Data(mac(id: id, timestamp: timestamp, body: body)).base64EncodedString()
    }

    private func mac(id: String, timestamp: String, body: some DataProtocol) -> HashedAuthenticationCode<SHA256> {
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
        let expected = mac(id: id, timestamp: timestamp, body: body)
        var matched = false
        for candidate in signatures.split(separator: " ", omittingEmptySubsequences: true) {
            guard candidate.hasPrefix("v1,"), let decoded = Data(base64Encoded: String(candidate.dropFirst(3))) else { continue }
            // Check every candidate so the time taken does not reveal which one matched.
            if expected == decoded { matched = true }
        }
        return matched ? nil : .noMatchingSignature
    }
}
