// sonde-agent-bench: measurements of the agent's own code, driven by scripts/bench-agent.sh, which
// runs each several times and writes the medians to BENCHMARKS-agent.md. Every subcommand prints
// one JSON object per measurement on stdout; nothing here passes or fails.
//
//   timing  Sonde's ttfb/total against an injected server delay and against curl on the same URL
//   scale   probe runs per second one agent's scheduler sustains on schedule, and its memory

import AgentRuntime
import ArgumentParser
import CurlHTTP
import Foundation
import Logging
import ProbeEngine
import ServiceLifecycle
import SondeCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

@main
struct SondeAgentBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sonde-agent-bench",
        abstract: "Benchmarks of the Sonde agent (numbers only; see scripts/bench-agent.sh).",
        subcommands: [Timing.self, Scale.self])
}

// MARK: - Helpers

/// A probe file with one GET of `url`, loaded through the real loader.
func singleGetProbe(name: String, url: String, interval: String, in directory: String) throws -> ProbeDefinition {
    let path = directory + "/\(name).yaml"
    try """
        name: \(name)
        component: api
        interval: \(interval)
        timeout: 10s
        steps:
          - name: get
            request: {method: GET, url: "\(url)"}
            assert: {status: 200}
        """.write(toFile: path, atomically: true, encoding: .utf8)
    guard let probe = try ProbeLoader.load(paths: [path], variables: []).first else { throw ValidationError("no probe in \(path)") }
    return probe
}

func temporaryDirectory(_ prefix: String) throws -> String {
    let path = NSTemporaryDirectory() + "\(prefix)-\(UUID().uuidString.prefix(8))"
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// A line of /proc/self/status in KiB (VmRSS, VmHWM).
func procStatusKiB(_ field: String) -> Int {
    guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return -1 }
    for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
        return Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? -1
    }
    return -1
}

/// User + system CPU seconds of this process so far.
func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec + usage.ru_stime.tv_sec) + Double(usage.ru_utime.tv_usec + usage.ru_stime.tv_usec) / 1e6
}

func printJSON(_ object: [String: Any]) {
    let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
    // One write per line, unbuffered: the script reads lines as they come.
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}

func percentile(_ values: [Double], _ p: Double) -> Double {
    guard !values.isEmpty else { return .nan }
    let sorted = values.sorted()
    let rank = Int((p * Double(sorted.count - 1)).rounded())
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

// MARK: - timing

struct Timing: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "ttfb and total of Sonde vs curl vs the injected delay, for each delay.",
        discussion: "The server at --base must answer GET /delay?ms=N after N ms (scripts/bench/delay_server.py).")

    @Option(help: "Base URL of the delaying server.") var base: String
    @Option(help: "Injected delays in ms, comma separated.") var delays: String = "0,50,200,1000"
    @Option(help: "Runs per delay and client.") var runs: Int = 30
    @Option(help: "The curl executable.") var curl: String = "/usr/bin/curl"

    func run() async throws {
        var logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
        logger.logLevel = .critical
        let runner = ProbeRunner(client: .shared, logger: logger)
        let directory = try temporaryDirectory("sonde-bench-timing")
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let context = RunContext(agent: "bench", region: "local")
        for delay in delays.split(separator: ",").compactMap({ Int($0) }) {
            let url = "\(base)/delay?ms=\(delay)"
            let probe = try singleGetProbe(name: "timing-\(delay)", url: url, interval: "1s", in: directory)
            var sonde: [(ttfb: Double, total: Double)] = []
            var curled: [(ttfb: Double, total: Double)] = []
            // Alternate the two clients so drift on the machine hits both alike.
            for _ in 0..<runs {
                let result = await runner.run(probe, context: context)
                if let step = result.steps.first, step.ok { sonde.append((step.timings.ttfb, step.timings.total)) }
                if let c = try runCurl(url) { curled.append(c) }
            }
            let n = min(sonde.count, curled.count)
            let vsCurlTTFB = (0..<n).map { abs(sonde[$0].ttfb - curled[$0].ttfb) }
            let vsCurlTotal = (0..<n).map { abs(sonde[$0].total - curled[$0].total) }
            let vsDelay = sonde.map { abs($0.ttfb - Double(delay)) }
            let curlVsDelay = curled.map { abs($0.ttfb - Double(delay)) }
            printJSON([
                "bench": "timing", "delay_ms": delay, "runs": n,
                "sonde_ttfb_median": percentile(sonde.map(\.ttfb), 0.5), "sonde_total_median": percentile(sonde.map(\.total), 0.5),
                "curl_ttfb_median": percentile(curled.map(\.ttfb), 0.5), "curl_total_median": percentile(curled.map(\.total), 0.5),
                "abs_err_vs_curl_ttfb_median": percentile(vsCurlTTFB, 0.5), "abs_err_vs_curl_ttfb_p99": percentile(vsCurlTTFB, 0.99),
                "abs_err_vs_curl_total_median": percentile(vsCurlTotal, 0.5), "abs_err_vs_curl_total_p99": percentile(vsCurlTotal, 0.99),
                "abs_err_vs_delay_ttfb_median": percentile(vsDelay, 0.5), "abs_err_vs_delay_ttfb_p99": percentile(vsDelay, 0.99),
                "curl_abs_err_vs_delay_ttfb_median": percentile(curlVsDelay, 0.5),
            ])
        }
    }

    /// curl's own phases for one GET, in ms: ttfb as Sonde defines it (connection ready → first
    /// byte = starttransfer − pretransfer) and the total.
    func runCurl(_ url: String) throws -> (ttfb: Double, total: Double)? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: curl)
        process.arguments = ["-s", "-o", "/dev/null", "-w", "%{time_pretransfer} %{time_starttransfer} %{time_total}", url]
        let pipe = Pipe()
        process.standardOutput = pipe
        try process.run()
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let parts = String(decoding: data, as: UTF8.self).split(separator: " ").compactMap { Double($0) }
        guard process.terminationStatus == 0, parts.count == 3 else { return nil }
        return ((parts[1] - parts[0]) * 1000, parts[2] * 1000)
    }
}

