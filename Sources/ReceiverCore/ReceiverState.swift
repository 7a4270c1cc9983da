import Synchronization

/// Whether the receiver is draining. It flips once, when shutdown begins, so
/// `/healthz` answers 503 `draining` (a balancer moves on) while the
/// connections still open are answered and closed.
public final class ReceiverState: Sendable {
    private let drainingFlag = Atomic<Bool>(false)

    public init() {}

    public var isDraining: Bool { drainingFlag.load(ordering: .acquiring) }

    public func beginDraining() { drainingFlag.store(true, ordering: .releasing) }
}
