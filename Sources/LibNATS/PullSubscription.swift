import CLibNATS
import Foundation
import Synchronization

/// Fetches from a durable pull consumer through the plain JetStream API:
/// each fetch publishes a `CONSUMER.MSG.NEXT` request (`{"batch","expires",
/// "no_wait"}`) with a reply subject of its own, and reads the messages on a
/// subscription to them all.
///
/// Not libnats' `natsSubscription_Fetch`: in libnats 3.4.1 (Debian 12's) it
/// writes past its array when messages of an earlier, expired request are
/// still queued when the next fetch begins (fixed upstream in 3.9, nats.c
/// #749) — which happens under load. Here a message that comes after its
/// request ended is simply taken by the next fetch.
public final class PullSubscription: @unchecked Sendable {
    let jetStream: JetStream
    private let subscription: OpaquePointer
    /// `_INBOX.<unique>.`: request n's replies come to this prefix + n.
    private let replyPrefix: String
    /// `$JS.API.CONSUMER.MSG.NEXT.<stream>.<consumer>`.
    private let nextSubject: String
    /// How many pull requests were sent (request n's replies come to `replyPrefix` + n);
    /// held for the whole of a fetch, so there is one fetch at a time.
    private let requests = Mutex(0)

    /// Reads from the existing durable consumer `consumer` of `stream`.
    public init(jetStream: JetStream, stream: String, consumer: String) throws(NATSError) {
        var inbox: UnsafeMutablePointer<natsInbox>?
        var status = natsInbox_Create(&inbox)
        guard status == NATS_OK, let inbox else { throw NATSError.from(status, doing: "making an inbox") }
        let prefix = String(cString: inbox) + "."
        natsInbox_Destroy(inbox)
        var subscription: OpaquePointer?
        status = natsConnection_SubscribeSync(&subscription, jetStream.connection.handle, prefix + "*")
        guard status == NATS_OK, let subscription else { throw NATSError.from(status, doing: "subscribing to \(prefix)*") }
        // Never drop a delivered message for being slow: each is bounded by a request's batch.
        _ = natsSubscription_SetPendingLimits(subscription, -1, -1)
        self.jetStream = jetStream
        self.subscription = subscription
        self.replyPrefix = prefix
        self.nextSubject = "$JS.API.CONSUMER.MSG.NEXT.\(stream).\(consumer)"
    }

    deinit {
        // Not the consumer: the other appliers share it.
        natsSubscription_Destroy(subscription)
    }

    /// Up to `batch` messages: what is there now, or else the first that
    /// come within `timeoutMilliseconds` (up to the batch); empty when none came.
    public func fetch(batch: Int, timeoutMilliseconds: Int64) throws(NATSError) -> [JetStreamMessage] {
        try requests.withLock { (requests: inout Int) throws(NATSError) in
            let deadline = DispatchTime.now().uptimeNanoseconds + UInt64(max(1, timeoutMilliseconds)) * 1_000_000
            var messages: [JetStreamMessage] = []
            // Late messages of an earlier request first: they are ours.
            _ = try receive(into: &messages, batch: batch, request: nil, until: 0)
            guard messages.count < batch else { return messages }
            // What is there now, answered at once (a 404 status when there is less).
            let available = try request(&requests, batch: batch - messages.count, expiresMilliseconds: timeoutMilliseconds, noWait: true)
            _ = try receive(into: &messages, batch: batch, request: available, until: deadline)
            guard messages.isEmpty else { return messages }
            // Nothing: wait for the first to come, until the time is up (a 408 status then).
            let now = DispatchTime.now().uptimeNanoseconds
            let remaining = deadline > now ? Int64((deadline - now) / 1_000_000) : 0
            guard remaining > 20 else { return messages }
            let waiting = try request(&requests, batch: batch, expiresMilliseconds: remaining - 10, noWait: false)
            _ = try receive(into: &messages, batch: batch, request: waiting, until: deadline)
            return messages
        }
    }

