import CollectorStore
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import Collector

/// Uptime comes from a daily rollup kept at ingest: over a fixture history of 90 days its numbers
/// are those of the stored results, the page shows them, and pruning the results keeps them.
@Suite struct UptimeHistoryTests {
    /// 91 days of hourly runs by two agents on two components, ending yesterday: `files` fails
    /// `day % 7` runs a day, `login` 20 runs on one day. The oldest day is outside the page's 90.
    struct Fixture {
        let now = Date()
        let agents = [TestAgent(id: "fixture-eu-1", region: "eu"), TestAgent(id: "fixture-us-1", region: "us")]
        var today: Int64 { UptimeDay.dayNumber(now) }

        func results(daysBack: Int64, agent: TestAgent) -> [ProbeResult] {
            let dayStart = Date(epochMs: (today - daysBack) * 86_400_000)
            return (0..<24).map { hour in
                let component = hour % 2 == 0 ? "files" : "login"
                let failedFiles = component == "files" && hour / 2 < Int(daysBack % 7)
                let failedLogin = component == "login" && daysBack == 10 && hour / 2 < 10
                // Degraded runs passed (slowly): they count as up.
                let outcome: Outcome = failedFiles || failedLogin ? .failed : hour == 5 ? .degraded : .ok
                return agent.result(probe: component, component: component, outcome: outcome, startedAt: dayStart.addingTimeInterval(Double(hour) * 3600 + 61))
            }
        }

        /// Stores the history: a batch per agent per day, then one batch that repeats a stored
        /// result next to a new one (the duplicate must count once).
        func load(into store: any CollectorStorage) async throws -> ProbeResult {
            for daysBack in Int64(1)...91 {
                for agent in agents {
                    let results = self.results(daysBack: daysBack, agent: agent)
                    _ = try await store.ingest(batch: BatchRecord(batchID: UUID().uuidString, agent: agent.id, receivedAt: now, body: Data(), signature: ""), results: results)
                }
            }
            let repeated = try await store.results(ResultQuery(component: "login", limit: 1)).results[0]
            var extra = agents[0].result(probe: "login", component: "login", outcome: .failed, startedAt: repeated.startedAt.addingTimeInterval(1))
            extra.region = repeated.region
            _ = try await store.ingest(
                batch: BatchRecord(batchID: UUID().uuidString, agent: agents[0].id, receivedAt: now, body: Data(), signature: ""), results: [repeated, extra])
            return extra
        }
    }

    /// Counts a component's stored results day by day, through the results API of the store.
    static func storedDays(_ store: any CollectorStorage, component: String, today: Int64) async throws -> [Int64: UptimeDay] {
        var days: [Int64: UptimeDay] = [:]
        var agents: [Int64: Set<String>] = [:]
        var cursor: ResultCursor?
        repeat {
            let page = try await store.results(
                ResultQuery(component: component, since: Date(epochMs: (today - 91) * 86_400_000), limit: 1000, cursor: cursor))
            for result in page.results {
                let day = UptimeDay.dayNumber(result.startedAt)
                var record = days[day] ?? UptimeDay(component: component, day: Date(epochMs: day * 86_400_000), total: 0, failed: 0, degraded: 0)
                record.total += 1
                if result.outcome == .failed { record.failed += 1 }
                if result.outcome == .degraded { record.degraded += 1 }
                days[day] = record
                agents[day, default: []].insert(result.agent)
            }
            cursor = page.nextCursor
        } while cursor != nil
        for (day, names) in agents { days[day]?.agents = names.count }
        return days
    }

