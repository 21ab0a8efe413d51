import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization

// MARK: - Scale and reports

/// Quick drills run in `make test`; `SONDE_DRILL_FULL=1` (what `make drill` sets) runs the full ones.
enum Drill {
    static var full: Bool { ProcessInfo.processInfo.environment["SONDE_DRILL_FULL"] == "1" }

    /// Picks the quick or the full value.
    static func scale<T>(quick: T, full: T) -> T { Drill.full ? full : quick }

    /// Writes a markdown fragment for RELIABILITY.md into `$SONDE_DRILL_REPORT_DIR/<name>.md`
    /// (set by scripts/drill.sh; nothing is written otherwise).
    static func report(_ name: String, _ markdown: String) {
        guard let folder = ProcessInfo.processInfo.environment["SONDE_DRILL_REPORT_DIR"] else { return }
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try? Data(markdown.utf8).write(to: URL(fileURLWithPath: folder + "/" + name + ".md"))
    }

    static func table(_ rows: [(String, String)]) -> String {
        "| measure | value |\n|---|---:|\n" + rows.map { "| \($0.0) | \($0.1) |" }.joined(separator: "\n") + "\n"
    }
}

// MARK: - A real collector process

/// An agent for drills: id, region, key, and signed pushes.
struct DrillAgent: Sendable {
    let id: String
    let region: String
    let key = AgentSigningKey()

    static let components = ["api", "files", "login", "batch", "models"]

    func results(_ count: Int, failed: Bool = false, at: Date = Date(), components: [String] = DrillAgent.components) -> [ProbeResult] {
        (0..<count).map { n in
            ProbeResult(
                probe: "probe-\(n % components.count)", component: components[n % components.count], agent: id, region: region,
                startedAt: at.addingTimeInterval(Double(n) * -0.001), durationMs: 42, outcome: failed ? .failed : .ok,
                error: failed ? ProbeError(kind: .httpStatus, step: "request", message: "HTTP 502", code: "server_error") : nil,
                steps: [
                    StepResult(
                        name: "request", method: "GET", url: "https://platform.example/v1/models", status: failed ? 502 : 200, ok: !failed,
                        timings: PhaseTimings(dns: 1, connect: 2, tls: 3, ttfb: 30, transfer: 6, total: 42))
                ])
        }
    }

    /// A signed body: (batch id, body, signature header).
    func signedBatch(
        _ count: Int, sentAt: Date = Date(), failed: Bool = false, batchID: String = UUID().uuidString, components: [String] = DrillAgent.components
    ) throws -> (String, Data, String) {
        let body = try SondeJSON.encode(PushBatch(agent: id, batchID: batchID, sentAt: sentAt, results: results(count, failed: failed, components: components)))
        return (batchID, body, try key.signatureHeader(for: body))
    }

    func pushRequest(baseURL: String, body: Data, signature: String, timeout: Duration = .seconds(10), caFile: String? = nil) -> HTTPRequest {
        HTTPRequest(
            method: "POST", url: baseURL + PushProtocol.path,
            headers: [
                HTTPHeader("Content-Type", "application/json"), HTTPHeader(PushProtocol.agentHeader, id),
                HTTPHeader(PushProtocol.signatureHeader, signature),
            ], body: body, timeout: timeout, caFile: caFile)
    }
}

/// The API tokens of drill collectors.
enum DrillTokens {
    static let admin = "drill-admin-token-5f1e0c"
    static let read = "drill-read-token-9a3b7d"

    static var yaml: [String] {
        ["tokens:", "  - { name: ops, role: admin, sha256: \(tokenDigestHex(admin)) }", "  - { name: grafana, role: read, sha256: \(tokenDigestHex(read)) }"]
    }
}

/// `sonde-collector serve` as a child process over a config file in `folder`: HTTPS with
/// `certificates`, else plain HTTP said explicitly; API tokens as in `DrillTokens`.
final class CollectorUnderTest: Sendable {
    let folder: TemporaryDirectory
    let configPath: String
    let child: ChildProcess
    let port: Int
    /// The CA of the collector's certificate (nil: plain HTTP).
    let caFile: String?

