import LibNATS
import Logging

/// Makes sure meetperry's stream and the appliers' consumer exist: created
/// with `JetStreamSettings` when missing; one that exists with other
/// settings is used as it is, and the difference is logged (an operator may
/// have tuned it; meetperry never changes a stream it did not just make),
/// except fewer replicas than this program was told to keep, which is
/// refused: a 202 from it would not survive what the operator planned for.
/// Before any of it the cluster's servers are checked (`ServerCheck`).
public enum JetStreamSetup {
    /// A connection to the cluster (in the background when no server answers
    /// yet) whose events are logged; `whileDisconnected` says what that
    /// means for this program.
    /// `reconnected` runs (on a libnats thread) after each reconnection: the
    /// server may be another, or the same one restarted on another release,
    /// so the caller checks the servers again before it trusts the stream.
    public static func connect(_ settings: JetStreamSettings, clientName: String, whileDisconnected: String,
                               logger: Logger, reconnected: @escaping @Sendable () -> Void = {}) throws(NATSError) -> NATSConnection {
        try NATSConnection(.init(servers: settings.servers, name: clientName)) { event in
            switch event {
            case .connected(let url): logger.notice("connected to NATS", metadata: ["server": "\(url)"])
            case .reconnected(let url):
                logger.notice("reconnected to NATS", metadata: ["server": "\(url)"])
                reconnected()
            case .disconnected: logger.warning("disconnected from NATS: \(whileDisconnected)")
            case .closed: logger.info("NATS connection closed")
            }
        }
    }

    /// Checks the servers, then finds or makes the stream. Throws
    /// `JetStreamRefusal` for what retrying cannot fix, `NATSError` otherwise.
    @discardableResult
    public static func ensureStream(_ jetStream: JetStream, _ settings: JetStreamSettings, logger: Logger) throws -> StreamInfo {
        let checked = try ServerCheck.check(settings)
        for server in checked.allowedBelowMinimum {
            logger.warning("using a nats-server older than \(ServerCheck.minimumVersion) because NATS_ALLOW_UNSAFE_SERVER is set: a 202 may not survive a crash",
                           metadata: ["server": "\(server.url)", "version": "\(server.version)"])
        }
        let wanted = settings.streamSettings
        if let existing = try jetStream.streamInfo(settings.stream) {
            if existing.settings.replicas < settings.replicas {
                throw JetStreamRefusal(description: "the stream \(settings.stream) has \(existing.settings.replicas) replica(s), but NATS_REPLICAS=\(settings.replicas): "
                    + "an acknowledgement from it would not survive losing the nodes you planned for. Give it more replicas "
                    + "(nats stream edit \(settings.stream) --replicas \(settings.replicas)), or set NATS_REPLICAS=\(existing.settings.replicas) if that is what you meant")
            }
            if existing.settings != wanted {
                logger.notice("the stream exists with other settings; using it as it is", metadata: [
                    "stream": "\(settings.stream)", "has": "\(describe(existing.settings))", "would make": "\(describe(wanted))",
                ])
            }
            return existing
        }
        do {
            let made = try jetStream.addStream(wanted)
            logger.notice("stream created", metadata: ["stream": "\(settings.stream)", "settings": "\(describe(wanted))"])
            return made
        } catch {
            // Another receiver or applier may have made it a moment ago.
            if let existing = try jetStream.streamInfo(settings.stream) { return existing }
            throw error
        }
    }

    public static func ensureConsumer(_ jetStream: JetStream, _ settings: JetStreamSettings, logger: Logger) throws(NATSError) {
        var wanted = ConsumerSettings(durableName: settings.consumer, filterSubject: settings.subject)
        wanted.ackWaitNanoseconds = Int64(settings.ackWaitSeconds) * 1_000_000_000
        if let existing = try jetStream.consumerInfo(stream: settings.stream, consumer: settings.consumer) {
            if existing.settings.filterSubject != wanted.filterSubject || existing.settings.ackWaitNanoseconds != wanted.ackWaitNanoseconds {
                logger.notice("the consumer exists with other settings; using it as it is", metadata: [
                    "consumer": "\(settings.consumer)", "subject": "\(existing.settings.filterSubject)",
                    "ack_wait": "\(existing.settings.ackWaitNanoseconds / 1_000_000_000)s",
                ])
            }
            return
        }
        do {
            try jetStream.addConsumer(stream: settings.stream, wanted)
            logger.notice("consumer created", metadata: ["stream": "\(settings.stream)", "consumer": "\(settings.consumer)"])
        } catch {
            if try jetStream.consumerInfo(stream: settings.stream, consumer: settings.consumer) != nil { return }
            throw error
        }
    }

    static func describe(_ settings: StreamSettings) -> String {
        let age = settings.maxAgeNanoseconds == 0 ? "forever" : "\(settings.maxAgeNanoseconds / 3_600_000_000_000)h"
        return "subjects=\(settings.subjects.joined(separator: ",")) storage=\(settings.fileStorage ? "file" : "memory") "
            + "replicas=\(settings.replicas) duplicates=\(settings.duplicateWindowNanoseconds / 1_000_000_000)s max_age=\(age)"
    }
}
