import ServiceLifecycle
import Synchronization

/// The receiver's one lifecycle, from which every part takes its phase:
/// accepting → draining → closing → stopped, never back. Graceful shutdown
/// begins the drain (`ShutdownSequence`); the HTTP server's end begins the
/// close (`HTTPServerStage`); the sinks' end is the stop. So the order that
/// keeps every 202 — nothing stops taking lines while a connection may still
/// be answered — is written here once, not implied by the order of services.
///
/// - `/healthz` answers 503 `draining` from `.draining` on (a balancer moves on);
/// - each connection drains when the server quiesces it (answered, then closed);
/// - `StreamWriter` and `JetStreamPublisher` take no new line from `.closing`
///   on: the writer writes and syncs what is queued, the publisher waits for
///   the acknowledgements still due.
public final class ReceiverLifecycle: Sendable {
    public enum Phase: Int, Sendable, Comparable {
        /// Taking webhooks.
        case accepting
        /// Shutdown began: the HTTP server quiesces; webhooks on connections still open are taken and answered.
        case draining
        /// The HTTP server has stopped, so nothing more comes in: the sinks finish what they hold.
        case closing
        /// Everything taken is written, or acknowledged.
        case stopped

        public static func < (lhs: Self, rhs: Self) -> Bool { lhs.rawValue < rhs.rawValue }
    }

    private struct State {
        var phase = Phase.accepting
        /// What runs when the lifecycle reaches a phase (at once for one already reached).
        var waiting: [(phase: Phase, action: @Sendable () -> Void)] = []
    }

    private let state = Mutex(State())

    public init() {}

    public var phase: Phase { state.withLock { $0.phase } }

    /// Moves on to `phase` (a phase already passed is left as it is), and runs what waited for it.
    public func advance(to phase: Phase) {
        let due = state.withLock { (state: inout State) -> [@Sendable () -> Void] in
            guard phase > state.phase else { return [] }
            state.phase = phase
            let due = state.waiting.filter { $0.phase <= phase }.map(\.action)
            state.waiting.removeAll { $0.phase <= phase }
            return due
        }
        due.forEach { $0() }
    }

    /// Runs `action` once the lifecycle reaches `phase` (now, when it has).
    public func when(_ phase: Phase, _ action: @escaping @Sendable () -> Void) {
        let now = state.withLock { (state: inout State) -> Bool in
            guard state.phase < phase else { return true }
            state.waiting.append((phase, action))
            return false
        }
        if now { action() }
    }
}

/// Begins the drain the moment graceful shutdown begins: the last service of
/// the group, so it is told first, before the HTTP server quiesces.
struct ShutdownSequence: Service {
    let lifecycle: ReceiverLifecycle

    func run() async throws {
        try? await gracefulShutdown()
        lifecycle.advance(to: .draining)
    }
}

/// The HTTP server as a stage of the lifecycle: when it ends (every
/// connection answered and closed, or it failed), the lifecycle closes and
/// the sinks finish what they hold.
struct HTTPServerStage: Service {
    let server: any Service
    let lifecycle: ReceiverLifecycle

    func run() async throws {
        defer { lifecycle.advance(to: .closing) }
        try await server.run()
    }
}
