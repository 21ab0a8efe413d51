import CollectorAPI
import Correlation
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization

/// The whole system as real processes on loopback, as `make demo` runs it: `sonde-sim` with
/// regions, a `sonde-collector` on a SQLite file, agents (`sonde-agent run`) each behind its own
/// `sonde-sim relay` (its "network": cut with SIGUSR1, flaky with SIGHUP, healthy with SIGUSR2),
/// and a webhook receiver recording events with their arrival time.
public final class SondeSystem: @unchecked Sendable {
    // Mutated only during `start` (before any concurrent use) and by `addAgent`/`restartAgent`,
    // which callers use from one task.
    public let dir: TemporaryDirectory
    public let platform: SimulatedPlatform
    public var sim: ChildProcess { platform.process }
    public var regionURLs: [String: String] { platform.regionURLs }
    public private(set) var collector: ChildProcess
    /// What collectors stopped by `stopCollector` wrote, for the logs kept on request.
    private var earlierCollectorOutput = ""
    public let collectorURL: String
    /// The private CA of the collector's certificate (made for this run); agents and API calls trust it.
    public let certificates: TestCertificates
    public static let readToken = "e2e-read-token-4c1d"
    public let receiver: LoopbackHTTPServer
    private let arrivals: WebhookArrivals
    public private(set) var agents: [String: (process: ChildProcess, relay: ChildProcess)] = [:]
    private var relayURLs: [String: String] = [:]
    public let interval: String
    public let options: Options
    public let client = CurlHTTPClient(threads: 4)
    /// What differs between systems beyond regions, agents and interval.
    public struct Options: Sendable {
        /// Share of requests a flaky relay (`flaky(_:)`) fails, with 502.
        public var relayErrorFraction: Double = 0.3
        /// Agents whose wall clock runs off by this many seconds (negative = behind), through
        /// libfaketime (LD_PRELOAD; monotonic clocks and timers untouched).
        public var clockOffsets: [String: Int] = [:]
        /// The collector's `correlation:` map, as YAML flow text.
        public var correlation: String = "{}"
        /// The agents' `collector.flush_interval` (non-default 100 ms, so that steady healthy
        /// results reach the collector about as fresh as failures do); nil: the agent's default.
        public var agentFlushInterval: String? = "100ms"
        public init() {}
    }

    /// Starts the sim and the collector, then one agent per entry of `agents` (`eu-1` → region eu).
    public static func start(
        regions: [String] = ["eu", "us", "ap"], agents: [String], interval: String = "1s", correlation: String = "{}",
        options: Options = Options()
    ) async throws -> SondeSystem {
        var options = options
        if correlation != "{}" { options.correlation = correlation }
        let dir = try TemporaryDirectory("sonde-e2e")
        let platform = try await SimulatedPlatform(regions: regions)
        let arrivals = WebhookArrivals()
        let receiver = try LoopbackHTTPServer { request in
            arrivals.record(request.body)
            return .respond(status: 200)
        }
        let keys = try await SimAgentSetup.keygen(agents, in: dir)
        let certificates = try TestCertificates(in: dir.file("tls"))
        let tokenDigest = tokenDigestHex(Self.readToken)
        var config = """
            listen: {host: 127.0.0.1, port: 0, tls: {cert: \(certificates.serverCert), key: \(certificates.serverKey)}}
            tokens: [{name: e2e, role: read, sha256: \(tokenDigest)}]
            database: \(dir.file("collector.db"))
            webhooks:
              - {name: test, url: \(receiver.baseURL), secret: e2e-secret}
            webhook_retry: {base: 200ms, cap: 2s, poll: 50ms}
            evaluation_interval: 1s
            correlation: \(options.correlation)
            agents:

            """
        for id in agents { config += "  - {id: \(id), region: \(region(of: id)), public_key: \(keys[id]!)}\n" }
        try config.write(toFile: dir.file("collector.yaml"), atomically: true, encoding: .utf8)
        let collector = try ChildProcess("sonde-collector", ["serve", "--config", dir.file("collector.yaml")])
        let line = try await collector.waitForLine(stderr: true) { $0.contains("Collector listening") }
        guard let port = line.firstMatch(of: /http\.port=(\d+)/)?.1 else { throw TestFailure("no port in: \(line)") }
        let system = SondeSystem(
            dir: dir, platform: platform, collector: collector, collectorURL: "https://localhost:\(port)", certificates: certificates, receiver: receiver,
            arrivals: arrivals, interval: interval, options: options)
        do {
            for id in agents { try await system.addAgent(id) }
        } catch {
            await system.stop()
            throw error
        }
        return system
    }

