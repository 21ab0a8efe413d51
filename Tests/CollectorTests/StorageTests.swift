import Collector
import CollectorAPI
import CollectorStore
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@Suite("Storage")
struct StorageTests {
    /// Filters and cursor paging through `GET /v1/results`, on the real SQLite store.
    @Test func resultsFilteredAndPagedThroughTheAPI() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        try await withCollector(testConfig(dir: dir, agents: [eu, us])) { collector in
            let base = Date().addingTimeInterval(-3600)
            // 25 login results per agent (every 5th failed) and 5 upload results for eu.
            for agent in [eu, us] {
                let results = (0..<25).map { i in
                    agent.result(probe: "login", component: "login", outcome: i % 5 == 0 ? .failed : .ok, startedAt: base.addingTimeInterval(Double(i) * 60))
                }
                #expect(try await agent.push(agent.batch(results), to: collector).status == 200)
            }
            let uploads = (0..<5).map { i in eu.result(probe: "upload", component: "files", startedAt: base.addingTimeInterval(Double(i) * 60)) }
            #expect(try await eu.push(eu.batch(uploads), to: collector).status == 200)

            func page(_ query: String) async throws -> ResultsResponse {
                let response = try await get(collector, "/v1/results?" + query)
                #expect(response.status == 200, "\(response.bodyText)")
                return try decode(ResultsResponse.self, response)
            }
            // Page through eu's login results 10 at a time: 25 distinct, newest first.
            var seen: [ProbeResult] = []
            var cursor: String?
            for _ in 0..<10 {
                let response = try await page("agent=eu-1&probe=login&limit=10" + (cursor.map { "&cursor=\($0)" } ?? ""))
                seen += response.results
                cursor = response.nextCursor
                if cursor == nil { break }
            }
            #expect(seen.count == 25)
            #expect(Set(seen.map(\.id)).count == 25)
            #expect(seen.allSatisfy { $0.agent == "eu-1" && $0.probe == "login" })
            #expect(seen.map(\.startedAt) == seen.map(\.startedAt).sorted(by: >))

            #expect(try await page("outcome=failed&limit=1000").results.count == 10)
            #expect(try await page("region=us&outcome=failed").results.allSatisfy { $0.region == "us" && $0.outcome == .failed })
            #expect(try await page("component=files").results.count == 5)
            let recent = try await page("since=\(RFC3339.string(from: base.addingTimeInterval(20 * 60)))&probe=login")
            #expect(recent.results.count == 10)  // minutes 20…24 for both agents
            let window = try await page("since=\(RFC3339.string(from: base.addingTimeInterval(10 * 60)))&until=\(RFC3339.string(from: base.addingTimeInterval(12 * 60)))")
            #expect(window.results.count == 4)  // minutes 10 and 11 of both agents' login
            #expect(try await page("since=2m").results.isEmpty)
            #expect(try await get(collector, "/v1/results?outcome=broken").status == 400)
            #expect(try await get(collector, "/v1/results?since=yesterday").status == 400)
        }
    }

    /// Old rows go at start-up (and every retention interval); recent ones stay; migrations are
    /// idempotent across restarts on the same file.
    @Test func retentionPrunesAndMigrationsAreIdempotent() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.retentionDays = 30
        try await withCollector(config) { collector in
            let old = (0..<3).map { _ in agent.result(startedAt: Date().addingTimeInterval(-40 * 86400)) }
            let fresh = (0..<2).map { _ in agent.result() }
            let response = try await agent.push(agent.batch(old + fresh), to: collector)
            #expect(response.status == 200)
            #expect(try await collector.store.resultCount() == 5)
        }
        // Restart: migrations run again (no-op), retention prunes the 40-day-old results at start.
        try await withCollector(config) { collector in
            try await waitUntil("retention to prune") { try await collector.store.resultCount() == 2 }
            let page = try decode(ResultsResponse.self, try await get(collector, "/v1/results"))
            #expect(page.results.count == 2)
            #expect(try await collector.store.agent(id: agent.id) != nil)
        }
        let store = try SQLiteCollectorStore(path: config.databasePath, logger: testLogger())
        try await store.migrate()
        try await store.migrate()
        #expect(try await store.appliedMigrations() == ["v1", "v2-results-time-ordered"])
        #expect(try await store.resultCount() == 2)
        // Pruning with a cutoff in the future removes the rest, batches included.
        let report = try await store.prune(before: Date().addingTimeInterval(60))
        #expect(report.results == 2)
        #expect(report.batches == 1)
        #expect(try await store.resultCount() == 0)
    }

    /// The in-memory store keeps the same promises as SQLite for ingest, paging and the outbox.
    @Test(arguments: ["memory", "sqlite"]) func storesAgree(kind: String) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store: any CollectorStorage =
            kind == "memory" ? InMemoryCollectorStore() : try SQLiteCollectorStore(path: dir.file("s.db"), logger: testLogger())
        try await store.migrate()
        let agent = TestAgent(id: "a", region: "eu")
        try await store.upsertAgent(AgentRecord(id: "a", region: "eu", publicKey: agent.key.publicKey.base64))
        let results = (0..<7).map { i in agent.result(startedAt: Date(timeIntervalSince1970: 1_800_000_000 + Double(i))) }
        let batch = BatchRecord(batchID: "b1", agent: "a", receivedAt: Date(), body: Data("x".utf8), signature: "s")
        #expect(try await store.ingest(batch: batch, results: results) == .stored(7))
        #expect(try await store.ingest(batch: batch, results: results) == .duplicate)
        let first = try await store.results(ResultQuery(limit: 4))
        #expect(first.results.count == 4)
        let second = try await store.results(ResultQuery(limit: 4, cursor: try #require(first.nextCursor)))
        #expect(second.results.count == 3)
        #expect(second.nextCursor == nil)
        #expect(Set((first.results + second.results).map(\.id)) == Set(results.map(\.id)))

        let event = OutboxEvent(id: "e1", type: "incident.opened", occurredAt: Date(), payload: Data("{}".utf8))
        try await store.commit(EvaluationCommit(events: [event], deliveries: [DeliveryKey(eventID: "e1", target: "t")]))
        try await store.commit(EvaluationCommit(events: [event], deliveries: [DeliveryKey(eventID: "e1", target: "t")]))
        #expect(try await store.deliveries().count == 1)
        #expect(try await store.nextPendingDelivery(target: "t")?.event.id == "e1")
        try await store.markDelivered(eventID: "e1", target: "t", at: Date())
        // Re-deriving a delivered event never queues it again.
        try await store.commit(EvaluationCommit(events: [event], deliveries: [DeliveryKey(eventID: "e1", target: "t")]))
        #expect(try await store.nextPendingDelivery(target: "t") == nil)
    }
}