    /// Publishes the next pull request (`requests` counts them); returns its reply subject.
    private func request(_ requests: inout Int, batch: Int, expiresMilliseconds: Int64, noWait: Bool) throws(NATSError) -> String {
        requests += 1
        let reply = replyPrefix + String(requests)
        let body = "{\"batch\":\(batch),\"expires\":\(max(1, expiresMilliseconds) * 1_000_000)\(noWait ? ",\"no_wait\":true" : "")}"
        let status = body.withCString { text in
            natsConnection_PublishRequest(jetStream.connection.handle, nextSubject, reply, text, Int32(strlen(text)))
        }
        guard status == NATS_OK else { throw NATSError.from(status, doing: "asking \(nextSubject) for messages") }
        return reply
    }

    /// Takes messages until `batch` are there, `request` (a reply subject)
    /// is answered with a status, or `until` (uptime ns; 0: only what is
    /// queued now) passes. Returns whether the request was answered.
    private func receive(into messages: inout [JetStreamMessage], batch: Int, request: String?, until deadline: UInt64) throws(NATSError) -> Bool {
        while messages.count < batch {
            let now = DispatchTime.now().uptimeNanoseconds
            let wait = deadline > now ? Int64((deadline - now) / 1_000_000) : 0
            var message: OpaquePointer?
            let status = natsSubscription_NextMsg(&message, subscription, max(1, wait))
            if status == NATS_TIMEOUT { return false }
            guard status == NATS_OK, let message else { throw NATSError.from(status, doing: "receiving from \(nextSubject)") }
            defer { natsMsg_Destroy(message) }
            if let statusCode = Self.statusCode(message) {
                // 100: a heartbeat. 404, 408, 409: that request is over (no
                // more now, expired, or refused). 503: no consumer answers.
                if statusCode == "503" {
                    throw NATSError(status: NATS_NO_RESPONDERS.rawValue, message: "no JetStream consumer answers \(nextSubject)")
                }
                if statusCode != "100", let request, String(cString: natsMsg_GetSubject(message)) == request { return true }
                continue
            }
            messages.append(JetStreamMessage(message, connection: jetStream.connection))
        }
        return false
    }

    /// The status of a status message (no data, a `Status` header), or nil for a message.
    private static func statusCode(_ message: OpaquePointer) -> String? {
        guard natsMsg_GetDataLength(message) == 0 else { return nil }
        var value: UnsafePointer<CChar>?
        guard natsMsgHeader_Get(message, "Status", &value) == NATS_OK, let value else { return nil }
        return String(String(cString: value).prefix(3))
    }
}

/// A message fetched from a pull consumer: its data, where it is in the
/// stream, and how to settle it — acknowledged (done), refused for
/// redelivery now, or terminated (never again). Settling publishes to the
/// message's reply subject, so nothing of libnats is held meanwhile.
public final class JetStreamMessage: Sendable {
    private let connection: NATSConnection
    private let reply: String
    public let data: [UInt8]
    /// The message's sequence number in the stream.
    public let streamSequence: UInt64
    /// How many times it has been delivered (1 the first time).
    public let deliveries: UInt64

    init(_ message: OpaquePointer, connection: NATSConnection) {
        self.connection = connection
        reply = natsMsg_GetReply(message).map { String(cString: $0) } ?? ""
        let length = Int(natsMsg_GetDataLength(message))
        if length > 0, let bytes = natsMsg_GetData(message) {
            data = Array(UnsafeRawBufferPointer(start: bytes, count: length))
        } else {
            data = []
        }
        var meta: UnsafeMutablePointer<jsMsgMetaData>?
        if natsMsg_GetMetaData(&meta, message) == NATS_OK, let meta {
            streamSequence = meta.pointee.Sequence.Stream
            deliveries = meta.pointee.NumDelivered
            jsMsgMetaData_Destroy(meta)
        } else {
            streamSequence = 0
            deliveries = 0
        }
    }

    /// Done with: not delivered again.
    public func ack() throws(NATSError) { try settle("+ACK", "acknowledging") }
    /// Not done with: delivered again (to any fetcher) at once.
    public func nak() throws(NATSError) { try settle("-NAK", "refusing") }
    /// Never to be delivered again, though not processed (it cannot be).
    public func term() throws(NATSError) { try settle("+TERM", "terminating") }

    private func settle(_ body: String, _ what: String) throws(NATSError) {
        guard reply.hasPrefix("$JS.ACK.") else {
            throw NATSError(status: NATS_ILLEGAL_STATE.rawValue, message: "\(what) stream message \(streamSequence): it came without a JetStream reply subject")
        }
        let status = natsConnection_PublishString(connection.handle, reply, body)
        guard status == NATS_OK else { throw NATSError.from(status, doing: "\(what) stream message \(streamSequence)") }
    }
}
