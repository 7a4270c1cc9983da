import NIOConcurrencyHelpers
import NIOCore

/// The lines accepted during one turn of an event loop, handed to the writer
/// together once the turn's I/O is done: one lock, one wake-up of the writer
/// thread and (when the writer writes directly) one write(2) per turn,
/// instead of one of each per request. NIO runs tasks after the I/O of the
/// turn that scheduled them, so no line waits for a later turn.
///
/// One per event loop, used on that loop only.
final class WriterHandOff: @unchecked Sendable {
    typealias Completion = @Sendable (StreamWriter.Outcome) -> Void

    private let loop: any EventLoop
    private let writer: StreamWriter
    private var pending: [(bytes: [UInt8], completion: Completion)] = []

    init(loop: any EventLoop, writer: StreamWriter) {
        self.loop = loop
        self.writer = writer
    }

    /// Queues `line` for the end of this turn; `completion` runs on this loop
    /// once the writer has written or refused it.
    func submit(_ line: [UInt8], _ completion: @escaping Completion) {
        loop.assertInEventLoop()
        pending.append((line, completion))
        if pending.count == 1 {
            loop.execute { self.flush() }
        }
    }

    private func flush() {
        let lines = pending
        pending = []
        writer.submit(lines, on: loop)
    }
}

/// Each event loop's `WriterHandOff`, made the first time a connection on
/// that loop needs it.
final class WriterHandOffs: Sendable {
    private let writer: StreamWriter
    private let byLoop = NIOLockedValueBox<[ObjectIdentifier: WriterHandOff]>([:])

    init(writer: StreamWriter) {
        self.writer = writer
    }

    func handOff(for loop: any EventLoop) -> WriterHandOff {
        byLoop.withLockedValue { handOffs in
            if let existing = handOffs[ObjectIdentifier(loop)] { return existing }
            let made = WriterHandOff(loop: loop, writer: writer)
            handOffs[ObjectIdentifier(loop)] = made
            return made
        }
    }
}
