import CommandSupport
import ReceiverCore

/// The receiver's settings, each declared once (variable, flag, default,
/// range, meaning): its flags, their help, their resolution and README's
/// configuration table all come from here. Defaults are
/// `ReceiverConfiguration`'s own.
enum ReceiverSettings {
    private static let defaults = ReceiverConfiguration()

    static let httpHost = Setting("HTTP_HOST", flag: "http-host", default: defaults.host, valueName: "address", "Address to listen on")
    static let httpPort = Setting("HTTP_PORT", flag: "http-port", default: defaults.port, range: 0...65_535, valueName: "port", "Port to listen on")
    static let maxBodyBytes = Setting("MAX_BODY_BYTES", flag: "max-body-bytes", default: defaults.maxBodyBytes, range: 1...(1 << 30),
                                      valueName: "bytes", "Largest accepted body in bytes")
    static let webhookSecret = Setting<String>(
        "WEBHOOK_SECRET", flag: "webhook-secret", default: nil, valueName: "secrets",
        "Standard Webhooks secret 'whsec_…', or several separated by spaces (any may sign); unset means no signature check")
    static let tlsCertFile = Setting<String>("TLS_CERT_FILE", flag: "tls-cert-file", default: nil, valueName: "file",
                                             "PEM certificate (chain) for HTTPS on the same port; re-read on SIGHUP")
    static let tlsKeyFile = Setting<String>("TLS_KEY_FILE", flag: "tls-key-file", default: nil, valueName: "file", "PEM private key of that certificate")
    static let archivePath = Setting<String>("ARCHIVE_PATH", flag: "archive-path", default: nil, valueName: "file",
                                             "Append-only, fsynced copy of every accepted line")
    static let archiveRotateBytes = Setting("ARCHIVE_ROTATE_BYTES", flag: "archive-rotate-bytes", default: defaults.archiveRotateBytes,
                                            range: 0...(1 << 40), valueName: "bytes", "Rotate the archive before it passes this many bytes; 0: never by size")
    static let archiveRotateDaily = Setting("ARCHIVE_ROTATE_DAILY", flag: "archive-rotate-daily", default: defaults.archiveRotateDaily,
                                            valueName: "bool", "Rotate the archive at each new UTC day: true or false")
    static let queueCapacity = Setting("QUEUE_CAPACITY", flag: "queue-capacity", default: defaults.queueCapacity, range: 1...1_000_000,
                                       valueName: "n", "Lines waiting for stdout before answering 503")
    static let queueBytes = Setting("QUEUE_BYTES", flag: "queue-bytes", default: defaults.queueBytes, range: 1...(1 << 34),
                                    valueName: "bytes", "Bytes waiting for stdout before answering 503")
    static let queueTimeoutSeconds = Setting(
        "QUEUE_TIMEOUT_SECONDS", flag: "queue-timeout-seconds", default: defaults.queueTimeoutSeconds, range: 1...86_400, valueName: "s",
        "Seconds a webhook may wait for a stalled stdout reader (or the stream's acknowledgement) before 503")
    static let stallTimeoutMs = Setting("STALL_TIMEOUT_MS", flag: "stall-timeout-ms", default: defaults.stallTimeoutMilliseconds,
                                        range: 10...3_600_000, valueName: "ms",
                                        "Milliseconds without the reader taking anything before new webhooks get 503 at once")
    static let requestTimeoutSeconds = Setting("REQUEST_TIMEOUT_SECONDS", flag: "request-timeout-seconds", default: defaults.requestTimeoutSeconds,
                                               range: 1...86_400, valueName: "s", "Seconds a connection has to send each whole request")
    static let maxConnections = Setting("MAX_CONNECTIONS", flag: "max-connections", default: defaults.maxConnections, range: 1...1_000_000,
                                        valueName: "n", "Connections open at once; more wait to be accepted")
    static let idleTimeoutSeconds = Setting("IDLE_TIMEOUT_SECONDS", flag: "idle-timeout-seconds", default: defaults.idleTimeoutSeconds,
                                            range: 1...86_400, valueName: "s", "Seconds an idle connection is kept")
    static let metricsPort = Setting<Int>(
        "RECEIVER_METRICS_PORT", flag: "metrics-port", default: nil, range: 0...65_535, valueName: "port",
        "Serve GET /metrics on this port of its own instead of the public one (which then answers 404 there); 0 picks a free one (logged)")
    static let metricsHost = Setting("RECEIVER_METRICS_HOST", flag: "metrics-host", default: defaults.metricsHost, valueName: "address",
                                     "Address the metrics port binds to")

    /// Every setting the receiver reads, for the README check.
    static let all: [any SettingDeclaration] = [
        httpHost, httpPort, maxBodyBytes, webhookSecret, tlsCertFile, tlsKeyFile, archivePath, archiveRotateBytes, archiveRotateDaily,
        queueCapacity, queueBytes, queueTimeoutSeconds, stallTimeoutMs, requestTimeoutSeconds, maxConnections, idleTimeoutSeconds,
        metricsPort, metricsHost,
    ] + CommonOptions.settings + JetStreamOptions.settings
}
