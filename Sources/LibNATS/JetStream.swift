import CLibNATS
#if canImport(Glibc)
import Glibc
#endif
import Synchronization

/// A stream's settings, as meetperry makes and compares them.
public struct StreamSettings: Sendable, Equatable {
    public var name: String
    public var subjects: [String]
    /// On-disk (file) storage; false means memory.
    public var fileStorage = true
    public var replicas: Int = 1
    /// Messages with a `Nats-Msg-Id` seen within this window are stored once.
    public var duplicateWindowNanoseconds: Int64 = 120_000_000_000
    /// Messages older than this are removed (0: kept for ever).
    public var maxAgeNanoseconds: Int64 = 0

    public init(name: String, subjects: [String]) {
        self.name = name
        self.subjects = subjects
    }
}

/// What the server says of a stream.
public struct StreamInfo: Sendable {
    public var settings: StreamSettings
    public var messages: UInt64
    public var lastSequence: UInt64
    /// The server leading the stream's Raft group (clustered streams only).
    public var leader: String?
}

/// A durable pull consumer's settings.
public struct ConsumerSettings: Sendable, Equatable {
    public var durableName: String
    public var filterSubject: String
    /// A message not acknowledged this long after delivery is delivered again.
    public var ackWaitNanoseconds: Int64 = 30_000_000_000
    /// Delivered but unacknowledged messages, across every fetcher, at most.
    public var maxAckPending: Int64 = 100_000

    public init(durableName: String, filterSubject: String) {
        self.durableName = durableName
        self.filterSubject = filterSubject
    }
}

/// What the server says of a consumer: its settings and where it stands.
public struct ConsumerInfo: Sendable {
    public var settings: ConsumerSettings
    /// Delivered and not yet acknowledged (or terminated).
    public var ackPending: Int64
    /// Delivered more than once and not yet acknowledged.
    public var redelivered: Int64
    /// In the stream and not yet delivered.
    public var pending: UInt64
}

/// What became of an asynchronous publish.
public enum PublishResult: Sendable {
    /// Stored by the stream (on a quorum of its replicas) at `sequence`;
    /// `duplicate`: a message with the same id was stored before, within the window.
    case stored(sequence: UInt64, duplicate: Bool)
    /// Not stored, or not known to be: no acknowledgement in time, no
    /// stream for the subject, the stream refused it.
    case failed(NATSError)
}

/// JetStream on one connection: managing streams and consumers, publishing
/// with acknowledgements (many in flight, each answered through `onAck` on a
/// libnats thread), and pull subscriptions.
public final class JetStream: @unchecked Sendable {
    /// Receives acknowledgements; registered by number, not pointer.
    final class Acks: Sendable {
        let handler: @Sendable (UInt64, PublishResult) -> Void
        /// In-flight messages (by address) and the caller's token for each.
        let tokens = Mutex<[UInt: UInt64]>([:])
        init(_ handler: @escaping @Sendable (UInt64, PublishResult) -> Void) { self.handler = handler }
    }

    let connection: NATSConnection
    let handle: OpaquePointer
    private let acks: Acks?
    private let acksId: Int?
    private let requestTimeoutMilliseconds: Int64

    /// - Parameters:
    ///   - requestTimeoutMilliseconds: how long a management request (stream
    ///     info, add consumer) waits for its answer.
    ///   - maxPendingPublishes: asynchronous publishes in flight at most; past
    ///     it `publish` fails at once instead of blocking.
    ///   - onAck: called once per `publish` that was accepted for sending, with
    ///     its token and result, on a libnats thread. nil: this context does
    ///     not publish asynchronously.
    public init(
        connection: NATSConnection, requestTimeoutMilliseconds: Int64 = 5000, maxPendingPublishes: Int64 = 65_536,
        onAck: (@Sendable (UInt64, PublishResult) -> Void)? = nil
    ) throws(NATSError) {
        var options = jsOptions()
        jsOptions_Init(&options)
        options.Wait = requestTimeoutMilliseconds
        var acksId: Int?
        if let onAck {
            let acks = Acks(onAck)
            let id = CallbackRegistry.register(acks)
            self.acks = acks
            acksId = id
            options.PublishAsync.MaxPending = maxPendingPublishes
            options.PublishAsync.StallWait = 1
            options.PublishAsync.AckHandler = { _, message, ack, failure, closure in
                JetStream.acknowledged(message, ack, failure, closure)
            }
            options.PublishAsync.AckHandlerClosure = CallbackRegistry.closure(for: id)
        } else {
            self.acks = nil
        }
        var context: OpaquePointer?
        let status = natsConnection_JetStream(&context, connection.handle, &options)
        guard status == NATS_OK, let context else {
            if let acksId { CallbackRegistry.unregister(acksId) }
            throw NATSError.from(status, doing: "opening JetStream")
        }
        self.connection = connection
        self.handle = context
        self.acksId = acksId
        self.requestTimeoutMilliseconds = requestTimeoutMilliseconds
    }

