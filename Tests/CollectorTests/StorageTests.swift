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
    /// Filters and cursor paging through `GET /v1/results`, on the real SQLite store and on a
    /// real PostgreSQL.
    @Test(arguments: ["sqlite", "postgres"]) func resultsFilteredAndPagedThroughTheAPI(kind: String) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        var config = testConfig(dir: dir, agents: [eu, us])
        if kind == "postgres" { config.databasePath = try await PostgresServer.shared().createDatabase() }
        try await withCollector(config) { collector in
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
            // Pushed, runs older than retention_days are refused (they would be pruned at once);
            // stored ones age past it, as these do when written straight to storage.
            let refused = try await agent.push(agent.batch(old + fresh), to: collector)
            #expect(refused.status == 400 && refused.bodyText.contains("result_too_old"), "\(refused.bodyText)")
            #expect(try await agent.push(agent.batch(fresh), to: collector).status == 200)
            _ = try await collector.store.ingest(
                batch: BatchRecord(batchID: "old", agent: agent.id, receivedAt: Date().addingTimeInterval(-40 * 86400), body: Data(), signature: ""),
                results: old)
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
        #expect(try await store.appliedMigrations() == ["v1", "v2-results-time-ordered", "v3-series-and-body-slices", "v4-dead-letters", "v5-result-days", "v6-result-agent-days", "v7-results-not-ok"])
        #expect(try await store.resultCount() == 2)
        // Pruning with a cutoff in the future removes the rest, batches included.
        let report = try await store.prune(before: Date().addingTimeInterval(60))
        #expect(report.results == 2)
        #expect(report.batches == 1)
        #expect(try await store.resultCount() == 0)
    }

    /// `database_sync` reaches the connection that commits: GRDB turns the writer to NORMAL when
    /// it enables WAL, after our set-up ran, so `full` (the default) used to commit without fsync.
    @Test(arguments: SQLiteCollectorStore.Durability.allCases) func databaseSyncReachesTheWriter(durability: SQLiteCollectorStore.Durability) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store = try SQLiteCollectorStore(path: dir.file("sync.db"), durability: durability, logger: testLogger())
        try await store.migrate()
        #expect(try await store.writerSynchronous() == (durability == .full ? 2 : 1))
        // And again on a reopened file (the pool's WAL set-up runs at every open).
        let reopened = try SQLiteCollectorStore(path: dir.file("sync.db"), durability: durability, logger: testLogger())
        #expect(try await reopened.writerSynchronous() == (durability == .full ? 2 : 1))
    }

    /// The in-memory and PostgreSQL stores keep the same promises as SQLite for ingest, paging
    /// and the outbox.
    @Test(arguments: ["memory", "sqlite", "postgres"]) func storesAgree(kind: String) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store: any CollectorStorage =
            switch kind {
            case "memory": InMemoryCollectorStore()
            case "postgres": try PostgresCollectorStore(url: try await PostgresServer.shared().createDatabase(), logger: testLogger())
            default: try SQLiteCollectorStore(path: dir.file("s.db"), logger: testLogger())
            }
        try await store.migrate()
        let agent = TestAgent(id: "a", region: "eu")
        try await store.upsertAgent(AgentRecord(id: "a", region: "eu", publicKey: agent.key.publicKey.base64))
        let results = (0..<7).map { i in agent.result(startedAt: Date(timeIntervalSince1970: 1_800_000_000 + Double(i))) }
        let batch = BatchRecord(batchID: "b1", agent: "a", receivedAt: Date(), body: Data("x".utf8), signature: "s")
        #expect(try await store.ingest(batch: batch, results: results) == .stored(all: 7))
        #expect(try await store.ingest(batch: batch, results: results) == .duplicate)
        let first = try await store.results(ResultQuery(limit: 4))
        #expect(first.results.count == 4)
        let cursor: ResultCursor = try #require(first.nextCursor)
        let second = try await store.results(ResultQuery(limit: 4, cursor: cursor))
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

        // Dead letters and re-drive.
        let laterEvent = OutboxEvent(id: "e2", type: "incident.updated", occurredAt: Date(), payload: Data("{}".utf8))
        try await store.commit(EvaluationCommit(events: [laterEvent], deliveries: [DeliveryKey(eventID: "e2", target: "t")]))
        try await store.markFailed(eventID: "e2", target: "t", attempts: 1, nextAttemptAt: Date().addingTimeInterval(60), error: "HTTP 500")
        #expect(try await store.nextPendingDelivery(target: "t")?.attempts == 1)
        try await store.markDead(eventID: "e2", target: "t", attempts: 2, error: "HTTP 410", at: Date())
        #expect(try await store.deadLetterCount() == 1)
        #expect(try await store.deadLetters(limit: 10).first?.eventID == "e2")
        #expect(try await store.nextPendingDelivery(target: "t") == nil)
        #expect(try await store.redrive(eventID: "e2", target: nil) == ["t"])
        #expect(try await store.deadLetterCount() == 0)
        #expect(try await store.nextPendingDelivery(target: "t")?.attempts == 0)

        // An unnamed webhook target's queue moves from its URL to its name, dead letters too; a
        // delivery already under the new name stays as it is.
        let legacy = "https://hooks.example/services/T0/B0/SECRET"
        let events = ["e3", "e4", "e5"].map { OutboxEvent(id: $0, type: "incident.updated", occurredAt: Date(), payload: Data("{}".utf8)) }
        try await store.commit(
            EvaluationCommit(
                events: events, deliveries: [DeliveryKey(eventID: "e3", target: legacy), DeliveryKey(eventID: "e4", target: legacy), DeliveryKey(eventID: "e4", target: "n")]))
        try await store.markDead(eventID: "e3", target: legacy, attempts: 3, error: "HTTP 410", at: Date())
        try await store.renameDeliveryTarget(from: legacy, to: "n")
        try await store.renameDeliveryTarget(from: legacy, to: "n")  // idempotent
        let renamed = try await store.deliveries().filter { $0.event.id == "e3" || $0.event.id == "e4" }
        #expect(renamed.map(\.target).sorted() == [legacy, "n", "n"], "e3 moved; e4 kept under both")
        #expect(try await store.deadLetters(limit: 10).contains { $0.eventID == "e3" && $0.target == "n" })
        #expect(try await store.nextPendingDelivery(target: "n")?.event.id == "e4")

        // Incidents (upserted by id), agent states, the timeline and series names.
        let opened = Date(timeIntervalSince1970: 1_800_000_100)
        let incident = IncidentRecord(id: "i1", component: "login", status: "open", openedAt: opened, updatedAt: opened, resolvedAt: nil, json: Data("{}".utf8))
        try await store.commit(EvaluationCommit(incidents: [incident], agentStates: ["a": Data("{\"s\":1}".utf8)]))
        var resolved = incident
        resolved.status = "resolved"
        resolved.resolvedAt = opened.addingTimeInterval(60)
        #expect(try await store.incidents(.open, limit: 10).map(\.id) == ["i1"])
        try await store.commit(EvaluationCommit(incidents: [resolved]))
        #expect(try await store.incidents(.open, limit: 10).isEmpty)
        #expect(try await store.incident(id: "i1")?.resolvedAt == resolved.resolvedAt)
        #expect(try await store.agentStates() == ["a": Data("{\"s\":1}".utf8)])
        #expect(try await store.timeline(since: Date(timeIntervalSince1970: 1_799_990_000), until: .distantFuture).map(\.total).reduce(0, +) == 7)
        #expect(try await store.seriesNames().count == 1)
        #expect(try await store.resultCount() == 7)
        #expect(try await store.results(since: Date(timeIntervalSince1970: 1_800_000_003), limit: 100).count == 4)
        // Past the limit the oldest are left out: a rebuild keeps the newest (HA review, F7).
        let newest = try await store.results(since: Date(timeIntervalSince1970: 1_800_000_003), limit: 2)
        let all = try await store.results(since: Date(timeIntervalSince1970: 1_800_000_003), limit: 100)
        #expect(newest == Array(all.suffix(2)), "\(newest.map(\.id)) of \(all.map(\.id))")
        #expect(all.map(\.startedAt) == all.map(\.startedAt).sorted())
        if let postgres = store as? PostgresCollectorStore {
            let window = try await postgres.window(since: Date(timeIntervalSince1970: 1_800_000_003), horizon: 0, limit: 2)
            #expect(window.results == newest)
        }
        #expect(try await store.batches(since: nil, after: nil, limit: 10).map(\.body) == [Data("x".utf8)])
        try await store.checkWritable()

        // The agent's batch record lost in a power loss: the same results come again under a new
        // batch id (with a new one); each result is stored, and counted in the timeline, once.
        let extra = agent.result(startedAt: Date(timeIntervalSince1970: 1_800_000_007))
        let rebatched = BatchRecord(batchID: "b1-again", agent: "a", receivedAt: Date(), body: Data("y".utf8), signature: "s")
        #expect(try await store.ingest(batch: rebatched, results: Array(results.suffix(3)) + [extra]) == .stored(new: [3]))
        #expect(try await store.resultCount() == 8)
        #expect(try await store.timeline(since: Date(timeIntervalSince1970: 1_799_990_000), until: .distantFuture).map(\.total).reduce(0, +) == 8)
        #expect(Set(try await store.results(ResultQuery(limit: 100)).results.map(\.id)) == Set((results + [extra]).map(\.id)))

        // A key belongs to one agent.
        await #expect(throws: DuplicateKeyError.self) {
            try await store.upsertAgent(AgentRecord(id: "b", region: "eu", publicKey: agent.key.publicKey.base64))
        }
        #expect(try await store.revokeAgent(id: "a"))
        #expect(try await store.agent(id: "a")?.revoked == true)
        #expect(try await store.agent(id: "a")?.lastSeen != nil)
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

