import NIOHTTP1
import WebhookModel

/// Where a request goes, from its method and path alone: one table for the
/// receiver's few routes, so the handler does not decide it and the table is
/// tested on values.
enum WebhookRoute: Equatable {
    /// `POST /webhook`.
    case webhook
    /// `GET`/`HEAD /healthz`.
    case health
    /// `GET`/`HEAD /metrics` (on the public port unless metrics have a port of their own).
    case metrics
    /// A known path with another method: 405 naming the methods it takes.
    case methodNotAllowed(allow: String)
    /// 404, with what to do instead.
    case notFound(detail: String)

    static func of(_ head: HTTP1RequestHead, metricsOnOwnPort: Bool) -> WebhookRoute {
        switch (head.path, head.method) {
        case ("/webhook", .post): return .webhook
        case ("/webhook", _): return .methodNotAllowed(allow: "POST")
        case ("/healthz", .get), ("/healthz", .head): return .health
        case ("/metrics", _) where metricsOnOwnPort: return .notFound(detail: "metrics are served on their own port")
        case ("/metrics", .get), ("/metrics", .head): return .metrics
        case ("/healthz", _), ("/metrics", _): return .methodNotAllowed(allow: "GET, HEAD")
        default: return .notFound(detail: "POST webhooks to /webhook")
        }
    }

    /// The answer of a route that is an error.
    var error: APIError? {
        switch self {
        case .methodNotAllowed(let allow):
            let detail = allow == "POST" ? "use POST" : "use GET or HEAD"
            return APIError(.methodNotAllowed, "method not allowed", detail: .text(detail), headers: [("Allow", allow)])
        case .notFound(let detail):
            return APIError(.notFound, "not found", detail: .text(detail))
        case .webhook, .health, .metrics:
            return nil
        }
    }
}

/// `/healthz`'s bodies: the status and, when not healthy, why.
enum HealthAnswer {
    static let draining: StaticString = #"{"status":"draining"}"#

    /// `{"status":"ok","output":"<mode>"}`: the same for the life of the process, so made once.
    static func healthy(output mode: String) -> [UInt8] {
        var body: [UInt8] = Array(#"{"status":"ok","output":"#.utf8)
        JSONWriter.appendQuoted(mode, to: &body)
        body.append(UInt8(ascii: "}"))
        return body
    }

    /// `{"status":"<status>","detail":"<detail>"}`, for a sink in trouble.
    static func trouble(status: String, detail: String) -> [UInt8] {
        var body: [UInt8] = Array(#"{"status":"#.utf8)
        JSONWriter.appendQuoted(status, to: &body)
        body += Array(#","detail":"#.utf8)
        JSONWriter.appendQuoted(detail, to: &body)
        body.append(UInt8(ascii: "}"))
        return body
    }
}