    deinit {
        jsCtx_Destroy(handle)
        if let acksId { CallbackRegistry.unregister(acksId) }
    }

    // MARK: - Streams and consumers

    /// The stream's information, or nil when there is no such stream.
    public func streamInfo(_ name: String) throws(NATSError) -> StreamInfo? {
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        let status = js_GetStreamInfo(&info, handle, name, nil, &code)
        if status == NATS_NOT_FOUND || code == JSStreamNotFoundErr { return nil }
        guard status == NATS_OK, let info else { throw NATSError.from(status, jetStreamCode: code, doing: "reading stream \(name)") }
        defer { jsStreamInfo_Destroy(info) }
        return Self.streamInfo(info.pointee)
    }

    /// Creates the stream; throws if it cannot (another stream holds the subject, too few servers for the replicas).
    @discardableResult
    public func addStream(_ settings: StreamSettings) throws(NATSError) -> StreamInfo {
        var config = jsStreamConfig()
        jsStreamConfig_Init(&config)
        var info: UnsafeMutablePointer<jsStreamInfo>?
        var code = jsErrCode(rawValue: 0)
        let subjects = settings.subjects.map { strdup($0) }
        defer { subjects.forEach { free($0) } }
        let status: natsStatus = settings.name.withCString { name in
            subjects.withUnsafeBufferPointer { subjectPointers in
                subjectPointers.withMemoryRebound(to: UnsafePointer<CChar>?.self) { subjectList in
                    config.Name = name
                    config.Subjects = UnsafeMutablePointer(mutating: subjectList.baseAddress)
                    config.SubjectsLen = Int32(subjectList.count)
                    config.Storage = settings.fileStorage ? js_FileStorage : js_MemoryStorage
                    config.Replicas = Int64(settings.replicas)
                    config.Duplicates = settings.duplicateWindowNanoseconds
                    config.MaxAge = settings.maxAgeNanoseconds
                    return js_AddStream(&info, handle, &config, nil, &code)
                }
            }
        }
        guard status == NATS_OK, let info else { throw NATSError.from(status, jetStreamCode: code, doing: "creating stream \(settings.name)") }
        defer { jsStreamInfo_Destroy(info) }
        return Self.streamInfo(info.pointee)
    }

    /// The durable consumer as the server has it, or nil when there is none.
    public func consumerInfo(stream: String, consumer: String) throws(NATSError) -> ConsumerInfo? {
        var info: UnsafeMutablePointer<jsConsumerInfo>?
        var code = jsErrCode(rawValue: 0)
        let status = js_GetConsumerInfo(&info, handle, stream, consumer, nil, &code)
        if status == NATS_NOT_FOUND || code == JSConsumerNotFoundErr { return nil }
        guard status == NATS_OK, let info else {
            throw NATSError.from(status, jetStreamCode: code, doing: "reading consumer \(consumer) of stream \(stream)")
        }
        defer { jsConsumerInfo_Destroy(info) }
        let config = info.pointee.Config.pointee
        var settings = ConsumerSettings(durableName: consumer, filterSubject: config.FilterSubject.map { String(cString: $0) } ?? "")
        settings.ackWaitNanoseconds = config.AckWait
        settings.maxAckPending = config.MaxAckPending
        return ConsumerInfo(settings: settings, ackPending: info.pointee.NumAckPending,
                            redelivered: info.pointee.NumRedelivered, pending: info.pointee.NumPending)
    }

