import LibNATS

/// Why JetStream mode will not run against this cluster as it is: a server
/// older than the oldest release meetperry trusts with a 202, or a stream
/// with fewer replicas than this program was told to keep. Retrying does
/// not help; the message says what to change.
public struct JetStreamRefusal: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// The servers meetperry will take an acknowledgement from. Every server of
/// the cluster that answers (those in `NATS_URL` and the others they
/// announce) is read for its version before the stream is used; one below
/// `minimumVersion` refuses JetStream mode unless the operator allowed it
/// (`NATS_ALLOW_UNSAFE_SERVER`).
public enum ServerCheck {
    /// 2.10.20–2.10.22 could lose a whole stream after process crashes
    /// (fixed in 2.10.23); 2.11 and 2.12 fixed more of the clustering logic
    /// and 2.12.3 peer removal. Debian 12's 2.9.10 predates all of these.
    public static let minimumVersion = ServerVersion("2.12.3")!

    /// What the check found: each server that answered, with its version.
    public struct Outcome: Sendable {
        public var servers: [ServerAnnouncement]
        /// Servers below the minimum that the operator allowed.
        public var allowedBelowMinimum: [ServerAnnouncement]
    }

    /// Reads every reachable server's announcement (`settings.servers`, then
    /// the client URLs they advertise). Throws `JetStreamRefusal` for a server
    /// below the minimum (unless `settings.allowUnsafeServer`), and a
    /// transient `NATSError` when none answers.
    public static func check(_ settings: JetStreamSettings) throws -> Outcome {
        var queue = settings.servers
        var seen = Set<String>()
        var found: [ServerAnnouncement] = []
        var lastError: NATSError?
        while let url = queue.first {
            queue.removeFirst()
            guard let key = ServerAnnouncement.address(url), seen.insert(key).inserted else { continue }
            do {
                let announcement = try ServerAnnouncement.read(from: url)
                found.append(announcement)
                queue += announcement.connectURLs
            } catch {
                lastError = error
            }
        }
        guard !found.isEmpty else {
            throw lastError ?? NATSError(status: 0, message: "no NATS server answered")
        }
        let old = found.filter { $0.version < minimumVersion }
        if !old.isEmpty && !settings.allowUnsafeServer {
            throw JetStreamRefusal(description: refusal(old))
        }
        return Outcome(servers: found, allowedBelowMinimum: old)
    }

    static func refusal(_ old: [ServerAnnouncement]) -> String {
        let named = old.map { "\($0.url) (\($0.serverName.isEmpty ? "unnamed" : $0.serverName)) runs nats-server \($0.version)" }
        return "\(named.joined(separator: "; ")): JetStream mode needs nats-server \(minimumVersion) or later on every node. "
            + "Older releases can lose a stream or acknowledged messages after crashes (fixed in 2.10.23 to 2.12.3), "
            + "so a 202 from them is no promise. Install a current nats-server on each node (deploy/README.md, \"A current nats-server\"), "
            + "or set NATS_ALLOW_UNSAFE_SERVER=true (--nats-allow-unsafe-server) to accept the risk."
    }
}
