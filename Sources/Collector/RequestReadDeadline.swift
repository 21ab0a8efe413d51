import HummingbirdCore
import NIOCore
import NIOHTTPTypes

/// Closes a connection whose request (head to end of body) takes longer than `limit` to arrive,
/// or whose body, after `bodyGrace`, arrives slower than `minBodyRate` bytes a second on average.
/// Hummingbird's `idleTimeout` closes connections that send nothing, but every body chunk resets
/// it, so a client trickling one byte at a time (slowloris on the body) would hold a connection
/// and a handler; `limit` bounds the whole read, the rate cuts a trickle within seconds (a push
/// body names an agent before it is authenticated, so a trickled one must not hold anything for
/// long). A channel handler in the HTTP/1 pipeline, after HTTP parsing; one instance per connection.
final class RequestReadDeadline: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart

    /// The first seconds of a body are free of the rate (a handler may look the agent up first).
    static let bodyGrace: TimeAmount = .seconds(5)

    private let limit: TimeAmount
    private let minBodyRate: Int
    private var deadline: Scheduled<Void>?
    private var rateCheck: Scheduled<Void>?
    private var started = NIODeadline.now()
    private var received = 0

    init(limit: TimeAmount, minBodyRate: Int = 0) {
        self.limit = limit
        self.minBodyRate = minBodyRate
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head:
            cancel()
            deadline = context.eventLoop.assumeIsolated().scheduleTask(in: limit) { [weak self] in
                self?.deadline = nil
                context.close(promise: nil)
            }
            started = .now()
            received = 0
            if minBodyRate > 0 { scheduleRateCheck(context: context, in: Self.bodyGrace) }
        case .body(let chunk):
            received += chunk.readableBytes
        case .end:
            cancel()
        }
        context.fireChannelRead(data)
    }

    /// Checks the body's average rate since the grace ended every second until its end.
    private func scheduleRateCheck(context: ChannelHandlerContext, in delay: TimeAmount) {
        rateCheck = context.eventLoop.assumeIsolated().scheduleTask(in: delay) { [weak self] in
            guard let self else { return }
            self.rateCheck = nil
            let late = Double((NIODeadline.now() - self.started - Self.bodyGrace).nanoseconds) / 1e9
            if Double(self.received) < Double(self.minBodyRate) * late {
                self.cancel()
                context.close(promise: nil)
            } else {
                self.scheduleRateCheck(context: context, in: .seconds(1))
            }
        }
    }

    private func cancel() {
        deadline?.cancel()
        deadline = nil
        rateCheck?.cancel()
        rateCheck = nil
    }

    func handlerRemoved(context: ChannelHandlerContext) { cancel() }

    func channelInactive(context: ChannelHandlerContext) {
        cancel()
        context.fireChannelInactive()
    }
}
