import Foundation
import Logging
import NIOCore
import NIOPosix
import SondeCore
import Synchronization

/// A TCP relay that forwards bytes both ways between a listening port and a target, and can be
/// cut (all connections closed, listener gone, so new connects are refused) and restored (the
/// same port listens again). The demo puts one in front of an agent to fake a local network fault.
/// It can also be made flaky: a share of new connections is answered by the relay itself with an
/// HTTP error (as a broken proxy or middlebox on one host's path would) or closed unanswered.
///
/// ```swift
/// let relay = try await TCPRelay.start(listenHost: "127.0.0.1", listenPort: 0, targetHost: "127.0.0.1", targetPort: 18400)
/// relay.url        // "http://127.0.0.1:41234"
/// await relay.cut(); try await relay.restore(); await relay.stop()
/// relay.setErrors(RelayErrors(fraction: 0.3, status: 502)); relay.setErrors(nil)
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
    private let errors: RelayErrorDraw

    private init(
        listenHost: String, listenPort: Int, targetHost: String, targetPort: Int, group: any EventLoopGroup, logger: Logger,
        connections: ChannelRegistry, errors: RelayErrorDraw, listener: any Channel
    ) {
        self.listenHost = listenHost
        self.listenPort = listenPort
        self.targetHost = targetHost
        self.targetPort = targetPort
        self.group = group
        self.logger = logger
        self.connections = connections
        self.errors = errors
        self.listener.withLock { $0 = listener }
    }

    /// `http://host:port` of the listening side.
    public var url: String { "http://\(listenHost):\(listenPort)" }

    /// True while cut.
    public var isCut: Bool { listener.withLock { $0 == nil } }

    /// Number of relayed connections open now (each counts its two sides).
    public var openConnections: Int { connections.count }

    /// Makes the relay flaky (a share of new connections fails, see `RelayErrors`), or healthy
    /// again with nil. Connections already relayed are left alone.
    public func setErrors(_ errors: RelayErrors?) { self.errors.set(errors) }

    /// The active errors, nil while healthy.
    public var activeErrors: RelayErrors? { errors.current }

    /// Starts listening (`listenPort` 0 = ephemeral) and relaying to the target. `seed` makes the
    /// draws of `setErrors` reproducible; nil seeds from the system RNG.
    public static func start(
        listenHost: String = "127.0.0.1", listenPort: Int = 0, targetHost: String, targetPort: Int, seed: UInt64? = nil,
        logger: Logger = Logger(label: "sonde-sim.relay", factory: { _ in SwiftLogNoOpLogHandler() }),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> TCPRelay {
        let connections = ChannelRegistry()
        let errors = RelayErrorDraw(seed: seed)
        let channel = try await bind(
            host: listenHost, port: listenPort, targetHost: targetHost, targetPort: targetPort, group: eventLoopGroup,
            connections: connections, errors: errors, logger: logger)
        let relay = TCPRelay(
            listenHost: listenHost, listenPort: channel.localAddress?.port ?? listenPort, targetHost: targetHost, targetPort: targetPort,
            group: eventLoopGroup, logger: logger, connections: connections, errors: errors, listener: channel)
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
            errors: errors, logger: logger)
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
        errors: RelayErrorDraw, logger: Logger
    ) async throws -> any Channel {
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.autoRead, value: false)
            .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { inbound in
                connections.add(inbound)
                if let failure = errors.draw() {
                    // This connection never reaches the target: the relay answers it itself.
                    return inbound.eventLoop.makeCompletedFuture {
                        try inbound.pipeline.syncOperations.addHandler(RelayErrorResponder(status: failure.status))
                    }.flatMap { inbound.setOption(.autoRead, value: true) }
                }
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

/// How a flaky relay fails: `fraction` of new connections (0...1, drawn per connection; agents
/// open a fresh connection per request) get `status` with a JSON error body once their request
/// head has arrived, or, with `status` nil, are closed unanswered.
public struct RelayErrors: Sendable, Hashable {
    public var fraction: Double
    public var status: Int?

    public init(fraction: Double, status: Int? = 502) {
        self.fraction = fraction
        self.status = status
    }

    /// Checks the values an operator can get wrong.
    public func validate() throws(FaultValidationError) {
        guard fraction.isFinite, (0...1).contains(fraction) else {
            throw FaultValidationError("fraction: expected a number from 0 to 1 (share of connections), got \(fraction)")
        }
        if let status, !(400...599).contains(status) {
            throw FaultValidationError("status: expected an HTTP error status such as 502 or 503, got \(status)")
        }
    }
}

/// The active `RelayErrors` and the seeded draws that pick the connections they hit.
final class RelayErrorDraw: Sendable {
    private struct State {
        var errors: RelayErrors?
        var random: SplitMix64
    }
    private let state: Mutex<State>

    init(seed: UInt64?) {
        var system = SystemRandomNumberGenerator()
        state = Mutex(State(random: SplitMix64(seed: seed ?? system.next())))
    }

    func set(_ errors: RelayErrors?) { state.withLock { $0.errors = errors } }
    var current: RelayErrors? { state.withLock { $0.errors } }

    /// The errors to apply to one new connection, or nil when it is relayed.
    func draw() -> RelayErrors? {
        state.withLock { state in
            guard let errors = state.errors, errors.fraction > 0 else { return nil }
            return errors.fraction >= 1 || state.random.nextUnitDouble() < errors.fraction ? errors : nil
        }
    }
}

/// Answers one connection as a failing gateway: waits for the end of the request head, writes
/// `status` with a JSON error body and `Connection: close` (or nothing, when `status` is nil),
/// closes its sending side and discards what the client still sends until it closes, so the
/// client reads the answer instead of a reset.
final class RelayErrorResponder: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let status: Int?
    private var head: [UInt8] = []
    private var answered = false

    init(status: Int?) { self.status = status }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !answered else { return }
        var buffer = unwrapInboundIn(data)
        head += buffer.readBytes(length: buffer.readableBytes) ?? []
        // Bounded: a head that never ends is answered after 64 KiB all the same.
        guard head.count > 65_536 || head.withUnsafeBufferPointer({ Self.containsHeadEnd($0) }) else { return }
        answered = true
        guard let status else {
            context.close(promise: nil)
            return
        }
        let reason = Self.reasons[status] ?? "Error"
        let code = status == 503 ? "service_unavailable" : status == 504 ? "gateway_timeout" : "bad_gateway"
        let body = #"{"error":{"code":"\#(code)","message":"upstream connect error or disconnect/reset before headers"}}"#
        let text = "HTTP/1.1 \(status) \(reason)\r\nContent-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n\(body)"
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text))).whenComplete { _ in
            channel.close(mode: .output, promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) { context.close(promise: nil) }

    private static func containsHeadEnd(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard bytes.count >= 4 else { return false }
        for i in 0...(bytes.count - 4) where bytes[i] == 13 && bytes[i + 1] == 10 && bytes[i + 2] == 13 && bytes[i + 3] == 10 {
            return true
        }
        return false
    }

    private static let reasons = [500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"]
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
