import Foundation
import JetStreamSetup
import LibNATS
import Logging
import NIOCore
import ServiceLifecycle
import Synchronization

/// The receiver's sink in JetStream mode: each accepted line is published
/// to the stream's subject with `Nats-Msg-Id` set to its event's identity
/// (so a sender's retry within the duplicate window is stored once), and
/// answered once the stream has acknowledged it — stored on a quorum of
/// its replicas: 202. No acknowledgement within the timeout, no server
/// reachable, the stream not there yet or refusing it: 503 + `Retry-After`.
/// There is no 202 without an acknowledgement. After a publish the stream
/// did not store, new webhooks get 503 at once and `/healthz` says so, until
/// the stream answers with a leader again or a publish is stored.
///
/// Publishing never waits: many are in flight at once, and acknowledgements
/// (which come on a libnats thread) are answered on each event loop in
/// batches. While no server is reachable, webhooks are refused at once and
/// `/healthz` says so. A background thread makes sure the stream exists
/// whenever the receiver is connected and it is not known to.
///
/// Run it as a `Service`: once the receiver's lifecycle closes (the HTTP
/// server has answered everything in flight) it waits for outstanding
/// acknowledgements and closes the connection.
public final class JetStreamPublisher: LineSink, Service, Sendable {
    struct Ticket {
        let loop: any EventLoop
        let completion: @Sendable (LineOutcome) -> Void
        let published: UInt64
    }

    struct State {
        var nextToken: UInt64 = 1
        var waiting: [UInt64: Ticket] = [:]
        var streamReady = false
        var draining = false
        /// Set once for good: the cluster is one this receiver will not use.
        var refusal: JetStreamRefusal?
        /// Why the last publish was not stored, until one is (or the stream
        /// answers again): the stream cannot take a write now.
        var writesFailing: String?
        /// The run waiting, while draining, for the last acknowledgement.
        var drainWaiter: CheckedContinuation<Void, Never>?

        /// The publish `token` is answered: its ticket, and the drain waiter to resume when it was the last.
        mutating func answered(_ token: UInt64) -> (Ticket?, CheckedContinuation<Void, Never>?) {
            let ticket = waiting.removeValue(forKey: token)
            guard waiting.isEmpty, let waiter = drainWaiter else { return (ticket, nil) }
            drainWaiter = nil
            return (ticket, waiter)
        }
    }

    /// The state under its lock, shared with the acknowledgement callback.
    final class Shared: Sendable {
        let state = Mutex(State())
        func withLock<R>(_ body: (inout State) -> R) -> R { state.withLock { body(&$0) } }
    }

    private let settings: JetStreamSettings
    private let ackTimeoutMilliseconds: Int64
    private let metrics: ReceiverMetrics?
    private let logger: Logger
    private let lifecycle: ReceiverLifecycle
    private let connection: NATSConnection
    private let jetStream: JetStream
    private let state = Shared()
    private let answers = LoopAnswers()
    /// Wakes the thread that makes sure of the stream: a reconnection, a
    /// publish not stored, or the drain.
    private let ensureWake = DispatchSemaphore(value: 0)

