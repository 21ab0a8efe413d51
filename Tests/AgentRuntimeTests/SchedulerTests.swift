import CurlHTTP
import Foundation
import Logging
import ProbeEngine
import ServiceLifecycle
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

@testable import AgentRuntime

/// A probe executor for scheduler tests: each probe "runs" for a set time, and the executor
/// records how many runs of each probe were in flight at once.
final class TestExecutor: ProbeExecuting {
    struct State {
        var running: [String: Int] = [:]
        var maxRunning: [String: Int] = [:]
        var started: [String: [ContinuousClock.Instant]] = [:]
    }

    let durations: [String: Duration]
    let state = Mutex(State())

    init(durations: [String: Duration]) { self.durations = durations }

    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        state.withLock { s in
            s.running[probe.name, default: 0] += 1
            s.maxRunning[probe.name] = max(s.maxRunning[probe.name] ?? 0, s.running[probe.name]!)
            s.started[probe.name, default: []].append(ContinuousClock.now)
        }
        defer { state.withLock { $0.running[probe.name]! -= 1 } }
        let start = Date()
        let cancelled = (try? await Task.sleep(for: durations[probe.name] ?? .zero)) == nil
        return ProbeResult(
            probe: probe.name, component: probe.component, agent: context.agent, region: context.region, startedAt: start,
            durationMs: Date().timeIntervalSince(start) * 1000, outcome: cancelled ? .failed : .ok,
            error: cancelled ? ProbeError(kind: .internal, step: "-", message: "cancelled") : nil, steps: [])
    }

    var snapshot: State { state.withLock { $0 } }
}

/// A probe executor that asks for an HTTP client's loop thread, as `ProbeRunner` does, and notes
/// the thread each run and each slot's wake-up happened on (the kernel's name for it).
final class LoopThreadExecutor: ProbeExecuting {
    let client = CurlHTTPClient(threads: 2)
    let threads = Mutex<[String]>([])

    var preferredTaskExecutor: (any TaskExecutor)? { client.taskExecutor }

    func sleep(until deadline: ContinuousClock.Instant, wake: EarlyWake) async throws {
        try await client.sleep(until: deadline) { wake.armed($0) }
        note()
    }

    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        note()
        return ProbeResult(
            probe: probe.name, component: probe.component, agent: context.agent, region: context.region, startedAt: Date(),
            durationMs: 0, outcome: .ok, error: nil, steps: [])
    }

    private func note() {
        let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?"
        threads.withLock { $0.append(name.trimmingCharacters(in: .newlines)) }
    }
}

/// A probe executor that notes which task each slot's sleep and each run happened in.
final class TaskNotingExecutor: ProbeExecuting {
    let tasks = Mutex<(sleeps: [Int], runs: [Int])>(([], []))

    func sleep(until deadline: ContinuousClock.Instant, wake: EarlyWake) async throws {
        tasks.withLock { $0.sleeps.append(Self.currentTask) }
        try await Task.sleep(until: deadline, clock: ContinuousClock())
    }

    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        tasks.withLock { $0.runs.append(Self.currentTask) }
        return ProbeResult(
            probe: probe.name, component: probe.component, agent: context.agent, region: context.region, startedAt: Date(),
            durationMs: 0, outcome: .ok, error: nil, steps: [])
    }

    private static var currentTask: Int { withUnsafeCurrentTask { $0?.hashValue ?? 0 } }
}

/// A probe executor whose runs fail while `failing` says so (runs take no time).
final class SwitchableExecutor: ProbeExecuting {
    let failing = Mutex(false)

    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        let failed = failing.withLock { $0 }
        return ProbeResult(
            probe: probe.name, component: probe.component, agent: context.agent, region: context.region, startedAt: Date(),
            durationMs: 0, outcome: failed ? .failed : .ok, error: failed ? ProbeError(kind: .httpStatus, step: "get", message: "HTTP 500") : nil,
            steps: [])
    }
}

