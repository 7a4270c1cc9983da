import Foundation

/// Writes a run's report files on a thread of its own, so the next users'
/// rows are read, judged and rendered while earlier files are created: a run
/// costs about the larger of the query and the writes, not their sum. (On
/// ext4, creating a file is mostly kernel time under the directory's lock,
/// so one writer per directory is all that helps; a second one only spins.)
///
/// Files come rendered and are handed over in chunks of about `chunkBytes`,
/// so the two threads meet once per chunk, not once per user. At most
/// `capacity` chunks wait, so memory stays flat whatever the size of the
/// run. The first failure stops the writer, and the reader gets it at its
/// next hand-off (or at `finish`), so a run never goes on past a file it
/// could not write.
final class ReportWriter: @unchecked Sendable {
    /// One file to write: a report of the run's window, or a correction of an earlier one.
    struct File {
        var name: String
        var bytes: [UInt8]
        var correction: Bool
    }

    /// Where the writer is; held under `condition` with `queue` and `running`.
    private enum State {
        /// Taking chunks.
        case accepting
        /// The reader has handed over its last: write what is queued, then end.
        case closed
        /// A write failed: nothing more is written.
        case failed(any Error)
    }

    private let directory: ReportDirectory
    private let capacity: Int
    private let chunkBytes: Int
    private let afterEachFile: ((Int) throws -> Void)?
    private let condition = NSCondition()
    private var state = State.accepting
    private var queue: [[File]] = []
    private var running = true
    private var filesWritten = 0
    private var correctionSeconds = 0.0
    private var writeSeconds = 0.0
    /// The chunk being filled: the reader's alone.
    private var filling: [File] = []
    private var fillingBytes = 0

    init(directory: ReportDirectory, capacity: Int = 4, chunkBytes: Int = 256 << 10, afterEachFile: ((Int) throws -> Void)?) {
        precondition(capacity > 0 && chunkBytes > 0)
        self.directory = directory
        self.capacity = capacity
        self.chunkBytes = chunkBytes
        self.afterEachFile = afterEachFile
        let thread = Thread { [self] in writeUntilDone() }
        thread.name = "report-writer"
        thread.start()
    }

    /// Hands a file over (reader thread only); throws the writer's failure, if it has failed.
    func submit(_ file: File) throws {
        fillingBytes += file.bytes.count + 256
        filling.append(file)
        if fillingBytes >= chunkBytes { try handOver() }
    }

    /// Waits until every file handed over is written, or throws the first
    /// failure; returns the writer's time spent writing files, and the part of
    /// it spent on corrections (part of the run's correction time). Also the
    /// way to stop the writer when the reader failed: call it and ignore what it throws.
    @discardableResult
    func finish() throws -> (writing: Double, corrections: Double) {
        try? handOver()
        condition.lock()
        defer { condition.unlock() }
        if case .accepting = state { state = .closed }
        condition.broadcast()
        while running { condition.wait() }
        if case .failed(let error) = state { throw error }
        return (writeSeconds, correctionSeconds)
    }

    /// Queues the chunk being filled, waiting while `capacity` chunks are queued.
    private func handOver() throws {
        guard !filling.isEmpty else { return }
        condition.lock()
        defer { condition.unlock() }
        while true {
            switch state {
            case .accepting:
                guard queue.count < capacity else { condition.wait(); continue }
                queue.append(filling)
                filling = []
                fillingBytes = 0
                condition.broadcast()
                return
            case .closed:
                preconditionFailure("a report handed over after the last")
            case .failed(let error):
                throw error
            }
        }
    }

    /// The writer thread: takes chunks until the queue is closed and empty, or a write fails.
    private func writeUntilDone() {
        while let chunk = nextChunk() {
            for file in chunk {
                let started = DispatchTime.now()
                do {
                    try directory.write(name: file.name, bytes: file.bytes)
                } catch {
                    fail(error)
                    break
                }
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
                guard countWritten(seconds: seconds, correction: file.correction) else { break }
            }
        }
    }

    /// The next chunk, waiting for one; nil when the writer is to end (and then it has).
    private func nextChunk() -> [File]? {
        condition.lock()
        defer { condition.unlock() }
        while true {
            switch state {
            case .accepting, .closed:
                if !queue.isEmpty {
                    condition.broadcast() // room for the reader
                    return queue.removeFirst()
                }
                if case .accepting = state { condition.wait(); continue }
            case .failed:
                queue.removeAll()
            }
            running = false
            condition.broadcast()
            return nil
        }
    }

    /// Counts a written file and runs the test seam; false when the run is to stop.
    private func countWritten(seconds: Double, correction: Bool) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        writeSeconds += seconds
        if correction { correctionSeconds += seconds }
        filesWritten += 1
        do {
            try afterEachFile?(filesWritten)
            return true
        } catch {
            state = .failed(error)
            condition.broadcast()
            return false
        }
    }

    private func fail(_ error: any Error) {
        condition.lock()
        defer { condition.unlock() }
        if case .failed = state { return }
        state = .failed(error)
        condition.broadcast()
    }
}
