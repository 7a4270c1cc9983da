import Foundation
import JetStreamSetup
import LibNATS
import Logging
import Synchronization

/// The applier's input in JetStream mode: messages fetched from the durable
/// pull consumer that every applier shares, handed out one at a time, each
/// with a `Delivery` that acknowledges it once the batch holding its event
/// has committed (or terminates it once it is rejected). A message not
/// acknowledged — the applier killed, the database away past the ack wait —
/// is delivered again, to this applier or another; the rules make a
/// redelivered event a duplicate, so nothing is lost and no effect repeats.
public final class JetStreamInput: ApplierInput {
    private let settings: JetStreamSettings
    private let batchSize: Int
    /// A fetch returns at the latest this long after it began (the batch latency bound).
    private let maxWaitMilliseconds: Int64
    private let logger: Logger
    private let connection: NATSConnection
    private let jetStream: JetStream
    private var subscription: PullSubscription?
    private var fetched: [JetStreamMessage] = []
    private var taken = 0
    private var failures = 0
    /// Set by a reconnection (on a libnats thread): subscribe again, checking the servers first.
    private final class Reconnected: Sendable { let pending = Atomic<Bool>(false) }
    private let reconnected = Reconnected()

    /// Connects to the cluster (in the background when no server answers yet).
    public init(settings: JetStreamSettings, batchSize: Int, maxWaitMilliseconds: Int, logger: Logger) throws(NATSError) {
        self.settings = settings
        self.batchSize = batchSize
        self.maxWaitMilliseconds = Int64(max(1, maxWaitMilliseconds))
        self.logger = logger
        // After a reconnection the servers are checked again (ensureStream) before the next fetch.
        let reconnected = self.reconnected
        connection = try JetStreamSetup.connect(settings, clientName: "meetperry-applier",
                                                whileDisconnected: "fetching again once a server is back", logger: logger) {
            reconnected.pending.store(true, ordering: .relaxed)
        }
        jetStream = try JetStream(connection: connection)
    }

    public func next(timeoutMilliseconds: Int32) throws -> InputItem {
        if let item = nextBuffered() { return item }
        // A fetch waits until its batch is full or its time is up: never longer than the batch latency bound.
        let wait = min(maxWaitMilliseconds, Int64(timeoutMilliseconds < 0 ? 500 : max(1, timeoutMilliseconds)))
        do {
            let subscription = try subscribed()
            fetched = try subscription.fetch(batch: batchSize, timeoutMilliseconds: wait)
            taken = 0
            if failures > 0 {
                logger.notice("fetching from JetStream again", metadata: ["after.failures": "\(failures)"])
                failures = 0
            }
        } catch let refusal as JetStreamRefusal {
            throw refusal
        } catch {
            failures += 1
            if failures == 1 || failures % 50 == 0 {
                logger.warning("cannot fetch from JetStream; retrying", metadata: ["error": "\(error)", "failures": "\(failures)"])
            }
            // A consumer or stream that went away is made again on the next try.
            if (error as? NATSError)?.isNotFound == true { subscription = nil }
            usleep(UInt32(min(wait, 250)) * 1000)
            return .timeout
        }
        return nextBuffered() ?? .timeout
    }

    public func nextBuffered() -> InputItem? {
        guard taken < fetched.count else { return nil }
        let message = fetched[taken]
        taken += 1
        if taken == fetched.count {
            fetched = []
            taken = 0
        }
        return .line(number: Int(message.streamSequence), bytes: LineBytes(message.data), delivery: JetStreamDelivery(message, logger: logger))
    }

    /// The subscription to the consumer, making sure the stream and the consumer exist first.
    private func subscribed() throws -> PullSubscription {
        if reconnected.pending.exchange(false, ordering: .relaxed) { subscription = nil }
        if let subscription { return subscription }
        guard connection.isConnected else {
            throw NATSError(status: 0, message: "no NATS server reachable")
        }
        let info = try JetStreamSetup.ensureStream(jetStream, settings, logger: logger)
        try JetStreamSetup.ensureConsumer(jetStream, settings, logger: logger)
        let made = try PullSubscription(jetStream: jetStream, stream: settings.stream, consumer: settings.consumer)
        logger.notice("reading from JetStream", metadata: [
            "stream": "\(settings.stream)", "consumer": "\(settings.consumer)", "replicas": "\(info.settings.replicas)",
            "messages": "\(info.messages)",
        ])
        subscription = made
        return made
    }

    /// Sends every acknowledgement still buffered, then closes the connection.
    public func close() {
        do {
            try connection.flush(timeoutMilliseconds: 2000)
        } catch {
            logger.warning("acknowledgements may not have reached the server (their messages will be delivered again)",
                           metadata: ["error": "\(error)"])
        }
        fetched = []
        subscription = nil
        connection.close()
    }
}

/// A fetched message, acknowledged once its event is committed, terminated
/// once it is rejected. An acknowledgement that fails only means the
/// message comes again: a duplicate.
final class JetStreamDelivery: Delivery {
    private let message: JetStreamMessage
    private let logger: Logger

    init(_ message: JetStreamMessage, logger: Logger) {
        self.message = message
        self.logger = logger
    }

    func committed() {
        do { try message.ack() } catch { logger.info("acknowledgement not sent; the message will come again", metadata: ["error": "\(error)"]) }
    }

    func rejected() {
        do { try message.term() } catch { logger.info("termination not sent; the message will come again", metadata: ["error": "\(error)"]) }
    }
}