/// Results the scheduler handed over, in order.
final class RecordedResults: Sendable {
    private let results = Mutex<[ProbeResult]>([])
    var all: [ProbeResult] { results.withLock { $0 } }
    func count(_ probe: String) -> Int { all.filter { $0.probe == probe }.count }
    func append(_ result: ProbeResult) { results.withLock { $0.append(result) } }
}

func probe(_ name: String, every interval: Duration, control: Bool = false) -> ProbeDefinition {
    ProbeDefinition(name: name, component: "api", interval: interval, timeout: .seconds(30), control: control, sourceFile: "\(name).yaml")
}

@Suite("Scheduler")
struct SchedulerTests {
    let logs = CapturedLogs()

    func scheduler(_ probes: [ProbeDefinition], _ executor: TestExecutor, _ recorded: RecordedResults, agent: String = "eu-1", grace: Duration = .seconds(5), control: Set<String> = []) -> Scheduler {
        Scheduler(
            probes: probes, context: RunContext(agent: agent, region: "eu"), executor: executor, controlProbes: control,
            jitter: 0.1, shutdownGrace: grace, logger: logs.logger()
        ) { recorded.append($0) }
    }

    @Test("first-run offsets are deterministic per agent and probe, and spread agents over the interval")
    func offsetsDiffer() {
        let a = Scheduler.offsetFraction(agent: "eu-1", probe: "login")
        #expect(a == Scheduler.offsetFraction(agent: "eu-1", probe: "login"))
        #expect(a != Scheduler.offsetFraction(agent: "eu-2", probe: "login"))
        #expect(a != Scheduler.offsetFraction(agent: "eu-1", probe: "upload"))
        let fractions = (1...200).map { Scheduler.offsetFraction(agent: "agent-\($0)", probe: "login") }
        #expect(fractions.allSatisfy { $0 >= 0 && $0 < 1 })
        // Spread: every tenth of the interval gets some agents, none gets a crowd.
        let buckets = Dictionary(grouping: fractions) { Int($0 * 10) }
        #expect(buckets.count == 10)
        #expect(buckets.values.allSatisfy { $0.count < 45 })
    }

    @Test("a run longer than its interval is never overlapped; missed slots are skipped and logged")
    func noOverlap() async throws {
        let executor = TestExecutor(durations: ["slow": .milliseconds(130)])
        let recorded = RecordedResults()
        let task = Task { try await scheduler([probe("slow", every: .milliseconds(50))], executor, recorded).run() }
        defer { task.cancel() }
        try await waitUntil("4 runs", timeout: .seconds(10)) { recorded.count("slow") >= 4 }
        task.cancel()
        _ = try? await task.value
        #expect(executor.snapshot.maxRunning["slow"] == 1)
        let starts = executor.snapshot.started["slow"]!
        for (earlier, later) in zip(starts, starts.dropFirst()) {
            #expect(later - earlier >= .milliseconds(125))
        }
        let skipped = logs.messages(at: .warning, containing: "skipped the missed slots")
        #expect(!skipped.isEmpty)
        #expect(skipped.first?.metadata["probe.name"] == "slow")
    }

    @Test("a slow probe (a long batch poll) does not delay a fast one")
    func slowDoesNotDelayFast() async throws {
        let executor = TestExecutor(durations: ["batch": .seconds(20), "latency": .milliseconds(1)])
        let recorded = RecordedResults()
        let probes = [probe("batch", every: .milliseconds(100)), probe("latency", every: .milliseconds(50))]
        let task = Task { try await scheduler(probes, executor, recorded).run() }
        defer { task.cancel() }
        try await waitUntil("8 fast runs", timeout: .seconds(10)) { recorded.count("latency") >= 8 }
        #expect(executor.snapshot.running["batch"] == 1, "the slow run is still going")
        #expect(recorded.count("batch") == 0)
        task.cancel()
        _ = try? await task.value
    }

    @Test("control probes (by config name or `control: true`) are marked in their results")
    func controlMarked() async throws {
        let executor = TestExecutor(durations: [:])
        let recorded = RecordedResults()
        let probes = [probe("reach", every: .milliseconds(30)), probe("ref", every: .milliseconds(30), control: true), probe("login", every: .milliseconds(30))]
        let task = Task { try await scheduler(probes, executor, recorded, control: ["reach"]).run() }
        defer { task.cancel() }
        try await waitUntil("each probe ran") { Set(recorded.all.map(\.probe)).count == 3 }
        task.cancel()
        _ = try? await task.value
        for result in recorded.all {
            #expect(result.control == (result.probe == "login" ? nil : true))
        }
    }

