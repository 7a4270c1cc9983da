import ArgumentParser
import JetStreamSetup

/// The JetStream options the receiver and the applier share
/// (`@OptionGroup`): unset `NATS_URL` means the pipe, the default.
public struct JetStreamOptions: ParsableArguments {
    @Option(help: ArgumentHelp("JetStream mode: comma-separated nats://host:port servers of the cluster; unset: the pipe [NATS_URL].", valueName: "urls"))
    public var natsUrl: String?
    @Option(help: ArgumentHelp("Stream the webhooks go to [NATS_STREAM, default MEETPERRY].", valueName: "name"))
    public var natsStream: String?
    @Option(help: ArgumentHelp("Subject the webhooks are published to [NATS_SUBJECT, default meetperry.webhooks].", valueName: "subject"))
    public var natsSubject: String?
    @Option(help: ArgumentHelp("Replicas of the stream when it is made (1, 3 or 5) [NATS_REPLICAS, default 1].", valueName: "n"))
    public var natsReplicas: Int?
    @Option(help: ArgumentHelp("Hours the stream keeps a webhook when it is made [NATS_MAX_AGE_HOURS, default 168].", valueName: "h"))
    public var natsMaxAgeHours: Int?
    @Option(help: ArgumentHelp("Use nats-servers older than the minimum release anyway, accepting that a 202 may not survive a crash [NATS_ALLOW_UNSAFE_SERVER, default false].",
                               valueName: "true|false"))
    public var natsAllowUnsafeServer: Bool?

    public init() {}

    /// The settings, or nil when `NATS_URL` is unset; throws for a setting
    /// that cannot be used (`Settings.InvalidSetting`, `JetStreamSettings.Invalid`), naming it.
    public func resolve(_ settings: Settings = Settings(), consumer: String? = nil) throws -> JetStreamSettings? {
        guard let url = natsUrl ?? settings.string("NATS_URL") else { return nil }
        var jetStream = JetStreamSettings(servers: try JetStreamSettings.servers(from: url))
        jetStream.stream = settings.string(natsStream, "NATS_STREAM", default: jetStream.stream)
        try JetStreamSettings.checkName(jetStream.stream, variable: "NATS_STREAM")
        jetStream.subject = settings.string(natsSubject, "NATS_SUBJECT", default: jetStream.subject)
        try JetStreamSettings.checkSubject(jetStream.subject, variable: "NATS_SUBJECT")
        jetStream.replicas = try settings.int(("--nats-replicas", natsReplicas), "NATS_REPLICAS", default: jetStream.replicas, range: 1...5)
        jetStream.maxAgeHours = try settings.int(("--nats-max-age-hours", natsMaxAgeHours), "NATS_MAX_AGE_HOURS", default: jetStream.maxAgeHours,
                                                 range: 0...876_000)
        jetStream.allowUnsafeServer = try settings.bool(natsAllowUnsafeServer, "NATS_ALLOW_UNSAFE_SERVER", default: false)
        if let consumer {
            jetStream.consumer = consumer
            try JetStreamSettings.checkName(jetStream.consumer, variable: "NATS_CONSUMER")
        }
        return jetStream
    }
}
