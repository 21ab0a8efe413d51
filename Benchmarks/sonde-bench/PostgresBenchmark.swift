import ArgumentParser
import Collector
import CollectorStore
import Correlation
import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Synchronization

/// Several collectors on one PostgreSQL (a throwaway server started here, as the tests do):
/// ingest with 1 and 2 collectors (results/s, CPU per result in each collector and in
/// PostgreSQL, ack p99), detection time with 2 collectors against 1, and the time a new leader
/// takes to rebuild its engine from the database at fleet scale.
struct PostgresBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postgres", abstract: "Ingest, detection and leader rebuild with collectors on one PostgreSQL.")

    @Option(help: "The sonde-collector binary (a release build).") var collector = ".build/release/sonde-collector"
    @Option(help: "Comma-separated collector counts.") var collectors = "1,2"
    @Option(help: "Concurrent senders (split across the collectors).") var senders = 16
    @Option(help: "Batches per ingest run.") var batches = 800
    @Option(help: "Results per batch.") var results = 100
    @Option(help: "Runs per row (the table shows medians).") var runs = 3
    @Option(help: "Agents for the rebuild row (0 skips it).") var rebuildAgents = 10_000
    @Option(help: "Probes per agent for the rebuild row.") var rebuildProbes = 20
    @Option(help: "Runs per series in the window for the rebuild row.") var rebuildHistory = 3
    @Option(help: "Results spread over the last 24 h for the operators' timeline row (0 skips it).") var timelineResults = 3_000_000
    @Option(help: "Write a markdown fragment here.") var out: String?

    struct IngestRun {
        var collectors: Int
        var resultsPerSecond: Double
        var p99: Double
        var collectorCPU: [Double]
        var postgresCPU: Double
        var results: Int
    }

    func run() async throws {
        let counts = collectors.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        let pg = try await PostgresServer()
        defer { pg.stop() }
        print("postgres: PostgreSQL at 127.0.0.1:\(pg.port) (\(pg.binDirectory)), load \(ProcStat.loadAverage)")
        var ingest: [IngestRun] = []
        var detection: [Int: [Double]] = [:]
        for count in counts {
            for r in 1...runs {
                do {
                    let run = try await measureIngest(pg: pg, collectors: count)
                    ingest.append(run)
                    print(
                        "  ingest, \(count) collector(s), run \(r): \(grouped(run.resultsPerSecond)) results/s, ack p99 \(format(run.p99)) ms, collector CPU \(run.collectorCPU.map { format($0, 2) }) s, PostgreSQL CPU \(format(run.postgresCPU, 2)) s"
                    )
                } catch { print("  ingest, \(count) collector(s), run \(r): did not complete: \(error)") }
                do {
                    let seconds = try await measureDetection(pg: pg, collectors: count)
                    detection[count, default: []].append(seconds)
                    print("  detection, \(count) collector(s), run \(r): \(format(seconds, 2)) s")
                } catch { print("  detection, \(count) collector(s), run \(r): did not complete: \(error)") }
            }
        }
        var rebuild: [(seconds: Double, warmSeconds: Double, results: Int, caughtUp: Int)] = []
        if rebuildAgents > 0 {
            for r in 1...runs {
                do {
                    let run = try await measureRebuild(pg: pg)
                    rebuild.append(run)
                    print(
                        "  take-over run \(r): rebuild \(format(run.seconds, 2)) s for \(grouped(Double(run.results))) results, warm standby \(format(run.warmSeconds, 3)) s catching up \(grouped(Double(run.caughtUp)))"
                    )
                } catch { print("  rebuild run \(r): did not complete: \(error)") }
            }
        }

        var timeline: [(whole: Double, recent: Double, closed: Double)] = []
        if timelineResults > 0 {
            do {
                timeline = try await measureTimeline(pg: pg)
                for (r, run) in timeline.enumerated() {
                    print("  timeline run \(r + 1): 24 h in one read \(format(run.whole, 3)) s, last 2 h \(format(run.recent, 3)) s, the 22 h before \(format(run.closed, 3)) s")
                }
            } catch { print("  timeline: did not complete: \(error)") }
        }

        var table = MarkdownTable(header: [
            "collectors", "results/s (median)", "ack p99 ms", "collector CPU µs per result (each)", "PostgreSQL CPU µs per result",
            "total CPU µs per result", "detection s (median)",
        ])
        for count in counts {
            let rs = ingest.filter { $0.collectors == count }
            let perCollector = (0..<count).map { i in Stats.median(rs.map { $0.collectorCPU[i] / Double($0.results) * 1e6 }) }
            let postgres = Stats.median(rs.map { $0.postgresCPU / Double($0.results) * 1e6 })
            table.rows.append([
                "\(count)", grouped(Stats.median(rs.map(\.resultsPerSecond))), format(Stats.median(rs.map(\.p99))),
                perCollector.map { format($0) }.joined(separator: " + "), format(postgres), format(perCollector.reduce(0, +) + postgres),
                detection[count].map { format(Stats.median($0), 2) } ?? "–",
            ])
        }
        let rebuildText =
            rebuild.isEmpty
            ? ""
            : """
            A new leader's take-over to its first evaluation at \(grouped(Double(rebuildAgents))) agents × \(rebuildProbes) probes, \
            \(rebuildHistory) runs per series in the window (\(grouped(Double(rebuild[0].results))) results), medians of \(rebuild.count):

            | take-over | to first evaluation | runs |
            |---|---:|---|
            | rebuild: read the window into a fresh engine (before) | \(format(Stats.median(rebuild.map(\.seconds)), 2)) s | \(rebuild.map { format($0.seconds, 2) }.joined(separator: ", ")) s |
            | warm standby: catch up \(grouped(Double(rebuild[0].caughtUp))) results, adopt the stored decisions (now) | \(format(Stats.median(rebuild.map(\.warmSeconds)), 3)) s | \(rebuild.map { format($0.warmSeconds, 3) }.joined(separator: ", ")) s |

            Both from reading the ingest horizon to the first evaluation of an engine holding the window, the open incidents \
            and the agent states (what a new leader does before its first write). In the warm row the standby's engine had \
            followed the window already; what it catches up is one more run of 64 agents ingested since its last step.
            Reproduce: `.build/release/sonde-bench postgres --collectors 1 --runs 1 --rebuild-agents \(rebuildAgents) --rebuild-probes \(rebuildProbes) --rebuild-history \(rebuildHistory)`

            """
        let text = """
            A throwaway PostgreSQL \(pg.binDirectory.split(separator: "/").dropLast().last ?? "") (initdb in /tmp, `fsync=off`, \
            otherwise defaults) on the same machine; each run a fresh database and fresh `sonde-collector serve` processes \
            (\(collector.contains("/debug/") ? "**debug build**" : "release build"), `database: postgres://…?sslmode=disable`). Ingest: \(batches) batches × \(results) results pushed by \
            \(senders) senders (one enrolled agent each), split evenly across the collectors directly (no load balancer in the \
            timed path). CPU = user+sys from /proc over the timed section: each collector process, and PostgreSQL (the \
            postmaster, its backends, and backends that exited). Detection: 6 agents in 3 regions push healthy results, then \
            failing results for one component, to the standby when there are 2 collectors (so the leader learns of them only by \
            following the database); the time from the first failing push to the `incident.opened` webhook. Medians of \(runs) \
            runs. **This machine is shared** (\(ProcessInfo.processInfo.activeProcessorCount) cores, other builds running; load \
            at the end \(ProcStat.loadAverage)): read CPU per result, not results/s, and do not read the 2-collector row as \
            scale-out — a second collector cannot add cores here.

            \(table.text)
            Reproduce: `.build/release/sonde-bench postgres --collector \(collector) --collectors \(collectors) --senders \(senders) --batches \(batches) --results \(results) --runs \(runs) --rebuild-agents 0`

            \(rebuildText)
            \(timelineText(timeline))
            """
        print(text)
        try writeFragment(text, to: out)
    }

    // MARK: - Ingest

    func measureIngest(pg: PostgresServer, collectors count: Int) async throws -> IngestRun {
        let url = try pg.createDatabase()
        let agents = (0..<senders).map { i in (id: String(format: "bench-%03d", i), region: Workload.regions[i % 3], key: AgentSigningKey()) }
        let processes = try (0..<count).map { i in
            try CollectorProcess(
                binary: collector, agents: agents.map { ($0.id, $0.region, $0.key.publicKey) }, database: url, extraConfig: ["collector_name: bench-\(i)"])
        }
        defer { for process in processes { process.stop() } }
        let perSender = max(1, batches / senders)
        let results = self.results
        var work: [[(Data, String)]] = []
        for agent in agents {
            work.append(try (0...perSender).map { try Workload.signedBatch(agent: agent.id, region: agent.region, key: agent.key, results: results, sequence: $0) })
        }
        let client = CurlHTTPClient(threads: senders)
        @Sendable func push(_ base: String, _ agent: String, _ body: Data, _ signature: String) async -> (Bool, Double) {
            let request = HTTPRequest(
                method: "POST", url: base + PushProtocol.path,
                headers: [
                    HTTPHeader("Content-Type", "application/json"), HTTPHeader(PushProtocol.agentHeader, agent), HTTPHeader(PushProtocol.signatureHeader, signature),
                ], body: body, timeout: .seconds(60))
            let clock = ContinuousClock()
            let start = clock.now
            guard let response = try? await client.perform(request), response.status == 200,
                let ack = try? SondeJSON.decode(PushAck.self, from: response.body), ack.accepted == results
            else { return (false, (clock.now - start).milliseconds) }
            return (true, (clock.now - start).milliseconds)
        }
        let bases = processes.map(\.baseURL)
        await withTaskGroup(of: Void.self) { group in
            for (i, agent) in agents.enumerated() {
                let (body, signature) = work[i][0]
                group.addTask { _ = await push(bases[i % bases.count], agent.id, body, signature) }
            }
        }
        let cpuBefore = processes.map(\.cpuSeconds)
        let pgBefore = Self.postgresCPU(pg)
        let clock = ContinuousClock()
        let start = clock.now
        let outcomes = await withTaskGroup(of: [(Bool, Double)].self) { group in
            for (i, agent) in agents.enumerated() {
                let batches = Array(work[i].dropFirst())
                let base = bases[i % bases.count]
                group.addTask {
                    var outcomes: [(Bool, Double)] = []
                    for (body, signature) in batches { outcomes.append(await push(base, agent.id, body, signature)) }
                    return outcomes
                }
            }
            var all: [(Bool, Double)] = []
            for await part in group { all += part }
            return all
        }
        let wall = (clock.now - start).seconds
        let collectorCPU = zip(processes, cpuBefore).map { $0.cpuSeconds - $1 }
        let postgresCPU = Self.postgresCPU(pg) - pgBefore
        let acknowledged = outcomes.filter(\.0).count
        return IngestRun(
            collectors: count, resultsPerSecond: Double(acknowledged * results) / wall, p99: Stats.percentile(outcomes.map(\.1), 99),
            collectorCPU: collectorCPU, postgresCPU: postgresCPU, results: max(1, acknowledged * results))
    }

    /// user+sys of the postmaster, its live children, and its exited (waited-for) children.
    static func postgresCPU(_ pg: PostgresServer) -> Double {
        let postmaster = pg.pid
        let tick = Double(sysconf(Int32(_SC_CLK_TCK)))
        func fields(_ pid: String) -> [Substring]? {
            guard let text = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8), let close = text.lastIndex(of: ")") else { return nil }
            return text[text.index(after: close)...].split(separator: " ")
        }
        var total = 0.0
        if let own = fields("\(postmaster)"), own.count > 14 {
            total += (Double(own[11]) ?? 0) + (Double(own[12]) ?? 0) + (Double(own[13]) ?? 0) + (Double(own[14]) ?? 0)
        }
        for entry in (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? [] where entry.allSatisfy(\.isNumber) {
            guard let f = fields(entry), f.count > 12, Int32(f[1]) == postmaster else { continue }
            total += (Double(f[11]) ?? 0) + (Double(f[12]) ?? 0)
        }
        return total / tick
    }

    // MARK: - Detection

    func measureDetection(pg: PostgresServer, collectors count: Int) async throws -> Double {
        let url = try pg.createDatabase()
        let arrived = Mutex<ContinuousClock.Instant?>(nil)
        let receiver = try LoopbackHTTPServer { request in
            if request.header("Sonde-Event-Type") == "incident.opened" { arrived.withLock { $0 = $0 ?? .now } }
            return .json(200, "{}")
        }
        defer { receiver.stop() }
        let agents = (0..<6).map { i in (id: "det-\(i)", region: Workload.regions[i % 3], key: AgentSigningKey()) }
        let processes = try (0..<count).map { i in
            try CollectorProcess(
                binary: collector, agents: agents.map { ($0.id, $0.region, $0.key.publicKey) }, database: url,
                extraConfig: [
                    "collector_name: det-\(i)", "evaluation_interval: 1s", "webhooks: [{ name: bench, url: \"\(receiver.baseURL)/hook\", secret: bench-secret }]",
                    "webhook_retry: { poll: 50ms }",
                ])
        }
        defer { for process in processes { process.stop() } }
        let client = CurlHTTPClient(threads: 6)
        // The collector that is not leading receives the pushes (with one, the only one).
        var target = processes[0]
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(30)
        while true {
            var leaders: [CollectorProcess] = []
            for process in processes {
                let response = try? await client.perform(HTTPRequest(url: process.baseURL + "/metrics", timeout: .seconds(2)))
                let text = response.map { String(decoding: $0.body, as: UTF8.self) } ?? ""
                if text.split(separator: "\n").contains(where: { $0.hasPrefix("sonde_collector_leader{") && $0.hasSuffix(" 1") }) {
                    leaders.append(process)
                }
            }
            if leaders.count == 1 {
                target = processes.first { $0 !== leaders[0] } ?? leaders[0]
                break
            }
            guard clock.now < deadline else { throw BenchFailure("no single leader after 30 s") }
            try await Task.sleep(for: .milliseconds(100))
        }
        let targetURL = target.baseURL
        @Sendable func pushAll(failed: Bool, sequence: Int) async {
            await withTaskGroup(of: Void.self) { group in
                for agent in agents {
                    group.addTask {
                        let now = Date()
                        let results = (0..<20).map { n in
                            var result = Workload.result(agent: agent.id, region: agent.region, n: n, at: now)
                            if failed && result.component == "files" {
                                result.outcome = .failed
                                result.error = ProbeError(kind: .httpStatus, step: "request", message: "HTTP 502", code: "server_error")
                            } else if !failed || result.component != "files" {
                                result.outcome = .ok
                                result.error = nil
                            }
                            return result
                        }
                        guard let body = try? SondeJSON.encode(PushBatch(agent: agent.id, batchID: UUID().uuidString, sentAt: now, results: results)),
                            let signature = try? agent.key.signatureHeader(for: body)
                        else { return }
                        _ = try? await client.perform(
                            HTTPRequest(
                                method: "POST", url: targetURL + PushProtocol.path,
                                headers: [
                                    HTTPHeader("Content-Type", "application/json"), HTTPHeader(PushProtocol.agentHeader, agent.id),
                                    HTTPHeader(PushProtocol.signatureHeader, signature),
                                ], body: body, timeout: .seconds(10)))
                    }
                }
            }
        }
        for i in 0..<5 {
            await pushAll(failed: false, sequence: i)
            try await Task.sleep(for: .milliseconds(500))
        }
        let failingFrom = clock.now
        var sequence = 5
        while arrived.withLock({ $0 }) == nil {
            guard clock.now < failingFrom + .seconds(120) else { throw BenchFailure("no incident.opened within 120 s") }
            await pushAll(failed: true, sequence: sequence)
            sequence += 1
            try await Task.sleep(for: .milliseconds(500))
        }
        return (arrived.withLock { $0 }! - failingFrom).seconds
    }

    // MARK: - Rebuild

    /// A new leader's take-over to its first evaluation, both ways: `rebuild` reads the window
    /// from the database into a fresh engine (what a new leader did before); `warm` is a standby
    /// whose engine already followed the window: it catches up with what was ingested since its
    /// last step (one more run of 64 agents here) and adopts the stored decisions.
    func measureRebuild(pg: PostgresServer) async throws -> (seconds: Double, warmSeconds: Double, results: Int, caughtUp: Int) {
        let url = try pg.createDatabase()
        let logger = Logger(label: "bench")
        let store = try PostgresCollectorStore(url: url, logger: logger)
        defer { store.close() }
        try await store.migrate()
        // Fill the window: agents × probes series, `rebuildHistory` runs each, in groups of batches.
        let now = Date()
        func fill(agents: Range<Int>, runs: Range<Int>, suffix: String) async throws -> Int {
            var group: [PendingBatch] = []
            var count = 0
            for a in agents {
                let agent = String(format: "agent-%05d", a)
                let region = Workload.regions[a % 3]
                let results = runs.flatMap { run in
                    (0..<rebuildProbes).map { p in Workload.result(agent: agent, region: region, n: p, at: now.addingTimeInterval(-Double(run * 30 + p))) }
                }
                let body = try SondeJSON.encode(PushBatch(agent: agent, batchID: "\(agent)-\(suffix)", sentAt: now, results: results))
                group.append(
                    PendingBatch(batch: BatchRecord(batchID: "\(agent)-\(suffix)", agent: agent, receivedAt: now, body: body, signature: "-"), results: results))
                if group.count == 64 || a == agents.upperBound - 1 {
                    for outcome in try await store.ingest(group: group) { if case .stored(let new) = try outcome.get() { count += new.count } }
                    group.removeAll()
                }
            }
            return count
        }
        let stored = try await fill(agents: 0..<rebuildAgents, runs: 1..<(rebuildHistory + 1), suffix: "w")
        var config = CollectorConfig()
        config.databasePath = url
        let clock = ContinuousClock()
        let since = now.addingTimeInterval(-config.correlation.sanitized.windowAge)

        // Rebuild: horizon, window, a fresh engine fed the window, the first evaluation.
        let start = clock.now
        let horizon = try await store.ingestHorizon()
        let window = try await store.window(since: since, horizon: horizon, limit: 10_000_000)
        var engine = try await rebuildEngine(store: store, config: config, recent: window.results)
        _ = engine.evaluate(now: Date())
        let rebuildSeconds = (clock.now - start).seconds

        // Warm: that engine is now the standby's, which followed up to `horizon`; more arrives.
        let caughtUp = try await fill(agents: 0..<min(64, rebuildAgents), runs: 0..<1, suffix: "c")
        let warmStart = clock.now
        let newHorizon = try await store.ingestHorizon()
        engine.ingest(try await store.ingested(from: horizon, to: newHorizon), receivedAt: Date())
        let decisions = try await StoredDecisions.read(from: store)
        engine.adoptStoredDecisions(openIncidents: decisions.openIncidents, agentStates: decisions.agentStates, resolved: decisions.resolved)
        _ = engine.evaluate(now: Date())
        return (rebuildSeconds, (clock.now - warmStart).seconds, stored, caughtUp)
    }

    // MARK: - Timeline

    /// The operators' page's 24 h timeline over `timelineResults` results spread evenly over
    /// the last 24 h (inserted with SQL, not pushed): one read of all 24 hours (what every load
    /// of /internal cost before), the last two hours (what a load costs now) and the 22 before
    /// them (read at most every 5 minutes). Medians of `runs` reads each.
    func measureTimeline(pg: PostgresServer) async throws -> [(whole: Double, recent: Double, closed: Double)] {
        let url = try pg.createDatabase()
        let store = try PostgresCollectorStore(url: url, logger: Logger(label: "bench"))
        defer { store.close() }
        try await store.migrate()
        let database = String(url.split(separator: "/").last?.split(separator: "?").first ?? "")
        let nowMs = Int64(Date().timeIntervalSince1970 * 1000)
        _ = try pg.psql(
            """
            INSERT INTO series (agent, probe, component, region)
                SELECT 'agent-' || a, 'probe-' || p, 'component-' || (p % 4), 'eu' FROM generate_series(1, 50) a, generate_series(1, 20) p;
            INSERT INTO results (started_at, id, series, outcome, duration_ms, batch, json)
                SELECT \(nowMs) - i::BIGINT * 86400000 / \(timelineResults), 'r' || i, (SELECT min(id) FROM series) + i % 1000,
                    CASE WHEN i % 50 = 0 THEN 2 WHEN i % 70 = 0 THEN 1 ELSE 0 END, 12.5, 1, '\\x7b7d'::BYTEA
                FROM generate_series(1, \(timelineResults)) i;
            ANALYZE;
            """, database: database)
        let clock = ContinuousClock()
        let hour = nowMs / 3_600_000
        let first = Date(epochMs: (hour - 23) * 3_600_000)
        let recent = Date(epochMs: (hour - 1) * 3_600_000)
        var runsMeasured: [(whole: Double, recent: Double, closed: Double)] = []
        for _ in 0..<max(1, runs) {
            var start = clock.now
            _ = try await store.timeline(since: first, until: .distantFuture)
            let whole = (clock.now - start).seconds
            start = clock.now
            _ = try await store.timeline(since: recent, until: .distantFuture)
            let recentSeconds = (clock.now - start).seconds
            start = clock.now
            _ = try await store.timeline(since: first, until: recent)
            runsMeasured.append((whole, recentSeconds, (clock.now - start).seconds))
        }
        return runsMeasured
    }

    func timelineText(_ runs: [(whole: Double, recent: Double, closed: Double)]) -> String {
        guard !runs.isEmpty else { return "" }
        return """
            The operators' page's last 24 hours at \(grouped(Double(timelineResults))) results spread evenly over them \
            (1,000 series; inserted with SQL into one database, `ANALYZE`d), medians of \(runs.count) reads:

            | read | seconds | runs |
            |---|---:|---|
            | all 24 hours at once (every load of /internal, every 15 s, before) | \(format(Stats.median(runs.map(\.whole)), 3)) | \(runs.map { format($0.whole, 3) }.joined(separator: ", ")) |
            | the last 2 hours (every load now) | \(format(Stats.median(runs.map(\.recent)), 3)) | \(runs.map { format($0.recent, 3) }.joined(separator: ", ")) |
            | the 22 hours before them (at most every 5 minutes now) | \(format(Stats.median(runs.map(\.closed)), 3)) | \(runs.map { format($0.closed, 3) }.joined(separator: ", ")) |

            Reproduce: `.build/release/sonde-bench postgres --collectors 1 --runs 3 --rebuild-agents 0 --timeline-results \(timelineResults)` \
            (with `--batches 1` the ingest rows cost little).

            """
    }
}