// MARK: - Migration v2 → v3

@Suite("Storage migration")
struct StorageMigrationTests {
    /// A database as the v2 collector wrote it (names and a JSON copy in every result row) is
    /// upgraded in place: every row survives and reads back the same, filters, paging, verify
    /// bodies and retention work, and new pushes are stored the v3 way next to the old rows.
    @Test func v2DatabaseUpgradesKeepingEveryRow() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("v2.db")
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        let base = Date(timeIntervalSince1970: Date().timeIntervalSince1970.rounded(.down) - 3600)  // whole seconds: dates survive JSON exactly
        var old: [ProbeResult] = []
        var bodies: [String: Data] = [:]
        do {
            let store = try SQLiteCollectorStore(path: path, logger: testLogger())
            try await store.migrateForTesting(upTo: "v2-results-time-ordered")
            #expect(try await store.appliedMigrations() == ["v1", "v2-results-time-ordered"])
            for agent in [eu, us] {
                try await store.upsertAgent(AgentRecord(id: agent.id, region: agent.region, publicKey: agent.key.publicKey.base64))
                for b in 0..<2 {
                    let results = (0..<5).map { (i: Int) -> ProbeResult in
                        let login = i % 2 == 0
                        let outcome: Outcome = i == 4 ? .failed : (i == 3 ? .degraded : .ok)
                        let minute = Double(b * 10 + i)
                        return agent.result(
                            probe: login ? "login" : "upload", component: login ? "login" : "files", outcome: outcome,
                            startedAt: base.addingTimeInterval(minute * 60))
                    }
                    old += results
                    let batch = agent.batch(results, sentAt: base, batchID: "\(agent.id)-b\(b)")
                    let body = try SondeJSON.encode(batch)
                    bodies[batch.batchID] = body
                    let bodyHex = body.map { String(format: "%02x", $0) }.joined()
                    try await store.executeForTesting(
                        "INSERT INTO batches (batch_id, agent, received_at, body, signature, result_count) VALUES ('\(batch.batchID)', '\(agent.id)', \(base.epochMsForTests), X'\(bodyHex)', 'sig', 5)"
                    )
                    for result in results {
                        let json = try SondeJSON.encode(result).map { String(format: "%02x", $0) }.joined()
                        try await store.executeForTesting(
                            """
                            INSERT INTO results (id, batch_id, agent, probe, component, region, started_at, outcome, duration_ms, error_kind, error_code, json)
                            VALUES ('\(result.id)', '\(batch.batchID)', '\(result.agent)', '\(result.probe)', '\(result.component)', '\(result.region)',
                                \(result.startedAt.epochMsForTests), '\(result.outcome.rawValue)', \(result.durationMs), NULL, NULL, X'\(json)')
                            """)
                    }
                }
            }
            #expect(try await store.resultCount() == 20)
        }

