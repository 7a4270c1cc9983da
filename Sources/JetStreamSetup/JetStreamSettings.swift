import LibNATS

/// meetperry's JetStream contract, shared by the receiver (which publishes)
/// and the applier (which consumes): the servers, the stream and its
/// subject, the appliers' durable consumer, and how the stream is made when
/// it is missing (file storage, `replicas`, a two-minute duplicate window,
/// kept `maxAgeHours`).
public struct JetStreamSettings: Sendable, Equatable {
    /// Why a setting cannot be used; names the variable.
    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    /// `nats://host:port` URLs of any of the cluster's servers.
    public var servers: [String]
    public var stream = "MEETPERRY"
    public var subject = "meetperry.webhooks"
    public var consumer = "appliers"
    /// When the consumer is made: a message fetched and not acknowledged
    /// this long (its applier died, or is stuck on an unreachable database)
    /// is delivered again, to any applier.
    public var ackWaitSeconds = 30
    public var replicas = 1
    public var maxAgeHours = 168
    /// `NATS_ALLOW_UNSAFE_SERVER`: use servers older than
    /// `ServerCheck.minimumVersion` anyway (logged, and said on `/healthz`).
    public var allowUnsafeServer = false
    /// A message id seen again within this window is stored once.
    public static let duplicateWindowSeconds: Int64 = 120

    public init(servers: [String]) {
        self.servers = servers
    }

    /// The stream as meetperry makes it.
    public var streamSettings: StreamSettings {
        var settings = StreamSettings(name: stream, subjects: [subject])
        settings.fileStorage = true
        settings.replicas = replicas
        settings.duplicateWindowNanoseconds = Self.duplicateWindowSeconds * 1_000_000_000
        settings.maxAgeNanoseconds = Int64(maxAgeHours) * 3_600 * 1_000_000_000
        return settings
    }

    /// `NATS_URL`: comma-separated servers, each `nats://host:port` (or `host:port`).
    public static func servers(from text: String, variable: String = "NATS_URL") throws(Invalid) -> [String] {
        let servers = text.split(separator: ",").map { String($0.drop(while: \.isWhitespace).reversed().drop(while: \.isWhitespace).reversed()) }
            .filter { !$0.isEmpty }
        guard !servers.isEmpty else { throw Invalid(description: "\(variable) holds no server") }
        return try servers.map { (server) throws(Invalid) -> String in
            let url = server.contains("://") ? server : "nats://" + server
            guard url.hasPrefix("nats://") || url.hasPrefix("tls://"),
                  let hostPort = url.split(separator: "/", omittingEmptySubsequences: true).last,
                  let colon = hostPort.lastIndex(of: ":"), let port = Int(hostPort[hostPort.index(after: colon)...]),
                  (1...65535).contains(port), colon > hostPort.startIndex,
                  url.allSatisfy({ !$0.isWhitespace && $0 != "\"" })
            else {
                throw Invalid(description: "\(variable)=\(text.debugDescription) is not a comma-separated list of nats://host:port")
            }
            return url
        }
    }

    /// A stream or consumer name: letters, digits, `-` and `_`.
    public static func checkName(_ name: String, variable: String) throws(Invalid) {
        guard !name.isEmpty, name.count <= 64,
              name.unicodeScalars.allSatisfy({ $0.isASCII && ($0.properties.isAlphabetic || ("0"..."9").contains($0) || $0 == "-" || $0 == "_") })
        else { throw Invalid(description: "\(variable)=\(name.debugDescription) is not a name of letters, digits, - and _") }
    }

    /// A subject to publish to: dot-separated tokens, no wildcards or spaces.
    public static func checkSubject(_ subject: String, variable: String) throws(Invalid) {
        let tokens = subject.split(separator: ".", omittingEmptySubsequences: false)
        guard !subject.isEmpty, subject.count <= 255,
              tokens.allSatisfy({ !$0.isEmpty && !$0.contains("*") && !$0.contains(">") && $0.allSatisfy { $0.isASCII && !$0.isWhitespace } })
        else { throw Invalid(description: "\(variable)=\(subject.debugDescription) is not a subject (dot-separated tokens, no wildcards or spaces)") }
    }
}
