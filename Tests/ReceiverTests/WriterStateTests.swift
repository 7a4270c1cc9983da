import Testing
@testable import ReceiverCore

/// The writer's transitions, without threads, pipes or clocks: tickets are
/// numbers, times are nanoseconds handed in.
@Suite struct WriterStateTests {
    typealias State = WriterState<Int, Int>
    static let second: UInt64 = 1_000_000_000

    /// A writer's state, started with direct writes allowed unless `started` is false.
    func makeState(capacity: Int = 8, maxQueuedBytes: Int = 1 << 20, started: Bool = true) -> State {
        var state = State(limits: .init(capacity: capacity, maxQueuedBytes: maxQueuedBytes,
                                        stallNanoseconds: Self.second, queueTimeoutNanoseconds: 4 * Self.second))
        if started { _ = state.start(writesDirectly: true) }
        return state
    }

    func line(_ n: Int, bytes: Int = 10) -> [UInt8] { Array(repeating: UInt8(ascii: "a"), count: bytes - 1) + [0x0A] }

    func batchLines(_ next: State.Next) -> [[UInt8]] {
        if case .write(let lines, _) = next { return lines }
        return []
    }

    @Test func answersEachLineWhenItsLastByteIsTaken() {
        var state = makeState()
        for n in 0..<3 { #expect(state.submit(line(n), ticket: n, now: 0) == nil) }
        #expect(batchLines(state.nextBatch(now: 0)).count == 3)
        #expect(state.wrote(5, now: 1).isEmpty, "half a line is not a line")
        #expect(state.wrote(10, now: 2) == [0], "the first line is whole")
        #expect(state.wrote(15, now: 3) == [1, 2])
        state.finishBatch()
        #expect(state.depth == 0)
        #expect(state.nextBatch(now: 4).isWait)
    }

    @Test func aDirectWriteIsAllowedOnlyWhenNothingCouldComeBeforeIt() {
        var state = makeState(started: false)
        #expect(!state.mayWriteDirectly, "not before the writer says its output never blocks")
        let started = state.start(writesDirectly: true)
        #expect(started)
        #expect(state.mayWriteDirectly)
        #expect(state.wroteDirectly([(line(0), 0)], written: 10, now: 0) == [.written], "all of it: written at once")
        #expect(state.wroteDirectly([(line(1), 1)], written: 0, now: 0) == [nil], "none of it: queued")
        #expect(!state.mayWriteDirectly, "a line is queued: it goes first")
        _ = state.nextBatch(now: 0)
        #expect(!state.mayWriteDirectly, "a batch is under way")
        _ = state.wrote(10, now: 0)
        state.finishBatch()

        // Part of it: the writer thread finishes the line from where it stopped.
        #expect(state.wroteDirectly([(line(2), 2)], written: 4, now: 0) == [nil])
        guard case .write(let lines, let offset) = state.nextBatch(now: 0) else { Issue.record("no batch"); return }
        #expect(lines.count == 1 && offset == 4)
        #expect(state.wrote(6, now: 0) == [2])
        state.finishBatch()
        #expect(state.mayWriteDirectly)
    }

    @Test func aTurnsLinesWrittenTogetherAreAnsweredByHowFarTheOutputTookThem() {
        var state = makeState()
        let turn = (0..<4).map { (line($0), $0) }
        // The output took two lines and part of the third: those two are
        // written; the third and fourth are the batch under way, finished by the writer thread.
        #expect(state.wroteDirectly(turn, written: 25, now: 0) == [.written, .written, nil, nil])
        guard case .write(let lines, let offset) = state.nextBatch(now: 0) else { Issue.record("no batch"); return }
        #expect(lines.count == 2 && offset == 5)
        #expect(state.wrote(5, now: 0) == [2])
        #expect(state.wrote(10, now: 0) == [3])
        state.finishBatch()

        // It stopped exactly between two lines: the rest are queued as usual
        // (and refused as usual when the queue is full).
        var small = makeState(capacity: 1)
        #expect(small.wroteDirectly(turn, written: 10, now: 0) == [.written, nil, .overloaded, .overloaded])
        #expect(batchLines(small.nextBatch(now: 0)).count == 1)
    }

    @Test func aFullQueueRefusesAtOnce() {
        var state = makeState(capacity: 2)
        #expect(state.submit(line(0), ticket: 0, now: 0) == nil)
        #expect(state.submit(line(1), ticket: 1, now: 0) == nil)
        #expect(state.submit(line(2), ticket: 2, now: 0) == .overloaded)
        var bytes = makeState(maxQueuedBytes: 15)
        #expect(bytes.submit(line(0), ticket: 0, now: 0) == nil)
        #expect(bytes.submit(line(1), ticket: 1, now: 0) == .overloaded, "past the byte limit")
    }

    @Test func aStallRefusesNewLinesAtOnceAndEveryWaiterWithinTheQueueTimeout() {
        var state = makeState()
        for n in 0..<3 { _ = state.submit(line(n), ticket: n, now: 0) }
        _ = state.nextBatch(now: 0)
        #expect(state.wrote(14, now: 0) == [0], "line 1 is under way, line 2 not started")
        _ = state.submit(line(3), ticket: 3, now: Self.second / 2)
        #expect(state.blocked(now: Self.second / 2).isEmpty, "a short pause is not a stall")
        #expect(!state.isStalled)
        #expect(state.blocked(now: Self.second).isEmpty)
        #expect(state.isStalled, "a second without progress is a stall")
        #expect(state.submit(line(4), ticket: 4, now: Self.second) == .overloaded, "refused at once, not queued")

        // Four seconds after they came: the line under way is answered (it will
        // still be finished), the one not started is taken back and the batch cut.
        #expect(Set(state.blocked(now: 4 * Self.second)) == [1, 2])
        #expect(state.batchEnd == 20, "the batch now ends after the line under way")
        #expect(state.depth == 1, "only the queued line waits")
        #expect(state.blocked(now: 4 * Self.second + Self.second / 2) == [3], "the queued line's four seconds are up too")

        // The reader takes the rest of the line under way: the writer runs again, and nobody is answered twice.
        #expect(state.wrote(6, now: 5 * Self.second).isEmpty)
        #expect(!state.isStalled)
        state.finishBatch()
        #expect(state.submit(line(5), ticket: 5, now: 5 * Self.second) == nil)
    }

    @Test func aStalledBatchNotStartedIsTakenBackWhole() {
        var state = makeState()
        for n in 0..<2 { _ = state.submit(line(n), ticket: n, now: 0) }
        _ = state.nextBatch(now: 0)
        #expect(Set(state.blocked(now: 4 * Self.second)) == [0, 1])
        #expect(state.batchEnd == 0, "nothing left to write")
        state.finishBatch()
        // Still stalled, with nothing to write: wait for the output, not for lines (which are refused).
        #expect(state.nextBatch(now: 4 * Self.second).isWaitForOutput)
        #expect(state.submit(line(2), ticket: 2, now: 4 * Self.second) == .overloaded)
        state.outputReady(now: 5 * Self.second)
        #expect(!state.isStalled)
        #expect(state.submit(line(3), ticket: 3, now: 5 * Self.second) == nil)
    }

    @Test func brokenOutputRefusesEveryoneAndTakesNothingMore() {
        var state = makeState()
        for n in 0..<3 { _ = state.submit(line(n), ticket: n, now: 0) }
        _ = state.nextBatch(now: 0)
        #expect(state.wrote(10, now: 0) == [0])
        _ = state.submit(line(3), ticket: 3, now: 0)
        #expect(Set(state.fail(.outputClosed(errno: 32))) == [1, 2, 3])
        #expect(state.submit(line(4), ticket: 4, now: 0) == .unavailable(State.outputClosed))
        #expect(state.nextBatch(now: 0).isExit)
    }

    @Test func aFullArchiveRefusesTheBatchAndTheWriterGoesOn() {
        var state = makeState()
        for n in 0..<2 { _ = state.submit(line(n), ticket: n, now: 0) }
        _ = state.nextBatch(now: 0)
        #expect(state.refuseBatch() == [0, 1])
        #expect(state.submit(line(2), ticket: 2, now: 0) == nil, "the next line is taken")
        #expect(batchLines(state.nextBatch(now: 0)).count == 1)
    }

    @Test func drainingWritesWhatIsQueuedThenExits() {
        var state = makeState()
        _ = state.submit(line(0), ticket: 0, now: 0)
        state.drain()
        #expect(state.submit(line(1), ticket: 1, now: 0) == .unavailable("the receiver is shutting down"))
        #expect(batchLines(state.nextBatch(now: 0)).count == 1, "what was queued is still written")
        #expect(state.wrote(10, now: 0) == [0])
        state.finishBatch()
        #expect(state.nextBatch(now: 0).isExit)
    }
}

extension WriterStateTests {
    @Test func theLifecycleStartsOnceAndTellsEveryWaiterHowTheThreadEnded() {
        var state = makeState(started: false)
        guard case .exited(nil) = state.awaitExit(0) else { Issue.record("a writer never started has nothing to wait for"); return }
        let first = state.start(writesDirectly: false), second = state.start(writesDirectly: true)
        #expect(first && !second, "started once")
        #expect(!state.mayWriteDirectly, "as the start said")
        guard case .waiting = state.awaitExit(1), case .waiting = state.awaitExit(2) else { Issue.record("not waiting"); return }
        _ = state.submit(line(0), ticket: 0, now: 0)
        _ = state.nextBatch(now: 0)
        #expect(state.fail(.outputFailed(errno: 5)) == [0])
        #expect(state.failure == .outputFailed(errno: 5))
        state.drain()
        #expect(state.failure == .outputFailed(errno: 5), "a drain after a failure changes nothing")
        guard case .exit(let failure, let waiters) = state.nextBatch(now: 0) else { Issue.record("no exit"); return }
        #expect(failure == .outputFailed(errno: 5) && waiters == [1, 2])
        guard case .exited(.outputFailed(errno: 5)?) = state.awaitExit(3) else { Issue.record("a late waiter is told at once"); return }
        #expect(state.submit(line(1), ticket: 1, now: 0) == .unavailable(State.outputClosed))

        var drained = makeState()
        _ = drained.awaitExit(7)
        drained.drain()
        #expect(!drained.mayWriteDirectly, "draining: nothing is written directly")
        guard case .exit(nil, let waiters) = drained.nextBatch(now: 0) else { Issue.record("no exit"); return }
        #expect(waiters == [7])
        #expect(drained.submit(line(2), ticket: 2, now: 0) == .unavailable("the receiver is shutting down"))
    }
}

extension WriterState.Next {
    var isWait: Bool { if case .wait = self { true } else { false } }
    var isExit: Bool { if case .exit = self { true } else { false } }
    var isWaitForOutput: Bool { if case .waitForOutput = self { true } else { false } }
}