    @Test("graceful shutdown: a run in flight finishes and is recorded; no new run starts")
    func shutdownLetsRunFinish() async throws {
        let executor = TestExecutor(durations: ["p": .milliseconds(400)])
        let recorded = RecordedResults()
        let group = ServiceGroup(configuration: .init(services: [scheduler([probe("p", every: .milliseconds(20))], executor, recorded)], logger: logs.logger()))
        let task = Task { try await group.run() }
        try await waitUntil("a run to start") { executor.snapshot.running["p"] == 1 }
        await group.triggerGracefulShutdown()
        try await task.value
        #expect(recorded.count("p") == 1)
        #expect(recorded.all.first?.outcome == .ok)
        #expect(executor.snapshot.started["p"]?.count == 1)
    }

    @Test("graceful shutdown: a run still going after the grace time is cancelled and records nothing")
    func shutdownCancelsAfterGrace() async throws {
        let executor = TestExecutor(durations: ["hang": .seconds(60)])
        let recorded = RecordedResults()
        let service = scheduler([probe("hang", every: .milliseconds(20))], executor, recorded, grace: .milliseconds(100))
        let group = ServiceGroup(configuration: .init(services: [service], logger: logs.logger()))
        let task = Task { try await group.run() }
        try await waitUntil("a run to start") { executor.snapshot.running["hang"] == 1 }
        let clock = ContinuousClock()
        let start = clock.now
        await group.triggerGracefulShutdown()
        try await task.value
        #expect(clock.now - start < .seconds(10))
        #expect(recorded.all.isEmpty)
        #expect(!logs.messages(containing: "cancelled by shutdown").isEmpty)
    }

    @Test("probe loops run on the executor the probe executor prefers, and sleep with its timers")
    func loopsRunOnThePreferredExecutor() async throws {
        let executor = LoopThreadExecutor()
        let recorded = RecordedResults()
        let scheduler = Scheduler(
            probes: [probe("a", every: .milliseconds(20)), probe("b", every: .milliseconds(30))],
            context: RunContext(agent: "eu-1", region: "eu"), executor: executor, jitter: 0.1, logger: logs.logger()
        ) { recorded.append($0) }
        let task = Task { try await scheduler.run() }
        try await waitUntil("a few runs of each probe") { recorded.count("a") >= 3 && recorded.count("b") >= 3 }
        task.cancel()
        _ = try? await task.value
        let threads = executor.threads.withLock { $0 }
        #expect(threads.count >= 12, "each run notes its wake-up and its run")
        #expect(Set(threads) == ["sonde.curl"], "ran on \(Set(threads))")
    }

    @Test("each run is a task of its own, not its loop's long-lived task (whose memory would stay at its deepest run's)")
    func eachRunIsATaskOfItsOwn() async throws {
        let executor = TaskNotingExecutor()
        let recorded = RecordedResults()
        let scheduler = Scheduler(
            probes: [probe("a", every: .milliseconds(20))], context: RunContext(agent: "eu-1", region: "eu"), executor: executor,
            jitter: 0, logger: logs.logger()
        ) { recorded.append($0) }
        let task = Task { try await scheduler.run() }
        try await waitUntil("a few runs") { recorded.count("a") >= 3 }
        task.cancel()
        _ = try? await task.value
        let (sleeps, runs) = executor.tasks.withLock { ($0.sleeps, $0.runs) }
        #expect(Set(sleeps).count == 1, "one loop task sleeps between runs")
        #expect(runs.count >= 3)
        #expect(Set(runs).isDisjoint(with: sleeps), "a run ran in its loop's task")
    }

