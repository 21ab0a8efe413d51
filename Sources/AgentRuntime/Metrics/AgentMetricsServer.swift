#if canImport(Glibc)
import Glibc
#endif
import Logging
import ServiceLifecycle
import SondeCore

/// `metrics.listen`: an IP address (no host name: what the socket binds to is explicit) and a port.
public struct MetricsListenAddress: Sendable, Hashable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `127.0.0.1:9465`, `0.0.0.0:9465`, `[::1]:9465`; nil for anything else.
    public static func parse(_ text: String) -> MetricsListenAddress? {
        let host: Substring, portText: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            portText = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":"), !text[..<colon].contains(":") else { return nil }
            host = text[..<colon]
            portText = text[text.index(after: colon)...]
        }
        guard let port = Int(portText), (1...65535).contains(port), Socket.address(String(host), port: port) != nil else { return nil }
        return MetricsListenAddress(host: String(host), port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// The agent's own `GET /metrics` (Prometheus text format), on `metrics.listen`; off unless set.
///
/// Bounded whatever a client does: one thread (`sonde.metrics`) serves one connection at a time;
/// a request must arrive whole (at most `maxRequestBytes` of request line and headers) within
/// `requestTimeout` of its accept, and its answer must be taken within the same time, else the
/// connection is closed. So a hostile or stuck scraper costs at most one idle thread, an 8 KiB
/// buffer and a few file descriptors (the listen backlog), never the probes' thread or the spool;
/// at worst it delays other scrapes. Every answer closes its connection.
public final class AgentMetricsServer: Service, Sendable {
    public let address: MetricsListenAddress
    /// The port bound (the configured one, or the system's pick for port 0 in tests).
    public let port: Int
    public let metrics: AgentMetrics
    let spool: Spool
    let logger: Logger
    let requestTimeout: Duration
    static let maxRequestBytes = 8192
    private let listenFD: Int32
    /// Written to stop the thread (graceful shutdown or cancellation).
    private let wake: (read: Int32, write: Int32)

    /// Binds and listens now, so a taken or wrong address stops the agent at start.
    public init(
        listen address: MetricsListenAddress, metrics: AgentMetrics, spool: Spool, logger: Logger, requestTimeout: Duration = .seconds(5)
    ) throws(AgentStartError) {
        self.address = address
        self.metrics = metrics
        self.spool = spool
        self.logger = logger
        self.requestTimeout = requestTimeout
        let (fd, port) = try Socket.listen(address)
        var pipeFDs: [Int32] = [-1, -1]
        guard pipe(&pipeFDs) == 0 else {
            Glibc.close(fd)
            throw AgentStartError(["metrics.listen: cannot create a pipe: \(String(cString: strerror(errno)))"])
        }
        for end in pipeFDs + [fd] { Socket.setNonBlockingCloseOnExec(end) }
        listenFD = fd
        self.port = port
        wake = (pipeFDs[0], pipeFDs[1])
    }

    deinit {
        Glibc.close(listenFD)
        Glibc.close(wake.read)
        Glibc.close(wake.write)
    }

    public func run() async throws {
        logger.info("metrics listening", metadata: ["metrics.listen": "\(address.host)", "metrics.port": "\(port)"])
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                _ = await DetachedThread.run(name: "sonde.metrics") { [self] in serve() }
            } onGracefulShutdown: {
                self.stop()
            }
        } onCancel: {
            self.stop()
        }
    }

    func stop() {
        var byte: UInt8 = 1
        _ = Glibc.write(wake.write, &byte, 1)
    }

    // MARK: - The thread

    private func serve() {
        while true {
            var fds = [pollfd(fd: listenFD, events: Int16(POLLIN), revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            guard poll(&fds, 2, -1) >= 0 || errno == EINTR else { return }
            if fds[1].revents != 0 { return }
            guard fds[0].revents & Int16(POLLIN) != 0 else { continue }
            let client = accept(listenFD, nil, nil)
            if client < 0 {
                // Out of descriptors, say: wait a little instead of spinning on a ready listen socket.
                if errno != EAGAIN && errno != EINTR && errno != ECONNABORTED { usleep(50_000) }
                continue
            }
            Socket.setNonBlockingCloseOnExec(client)
            exchange(client)
            Glibc.close(client)
        }
    }

    /// Reads one request and answers it, all within `requestTimeout`.
    private func exchange(_ client: Int32) {
        let deadline = ContinuousClock.now + requestTimeout
        // A scraper sends its request as soon as it connects: one that has sent nothing after a
        // second (a load balancer's TCP check, a port scan, a stuck client) is dropped then, so a
        // few such connections delay a scrape by seconds, not by the whole request time-out each.
        let firstByteBy = ContinuousClock.now + min(requestTimeout, Self.firstByteTimeout)
        var request: [UInt8] = []
        request.reserveCapacity(1024)
        var chunk = [UInt8](repeating: 0, count: 2048)
        while !Self.endsHead(request) {
            guard request.count < Self.maxRequestBytes else {
                respond(client, status: "431 Request Header Fields Too Large", body: "request head over \(Self.maxRequestBytes) bytes\n", deadline: deadline)
                return
            }
            guard wait(client, for: Int16(POLLIN), until: request.isEmpty ? firstByteBy : deadline) else { return }
            let room = min(chunk.count, Self.maxRequestBytes - request.count + 1)
            let count = chunk.withUnsafeMutableBytes { Glibc.read(client, $0.baseAddress, room) }
            if count == 0 { return }  // closed before a whole request
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                return
            }
            request += chunk[0..<count]
        }
        let line = request.prefix { $0 != UInt8(ascii: "\r") && $0 != UInt8(ascii: "\n") }.split(separator: UInt8(ascii: " "))
        guard line.count == 3, line[2].starts(with: "HTTP/1.".utf8) else {
            respond(client, status: "400 Bad Request", body: "expected GET /metrics HTTP/1.1\n", deadline: deadline)
            return
        }
        let path = line[1].prefix { $0 != UInt8(ascii: "?") }
        guard path.elementsEqual("/metrics".utf8) else {
            respond(client, status: "404 Not Found", body: "only /metrics is served here\n", deadline: deadline)
            return
        }
        let method = String(decoding: line[0], as: UTF8.self)
        guard method == "GET" || method == "HEAD" else {
            respond(client, status: "405 Method Not Allowed", extra: "Allow: GET, HEAD\r\n", body: "use GET\n", deadline: deadline)
            return
        }
        let body = metrics.render(spool: spool.status)
        respond(client, status: "200 OK", contentType: "text/plain; version=0.0.4; charset=utf-8", body: body, withBody: method == "GET", deadline: deadline)
    }

    static let firstByteTimeout: Duration = .seconds(1)

    private static func endsHead(_ bytes: [UInt8]) -> Bool {
        let n = bytes.count
        // CRLF CRLF, or bare LF LF from a lenient client.
        return (n >= 4 && bytes[n - 4] == 13 && bytes[n - 3] == 10 && bytes[n - 2] == 13 && bytes[n - 1] == 10)
            || (n >= 2 && bytes[n - 2] == 10 && bytes[n - 1] == 10)
    }

    private func respond(
        _ client: Int32, status: String, contentType: String = "text/plain; charset=utf-8", extra: String = "", body: String, withBody: Bool = true,
        deadline: ContinuousClock.Instant
    ) {
        var bytes = Array("HTTP/1.1 \(status)\r\nContent-Type: \(contentType)\r\nContent-Length: \(body.utf8.count)\r\n\(extra)Connection: close\r\n\r\n".utf8)
        if withBody { bytes += body.utf8 }
        var sent = 0
        while sent < bytes.count {
            guard wait(client, for: Int16(POLLOUT), until: deadline) else { return }
            let count = bytes[sent...].withUnsafeBytes { Glibc.send(client, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                return
            }
            sent += count
        }
        // Half-close, so the client reads the whole answer before the close (no reset over it).
        shutdown(client, Int32(SHUT_WR))
    }

    /// Waits until `client` is ready for `events`; false at the deadline or on shutdown.
    private func wait(_ client: Int32, for events: Int16, until deadline: ContinuousClock.Instant) -> Bool {
        while true {
            let left = deadline - ContinuousClock.now
            guard left > .zero else { return false }
            let milliseconds = Int32(min(left.seconds * 1000, 60_000).rounded(.up))
            var fds = [pollfd(fd: client, events: events, revents: 0), pollfd(fd: wake.read, events: Int16(POLLIN), revents: 0)]
            let ready = poll(&fds, 2, max(milliseconds, 1))
            if ready < 0 && errno == EINTR { continue }
            guard ready > 0, fds[1].revents == 0 else { return false }
            return fds[0].revents != 0
        }
    }
}

extension AgentMetricsServer: CustomStringConvertible {
    public var description: String { "AgentMetricsServer(\(address))" }
}

/// The listening socket, IPv4 or IPv6.
enum Socket {
    static func setNonBlockingCloseOnExec(_ fd: Int32) {
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK)
        _ = fcntl(fd, F_SETFD, FD_CLOEXEC)
    }

    /// The socket address for a numeric IP and port, or nil when `host` is not one.
    static func address(_ host: String, port: Int) -> sockaddr_storage? {
        var storage = sockaddr_storage()
        var v4 = in_addr()
        var v6 = in6_addr()
        if inet_pton(AF_INET, host, &v4) == 1 {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) {
                    $0.pointee.sin_family = sa_family_t(AF_INET)
                    $0.pointee.sin_port = UInt16(port).bigEndian
                    $0.pointee.sin_addr = v4
                }
            }
            return storage
        }
        if inet_pton(AF_INET6, host, &v6) == 1 {
            withUnsafeMutablePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) {
                    $0.pointee.sin6_family = sa_family_t(AF_INET6)
                    $0.pointee.sin6_port = UInt16(port).bigEndian
                    $0.pointee.sin6_addr = v6
                }
            }
            return storage
        }
        return nil
    }

    /// Binds and listens (backlog 16); the descriptor and the port bound.
    static func listen(_ address: MetricsListenAddress) throws(AgentStartError) -> (Int32, Int) {
        guard var storage = Self.address(address.host, port: address.port) else {
            throw AgentStartError(["metrics.listen: \(address) is not an IP address and port"])
        }
        let family = Int32(storage.ss_family)
        let length = socklen_t(family == AF_INET ? MemoryLayout<sockaddr_in>.size : MemoryLayout<sockaddr_in6>.size)
        let fd = socket(family, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw AgentStartError(["metrics.listen: socket: \(String(cString: strerror(errno)))"]) }
        var one: Int32 = 1
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        let bound = withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) } }
        guard bound == 0, Glibc.listen(fd, 16) == 0 else {
            let message = String(cString: strerror(errno))
            Glibc.close(fd)
            throw AgentStartError(["metrics.listen: cannot listen on \(address): \(message) (another process on that port, or an address this host does not have?)"])
        }
        var actual = storage
        var actualLength = socklen_t(MemoryLayout<sockaddr_storage>.size)
        _ = withUnsafeMutablePointer(to: &actual) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &actualLength) } }
        let port = withUnsafePointer(to: &actual) { pointer -> UInt16 in
            family == AF_INET
                ? pointer.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_port }
                : pointer.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_port }
        }
        return (fd, Int(UInt16(bigEndian: port)))
    }
}
