import CollectorAPI
import Correlation
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport

/// The whole system as real processes on loopback, as `make demo` runs it: `sonde-sim` with
/// regions, a `sonde-collector` on a SQLite file, agents (`sonde-agent run`) each behind its own
/// `sonde-sim relay` (its "network", cut with SIGUSR1), and a webhook receiver recording events.
final class SondeSystem: @unchecked Sendable {
    // Mutated only during `start` (before any concurrent use) and by `addAgent`, which tests call
    // from one task.
    let dir: TemporaryDirectory
    let sim: ChildProcess
    let regionURLs: [String: String]
    let collector: ChildProcess
    let collectorURL: String
    /// The private CA of the collector's certificate (made for this run); agents and API calls trust it.
    let certificates: TestCertificates
    static let readToken = "e2e-read-token-4c1d"
    let receiver: LoopbackHTTPServer
    private(set) var agents: [String: (process: ChildProcess, relay: ChildProcess)] = [:]
    let interval: String
    let client = CurlHTTPClient(threads: 4)
    static let probesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../probes/sim").standardized.path

    /// Starts the sim and the collector, then one agent per entry of `agents` (`eu-1` → region eu).
    static func start(regions: [String] = ["eu", "us", "ap"], agents: [String], interval: String = "1s", correlation: String = "{}") async throws -> SondeSystem {
        let dir = try TemporaryDirectory("sonde-e2e")
        let sim = try ChildProcess("sonde-sim", ["--regions", regions.joined(separator: ","), "--batch-pace", "100ms"])
        var urls: [String: String] = [:]
        for region in regions {
            let line = try await sim.waitForLine { $0.hasPrefix(region + " ") }
            urls[region] = String(line.split(separator: " ")[1])
        }
        let receiver = try LoopbackHTTPServer { _ in .respond(status: 200) }
        var keys: [String: String] = [:]
        for id in agents {
            let keygen = try ChildProcess("sonde-agent", ["keygen", "--out", dir.file("\(id).key")])
            guard try await keygen.waitForExit() == 0 else { throw TestFailure("keygen failed: \(keygen.allOutput)") }
            keys[id] = try String(contentsOfFile: dir.file("\(id).key.pub"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
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
            correlation: \(correlation)
            agents:

            """
        for id in agents { config += "  - {id: \(id), region: \(region(of: id)), public_key: \(keys[id]!)}\n" }
        try config.write(toFile: dir.file("collector.yaml"), atomically: true, encoding: .utf8)
        let collector = try ChildProcess("sonde-collector", ["serve", "--config", dir.file("collector.yaml")])
        let line = try await collector.waitForLine(stderr: true) { $0.contains("Collector listening") }
        guard let port = line.firstMatch(of: /http\.port=(\d+)/)?.1 else { throw TestFailure("no port in: \(line)") }
        let system = SondeSystem(dir: dir, sim: sim, regionURLs: urls, collector: collector, collectorURL: "https://localhost:\(port)", certificates: certificates, receiver: receiver,
            interval: interval)
        for id in agents { try await system.addAgent(id) }
        return system
    }

    /// Starts a system, runs `body` and always stops every process it started, also when
    /// `body` throws (a `defer` cannot await, and an unstructured task may never run before the
    /// test process exits, leaving sims and collectors behind).
    static func with(
        regions: [String] = ["eu", "us", "ap"], agents: [String], interval: String = "1s", correlation: String = "{}",
        _ body: (SondeSystem) async throws -> Void
    ) async throws {
        let system = try await start(regions: regions, agents: agents, interval: interval, correlation: correlation)
        do {
            try await body(system)
        } catch {
            await system.stop()
            throw error
        }
        await system.stop()
    }

    private init(dir: TemporaryDirectory, sim: ChildProcess, regionURLs: [String: String], collector: ChildProcess, collectorURL: String, certificates: TestCertificates, receiver: LoopbackHTTPServer, interval: String
    ) {
        self.dir = dir
        self.sim = sim
        self.regionURLs = regionURLs
        self.collector = collector
        self.collectorURL = collectorURL
        self.certificates = certificates
        self.receiver = receiver
        self.interval = interval
    }

    static func region(of agent: String) -> String { String(agent.split(separator: "-").first ?? "local") }

    func addAgent(_ id: String) async throws {
        let target = regionURLs[Self.region(of: id)]!.replacingOccurrences(of: "http://", with: "")
        let relay = try ChildProcess("sonde-sim", ["relay", "--listen", "127.0.0.1:0", "--to", target])
        let relayURL = String(try await relay.waitForLine { $0.hasPrefix("relay ") }.split(separator: " ")[1])
        try """
            agent: {id: \(id), region: \(Self.region(of: id))}
            collector: {url: \(collectorURL), ca_file: \(certificates.caCert), key: \(dir.file("\(id).key")), flush_interval: 100ms, backoff: {base: 100ms, cap: 1s}}
            spool: {path: \(dir.file("spool-\(id)"))}
            probes: [\(Self.probesDirectory)]
            variables: {base_url: \(relayURL), batch_poll_every: 100ms, finalizing_limit: 1s, latency_degraded_after: 1s}
            scheduling: {interval: \(interval), jitter: 0.1}
            """.write(toFile: dir.file("\(id).yaml"), atomically: true, encoding: .utf8)
        let agent = try ChildProcess("sonde-agent", ["run", "--config", dir.file("\(id).yaml")], environment: ["SONDE_SIM_PASSWORD": "probe-password"])
        agents[id] = (agent, relay)
    }

    // MARK: - Acting on the system

    /// Sets a fault through the real `sonde-sim fault set` command.
    func fault(_ arguments: [String]) async throws {
        let command = try ChildProcess("sonde-sim", ["fault", "set", "--sim", regionURLs.values.sorted().first!] + arguments)
        guard try await command.waitForExit() == 0 else { throw TestFailure("fault set failed: \(command.allOutput)") }
    }

    func clearFaults() async throws {
        let command = try ChildProcess("sonde-sim", ["fault", "clear", "--all", "--sim", regionURLs.values.sorted().first!])
        guard try await command.waitForExit() == 0 else { throw TestFailure("fault clear failed: \(command.allOutput)") }
    }

    /// Cuts (SIGUSR1) or restores (SIGUSR2) one agent's network.
    func cutNetwork(of agent: String) { agents[agent]!.relay.signal(SIGUSR1) }
    func restoreNetwork(of agent: String) { agents[agent]!.relay.signal(SIGUSR2) }

    // MARK: - Observing it

    /// Webhook events received so far, in arrival order.
    var events: [AlertEvent] {
        receiver.requests.compactMap { try? SondeJSON.decode(AlertEvent.self, from: $0.body) }
    }

    func events(_ type: AlertEventType, component: String? = nil) -> [AlertEvent] {
        events.filter { $0.type == type && (component == nil || $0.component == component) }
    }

    @discardableResult
    func waitForEvent(_ type: AlertEventType, component: String? = nil, agent: String? = nil, timeout: Duration = .seconds(60)) async throws -> AlertEvent {
        var found: AlertEvent?
        try await waitUntil("\(type.rawValue) \(component ?? agent ?? "")", timeout: timeout, every: .milliseconds(100)) {
            found = self.events(type, component: component).first { agent == nil || $0.agent == agent }
            return found != nil
        }
        return found!
    }

    /// A read-token GET of the collector's API over HTTPS.
    func api(_ path: String) -> HTTPRequest {
        HTTPRequest(
            url: collectorURL + path, headers: [HTTPHeader("Authorization", "Bearer \(Self.readToken)")], timeout: .seconds(5),
            caFile: certificates.caCert)
    }

    func status() async throws -> StatusResponse {
        let response = try await client.perform(api("/v1/status"))
        return try SondeJSON.decode(StatusResponse.self, from: response.body)
    }

    func verdict(_ component: String) async throws -> ComponentVerdict? {
        try await status().components.first { $0.component == component }
    }

    /// Stored results of one agent (newest first, at most 1000).
    func results(agent: String) async throws -> [ProbeResult] {
        let response = try await client.perform(api("/v1/results?agent=\(agent)&limit=1000"))
        return try SondeJSON.decode(ResultsResponse.self, from: response.body).results
    }

    func agentsView() async throws -> [AgentView] {
        let response = try await client.perform(api("/v1/agents"))
        return try SondeJSON.decode(AgentsResponse.self, from: response.body).agents
    }

    /// Waits until every agent reports and every component the agents probe is operational.
    func waitUntilHealthy(timeout: Duration = .seconds(60)) async throws {
        var last = ""
        do {
            try await waitUntil("every component operational", timeout: timeout, every: .milliseconds(200)) {
                let status = try await self.status()
                last = status.components.map { "\($0.component)=\($0.status.rawValue)" }.joined(separator: " ")
                    + " agents ok \(status.agents.ok)/\(status.agents.total)"
                return status.components.count >= 4 && status.components.allSatisfy { $0.status == .operational }
                    && status.agents.ok == self.agents.count && status.agents.total == self.agents.count
            }
        } catch {
            throw TestFailure("\(error); last status: \(last)\nagent eu-1 log:\n\(agents.values.first?.process.allOutput.suffix(2000) ?? "")")
        }
    }

    func stop() async {
        for (_, agent) in agents {
            await agent.process.stop()
            await agent.relay.stop()
        }
        await collector.stop()
        await sim.stop()
        receiver.stop()
        dir.remove()
    }
}