        let store = try SQLiteCollectorStore(path: path, logger: testLogger())
        try await store.migrate()
        #expect(try await store.appliedMigrations() == ["v1", "v2-results-time-ordered", "v3-series-and-body-slices", "v4-dead-letters", "v5-result-days", "v6-result-agent-days", "v7-results-not-ok"])
        #expect(try await store.resultCount() == 20)
        // v5 filled the daily rollup from the rows already there.
        let days = try await store.uptimeDays(since: base.addingTimeInterval(-86400))
        #expect(days.reduce(0) { $0 + $1.total } == 20 && days.reduce(0) { $0 + $1.failed } == old.filter { $0.outcome == .failed }.count)
        #expect(days.reduce(0) { $0 + $1.degraded } == old.filter { $0.outcome == .degraded }.count)
        // Every old row reads back equal, newest first.
        let all = try await store.results(ResultQuery(limit: 100)).results
        let expected = old.sorted { ($0.startedAt, $0.id) > ($1.startedAt, $1.id) }
        #expect(all == expected)
        #expect(try await store.results(since: base, limit: 100) == expected.reversed())
        // Filters.
        #expect(try await store.results(ResultQuery(agent: "us-1", limit: 100)).results.count == 10)
        #expect(try await store.results(ResultQuery(probe: "upload", region: "eu", limit: 100)).results.count == 4)
        #expect(try await store.results(ResultQuery(component: "files", limit: 100)).results.allSatisfy { $0.component == "files" })
        #expect(try await store.results(ResultQuery(outcome: .failed, limit: 100)).results.count == 4)
        #expect(try await store.results(ResultQuery(outcome: .degraded, limit: 100)).results.count == 4)
        #expect(try await store.results(ResultQuery(outcome: .ok, limit: 100)).results.count == 12)
        // The failed runs read through `results_not_ok`, newest first, and page like the rest.
        let failed = expected.filter { $0.outcome == .failed }
        let firstFailed = try await store.results(ResultQuery(outcome: .failed, limit: 3))
        let restFailed = try await store.results(ResultQuery(outcome: .failed, limit: 3, cursor: firstFailed.nextCursor))
        #expect(firstFailed.results + restFailed.results == failed && restFailed.nextCursor == nil)
        // A name nobody reports: nothing, without reading any run.
        #expect(try await store.results(ResultQuery(component: "nobody", limit: 100)).results.isEmpty)
        let window = try await store.results(ResultQuery(since: base.addingTimeInterval(120), until: base.addingTimeInterval(600), limit: 100)).results
        #expect(window.count == 2 * 3 && window.allSatisfy { $0.startedAt >= base.addingTimeInterval(120) })
        // Paging through all of them 3 at a time gives each once.
        var paged: [ProbeResult] = []
        var cursor: ResultCursor?
        for _ in 0..<20 {
            let page = try await store.results(ResultQuery(limit: 3, cursor: cursor))
            paged += page.results
            cursor = page.nextCursor
            if cursor == nil { break }
        }
        #expect(paged == expected)
        // Bodies kept byte for byte for `sonde verify`; the timeline still counts by component.
        let batches = try await store.batches(since: nil, after: nil, limit: 100)
        #expect(Dictionary(uniqueKeysWithValues: batches.map { ($0.batchID, $0.body) }) == bodies)
        let timeline = try await store.timeline(since: base, until: .distantFuture)
        #expect(timeline.map(\.total).reduce(0, +) == 20 && timeline.map(\.failed).reduce(0, +) == 4)
        // Bounded above too (the operators' page keeps the closed hours and reads the last two).
        let early = try await store.timeline(since: base, until: base.addingTimeInterval(600))
        #expect(early.map(\.total).reduce(0, +) == expected.filter { $0.startedAt < base.addingTimeInterval(600) }.count)
        #expect(early.map(\.total).reduce(0, +) < 20)
        #expect(try await store.batchIntegrity().values.allSatisfy { $0.declared == 5 && $0.stored == 5 })

