import Synchronization
import Testing
@testable import ReceiverCore

/// The receiver's one lifecycle on values: it only moves on, and what waits
/// for a phase runs once, when the phase is reached (at once when it was).
@Suite struct ReceiverLifecycleTests {
    final class Said: Sendable {
        let lines = Mutex<[String]>([])
        func say(_ line: String) -> @Sendable () -> Void { { self.lines.withLock { $0.append(line) } } }
        var all: [String] { lines.withLock { $0 } }
    }

    @Test func itMovesOnOnlyAndRunsWhatWaitsForEachPhaseOnce() {
        let lifecycle = ReceiverLifecycle()
        let said = Said()
        lifecycle.when(.closing, said.say("writer stops"))
        lifecycle.when(.draining, said.say("healthz says draining"))
        #expect(lifecycle.phase == .accepting && said.all.isEmpty)
        lifecycle.advance(to: .draining)
        #expect(said.all == ["healthz says draining"])
        lifecycle.advance(to: .accepting)
        #expect(lifecycle.phase == .draining, "never back")
        lifecycle.advance(to: .stopped)
        #expect(said.all == ["healthz says draining", "writer stops"], "a phase passed over runs what waited for it")
        lifecycle.advance(to: .stopped)
        lifecycle.when(.closing, said.say("late"))
        #expect(said.all == ["healthz says draining", "writer stops", "late"], "once each; at once for a phase already reached")
    }
}
