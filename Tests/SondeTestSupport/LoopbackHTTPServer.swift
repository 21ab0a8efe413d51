import Foundation
import Synchronization

/// A tiny HTTP/1.1 server on 127.0.0.1 and an ephemeral port, on plain sockets and threads, for
/// tests that need a real peer with exact behaviour: a fixed delay before answering, a hang, a
/// dropped connection, or a handler that inspects the exact request bytes (e.g. to verify a
/// signature). One connection per request (`Connection: close`).
public final class LoopbackHTTPServer: Sendable {
    public struct Request: Sendable {
        public var method: String
        public var path: String
        public var headers: [(name: String, value: String)]
        public var body: Data
        public func header(_ name: String) -> String? {
            headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
        }
    }

    public enum Reply: Sendable {
        case respond(status: Int, headers: [(String, String)] = [], body: Data = Data(), delay: Duration = .zero)
        /// Read the request, then never answer (until the server stops).
        case hang
        /// Close the connection without a response.
        case drop
        /// Send `head`, then `chunk` again and again until the client closes the connection (or
        /// the server stops): a server that never ends its headers, or its 1xx responses.
        /// `floodedBytes` counts what went out, so a test sees when the client stopped reading.
        case flood(head: Data, chunk: Data)
        /// Answers as `respond` does, but sends the last `held` bytes of the body only once
        /// `release` returns (it is called on the connection's thread once the rest went out;
        /// it may block): a client then holds nearly the whole body, and has not finished.
        case respondHolding(status: Int, body: Data, held: Int, release: @Sendable () -> Void)

        public static func json(_ status: Int, _ text: String, delay: Duration = .zero) -> Reply {
            .respond(status: status, headers: [("Content-Type", "application/json")], body: Data(text.utf8), delay: delay)
        }
    }

    public let port: Int
    private let listenFD: Int32
    private let handler: @Sendable (Request) -> Reply
    private let stopped = Atomic<Bool>(false)
    private let received = Mutex<[Request]>([])
    private let flooded = Atomic<Int>(0)
    private let floodsEnded = Atomic<Int>(0)

    /// Bytes sent by `.flood` replies so far, and how many of them have ended (the client closed).
    public var floodedBytes: Int { flooded.load(ordering: .relaxed) }
    public var floodsFinished: Int { floodsEnded.load(ordering: .relaxed) }

    public var baseURL: String { "http://127.0.0.1:\(port)" }
    /// Every request received so far.
    public var requests: [Request] { received.withLock { $0 } }

    public init(handler: @escaping @Sendable (Request) -> Reply) throws {
        self.handler = handler
        (listenFD, port) = try listenOnLoopback()
        let thread = Thread { [self] in self.acceptLoop() }
        thread.start()
    }

    /// Stops accepting; hanging connections are closed.
    public func stop() {
        guard !stopped.exchange(true, ordering: .relaxed) else { return }
        shutdown(listenFD, Int32(SHUT_RDWR))
        close(listenFD)
    }

    deinit { stop() }

    private func acceptLoop() {
        while !stopped.load(ordering: .relaxed) {
            let client = accept(listenFD, nil, nil)
            if client < 0 {
                if stopped.load(ordering: .relaxed) { return }
                continue
            }
            let thread = Thread { [self] in self.serve(client) }
            thread.start()
        }
    }

    private func serve(_ fd: Int32) {
        defer { close(fd) }
        guard let request = readRequest(fd) else { return }
        received.withLock { $0.append(request) }
        switch handler(request) {
        case .drop:
            return
        case .hang:
            while !stopped.load(ordering: .relaxed) { usleep(20_000) }
        case .flood(let head, let chunk):
            defer { floodsEnded.add(1, ordering: .relaxed) }
            guard sendAll(fd, head) else { return }
            flooded.add(head.count, ordering: .relaxed)
            while !stopped.load(ordering: .relaxed), sendAll(fd, chunk) { flooded.add(chunk.count, ordering: .relaxed) }
        case .respondHolding(let status, let body, let held, let release):
            let head = "HTTP/1.1 \(status) OK\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            guard sendAll(fd, Data(head.utf8) + body.dropLast(held)) else { return }
            release()
            sendAll(fd, body.suffix(held))
        case .respond(let status, let headers, let body, let delay):
            if delay > .zero {
                let (s, atto) = delay.components
                usleep(useconds_t(s * 1_000_000 + atto / 1_000_000_000_000))
            }
            var head = "HTTP/1.1 \(status) \(status < 400 ? "OK" : "Error")\r\n"
            for (name, value) in headers { head += "\(name): \(value)\r\n" }
            head += "Content-Length: \(body.count)\r\nConnection: close\r\n\r\n"
            _ = sendAll(fd, Data(head.utf8) + body)
        }
    }

    private func readRequest(_ fd: Int32) -> Request? {
        var buffer = Data()
        var chunk = [UInt8](repeating: 0, count: 65536)
        let separator = Data("\r\n\r\n".utf8)
        var headerEnd: Range<Data.Index>?
        while headerEnd == nil {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { return nil }
            buffer.append(contentsOf: chunk[0..<n])
            headerEnd = buffer.range(of: separator)
        }
        let headText = String(decoding: buffer[..<headerEnd!.lowerBound], as: UTF8.self)
        var lines = headText.components(separatedBy: "\r\n")
        let requestLine = lines.removeFirst().split(separator: " ")
        guard requestLine.count >= 2 else { return nil }
        let headers = lines.compactMap { line -> (String, String)? in
            guard let colon = line.firstIndex(of: ":") else { return nil }
            return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
        }
        let length = headers.first { $0.0.lowercased() == "content-length" }.flatMap { Int($0.1) } ?? 0
        var body = Data(buffer[headerEnd!.upperBound...])
        while body.count < length {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n <= 0 { return nil }
            body.append(contentsOf: chunk[0..<n])
        }
        return Request(method: String(requestLine[0]), path: String(requestLine[1]), headers: headers.map { (name: $0.0, value: $0.1) }, body: body)
    }

    /// False when the peer went away before all of `data` was sent.
    @discardableResult
    private func sendAll(_ fd: Int32, _ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { return false }
                offset += n
            }
            return true
        }
    }
}
