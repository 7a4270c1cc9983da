import Foundation
import LibPQ
import Logging
import WebhookModel

/// The applier's loop: read lines, decode them, gather them into batches
/// (bounded by size and by latency) and hand them to the `BatchCommitter`s,
/// one per connection, each taking the events of its own task partitions;
/// rejects go to stdout, a summary to stderr.
public final class Applier {
    /// How the run ended; the executable exits with `rawValue`.
    public enum Exit: Int32, Sendable {
        /// EOF or a signal, and everything read is committed.
        case done = 0
        /// A fatal error (schema missing, database refusing for good, unreadable input).
        case failed = 1
        /// Asked to stop while PostgreSQL was unreachable: what was read but not
        /// committed is named in the log (it is still in the receiver's archive).
        case gaveUp = 75
    }

    private let configuration: ApplierConfiguration
    private let logger: Logger
    private let reader: LineReader
    private let rejects: RejectWriter
    private let committers: [BatchCommitter]
    public private(set) var summary = ApplierSummary()
    /// Called now and then with the counts so far (the executable draws them
    /// on a terminal), and once with `done` before the summary is logged.
    public var progress: ((_ counts: ApplierSummary, _ done: Bool) -> Void)?

    public init(configuration: ApplierConfiguration, logger: Logger, inputFD: Int32 = 0, outputFD: Int32 = 1) {
        self.configuration = configuration
        self.logger = logger
        self.reader = LineReader(fd: inputFD, maxLineBytes: configuration.maxLineBytes)
        let rejects = RejectWriter(fd: outputFD)
        self.rejects = rejects
        self.committers = (0..<max(1, configuration.connections)).map { _ in
            BatchCommitter(configuration: configuration, logger: logger, rejects: rejects)
        }
    }

    public func run() -> Exit {
        let started = DispatchTime.now()
        var decoded = ApplierSummary()
        defer {
            summary = committers.reduce(decoded) { $0.adding($1.countsSoFar) }
            summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            rejects.flush()
            progress?(summary, true)
            logger.notice("applier finished: \(summary.line)")
        }
        do {
            for committer in committers { try committer.start() }
            try loop(&decoded)
            for committer in committers { try committer.finish() }
            return .done
        } catch is BatchCommitter.GaveUp {
            return .gaveUp
        } catch {
            logger.critical("applier stopped: \(error)")
            return .failed
        }
    }

    /// Reads until EOF or a stop request; `counts` gets what decoding saw (read, rejected).
    private func loop(_ counts: inout ApplierSummary) throws {
        let started = DispatchTime.now().uptimeNanoseconds
        var batch: [TaskStore.Incoming] = []
        batch.reserveCapacity(configuration.batchSize)
        var batchStarted: UInt64 = 0
        func flushBatch() throws {
            guard !batch.isEmpty else { return }
            if committers.count == 1 {
                try committers[0].submit(TaskStore.prepare(batch))
            } else {
                var parts = Array(repeating: [TaskStore.Incoming](), count: committers.count)
                for item in batch {
                    parts[TaskStore.partition(ofTask: item.record.webhook.taskId) % committers.count].append(item)
                }
                for (committer, part) in zip(committers, parts) where !part.isEmpty {
                    try committer.submit(TaskStore.prepare(part))
                }
            }
            batch.removeAll(keepingCapacity: true)
        }
        func take(_ item: LineReader.Item) throws {
            switch item {
            case .tooLong(let number, let prefix):
                counts.read += 1
                counts.rejected += 1
                rejects.reject(line: number, reason: "line longer than \(configuration.maxLineBytes) bytes", input: prefix, truncated: true)
            case .line(let number, let bytes):
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
                counts.read += 1
                switch Result(catching: { () throws(WebhookDecodingError) in try Webhook.decode(bytes) }) {
                case .success(let record):
                    if batch.isEmpty { batchStarted = DispatchTime.now().uptimeNanoseconds }
                    batch.append(TaskStore.Incoming(record: record, line: number, input: bytes))
                    if batch.count >= configuration.batchSize { try flushBatch() }
                case .failure(let error):
                    counts.rejected += 1
                    rejects.reject(line: number, reason: error.description, input: bytes)
                }
            case .timeout, .interrupted, .endOfFile:
                break
            }
        }
        func elapsedMilliseconds() -> Int {
            Int((DispatchTime.now().uptimeNanoseconds - batchStarted) / 1_000_000)
        }

        while ShutdownSignal.requests == 0 {
            // Past the latency bound with every committer still busy, look again
            // soon: the batch goes as soon as one is free, not before.
            let timeout = batch.isEmpty ? 500 : Int32(max(2, min(500, configuration.batchMilliseconds - elapsedMilliseconds())))
            let item: LineReader.Item
            do {
                item = try reader.next(timeoutMilliseconds: timeout)
            } catch {
                try flushBatch()
                throw BatchCommitter.Fatal(description: "\(error)")
            }
            if case .endOfFile = item {
                try flushBatch()
                return
            }
            try take(item)
            if let progress, counts.read & 1023 == 0 || item.isIdle {
                var sofar = committers.reduce(counts) { $0.adding($1.countsSoFar) }
                sofar.seconds = Double(DispatchTime.now().uptimeNanoseconds - started) / 1e9
                progress(sofar, false)
            }
            // A steady trickle never times out the poll: the latency bound is checked after every line too.
            // While the committers are busy the batch keeps growing (up to --batch-size) instead of
            // queueing behind them: it could not commit sooner, and larger batches keep up with load.
            if !batch.isEmpty && elapsedMilliseconds() >= configuration.batchMilliseconds && committers.allSatisfy(\.isReady) {
                try flushBatch()
            }
        }
        // Stop reading, but lines already taken off the pipe were read: apply them too.
        var drained = 0
        while let item = reader.nextBuffered() {
            try take(item)
            drained += 1
        }
        logger.notice("signal received: committing what was read, then exiting", metadata: ["buffered.lines": "\(drained)"])
        try flushBatch()
    }
}
