import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// How many times SIGTERM/SIGINT arrived. A signal handler can only reach
/// process-wide state, so this one counter is global; it is installed once
/// by the executable, read by the applier's loop.
public enum ShutdownSignal {
    private static let count = Atomic<Int>(0)

    /// Installs handlers for SIGTERM and SIGINT without SA_RESTART, so a
    /// blocked read or poll returns EINTR and the loop sees the request.
    public static func install() {
        var action = sigaction()
        action.__sigaction_handler.sa_handler = { _ in ShutdownSignal.count.add(1, ordering: .relaxed) }
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
    }

    public static var requests: Int { count.load(ordering: .relaxed) }

    /// For tests: pretend a signal arrived.
    public static func simulate() { count.add(1, ordering: .relaxed) }
}
