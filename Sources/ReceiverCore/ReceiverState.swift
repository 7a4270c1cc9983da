import Synchronization

/// Whether the receiver is still accepting webhooks. It flips to draining once,
/// when shutdown begins, so `/healthz` and new webhooks get 503 while the
/// requests already in flight finish.
public final class ReceiverState: Sendable {
    private let drainingFlag = Atomic<Bool>(false)

    public init() {}

    public var isDraining: Bool { drainingFlag.load(ordering: .acquiring) }

    public func beginDraining() { drainingFlag.store(true, ordering: .releasing) }
}
