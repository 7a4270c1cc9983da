import CLibNATS
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One connection to a NATS cluster through libnats: any of several
/// servers, reconnecting for ever, and — when no server answers at start —
/// connecting in the background rather than failing, so a program can start
/// while the cluster is down and say 503 until it is back. The only place
/// besides `JetStream` and `PullSubscription` that calls libnats; every
/// handle it makes is destroyed on every path.
public final class NATSConnection: @unchecked Sendable {
    /// How to reach the cluster.
    public struct Settings: Sendable {
        /// `nats://host:port` URLs; any may be used, and the cluster's others are learned.
        public var servers: [String]
        /// Shown by the server (`connz`), for operators.
        public var name: String
        public var connectTimeoutMilliseconds: Int64 = 2000
        public var reconnectWaitMilliseconds: Int64 = 250
        /// A dead server is noticed after `pingInterval × maxPingsOut`.
        public var pingIntervalMilliseconds: Int64 = 2000
        public var maxPingsOut: Int32 = 2
        /// What is kept to publish while reconnecting; past it, publishing fails at once.
        public var reconnectBufferBytes: Int32 = 8 * 1_048_576

        public init(servers: [String], name: String) {
            self.servers = servers
            self.name = name
        }
    }

    /// What happened to the connection (called on a libnats thread).
    public enum Event: Sendable {
        case connected(url: String)
        case disconnected
        case reconnected(url: String)
        case closed
    }

    /// Receives the connection's events; registered by number, not pointer.
    final class Events: Sendable {
        let handler: @Sendable (Event) -> Void
        /// Set by `close()`: the disconnection that follows is ours, not news.
        let closing = Atomic<Bool>(false)
        init(_ handler: @escaping @Sendable (Event) -> Void) { self.handler = handler }
    }

    let handle: OpaquePointer
    private let eventsId: Int
    private let events: Events

    /// Starts connecting to `settings.servers`; returns at once when none
    /// answers yet (the library keeps trying; `isConnected` tells). Throws
    /// for settings libnats refuses (a malformed URL).
    public init(_ settings: Settings, events: @escaping @Sendable (Event) -> Void = { _ in }) throws(NATSError) {
        var options: OpaquePointer?
        var status = natsOptions_Create(&options)
        guard status == NATS_OK, let options else { throw NATSError.from(status, doing: "creating connection options") }
        defer { natsOptions_Destroy(options) }

        let eventsObject = Events(events)
        let eventsId = CallbackRegistry.register(eventsObject)
        let closure = CallbackRegistry.closure(for: eventsId)
        var servers = settings.servers.map { strdup($0) }
        defer { servers.forEach { free($0) } }
        status = servers.withUnsafeMutableBufferPointer { buffer in
            buffer.withMemoryRebound(to: UnsafePointer<CChar>?.self) { natsOptions_SetServers(options, $0.baseAddress, Int32($0.count)) }
        }
        if status == NATS_OK { status = natsOptions_SetName(options, settings.name) }
        if status == NATS_OK { status = natsOptions_SetTimeout(options, settings.connectTimeoutMilliseconds) }
        if status == NATS_OK { status = natsOptions_SetAllowReconnect(options, true) }
        if status == NATS_OK { status = natsOptions_SetMaxReconnect(options, -1) }
        if status == NATS_OK { status = natsOptions_SetReconnectWait(options, settings.reconnectWaitMilliseconds) }
        if status == NATS_OK { status = natsOptions_SetPingInterval(options, settings.pingIntervalMilliseconds) }
        if status == NATS_OK { status = natsOptions_SetMaxPingsOut(options, settings.maxPingsOut) }
        if status == NATS_OK { status = natsOptions_SetReconnectBufSize(options, settings.reconnectBufferBytes) }
        if status == NATS_OK { status = natsOptions_SetRetryOnFailedConnect(options, true, { nc, closure in
            NATSConnection.post(.connected(url: NATSConnection.url(nc)), closure)
        }, closure) }
        if status == NATS_OK { status = natsOptions_SetDisconnectedCB(options, { _, closure in
            NATSConnection.post(.disconnected, closure)
        }, closure) }
        if status == NATS_OK { status = natsOptions_SetReconnectedCB(options, { nc, closure in
            NATSConnection.post(.reconnected(url: NATSConnection.url(nc)), closure)
        }, closure) }
        if status == NATS_OK { status = natsOptions_SetClosedCB(options, { _, closure in
            NATSConnection.post(.closed, closure)
        }, closure) }
        guard status == NATS_OK else {
            CallbackRegistry.unregister(eventsId)
            throw NATSError.from(status, doing: "setting connection options")
        }

        var connection: OpaquePointer?
        status = natsConnection_Connect(&connection, options)
        guard status == NATS_OK || status == NATS_NOT_YET_CONNECTED, let connection else {
            CallbackRegistry.unregister(eventsId)
            throw NATSError.from(status, doing: "connecting to \(settings.servers.joined(separator: ","))")
        }
        self.handle = connection
        self.eventsId = eventsId
        self.events = eventsObject
        if status == NATS_OK { events(.connected(url: Self.url(connection))) }
    }

    deinit {
        natsConnection_Destroy(handle)
        CallbackRegistry.unregister(eventsId)
    }

    private static func post(_ event: Event, _ closure: UnsafeMutableRawPointer?) {
        guard let events = CallbackRegistry.owner(closure, as: Events.self) else { return }
        if case .disconnected = event, events.closing.load(ordering: .relaxed) { return }
        events.handler(event)
    }

    private static func url(_ connection: OpaquePointer?) -> String {
        var buffer = [CChar](repeating: 0, count: 256)
        guard let connection, natsConnection_GetConnectedUrl(connection, &buffer, buffer.count) == NATS_OK else { return "" }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Connected to a server now (not connecting, reconnecting or closed).
    public var isConnected: Bool {
        natsConnection_Status(handle) == NATS_CONN_STATUS_CONNECTED
    }

    /// Waits until the server has seen everything sent so far (acknowledgements included).
    public func flush(timeoutMilliseconds: Int64) throws(NATSError) {
        let status = natsConnection_FlushTimeout(handle, timeoutMilliseconds)
        guard status == NATS_OK else { throw NATSError.from(status, doing: "flushing to the NATS server") }
    }

    /// Closes the connection (what is buffered is dropped: flush first).
    public func close() {
        events.closing.store(true, ordering: .relaxed)
        natsConnection_Close(handle)
    }

    /// Releases libnats' own threads and memory once every connection is gone
    /// (at exit, so leak checkers see a clean process). Waits up to `timeoutMilliseconds`.
    public static func releaseLibrary(timeoutMilliseconds: Int64 = 2000) {
        _ = nats_CloseAndWait(timeoutMilliseconds)
    }
}
