import ArgumentParser
import JetStreamSetup

/// The JetStream options the receiver and the applier share
/// (`@OptionGroup`): unset `NATS_URL` means the pipe, the default.
public struct JetStreamOptions: ParsableArguments {
    private typealias S = JetStreamOptions
    private static let defaults = JetStreamSettings(servers: [])

    public static let natsUrlSetting = Setting<String>("NATS_URL", flag: "nats-url", default: nil, valueName: "urls",
                                                       "JetStream mode: comma-separated nats://host:port servers of the cluster; unset: the pipe")
    public static let natsStreamSetting = Setting("NATS_STREAM", flag: "nats-stream", default: defaults.stream, valueName: "name",
                                                  "Stream the webhooks go to")
    public static let natsSubjectSetting = Setting("NATS_SUBJECT", flag: "nats-subject", default: defaults.subject, valueName: "subject",
                                                   "Subject the webhooks are published to")
    public static let natsReplicasSetting = Setting("NATS_REPLICAS", flag: "nats-replicas", default: defaults.replicas, range: 1...5, valueName: "n",
                                                    "Replicas of the stream when it is made (1, 3 or 5)")
    public static let natsMaxAgeHoursSetting = Setting("NATS_MAX_AGE_HOURS", flag: "nats-max-age-hours", default: defaults.maxAgeHours,
                                                       range: 0...876_000, valueName: "h", "Hours the stream keeps a webhook when it is made")
    public static let natsAllowUnsafeServerSetting = Setting(
        "NATS_ALLOW_UNSAFE_SERVER", flag: "nats-allow-unsafe-server", default: defaults.allowUnsafeServer, valueName: "true|false",
        "Use nats-servers older than the minimum release anyway, accepting that a 202 may not survive a crash")
    /// The applier's alone (the receiver publishes, it does not consume).
    public static let natsConsumerSetting = Setting("NATS_CONSUMER", flag: "nats-consumer", default: defaults.consumer, valueName: "name",
                                                    "Durable consumer the appliers share")
    public static let natsAckWaitSecondsSetting = Setting(
        "NATS_ACK_WAIT_SECONDS", flag: "nats-ack-wait-seconds", default: defaults.ackWaitSeconds, range: 1...86_400, valueName: "s",
        "When the consumer is made: seconds before a fetched, unacknowledged message goes to another applier")

    /// The settings of this group (both programs).
    public static let settings: [any SettingDeclaration] = [
        natsUrlSetting, natsStreamSetting, natsSubjectSetting, natsReplicasSetting, natsMaxAgeHoursSetting, natsAllowUnsafeServerSetting,
    ]

    @Option(name: S.natsUrlSetting.name, help: S.natsUrlSetting.help) public var natsUrl: String?
    @Option(name: S.natsStreamSetting.name, help: S.natsStreamSetting.help) public var natsStream: String?
    @Option(name: S.natsSubjectSetting.name, help: S.natsSubjectSetting.help) public var natsSubject: String?
    @Option(name: S.natsReplicasSetting.name, help: S.natsReplicasSetting.help) public var natsReplicas: Int?
    @Option(name: S.natsMaxAgeHoursSetting.name, help: S.natsMaxAgeHoursSetting.help) public var natsMaxAgeHours: Int?
    @Option(name: S.natsAllowUnsafeServerSetting.name, help: S.natsAllowUnsafeServerSetting.help) public var natsAllowUnsafeServer: Bool?

    public init() {}

    /// The settings, or nil when `NATS_URL` is unset; throws for a setting
    /// that cannot be used (`Settings.InvalidSetting`, `JetStreamSettings.Invalid`), naming it.
    public func resolve(_ settings: Settings = Settings(), consumer: String? = nil) throws -> JetStreamSettings? {
        guard let url = try settings.optional(S.natsUrlSetting, flag: natsUrl) else { return nil }
        var jetStream = JetStreamSettings(servers: try JetStreamSettings.servers(from: url))
        jetStream.stream = try settings.value(S.natsStreamSetting, flag: natsStream)
        try JetStreamSettings.checkName(jetStream.stream, variable: "NATS_STREAM")
        jetStream.subject = try settings.value(S.natsSubjectSetting, flag: natsSubject)
        try JetStreamSettings.checkSubject(jetStream.subject, variable: "NATS_SUBJECT")
        jetStream.replicas = try settings.value(S.natsReplicasSetting, flag: natsReplicas)
        jetStream.maxAgeHours = try settings.value(S.natsMaxAgeHoursSetting, flag: natsMaxAgeHours)
        jetStream.allowUnsafeServer = try settings.value(S.natsAllowUnsafeServerSetting, flag: natsAllowUnsafeServer)
        if let consumer {
            jetStream.consumer = consumer
            try JetStreamSettings.checkName(jetStream.consumer, variable: "NATS_CONSUMER")
        }
        return jetStream
    }
}
