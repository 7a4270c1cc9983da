import HummingbirdCore
import Logging
import NIOCore
import NIOExtras
import NIOPosix
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// HummingbirdCore's `Server`, for a listening socket handed over by systemd
/// (`SocketActivation`): HummingbirdCore 2.28.1 binds only addresses it is
/// given (`BindAddress`), while an inherited socket needs NIO's
/// `bind(_ socket:)`. Everything else is the same as there: the connection
/// cap, the same child channel (`WebhookChannel`, behind TLS or not), and
/// quiescing on graceful shutdown.
///
/// On shutdown it closes its descriptor of the socket only; the supervisor's
/// stays open, so connections that arrive before the next receiver starts
/// wait in the backlog instead of being refused.
struct InheritedSocketServer<ChildChannel: ServerChildChannel>: Service {
    let descriptor: Int32
    let childChannel: ChildChannel
    let backlog: Int32
    let maxConnections: Int
    let eventLoopGroup: any EventLoopGroup
    let logger: Logger
    let onServerRunning: (@Sendable (any Channel) async -> Void)?

    func run() async throws {
        let quiescing = ServerQuiescingHelper(group: eventLoopGroup)
        let connections = MaximumAvailableConnections(maxConnections, logger: logger)
        let childChannel = self.childChannel
        let logger = self.logger
        let server = try await ServerBootstrap(group: eventLoopGroup)
            .serverChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(AvailableConnectionsChannelHandler(delegate: connections))
                    try channel.pipeline.syncOperations.addHandler(quiescing.makeServerChannelHandler(channel: channel))
                }
            }
            .childChannelOption(ChannelOptions.allowRemoteHalfClosure, value: true)
            .bind(descriptor) { channel in childChannel.setup(channel: channel, logger: logger) }
        // NIO listens again with its own default backlog (128), which would
        // stay on the supervisor's socket after this process: set ours back.
        _ = listen(descriptor, backlog)
        await withGracefulShutdownHandler {
            await onServerRunning?(server.channel)
            await withDiscardingTaskGroup { group in
                do {
                    try await server.executeThenClose { inbound in
                        for try await connection in inbound {
                            group.addTask { await childChannel.handle(value: connection, logger: logger) }
                        }
                    }
                } catch {
                    logger.error("accepting connections failed", metadata: ["error": "\(error)"])
                }
            }
        } onGracefulShutdown: {
            // Stops accepting (closing this process's descriptor) and tells every
            // connection to finish; `run` returns once the last one has closed.
            quiescing.initiateShutdown(promise: nil)
        }
    }
}
