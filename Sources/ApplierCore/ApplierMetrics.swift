import Foundation
import Prometheus
import Synchronization
import TaskModel

/// The applier's Prometheus metrics, served on `GET /metrics` when
/// `APPLIER_METRICS_PORT` is set: lines read, what became of each event,
/// batches, commit latency, retries, reconnections, rejections of webhooks
/// that had been accepted, and the lag. Made on its own registry (with help
/// text for every metric), so nothing is bootstrapped globally and every
/// test has its own.
public final class ApplierMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    let linesRead: Prometheus.Counter
    let applied: Prometheus.Counter
    let duplicates: Prometheus.Counter
    let pending: Prometheus.Counter
    let rejected: Prometheus.Counter
    let batches: Prometheus.Counter
    let commitDuration: DurationHistogram
    let retries: Prometheus.Counter
    let reconnects: Prometheus.Counter
    /// Tasks of a batch the task cache answered, did not know, or had remembered in a partition changed since.
    private let cacheLookups: (hit: Prometheus.Counter, miss: Prometheus.Counter, changed: Prometheus.Counter)
    /// Accepted webhooks (they carry the receiver's `receivedAt`: the sender had its 202) the rules or the database refused.
    private let rejectedAfterAcceptance: [String: Prometheus.Counter]
    /// Stored events whose verdict a later batch changed, by what it became.
    private let verdictChanges: [VerdictChange: Prometheus.Counter]
    private let lastCommittedReceivedAt: Prometheus.Gauge
    private let lag: Prometheus.Gauge
    /// The newest `receivedAt` among committed events (µs since the epoch; 0: none yet).
    private let newestCommitted = Atomic<Int64>(0)
    /// Events decoded and handed to a batch but not yet committed or rejected.
    private let inFlight = Atomic<Int>(0)
    /// The lag counts from here until an event with a `receivedAt` commits.
    private let startedAt = Int64(Date().timeIntervalSince1970 * 1e6)

    /// Why an accepted webhook was refused: the metric's `rule` label (the
    /// rules' refusals by their `EventDisposition.rejectionCode`).
    enum RefusalRule: String, CaseIterable {
        case conflictingCreated = "conflicting_created"
        case ownerChange = "owner_change"
        case databaseRefused = "database_refused"

        init?(_ disposition: EventDisposition) {
            guard let rule = disposition.rejectionCode.flatMap(RefusalRule.init(rawValue:)) else { return nil }
            self = rule
        }
    }

    /// What a stored event's changed verdict became: the metric's `to` label.
    enum VerdictChange: String, CaseIterable {
        case refused
        case accepted
        case otherReason = "other_reason"
    }

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        func name(_ metric: String, _ unit: String, _ help: String) -> MetricNameDescriptor {
            MetricNameDescriptor(namespace: "meetperry", subsystem: "applier", metricName: metric, unitName: unit, helpText: help)
        }
        let events = name("events", "total", "Events the applier finished with, by outcome (applied, duplicate, pending, rejected).")
        linesRead = registry.makeCounter(descriptor: name("lines_read", "total", "Lines (or stream messages) read, blank lines aside."))
        applied = registry.makeCounter(descriptor: events, labels: [("outcome", "applied")])
        duplicates = registry.makeCounter(descriptor: events, labels: [("outcome", "duplicate")])
        pending = registry.makeCounter(descriptor: events, labels: [("outcome", "pending")])
        rejected = registry.makeCounter(descriptor: events, labels: [("outcome", "rejected")])
        batches = registry.makeCounter(descriptor: name("batches", "total", "Batches (transactions) committed."))
        commitDuration = registry.makeDurationHistogram(descriptor: name("commit", "seconds", "Time to apply and commit one batch."), buckets: [
            .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50),
            .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5), .seconds(5), .seconds(10),
        ])
        retries = registry.makeCounter(descriptor: name("retries", "total", "Batches tried again after PostgreSQL failed them (connection lost, write conflict)."))
        reconnects = registry.makeCounter(descriptor: name("reconnects", "total", "Connections to PostgreSQL made again after one was lost."))
        let lookups = name("task_cache_lookups", "total",
                           "Tasks of a batch the task cache answered (hit), could not (miss), or had remembered in a partition another writer changed since (changed).")
        cacheLookups = (registry.makeCounter(descriptor: lookups, labels: [("result", "hit")]),
                        registry.makeCounter(descriptor: lookups, labels: [("result", "miss")]),
                        registry.makeCounter(descriptor: lookups, labels: [("result", "changed")]))
        let refusal = name("rejected_after_acceptance", "total",
                           "Webhooks the receiver had accepted (202) that the rules or the database then refused, by rule.")
        var refusals: [String: Prometheus.Counter] = [:]
        for rule in RefusalRule.allCases {
            refusals[rule.rawValue] = registry.makeCounter(descriptor: refusal, labels: [("rule", rule.rawValue)])
        }
        rejectedAfterAcceptance = refusals
        let changes = name("verdict_changes", "total",
                           "Stored events whose verdict a later event changed (an earlier created arrived), by what it became (refused, accepted, other_reason).")
        var changed: [VerdictChange: Prometheus.Counter] = [:]
        for change in VerdictChange.allCases {
            changed[change] = registry.makeCounter(descriptor: changes, labels: [("to", change.rawValue)])
        }
        verdictChanges = changed
        lastCommittedReceivedAt = registry.makeGauge(descriptor: name("last_committed_received", "timestamp_seconds",
                                                                      "When the newest committed event was received (Unix time)."))
        lag = registry.makeGauge(descriptor: name("lag", "seconds",
                                                  "Now minus when the newest committed event was received, while events wait to commit; 0 when all read is committed."))
    }

    /// An event went into a batch.
    func eventBatched() {
        inFlight.add(1, ordering: .relaxed)
    }

    /// A batch (or a part of a split one) committed in `nanoseconds`.
    func committed(_ outcome: BatchOutcome, of batch: PreparedBatch, nanoseconds: Int64) {
        batches.increment()
        commitDuration.recordNanoseconds(nanoseconds)
        applied.increment(by: Int64(outcome.applied))
        duplicates.increment(by: Int64(outcome.duplicates))
        pending.increment(by: Int64(outcome.pending))
        rejected.increment(by: Int64(outcome.rejected.count))
        cacheLookups.hit.increment(by: Int64(outcome.cache.hits))
        cacheLookups.miss.increment(by: Int64(outcome.cache.misses - outcome.cache.stale))
        cacheLookups.changed.increment(by: Int64(outcome.cache.stale))
        var newest: Int64 = 0
        for item in batch.items { newest = max(newest, item.record.receivedAt?.microsecondsSinceEpoch ?? 0) }
        if newest > 0 { newestCommitted.max(newest, ordering: .relaxed) }
        inFlight.subtract(batch.count, ordering: .relaxed)
    }

    /// A batched event the rules or the database refused after it was accepted.
    func refusedAfterAcceptance(_ rule: RefusalRule) {
        rejectedAfterAcceptance[rule.rawValue]?.increment()
    }

    /// A stored event's verdict changed.
    func verdictChanged(to change: VerdictChange) {
        verdictChanges[change]?.increment()
    }

    /// An event the database refused on its own (a batch split down to it).
    func rejectedAlone() {
        rejected.increment()
        inFlight.subtract(1, ordering: .relaxed)
    }

    /// A line that did not decode (or was too long, or empty).
    func lineRejected() {
        rejected.increment()
    }

    /// The Prometheus text of every metric. The lag is worked out now: the
    /// time since the newest committed event was received (since start-up,
    /// before any) while events are read and not yet committed, and 0 when
    /// everything read is committed (a quiet input is not a lagging applier).
    public func exposition(now: Date = Date()) -> [UInt8] {
        let newest = newestCommitted.load(ordering: .relaxed)
        if newest > 0 { lastCommittedReceivedAt.set(Double(newest) / 1e6) }
        if inFlight.load(ordering: .relaxed) > 0 {
            let since = newest > 0 ? newest : startedAt
            lag.set(max(0, now.timeIntervalSince1970 - Double(since) / 1e6))
        } else {
            lag.set(Double(0))
        }
        return registry.emitToBuffer()
    }
}
