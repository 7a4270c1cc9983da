import JetStreamSetup

/// Everything the receiver needs to run, resolved from flags and environment
/// (README.md, Configuration) by the executable and passed to `runReceiver`.
public struct ReceiverConfiguration: Sendable {
    public var host: String = "0.0.0.0"
    public var port: Int = 8000
    /// A listening socket handed over by systemd (`SocketActivation`), and the
    /// address it listens on; when set, `host` and `port` are not bound.
    public var listenSocket: Int32?
    public var listenAddress: String?
    public var maxBodyBytes: Int = 1_048_576
    /// `whsec_…`; nil turns signature checks off.
    public var webhookSecret: String?
    /// PEM certificate (chain) and private key; both set means HTTPS on `port`.
    public var tlsCertificateFile: String?
    public var tlsKeyFile: String?
    /// Durable append-only copy of every accepted line; nil for none.
    public var archivePath: String?
    /// Rotate the archive before it would pass this many bytes; 0: never by size.
    public var archiveRotateBytes: Int = 64 * 1_048_576
    /// Rotate the archive at the first write of each UTC day.
    public var archiveRotateDaily: Bool = true
    /// Lines accepted but not yet written; past this the receiver answers 503.
    public var queueCapacity: Int = 4096
    /// Bytes accepted but not yet written; past this the receiver answers 503.
    public var queueBytes: Int = 8 * 1_048_576
    /// Seconds a sender may wait for a stalled reader before its webhook is refused (503).
    public var queueTimeoutSeconds: Int = 4
    /// Milliseconds without the reader taking anything after which the output
    /// counts as stalled: new webhooks get 503 at once, `/healthz` 503.
    public var stallTimeoutMilliseconds: Int = 1000
    /// Seconds suggested to senders in `Retry-After` with a 503.
    public var retryAfterSeconds: Int = 1
    /// Seconds an idle keep-alive connection is kept open.
    public var idleTimeoutSeconds: Int = 60
    /// Seconds a connection has to deliver each whole request (from opening,
    /// or from the answer to its previous request); slow clients are closed.
    public var requestTimeoutSeconds: Int = 30
    /// Connections open at once; past this, new ones wait in the listen backlog.
    public var maxConnections: Int = 4096
    /// JetStream mode: each accepted line is published to this stream and
    /// answered once stored; nil: lines go to stdout.
    public var jetStream: JetStreamSettings?
    /// `/metrics` on an address of its own (off the public port, which then
    /// answers 404 there); nil: on the public port.
    public var metricsPort: Int?
    public var metricsHost: String = "127.0.0.1"

    public init() {}
}
