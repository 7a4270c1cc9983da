import Hummingbird
import NIOCore
import WebhookModel

/// An error answered as `{"error": "...", "detail": ...}`, the body shape
/// every failure of the receiver uses.
public struct APIError: HTTPResponseError {
    public var status: HTTPResponse.Status
    public var message: String
    /// Either a list of field issues (422) or a plain explanation.
    public var detail: Detail?
    public var headers: HTTPFields

    public enum Detail: Sendable {
        case text(String)
        case fields([FieldIssue])
    }

    public init(_ status: HTTPResponse.Status, _ message: String, detail: Detail? = nil, headers: HTTPFields = [:]) {
        self.status = status
        self.message = message
        self.detail = detail
        self.headers = headers
    }

    public var body: [UInt8] {
        var out: [UInt8] = []
        out.append(contentsOf: "{\"error\":".utf8)
        JSONWriter.appendQuoted(message, to: &out)
        switch detail {
        case nil:
            break
        case .text(let text)?:
            out.append(contentsOf: ",\"detail\":".utf8)
            JSONWriter.appendQuoted(text, to: &out)
        case .fields(let issues)?:
            out.append(contentsOf: ",\"detail\":[".utf8)
            for (i, issue) in issues.enumerated() {
                if i > 0 { out.append(UInt8(ascii: ",")) }
                out.append(contentsOf: "{\"loc\":[".utf8)
                for (j, part) in issue.loc.enumerated() {
                    if j > 0 { out.append(UInt8(ascii: ",")) }
                    JSONWriter.appendQuoted(part, to: &out)
                }
                out.append(contentsOf: "],\"msg\":".utf8)
                JSONWriter.appendQuoted(issue.msg, to: &out)
                out.append(UInt8(ascii: "}"))
            }
            out.append(UInt8(ascii: "]"))
        }
        out.append(UInt8(ascii: "}"))
        return out
    }

    public func response(from request: Request, context: some RequestContext) throws -> Response {
        var headers = self.headers
        headers[.contentType] = "application/json"
        return Response(status: status, headers: headers, body: .init(byteBuffer: ByteBuffer(bytes: body)))
    }
}

/// Turns Hummingbird's own errors (unknown path, oversized body) into the
/// same JSON shape as ours.
struct JSONErrorMiddleware<Context: RequestContext>: RouterMiddleware {
    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            throw error
        } catch let error as HTTPError {
            let message = error.body ?? error.status.reasonPhrase.lowercased()
            throw APIError(error.status, message, headers: error.headers)
        } catch is NIOTooManyBytesError {
            throw APIError(.contentTooLarge, "body too large")
        }
    }
}