// MARK: - scale

/// Runs the real probe runner and notes when each run really started.
final class StartRecorder: ProbeExecuting {
    let runner: ProbeRunner
    let starts = Mutex<[String: [ContinuousClock.Instant]]>([:])

    init(runner: ProbeRunner) { self.runner = runner }

    // As the agent runs: loops on the runner's HTTP client loop thread, sleeping on its timers.
    var preferredTaskExecutor: (any TaskExecutor)? { runner.preferredTaskExecutor }

    func sleep(until deadline: ContinuousClock.Instant, wake: EarlyWake) async throws {
        try await runner.sleep(until: deadline, wake: wake)
    }

    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        let now = ContinuousClock.now
        starts.withLock { $0[probe.name, default: []].append(now) }
        return await runner.run(probe, context: context)
    }
}

struct Scale: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Steps up the number of probes (each a GET of --target every --interval) through the agent's real scheduler, runner and spool; prints per step the share of runs that started on schedule and the memory.")

    @Option(help: "URL every probe GETs (a small static file).") var target: String
    @Option(help: "Probe counts to try, comma separated.") var steps: String = "25,50,100,200,400,800"
    @Option(help: "Interval of every probe, seconds.") var interval: Double = 1
    @Option(help: "How long each step runs, seconds.") var seconds: Double = 10
    @Option(help: "A run starting later than this after its slot is late, ms.") var toleranceMs: Double = 100

    func run() async throws {
        var logger = Logger(label: "bench") { _ in SwiftLogNoOpLogHandler() }
        logger.logLevel = .critical
        for count in steps.split(separator: ",").compactMap({ Int($0) }) {
            let directory = try temporaryDirectory("sonde-bench-scale")
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let intervalText = "\(Int(interval * 1000))ms"
            var probes: [ProbeDefinition] = []
            try FileManager.default.createDirectory(atPath: directory + "/probes", withIntermediateDirectories: true)
            for i in 0..<count {
                probes.append(try singleGetProbe(name: "p\(i)", url: target, interval: intervalText, in: directory + "/probes"))
            }
            let spool = try Spool(directory: directory + "/spool", logger: logger)
            let recorder = StartRecorder(runner: ProbeRunner(client: .shared, logger: logger))
            let context = RunContext(agent: "bench", region: "local")
            // Recorded as the agent records (AgentSetup): queued for the journal thread.
            let journal = JournalWriter(spool: spool)
            let scheduler = Scheduler(probes: probes, context: context, executor: recorder, jitter: 0, shutdownGrace: .seconds(2), logger: logger) { result in
                journal.submit(result)
            }
            // The spool drains as an acknowledging collector would, so it stays small.
            let clock = ContinuousClock()
            let cpuBefore = cpuSeconds()
            let t0 = clock.now
            let group = ServiceGroup(services: [scheduler], gracefulShutdownSignals: [], logger: logger)
            let task = Task { try await group.run() }
            let drain = Task {
                while !Task.isCancelled {
                    _ = try? await journal.perform { spool throws(SpoolError) in
                        while let batch = try spool.nextBatch(maxResults: 1000) { try spool.acknowledge(batch.id) }
                    }
                    try? await Task.sleep(for: .milliseconds(200))
                }
            }
            try await Task.sleep(for: .seconds(seconds))
            let rss = procStatusKiB("VmRSS")
            await group.triggerGracefulShutdown()
            drain.cancel()
            _ = await task.result
            _ = await drain.result
            let elapsed = (clock.now - t0).seconds
            let cpu = cpuSeconds() - cpuBefore
            spool.close()

            // Slots are t0 + offset + k × interval (jitter 0); a slot counts as kept when a run
            // started within the tolerance after it. Slots in the last second are not judged.
            let starts = recorder.starts.withLock { $0 }
            let step = Duration.seconds(interval)
            let tolerance = Duration.milliseconds(Int(toleranceMs))
            let judgedUntil = t0 + .seconds(seconds - 1)
            var expected = 0
            var onTime = 0
            var lateness: [Double] = []
            for probe in probes {
                let first = t0 + step * Scheduler.offsetFraction(agent: context.agent, probe: probe.name)
                let runs = starts[probe.name] ?? []
                var slot = first
                while slot <= judgedUntil {
                    expected += 1
                    if let start = runs.first(where: { $0 >= slot - .milliseconds(5) && $0 < slot + step }) {
                        let late = max(0, (start - slot).seconds * 1000)
                        lateness.append(late)
                        if start - slot <= tolerance { onTime += 1 }
                    }
                    slot = slot + step
                }
            }
            let runsTotal = starts.values.reduce(0) { $0 + $1.count }
            printJSON([
                "bench": "scale", "probes": count, "interval_s": interval, "offered_rate": Double(count) / interval,
                "runs": runsTotal, "achieved_rate": Double(runsTotal) / elapsed, "slots": expected, "on_time": onTime,
                "on_time_ratio": expected == 0 ? 0 : Double(onTime) / Double(expected),
                "lateness_p50_ms": percentile(lateness, 0.5), "lateness_p99_ms": percentile(lateness, 0.99),
                "cpu_s": cpu, "cpu_per_run_ms": runsTotal == 0 ? 0 : cpu / Double(runsTotal) * 1000,
                "rss_kib": rss, "hwm_kib": procStatusKiB("VmHWM"),
            ])
        }
    }
}

extension Duration {
    var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
