import NIOConcurrencyHelpers
import NIOCore

/// The lines accepted during one turn of an event loop, handed to the sink
/// together once the turn's I/O is done: one lock, one wake-up of the writer
/// thread and (when the writer writes directly) one write(2) per turn,
/// instead of one of each per request. NIO runs tasks after the I/O of the
/// turn that scheduled them, so no line waits for a later turn.
///
/// One per event loop, used on that loop only.
final class SinkHandOff: @unchecked Sendable {
    private let loop: any EventLoop
    private let sink: any LineSink
    private var pending: [SubmittedLine] = []

    init(loop: any EventLoop, sink: any LineSink) {
        self.loop = loop
        self.sink = sink
    }

    /// Queues `line` for the end of this turn; its completion runs on this
    /// loop once the sink has handed it on or refused it.
    func submit(_ line: SubmittedLine) {
        loop.assertInEventLoop()
        pending.append(line)
        if pending.count == 1 {
            loop.execute { self.flush() }
        }
    }

    private func flush() {
        let lines = pending
        pending = []
        sink.submit(lines, on: loop)
    }
}

/// Each event loop's `SinkHandOff`, made the first time a connection on
/// that loop needs it.
final class SinkHandOffs: Sendable {
    private let sink: any LineSink
    private let byLoop = NIOLockedValueBox<[ObjectIdentifier: SinkHandOff]>([:])

    init(sink: any LineSink) {
        self.sink = sink
    }

    func handOff(for loop: any EventLoop) -> SinkHandOff {
        byLoop.withLockedValue { handOffs in
            if let existing = handOffs[ObjectIdentifier(loop)] { return existing }
            let made = SinkHandOff(loop: loop, sink: sink)
            handOffs[ObjectIdentifier(loop)] = made
            return made
        }
    }
}
