import Foundation
import LibPQ
import Logging
import WebhookModel

/// The applier's loop: read lines, decode them, commit them in batches with
/// retries, report rejects on stdout and a summary on stderr.
public final class Applier {
    /// How the run ended; the executable exits with `code`.
    public enum Exit: Int32, Sendable {
        /// EOF or a signal, and everything read is committed.
        case done = 0
        /// A fatal error (schema missing, database refusing for good, unreadable input).
        case failed = 1
        /// Asked to stop while PostgreSQL was unreachable: what was read but not
        /// committed is named in the log (it is still in the receiver's archive).
        case gaveUp = 75
    }

    struct Fatal: Error, CustomStringConvertible {
        var description: String
    }

    struct GaveUp: Error {}

    private let configuration: ApplierConfiguration
    private let logger: Logger
    private let reader: LineReader
    private let rejects: RejectWriter
    private var connection: PGConnection?
    private var store: TaskStore?
    public private(set) var summary = ApplierSummary()

    public init(configuration: ApplierConfiguration, logger: Logger, inputFD: Int32 = 0, outputFD: Int32 = 1) {
        self.configuration = configuration
        self.logger = logger
        self.reader = LineReader(fd: inputFD, maxLineBytes: configuration.maxLineBytes)
        self.rejects = RejectWriter(fd: outputFD)
    }

    public func run() -> Exit {
        let started = DispatchTime.now()
        defer {
            summary.seconds = Double(DispatchTime.now().uptimeNanoseconds - started.uptimeNanoseconds) / 1e9
            rejects.flush()
            logger.notice("applier finished: \(summary.line)")
        }
        do {
            _ = try connectedStore(startup: true)
            try loop()
            return .done
        } catch is GaveUp {
            return .gaveUp
        } catch {
            logger.critical("applier stopped: \(error)")
            return .failed
        }
    }

