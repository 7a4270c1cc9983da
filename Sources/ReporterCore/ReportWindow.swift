import WebhookModel

/// The period a report covers: (start, end], start exclusive, end inclusive,
/// judged as of `end` (README.md, The reporter).
public struct ReportWindow: Sendable, Hashable, CustomStringConvertible {
    public var start: Timestamp
    public var end: Timestamp

    public init(start: Timestamp, end: Timestamp) {
        self.start = start
        self.end = end
    }

    /// Whether `t` lies in (start, end].
    public func contains(_ t: Timestamp) -> Bool { t > start && t <= end }

    public var description: String { "(\(start.canonical), \(end.canonical)]" }
}