    var baseURL: String { caFile == nil ? "http://127.0.0.1:\(port)" : "https://localhost:\(port)" }
    var databasePath: String { folder.file("collector.db") }
    var pid: Int32 { child.pid }

    /// Writes the config (`agents`, extra YAML lines) unless it exists, starts the collector and
    /// waits until it logs the port it listens on.
    static func start(
        in folder: TemporaryDirectory, agents: [DrillAgent], certificates: TestCertificates? = nil, extra: [String] = []
    ) async throws -> CollectorUnderTest {
        let configPath = folder.file("collector.yaml")
        if !FileManager.default.fileExists(atPath: configPath) {
            let listen =
                certificates.map { "listen: { host: 127.0.0.1, port: 0, tls: { cert: \($0.serverCert), key: \($0.serverKey) } }" }
                ?? "listen: { host: 127.0.0.1, port: 0, plain_http: true }"
            var yaml = [listen, "database: collector.db", "evaluation_interval: 200ms"] + DrillTokens.yaml + extra
            yaml.append(agents.isEmpty ? "agents: []" : "agents:")
            for agent in agents { yaml.append("  - { id: \(agent.id), region: \(agent.region), public_key: \"\(agent.key.publicKey.base64)\" }") }
            try Data(yaml.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: configPath))
        }
        let child = try ChildProcess("sonde-collector", ["serve", "--config", configPath, "--log-level", "info"])
        let line = try await child.waitForLine(timeout: .seconds(60), stderr: true) { $0.contains("Collector listening") }
        guard let range = line.range(of: #"http\.port=(\d+)"#, options: .regularExpression),
            let port = Int(line[range].dropFirst("http.port=".count))
        else { throw TestFailure("no http.port in \(line)") }
        return CollectorUnderTest(folder: folder, configPath: configPath, child: child, port: port, caFile: certificates?.caCert)
    }

    private init(folder: TemporaryDirectory, configPath: String, child: ChildProcess, port: Int, caFile: String?) {
        self.folder = folder
        self.configPath = configPath
        self.child = child
        self.port = port
        self.caFile = caFile
    }

    /// An API request with a token (admin unless said otherwise).
    func request(_ path: String, method: String = "GET", token: String? = DrillTokens.admin) -> HTTPRequest {
        HTTPRequest(
            method: method, url: baseURL + path, headers: token.map { [HTTPHeader("Authorization", "Bearer \($0)")] } ?? [],
            body: method == "POST" ? Data() : nil, timeout: .seconds(10), caFile: caFile)
    }

    /// Resident memory in MiB (`VmRSS` from /proc).
    var rssMiB: Double {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
            let line = text.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }),
            let kb = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) })
        else { return .nan }
        return kb / 1024
    }

    func metric(_ name: String, client: CurlHTTPClient = .shared) async throws -> Double? {
        let response = try await client.perform(request("/metrics", token: DrillTokens.read))
        return String(decoding: response.body, as: UTF8.self).split(separator: "\n")
            .first { $0.hasPrefix(name + " ") }
            .flatMap { Double($0.split(separator: " ")[1]) }
    }
}

// MARK: - Raw HTTP

/// A plain-TCP front for a TLS server (socat, a real OpenSSL client): raw bytes written to
/// `port` reach the collector inside TLS, so the byte-level drills run against HTTPS unchanged.
final class TLSRelay: Sendable {
    let port: Int
    let process: ChildProcess

    init(toPort target: Int, caFile: String) async throws {
        // A port that was free a moment ago (the server is stopped before socat takes it).
        let probe = try LoopbackHTTPServer { _ in .drop }
        port = probe.port
        probe.stop()
        guard FileManager.default.isExecutableFile(atPath: "/usr/bin/socat") else {
            throw TestFailure("the TLS drill needs socat (scripts/install-deps.sh installs it)")
        }
        process = try ChildProcess(
            "/usr/bin/socat",
            ["TCP-LISTEN:\(port),bind=127.0.0.1,reuseaddr,fork", "OPENSSL:localhost:\(target),cafile=\(caFile),verify=1"])
        let port = self.port
        try await waitUntil("socat to listen on \(port)", timeout: .seconds(10)) {
            guard let fd = try? connectLoopbackSocket(port: port, receiveTimeout: .seconds(1)) else { return false }
            Glibc.close(fd)
            return true
        }
    }

