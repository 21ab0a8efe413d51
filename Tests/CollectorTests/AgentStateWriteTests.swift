@testable import Collector
import CollectorStore
import Correlation
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// Each push moves an agent's `last_seen`; the evaluator stores it lazily (see
/// `Evaluator.lastSeenStoreInterval`) instead of committing every evaluation.
@Suite("Agent state writes")
struct AgentStateWriteTests {
    static func stored(_ collector: RunningCollector, _ agent: String) async throws -> AgentHealth? {
        guard let json = try await collector.store.agentStates()[agent] else { return nil }
        return try SondeJSON.decode(AgentHealth.self, from: json)
    }

    static func engine(_ collector: RunningCollector, _ agent: String) async -> AgentHealth? {
        await collector.built.hub.agentHealth.first { $0.agent == agent }
    }

    /// Over a real SQLite file: `last_seen` alone is not written while evaluations go on; another
    /// agent's new state takes it along; a graceful stop stores the latest; a restart reads it.
    @Test func lastSeenIsStoredLazilyAndAtStop() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        let config = testConfig(dir: dir, agents: [eu, us])
        var lastEngineSeen: Date?
        try await withCollector(config) { collector in
            _ = try await eu.push(eu.batch([eu.result()]), to: collector)
            try await waitUntil("eu-1 stored as ok") { try await Self.stored(collector, "eu-1")?.state == .ok }
            let first = try #require(try await Self.stored(collector, "eu-1")?.lastSeen)
            // Pushes until the engine (evaluating every 100 ms) has seen three newer ones.
            var newer = 0
            try await waitUntil("the engine sees newer pushes") {
                _ = try await eu.push(eu.batch([eu.result()]), to: collector)
                if let seen = await Self.engine(collector, "eu-1")?.lastSeen, seen > first { newer += 1 }
                return newer >= 3
            }
            #expect(try await Self.stored(collector, "eu-1")?.lastSeen == first, "last_seen alone is not written each evaluation")

            // us-1's first result is a new state: that write carries eu-1's last_seen with it.
            let engineSeen = try #require(await Self.engine(collector, "eu-1")?.lastSeen)
            _ = try await us.push(us.batch([us.result()]), to: collector)
            try await waitUntil("us-1 stored as ok") { try await Self.stored(collector, "us-1")?.state == .ok }
            let piggybacked = try #require(try await Self.stored(collector, "eu-1")?.lastSeen)
            #expect(piggybacked >= engineSeen)

            _ = try await eu.push(eu.batch([eu.result()]), to: collector)
            try await waitUntil("the engine sees the last push") {
                (await Self.engine(collector, "eu-1")?.lastSeen ?? .distantPast) > piggybacked
            }
            lastEngineSeen = await Self.engine(collector, "eu-1")?.lastSeen
        }
        // Stopped gracefully: the latest last_seen is stored, and a restart starts from it.
        let store = try SQLiteCollectorStore(path: config.databasePath, logger: testLogger())
        let json = try #require(try await store.agentStates()["eu-1"])
        let atStop = try SondeJSON.decode(AgentHealth.self, from: json).lastSeen
        let expected = try #require(lastEngineSeen)
        #expect(abs((atStop ?? .distantPast).timeIntervalSince(expected)) < 0.002, "stored \(String(describing: atStop)), engine had \(expected)")
    }

    /// The agents could not push while the collector was down: a restart does not page them as
    /// silent (found by the first-use review: every restart sent one `agent.silent` per agent),
    /// and once one is heard from again, its silence counts as before.
    @Test func aRestartDoesNotCallHealthyAgentsSilent() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        let config = fastSilenceConfig(dir: dir, agents: [eu, us])
        // The collector is down for a minute, far past this config's silence threshold (about
        // 2 s): the agents' last runs and the stored last_seen are a minute old at the restart.
        let minuteAgo = Date().addingTimeInterval(-60)
        try await withCollector(config) { collector in
            for agent in [eu, us] { _ = try await agent.push(agent.batch([agent.result(startedAt: minuteAgo)]), to: collector) }
            try await waitUntil("both stored as ok") {
                let euState = try await Self.stored(collector, "eu-1")?.state
                let usState = try await Self.stored(collector, "us-1")?.state
                return euState == .ok && usState == .ok
            }
        }
        let store = try SQLiteCollectorStore(path: config.databasePath, logger: testLogger())
        var states: [String: Data] = [:]
        for (agent, json) in try await store.agentStates() {
            var health = try SondeJSON.decode(AgentHealth.self, from: json)
            health.lastSeen = minuteAgo
            states[agent] = try SondeJSON.encode(health)
        }
        try await store.commit(EvaluationCommit(agentStates: states))
        try await withCollector(config) { collector in
            let start = await collector.built.hub.evaluations
            // 30 evaluations at 100 ms: past the threshold from the start.
            try await waitUntil("3 s of evaluations after the restart") { await collector.built.hub.evaluations >= start + 30 }
            let euHealth = await Self.engine(collector, "eu-1")
            let usHealth = await Self.engine(collector, "us-1")
            #expect(euHealth?.state == .ok && usHealth?.state == .ok, "\(String(describing: euHealth)) \(String(describing: usHealth))")
            // eu-1 reports again (runs a second apart), then stops for good: silent within the
            // usual threshold.
            let runs = (0..<4).map { eu.result(startedAt: Date().addingTimeInterval(Double($0 - 3))) }
            _ = try await eu.push(eu.batch(runs), to: collector)
            try await waitUntil("eu-1 silent after its last push", timeout: .seconds(30)) { await Self.engine(collector, "eu-1")?.state == .silent }
        }
    }
}
