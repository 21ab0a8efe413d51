import ArgumentParser
import CurlHTTP
import Foundation
import SondeCore

// MARK: - Workload

/// Realistic results for one agent: 20 probes on 5 components, one or two steps with phase
/// timings, about 1 % failed with an error (as in a healthy fleet).
enum Workload {
    static let regions = ["eu", "us", "ap"]
    static let components = ["api", "batch", "files", "login", "models"]

    static func result(agent: String, region: String, n: Int, at: Date) -> ProbeResult {
        let p = n % 20
        let failed = n % 97 == 13
        let component = components[p % components.count]
        let timings = PhaseTimings(dns: 0.4, connect: 1.2, tls: 4.8, ttfb: Double(40 + n % 60), transfer: 2.5, total: Double(49 + n % 60))
        var steps = [
            StepResult(
                name: "request", method: "POST", url: "https://platform.example/v1/\(component)", status: failed ? 502 : 200, ok: !failed,
                timings: timings)
        ]
        if p % 3 == 0 {
            steps.append(StepResult(name: "read-back", method: "GET", url: "https://platform.example/v1/\(component)/item", status: 200, ok: true, timings: timings))
        }
        return ProbeResult(
            probe: "probe-\(p)", component: component, agent: agent, region: region, startedAt: at, durationMs: timings.total * Double(steps.count),
            outcome: failed ? .failed : .ok,
            error: failed ? ProbeError(kind: .httpStatus, step: "request", message: "HTTP 502 from https://platform.example", code: "server_error") : nil,
            steps: steps, control: p == 19 ? true : nil)
    }

    /// A signed push: (body, signature header).
    static func signedBatch(agent: String, region: String, key: AgentSigningKey, results count: Int, sequence: Int) throws -> (Data, String) {
        let now = Date()
        let results = (0..<count).map { result(agent: agent, region: region, n: sequence * count + $0, at: now.addingTimeInterval(Double($0) * -0.01)) }
        let body = try SondeJSON.encode(PushBatch(agent: agent, batchID: "\(agent)-\(sequence)-\(UUID().uuidString.prefix(8))", sentAt: now, results: results))
        return (body, try key.signatureHeader(for: body))
    }
}

// MARK: - HTTP ingest benchmark

