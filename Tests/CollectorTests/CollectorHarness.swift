import Collector
import CollectorStore
import CollectorAPI
import CurlHTTP
import Foundation
import Logging
import ServiceLifecycle
import SondeCore
import SondeTestSupport
import Testing

/// A real collector on 127.0.0.1 and an ephemeral port, over a real SQLite file, run in a
/// ServiceGroup that the test shuts down gracefully.
final class RunningCollector: Sendable {
    let built: BuiltCollector
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int
    /// The CA to trust when the collector serves HTTPS (nil: plain HTTP).
    let caFile: String?

    /// `https://localhost:…` with TLS (the test certificates name localhost), else `http://127.0.0.1:…`.
    var baseURL: String { caFile == nil ? "http://127.0.0.1:\(port)" : "https://localhost:\(port)" }
    var store: any CollectorStorage { built.store }

    static func start(_ config: CollectorConfig, caFile: String? = nil, logger: Logger = testLogger()) async throws -> RunningCollector {
        let built = try await buildCollector(config: config, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [built.application], gracefulShutdownSignals: [], logger: logger))
        let task = Task { try await group.run() }
        try await waitUntil("the collector to listen", timeout: .seconds(20)) { built.port != nil }
        return RunningCollector(built: built, group: group, task: task, port: built.port!, caFile: config.tls == nil ? nil : caFile)
    }

    private init(built: BuiltCollector, group: ServiceGroup, task: Task<Void, any Error>, port: Int, caFile: String?) {
        self.built = built
        self.group = group
        self.task = task
        self.port = port
        self.caFile = caFile
    }

    func stop() async {
        await group.triggerGracefulShutdown()
        _ = try? await task.value
    }
}

