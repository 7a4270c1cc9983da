import CLibNATS
import Synchronization

/// A subscription bound to a durable pull consumer: `fetch` asks for up to
/// a batch of messages and waits at most a timeout. Messages keep their
/// subscription alive, since acknowledging one goes through it.
public final class PullSubscription: @unchecked Sendable {
    let jetStream: JetStream
    let handle: OpaquePointer
    /// One fetch at a time (libnats refuses concurrent ones).
    private let fetching = Mutex(())

    /// Binds to the existing durable consumer `consumer` of `stream`.
    public init(jetStream: JetStream, stream: String, consumer: String, subject: String) throws(NATSError) {
        var options = jsSubOptions()
        jsSubOptions_Init(&options)
        var subscription: OpaquePointer?
        var code = jsErrCode(rawValue: 0)
        let status: natsStatus = stream.withCString { streamName in
            consumer.withCString { consumerName in
                options.Stream = streamName
                options.Consumer = consumerName
                return js_PullSubscribe(&subscription, jetStream.handle, subject, consumer, nil, &options, &code)
            }
        }
        guard status == NATS_OK, let subscription else {
            throw NATSError.from(status, jetStreamCode: code, doing: "subscribing to consumer \(consumer) of stream \(stream)")
        }
        self.jetStream = jetStream
        self.handle = subscription
    }

    deinit {
        // Not Unsubscribe: that would delete the durable consumer the others share.
        natsSubscription_Destroy(handle)
    }

    /// Up to `batch` messages, waiting at most `timeoutMilliseconds` for the
    /// first and returning what came by then; empty when none came.
    public func fetch(batch: Int, timeoutMilliseconds: Int64) throws(NATSError) -> [JetStreamMessage] {
        var list = natsMsgList()
        var code = jsErrCode(rawValue: 0)
        let status = fetching.withLock { _ in
            natsSubscription_Fetch(&list, handle, Int32(batch), max(1, timeoutMilliseconds), &code)
        }
        if status == NATS_TIMEOUT { return [] }
        guard status == NATS_OK else {
            natsMsgList_Destroy(&list)
            throw NATSError.from(status, jetStreamCode: code, doing: "fetching messages")
        }
        var messages: [JetStreamMessage] = []
        messages.reserveCapacity(Int(list.Count))
        for index in 0..<Int(list.Count) {
            guard let message = list.Msgs[index] else { continue }
            // Taken out of the list, so destroying the list leaves it alone.
            list.Msgs[index] = nil
            messages.append(JetStreamMessage(message, subscription: self))
        }
        natsMsgList_Destroy(&list)
        return messages
    }
}

/// A message fetched from a pull consumer, until it is acknowledged,
/// refused for redelivery, or terminated. Its data is copied out at once.
public final class JetStreamMessage: @unchecked Sendable {
    private let handle: OpaquePointer
    private let subscription: PullSubscription
    public let data: [UInt8]
    /// The message's sequence number in the stream.
    public let streamSequence: UInt64
    /// How many times it has been delivered (1 the first time).
    public let deliveries: UInt64

    init(_ handle: OpaquePointer, subscription: PullSubscription) {
        self.handle = handle
        self.subscription = subscription
        let length = Int(natsMsg_GetDataLength(handle))
        if length > 0, let bytes = natsMsg_GetData(handle) {
            data = Array(UnsafeRawBufferPointer(start: bytes, count: length))
        } else {
            data = []
        }
        var meta: UnsafeMutablePointer<jsMsgMetaData>?
        if natsMsg_GetMetaData(&meta, handle) == NATS_OK, let meta {
            streamSequence = meta.pointee.Sequence.Stream
            deliveries = meta.pointee.NumDelivered
            jsMsgMetaData_Destroy(meta)
        } else {
            streamSequence = 0
            deliveries = 0
        }
    }

    deinit { natsMsg_Destroy(handle) }

    /// Done with: not delivered again.
    public func ack() throws(NATSError) { try settle(natsMsg_Ack(handle, nil), "acknowledging") }
    /// Not done with: delivered again (to any fetcher) at once.
    public func nak() throws(NATSError) { try settle(natsMsg_Nak(handle, nil), "refusing") }
    /// Never to be delivered again, though not processed (it cannot be).
    public func term() throws(NATSError) { try settle(natsMsg_Term(handle, nil), "terminating") }

    private func settle(_ status: natsStatus, _ what: String) throws(NATSError) {
        guard status == NATS_OK else { throw NATSError.from(status, doing: "\(what) stream message \(streamSequence)") }
    }
}
