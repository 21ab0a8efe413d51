import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Closes a connection whose request (head to end of body) takes longer than `limit` to arrive.
/// Hummingbird's `idleTimeout` closes connections that send nothing, but every body chunk resets
/// it, so a client trickling one byte at a time (slowloris on the body) would hold a connection
/// and a handler forever; this bounds the whole read. A channel handler in the HTTP/1 pipeline,
/// after HTTP parsing; one instance per connection.
final class RequestReadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    private let limit: TimeAmount
    private var deadline: Scheduled<Void>?

    init(limit: TimeAmount) { self.limit = limit }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            deadline?.cancel()
            deadline = context.eventLoop.assumeIsolated().scheduleTask(in: limit) { [weak self] in
                self?.deadline = nil
                context.close(promise: nil)
            }
        case .body:
            break
        case .end:
            deadline?.cancel()
            deadline = nil
        }
        context.fireChannelRead(data)
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        deadline?.cancel()
        deadline = nil
        context.fireChannelInactive()
    }
}