    static func checkRollup(_ store: any CollectorStorage, fixture: Fixture) async throws {
        let rollup = try await store.uptimeDays(since: Date(epochMs: (fixture.today - 91) * 86_400_000))
        for component in ["files", "login"] {
            let stored = try await storedDays(store, component: component, today: fixture.today)
            let rolled = Dictionary(rollup.filter { $0.component == component }.map { (UptimeDay.dayNumber($0.day), $0) }, uniquingKeysWith: { $1 })
            #expect(stored.count == 91 && rolled.count == 91, "\(component): \(stored.count) stored days, \(rolled.count) rolled up")
            func counts(_ days: [Int64: UptimeDay]) -> [Int64: [Int]] { days.mapValues { [$0.total, $0.failed, $0.degraded, $0.agents] } }
            #expect(counts(rolled) == counts(stored), "\(component): the rollup matches the stored results day by day")
            // Both agents ran as many runs each day but the last (agent 0 ran one more login):
            // there the weights bound agent 0 to agent 1's 12 runs.
            for (day, record) in rolled where !(component == "login" && day == fixture.today - 1) {
                #expect(abs(record.uptime - Double(record.total - record.failed) / Double(record.total)) < 1e-12, "\(component) \(day)")
            }
        }
        // Three days back, files failed its first 3 runs of the day on both agents.
        let files3 = rollup.first { $0.component == "files" && UptimeDay.dayNumber($0.day) == fixture.today - 3 }
        #expect(files3?.total == 24 && files3?.failed == 6 && files3?.degraded == 0)
    }

