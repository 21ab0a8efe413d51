import Foundation
import Logging
import NIOCore
import NIOPosix
import Synchronization

/// A TCP relay that forwards bytes both ways between a listening port and a target, and can be
/// cut (all connections closed, listener gone, so new connects are refused) and restored (the
/// same port listens again). The demo puts one in front of an agent to fake a local network fault.
///
/// ```swift
/// let relay = try await TCPRelay.start(listenHost: "127.0.0.1", listenPort: 0, targetHost: "127.0.0.1", targetPort: 18400)
/// relay.url        // "http://127.0.0.1:41234"
/// await relay.cut(); try await relay.restore(); await relay.stop()
/// ```
public final class TCPRelay: Sendable {
    public let listenHost: String
    /// The bound port (stays the same across cut and restore).
    public let listenPort: Int
    public let targetHost: String
    public let targetPort: Int
    private let group: any EventLoopGroup
    private let logger: Logger
    private let listener = Mutex<(any Channel)?>(nil)
    private let connections: ChannelRegistry

    private init(
        listenHost: String, listenPort: Int, targetHost: String, targetPort: Int, group: any EventLoopGroup, logger: Logger,
        connections: ChannelRegistry, listener: any Channel
    ) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.group = group
        self.logger = logger
        self.connections = connections
        self.listener.withLock { $0 = listener }
    }

    /// `http://host:port` of the listening side.
    public var url: String { "http://\(listenHost):\(listenPort)" }

    /// True while cut.
    public var isCut: Bool { listener.withLock { $0 == nil } }

    /// Number of relayed connections open now (each counts its two sides).
    public var openConnections: Int { connections.count }

    /// Starts listening (`listenPort` 0 = ephemeral) and relaying to the target.
    public static func start(
        listenHost: String = "127.0.0.1", listenPort: Int = 0, targetHost: String, targetPort: Int,
        logger: Logger = Logger(label: "sonde-sim.relay", factory: { _ in SwiftLogNoOpLogHandler() }),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> TCPRelay {
        let connections = ChannelRegistry()
        let channel = try await bind(
            host: listenHost, port: listenPort, targetHost: targetHost, targetPort: targetPort, group: eventLoopGroup,
            connections: connections, logger: logger)
        let relay = TCPRelay(
            listenHost: listenHost, listenPort: channel.localAddress?.port ?? listenPort, targetHost: targetHost, targetPort: targetPort,
            group: eventLoopGroup, logger: logger, connections: connections, listener: channel)
        logger.info("relay listening", metadata: ["relay.listen": "\(relay.url)", "relay.target": "\(targetHost):\(targetPort)"])
        return relay
    }

    /// Closes every relayed connection and stops listening: new connects are refused.
    public func cut() async {
        let channel = listener.withLock { channel in
            defer { channel = nil }
            return channel
        }
        try? await channel?.close()
        await connections.closeAll()
        logger.info("relay cut", metadata: ["relay.listen": "\(url)"])
    }

    /// Listens again on the same port after a cut (no-op when not cut).
    public func restore() async throws {
        guard isCut else { return }
        let channel = try await Self.bind(
            host: listenHost, port: listenPort, targetHost: targetHost, targetPort: targetPort, group: group, connections: connections,
            logger: logger)
        let extra: (any Channel)? = listener.withLock { current in
            if current == nil {
                current = channel
                return nil
            }
            return channel
        }
        try? await extra?.close()
        logger.info("relay restored", metadata: ["relay.listen": "\(url)"])
    }

    /// Stops for good.
    public func stop() async { await cut() }

    private static func bind(
        host: String, port: Int, targetHost: String, targetPort: Int, group: any EventLoopGroup, connections: ChannelRegistry,
        logger: Logger
    ) async throws -> any Channel {
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { inbound in
                connections.add(inbound)
                let (inboundGlue, outboundGlue) = RelayGlueHandler.matchedPair()
                do {
                    try inbound.pipeline.syncOperations.addHandler(inboundGlue)
                } catch {
                    return inbound.eventLoop.makeFailedFuture(error)
                }
                let boundGlue = NIOLoopBound(outboundGlue, eventLoop: inbound.eventLoop)
                return ClientBootstrap(group: inbound.eventLoop)
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelInitializer { outbound in
                        connections.add(outbound)
                        return outbound.eventLoop.makeCompletedFuture {
                            try outbound.pipeline.syncOperations.addHandler(boundGlue.value)
                        }
                    }
                    .connect(host: targetHost, port: targetPort)
                    .map { _ in
                        inbound.setOption(.autoRead, value: true).whenComplete { _ in }
                    }
                    .flatMapError { error in
                        logger.debug("relay cannot reach target", metadata: ["relay.target": "\(targetHost):\(targetPort)", "error": "\(error)"])
                        return inbound.close()
                    }
            }
            .bind(host: host, port: port).get()
    }
}

/// Two handlers that pass each other's reads, on the same event loop: bytes read on one side are
/// written on the other; when one side closes, so does the other.
final class RelayGlueHandler: ChannelDuplexHandler {
    typealias InboundIn = NIOAny
    typealias OutboundIn = NIOAny
    typealias OutboundOut = NIOAny

    private var partner: RelayGlueHandler?
    private var context: ChannelHandlerContext?
    private var pendingRead = false

    static func matchedPair() -> (RelayGlueHandler, RelayGlueHandler) {
        let first = RelayGlueHandler()
        let second = RelayGlueHandler()
        first.partner = second
        second.partner = first
        return (first, second)
    }

    func handlerAdded(context: ChannelHandlerContext) { self.context = context }

    func handlerRemoved(context: ChannelHandlerContext) {
        self.context = nil
        partner = nil
    }

    private func partnerWrite(_ data: NIOAny) { context?.write(data, promise: nil) }
    private func partnerFlush() { context?.flush() }
    private func partnerClose() { context?.close(promise: nil) }
    private var isWritable: Bool { context?.channel.isWritable ?? false }
    private func partnerBecameWritable() {
        if pendingRead {
            pendingRead = false
            context?.read()
        }
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) { partner?.partnerWrite(data) }
    func channelReadComplete(context: ChannelHandlerContext) { partner?.partnerFlush() }
    func channelInactive(context: ChannelHandlerContext) { partner?.partnerClose() }

    func channelWritabilityChanged(context: ChannelHandlerContext) {
        if context.channel.isWritable { partner?.partnerBecameWritable() }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    /// Back-pressure: read only while the other side can take the bytes.
    func read(context: ChannelHandlerContext) {
        if partner?.isWritable ?? true {
            context.read()
        } else {
            pendingRead = true
        }
    }
}
