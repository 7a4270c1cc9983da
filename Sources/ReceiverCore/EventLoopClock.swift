import NIOCore

/// The clock a connection's state machine reads: its event loop's own time
/// (`EventLoop.now`), so that the machine's instants are the loop's
/// deadlines, and an `EmbeddedEventLoop` moved on by a test moves the
/// machine's time with it.
struct EventLoopClock: Clock {
    struct Instant: InstantProtocol {
        var deadline: NIODeadline

        func advanced(by duration: Duration) -> Self { Self(deadline: deadline + TimeAmount(duration)) }

        func duration(to other: Self) -> Duration {
            .nanoseconds(Int64(other.deadline.uptimeNanoseconds) - Int64(deadline.uptimeNanoseconds))
        }

        static func < (lhs: Self, rhs: Self) -> Bool { lhs.deadline < rhs.deadline }
    }

    let loop: any EventLoop

    var now: Instant { Instant(deadline: loop.now) }

    var minimumResolution: Duration { .nanoseconds(1) }

    func sleep(until deadline: Instant, tolerance: Duration?) async throws {
        try await loop.scheduleTask(deadline: deadline.deadline) {}.futureResult.get()
    }
}
