import Collector
import CollectorStore
import CurlHTTP
import Foundation
import Logging
import ServiceLifecycle
import SondeCore
import SondeTestSupport

/// A real collector on 127.0.0.1 and an ephemeral port, over a real SQLite file, run in a
/// ServiceGroup that the test shuts down gracefully.
final class RunningCollector: Sendable {
    let built: BuiltCollector
    let group: ServiceGroup
    let task: Task<Void, any Error>
    let port: Int

    var baseURL: String { "http://127.0.0.1:\(port)" }
    var store: any CollectorStorage { built.store }

    static func start(_ config: CollectorConfig) async throws -> RunningCollector {
        let logger = testLogger()
        let built = try await buildCollector(config: config, logger: logger)
        let group = ServiceGroup(configuration: .init(services: [built.application], gracefulShutdownSignals: [], logger: logger))
        let task = Task { try await group.run() }
        try await waitUntil("the collector to listen", timeout: .seconds(20)) { built.port != nil }
        return RunningCollector(built: built, group: group, task: task, port: built.port!)
    }

    private init(built: BuiltCollector, group: ServiceGroup, task: Task<Void, any Error>, port: Int) {
        self.built = built
        self.group = group
        self.task = task
        self.port = port
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
            HTTPRequest(method: "POST", url: collector.baseURL + PushProtocol.path, headers: headers, body: body, timeout: .seconds(10)))
    }

    func push(_ batch: PushBatch, to collector: RunningCollector) async throws -> HTTPResponse {
        try await push(try SondeJSON.encode(batch), to: collector)
    }
}

func get(_ collector: RunningCollector, _ path: String) async throws -> HTTPResponse {
    try await CurlHTTPClient.shared.perform(HTTPRequest(url: collector.baseURL + path, timeout: .seconds(10)))
}

func post(_ collector: RunningCollector, _ path: String) async throws -> HTTPResponse {
    try await CurlHTTPClient.shared.perform(HTTPRequest(method: "POST", url: collector.baseURL + path, body: Data(), timeout: .seconds(10)))
}

func decode<T: Decodable>(_ type: T.Type, _ response: HTTPResponse) throws -> T {
    try SondeJSON.decode(type, from: response.body)
}

func testConfig(dir: TemporaryDirectory, agents: [TestAgent], webhooks: [WebhookTarget] = []) -> CollectorConfig {
    var config = CollectorConfig()
    config.port = 0
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

/// Runs `body` against a started collector and always stops it, also when `body` throws.
func withCollector<T>(_ config: CollectorConfig, _ body: (RunningCollector) async throws -> T) async throws -> T {
    let collector = try await RunningCollector.start(config)
    do {
        let value = try await body(collector)
        await collector.stop()
        return value
    } catch {
        await collector.stop()
        throw error
    }
}
