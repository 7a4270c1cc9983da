import Foundation

/// Builds the libpq connection string from the settings README.md's
/// Configuration lists:
/// `DATABASE_URL` wins; otherwise `DB_HOST`, `DB_PORT`, `DB_USER`, `DB_NAME`,
/// `DB_PASSWORD` with their defaults, each value quoted for key=value syntax.
public enum ConnectionString {
    /// The variables read when `DATABASE_URL` is unset: each one's libpq
    /// keyword and its default (nil: left to libpq).
    public static let variables: [(variable: String, key: String, fallback: String?)] = [
        ("DB_HOST", "host", "localhost"), ("DB_PORT", "port", "5432"), ("DB_USER", "user", "postgres"),
        ("DB_NAME", "dbname", "meetperry"), ("DB_PASSWORD", "password", nil),
    ]

    public static func resolve(environment: [String: String]) -> String {
        if let url = environment["DATABASE_URL"], !url.isEmpty { return url }
        func value(_ name: String, _ fallback: String?) -> String? {
            if let v = environment[name], !v.isEmpty { return v }
            return fallback
        }
        var parts: [String] = []
        func add(_ key: String, _ v: String?) {
            guard let v else { return }
            let escaped = v.replacingAll("\\", with: "\\\\").replacingAll("'", with: "\\'")
            parts.append("\(key)='\(escaped)'")
        }
        for (variable, key, fallback) in variables { add(key, value(variable, fallback)) }
        add("application_name", value("PGAPPNAME", nil))
        return parts.joined(separator: " ")
    }

    /// The connection string with any password hidden, for log lines.
    public static func redacted(_ conninfo: String) -> String {
        var out = conninfo
        // URI form: postgresql://user:secret@host/db
        if let scheme = out.range(of: "://"), let at = out[scheme.upperBound...].firstIndex(of: "@") {
            let userInfo = out[scheme.upperBound..<at]
            if let colon = userInfo.firstIndex(of: ":") {
                out.replaceSubrange(out.index(after: colon)..<at, with: "***")
            }
        }
        // key=value form
        if let range = out.range(of: "password=") {
            var end = range.upperBound
            if end < out.endIndex, out[end] == "'" {
                end = out.index(after: end)
                while end < out.endIndex, out[end] != "'" {
                    if out[end] == "\\" { end = out.index(after: end) }
                    if end < out.endIndex { end = out.index(after: end) }
                }
                if end < out.endIndex { end = out.index(after: end) }
            } else {
                while end < out.endIndex, out[end] != " " { end = out.index(after: end) }
            }
            out.replaceSubrange(range.upperBound..<end, with: "***")
        }
        return out
    }
}

extension String {
    func replacingAll(_ target: String, with replacement: String) -> String {
        split(separator: target, omittingEmptySubsequences: false).joined(separator: replacement)
    }
}