    /// Starts a system, runs `body` and always stops every process it started, also when
    /// `body` throws (a `defer` cannot await, and an unstructured task may never run before the
    /// test process exits, leaving sims and collectors behind).
    public static func with(
        regions: [String] = ["eu", "us", "ap"], agents: [String], interval: String = "1s", correlation: String = "{}",
        options: Options = Options(), _ body: (SondeSystem) async throws -> Void
    ) async throws {
        try await withTeardown { teardown in
            let system = try await start(regions: regions, agents: agents, interval: interval, correlation: correlation, options: options)
            teardown.add { await system.stop() }
            try await body(system)
        }
    }

    private init(
        dir: TemporaryDirectory, platform: SimulatedPlatform, collector: ChildProcess, collectorURL: String,
        certificates: TestCertificates, receiver: LoopbackHTTPServer, arrivals: WebhookArrivals, interval: String, options: Options
    ) {
        self.dir = dir
        self.platform = platform
        self.collector = collector
        self.collectorURL = collectorURL
        self.certificates = certificates
        self.receiver = receiver
        self.arrivals = arrivals
        self.interval = interval
        self.options = options
    }

    public static func region(of agent: String) -> String { SimAgentSetup.region(of: agent) }

    public func addAgent(_ id: String) async throws {
        let target = regionURLs[Self.region(of: id)]!.replacingOccurrences(of: "http://", with: "")
        let relay = try ChildProcess(
            "sonde-sim", ["relay", "--listen", "127.0.0.1:0", "--to", target, "--error-fraction", "\(options.relayErrorFraction)"])
        let relayURL = String(try await relay.waitForLine { $0.hasPrefix("relay ") }.split(separator: " ")[1])
        relayURLs[id] = relayURL
        try SimAgentSetup.writeConfig(id: id, dir: dir, collectorURL: collectorURL, caFile: certificates.caCert, baseURL: relayURL, interval: interval,
            flushInterval: options.agentFlushInterval)
        agents[id] = (try startAgentProcess(id), relay)
    }

    /// Kills the collector (SIGKILL: a crash, nothing flushed beyond what it committed). The
    /// agents keep probing and spool what they cannot push.
    public func stopCollector() async {
        collector.signal(SIGKILL)
        _ = try? await collector.waitForExit(timeout: .seconds(10))
        earlierCollectorOutput += collector.allOutput
    }

    /// Starts the collector again on its database and port, as a supervisor would after a crash.
    public func startCollectorAgain() async throws {
        guard !collector.isRunning else { return }
        let path = dir.file("collector.yaml")
        guard let port = collectorURL.split(separator: ":").last else { throw TestFailure("no port in \(collectorURL)") }
        let config = try String(contentsOfFile: path, encoding: .utf8).replacingOccurrences(of: "port: 0,", with: "port: \(port),")
        try config.write(toFile: path, atomically: true, encoding: .utf8)
        collector = try ChildProcess("sonde-collector", ["serve", "--config", path])
        _ = try await collector.waitForLine(stderr: true) { $0.contains("Collector listening") }
    }

    /// Starts `sonde-agent run` for `id` again (same config, key and spool) after it was stopped.
    public func restartAgent(_ id: String) async throws {
        guard let current = agents[id] else { throw TestFailure("no agent \(id)") }
        if current.process.isRunning { await current.process.stop() }
        agents[id] = (try startAgentProcess(id), current.relay)
    }

