import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore
import WebhookModel

/// `POST /webhook`: checks, in order, the media type (415), size (413),
/// signature (401) and fields (422 / 400), then hands the canonical line to
/// the `StreamWriter` and answers 202 only once it is written.
struct WebhookController<Context: RequestContext>: Sendable {
    let configuration: ReceiverConfiguration
    let writer: StreamWriter
    let state: ReceiverState
    let verifier: SignatureVerifier?

    func addRoutes(to router: Router<Context>) {
        router.post("/webhook", use: receive)
        for method in [HTTPRequest.Method.get, .head, .put, .patch, .delete, .options] {
            router.on("/webhook", method: method) { _, _ -> Response in
                throw APIError(.methodNotAllowed, "method not allowed", detail: .text("use POST"), headers: [.allow: "POST"])
            }
        }
        router.get("/healthz") { _, _ -> Response in
            if state.isDraining {
                return jsonResponse(.serviceUnavailable, #"{"status":"draining"}"#)
            }
            if writer.isStalled {
                return jsonResponse(.serviceUnavailable, #"{"status":"stalled","detail":"the stream reader is taking nothing"}"#)
            }
            return jsonResponse(.ok, #"{"status":"ok"}"#)
        }
    }

    private var retryAfter: HTTPFields { [.retryAfter: String(configuration.retryAfterSeconds)] }

    @Sendable func receive(_ request: Request, context: Context) async throws -> Response {
        do {
            let response = try await accept(request, context: context)
            context.logger.debug("webhook accepted")
            return response
        } catch let error as APIError {
            context.logger.info("webhook refused", metadata: ["status": "\(error.status.code)", "reason": "\(Self.logText(error))"])
            throw error
        }
    }

    private func accept(_ request: Request, context: Context) async throws -> Response {
        if state.isDraining {
            throw APIError(.serviceUnavailable, "shutting down", detail: .text("the receiver is draining; retry later"), headers: retryAfter)
        }
        guard Self.isJSON(request.headers[.contentType]) else {
            throw APIError(.unsupportedMediaType, "unsupported media type", detail: .text("Content-Type must be application/json"))
        }
        if let length = request.headers[.contentLength].flatMap({ Int($0) }), length > configuration.maxBodyBytes {
            throw APIError(.contentTooLarge, "body too large", detail: .text("the limit is \(configuration.maxBodyBytes) bytes"))
        }
        let buffer: ByteBuffer
        do {
            buffer = try await request.body.collect(upTo: configuration.maxBodyBytes)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "body too large", detail: .text("the limit is \(configuration.maxBodyBytes) bytes"))
        }
        let body = Array(buffer.readableBytesView)

        let deliveryId = request.headers[HTTPField.Name.webhookId]
        if let verifier {
            if let failure = verifier.check(
                    id: deliveryId,
                    timestamp: request.headers[.webhookTimestamp],
                    signatures: request.headers[.webhookSignature],
                    body: body,
                now: Int64(Date().timeIntervalSince1970)
            ) {
                throw APIError(.unauthorized, "invalid signature", detail: .text(failure.description))
            }
        }
        if let deliveryId, deliveryId.utf8.count > Webhook.maxIdentifierBytes {
            throw APIError(.unprocessableContent, "invalid webhook", detail: .fields([
                FieldIssue(loc: ["header", "webhook-id"], msg: "longer than \(Webhook.maxIdentifierBytes) bytes"),
            ]))
        }

        var record: StreamRecord
        do {
            record = try Webhook.decode(body)
        } catch {
            switch error {
            case .malformedJSON(let syntax):
                throw APIError(.unprocessableContent, "malformed JSON", detail: .fields([FieldIssue(loc: ["body"], msg: syntax.description)]))
            case .invalidFields(let issues):
                throw APIError(.unprocessableContent, "invalid webhook", detail: .fields(issues))
            case .unknownEvent:
                throw APIError(.badRequest, "unknown event", detail: .text(error.description))
            }
        }
        // What the sender put in receivedAt / deliveryId is not ours to forward.
        record.receivedAt = Timestamp.now()
        record.deliveryId = deliveryId.flatMap { $0.isEmpty ? nil : $0 }

        switch await writer.submit(record.canonicalLine()) {
        case .written:
            return jsonResponse(.accepted, #"{"status":"accepted"}"#)
        case .overloaded:
            throw APIError(.serviceUnavailable, "overloaded", detail: .text("the stream reader is not keeping up or is stalled; retry later"), headers: retryAfter)
        case .unavailable(let reason):
            throw APIError(.serviceUnavailable, "unavailable", detail: .text(reason), headers: retryAfter)
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

    /// A log-safe summary: field paths and our own messages, escaped, never the body.
    static func logText(_ error: APIError) -> String {
        switch error.detail {
        case .fields(let issues)?: return JSONWriter.quoted(issues.map(\.description).joined(separator: "; "))
        case .text(let text)?: return JSONWriter.quoted(text)
        case nil: return JSONWriter.quoted(error.message)
        }
    }
}

func jsonResponse(_ status: HTTPResponse.Status, _ body: StaticString) -> Response {
    Response(
        status: status,
        headers: [.contentType: "application/json"],
        body: .init(byteBuffer: ByteBuffer(staticString: body))
    )
}

extension HTTPField.Name {
    static let webhookId = Self("webhook-id")!
    static let webhookTimestamp = Self("webhook-timestamp")!
    static let webhookSignature = Self("webhook-signature")!
}
