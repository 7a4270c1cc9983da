import Foundation
import LibPQ
import Logging

/// Commits prepared batches on a thread of its own, so reading and decoding
/// the next batch overlaps with PostgreSQL working on this one. It holds at
/// most one batch waiting besides the one being committed (`submit` blocks
/// when both places are taken), so memory stays bounded and a stalled
/// database stalls reading — the pipe then pushes back on the receiver.
///
/// It owns the connection: reconnects with backoff and retries a batch until
/// it commits (never skipping one, never applying one twice: a batch is one
/// transaction), splits a batch the database refuses for its data until the
/// offending event stands alone and is rejected, and stops for good on
/// errors that retrying cannot fix.
final class BatchCommitter: @unchecked Sendable {
    /// An error that retrying will not fix; the applier exits 1.
    struct Fatal: Error, CustomStringConvertible {
        var description: String
    }

    /// Asked to stop while PostgreSQL stayed unreachable; the applier exits 75.
    struct GaveUp: Error {}

    private let configuration: ApplierConfiguration
    private let logger: Logger
    private let rejects: RejectWriter
    private var connection: PGConnection?
    private var store: TaskStore?

    private let condition = NSCondition()
    private var waiting: TaskStore.PreparedBatch?
    private var busy = false
    private var closed = false
    private var failure: Error?
    private var counts = ApplierSummary()
    private var shutdownDeadline: Date?

    init(configuration: ApplierConfiguration, logger: Logger, rejects: RejectWriter) {
        self.configuration = configuration
        self.logger = logger
        self.rejects = rejects
    }

    /// Connects (giving up after a minute at start-up, or at once when the
    /// schema is missing) and starts the committing thread.
    func start() throws {
        _ = try connectedStore(startup: true)
        let thread = Thread { [self] in self.commitLoop() }
        thread.name = "applier-commit"
        thread.start()
    }

    /// Hands a batch over; blocks while the committer is still busy with the
    /// previous two. Throws the committer's failure once it has stopped.
    func submit(_ batch: TaskStore.PreparedBatch) throws {
        condition.lock()
        defer { condition.unlock() }
        while waiting != nil && failure == nil { condition.wait() }
        if let failure { throw failure }
        waiting = batch
        condition.broadcast()
    }

    /// Whether a batch handed over now would start committing without waiting behind another.
    var isReady: Bool {
        condition.lock()
        defer { condition.unlock() }
        return waiting == nil && !busy
    }

    /// Waits until every submitted batch is committed; returns the counts.
    @discardableResult
    func finish() throws -> ApplierSummary {
        condition.lock()
        defer { condition.unlock() }
        closed = true
        condition.broadcast()
        while (waiting != nil || busy) && failure == nil { condition.wait() }
        if let failure { throw failure }
        return counts
    }

    /// Counts so far (also after a failure).
    var countsSoFar: ApplierSummary {
        condition.lock()
        defer { condition.unlock() }
        return counts
    }

    private func commitLoop() {
        while true {
            condition.lock()
            while waiting == nil && !closed { condition.wait() }
            guard let batch = waiting else {
                condition.unlock()
                return
            }
            waiting = nil
            busy = true
            condition.broadcast()
            condition.unlock()

            do {
                try commit(batch)
                condition.lock()
                busy = false
                condition.broadcast()
                condition.unlock()
            } catch {
                condition.lock()
                failure = error
                busy = false
                condition.broadcast()
                condition.unlock()
                return
            }
        }
    }

    // MARK: - Committing with retries