    private func loop() throws {
        var batch: [TaskStore.Incoming] = []
        var batchStarted: UInt64 = 0
        func flushBatch() throws {
            guard !batch.isEmpty else { return }
            try commit(batch)
            batch.removeAll(keepingCapacity: true)
        }
        func take(_ item: LineReader.Item) throws {
            switch item {
            case .tooLong(let number, let prefix):
                summary.read += 1
                summary.rejected += 1
                rejects.reject(line: number, reason: "line longer than \(configuration.maxLineBytes) bytes", input: prefix, truncated: true)
            case .line(let number, let bytes):
                if bytes.allSatisfy({ $0 == 0x20 || $0 == 0x09 }) { return }
                summary.read += 1
                switch Result(catching: { () throws(WebhookDecodingError) in try Webhook.decode(bytes) }) {
                case .success(let record):
                    if batch.isEmpty { batchStarted = DispatchTime.now().uptimeNanoseconds }
                    batch.append(TaskStore.Incoming(record: record, line: number, input: bytes))
                    if batch.count >= configuration.batchSize { try flushBatch() }
                case .failure(let error):
                    summary.rejected += 1
                    rejects.reject(line: number, reason: error.description, input: bytes)
                }
            case .timeout, .interrupted, .endOfFile:
                break
            }
        }
        while ShutdownSignal.requests == 0 {
            var timeout: Int32 = 500
            if !batch.isEmpty {
                let elapsed = Int((DispatchTime.now().uptimeNanoseconds - batchStarted) / 1_000_000)
                timeout = Int32(max(0, min(500, configuration.batchMilliseconds - elapsed)))
            }
            let item: LineReader.Item
            do {
                item = try reader.next(timeoutMilliseconds: timeout)
            } catch {
                try flushBatch()
                throw Fatal(description: "\(error)")
            }
            switch item {
            case .endOfFile:
                try flushBatch()
                return
            case .interrupted:
                continue
            case .timeout:
                break
            case .tooLong, .line:
                try take(item)
            }
            // A steady trickle never times out the poll: the latency bound is checked after every line too.
            if !batch.isEmpty {
                let elapsed = Int((DispatchTime.now().uptimeNanoseconds - batchStarted) / 1_000_000)
                if elapsed >= configuration.batchMilliseconds { try flushBatch() }
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

    // MARK: - Committing with retries

    private func connectedStore(startup: Bool = false) throws -> TaskStore {
        if let store, let connection, connection.isHealthy { return store }
        dropConnection()
        var attempt = 0
        let startupDeadline = Date().addingTimeInterval(60)
        while true {
            do {
                let connection = try PGConnection(conninfo: configuration.conninfo)
                let store = try TaskStore(connection: connection)
                self.connection = connection
                self.store = store
                if attempt > 0 { logger.notice("connected to PostgreSQL again after \(attempt) failed attempt(s)") }
                return store
            } catch let error as TaskStore.SchemaError {
                throw Fatal(description: error.description)
            } catch let error as PGError where error.isTransient {
                attempt += 1
                if startup && Date() > startupDeadline {
                    throw Fatal(description: "PostgreSQL unreachable for 60 s at start-up: \(error)")
                }
                logger.warning("PostgreSQL unreachable, retrying", metadata: ["attempt": "\(attempt)", "error": "\(error)"])
                try backoff(attempt)
            } catch {
                throw Fatal(description: "cannot use the database: \(error)")
            }
        }
    }

    private func dropConnection() {
        store = nil
        connection?.close()
        connection = nil
    }

    private var shutdownDeadline: Date?

    /// Sleeps before the next attempt; gives up only when asked to stop (twice, or past the shutdown timeout).
    private func backoff(_ attempt: Int) throws {
        if ShutdownSignal.requests > 0 {
            if shutdownDeadline == nil {
                shutdownDeadline = Date().addingTimeInterval(Double(configuration.shutdownTimeoutSeconds))
                logger.warning("asked to stop while PostgreSQL is unreachable: retrying for \(configuration.shutdownTimeoutSeconds) s more")
            }
            if ShutdownSignal.requests > 1 || Date() > shutdownDeadline! {
                logger.error("giving up: events read but not committed remain only in the upstream archive", metadata: ["pending.lines": "\(pendingLines)"])
                throw GaveUp()
            }
        }
        let ms = min(configuration.maxBackoffMilliseconds, 100 << min(attempt - 1, 10))
        var remaining = ms
        while remaining > 0 {
            let step = min(remaining, 100)
            usleep(UInt32(step) * 1000)
            remaining -= step
            if ShutdownSignal.requests > 1 { break }
        }
    }

    private var pendingLines = ""

    private func commit(_ batch: [TaskStore.Incoming]) throws {
        var attempt = 0
        pendingLines = "\(batch.first!.line)-\(batch.last!.line)"
        while true {
            do {
                let store = try connectedStore()
                let outcome = try store.apply(batch)
                record(outcome)
                return
            } catch let error as PGError where error.isTransient {
                attempt += 1
                logger.warning("batch not committed, retrying", metadata: [
                    "lines": "\(pendingLines)", "attempt": "\(attempt)", "error": "\(error)",
                ])
                dropConnection()
                try backoff(attempt)
            } catch let error as PGError where Self.isDataError(error) {
                // One event the database cannot take must not hold up the rest:
                // split until it stands alone, then reject it.
                if batch.count == 1 {
                    let item = batch[0]
                    summary.rejected += 1
                    rejects.reject(line: item.line, reason: "database refused the event: \(error)", input: item.input)
                    return
                }
                let middle = batch.count / 2
                try commit(Array(batch[..<middle]))
                try commit(Array(batch[middle...]))
                return
            } catch let error as PGError {
                throw Fatal(description: "PostgreSQL refused the batch (lines \(pendingLines)): \(error)")
            }
        }
    }

    static func isDataError(_ error: PGError) -> Bool {
        guard let state = error.sqlState else { return false }
        return state.hasPrefix("22") || state.hasPrefix("23")
    }

    private func record(_ outcome: TaskStore.BatchOutcome) {
        summary.batches += 1
        summary.applied += outcome.applied
        summary.duplicates += outcome.duplicates
        summary.pending += outcome.pending
        summary.rejected += outcome.rejected.count
        for (item, reason) in outcome.rejected.sorted(by: { $0.0.line < $1.0.line }) {
            rejects.reject(line: item.line, reason: reason, input: item.input)
        }
        rejects.flush()
        logger.debug("batch committed", metadata: ["applied": "\(outcome.applied)", "duplicates": "\(outcome.duplicates)", "pending": "\(outcome.pending)"])
    }
}
