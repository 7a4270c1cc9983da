import Foundation
import LibPQ
import Logging
import WebhookModel

/// Commits prepared batches on a thread of its own, so reading and decoding
/// the next batch overlaps with PostgreSQL working on this one. It holds at
/// most one batch waiting besides the one being committed (`submit` blocks
/// when both places are taken), so memory stays bounded and a stalled
/// database stalls reading — the pipe then pushes back on the receiver.
///
/// It owns its store (its connection): reconnects with backoff and retries a
/// batch until it commits (never skipping one, never applying one twice: a
/// batch is one transaction), splits a batch the database refuses for its
/// data until the offending event stands alone and is rejected, and stops
/// for good on errors that retrying cannot fix. Its state is one
/// `CommitterState` under one lock.
final class BatchCommitter: @unchecked Sendable {
    /// An error that retrying will not fix; the applier exits 1.
    struct Fatal: Error, CustomStringConvertible {
        var description: String
    }

    /// Asked to stop while PostgreSQL stayed unreachable; the applier exits 75.
    struct GaveUp: Error {}

    /// A unique key still taken after this many reads and retries is the data's fault.
    static let writeConflictRetries = 4

    private let configuration: ApplierConfiguration
    private let logger: Logger
    private let rejects: RejectWriter
    private let stop: StopToken
    private let connect: () throws -> any BatchStore
    private let metrics: ApplierMetrics?
    private var store: (any BatchStore)?
    /// Whether a store was ever made: the next one is a reconnection.
    private var connectedOnce = false
    private var shutdownDeadline: Date?

    private let condition = NSCondition()
    private var state = CommitterState()

    /// `connect` makes a store on a new connection (PostgreSQL's `TaskStore` unless a test says otherwise).
    init(configuration: ApplierConfiguration, logger: Logger, rejects: RejectWriter, stop: StopToken,
         metrics: ApplierMetrics? = nil, connect: (() throws -> any BatchStore)? = nil) {
        self.configuration = configuration
        self.metrics = metrics
        self.logger = logger
        self.rejects = rejects
        self.stop = stop
        self.connect = connect ?? {
            let store = try TaskStore(connection: PGConnection(conninfo: configuration.conninfo),
                                      cacheBytes: (configuration.cacheMegabytes << 20) / max(1, configuration.connections))
            if let folded = try store.fillPendingVerdicts() {
                logger.notice("the event log's verdicts, which it was written without, are filled in", metadata: ["tasks": "\(folded)"])
            }
            return store
        }
    }

    /// Connects (giving up after a minute at start-up, or at once when retrying
    /// cannot help: no schema, no such database, a wrong password) and starts
    /// the committing thread.
    func start() throws {
        _ = try connectedStore(startup: true)
        let thread = Thread { [self] in self.commitLoop() }
        thread.name = "applier-commit"
        thread.start()
    }

    /// Hands a batch over; blocks while the committer is still busy with the
    /// previous two. Throws the committer's failure once it has stopped.
    func submit(_ batch: PreparedBatch) throws {
        condition.lock()
        defer { condition.unlock() }
        while true {
            switch state.submit(batch) {
            case .taken:
                condition.broadcast()
                return
            case .full:
                condition.wait()
            case .refused(let failure):
                throw failure
            }
        }
    }

    /// Whether a batch handed over now would start committing without waiting behind another.
    var isReady: Bool {
        condition.lock()
        defer { condition.unlock() }
        return state.isReady
    }

    /// Waits until every submitted batch is committed; returns the counts.
    @discardableResult
    func finish() throws -> ApplierSummary {
        condition.lock()
        defer { condition.unlock() }
        state.finish()
        condition.broadcast()
        while true {
            switch state.finished {
            case .done(let counts): return counts
            case .failed(let failure): throw failure
            case .notYet: condition.wait()
            }
        }
    }

    /// Counts so far (also after a failure).
    var countsSoFar: ApplierSummary {
        condition.lock()
        defer { condition.unlock() }
        return state.counts
    }

