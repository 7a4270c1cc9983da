import Foundation
import JetStreamSetup
import LibPQ
import Logging
import WebhookModel

/// The applier's loop: read lines, decode them, gather them into batches
/// (bounded by size and by latency) and hand them to the `BatchCommitter`s,
/// one per connection, each taking the events of its own task partitions;
/// rejects go to stdout, a summary to stderr.
public final class Applier {
    /// How the run ended.
    public enum Outcome: Sendable, Equatable {
        /// EOF or a signal, and everything read is committed.
        case done
        /// A fatal error (schema missing, database refusing for good, unreadable input).
        case failed
        /// Asked to stop while PostgreSQL was unreachable: what was read but not
        /// committed is named in the log (it is still in the receiver's archive).
        case gaveUp
        /// JetStream mode refused (`JetStreamRefusal`): a server too old, a stream with too few replicas.
        case refused
    }

    private let configuration: ApplierConfiguration
    private let logger: Logger
    private let stop: StopToken
    private let input: any ApplierInput
    private let rejects: RejectWriter
    private let committers: [BatchCommitter]
    private let metrics: ApplierMetrics?
    public private(set) var summary = ApplierSummary()
    /// The input ended (EOF), rather than a stop request ending the reading.
    public private(set) var readToEnd = false
    /// Called now and then with the counts so far (the executable draws them
    /// on a terminal), and once with `done` before the summary is logged.
    public var progress: ((_ counts: ApplierSummary, _ done: Bool) -> Void)?

    /// Reads `inputFD` (stdin), or with `configuration.jetStream` the
    /// stream's consumer, until end of input or `stop`; throws only for
    /// JetStream settings libnats refuses. `connect` makes each committer's
    /// store (PostgreSQL unless a test says otherwise).
    public init(configuration: ApplierConfiguration, logger: Logger, stop: StopToken, inputFD: Int32 = 0, outputFD: Int32 = 1,
                metrics: ApplierMetrics? = nil, connect: (() throws -> any BatchStore)? = nil) throws {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.stop = stop
        let rejects: RejectWriter
        if let jetStream = configuration.jetStream {
            input = try JetStreamInput(settings: jetStream, batchSize: configuration.batchSize,
                                       maxWaitMilliseconds: configuration.batchMilliseconds, logger: logger)
            rejects = RejectWriter(fd: outputFD, positionName: "seq")
        } else {
            input = LineReader(fd: inputFD, maxLineBytes: configuration.maxLineBytes)
            rejects = RejectWriter(fd: outputFD)
        }
        self.rejects = rejects
        self.committers = (0..<max(1, configuration.connections)).map { _ in
            BatchCommitter(configuration: configuration, logger: logger, rejects: rejects, stop: stop, metrics: metrics, connect: connect)
        }
    }

    public func run() -> Outcome {
        let started = DispatchTime.now()
        var decoded = ApplierSummary()
        defer {
            summary = committers.reduce(decoded) { $0.adding($1.countsSoFar) }
            summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            rejects.flush()
            (input as? JetStreamInput)?.close()
            progress?(summary, true)
            // The summary stays the last line (README): the cache's comes before it.
            if let cacheLine = summary.cacheLine { logger.notice("\(cacheLine)") }
            logger.notice("applier finished: \(summary.line)")
        }
        do {
            for committer in committers { try committer.start() }
            try loop(&decoded)
            for committer in committers { try committer.finish() }
            return .done
        } catch is BatchCommitter.GaveUp {
            return .gaveUp
        } catch let refusal as JetStreamRefusal {
            logger.critical("refusing JetStream mode: \(refusal)")
            return .refused
        } catch {
            logger.critical("applier stopped: \(error)")
            return .failed
        }
    }