/// Collector ingest through HTTP: N concurrent senders (one enrolled agent each) push pre-signed
/// batches back to back to a real `sonde-collector serve` process; results/s into SQLite, ack
/// latency and the collector's CPU time.
struct IngestBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest", abstract: "Signed batches from concurrent senders into a real collector process (SQLite).")

    @Option(help: "The sonde-collector binary (a release build).") var collector = ".build/release/sonde-collector"
    @Option(help: "Comma-separated sender counts.") var senders = "8,16,32,64"
    @Option(help: "Batches per run (split across senders).") var batches = 1600
    @Option(help: "Results per batch.") var results = 100
    @Option(help: "Runs per sender count (the table shows medians).") var runs = 3
    @Option(help: "Label for this build in the table (e.g. before/after).") var label = "release"
    @Option(help: "The collector's database_sync: full (its default: fsync at every commit) or normal.") var databaseSync = "full"
    @Option(help: "Write a markdown fragment here.") var out: String?

    struct Run {
        var senders: Int
        var resultsPerSecond: Double
        var p50: Double
        var p99: Double
        var cpuSeconds: Double
        var wall: Double
        var peakRSS: Double
        var failures: Int
    }

    func run() async throws {
        let counts = senders.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !counts.isEmpty else { throw ValidationError("--senders: expected comma-separated numbers like 8,16,32,64") }
        print("ingest: \(batches) batches × \(results) results per run, senders \(counts), \(runs) runs each, load \(ProcStat.loadAverage)")
        var all: [Run] = []
        for count in counts {
            for r in 1...runs {
                let run: Run
                do { run = try await Self.measure(binary: collector, senders: count, batches: batches, results: results, databaseSync: databaseSync) } catch {
                    print("  senders \(count) run \(r): did not complete: \(error)")
                    continue
                }
                all.append(run)
                print(
                    "  senders \(count) run \(r): \(grouped(run.resultsPerSecond)) results/s, ack p50 \(format(run.p50)) ms p99 \(format(run.p99)) ms, collector CPU \(format(run.cpuSeconds, 2)) s over \(format(run.wall, 2)) s wall, peak RSS \(format(run.peakRSS, 0)) MiB, failures \(run.failures)"
                )
            }
        }
        var table = MarkdownTable(header: [
            "build", "senders", "results/s (median)", "min…max", "ack p50 ms", "ack p99 ms", "collector CPU s", "CPU % of wall",
            "results per CPU-s", "peak RSS MiB", "failed pushes", "target ≥ 50,000/s",
        ])
        var commands: [String] = []
        for count in counts {
            let rs = all.filter { $0.senders == count }
            let rate = Stats.median(rs.map(\.resultsPerSecond))
            let cpu = Stats.median(rs.map(\.cpuSeconds))
            let wall = Stats.median(rs.map(\.wall))
            table.rows.append([
                label, "\(count)", grouped(rate),
                "\(grouped(rs.map(\.resultsPerSecond).min() ?? .nan))…\(grouped(rs.map(\.resultsPerSecond).max() ?? .nan))",
                format(Stats.median(rs.map(\.p50))), format(Stats.median(rs.map(\.p99))), format(cpu, 2),
                format(cpu / wall * 100, 0) + " %", grouped(Stats.median(rs.map { Double(batches * results) / $0.cpuSeconds })),
                format(Stats.median(rs.map(\.peakRSS)), 0), "\(rs.map(\.failures).reduce(0, +))", rate >= 50_000 ? "met" : "not met",
            ])
            commands.append(
                "`.build/release/sonde-bench ingest --senders \(count) --batches \(batches) --results \(results) --runs \(runs) --database-sync \(databaseSync)`")
        }
        let text = """
            Each run: a fresh `sonde-collector serve` process (release build, SQLite file in /tmp, WAL, \
            `database_sync: \(databaseSync)`, i.e. `synchronous=\(databaseSync.uppercased())`) on 127.0.0.1; \(batches) batches of \(results) results (\(grouped(Double(batches * results))) results) \
            pushed by N concurrent senders (one enrolled agent each, `CurlHTTPClient(threads: N)`, a new connection per push as \
            the agent does), back to back. Bodies are built and Ed25519-signed before the timed section, so the senders \
            only send. Every push must be acknowledged with `accepted: \(results)`; the stored count is checked through \
            `/metrics` afterwards. Results/s = results acknowledged ÷ wall time; latency = push → acknowledgement as the sender \
            sees it; CPU = user+sys of the collector process from `/proc/<pid>/stat` over the timed section (the senders \
            run on the same \(ProcessInfo.processInfo.activeProcessorCount) cores). Medians of \(runs) runs.

            \(table.text)
            Reproduce a row: \(commands.joined(separator: " · "))

            """
        print(text)
        try writeFragment(text, to: out)
    }

    static func measure(binary: String, senders: Int, batches: Int, results: Int, databaseSync: String) async throws -> Run {
        let agents = (0..<senders).map { i in
            (id: String(format: "bench-%03d", i), region: Workload.regions[i % 3], key: AgentSigningKey())
        }
        let collector = try CollectorProcess(
            binary: binary, agents: agents.map { ($0.id, $0.region, $0.key.publicKey) }, extraConfig: ["database_sync: \(databaseSync)"])
        defer { collector.stop() }
        // Pre-sign everything (plus one warm-up batch per sender) before timing.
        let perSender = max(1, batches / senders)
        var work: [[(Data, String)]] = []
        for agent in agents {
            work.append(try (0...perSender).map { try Workload.signedBatch(agent: agent.id, region: agent.region, key: agent.key, results: results, sequence: $0) })
        }
        let client = CurlHTTPClient(threads: senders)
        let url = collector.baseURL + PushProtocol.path
        @Sendable func push(_ agent: String, _ body: Data, _ signature: String) async -> (ok: Bool, latency: Double) {
            let request = HTTPRequest(
                method: "POST", url: url,
                headers: [
                    HTTPHeader("Content-Type", "application/json"), HTTPHeader(PushProtocol.agentHeader, agent),
                    HTTPHeader(PushProtocol.signatureHeader, signature),
                ], body: body, timeout: .seconds(60))
            let clock = ContinuousClock()
            let start = clock.now
            guard let response = try? await client.perform(request) else { return (false, (clock.now - start).milliseconds) }
            let latency = (clock.now - start).milliseconds
            guard response.status == 200, let ack = try? SondeJSON.decode(PushAck.self, from: response.body), ack.accepted == results else {
                return (false, latency)
            }
            return (true, latency)
        }
        // Warm-up: one batch per sender, concurrently.
        await withTaskGroup(of: Void.self) { group in
            for (i, agent) in agents.enumerated() {
                let (body, signature) = work[i][0]
                group.addTask { _ = await push(agent.id, body, signature) }
            }
        }
        // Profiling hook: SONDE_BENCH_PERF=<file> records the collector with perf during the timed section.
        let perf = try ProcessInfo.processInfo.environment["SONDE_BENCH_PERF"].map { output in
            let perf = Process()
            perf.executableURL = URL(fileURLWithPath: "/usr/bin/perf")
            perf.arguments = ["record", "-F", "499", "-p", "\(collector.pid)", "-o", output]
            perf.standardOutput = FileHandle.nullDevice
            perf.standardError = FileHandle.nullDevice
            try perf.run()
            return perf
        }
        let cpuBefore = collector.cpuSeconds
        let clock = ContinuousClock()
        let start = clock.now
        let outcomes = await withTaskGroup(of: [(Bool, Double)].self) { group in
            for (i, agent) in agents.enumerated() {
                let batches = Array(work[i].dropFirst())
                group.addTask {
                    var outcomes: [(Bool, Double)] = []
                    for (body, signature) in batches { outcomes.append(await push(agent.id, body, signature)) }
                    return outcomes
                }
            }
            var all: [(Bool, Double)] = []
            for await part in group { all += part }
            return all
        }
        let wall = (clock.now - start).seconds
        let cpu = collector.cpuSeconds - cpuBefore
        if let perf {
            perf.interrupt()
            perf.waitUntilExit()
        }
        let peak = ProcStat.memoryMiB(pid: collector.pid, field: "VmHWM") ?? .nan
        let acknowledged = outcomes.filter(\.0).count
        // Cross-check what the collector says it stored.
        let metrics = try? await client.perform(HTTPRequest(url: collector.baseURL + "/metrics", timeout: .seconds(30)))
        let stored = metrics.flatMap { response in
            String(decoding: response.body, as: UTF8.self).split(separator: "\n")
                .first { $0.hasPrefix("sonde_ingest_results_total ") }
                .flatMap { Int($0.split(separator: " ")[1]) }
        }
        let expected = (acknowledged + senders) * results
        if stored != expected {
            print("  warning: the collector reports \(stored.map(String.init) ?? "?") results stored, expected \(expected)")
        }
        let latencies = outcomes.map(\.1)
        return Run(
            senders: senders, resultsPerSecond: Double(acknowledged * results) / wall, p50: Stats.percentile(latencies, 50),
            p99: Stats.percentile(latencies, 99), cpuSeconds: cpu, wall: wall, peakRSS: peak, failures: outcomes.count - acknowledged)
    }
}