    func stop() async { await process.stop() }
}

/// What came back for one raw request.
enum RawOutcome: Equatable {
    case status(Int)
    /// The server closed (or reset) the connection without a status line.
    case closed
    /// Nothing within the read deadline.
    case silent
}

/// A blocking TCP client with byte-level control, for requests no HTTP client would send.
final class RawConnection {
    let fd: Int32
    private var isOpen = true

    init(port: Int, receiveTimeout: Duration = .seconds(10)) throws {
        fd = try connectLoopbackSocket(port: port, receiveTimeout: receiveTimeout)
    }

    /// Sends all bytes; false when the peer has closed (EPIPE/ECONNRESET).
    @discardableResult
    func send(_ data: Data) -> Bool {
        data.withUnsafeBytes { raw in
            var offset = 0
            while offset < raw.count {
                let n = Glibc.send(fd, raw.baseAddress! + offset, raw.count - offset, Int32(MSG_NOSIGNAL))
                if n <= 0 { return false }
                offset += n
            }
            return true
        }
    }

    func shutdownWrite() { shutdown(fd, Int32(SHUT_WR)) }

    /// Reads until a status line arrives, the peer closes, or the receive time-out passes.
    func readOutcome() -> RawOutcome {
        var received = Data()
        var chunk = [UInt8](repeating: 0, count: 16384)
        while true {
            let n = recv(fd, &chunk, chunk.count, 0)
            if n > 0 {
                received.append(contentsOf: chunk[0..<n])
                if let end = received.firstIndex(of: UInt8(ascii: "\n")) {
                    let line = String(decoding: received[..<end], as: UTF8.self)
                    let parts = line.split(separator: " ")
                    if parts.count >= 2, parts[0].hasPrefix("HTTP/"), let status = Int(parts[1]) { return .status(status) }
                    return .closed
                }
                continue
            }
            if n == 0 { return .closed }
            return (errno == EAGAIN || errno == EWOULDBLOCK) ? .silent : .closed
        }
    }

    func close() {
        if isOpen { Glibc.close(fd) }
        isOpen = false
    }

    deinit { close() }
}

/// One raw request: connect, send, read the outcome, close.
func rawRequest(port: Int, _ bytes: Data, halfClose: Bool = false, timeout: Duration = .seconds(10)) throws -> RawOutcome {
    let connection = try RawConnection(port: port, receiveTimeout: timeout)
    // A send that fails because the server already answered and closed is still read below.
    connection.send(bytes)
    if halfClose { connection.shutdownWrite() }
    return connection.readOutcome()
}

/// An HTTP/1.1 request as bytes; `contentLength` overrides the real length (nil: the real one;
/// pass -1 to omit the header).
func httpBytes(
    method: String = "POST", path: String = PushProtocol.path, headers: [(String, String)], body: Data, contentLength: Int? = nil
) -> Data {
    var head = "\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    for (name, value) in headers { head += "\(name): \(value)\r\n" }
    let length = contentLength ?? body.count
    if length >= 0 { head += "Content-Length: \(length)\r\n" }
    head += "\r\n"
    return Data(head.utf8) + body
}

/// A value shared between tasks, behind a lock (a class, so escaping closures can hold it).
final class Shared<Value: Sendable>: Sendable {
    private let mutex: Mutex<Value>
    init(_ value: Value) { mutex = Mutex(value) }
    var value: Value { mutex.withLock { $0 } }
    @discardableResult
    func withLock<T: Sendable>(_ body: (inout Value) -> T) -> T { mutex.withLock { body(&$0) } }
}

/// Runs `body` against a collector process started in `folder`, stopped afterwards whatever happens.
func withDrillCollector(
    in folder: TemporaryDirectory, agents: [DrillAgent], extra: [String] = [], _ body: (CollectorUnderTest) async throws -> Void
) async throws {
    let collector = try await CollectorUnderTest.start(in: folder, agents: agents, extra: extra)
    try await withTeardown { teardown in
        teardown.add { await collector.child.stop() }
        try await body(collector)
    }
}