    private func commitLoop() {
        while true {
            condition.lock()
            var next = state.next()
            while case .wait = next {
                condition.wait()
                next = state.next()
            }
            condition.broadcast()  // a place for a waiting submit
            condition.unlock()
            guard case .commit(let batch) = next else { return }
            do {
                try commit(batch)
                transition { $0.batchDone() }
            } catch {
                transition { $0.fail(error) }
                return
            }
        }
    }

    private func transition(_ body: (inout CommitterState) -> Void) {
        condition.lock()
        body(&state)
        condition.broadcast()
        condition.unlock()
    }

    // MARK: - Committing with retries

    private func commit(_ batch: PreparedBatch) throws {
        var attempt = 0
        var conflicts = 0
        let lines = "\(batch.firstLine)-\(batch.lastLine)"
        while true {
            do {
                let store = try connectedStore()
                let started = DispatchTime.now().uptimeNanoseconds
                let outcome = try store.apply(batch)
                record(outcome, of: batch, nanoseconds: Int64(DispatchTime.now().uptimeNanoseconds - started))
                return
            } catch let error as PGError where error.isTransient || (error.isWriteConflict && conflicts < Self.writeConflictRetries) {
                // A write conflict rolled back on a healthy connection: just read again.
                attempt += 1
                metrics?.retries.increment()
                logger.warning("batch not committed, retrying", metadata: [
                    "lines": "\(lines)", "attempt": "\(attempt)", "error": "\(error)",
                ])
                if error.isTransient { store = nil } else { conflicts += 1 }
                try backoff(attempt, lines: lines)
            } catch let error as PGError where error.isDataError || error.isWriteConflict {
                // One event the database cannot take must not hold up the rest:
                // split until it stands alone, then reject it. (A key still taken
                // after `writeConflictRetries` reads is the data's fault too, so
                // one batch can never keep the applier retrying for ever.)
                guard batch.count > 1 else {
                    let item = batch.items[0]
                    transition { $0.rejectedAlone() }
                    metrics?.rejectedAlone()
                    refusedAfterAcceptance(item, rule: .databaseRefused, reason: "\(error)")
                    rejects.reject(line: item.line, reason: "database refused the event: \(error)", input: item.input)
                    rejects.flush()
                    item.delivery?.rejected()
                    return
                }
                let middle = batch.count / 2
                try commit(batch.part(0..<middle))
                try commit(batch.part(middle..<batch.count))
                return
            } catch let error as PGError {
                throw Fatal(description: "PostgreSQL refused the batch (lines \(lines)): \(error)")
            }
        }
    }

    private func record(_ outcome: BatchOutcome, of batch: PreparedBatch, nanoseconds: Int64) {
        transition { $0.committed(outcome) }
        metrics?.committed(outcome, of: batch, nanoseconds: nanoseconds)
        for (item, disposition) in outcome.rejected.sorted(by: { $0.0.line < $1.0.line }) {
            let reason = disposition.rejectionReason ?? "rejected"
            if let rule = ApplierMetrics.RefusalRule(disposition) { refusedAfterAcceptance(item, rule: rule, reason: reason) }
            rejects.reject(line: item.line, reason: reason, input: item.input)
        }
        for change in outcome.verdictChanges { sayVerdictChange(change) }
        rejects.flush()
        // Only now, with the batch committed and its rejects written, is each source told.
        let rejected = Set(outcome.rejected.compactMap { $0.0.delivery.map(ObjectIdentifier.init) })
        for item in batch.items {
            guard let delivery = item.delivery else { continue }
            if rejected.contains(ObjectIdentifier(delivery)) { delivery.rejected() } else { delivery.committed() }
        }
        logger.debug("batch committed", metadata: ["applied": "\(outcome.applied)", "duplicates": "\(outcome.duplicates)", "pending": "\(outcome.pending)"])
    }