    @Test("retries: after a failed or slow run, runs every retry_interval after the previous one ended, until two intervals have passed clean; none once the slot is as near")
    func retryPaceRules() {
        let t0 = ContinuousClock.now
        let ms = { (n: Int) in t0 + .milliseconds(n) }
        var pace = RetryPace(interval: .seconds(1), retryInterval: .milliseconds(250))
        #expect(pace.next(before: ms(1000)) == nil, "nothing ran yet")
        pace.record(ok: true, startedAt: t0, endedAt: ms(10))
        #expect(pace.next(before: ms(1000)) == nil, "a passing run asks for no retry")
        pace.record(ok: false, startedAt: ms(1000), endedAt: ms(1040))
        #expect(pace.next(before: ms(2000)) == ms(1290), "a retry interval after the failed run ended")
        // Passing retries keep the pace until 2 intervals after the newest failed run started.
        pace.record(ok: true, startedAt: ms(1290), endedAt: ms(1300))
        #expect(pace.next(before: ms(2000)) == ms(1550))
        pace.record(ok: true, startedAt: ms(2000), endedAt: ms(2700))
        #expect(pace.next(before: ms(3000)) == nil, "the slot comes within half a retry interval: the slot runs instead")
        pace.record(ok: true, startedAt: ms(2700), endedAt: ms(2710))
        #expect(pace.next(before: ms(4000)) == ms(2960))
        pace.record(ok: true, startedAt: ms(2960), endedAt: ms(2970))
        #expect(pace.next(before: ms(4000)) == nil, "clean for 2 intervals since the failure: regular slots only")
        // A slow (degraded) run counts as not ok, and starts the pace again.
        pace.record(ok: false, startedAt: ms(3000), endedAt: ms(3010))
        #expect(pace.next(before: ms(4000)) == ms(3260))
        // retry_interval equal to the interval: retries off.
        var off = RetryPace(interval: .seconds(1), retryInterval: .seconds(1))
        off.record(ok: false, startedAt: t0, endedAt: ms(10))
        #expect(off.next(before: ms(5000)) == nil)
        // A retry that overran a slot by more than the allowance skips it; by less, the slot runs late.
        var grid = SlotGrid(first: ms(1000), interval: .seconds(1), jitter: 0.1, now: t0)
        #expect(grid.skipPassed(now: ms(1050)) == 0)
        #expect(grid.slot == ms(1000))
        #expect(grid.skipPassed(now: ms(2200)) == 2)
        #expect(grid.slot == ms(3000))
        #expect(ProbeDefinition.defaultRetryInterval(.seconds(60)) == .seconds(15))
        #expect(ProbeDefinition.defaultRetryInterval(.milliseconds(200)) == .milliseconds(100))
        #expect(ProbeDefinition.defaultRetryInterval(.milliseconds(50)) == .milliseconds(50))
    }

    @Test("a failing probe is retried between its slots, retries marked, its slots kept; back to its interval once it passes")
    func failingProbeIsRetried() async throws {
        let executor = SwitchableExecutor()
        executor.failing.withLock { $0 = true }
        let recorded = RecordedResults()
        var definition = probe("files", every: .milliseconds(400))
        definition.retryInterval = .milliseconds(50)
        let metrics = AgentMetrics()
        var scheduler = Scheduler(
            probes: [definition], context: RunContext(agent: "eu-1", region: "eu"), executor: executor, jitter: 0, logger: logs.logger()
        ) { recorded.append($0) }
        scheduler.metrics = metrics
        let task = Task { [scheduler] in try await scheduler.run() }
        defer { task.cancel() }
        try await waitUntil("5 retries", timeout: .seconds(10)) { recorded.all.filter { $0.retry == true }.count >= 5 }
        executor.failing.withLock { $0 = false }
        let switched = recorded.all.count
        // Clean for 2 intervals (800 ms), then regular runs only: wait for 3 regular runs in a row.
        try await waitUntil("3 regular runs in a row after passing", timeout: .seconds(10)) {
            let tail = recorded.all.dropFirst(switched)
            return tail.count >= 3 && tail.suffix(3).allSatisfy { $0.retry == nil && $0.outcome == .ok }
        }
        task.cancel()
        _ = try? await task.value
        let all = recorded.all
        #expect(all.first?.retry == nil, "the first run is a regular one")
        let starts = all.map(\.startedAt.timeIntervalSince1970)
        // Retries come at the retry pace: well under the 400 ms interval apart.
        for i in 1..<all.count where all[i].retry == true {
            #expect(starts[i] - starts[i - 1] < 0.3, "retry \(i) came \(starts[i] - starts[i - 1]) s after the run before it")
        }
        // The regular runs keep the slot grid: whole intervals apart (no jitter in this test).
        let regular = zip(all, starts).filter { $0.0.retry == nil }.map(\.1)
        for (a, b) in zip(regular, regular.dropFirst()) {
            let slots = (b - a) / 0.4
            #expect(abs(slots - slots.rounded()) < 0.2 && slots.rounded() >= 1, "regular runs \(b - a) s apart")
        }
        // After the last failure, retries stop within 2 intervals (+ one retry of slack).
        let lastFailed = try #require(all.lastIndex { $0.outcome == .failed })
        let lastRetry = try #require(all.lastIndex { $0.retry == true })
        #expect(starts[lastRetry] - starts[lastFailed] <= 0.8 + 0.1)
        let retries = all.filter { $0.retry == true }.count
        #expect(metrics.render(spool: SpoolStatus(pendingResults: 0, openBatches: 0, batchedResults: 0, lastSeq: 0, droppedResults: 0, journalBytes: 0, liveBytes: 0)).contains("sonde_agent_retries_total \(retries)\n"))
    }

