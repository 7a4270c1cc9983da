import ServiceLifecycle

/// A service whose only job is to mark the receiver as draining the moment
/// graceful shutdown begins. It is the last service of the group, so it is
/// told first, before the HTTP server stops and before the writer drains.
struct DrainTrigger: Service {
    let state: ReceiverState

    func run() async throws {
        try? await gracefulShutdown()
        state.beginDraining()
    }
}