    /// A webhook the receiver had accepted (it carries `receivedAt`: its
    /// sender got a 202) that is refused now is more than a line in the
    /// rejects: it is logged and counted, so an alert can fire. What comes
    /// from the webhook is quoted and cut short: it is the sender's text.
    private func refusedAfterAcceptance(_ item: IncomingEvent, rule: ApplierMetrics.RefusalRule, reason: String) {
        guard let receivedAt = item.record.receivedAt else { return }
        metrics?.refusedAfterAcceptance(rule)
        let webhook = item.record.webhook
        logger.warning("an accepted webhook was rejected", metadata: [
            "rule": "\(rule.rawValue)", "line": "\(item.line)", "received_at": "\(receivedAt.canonical)",
            "task": Self.quotedShort(webhook.taskId), "user": Self.quotedShort(webhook.userId),
            "reason": "\(reason)",
        ])
    }

    /// A stored event whose verdict the committed batch changed is said now,
    /// once: newly refused, it gets its reject line (its own line as the
    /// receiver wrote it, why, and the line that changed it), a warning and,
    /// if it had been accepted, the `rejected_after_acceptance` count; no
    /// longer refused, a notice. Both are counted by where they went.
    private func sayVerdictChange(_ change: BatchOutcome.VerdictChange) {
        let webhook = change.record.webhook
        let metadata: Logger.Metadata = [
            "caused_by_line": "\(change.causedBy)", "event": "\(webhook.event.rawValue)", "timestamp": "\(webhook.timestamp.canonical)",
            "task": Self.quotedShort(webhook.taskId), "user": Self.quotedShort(webhook.userId),
        ]
        switch (change.before, change.after) {
        case (nil, let refusal?):
            let reason = refusal.rejectionReason ?? "rejected"
            metrics?.verdictChanged(to: .refused)
            if change.record.receivedAt != nil, let rule = ApplierMetrics.RefusalRule(refusal) { metrics?.refusedAfterAcceptance(rule) }
            logger.warning("an event applied earlier is refused now", metadata: metadata.merging(["reason": "\(reason)"]) { $1 })
            rejects.reject(line: change.causedBy, reason: reason, input: Array(change.record.canonicalLine().dropLast()), refusedLater: true)
        case (_?, nil):
            metrics?.verdictChanged(to: .accepted)
            logger.notice("an event refused earlier is applied now", metadata: metadata)
        case (_?, let refusal?):
            metrics?.verdictChanged(to: .otherReason)
            logger.notice("an event refused earlier is refused now for another reason", metadata: metadata.merging(["reason": "\(refusal.rejectionReason ?? "rejected")"]) { $1 })
        case (nil, nil):
            break
        }
    }

    /// A sender's id for a log line: quoted and cut to 128 characters (it is the sender's text).
    private static func quotedShort(_ id: String) -> Logger.MetadataValue {
        "\(JSONWriter.quoted(String(id.prefix(128))))"
    }

    // MARK: - The store

    private func connectedStore(startup: Bool = false) throws -> any BatchStore {
        if let store { return store }
        var attempt = 0
        let startupDeadline = Date().addingTimeInterval(60)
        while true {
            do {
                let made = try connect()
                store = made
                if connectedOnce { metrics?.reconnects.increment() }
                connectedOnce = true
                if attempt > 0 { logger.notice("connected to PostgreSQL again after \(attempt) failed attempt(s)") }
                return made
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

    /// Sleeps before the next attempt; gives up only when asked to stop
    /// (twice, or once and then past the shutdown timeout).
    private func backoff(_ attempt: Int, lines: String?) throws {
        if stop.requests > 0 {
            if shutdownDeadline == nil {
                shutdownDeadline = Date().addingTimeInterval(Double(configuration.shutdownTimeoutSeconds))
                logger.warning("asked to stop while PostgreSQL is unreachable: retrying for \(configuration.shutdownTimeoutSeconds) s more")
            }
            if stop.requests > 1 || Date() > shutdownDeadline! {
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
            if stop.requests > 1 { break }
        }
    }
}
