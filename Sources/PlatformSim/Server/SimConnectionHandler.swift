import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import SondeCore

/// One HTTP connection of one region: collects a request (at most `maxBodyBytes` of body), asks
/// the router what to do, then answers, waits, hangs or drops on the event loop. Delays are
/// scheduled tasks, so a hanging or slow answer never holds a thread.
final class SimConnectionHandler: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    private enum State {
        case idle
        case receiving(HTTPRequestHead, ByteBuffer)
        /// A 413 went out; the rest of the body is read and thrown away, then the connection closes.
        case discarding
        /// The request is with the router (a response may be scheduled, or it hangs for good).
        case answering
    }

    private let router: SimRouter
    private let region: String
    private let logger: Logger
    private let maxBodyBytes: Int
    private var state = State.idle
    private var pending: Scheduled<Void>?

    init(router: SimRouter, region: String, logger: Logger) {
        self.router = router
        self.region = region
        self.logger = logger
        // Room for multipart framing around a file of exactly the limit; the router checks the file itself.
        self.maxBodyBytes = router.maxBodyBytes + Self.multipartAllowance
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let head):
            guard case .idle = state else { return }
            if let length = head.headers.first(name: "content-length").flatMap(Int.init), length > maxBodyBytes {
                rejectTooLarge(context: context, head: head)
                return
            }
            if head.headers[canonicalForm: "expect"].contains(where: { $0.lowercased() == "100-continue" }) {
                context.writeAndFlush(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .continue))), promise: nil)
            }
            state = .receiving(head, context.channel.allocator.buffer(capacity: 0))
        case .body(var chunk):
            guard case .receiving(let head, var body) = state else { return }
            if body.readableBytes + chunk.readableBytes > maxBodyBytes {
                rejectTooLarge(context: context, head: head)
                return
            }
            state = .idle  // drop the state's reference so the append does not copy the buffer
            body.writeBuffer(&chunk)
            state = .receiving(head, body)
        case .end:
            switch state {
            case .receiving(let head, let body):
                state = .answering
                dispatch(context: context, head: head, body: body)
            case .discarding:
                context.close(promise: nil)
            case .idle, .answering:
                break
            }
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        pending?.cancel()
        pending = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        logger.debug("connection error", metadata: ["sim.region": "\(region)", "error": "\(error)"])
        context.close(promise: nil)
    }

    // MARK: - Answering

    /// Requests with bodies above this are handled on the thread pool (copying and parsing
    /// megabytes must not stall the event loop, or other connections' latency faults drift).
    static let offloadThreshold = 64 * 1024
    static let multipartAllowance = 64 * 1024

    private func dispatch(context: ChannelHandlerContext, head: HTTPRequestHead, body: ByteBuffer) {
        let received = NIODeadline.now()
        let uri = head.uri
        let queryStart = uri.firstIndex(of: "?")
        let region = region
        let router = router
        let makeRequest: @Sendable () -> SimRequest = {
            SimRequest(
                method: head.method.rawValue,
                path: String(uri[..<(queryStart ?? uri.endIndex)]),
                query: queryStart.map { String(uri[uri.index(after: $0)...]) },
                headers: head.headers.map { (name: $0.name, value: $0.value) },
                body: body.withUnsafeReadableBytes { Data($0) },
                region: region,
                requestID: "req_" + randomHex(12))
        }
        guard body.readableBytes > Self.offloadThreshold else {
            let request = makeRequest()
            schedule(router.handle(request), request: request, head: head, received: received, context: context)
            return
        }
        NIOThreadPool.singleton.runIfActive(eventLoop: context.eventLoop) { () -> SimResponseJob in
            let request = makeRequest()
            return SimResponseJob(request: request, action: router.handle(request))
        }.assumeIsolated().whenComplete { result in
            switch result {
            case .success(let job):
                self.schedule(job.action, request: job.request, head: head, received: received, context: context)
            case .failure(let error):
                self.logger.error("request handling failed", metadata: ["sim.region": "\(region)", "error": "\(error)"])
                context.close(promise: nil)
            }
        }
    }

    private func schedule(_ action: SimAction, request: SimRequest, head: HTTPRequestHead, received: NIODeadline, context: ChannelHandlerContext) {
        guard action.delay > .zero else {
            perform(action, request: request, head: head, received: received, context: context)
            return
        }
        // The delay counts from when the request was complete, so handling time does not add to it.
        let deadline = received + .nanoseconds(action.delay.wholeNanoseconds)
        pending = context.eventLoop.assumeIsolated().scheduleTask(deadline: deadline) {
            self.pending = nil
            self.perform(action, request: request, head: head, received: received, context: context)
        }
    }

    private func perform(_ action: SimAction, request: SimRequest, head: HTTPRequestHead, received: NIODeadline, context: ChannelHandlerContext) {
        var metadata: Logger.Metadata = [
            "sim.region": "\(region)", "http.method": "\(request.method)", "http.path": "\(request.path)",
            "sim.request_id": "\(request.requestID)",
        ]
        if !action.faultIDs.isEmpty { metadata["sim.faults"] = "\(action.faultIDs.joined(separator: ","))" }
        switch action.outcome {
        case .hang:
            metadata["http.status"] = "hang"
            logger.debug("request", metadata: metadata)
        // Nothing is written; the connection stays open until the client or the sim closes it.
        case .drop:
            metadata["http.status"] = "drop"
            logger.debug("request", metadata: metadata)
            context.close(promise: nil)
        case .respond(let response):
            write(response, requestID: request.requestID, head: head, context: context)
            metadata["http.status"] = "\(response.status)"
            metadata["sim.duration_ms"] = "\((NIODeadline.now() - received).nanoseconds / 1_000_000)"
            logger.debug("request", metadata: metadata)
        }
    }

    private func write(_ response: SimResponse, requestID: String, head: HTTPRequestHead, context: ChannelHandlerContext, forceClose: Bool = false) {
        let keepAlive = head.isKeepAlive && !forceClose
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "x-request-id", value: requestID)
        headers.add(name: "x-sim-region", value: region)
        headers.add(name: "Server", value: "sonde-sim")
        headers.add(name: "Date", value: HTTPDate.string(from: Date()))
        headers.add(name: "Connection", value: keepAlive ? "keep-alive" : "close")
        for (name, value) in response.headers { headers.add(name: name, value: value) }
        let status = HTTPResponseStatus(statusCode: response.status)
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: status, headers: headers))), promise: nil)
        if !response.body.isEmpty {
            var buffer = context.channel.allocator.buffer(capacity: response.body.count)
            response.body.withUnsafeBytes { _ = buffer.writeBytes($0) }
            context.write(wrapOutboundOut(.body(.byteBuffer(buffer))), promise: nil)
        }
        let done = context.writeAndFlush(wrapOutboundOut(.end(nil)))
        if keepAlive {
            state = .idle
        } else {
            done.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
        }
    }

    private func rejectTooLarge(context: ChannelHandlerContext, head: HTTPRequestHead) {
        let limit = router.maxBodyBytes >> 20
        let response = SimResponse.error(413, "request_too_large", "Request body is larger than the \(limit) MiB limit")
        let requestID = "req_" + randomHex(12)
        state = .discarding
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: response.contentType)
        headers.add(name: "Content-Length", value: String(response.body.count))
        headers.add(name: "x-request-id", value: requestID)
        headers.add(name: "Connection", value: "close")
        context.write(wrapOutboundOut(.head(HTTPResponseHead(version: head.version, status: .payloadTooLarge, headers: headers))), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))), promise: nil)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: nil)
        logger.debug(
            "request",
            metadata: [
                "sim.region": "\(region)", "http.method": "\(head.method.rawValue)", "http.path": "\(head.uri)", "http.status": "413",
                "sim.request_id": "\(requestID)",
            ])
    }
}

private struct SimResponseJob: Sendable {
    var request: SimRequest
    var action: SimAction
}