    /// Starts connecting (returns at once when no server answers yet).
    /// Throws only for settings libnats refuses.
    public init(settings: JetStreamSettings, ackTimeout: Duration, metrics: ReceiverMetrics? = nil, lifecycle: ReceiverLifecycle,
                logger: Logger) throws(NATSError) {
        self.settings = settings
        self.ackTimeoutMilliseconds = max(1, ackTimeout.components.seconds * 1000 + ackTimeout.components.attoseconds / 1_000_000_000_000_000)
        self.metrics = metrics
        self.lifecycle = lifecycle
        self.logger = logger
        let state = self.state
        let ensureWake = self.ensureWake
        // After a reconnection the servers are checked again (ensureStream) before the next publish.
        connection = try JetStreamSetup.connect(settings, clientName: "meetperry-receiver",
                                                whileDisconnected: "answering 503 until a server is back", logger: logger) {
            state.withLock { $0.streamReady = false }
            ensureWake.signal()
        }
        let answers = self.answers
        let metricsForAcks = metrics
        jetStream = try JetStream(connection: connection, maxPendingPublishes: 1 << 20) { token, result in
            let outcome: LineOutcome
            switch result {
            case .stored:
                outcome = .written
            case .failed(let error):
                outcome = .unavailable(error.isTimeout ? "the stream did not acknowledge the webhook in time" : "the stream did not store the webhook: \(error)")
            }
            let (ticket, drainWaiter, wasFailing) = state.withLock { (state: inout State) -> (Ticket?, CheckedContinuation<Void, Never>?, Bool) in
                let wasFailing = state.writesFailing != nil
                if case .unavailable(let why) = outcome { state.writesFailing = why } else { state.writesFailing = nil }
                let (ticket, drainWaiter) = state.answered(token)
                return (ticket, drainWaiter, wasFailing)
            }
            drainWaiter?.resume()
            switch (outcome, wasFailing) {
            case (.unavailable(let why), false):
                logger.warning("a publish was not stored; answering 503 until the stream stores again", metadata: ["why": "\(why)"])
                ensureWake.signal()
            case (.written, true):
                logger.notice("the stream stores webhooks again")
            default:
                break
            }
            guard let ticket else { return }
            if outcome == .written { metricsForAcks?.recordPublish(since: ticket.published) }
            answers.deliver(outcome, to: ticket.completion, on: ticket.loop)
        }
    }

    public var trouble: SinkTrouble? {
        if let refusal = state.withLock({ $0.refusal }) { return SinkTrouble(status: "refused", detail: refusal.description) }
        guard connection.isConnected else { return SinkTrouble(status: "unavailable", detail: "no NATS server reachable") }
        let (ready, failing) = state.withLock { ($0.streamReady, $0.writesFailing) }
        guard ready else {
            return SinkTrouble(status: "unavailable", detail: "the JetStream stream \(settings.stream) is not ready")
        }
        if let failing {
            return SinkTrouble(status: "unavailable", detail: "the JetStream stream \(settings.stream) is not storing webhooks: \(failing)")
        }
        return nil
    }

    public func submit(_ lines: [SubmittedLine], on eventLoop: any EventLoop) {
        let refusal = trouble.map { LineOutcome.unavailable($0.detail) }
        for line in lines {
            if let refusal {
                line.completion(refusal)
                continue
            }
            let now = DispatchTime.now().uptimeNanoseconds
            guard let token = state.withLock({ (state: inout State) -> UInt64? in
                guard !state.draining else { return nil }
                let token = state.nextToken
                state.nextToken += 1
                state.waiting[token] = Ticket(loop: eventLoop, completion: line.completion, published: now)
                return token
            }) else {
                line.completion(.unavailable("the receiver is shutting down"))
                continue
            }
            do {
                // The canonical line without its newline: a message is one event.
                try line.bytes.withUnsafeBytes { bytes in
                    try jetStream.publish(
                        subject: settings.subject, data: UnsafeRawBufferPointer(rebasing: bytes.dropLast()),
                        messageId: line.messageId ?? "", maxWaitMilliseconds: ackTimeoutMilliseconds, token: token)
                }
            } catch {
                let (ticket, drainWaiter) = state.withLock { $0.answered(token) }
                drainWaiter?.resume()
                guard ticket != nil else { continue }
                logger.warning("cannot publish a webhook", metadata: ["error": "\(error)"])
                line.completion(.unavailable("the stream cannot be reached: \(error)"))
            }
        }
    }

    // MARK: - The service

    /// What `/healthz` says of the output when all is well.
    public var mode: String { settings.allowUnsafeServer ? "jetstream (server versions not enforced: NATS_ALLOW_UNSAFE_SERVER)" : "jetstream" }

