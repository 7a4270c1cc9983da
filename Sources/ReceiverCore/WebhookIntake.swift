import Foundation
import TaskModel
import WebhookModel

/// `POST /webhook` up to the hand-off: checks, in order, the media type
/// (415), size (413), signature (401) and fields (422 / 400), and makes the
/// canonical line. No I/O and no framework, so the channel handler stays a
/// thin shell around it.
///
/// Draining refuses nothing here: a webhook that reaches a connection still
/// open while the receiver drains is taken (the output outlives the HTTP
/// server), answered, and its connection closed; `/healthz` says `draining`.
struct WebhookIntake: Sendable {
    let configuration: ReceiverConfiguration
    let verifier: SignatureVerifier?

    /// The headers the checks read.
    struct Headers {
        var contentType: String?
        var webhookId: String?
        var webhookTimestamp: String?
        var webhookSignature: String?
    }

    var retryAfter: [(String, String)] { [("Retry-After", String(configuration.retryAfterSeconds))] }

    /// A webhook that passed every check.
    struct Accepted {
        /// The canonical line, ending in `\n`.
        var line: [UInt8]
        /// The event's identity, when the sink is JetStream (its `Nats-Msg-Id`).
        var messageId: String?
    }

    /// The canonical line to write, or why the webhook is refused. `tooLarge`:
    /// the body passed `MAX_BODY_BYTES` (it was not kept).
    func check(_ headers: Headers, body: [UInt8], tooLarge: Bool, now: Timestamp = .now()) -> Result<Accepted, APIError> {
        guard Self.isJSON(headers.contentType) else {
            return .failure(APIError(.unsupportedMediaType, "unsupported media type", detail: .text("Content-Type must be application/json")))
        }
        if tooLarge {
            return .failure(APIError(.payloadTooLarge, "body too large", detail: .text("the limit is \(configuration.maxBodyBytes) bytes")))
        }
        let deliveryId = headers.webhookId
        if let verifier, let failure = verifier.check(
            id: deliveryId, timestamp: headers.webhookTimestamp, signatures: headers.webhookSignature,
            body: body, now: now.microsecondsSinceEpoch / 1_000_000
        ) {
            return .failure(APIError(.unauthorized, "invalid signature", detail: .text(failure.description)))
        }
        if let deliveryId, deliveryId.utf8.count > Webhook.maxIdentifierBytes {
            return .failure(APIError(.unprocessableEntity, "invalid webhook", detail: .fields([
                FieldIssue(loc: ["header", "webhook-id"], msg: "longer than \(Webhook.maxIdentifierBytes) bytes"),
            ])))
        }
        var record: StreamRecord
        do {
            record = try Webhook.decode(body)
        } catch {
            switch error {
            case .malformedJSON(let syntax):
                return .failure(APIError(.unprocessableEntity, "malformed JSON", detail: .fields([FieldIssue(loc: ["body"], msg: syntax.description)])))
            case .invalidFields(let issues):
                return .failure(APIError(.unprocessableEntity, "invalid webhook", detail: .fields(issues)))
            case .unknownEvent:
                return .failure(APIError(.badRequest, "unknown event", detail: .text(error.description)))
            }
        }
        // What the sender put in receivedAt / deliveryId is not ours to forward.
        record.receivedAt = now
        record.deliveryId = deliveryId.flatMap { $0.isEmpty ? nil : $0 }
        let messageId = configuration.jetStream == nil ? nil : EventIdentity.uuid(of: record.webhook)
        return .success(Accepted(line: record.canonicalLine(), messageId: messageId))
    }

    /// The answer to a line the writer is done with.
    func answer(_ outcome: LineOutcome) -> APIError? {
        switch outcome {
        case .written:
            return nil
        case .overloaded:
            return APIError(.serviceUnavailable, "overloaded", detail: .text("the stream reader is not keeping up or is stalled; retry later"), headers: retryAfter)
        case .unavailable(let reason):
            return APIError(.serviceUnavailable, "unavailable", detail: .text(reason), headers: retryAfter)
        }
    }

    /// `application/json`, with any parameters (charset); case-insensitive.
    /// Compared byte-wise: this runs on every request.
    static func isJSON(_ contentType: String?) -> Bool {
        guard let contentType else { return false }
        let expected = "application/json".utf8
        var utf8 = contentType.utf8[...]
        // Media type, optional whitespace, then nothing or ';' and parameters.
        while let first = utf8.first, first == 0x20 || first == 0x09 { utf8 = utf8.dropFirst() }
        guard utf8.count >= expected.count else { return false }
        for byte in expected {
            let b = utf8.first!
            let lower = (b >= 0x41 && b <= 0x5A) ? b | 0x20 : b
            guard lower == byte else { return false }
            utf8 = utf8.dropFirst()
        }
        while let first = utf8.first, first == 0x20 || first == 0x09 { utf8 = utf8.dropFirst() }
        return utf8.isEmpty || utf8.first == UInt8(ascii: ";")
    }
}
