import Collector
import CollectorAPI
@testable import CollectorStore
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// PostgreSQL-only promises, on a real throwaway server (see `PostgresServer`).
@Suite("PostgreSQL storage")
struct PostgresStorageTests {
    /// Several stores migrating one empty database at the same moment: one applies the
    /// migration, the others wait on the advisory lock and find nothing to do; none fails.
    @Test func concurrentMigrationsApplyOnce() async throws {
        let url = try await PostgresServer.shared().createDatabase()
        let logs = CapturedLogs()
        let stores = try (0..<4).map { _ in try PostgresCollectorStore(url: url, logger: logs.logger()) }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for store in stores { group.addTask { try await store.migrate() } }
            try await group.waitForAll()
        }
        #expect(logs.messages(containing: "Applied database migration").count == PostgresCollectorStore.migrations.count)
        #expect(try await stores[0].appliedMigrations() == PostgresCollectorStore.migrations.map(\.version))
        for store in stores { store.close() }
    }

    /// A statement the collector stops waiting for (after `connect_timeout`) is ended by the
    /// server too: PostgresNIO cannot cancel a running query, so without the pool's
    /// `statement_timeout` a slow API read would run on, holding the database, after its 503.
    @Test func aStatementTheCollectorGaveUpOnIsEndedByTheServer() async throws {
        let pg = try await PostgresServer.shared()
        let url = try pg.createDatabase() + "&connect_timeout=1"
        let database = String(url.split(separator: "/").last!.split(separator: "?")[0])
        let store = try PostgresCollectorStore(url: url, logger: testLogger())
        defer { store.close() }
        try await store.migrate()
        let clock = ContinuousClock()
        let started = clock.now
        await #expect(throws: (any Error).self) { try await store.executeForTesting("SELECT pg_sleep(6)") }
        #expect(clock.now - started < .seconds(3))
        func sleeping() throws -> Int {
            Int(try pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '\(database)' AND query LIKE 'SELECT pg_sleep%' AND state = 'active'")
                .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        // Gone well before its 6 s were up.
        try await waitUntil("the server to end the statement", timeout: .seconds(3)) { try sleeping() == 0 }
        #expect(clock.now - started < .seconds(5))
    }

    /// A collector frozen inside a transaction (SIGSTOP, a stalled VM) must not hold the cluster:
    /// its open transaction kept the ingest horizon (no collector could follow ingest, the leader
    /// paged every agent silent) and its lock on the leader row (no take-over for 93 s) for as
    /// long as the freeze lasted (HA review, 33rd session, F2). The server now ends a pool
    /// transaction idle for 5 s.
    @Test func aTransactionLeftOpenByAFrozenCollectorIsEndedByTheServer() async throws {
        let pg = try await PostgresServer.shared()
        let url = try pg.createDatabase() + "&connect_timeout=1"
        let database = String(url.split(separator: "/").last!.split(separator: "?")[0])
        let store = try PostgresCollectorStore(url: url, logger: testLogger())
        defer { store.close() }
        try await store.migrate()
        let xid = Mutex<Int64>(0)
        let frozen = Task {
            try await store.client.withConnection { connection in
                _ = try await connection.query("BEGIN", logger: testLogger())
                // An ingest's transaction has an id, which holds the horizon (pg_snapshot_xmin).
                let id = try await connection.query("SELECT pg_current_xact_id()::TEXT::BIGINT", logger: testLogger()).collect().first?.decode(Int64.self)
                xid.withLock { $0 = id ?? 0 }
                try await Task.sleep(for: .seconds(8))  // frozen mid-transaction
                _ = try await connection.query("COMMIT", logger: testLogger())
            }
        }
        func idleInTransaction() throws -> Int {
            Int(try pg.psql("SELECT count(*) FROM pg_stat_activity WHERE datname = '\(database)' AND state = 'idle in transaction'")
                .trimmingCharacters(in: .whitespacesAndNewlines)) ?? -1
        }
        try await waitUntil("the transaction open", timeout: .seconds(5)) { try xid.withLock { $0 } > 0 && idleInTransaction() == 1 }
        #expect(try await store.ingestHorizon() <= xid.withLock { $0 }, "an open transaction holds the horizon")
        let clock = ContinuousClock()
        let opened = clock.now
        try await waitUntil("the server to end the idle transaction", timeout: .seconds(7)) { try idleInTransaction() == 0 }
        #expect(clock.now - opened < .seconds(6))
        #expect(try await store.ingestHorizon() > xid.withLock { $0 }, "the horizon moves on while the collector is still frozen")
        // What the thawed collector's next statement meets is the pool's business (it gives
        // up at `connect_timeout`); the test does not wait for it.
        frozen.cancel()
    }

    /// Fencing: once another collector took the epoch, this one's evaluations and delivery
    /// attempts are refused, but a 2xx it got is still recorded (refusing the fact would only
    /// make the new leader send the event again).
    @Test func aReplacedLeaderMayStillRecordADeliveryButWriteNothingElse() async throws {
        let pg = try await PostgresServer.shared()
        let url = try pg.createDatabase()
        let database = String(url.split(separator: "/").last!.split(separator: "?")[0])
        let store = try PostgresCollectorStore(url: url, logger: testLogger())
        defer { store.close() }
        try await store.migrate()
        store.enableFencing()
        _ = try pg.psql("UPDATE leader SET epoch = 1, holder = 'c1'", database: database)
        store.setLeaderEpoch(1)
        let events = ["e1", "e2"].map { OutboxEvent(id: $0, type: "incident.opened", occurredAt: Date(), payload: Data("{}".utf8)) }
        try await store.commit(EvaluationCommit(events: events, deliveries: events.map { DeliveryKey(eventID: $0.id, target: "t") }))

        // Another collector leads now (epoch 2); this one has not noticed yet.
        _ = try pg.psql("UPDATE leader SET epoch = 2, holder = 'c2'", database: database)
        let late = OutboxEvent(id: "e3", type: "incident.updated", occurredAt: Date(), payload: Data("{}".utf8))
        await #expect(throws: NotLeaderError.self) { try await store.commit(EvaluationCommit(events: [late])) }
        await #expect(throws: NotLeaderError.self) {
            try await store.markFailed(eventID: "e2", target: "t", attempts: 1, nextAttemptAt: Date(), error: "HTTP 500")
        }
        try await store.markDelivered(eventID: "e1", target: "t", at: Date())
        let rows = try await store.deliveries()
        #expect(rows.map(\.event.id) == ["e1", "e2"])
        #expect(rows.first { $0.event.id == "e1" }?.status == .delivered)
        #expect(rows.first { $0.event.id == "e2" }.map { $0.status == .pending && $0.attempts == 0 } == true)
        // Recorded once: a second record of the same 2xx changes nothing.
        try await store.markDelivered(eventID: "e1", target: "t", at: Date())
        #expect(try await store.deliveries().first { $0.event.id == "e1" }?.attempts == 1)
    }

    /// Results go into day partitions made ahead of time (older ones into the default
    /// partition); retention drops whole day partitions and deletes only from the default one.
    /// A migrated store on a fresh database with agent `a` enrolled, and the moments retention
    /// tests cut at.
    struct RetentionFixture {
        let pg: PostgresServer
        let database: String
        let store: PostgresCollectorStore
        let agent = TestAgent(id: "a", region: "eu")
        let now = Date()
        var startOfToday: Date { Date(epochMs: now.epochMs / 86_400_000 * 86_400_000) }

        init() async throws {
            pg = try await PostgresServer.shared()
            let url = try pg.createDatabase()
            database = String(url.split(separator: "/").last!.split(separator: "?")[0])
            store = try PostgresCollectorStore(url: url, logger: testLogger())
            try await store.migrate()
            try await store.upsertAgent(AgentRecord(id: "a", region: "eu", publicKey: agent.key.publicKey.base64))
        }
    }

    @Test func retentionDropsWholeDayPartitions() async throws {
        let fixture = try await RetentionFixture()
        let (store, agent, now, startOfToday) = (fixture.store, fixture.agent, fixture.now, fixture.startOfToday)
        defer { store.close() }
        let yesterday = (0..<5).map { i in agent.result(startedAt: startOfToday.addingTimeInterval(-3600 - Double(i))) }
        let old = (0..<3).map { i in agent.result(startedAt: now.addingTimeInterval(-40 * 86400 - Double(i))) }
        let today = (0..<2).map { i in agent.result(startedAt: startOfToday.addingTimeInterval(Double(i))) }
        for (index, results) in [yesterday, old, today].enumerated() {
            let batch = BatchRecord(batchID: "b\(index)", agent: "a", receivedAt: now, body: Data("x".utf8), signature: "s")
            #expect(try await store.ingest(batch: batch, results: results) == .stored(all: results.count))
        }
        let partitions = try await store.partitions()
        let todayName = PostgresCollectorStore.partitionName(day: now.epochMs / 86_400_000)
        let yesterdayName = PostgresCollectorStore.partitionName(day: now.epochMs / 86_400_000 - 1)
        #expect(partitions.contains(todayName) && partitions.contains(yesterdayName) && partitions.contains("results_default"))
        #expect(try await store.resultCount() == 10)

        // Cut-off 30 days back: only the default partition's 40-day-old rows go.
        var report = try await store.prune(before: now.addingTimeInterval(-30 * 86400))
        #expect(report.results == 3)
        #expect(try await store.resultCount() == 7)
        // Cut-off at the start of today: yesterday's partition is dropped whole.
        report = try await store.prune(before: startOfToday)
        #expect(report.results == 5)
        #expect(try await !store.partitions().contains(yesterdayName))
        #expect(try await store.partitions().contains(todayName))
        #expect(try await store.resultCount() == 2)
        // Batches go once no result points into them; today's stays.
        report = try await store.prune(before: now.addingTimeInterval(60))
        #expect(report.batches == 2)
        #expect(try await store.batches(since: nil, after: nil, limit: 10).map(\.batchID) == ["b2"])
    }

    /// Retention does not hold ingest behind a reader of an expired day: dropping its partition
    /// waits 2 s for the lock at most, then leaves it to the next pass, while the rest of the pass
    /// (old batches here) still goes (HA review, 33rd session, F4: every pass queued every
    /// collector's ingest for its whole 10 s deadline, then failed and pruned nothing).
    @Test func retentionNeverHoldsIngestBehindAReaderOfAnExpiredDay() async throws {
        let fixture = try await RetentionFixture()
        let (pg, database, store, agent, now, startOfToday) = (fixture.pg, fixture.database, fixture.store, fixture.agent, fixture.now, fixture.startOfToday)
        defer { store.close() }
        let yesterday = (0..<5).map { i in agent.result(startedAt: startOfToday.addingTimeInterval(-3600 - Double(i))) }
        #expect(try await store.ingest(
            batch: BatchRecord(batchID: "old", agent: "a", receivedAt: now.addingTimeInterval(-2 * 86400), body: Data("x".utf8), signature: "s"),
            results: []) == .stored(all: 0))
        #expect(try await store.ingest(
            batch: BatchRecord(batchID: "y", agent: "a", receivedAt: now, body: Data("x".utf8), signature: "s"), results: yesterday) == .stored(all: 5))
        let yesterdayName = PostgresCollectorStore.partitionName(day: now.epochMs / 86_400_000 - 1)
        // Someone reads yesterday's results for 8 s (a report, a dump).
        let reader = Task.detached { try pg.psql("BEGIN; SELECT count(*) FROM \(yesterdayName); SELECT pg_sleep(8); COMMIT", database: database) }
        try await waitUntil("the reader's lock held") {
            try pg.psql("SELECT count(*) FROM pg_locks WHERE relation = '\(yesterdayName)'::regclass AND granted", database: database) != "0"
        }
        let clock = ContinuousClock()
        async let pruned = store.prune(before: startOfToday)
        // Ingest meanwhile, once the DROP waits for its lock (ingest would queue behind it).
        try await waitUntil("the DROP waiting for its lock", timeout: .seconds(5), every: .milliseconds(10)) {
            try pg.psql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND NOT granted", database: database) != "0"
        }
        let pushed = clock.now
        let today = [agent.result(startedAt: now)]
        #expect(try await store.ingest(
            batch: BatchRecord(batchID: "t", agent: "a", receivedAt: now, body: Data("x".utf8), signature: "s"), results: today) == .stored(all: 1))
        #expect(clock.now - pushed < .seconds(3), "an ingest waited \(clock.now - pushed) behind retention")
        let report = try await pruned
        #expect(report.results == 0, "the day in use stays for the next pass")
        #expect(report.batches == 1, "the rest of the pass went on")
        #expect(try await store.partitions().contains(yesterdayName))
        _ = try? await reader.value
        // The next pass drops it.
        #expect(try await store.prune(before: startOfToday).results == 5)
        #expect(try await !store.partitions().contains(yesterdayName))
    }

    /// A collector's test config on a fresh PostgreSQL database (`connect_timeout` in seconds),
    /// the server, and the database's name.
    func postgresConfig(dir: TemporaryDirectory, agents: [TestAgent], connectTimeout: Int) async throws -> (CollectorConfig, PostgresServer, String) {
        var config = testConfig(dir: dir, agents: agents)
        let pg = try await PostgresServer.shared()
        config.databasePath = try pg.createDatabase() + "&connect_timeout=\(connectTimeout)"
        return (config, pg, String(config.databasePath.split(separator: "/").last!.split(separator: "?")[0]))
    }

    /// A database that does not answer is a `StorageError` naming the server, within the
    /// configured time, and `sonde-collector migrate`/`serve` exit with it.
    /// Found by the HA review: a NUL in a name filter or an incident id answered 500 (PostgreSQL
    /// refuses NUL in text) with an error log line per request, from anyone when the status page
    /// is public; and a read the database does not answer in time answered a generic 500. Now
    /// as on SQLite (no match, 404), and 503 `storage_unavailable` with `Retry-After`.
    @Test func nulInNamesFindsNothingAndAStalledDatabaseAnswers503() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        let (base, pg, database) = try await postgresConfig(dir: dir, agents: [agent], connectTimeout: 1)
        var config = base
        config.statusPagePublic = true
        try await withCollector(config) { collector in
            #expect(try await agent.push(agent.batch([agent.result()]), to: collector).status == 200)
            let filtered = try await get(collector, "/v1/results?agent=eu-1%00x")
            #expect(filtered.status == 200, "\(filtered.bodyText)")
            #expect(try decode(ResultsResponse.self, filtered).results.isEmpty)
            #expect(try await get(collector, "/v1/incidents/a%00b").status == 404)
            #expect(try await get(collector, "/incidents/a%00b", token: nil).status == 404)
            // The results table locked for longer than connect_timeout: the read gives up, 503.
            let lock = Task.detached { try pg.psql("BEGIN; LOCK TABLE results IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT", database: database) }
            try await waitUntil("the lock held") {
                try pg.psql("SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' AND granted AND relation = 'results'::regclass", database: database) == "1"
            }
            let stalled = try await get(collector, "/v1/results?limit=5")
            #expect(stalled.status == 503, "\(stalled.status) \(stalled.bodyText)")
            #expect((try? decode(APIErrorBody.self, stalled))?.error.code == "storage_unavailable", "\(stalled.bodyText)")
            #expect(stalled.headers.first { $0.name.lowercased() == "retry-after" }?.value == "5")
            _ = try? await lock.value
        }
    }

    /// With PostgreSQL (and so a cluster coordinator) too, pushes refused because the database
    /// stalls are the collector's silence, not the agents': a 25 s `LOCK TABLE batches` paged
    /// every agent silent there (HA review, 33rd session, F3), as the SQLite fix did not reach it.
    @Test func aLockedDatabaseMakesNoAgentSilent() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "us-1", region: "us")]
        let (base, pg, database) = try await postgresConfig(dir: dir, agents: agents, connectTimeout: 1)
        var config = base
        config.correlation.silentMin = 1
        config.correlation.silentAfter = 1
        try await withCollector(config) { collector in
            try await reportHealthy(agents, to: collector)
            let lock = Task.detached { try pg.psql("BEGIN; LOCK TABLE batches IN EXCLUSIVE MODE; SELECT pg_sleep(5); COMMIT", database: database) }
            try await waitUntil("the lock held") {
                try pg.psql("SELECT count(*) FROM pg_locks WHERE mode = 'ExclusiveLock' AND granted AND relation = 'batches'::regclass", database: database) == "1"
            }
            // Well past the 1 s silence threshold, every push refused.
            let until = ContinuousClock.now + .seconds(4)
            var refused = 0
            while ContinuousClock.now < until {
                for agent in agents where try await agent.push(agent.batch([agent.result()]), to: collector).status == 503 { refused += 1 }
                try await Task.sleep(for: .milliseconds(300))
            }
            #expect(refused >= 4)
            let silent = try decode(AgentsResponse.self, try await get(collector, "/v1/agents")).agents.filter { $0.state == .silent }.map(\.id)
            #expect(silent.isEmpty, "silent: \(silent)")
            _ = try? await lock.value
        }
    }

    /// A read-only episode (`default_transaction_read_only`, as on a failover's old primary)
    /// ends for the collector when it ends for the database: connections opened during it stayed
    /// read-only, and pushes were refused for minutes afterwards until they were ended by hand
    /// (HA review, 33rd session, F5). The pool is replaced on a read-only refusal.
    @Test func aReadOnlyEpisodeEndsForTheCollectorWhenItEndsForTheDatabase() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        let (config, pg, database) = try await postgresConfig(dir: dir, agents: [agent], connectTimeout: 2)
        try await withCollector(config) { collector in
            #expect(try await agent.push(agent.batch([agent.result()]), to: collector).status == 200)
            _ = try pg.psql("ALTER DATABASE \(database) SET default_transaction_read_only = on")
            _ = try pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '\(database)' AND pid <> pg_backend_pid()")
            try await waitUntil("pushes refused while the database is read-only", timeout: .seconds(30)) {
                try await agent.push(agent.batch([agent.result()]), to: collector).status == 503
            }
            // Steady traffic during the episode, as a fleet's: the pool opens its connections now.
            let until = ContinuousClock.now + .seconds(5)
            while ContinuousClock.now < until {
                async let a = agent.push(agent.batch([agent.result()]), to: collector)
                async let b = get(collector, "/healthz", token: nil)
                async let c = get(collector, "/v1/results?limit=1")
                _ = try await (a, b, c)
            }
            _ = try pg.psql("ALTER DATABASE \(database) RESET default_transaction_read_only")
            let clock = ContinuousClock()
            let back = clock.now
            try await waitUntil("pushes stored again", timeout: .seconds(30), every: .milliseconds(500)) {
                try await agent.push(agent.batch([agent.result()]), to: collector).status == 200
            }
            print("read-only episode over: pushes stored again \(back.duration(to: clock.now)) after")
        }
    }

    @Test func unreachableDatabaseIsAClearError() async throws {
        let port = try freeLoopbackPort()
        let store = try PostgresCollectorStore(url: "postgres://sonde:x@127.0.0.1:\(port)/sonde?sslmode=disable&connect_timeout=2", logger: testLogger())
        defer { store.close() }
        let clock = ContinuousClock()
        let start = clock.now
        let error = await #expect(throws: StorageError.self) { try await store.migrate() }
        #expect(clock.now - start < .seconds(10))
        #expect(error?.description.contains("127.0.0.1:\(port)") == true)
        #expect(error?.description.contains("x@") == false)

        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try "listen: {host: 127.0.0.1, port: 0, plain_http: true}\ndatabase: postgres://sonde@127.0.0.1:\(port)/sonde?sslmode=disable&connect_timeout=1\n"
            .write(toFile: dir.file("c.yaml"), atomically: true, encoding: .utf8)
        let migrate = try ChildProcess("sonde-collector", ["migrate", "--config", dir.file("c.yaml")])
        #expect(try await migrate.waitForExit() == 1)
        #expect(migrate.allOutput.contains("127.0.0.1:\(port)"))
    }

    /// A database that refuses new connections is named with PostgreSQL's own reason: the pool
    /// keeps its connect errors to itself, and "did not answer within 2 s" sent the operator to
    /// look for a network fault when the server was at its connection limit.
    @Test func refusedConnectionsSayWhatPostgreSQLAnswered() async throws {
        let pg = try await PostgresServer.shared()
        let database = String(try pg.createDatabase().split(separator: "/").last!.split(separator: "?")[0])
        let role = "limited_\(getpid())_\(Int.random(in: 0..<1_000_000))"
        try pg.psql("CREATE ROLE \(role) LOGIN PASSWORD 'limited' CONNECTION LIMIT 0")
        let store = try PostgresCollectorStore(
            url: "postgres://\(role):limited@127.0.0.1:\(pg.port)/\(database)?sslmode=disable&connect_timeout=2", logger: testLogger())
        defer { store.close() }
        let error = await #expect(throws: StorageError.self) { try await store.migrate() }
        #expect(error?.description.contains("too many connections for role") == true, "\(String(describing: error))")
        #expect(error?.description.contains("53300") == true)
        #expect(error?.description.contains("limited@") == false, "no password")
    }

    /// Bad URLs are configuration errors that say what is expected.
    @Test func badURLsAreConfigErrors() throws {
        for (text, expected) in [
            ("postgres://127.0.0.1/db", "no user"), ("postgres://u@127.0.0.1/", "no database"),
            ("postgres://u@h/db?sslmode=maybe", "sslmode"), ("postgres://u@h/db?colour=blue", "unknown parameter"),
        ] {
            #expect(throws: StorageError.self) { try PostgresURL(text) }
            #expect(((try? PostgresURL(text)) == nil))
            do { _ = try PostgresURL(text) } catch { #expect(error.description.contains(expected), "\(text): \(error)") }
        }
        let url = try PostgresURL("postgresql://me:s%40cret@db.example:6432/sonde?sslmode=verify-full&pool_max=5")
        #expect(url.user == "me" && url.password == "s@cret" && url.host == "db.example" && url.port == 6432 && url.database == "sonde")
        #expect(url.sslMode == .verifyFull && url.poolMax == 5)
        #expect(!url.description.contains("cret"))
    }
}