@Suite("Ingest volume")
struct IngestVolumeTests {
    /// 20 signed batches of 1,000 results through HTTP into SQLite: all stored, nothing lost.
    /// Prints the rate (a measurement for the report, not an assertion).
    @Test func twentyThousandResultsThroughHTTP() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = (0..<4).map { TestAgent(id: "agent-\($0)", region: $0 < 2 ? "eu" : "us") }
        var config = testConfig(dir: dir, agents: agents)
        config.evaluationInterval = 1
        try await withCollector(config) { collector in
            let base = Date().addingTimeInterval(-300)
            let bodies = try (0..<20).map { i -> (TestAgent, Data) in
                let agent = agents[i % agents.count]
                let results = (0..<1000).map { j in
                    agent.result(probe: "p\(j % 10)", component: "c\(j % 3)", outcome: j % 7 == 0 ? .failed : .ok, startedAt: base.addingTimeInterval(Double(j) * 0.1))
                }
                return (agent, try SondeJSON.encode(agent.batch(results)))
            }
            let clock = ContinuousClock()
            let start = clock.now
            try await withThrowingTaskGroup(of: Int.self) { group in
                for (agent, body) in bodies {
                    group.addTask { try await agent.push(body, to: collector).status }
                }
                for try await status in group { #expect(status == 200) }
            }
            let elapsed = clock.now - start
            #expect(try await collector.store.resultCount() == 20_000)
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            print("ingest: 20000 results in \(String(format: "%.2f", seconds)) s = \(Int(20_000 / seconds)) results/s (debug build)")
        }
    }
}