    @Test("a collector's confirmation request paces runs as a failure does: at once with no run yet, a retry interval after the last, until it runs out; nothing with retries off")
    func confirmationPaceRules() {
        let t0 = ContinuousClock.now
        let ms = { (n: Int) in t0 + .milliseconds(n) }
        var pace = RetryPace(interval: .seconds(1), retryInterval: .milliseconds(250))
        #expect(pace.next(before: ms(1000), confirmUntil: ms(2000), now: t0) == t0, "no run yet: at once")
        pace.record(ok: true, startedAt: t0, endedAt: ms(10))
        #expect(pace.next(before: ms(1000), confirmUntil: ms(2000), now: ms(20)) == ms(260))
        #expect(pace.next(before: ms(1000), confirmUntil: ms(200), now: ms(250)) == nil, "the request ran out")
        #expect(pace.next(before: ms(300), confirmUntil: ms(2000), now: ms(20)) == nil, "the slot comes about as soon")
        var off = RetryPace(interval: .seconds(1), retryInterval: .seconds(1))
        #expect(off.next(before: ms(5000), confirmUntil: ms(2000), now: t0) == nil)
        off.record(ok: true, startedAt: t0, endedAt: ms(10))
        #expect(off.next(before: ms(5000), confirmUntil: ms(2000), now: ms(20)) == nil)
    }