    private func startAgentProcess(_ id: String) throws -> ChildProcess {
        var environment = ["SONDE_SIM_PASSWORD": "probe-password"]
        if let offset = options.clockOffsets[id] {
            // The timer shim first, so its `timerfd_settime` is the one the agent binds to.
            environment["LD_PRELOAD"] = try monotonicTimersShim() + ":" + Self.libfaketime()
            environment["FAKETIME"] = offset < 0 ? "\(offset)" : "+\(offset)"
            environment["FAKETIME_DONT_FAKE_MONOTONIC"] = "1"
        }
        return try ChildProcess("sonde-agent", ["run", "--config", dir.file("\(id).yaml")], environment: environment)
    }

    /// A preload library whose `timerfd_settime` goes straight to the kernel, built once per
    /// system with the toolchain's clang. libfaketime (0.9.10 to 0.9.12) shifts every absolute
    /// timer by the fake offset as if it were CLOCK_REALTIME ("only CLOCK_REALTIME is handled"),
    /// also with FAKETIME_DONT_FAKE_MONOTONIC=1: libdispatch arms CLOCK_MONOTONIC/BOOTTIME
    /// timerfds with absolute deadlines, so under a clock set 240 s behind every Swift
    /// `Task.sleep` ended 240 s late (strace: a 300 ms sleep armed 5.3 s ahead at −5 s). With the
    /// shim, monotonic timers keep their length and the wall clock stays skewed.
    private func monotonicTimersShim() throws -> String {
        let library = dir.file("monotonic-timers.so")
        if FileManager.default.fileExists(atPath: library) { return library }
        let source = dir.file("monotonic-timers.c")
        try """
            #define _GNU_SOURCE
            #include <sys/syscall.h>
            #include <sys/timerfd.h>
            #include <unistd.h>
            int timerfd_settime(int fd, int flags, const struct itimerspec *new_value, struct itimerspec *old_value) {
                return (int)syscall(SYS_timerfd_settime, fd, flags, new_value, old_value);
            }
            """.write(toFile: source, atomically: true, encoding: .utf8)
        let compiler = Process()
        compiler.executableURL = URL(fileURLWithPath: try requireProgram("clang", package: "clang (the Swift toolchain has it)"))
        compiler.arguments = ["-shared", "-fPIC", "-O2", "-o", library, source]
        try compiler.run()
        compiler.waitUntilExit()
        guard compiler.terminationStatus == 0 else { throw TestFailure("clang could not build \(source) (status \(compiler.terminationStatus))") }
        return library
    }

