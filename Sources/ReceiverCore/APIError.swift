import NIOHTTP1
import WebhookModel

/// An answer other than 202, with the body shape every failure of the
/// receiver uses: `{"error": "...", "detail": ...}`.
public struct APIError: Error, Sendable {
    public var status: HTTPResponseStatus
    public var message: String
    /// Either a list of field issues (422) or a plain explanation.
    public var detail: Detail?
    /// Extra response headers (`Retry-After`, `Allow`).
    public var headers: [(String, String)]

    public enum Detail: Sendable {
        case text(String)
        case fields([FieldIssue])
    }

    public init(_ status: HTTPResponseStatus, _ message: String, detail: Detail? = nil, headers: [(String, String)] = []) {
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

    /// A log-safe summary: field paths and our own messages, escaped, never the body.
    var logText: String {
        switch detail {
        case .fields(let issues)?: return JSONWriter.quoted(issues.map(\.description).joined(separator: "; "))
        case .text(let text)?: return JSONWriter.quoted(text)
        case nil: return JSONWriter.quoted(message)
        }
    }
}