    /// A probe due in an hour runs at once when asked to confirm its component, and on at its
    /// retry pace, marked as retries; a probe of another component, or with retries off, does not.
    @Test("a confirmation request wakes a sleeping probe of that component and runs it at the retry pace; others sleep on", arguments: [false, true])
    func confirmationWakesSleepingProbes(onCurlLoop: Bool) async throws {
        let recorded = RecordedResults()
        var files = ProbeDefinition(name: "files-hourly", component: "files", interval: .seconds(3600), timeout: .seconds(5), sourceFile: "f.yaml")
        files.retryInterval = .milliseconds(100)
        var login = ProbeDefinition(name: "login-hourly", component: "login", interval: .seconds(3600), timeout: .seconds(5), sourceFile: "l.yaml")
        login.retryInterval = .milliseconds(100)
        let off = ProbeDefinition(
            name: "files-no-retries", component: "files", interval: .seconds(3600), retryInterval: .seconds(3600), timeout: .seconds(5), sourceFile: "o.yaml")
        let executor: any ProbeExecuting = onCurlLoop ? LoopThreadExecutor() : SwitchableExecutor()
        // The agent id puts every first run minutes into the hour: none is due during the test.
        for name in ["files-hourly", "login-hourly", "files-no-retries"] { try #require(Scheduler.offsetFraction(agent: "eu-1", probe: name) > 0.01) }
        let scheduler = Scheduler(
            probes: [files, login, off], context: RunContext(agent: "eu-1", region: "eu"), executor: executor, jitter: 0, logger: logs.logger()
        ) { recorded.append($0) }
        let task = Task { [scheduler] in try await scheduler.run() }
        defer { task.cancel() }
        try await waitUntil("the loops running", timeout: .seconds(10)) { !scheduler.jobsForTests.isEmpty }
        #expect(recorded.all.isEmpty, "nothing due yet")
        #expect(scheduler.confirm(components: ["files", "unknown"]) == 1, "the files probe with retries on")
        try await waitUntil("4 confirming runs of files-hourly", timeout: .seconds(10)) { recorded.count("files-hourly") >= 4 }
        task.cancel()
        _ = try? await task.value
        let runs = recorded.all
        #expect(runs.allSatisfy { $0.probe == "files-hourly" && $0.retry == true }, "\(runs.map(\.probe))")
        let starts = runs.map(\.startedAt.timeIntervalSince1970)
        for (a, b) in zip(starts, starts.dropFirst()) { #expect(b - a >= 0.09 && b - a < 1, "confirming runs \(b - a) s apart") }
    }

    @Test("confirming runs stop once the request runs out (two intervals); the probe is back on its slots")
    func confirmationRunsOut() async throws {
        let recorded = RecordedResults()
        var files = ProbeDefinition(name: "files", component: "files", interval: .milliseconds(500), timeout: .seconds(5), sourceFile: "f.yaml")
        files.retryInterval = .milliseconds(50)
        let scheduler = Scheduler(
            probes: [files], context: RunContext(agent: "eu-1", region: "eu"), executor: SwitchableExecutor(), jitter: 0, logger: logs.logger()
        ) { recorded.append($0) }
        let task = Task { [scheduler] in try await scheduler.run() }
        defer { task.cancel() }
        try await waitUntil("a first regular run", timeout: .seconds(10)) { recorded.count("files") >= 1 }
        let asked = Date()
        #expect(scheduler.confirm(components: ["files"]) == 1)
        try await waitUntil("3 regular runs in a row after confirming runs", timeout: .seconds(10)) {
            let all = recorded.all
            return all.contains { $0.retry == true } && all.count >= 3 && all.suffix(3).allSatisfy { $0.retry == nil }
        }
        task.cancel()
        _ = try? await task.value
        let confirming = recorded.all.filter { $0.retry == true }
        #expect(confirming.count >= 5, "at the 50 ms pace for 1 s: \(confirming.count) runs")
        let last = try #require(confirming.last).startedAt.timeIntervalSince(asked)
        #expect(last <= 1.0 + 0.1, "the last confirming run started \(last) s after the request (two 500 ms intervals)")
    }

    /// An agent alone in its region has only its control probe to tell its own broken network
    /// from the region's outage, and the collector holds back a failure nobody shares until the
    /// control has passed a run begun after it: the control runs at once on a failure, not at
    /// its slot up to an interval later (found by the CLI walk-through, F2).
    @Test("another probe's failed run runs the control probe at once (marked a retry), at most once per its retry_interval; a passing run does not", arguments: [true, false])
    func aFailedRunChecksTheNetwork(failing: Bool) async throws {
        let recorded = RecordedResults()
        let executor = SwitchableExecutor()
        executor.failing.withLock { $0 = failing }
        let files = ProbeDefinition(name: "files", component: "files", interval: .milliseconds(200), retryInterval: .milliseconds(200), timeout: .seconds(5), sourceFile: "f.yaml")
        let reach = ProbeDefinition(name: "reach", component: "reference", interval: .seconds(3600), timeout: .seconds(5), control: true, sourceFile: "r.yaml")
        try #require(Scheduler.offsetFraction(agent: "eu-1", probe: "reach") > 0.01, "the control's own slot is not due in the test")
        let scheduler = Scheduler(
            probes: [files, reach], context: RunContext(agent: "eu-1", region: "eu"), executor: executor, jitter: 0, logger: logs.logger()
        ) { recorded.append($0) }
        let task = Task { [scheduler] in try await scheduler.run() }
        defer { task.cancel() }
        try await waitUntil("6 runs of files", timeout: .seconds(10)) { recorded.count("files") >= 6 }
        if failing { try await waitUntil("a control run", timeout: .seconds(10)) { recorded.count("reach") >= 1 } }
        task.cancel()
        _ = try? await task.value
        let checks = recorded.all.filter { $0.probe == "reach" }
        #expect(checks.count == (failing ? 1 : 0), "\(recorded.all.map { "\($0.probe) \($0.outcome)" })")
        #expect(checks.allSatisfy { $0.control == true && $0.retry == true })
        if let check = checks.first, let firstFailure = recorded.all.first(where: { $0.probe == "files" }) {
            #expect(check.startedAt.timeIntervalSince(firstFailure.startedAt) < 1, "the check began \(check.startedAt.timeIntervalSince(firstFailure.startedAt)) s after the failure")
        }
    }

    @Test("a passing probe is never retried")
    func passingProbeNotRetried() async throws {
        let executor = SwitchableExecutor()
        let recorded = RecordedResults()
        var definition = probe("files", every: .milliseconds(100))
        definition.retryInterval = .milliseconds(20)
        let task = Task {
            try await Scheduler(
                probes: [definition], context: RunContext(agent: "eu-1", region: "eu"), executor: executor, logger: logs.logger()
            ) { recorded.append($0) }.run()
        }
        defer { task.cancel() }
        try await waitUntil("6 runs", timeout: .seconds(10)) { recorded.count("files") >= 6 }
        task.cancel()
        _ = try? await task.value
        #expect(recorded.all.allSatisfy { $0.retry == nil })
    }

    @Test("a probe's slot grid: jitter within its bounds and never before now; overrun slots skipped and counted; a start after a reload waits for the next slot")
    func slotGridRules() {
        let t0 = ContinuousClock.now
        let second = Duration.seconds(1)
        var grid = SlotGrid(first: t0, interval: second, jitter: 0.1, now: t0)
        for _ in 0..<200 {
            let start = grid.nextStart(now: t0 - second)
            #expect(start >= t0 - .milliseconds(100) && start <= t0 + .milliseconds(100))
        }
        #expect(grid.nextStart(now: t0 + .milliseconds(500)) == t0 + .milliseconds(500), "never before now")
        #expect(grid.advance(now: t0 + .milliseconds(300)) == 0)
        #expect(grid.slot == t0 + second)
        // A run that ended 3.5 intervals after its slot skips the 3 slots it overran.
        #expect(grid.advance(now: t0 + .milliseconds(4500)) == 3)
        #expect(grid.slot == t0 + .seconds(5))
        // Past by less than the jitter allowance: still this slot (late); past by more: the next.
        #expect(SlotGrid(first: t0, interval: second, jitter: 0.1, now: t0 + .milliseconds(50)).slot == t0)
        #expect(SlotGrid(first: t0, interval: second, jitter: 0.1, now: t0 + .milliseconds(2300)).slot == t0 + .seconds(3))
        var exact = SlotGrid(first: t0, interval: second, jitter: 0, now: t0)
        #expect(exact.nextStart(now: t0 - second) == t0, "no jitter: the slot itself")
    }

    @Test("the scheduler's service name is short and shows no secret, however many probes")
    func serviceNameIsShortAndSecretFree() {
        let probes = (0..<1000).map { probe("p\($0)", every: .seconds(30)) }
        let context = RunContext(agent: "eu-1", region: "eu", variables: ["password": "hunter2-secret"], secretNames: ["password"])
        let scheduler = Scheduler(probes: probes, context: context, executor: TestExecutor(durations: [:]), logger: logs.logger()) { _ in }
        // ServiceLifecycle names (and logs) every service by this.
        let name = ServiceGroupConfiguration.ServiceConfiguration(service: scheduler).serviceName
        #expect(name == "Scheduler(1000 probes, agent eu-1)")
        #expect(!"\(context)".contains("hunter2"))
        #expect("\(context)".contains("password: <redacted>"))
    }
}
