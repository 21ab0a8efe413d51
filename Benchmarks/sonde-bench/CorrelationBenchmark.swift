import ArgumentParser
import Correlation
import Foundation
import SondeCore

/// Correlation at scale: `CorrelationEngine.evaluate(now:)` with agents × probes series in the
/// window, one tick per simulated second with the results that arrived in that second ingested
/// between ticks (each probe runs every `interval` seconds, phases spread).
struct CorrelationBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "correlation", abstract: "Evaluation time per tick at fleet scale (in process).")

    @Option(help: "Agents (spread over eu, us, ap).") var agents = 10_000
    @Option(help: "Probes per agent (the last one is the control probe).") var probes = 20
    @Option(help: "Runs already in each series' window before timing.") var history = 5
    @Option(help: "Probe interval, seconds.") var interval = 30
    @Option(help: "Timed ticks per run.") var ticks = 30
    @Option(help: "Runs (medians of the per-run figures).") var runs = 3
    @Option(help: "Label for this build in the table.") var label = "release"
    @Option(help: "Write a markdown fragment here.") var out: String?

    struct Run {
        var p50: Double
        var p99: Double
        var max: Double
        var ingestPerTick: Double
        var resultsPerTick: Double
    }

    func run() async throws {
        var all: [Run] = []
        for r in 1...runs {
            let run = measure()
            all.append(run)
            print(
                "  correlation run \(r): evaluate p50 \(format(run.p50)) ms, p99 \(format(run.p99)) ms, max \(format(run.max)) ms; ingest \(format(run.ingestPerTick)) ms per tick (\(grouped(run.resultsPerTick)) results)"
            )
        }
        let p50 = Stats.median(all.map(\.p50))
        var table = MarkdownTable(header: [
            "build", "agents × probes", "series", "runs in window", "ticks × runs", "evaluate p50 ms", "evaluate p99 ms", "worst tick ms",
            "ingest per tick ms", "results per tick", "target ≤ 50 ms (p50 / p99)",
        ])
        table.rows.append([
            label, "\(grouped(Double(agents))) × \(probes)", grouped(Double(agents * probes)), "\(history)–\(history + 1)", "\(ticks) × \(runs)",
            format(p50), format(Stats.median(all.map(\.p99))), format(all.map(\.max).max() ?? .nan), format(Stats.median(all.map(\.ingestPerTick))),
            grouped(Stats.median(all.map(\.resultsPerTick))),
            "\(p50 <= 50 ? "met" : "not met") / \(Stats.median(all.map(\.p99)) <= 50 ? "met" : "not met")",
        ])
        let text = """
            In process (no I/O): a `CorrelationEngine` with \(grouped(Double(agents))) agents in 3 regions × \(probes) probes \
            (5 components + a control probe), \(history) runs per series already in the window, a regional outage (eu/files) and \
            1 % of agents with a local fault. Each tick advances the clock 1 s, ingests the results due in that second (every \
            probe runs every \(interval) s, phases spread), then times `evaluate(now:)`. \(ticks) ticks per run, \(runs) runs; \
            p50/p99 are per run, the table shows their medians.

            \(table.text)
            Reproduce: `.build/release/sonde-bench correlation --agents \(agents) --probes \(probes) --history \(history) --ticks \(ticks) --runs \(runs)`

            """
        print(text)
        try writeFragment(text, to: out)
    }

    func measure() -> Run {
        let regions = ["eu", "us", "ap"]
        let components = ["api", "batch", "files", "login", "models"]
        let infos = (0..<agents).map { AgentInfo(id: String(format: "agent-%05d", $0), region: regions[$0 % 3]) }
        var engine = CorrelationEngine(config: CorrelationConfig(), agents: infos)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let error = ProbeError(kind: .httpStatus, step: "upload", message: "HTTP 502", code: "server_error")
        let seriesCount = agents * probes

        /// The run of series `s` numbered `run` (started at its phase + run × interval).
        func result(series s: Int, run: Int) -> ProbeResult {
            let n = s / probes
            let p = s % probes
            let agent = infos[n]
            let control = p == probes - 1
            let component = control ? "control" : components[p % components.count]
            let failed = (agent.region == "eu" && component == "files") || (n % 100 == 7 && (control || component == "login"))
            let phase = Double(s % (interval * 1000)) / 1000
            return ProbeResult(
                id: "\(s)/\(run)", probe: "p\(p)", component: component, agent: agent.id, region: agent.region,
                startedAt: start.addingTimeInterval(Double(run * interval) + phase), durationMs: Double(50 + (n * 7 + p) % 200),
                outcome: failed ? .failed : .ok, error: failed ? error : nil, steps: [], control: control ? true : nil)
        }
        // History: `history` full rounds.
        for run in 0..<history {
            let batch = (0..<seriesCount).map { result(series: $0, run: run) }
            engine.ingest(batch, receivedAt: start.addingTimeInterval(Double(run * interval + interval)))
        }
        var now = start.addingTimeInterval(Double(history * interval))
        _ = engine.evaluate(now: now)
        // Which series run in which second of the interval.
        var due: [[Int]] = Array(repeating: [], count: interval)
        for s in 0..<seriesCount { due[(s % (interval * 1000)) / 1000 % interval].append(s) }
        let clock = ContinuousClock()
        var evaluations: [Double] = []
        var ingests: [Double] = []
        var resultsPerTick: [Double] = []
        for tick in 0..<ticks {
            now = now.addingTimeInterval(1)
            let second = tick % interval
            let round = history + tick / interval
            let batch = due[second].map { result(series: $0, run: round) }
            ingests.append(clock.measure { engine.ingest(batch, receivedAt: now) }.milliseconds)
            resultsPerTick.append(Double(batch.count))
            evaluations.append(clock.measure { _ = engine.evaluate(now: now) }.milliseconds)
        }
        return Run(
            p50: Stats.percentile(evaluations, 50), p99: Stats.percentile(evaluations, 99), max: evaluations.max() ?? .nan,
            ingestPerTick: Stats.median(ingests), resultsPerTick: Stats.median(resultsPerTick))
    }
}