    /// Reads until EOF or a stop request; `counts` gets what decoding saw (read, rejected).
    private func loop(_ counts: inout ApplierSummary) throws {
        let started = DispatchTime.now().uptimeNanoseconds
        var batch: [IncomingEvent] = []
        batch.reserveCapacity(configuration.batchSize)
        var batchStarted: UInt64 = 0
        func flushBatch() throws {
            guard !batch.isEmpty else { return }
            if committers.count == 1 {
                try committers[0].submit(PreparedBatch(batch))
            } else {
                // Moved, not copied (a copy retains each of an event's strings and
                // buffers, and the batch's release frees them): taken from the end
                // into reversed parts, then from their ends into parts in order.
                var reversedParts = Array(repeating: [IncomingEvent](), count: committers.count)
                while let item = batch.popLast() {
                    reversedParts[TaskPartition.of(task: item.record.webhook.taskId) % committers.count].append(item)
                }
                var parts = Array(repeating: [IncomingEvent](), count: committers.count)
                for index in reversedParts.indices {
                    parts[index].reserveCapacity(reversedParts[index].count)
                    while let item = reversedParts[index].popLast() { parts[index].append(item) }
                }
                for (committer, part) in zip(committers, parts) where !part.isEmpty {
                    try committer.submit(PreparedBatch(part))
                }
            }
            batch.removeAll(keepingCapacity: true)
        }
        /// Rejects an input before it reaches a batch: written, then its source told.
        func reject(_ number: Int, _ reason: String, _ input: some Collection<UInt8>, truncated: Bool = false, _ delivery: (any Delivery)?) {
            counts.rejected += 1
            metrics?.lineRejected()
            rejects.reject(line: number, reason: reason, input: input, truncated: truncated)
            if let delivery {
                rejects.flush()
                delivery.rejected()
            }
        }
        func take(_ item: InputItem) throws {
            switch item {
            case .tooLong(let number, let prefix, let delivery):
                counts.read += 1
                metrics?.linesRead.increment()
                reject(number, "line longer than \(configuration.maxLineBytes) bytes", prefix, truncated: true, delivery)
            case .line(let number, let bytes, let delivery):
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) {
                    // A blank line between lines is nothing; a blank message is a message that is not a webhook.
                    if delivery != nil {
                        counts.read += 1
                        metrics?.linesRead.increment()
                        reject(number, "an empty message is not a webhook", bytes, delivery)
                    }
                    return
                }
                counts.read += 1
                metrics?.linesRead.increment()
                switch Result(catching: { () throws(WebhookDecodingError) in try bytes.withUnsafeBufferPointer(Webhook.decode) }) {
                case .success(let record):
                    metrics?.eventBatched()
                    if batch.isEmpty { batchStarted = DispatchTime.now().uptimeNanoseconds }
                    batch.append(IncomingEvent(record: record, line: number, input: bytes, delivery: delivery))
                    if batch.count >= configuration.batchSize { try flushBatch() }
                case .failure(let error):
                    reject(number, error.description, bytes, delivery)
                }
            case .timeout, .interrupted, .endOfFile:
                break
            }
        }
        func elapsedMilliseconds() -> Int {
            Int((DispatchTime.now().uptimeNanoseconds - batchStarted) / 1_000_000)
        }

        while stop.requests == 0 {
            // Past the latency bound with every committer still busy, look again
            // soon: the batch goes as soon as one is free, not before.
            let timeout = batch.isEmpty ? 500 : Int32(max(2, min(500, configuration.batchMilliseconds - elapsedMilliseconds())))
            let item: InputItem
            do {
                item = try input.next(timeoutMilliseconds: timeout)
            } catch let refusal as JetStreamRefusal {
                try flushBatch()
                throw refusal
            } catch {
                try flushBatch()
                throw BatchCommitter.Fatal(description: "\(error)")
            }
            if case .endOfFile = item {
                try flushBatch()
                readToEnd = true
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
        while let item = input.nextBuffered() {
            try take(item)
            drained += 1
        }
        logger.notice("signal received: committing what was read, then exiting", metadata: ["buffered.lines": "\(drained)"])
        try flushBatch()
    }
}
