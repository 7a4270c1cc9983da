import NIOCore
import Synchronization

/// Answers that come from another thread, run on each event loop in
/// batches: the first answer queued for a loop schedules one task, which
/// runs every answer queued for that loop by the time it runs.
final class LoopAnswers: Sendable {
    private let queued = Mutex<[ObjectIdentifier: (loop: any EventLoop, answers: [(@Sendable (LineOutcome) -> Void, LineOutcome)])]>([:])

    func deliver(_ outcome: LineOutcome, to completion: @escaping @Sendable (LineOutcome) -> Void, on loop: any EventLoop) {
        let key = ObjectIdentifier(loop)
        let first = queued.withLock { queued in
            let first = queued[key] == nil
            queued[key, default: (loop, [])].answers.append((completion, outcome))
            return first
        }
        guard first else { return }
        loop.execute {
            let batch = self.queued.withLock { $0.removeValue(forKey: key) }
            for (completion, outcome) in batch?.answers ?? [] { completion(outcome) }
        }
    }
}