        // New pushes next to the old rows: stored as body slices, duplicates ignored.
        let fresh = (0..<3).map { i in eu.result(probe: "login", component: "login", startedAt: base.addingTimeInterval(Double(3000 + i))) }
        let freshBatch = eu.batch(fresh, sentAt: Date(), batchID: "fresh")
        let record = BatchRecord(batchID: "fresh", agent: eu.id, receivedAt: Date(), body: try SondeJSON.encode(freshBatch), signature: "s")
        #expect(try await store.ingest(batch: record, results: fresh) == .stored(all: 3))
        #expect(try await store.ingest(batch: record, results: fresh) == .duplicate)
        let again = BatchRecord(batchID: "fresh-again", agent: eu.id, receivedAt: Date(), body: record.body, signature: "s")
        #expect(try await store.ingest(batch: again, results: fresh) == .stored(new: []))  // a new batch id; its results are duplicates
        #expect(try await store.resultCount() == 23)
        #expect(try await store.results(ResultQuery(agent: "eu-1", since: base.addingTimeInterval(3000), limit: 10)).results == fresh.reversed())

        // Retention: old rows and their batches go; the fresh batch stays while its results do.
        let report = try await store.prune(before: base.addingTimeInterval(2000))
        #expect(report.results == 20 && report.batches == 4)
        #expect(try await store.resultCount() == 3)
        #expect(try await store.results(ResultQuery(limit: 10)).results == fresh.reversed())
    }

    /// A result that started after its batch arrived (agent clock ahead) keeps its batch body
    /// through retention: the row points into that body.
    @Test func retentionKeepsBodiesThatResultsStillPointInto() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store = try SQLiteCollectorStore(path: dir.file("s.db"), logger: testLogger())
        try await store.migrate()
        let agent = TestAgent(id: "a", region: "eu")
        let received = Date(timeIntervalSince1970: 1_800_000_000)
        let ahead = agent.result(startedAt: received.addingTimeInterval(120))
        let body = try SondeJSON.encode(agent.batch([ahead], batchID: "b"))
        #expect(try await store.ingest(batch: BatchRecord(batchID: "b", agent: "a", receivedAt: received, body: body, signature: "s"), results: [ahead]) == .stored(all: 1))
        let report = try await store.prune(before: received.addingTimeInterval(60))
        #expect(report.results == 0 && report.batches == 0)
        #expect(try await store.results(ResultQuery(limit: 5)).results == [ahead])
        let later = try await store.prune(before: received.addingTimeInterval(180))
        #expect(later.results == 1 && later.batches == 1)
    }
}

extension Date {
    fileprivate var epochMsForTests: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
}