func testLogger() -> Logger {
    var logger = Logger(label: "collector-test")
    logger.logLevel = ProcessInfo.processInfo.environment["SONDE_TEST_LOG"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
    return logger
}

/// A test agent: an id, a region and a fresh key pair.
struct TestAgent {
    let id: String
    let region: String
    let key = AgentSigningKey()

    var enrolment: AgentEnrolment { AgentEnrolment(id: id, region: region, publicKey: key.publicKey.base64) }

    func result(
        probe: String = "login", component: String = "login", outcome: Outcome = .ok, startedAt: Date = Date(), durationMs: Double = 120,
        code: String? = nil
    ) -> ProbeResult {
        let error = outcome == .failed ? ProbeError(kind: .httpStatus, step: "login", message: "HTTP 500", code: code) : nil
        return ProbeResult(
            probe: probe, component: component, agent: id, region: region, startedAt: startedAt, durationMs: durationMs, outcome: outcome,
            error: error,
            steps: [
                StepResult(
                    name: "login", method: "POST", url: "https://platform.example/login", status: outcome == .failed ? 500 : 200,
                    ok: outcome != .failed, timings: PhaseTimings(dns: 1, connect: 2, tls: 3, ttfb: 100, transfer: 14, total: 120))
            ])
    }

    func batch(_ results: [ProbeResult], sentAt: Date = Date(), batchID: String = UUID().uuidString) -> PushBatch {
        PushBatch(agent: id, batchID: batchID, sentAt: sentAt, results: results)
    }

    /// POSTs a signed body (signed by this agent unless `signer` says otherwise).
    func push(
        _ body: Data, to collector: RunningCollector, headerAgent: String? = nil, signature: String? = nil, signer: AgentSigningKey? = nil
    ) async throws -> HTTPResponse {
        var headers = [HTTPHeader("Content-Type", "application/json")]
        headers.append(HTTPHeader(PushProtocol.agentHeader, headerAgent ?? id))
        headers.append(HTTPHeader(PushProtocol.signatureHeader, try signature ?? (signer ?? key).signatureHeader(for: body)))
        return try await CurlHTTPClient.shared.perform(
            HTTPRequest(
                method: "POST", url: collector.baseURL + PushProtocol.path, headers: headers, body: body, timeout: .seconds(10), caFile: collector.caFile))
    }

    func push(_ batch: PushBatch, to collector: RunningCollector) async throws -> HTTPResponse {
        try await push(try SondeJSON.encode(batch), to: collector)
    }
}

/// The API tokens every test collector knows (and their roles).
enum TestTokens {
    static let admin = "sonde-test-admin-0123456789abcdef"
    static let read = "sonde-test-read-0123456789abcdef"

    static var configured: [APIToken] {
        [APIToken(name: "ops", role: .admin, sha256: SHA256Digest.hash(Data(admin.utf8))), APIToken(name: "grafana", role: .read, sha256: SHA256Digest.hash(Data(read.utf8)))]
    }

    static func headers(_ token: String?) -> [HTTPHeader] { token.map { [HTTPHeader("Authorization", "Bearer \($0)")] } ?? [] }
}

/// GET with a token (the admin one unless said otherwise; nil sends none).
func get(_ collector: RunningCollector, _ path: String, token: String? = TestTokens.admin) async throws -> HTTPResponse {
    try await CurlHTTPClient.shared.perform(
        HTTPRequest(url: collector.baseURL + path, headers: TestTokens.headers(token), timeout: .seconds(10), caFile: collector.caFile))
}

func post(_ collector: RunningCollector, _ path: String, token: String? = TestTokens.admin) async throws -> HTTPResponse {
    try await CurlHTTPClient.shared.perform(
        HTTPRequest(
            method: "POST", url: collector.baseURL + path, headers: TestTokens.headers(token), body: Data(), timeout: .seconds(10), caFile: collector.caFile))
}

func decode<T: Decodable>(_ type: T.Type, _ response: HTTPResponse) throws -> T {
    try SondeJSON.decode(type, from: response.body)
}

func testConfig(dir: TemporaryDirectory, agents: [TestAgent], webhooks: [WebhookTarget] = []) -> CollectorConfig {
    var config = CollectorConfig()
    config.port = 0
    config.plainHTTP = true
    config.tokens = TestTokens.configured
    // Tests queue test alerts back to back; SecurityTests checks the default limit.
    config.limits.testAlertsPerMinute = 10_000
    config.databasePath = dir.file("collector.db")
    config.agents = agents.map(\.enrolment)
    config.webhooks = webhooks
    config.evaluationInterval = 0.1
    config.webhookRetryBase = 0.05
    config.webhookRetryCap = 0.2
    config.webhookTimeout = 2
    config.webhookPollInterval = 0.02
    return config
}

/// `testConfig` with agents called silent after about 2 s without a result, for tests of what
/// a stopped agent looks like.
func fastSilenceConfig(dir: TemporaryDirectory, agents: [TestAgent]) -> CollectorConfig {
    var config = testConfig(dir: dir, agents: agents)
    config.correlation.silentMin = 1
    config.correlation.silentAfter = 2
    config.correlation.silentAfterIntervals = 2
    return config
}

/// Runs `body` against a started collector and always stops it, also when `body` throws.
func withCollector<T>(
    _ config: CollectorConfig, caFile: String? = nil, logger: Logger = testLogger(), _ body: (RunningCollector) async throws -> T
) async throws -> T {
    try await withTeardown { teardown in
        let collector = try await RunningCollector.start(config, caFile: caFile, logger: logger)
        teardown.add { await collector.stop() }
        return try await body(collector)
    }
}

/// Each agent pushes three passing runs, and the collector sees every one of them `ok`: the
/// healthy start of the tests that then make storage refuse pushes.
func reportHealthy(_ agents: [TestAgent], to collector: RunningCollector) async throws {
    for agent in agents {
        for i in 0..<3 {
            #expect(try await agent.push(agent.batch([agent.result(startedAt: Date().addingTimeInterval(Double(i) * 0.2 - 0.6))]), to: collector).status == 200)
        }
    }
    try await waitUntil("every agent ok") {
        try decode(AgentsResponse.self, try await get(collector, "/v1/agents")).agents.filter { $0.state == .ok }.count == agents.count
    }
}