    /// Creates a durable pull consumer with explicit acknowledgements that
    /// starts at the stream's first message and redelivers without limit.
    public func addConsumer(stream: String, _ settings: ConsumerSettings) throws(NATSError) {
        var config = jsConsumerConfig()
        jsConsumerConfig_Init(&config)
        var info: UnsafeMutablePointer<jsConsumerInfo>?
        var code = jsErrCode(rawValue: 0)
        let status: natsStatus = settings.durableName.withCString { durable in
            settings.filterSubject.withCString { filter in
                config.Durable = durable
                config.FilterSubject = filter
                config.AckPolicy = js_AckExplicit
                config.DeliverPolicy = js_DeliverAll
                config.AckWait = settings.ackWaitNanoseconds
                config.MaxDeliver = -1
                config.MaxAckPending = settings.maxAckPending
                return js_AddConsumer(&info, handle, stream, &config, nil, &code)
            }
        }
        guard status == NATS_OK, let info else {
            throw NATSError.from(status, jetStreamCode: code, doing: "creating consumer \(settings.durableName) of stream \(stream)")
        }
        jsConsumerInfo_Destroy(info)
    }

    private static func streamInfo(_ info: jsStreamInfo) -> StreamInfo {
        let config = info.Config.pointee
        var settings = StreamSettings(
            name: String(cString: config.Name),
            subjects: (0..<Int(config.SubjectsLen)).compactMap { config.Subjects[$0].map { String(cString: $0) } })
        settings.fileStorage = config.Storage == js_FileStorage
        settings.replicas = Int(config.Replicas)
        settings.duplicateWindowNanoseconds = config.Duplicates
        settings.maxAgeNanoseconds = config.MaxAge
        return StreamInfo(
            settings: settings, messages: info.State.Msgs, lastSequence: info.State.LastSeq,
            leader: info.Cluster?.pointee.Leader.map { String(cString: $0) })
    }

    // MARK: - Publishing

    /// Publishes `data` to `subject` with a `Nats-Msg-Id` and returns without
    /// waiting; `onAck` gets `token` and the result once the stream answers,
    /// or a timeout after `maxWaitMilliseconds`. Throws (and `onAck` is not
    /// called) when the message could not be handed to the connection.
    public func publish(subject: String, data: UnsafeRawBufferPointer, messageId: String, maxWaitMilliseconds: Int64, token: UInt64) throws(NATSError) {
        guard let acks else { throw NATSError(status: NATS_ILLEGAL_STATE.rawValue, message: "this JetStream context takes no acknowledgements") }
        var message: OpaquePointer?
        var status = natsMsg_Create(&message, subject, nil, data.baseAddress?.assumingMemoryBound(to: CChar.self), Int32(data.count))
        guard status == NATS_OK, let created = message else { throw NATSError.from(status, doing: "making a message") }
        let key = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(created)))
        acks.tokens.withLock { $0[key] = token }
        var options = jsPubOptions()
        jsPubOptions_Init(&options)
        options.MaxWait = maxWaitMilliseconds
        status = messageId.withCString { id in
            options.MsgId = id
            return js_PublishMsgAsync(handle, &message, &options)
        }
        guard status == NATS_OK else {
            // Not taken: the message is still ours, and no acknowledgement will come.
            acks.tokens.withLock { _ = $0.removeValue(forKey: key) }
            natsMsg_Destroy(message)
            throw NATSError.from(status, doing: "publishing to \(subject)")
        }
    }

    /// Waits until every asynchronous publish is answered; false on timeout.
    public func waitForAcknowledgements(timeoutMilliseconds: Int64) -> Bool {
        var options = jsPubOptions()
        jsPubOptions_Init(&options)
        options.MaxWait = timeoutMilliseconds
        return js_PublishAsyncComplete(handle, &options) == NATS_OK
    }

    private static func acknowledged(
        _ message: OpaquePointer?, _ ack: UnsafeMutablePointer<jsPubAck>?, _ failure: UnsafeMutablePointer<jsPubAckErr>?,
        _ closure: UnsafeMutableRawPointer?
    ) {
        defer { natsMsg_Destroy(message) }
        guard let message, let acks = CallbackRegistry.owner(closure, as: Acks.self) else { return }
        let key = UInt(bitPattern: Int(bitPattern: UnsafeRawPointer(message)))
        guard let token = acks.tokens.withLock({ $0.removeValue(forKey: key) }) else { return }
        if let ack {
            acks.handler(token, .stored(sequence: ack.pointee.Sequence, duplicate: ack.pointee.Duplicate))
        } else {
            let status = failure?.pointee.Err ?? NATS_ERR
            let code = failure?.pointee.ErrCode ?? jsErrCode(rawValue: 0)
            let text = failure?.pointee.ErrText.map { String(cString: $0) } ?? String(cString: natsStatus_GetText(status))
            acks.handler(token, .failed(NATSError(status: status.rawValue, jetStreamCode: Int(code.rawValue), message: "publishing: \(text)")))
        }
    }
}