    private func commit(_ batch: TaskStore.PreparedBatch) throws {
        var attempt = 0
        var conflicts = 0
        let lines = "\(batch.firstLine)-\(batch.lastLine)"
        while true {
            do {
                let store = try connectedStore()
                let outcome = try store.apply(batch)
                record(outcome, of: batch)
                return
            } catch let error as PGError
                where error.isTransient || (Self.isWriteConflict(error) && conflicts < Self.writeConflictRetries) {
                attempt += 1
                logger.warning("batch not committed, retrying", metadata: [
                    "lines": "\(lines)", "attempt": "\(attempt)", "error": "\(error)",
                ])
                if error.isTransient {
                    dropConnection()
                } else {
                    conflicts += 1 // rolled back on a healthy connection: just read again
                }
                try backoff(attempt, lines: lines)
            } catch let error as PGError where Self.isDataError(error) {
                // One event the database cannot take must not hold up the rest:
                // split until it stands alone, then reject it.
                if batch.count == 1 {
                    let item = batch.items[0]
                    condition.lock()
                    counts.rejected += 1
                    condition.unlock()
                    rejects.reject(line: item.line, reason: "database refused the event: \(error)", input: item.input)
                    rejects.flush()
                    item.delivery?.rejected()
                    return
                }
                let middle = batch.count / 2
                try commit(TaskStore.prepare(Array(batch.items[..<middle])))
                try commit(TaskStore.prepare(Array(batch.items[middle...])))
                return
            } catch let error as PGError {
                throw Fatal(description: "PostgreSQL refused the batch (lines \(lines)): \(error)")
            }
        }
    }

    /// A unique key taken between our read and our write: by a writer that
    /// takes no partition locks, or an id the task table's sequence handed out
    /// that a row inserted by other means already holds. Read again and retry;
    /// a conflict that outlasts `writeConflictRetries` is treated as the
    /// data's fault (split, and the event that still fails alone is rejected),
    /// so nothing can keep the applier retrying one batch for ever.
    static func isWriteConflict(_ error: PGError) -> Bool {
        error.sqlState == "23505"
    }

    static let writeConflictRetries = 4

    static func isDataError(_ error: PGError) -> Bool {
        guard let state = error.sqlState else { return false }
        return state.hasPrefix("22") || state.hasPrefix("23")
    }

    private func record(_ outcome: TaskStore.BatchOutcome, of batch: TaskStore.PreparedBatch) {
        condition.lock()
        counts.batches += 1
        counts.applied += outcome.applied
        counts.duplicates += outcome.duplicates
        counts.pending += outcome.pending
        counts.rejected += outcome.rejected.count
        condition.unlock()
        for (item, reason) in outcome.rejected.sorted(by: { $0.0.line < $1.0.line }) {
            rejects.reject(line: item.line, reason: reason, input: item.input)
        }
        rejects.flush()
        // Only now, with the batch committed and its rejects written, is each source told.
        let rejected = Set(outcome.rejected.compactMap { $0.0.delivery.map(ObjectIdentifier.init) })
        for item in batch.items {
            guard let delivery = item.delivery else { continue }
            if rejected.contains(ObjectIdentifier(delivery)) { delivery.rejected() } else { delivery.committed() }
        }
        logger.debug("batch committed", metadata: ["applied": "\(outcome.applied)", "duplicates": "\(outcome.duplicates)", "pending": "\(outcome.pending)"])
    }

    // MARK: - The connection

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
                try backoff(attempt, lines: nil)
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

    /// Sleeps before the next attempt; gives up only when asked to stop
    /// (twice, or once and then past the shutdown timeout).
    private func backoff(_ attempt: Int, lines: String?) throws {
        if ShutdownSignal.requests > 0 {
            if shutdownDeadline == nil {
                shutdownDeadline = Date().addingTimeInterval(Double(configuration.shutdownTimeoutSeconds))
                logger.warning("asked to stop while PostgreSQL is unreachable: retrying for \(configuration.shutdownTimeoutSeconds) s more")
            }
            if ShutdownSignal.requests > 1 || Date() > shutdownDeadline! {
                logger.error("giving up: events read but not committed remain only upstream (the receiver's archive)",
                             metadata: ["lines": "\(lines ?? "none")"])
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
}
