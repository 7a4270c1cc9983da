import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How the applier's workers learn they were asked to stop: the reading
/// loop stops reading, and a committer stuck on an unreachable database
/// gives up after the shutdown timeout (or at once, asked twice). Passed to
/// each worker. `StopToken.onSignals()` counts SIGTERM and SIGINT; a test
/// makes its own and calls `request()`.
public final class StopToken: Sendable {
    private let asked = Atomic<Int>(0)
    private let countsSignals: Bool

    public init() {
        countsSignals = false
    }

    private init(countingSignals: Void) {
        countsSignals = true
    }

    /// How many times a stop was asked for.
    public var requests: Int {
        asked.load(ordering: .relaxed) + (countsSignals ? receivedSignals.load(ordering: .relaxed) : 0)
    }

    public func request() { asked.add(1, ordering: .relaxed) }

    /// A token that SIGTERM and SIGINT ask, installed without SA_RESTART so a
    /// blocked read or poll returns EINTR and the loop sees the request.
    public static func onSignals() -> StopToken {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in receivedSignals.add(1, ordering: .relaxed) }
        sigemptyset(&action.sa_mask)
        action.sa_flags = 0
        sigaction(SIGTERM, &action, nil)
        sigaction(SIGINT, &action, nil)
        // A parent may have started us with these blocked; they must get through.
        var unblock = sigset_t()
        sigemptyset(&unblock)
        sigaddset(&unblock, SIGTERM)
        sigaddset(&unblock, SIGINT)
        pthread_sigmask(SIG_UNBLOCK, &unblock, nil)
        return StopToken(countingSignals: ())
    }
}

/// The only state a signal handler may touch: a lock-free counter.
private let receivedSignals = Atomic<Int>(0)
