import CoreMetrics
import Foundation
import Prometheus
import Synchronization

/// The receiver's Prometheus metrics, served on `GET /metrics`: requests by
/// status, the queue in front of stdout, bytes written, and how long writing
/// and archiving (write + fdatasync) take. Built on swift-metrics with an
/// explicit `PrometheusMetricsFactory`, so nothing is bootstrapped globally
/// and every test can have its own registry.
public final class ReceiverMetrics: Sendable {
    public let registry: PrometheusCollectorRegistry
    private let factory: PrometheusMetricsFactory
    /// The statuses the receiver answers, made up front: counting them takes no lock.
    private let commonRequestCounters: [Int: CoreMetrics.Counter]
    /// Any other status, made the first time it is answered.
    private let otherRequestCounters = Mutex<[Int: CoreMetrics.Counter]>([:])
    let queueDepth: CoreMetrics.Gauge
    let bytesWritten: CoreMetrics.Counter
    let linesWritten: CoreMetrics.Counter
    let writeDuration: CoreMetrics.Timer
    let archiveDuration: CoreMetrics.Timer
    let publishDuration: CoreMetrics.Timer

    public init(registry: PrometheusCollectorRegistry = PrometheusCollectorRegistry()) {
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        let latencyBuckets: [Duration] = [
            .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500),
            .milliseconds(1), .milliseconds(2.5), .milliseconds(5), .milliseconds(10), .milliseconds(25),
            .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(2.5),
        ]
        factory.durationHistogramBuckets = [
            "meetperry_receiver_stream_write_seconds": latencyBuckets,
            "meetperry_receiver_archive_append_seconds": latencyBuckets,
            "meetperry_receiver_publish_ack_seconds": latencyBuckets,
        ]
        self.factory = factory
        var common: [Int: CoreMetrics.Counter] = [:]
        for status in [200, 202, 400, 401, 404, 405, 413, 415, 422, 500, 503] {
            common[status] = Counter(label: "meetperry_receiver_requests_total", dimensions: [("status", String(status))], factory: factory)
        }
        commonRequestCounters = common
        queueDepth = Gauge(label: "meetperry_receiver_queue_depth", factory: factory)
        bytesWritten = Counter(label: "meetperry_receiver_stream_bytes_total", factory: factory)
        linesWritten = Counter(label: "meetperry_receiver_stream_lines_total", factory: factory)
        writeDuration = Timer(label: "meetperry_receiver_stream_write_seconds", factory: factory)
        archiveDuration = Timer(label: "meetperry_receiver_archive_append_seconds", factory: factory)
        publishDuration = Timer(label: "meetperry_receiver_publish_ack_seconds", factory: factory)
    }

    /// Counts one answered request.
    func countRequest(status: Int) {
        if let counter = commonRequestCounters[status] { return counter.increment() }
        let factory = self.factory
        otherRequestCounters.withLock { counters in
            if let existing = counters[status] { return existing }
            let made = Counter(label: "meetperry_receiver_requests_total", dimensions: [("status", String(status))], factory: factory)
            counters[status] = made
            return made
        }.increment()
    }

    /// A line the JetStream stream acknowledged, `started` (uptime nanoseconds) after it was published.
    func recordPublish(since started: UInt64) {
        publishDuration.recordNanoseconds(Int64(DispatchTime.now().uptimeNanoseconds - started))
        linesWritten.increment()
    }

    /// `meetperry_receiver_output{output="…"} 1`: where accepted webhooks go, as
    /// `/healthz` says (`stdout`, `jetstream`, `jetstream (server versions not enforced: …)`).
    func recordOutput(_ mode: String) {
        Gauge(label: "meetperry_receiver_output", dimensions: [("output", mode)], factory: factory).record(1)
    }

    /// The Prometheus text exposition of every metric.
    public func exposition() -> [UInt8] {
        registry.emitToBuffer()
    }
}