    /// libfaketime from Debian's `libfaketime` package (scripts/install-deps.sh installs it).
    static func libfaketime() throws -> String {
        let candidates = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"].map { $0 + "/faketime/libfaketime.so.1" }
        guard let path = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
            throw TestFailure("libfaketime is missing (needed to skew one agent's clock): apt-get install libfaketime, or run scripts/install-deps.sh")
        }
        return path
    }

    // MARK: - Acting on the system

    /// Sets a fault through the real `sonde-sim fault set` command.
    public func fault(_ arguments: [String]) async throws { try await platform.fault(arguments) }

    public func clearFaults() async throws { try await platform.clearFaults() }

    /// Cuts (SIGUSR1) one agent's network, makes it flaky (SIGHUP: `relayErrorFraction` of its
    /// requests answered 502), or restores it (SIGUSR2).
    public func cutNetwork(of agent: String) { agents[agent]!.relay.signal(SIGUSR1) }
    public func makeNetworkFlaky(of agent: String) { agents[agent]!.relay.signal(SIGHUP) }
    public func restoreNetwork(of agent: String) { agents[agent]!.relay.signal(SIGUSR2) }

    // MARK: - Observing it

    /// Webhook events received so far, in arrival order.
    public var events: [AlertEvent] {
        receiver.requests.compactMap { try? SondeJSON.decode(AlertEvent.self, from: $0.body) }
    }

    /// Webhook bodies with their arrival time, in arrival order.
    public var arrivedEvents: [(at: ContinuousClock.Instant, body: Data)] { arrivals.all }

    public func events(_ type: AlertEventType, component: String? = nil) -> [AlertEvent] {
        events.filter { $0.type == type && (component == nil || $0.component == component) }
    }

    @discardableResult
    public func waitForEvent(_ type: AlertEventType, component: String? = nil, agent: String? = nil, timeout: Duration = .seconds(60)) async throws -> AlertEvent {
        var found: AlertEvent?
        try await waitUntil("\(type.rawValue) \(component ?? agent ?? "")", timeout: timeout, every: .milliseconds(100)) {
            found = self.events(type, component: component).first { agent == nil || $0.agent == agent }
            return found != nil
        }
        return found!
    }

    /// `GET path` on the collector's API, the raw body.
    public func api(_ path: String) async throws -> Data {
        let response = try await client.perform(
            HTTPRequest(
                url: collectorURL + path, headers: [HTTPHeader("Authorization", "Bearer \(Self.readToken)")], timeout: .seconds(5),
                caFile: certificates.caCert))
        guard response.status == 200 else { throw TestFailure("GET \(path) answered \(response.status): \(response.bodyText.prefix(300))") }
        return response.body
    }

    public func status() async throws -> StatusResponse {
        try SondeJSON.decode(StatusResponse.self, from: try await api("/v1/status"))
    }

    public func verdict(_ component: String) async throws -> ComponentVerdict? {
        try await status().components.first { $0.component == component }
    }

    /// Stored results of one agent (newest first, at most 1000).
    public func results(agent: String) async throws -> [ProbeResult] {
        try SondeJSON.decode(ResultsResponse.self, from: try await api("/v1/results?agent=\(agent)&limit=1000")).results
    }

    public func agentsView() async throws -> [AgentView] {
        try SondeJSON.decode(AgentsResponse.self, from: try await api("/v1/agents")).agents
    }

    /// Waits until every agent reports and every component the agents probe is operational, with
    /// no open incident. Agents in `exempt` need not be `ok` (e.g. one whose clock is off).
    public func waitUntilHealthy(timeout: Duration = .seconds(60), exempt: Set<String> = []) async throws {
        var last = ""
        var notOK: [String] = []
        do {
            try await waitUntil("every component operational", timeout: timeout, every: .milliseconds(200)) {
                let status = try await self.status()
                last = status.components.map { "\($0.component)=\($0.status.rawValue)" }.joined(separator: " ")
                    + " agents ok \(status.agents.ok)/\(status.agents.total), open incidents \(status.openIncidents.count)"
                guard status.components.count >= 4 && status.components.allSatisfy({ $0.status == .operational }) && status.openIncidents.isEmpty
                else { return false }
                notOK = try await self.agentsView().filter { $0.state != .ok }.map(\.id)
                return Set(notOK).isSubset(of: exempt) && status.agents.total == self.agents.count
            }
        } catch {
            let logs = notOK.map { "agent \($0) log:\n\(agents[$0]?.process.allOutput.suffix(2000) ?? "")" }.joined(separator: "\n")
            throw TestFailure("\(error); last status: \(last); agents not ok: \(notOK.joined(separator: ", "))\n\(logs)")
        }
    }

    public func stop() async {
        for (_, agent) in agents {
            await agent.process.stop()
            await agent.relay.stop()
        }
        await collector.stop()
        await sim.stop()
        receiver.stop()
        // SONDE_SCENARIOS_KEEP=DIR keeps the collector's database (results with their receive
        // times, incidents, events) for reading a trial's timeline afterwards.
        if let keep = ProcessInfo.processInfo.environment["SONDE_SCENARIOS_KEEP"] {
            let target = keep + "/" + URL(fileURLWithPath: dir.path).lastPathComponent
            try? FileManager.default.createDirectory(atPath: target, withIntermediateDirectories: true)
            try? (earlierCollectorOutput + collector.allOutput).write(toFile: target + "/collector.log", atomically: true, encoding: .utf8)
            for name in ["collector.db", "collector.db-wal", "collector.db-shm"] {
                try? FileManager.default.copyItem(atPath: dir.file(name), toPath: target + "/" + name)
            }
        }
        dir.remove()
    }
}

/// Webhook bodies with the moment each arrived (detection is measured to the receiver).
final class WebhookArrivals: Sendable {
    private let list = Mutex<[(at: ContinuousClock.Instant, body: Data)]>([])
    func record(_ body: Data) { list.withLock { $0.append((ContinuousClock.now, body)) } }
    var all: [(at: ContinuousClock.Instant, body: Data)] { list.withLock { $0 } }
}