    /// Ends with `JetStreamRefusal` when the cluster is one the receiver
    /// will not use (the group then shuts down and the receiver exits 69).
    public func run() async throws {
        let refusals = AsyncStream<JetStreamRefusal>.makeStream()
        startEnsuring { refusal in
            refusals.continuation.yield(refusal)
            refusals.continuation.finish()
        }
        // Until the cluster is refused, or the lifecycle closes (not at graceful shutdown
        // itself: connections still open may be answered until the HTTP server ends).
        lifecycle.when(.closing) { refusals.continuation.finish() }
        let refusal = await withTaskCancellationHandler {
            var iterator = refusals.stream.makeAsyncIterator()
            return await iterator.next()
        } onCancel: {
            refusals.continuation.finish()
        }
        state.withLock { $0.draining = true }
        ensureWake.signal()
        // The HTTP server has answered what was in flight; what is still
        // waiting is answered by its acknowledgement or its timeout.
        await waitForLastAcknowledgement(atMost: .milliseconds(ackTimeoutMilliseconds + 1000))
        try? connection.flush(timeoutMilliseconds: 1000)
        connection.close()
        logger.info("JetStream publisher stopped")
        if let refusal { throw refusal }
        // At its turn in the group's graceful shutdown, not before: to a
        // `ServiceGroup`, a service that ends before it is told to has failed.
        try? await gracefulShutdown()
    }

    /// Returns once no publish waits for its acknowledgement (the last one
    /// resumes it), or after `limit`: libnats answers each by its own timeout,
    /// so the limit only bounds a shutdown that would otherwise hang.
    private func waitForLastAcknowledgement(atMost limit: Duration) async {
        let state = self.state
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let none = state.withLock { (state: inout State) -> Bool in
                guard !state.waiting.isEmpty else { return true }
                state.drainWaiter = continuation
                return false
            }
            if none { return continuation.resume() }
            Task {
                try? await Task.sleep(for: limit)
                let waiter = state.withLock { (state: inout State) -> CheckedContinuation<Void, Never>? in
                    defer { state.drainWaiter = nil }
                    return state.drainWaiter
                }
                waiter?.resume()
            }
        }
    }

    /// Makes sure the stream exists whenever connected and it is not known to
    /// (at start, and after a failure), on a thread of its own: the requests block.
    private func startEnsuring(onRefusal: @escaping @Sendable (JetStreamRefusal) -> Void) {
        let thread = Thread { [self] in
            var failures = 0
            while !state.withLock({ $0.draining }) {
                if connection.isConnected && !state.withLock({ $0.streamReady }) {
                    do {
                        let info = try JetStreamSetup.ensureStream(jetStream, settings, logger: logger)
                        state.withLock { $0.streamReady = true }
                        logger.notice("publishing to JetStream", metadata: [
                            "stream": "\(settings.stream)", "subject": "\(settings.subject)", "replicas": "\(info.settings.replicas)",
                        ])
                        failures = 0
                    } catch let refusal as JetStreamRefusal {
                        state.withLock { $0.refusal = refusal }
                        onRefusal(refusal)
                        return
                    } catch {
                        failures += 1
                        if failures == 1 || failures % 20 == 0 {
                            logger.warning("the JetStream stream is not ready; answering 503", metadata: ["error": "\(error)"])
                        }
                    }
                }
                // The stream stopped taking writes (its leader gone, no quorum): healthy again
                // once it answers with a leader, or once a publish is stored.
                if connection.isConnected && state.withLock({ $0.streamReady && $0.writesFailing != nil }),
                   let info = try? jetStream.streamInfo(settings.stream), info.leader != nil || info.settings.replicas == 1 {
                    state.withLock { $0.writesFailing = nil }
                    logger.notice("the stream answers with a leader again: accepting webhooks")
                }
                // Nothing to do while connected to a stream that stores: sleep until
                // woken (a reconnection, a publish not stored, the drain). Otherwise
                // try again in a quarter of a second.
                let settled = connection.isConnected && state.withLock { $0.streamReady && $0.writesFailing == nil && !$0.draining }
                _ = ensureWake.wait(timeout: settled ? .distantFuture : .now() + .milliseconds(250))
            }
        }
        thread.name = "jetstream-setup"
        thread.start()
    }
}