    @Test func sqliteRollupMatchesStoredResultsAndSurvivesPruning() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let fixture = Fixture()
        var config = testConfig(dir: dir, agents: fixture.agents)
        config.components = ["files", "login", "search"]
        try await withCollector(config) { collector in
            _ = try await fixture.load(into: collector.store)
            try await Self.checkRollup(collector.store, fixture: fixture)

            // The page's 90 days: yesterday back to 89 days ago (today has no run).
            let rollup = try await collector.store.uptimeDays(since: Date(epochMs: (fixture.today - 89) * 86_400_000))
            func expected(_ component: String) -> String {
                let days = rollup.filter { $0.component == component }
                return StatusPage.percent(days.reduce(0) { $0 + $1.passed } / days.reduce(0) { $0 + $1.counted })
            }
            let page = try await get(collector, "/", token: TestTokens.read)
            #expect(page.status == 200)
            let html = page.bodyText
            for component in ["files", "login"] {
                let block = html.components(separatedBy: "id=\"component-\(component)\"").last?.components(separatedBy: "id=\"component-").first ?? ""
                #expect(block.contains("\(expected(component)) uptime"), "\(component): \(expected(component)) expected")
            }
            // The day's bar: 3 days back files failed 6 of its 24 runs.
            let day3 = String(RFC3339.string(from: Date(epochMs: (fixture.today - 3) * 86_400_000)).prefix(10))
            #expect(html.contains("\(day3): \(StatusPage.percent(18.0 / 24)) uptime over 24 runs, 6 failed"))
            // A declared component without any result is starting, and has no uptime.
            let search = html.components(separatedBy: "id=\"component-search\"").last ?? ""
            #expect(search.contains(">Starting<") && search.contains("<span>starting</span>"))

            // Retention prunes every raw result; the history stays.
            let report = try await collector.store.prune(before: fixture.now)
            #expect(report.results == 91 * 2 * 24 + 1)
            #expect(try await collector.store.resultCount() == 0)
            #expect(try await collector.store.uptimeDays(since: Date(epochMs: (fixture.today - 89) * 86_400_000)) == rollup)
            let after = try await get(collector, "/", token: TestTokens.read).bodyText
            #expect(after.contains("\(expected("files")) uptime") && after.contains("\(expected("login")) uptime"))
        }
    }

    @Test func inMemoryRollupMatchesStoredResults() async throws {
        let store = InMemoryCollectorStore()
        let fixture = Fixture()
        _ = try await fixture.load(into: store)
        try await Self.checkRollup(store, fixture: fixture)
        let before = try await store.uptimeDays(since: Date(epochMs: (fixture.today - 91) * 86_400_000))
        _ = try await store.prune(before: fixture.now)
        #expect(try await store.resultCount() == 0)
        #expect(try await store.uptimeDays(since: Date(epochMs: (fixture.today - 91) * 86_400_000)) == before)
    }

    @Test func postgresRollupMatchesStoredResultsAndSurvivesPruning() async throws {
        let store = try PostgresCollectorStore(url: try await PostgresServer.shared().createDatabase(), logger: testLogger())
        defer { store.close() }
        try await store.migrate()
        let fixture = Fixture()
        _ = try await fixture.load(into: store)
        try await Self.checkRollup(store, fixture: fixture)
        let before = try await store.uptimeDays(since: Date(epochMs: (fixture.today - 91) * 86_400_000))
        _ = try await store.prune(before: fixture.now)
        #expect(try await store.resultCount() == 0)
        #expect(try await store.uptimeDays(since: Date(epochMs: (fixture.today - 91) * 86_400_000)) == before)
    }

    /// One enrolled agent cannot rewrite a day's uptime by sending more runs than its peers (red
    /// team F3: 29,000 made-up failures took a day from 100 % to 10.7 %): its runs weigh at most
    /// as many as the lower-median agent's, its pass share kept. Both ways: invented failures of a
    /// healthy component, invented passes hiding a real half outage.
    static func checkOneAgentIsBounded(_ store: any CollectorStorage) async throws {
        let honest = (1...4).map { TestAgent(id: "honest-\($0)", region: $0 <= 2 ? "eu" : "us") }
        let flooder = TestAgent(id: "flooder", region: "eu")
        let dayStart = Date(epochMs: (UptimeDay.dayNumber(Date()) - 1) * 86_400_000)
        func runs(_ agent: TestAgent, _ count: Int, failing: Int, _ component: String) -> [ProbeResult] {
            (0..<count).map { i in
                agent.result(
                    probe: component, component: component, outcome: i < failing ? .failed : .ok, startedAt: dayStart.addingTimeInterval(Double(i) * 10 + 1))
            }
        }
        func ingest(_ agent: TestAgent, _ results: [ProbeResult]) async throws {
            _ = try await store.ingest(
                batch: BatchRecord(batchID: UUID().uuidString, agent: agent.id, receivedAt: Date(), body: Data(), signature: ""), results: results)
        }
        for agent in honest { try await ingest(agent, runs(agent, 100, failing: 0, "files") + runs(agent, 100, failing: 50, "login")) }
        for part in 0..<5 {
            let files = runs(flooder, 5000, failing: 5000, "files")[(part * 1000)..<((part + 1) * 1000)]
            let login = runs(flooder, 5000, failing: 0, "login")[(part * 1000)..<((part + 1) * 1000)]
            try await ingest(flooder, Array(files) + Array(login))
        }
        let days = Dictionary(try await store.uptimeDays(since: dayStart).map { ($0.component, $0) }, uniquingKeysWith: { $1 })
        let files = try #require(days["files"]), login = try #require(days["login"])
        // Every run is kept and shown; the flooder weighs as one agent of five.
        #expect(files.total == 5400 && files.failed == 5000 && files.agents == 5, "\(files)")
        #expect(abs(files.uptime - 0.8) < 1e-9, "files: 400 of 500 weighed runs passed, not 400 of 5,400: \(files.uptime)")
        #expect(login.total == 5400 && login.failed == 200 && login.agents == 5, "\(login)")
        #expect(abs(login.uptime - 0.6) < 1e-9, "login: (4 × 50 + 100) of 500, not 5,200 of 5,400: \(login.uptime)")
        #expect(StatusPage.dayStatus(login) == .majorOutage, "the half outage stays red")
    }

    @Test func oneAgentCannotOutweighItsPeersInMemory() async throws {
        try await Self.checkOneAgentIsBounded(InMemoryCollectorStore())
    }

    @Test func oneAgentCannotOutweighItsPeersInSQLite() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let store = try SQLiteCollectorStore(path: dir.path + "/sonde.db", logger: testLogger())
        try await store.migrate()
        try await Self.checkOneAgentIsBounded(store)
    }

    @Test func oneAgentCannotOutweighItsPeersInPostgres() async throws {
        let store = try PostgresCollectorStore(url: try await PostgresServer.shared().createDatabase(), logger: testLogger())
        defer { store.close() }
        try await store.migrate()
        try await Self.checkOneAgentIsBounded(store)
    }

    /// Runs from the day of grace before an agent's enrolment are stored, but uptime counts only
    /// the days it watched (red team F3: an agent enrolled today painted yesterday red).
    @Test func runsFromBeforeEnrolmentAreKeptButNotCounted() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            let before = (1...20).map { agent.result(outcome: .failed, startedAt: Date().addingTimeInterval(-Double($0) * 3600)) }
            let after = [agent.result(outcome: .ok), agent.result(outcome: .failed)]
            let pushed = try await agent.push(agent.batch(before + after), to: collector)
            #expect(pushed.status == 200, "\(pushed.bodyText)")
            #expect(try await collector.store.resultCount() == 22)
            let days = try await collector.store.uptimeDays(since: Date().addingTimeInterval(-2 * 86_400))
            #expect(days.reduce(0) { $0 + $1.total } == 2 && days.reduce(0) { $0 + $1.failed } == 1, "\(days)")
        }
    }

    /// Uptime blames as the engine does: a batch journey that fails at its files step is files'
    /// downtime and not batch's (batch was not reached); its passing login step is a login run.
    @Test func aJourneyFailingAtAnotherComponentsStepIsThatComponentsDowntime() async throws {
        let store = InMemoryCollectorStore()
        let agent = TestAgent(id: "eu-1", region: "eu")
        func journey(filesOK: Bool) -> ProbeResult {
            var result = agent.result(probe: "batch-journey", component: "batch", outcome: filesOK ? .ok : .failed)
            result.steps = [
                StepResult(name: "login", method: "POST", url: "https://platform.example/login", status: 200, ok: true, timings: .zero, component: "login"),
                StepResult(
                    name: "upload input", method: "POST", url: "https://platform.example/files", status: filesOK ? 201 : 503, ok: filesOK, timings: .zero,
                    component: "files"),
                StepResult(name: "submit", method: "POST", url: "https://platform.example/batches", status: 200, ok: true, timings: .zero),
            ].prefix(filesOK ? 3 : 2).map { $0 }
            return result
        }
        _ = try await store.ingest(
            batch: BatchRecord(batchID: UUID().uuidString, agent: agent.id, receivedAt: Date(), body: Data(), signature: ""),
            results: [journey(filesOK: false), journey(filesOK: false), journey(filesOK: true)])
        let days = Dictionary(try await store.uptimeDays(since: Date().addingTimeInterval(-86_400)).map { ($0.component, $0) }, uniquingKeysWith: { $1 })
        #expect(days["files"]?.total == 3 && days["files"]?.failed == 2, "\(days)")
        #expect(days["batch"]?.total == 1 && days["batch"]?.failed == 0, "batch counts only the run that reached it: \(days)")
        #expect(days["login"]?.total == 3 && days["login"]?.failed == 0, "\(days)")
    }

    /// Retries follow failures, up to 4 per interval: counting them would weigh each failure
    /// up to 4 times. Uptime is the scheduled runs' (found by the first-use review).
    @Test func retriesAreNotCountedInUptime() async throws {
        let store = InMemoryCollectorStore()
        let agent = TestAgent(id: "eu-1", region: "eu")
        var results = [agent.result(outcome: .ok), agent.result(outcome: .failed), agent.result(outcome: .ok)]
        for outcome in [Outcome.failed, .failed, .ok] {
            var retry = agent.result(outcome: outcome)
            retry.retry = true
            results.append(retry)
        }
        _ = try await store.ingest(batch: BatchRecord(batchID: UUID().uuidString, agent: agent.id, receivedAt: Date(), body: Data(), signature: ""), results: results)
        let days = Dictionary(try await store.uptimeDays(since: Date().addingTimeInterval(-86_400)).map { ($0.component, $0) }, uniquingKeysWith: { $1 })
        #expect(days["login"]?.total == 3 && days["login"]?.failed == 1, "\(days)")
    }

    /// summary.json says what the page says: nothing measured is "No Data", not "All Systems
    /// Operational" (first-use review: one agent's total outage of an undeclared component).
    @Test func summaryOfNothingMeasuredIsNoData() {
        #expect(StatuspageSummary.indicator(.unknown).description == "No Data")
        #expect(StatuspageSummary.indicator(.unknown).indicator == "none")
        #expect(StatuspageSummary.indicator(.operational).description == "All Systems Operational")
    }

    /// "No data" only after twice the probes' interval without a run; "starting" before the first.
    @Test func unknownVerdictIsStartingFreshOrNoData() {
        let now = Date()
        let agent = TestAgent(id: "a", region: "eu")
        func run(_ secondsAgo: Double, interval: Double?) -> CollectorMetrics.LatestRun {
            CollectorMetrics.LatestRun(result: agent.result(startedAt: now.addingTimeInterval(-secondsAgo)), receivedAt: now.addingTimeInterval(-secondsAgo), interval: interval)
        }
        #expect(CollectorAPI.pageStatus(verdict: nil, incident: nil, latest: [], hasHistory: false, now: now) == .starting)
        #expect(CollectorAPI.pageStatus(verdict: .unknown, incident: nil, latest: [], hasHistory: true, now: now) == .component(.unknown))
        // One run 90 s ago of a probe whose interval is not known yet: not "No data".
        #expect(CollectorAPI.pageStatus(verdict: .unknown, incident: nil, latest: [run(90, interval: nil)], hasHistory: true, now: now) == .component(.operational))
        #expect(CollectorAPI.pageStatus(verdict: .unknown, incident: nil, latest: [run(230, interval: 120)], hasHistory: true, now: now) == .component(.operational))
        #expect(CollectorAPI.pageStatus(verdict: .unknown, incident: .partialOutage, latest: [run(100, interval: 120)], hasHistory: true, now: now) == .component(.partialOutage))
        #expect(CollectorAPI.pageStatus(verdict: .unknown, incident: nil, latest: [run(250, interval: 120)], hasHistory: true, now: now) == .component(.unknown))
        #expect(CollectorAPI.pageStatus(verdict: .majorOutage, incident: nil, latest: [], hasHistory: true, now: now) == .component(.majorOutage))
    }

    /// A person's declared impact is the least a component shows: over starting, no data or a
    /// better verdict, never hiding a worse one.
    @Test func aPersonsDeclaredImpactIsTheLeastAComponentShows() {
        let now = Date()
        #expect(CollectorAPI.pageStatus(verdict: nil, incident: nil, declared: .majorOutage, latest: [], hasHistory: false, now: now) == .component(.majorOutage))
        #expect(CollectorAPI.pageStatus(verdict: .unknown, incident: nil, declared: .partialOutage, latest: [], hasHistory: true, now: now) == .component(.partialOutage))
        #expect(CollectorAPI.pageStatus(verdict: .operational, incident: nil, declared: .degradedPerformance, latest: [], hasHistory: true, now: now) == .component(.degradedPerformance))
        #expect(CollectorAPI.pageStatus(verdict: .majorOutage, incident: nil, declared: .degradedPerformance, latest: [], hasHistory: true, now: now) == .component(.majorOutage))
    }

    /// Characters XML 1.0 forbids never reach a page or the Atom feed, whatever storage holds.
    @Test func escapedTextHoldsOnlyXMLCharacters() {
        let escaped = StatusPage.escape("a\u{FFFF}b\u{FFFE}c\u{1}d\u{85}e <&>\n\tf")
        #expect(escaped == "abcde &lt;&amp;&gt;\n\tf")
    }
}
