import FoundationEssentials
import Logging
import ProbeEngine
import ServiceLifecycle
import SondeCore
import Synchronization

/// Runs every probe at its interval, each in its own loop (so a batch job that polls for minutes
/// never delays a 30-second latency probe), and hands each result to `record` (the spool).
///
/// - First run: after a per-agent deterministic offset within the interval (a hash of agent id and
///   probe name), so a fleet restarted together does not hit the platform in one burst.
/// - Each run: its slot ± `jitter` × interval.
/// - Never two runs of one probe at once: a run longer than the interval skips the slots it
///   overran (logged), and the next run takes the next free slot.
/// - Graceful shutdown: no new runs; runs in flight get `shutdownGrace` to finish, then are
///   cancelled. A cancelled run records nothing (half a run is not evidence about the platform).
public struct Scheduler: Service {
    public var probes: [ProbeDefinition]
    public var context: RunContext
    public var executor: any ProbeExecuting
    /// Probe names that are control probes besides those marked `control: true`.
    public var controlProbes: Set<String>
    public var jitter: Double
    public var shutdownGrace: Duration
    public var record: @Sendable (ProbeResult) async -> Void
    public var logger: Logger
    /// Run counts and start lateness for `/metrics`; nil (nothing recorded) when it is off.
    public var metrics: AgentMetrics?
    /// New probe sets (SIGHUP) for the running scheduler: ``reload(_:)``.
    private let reloads = ProbeSetReloads()
    /// The running loops' jobs, for ``confirm(components:)``.
    private let jobs = LiveJobs()

    public init(
        probes: [ProbeDefinition], context: RunContext, executor: any ProbeExecuting, controlProbes: Set<String> = [],
        jitter: Double = 0.1, shutdownGrace: Duration = .seconds(5), logger: Logger,
        record: @escaping @Sendable (ProbeResult) async -> Void
    ) {
        self.probes = probes
        self.context = context
        self.executor = executor
        self.controlProbes = controlProbes
        self.jitter = jitter
        self.shutdownGrace = shutdownGrace
        self.logger = logger
        self.record = record
    }

    /// The probes, variables and secrets a running scheduler switches to (a config reload).
    public struct ProbeSet: Sendable {
        public var probes: [ProbeDefinition]
        public var context: RunContext
        public var controlProbes: Set<String>

        public init(probes: [ProbeDefinition], context: RunContext, controlProbes: Set<String>) {
            self.probes = probes
            self.context = context
            self.controlProbes = controlProbes
        }
    }

    /// Switches the running scheduler to `set`. Every probe keeps the agent's slot grid (no burst
    /// of runs on reload). A run in flight finishes under the old definition and its result is
    /// recorded; the probe's next run (if it is still in the set) starts only after it, at its
    /// next slot. Probes no longer in the set stop after their run in flight.
    public func reload(_ set: ProbeSet) { reloads.send(set) }

    /// The running loops' jobs (tests wait for the loops to start).
    var jobsForTests: [ProbeJob] { jobs.all }

    /// The collector asks to confirm `components` (`PushAck.confirmComponents`): every probe
    /// that exercises one of them (its own component or a step's) runs at its retry pace for
    /// two of its intervals from now, as after a failure of its own. Returns how many probes.
    @discardableResult
    public func confirm(components: [String]) -> Int {
        guard !components.isEmpty else { return 0 }
        let asked = Set(components)
        let now = ContinuousClock.now
        var count = 0
        for job in jobs.all where !job.components.isDisjoint(with: asked) && job.confirm(now: now) { count += 1 }
        return count
    }

    public func run() async throws {
        logger.info("scheduler started", metadata: ["agent.id": "\(context.agent)", "probes.count": "\(probes.count)"])
        let runs = RunsInFlight()
        // One origin for every loop's slots, across reloads: a loop whose task starts late
        // (thousands start at once, or a reload) keeps the agent's schedule instead of shifting.
        let origin = ContinuousClock.now
        var loops: [String: ProbeLoop] = [:]
        var retired: [Task<Void, Never>] = []
        func start(_ set: ProbeSet) {
            let previous = loops
            loops = [:]
            // A loop asleep until its slot is cancelled at once; one mid-run finishes and records.
            for loop in previous.values where loop.control.retire() { loop.task.cancel() }
            retired += previous.values.map(\.task)
            let loopExecutor = executor.preferredTaskExecutor
            var started: [ProbeJob] = []
            for probe in set.probes {
                let control = LoopControl()
                let before = previous[probe.name]?.task
                let job = ProbeJob(
                    probe: probe, context: set.context, isControl: probe.control || set.controlProbes.contains(probe.name),
                    executor: executor, record: record, metrics: metrics, jitter: jitter, logger: logger, peers: jobs)
                let task = Task(executorPreference: loopExecutor) {
                    await before?.value  // never two runs of one probe at once, even across a reload
                    await job.loop(from: origin, runs: runs, control: control)
                }
                loops[probe.name] = ProbeLoop(task: task, control: control)
                started.append(job)
            }
            jobs.replace(with: started)
        }
        start(ProbeSet(probes: probes, context: context, controlProbes: controlProbes))
        // Graceful shutdown (or cancellation) ends the stream of reloads.
        let shutdown = ShutdownFlag()
        await withTaskCancellationHandler {
            await withGracefulShutdownHandler {
                for await set in reloads.stream {
                    start(set)
                    logger.info("probes reloaded", metadata: ["probes.count": "\(set.probes.count)"])
                }
            } onGracefulShutdown: {
                shutdown.set()
                reloads.finish()
            }
        } onCancel: {
            reloads.finish()
        }
        // No new runs; runs in flight get the grace time, then every loop is cancelled (which
        // also ends the ones asleep until their slot).
        runs.stop()
        if shutdown.isSet { await runs.waitUntilIdle(atMost: shutdownGrace) }
        let all = retired + loops.values.map(\.task)
        for task in all { task.cancel() }
        for task in all { await task.value }
        logger.info("scheduler stopped")
    }

    /// Where in its interval this agent runs `probe` first: a fraction in [0, 1) from a stable
    /// hash (FNV-1a, not Swift's per-process seeded `Hasher`) of agent id and probe name.
    public static func offsetFraction(agent: String, probe: String) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in "\(agent)\u{0}\(probe)".utf8 {
            hash ^= UInt64(byte)
            hash = hash &* 0x0000_0100_0000_01b3
        }
        // Mix the high bits down: FNV's low bits vary little for similar short names.
        hash ^= hash >> 29
        hash = hash &* 0xbf58_476d_1ce4_e5b9
        hash ^= hash >> 32
        return Double(hash >> 11) / Double(UInt64(1) << 53)
    }
}

/// One probe's loop and everything its runs need, in one reference made once per loop. A loop's
/// task lives as long as the agent, asleep between runs, and keeps its deepest frames' task
/// allocator memory all that time: its frame now holds this reference instead of copies of the
/// probe, its context and the whole scheduler, no `async let` storage (see `loop`) and no log
/// line's temporaries, and fits in its task's first allocator slab (it was 2.7 KiB on top):
/// 4,000 configured probes take 19 MiB less anonymous memory (BENCHMARKS-agent.md, fifteenth session).
final class ProbeJob: Sendable {
    let probe: ProbeDefinition
    let context: RunContext
    let isControl: Bool
    let executor: any ProbeExecuting
    let record: @Sendable (ProbeResult) async -> Void
    let metrics: AgentMetrics?
    let jitter: Double
    /// The scheduler's, with the probe's name.
    let logger: Logger
    /// Ends the loop's sleep when the collector asks to confirm one of the probe's components.
    let wake = EarlyWake()
    /// `probe.components`, worked out once.
    let components: Set<String>
    /// The scheduler's jobs: a failed run asks their control probes to check the network now.
    let peers: LiveJobs?
    /// When a control probe's latest run began (nil before its first), for ``checkNetwork(after:)``.
    private let lastBegan = Mutex<ContinuousClock.Instant?>(nil)

    init(
        probe: ProbeDefinition, context: RunContext, isControl: Bool, executor: any ProbeExecuting,
        record: @escaping @Sendable (ProbeResult) async -> Void, metrics: AgentMetrics?, jitter: Double, logger: Logger,
        peers: LiveJobs? = nil
    ) {
        self.probe = probe
        self.context = context
        self.isControl = isControl
        self.executor = executor
        self.record = record
        self.metrics = metrics
        self.jitter = jitter
        components = probe.components
        self.peers = isControl ? nil : peers
        var logger = logger
        logger[metadataKey: "probe.name"] = "\(probe.name)"
        self.logger = logger
    }

    // Each loop sleeps and runs in its own task: no task group per run and no child task per
    // sleep to watch for shutdown (those were several thread wake-ups per run); `run()` handles
    // shutdown for all loops at once.
    func loop(from origin: ContinuousClock.Instant, runs: RunsInFlight, control: LoopControl = LoopControl()) async {
        var slots = SlotGrid(
            first: origin + probe.interval * Scheduler.offsetFraction(agent: context.agent, probe: probe.name), interval: probe.interval, jitter: jitter)
        var retries = RetryPace(interval: probe.interval, retryInterval: probe.retryInterval)
        logScheduled(slots)
        var slotStart = slots.nextStart(now: .now)
        while !Task.isCancelled {
            // A retry between the regular slots, unless the next slot comes about as soon.
            let retryAt = retries.next(before: slotStart, confirmUntil: wake.confirmUntil, now: .now)
            let start = retryAt.map { max($0, .now) } ?? slotStart
            // Cancelled at shutdown: no new run starts after SIGTERM (nor after a reload retired it).
            let slept = (try? await executor.sleep(until: start, wake: wake)) != nil
            wake.slept()
            guard slept else { break }
            // Woken early by a confirmation request: plan the next run again; by a network check
            // (another probe failed): run now.
            let check = ContinuousClock.now < start && wake.takeCheck()
            if ContinuousClock.now < start && !check { continue }
            guard control.beginRun() else { break }
            // A control notes when it really began (a check runs before its planned start); any
            // other run's planned start stands for its beginning, sparing a clock read per run.
            let began = isControl ? ContinuousClock.now : start
            if isControl { lastBegan.withLock { $0 = began } }
            let lateness = metrics == nil ? .zero : ContinuousClock.now - start
            guard runs.begin() else {
                _ = control.endRun()
                break
            }
            // The run and its recording happen in a task of their own (same executor, cancelled
            // with the loop): a task keeps the allocator slabs its deepest frames needed until it
            // ends, so a loop that ran the probe itself held ≈ 30 KiB per configured probe for the
            // agent's life (500 probes: 15 MiB). The run's task gives them back after each run.
            // Not `async let`: its storage (room for the child task) sits in the loop's frame for
            // the loop's whole life.
            let isRetry = retryAt != nil || check
            let run = Task(executorPreference: executor.preferredTaskExecutor) {
                await self.runAndRecord(lateness: lateness, runs: runs, retry: isRetry)
            }
            let ran = await withTaskCancellationHandler { await run.value } onCancel: { run.cancel() }
            guard let ran else {
                _ = control.endRun()
                logCancelled()
                break
            }
            // The run ends once its result is recorded: a reload never cancels one before that.
            if control.endRun() { break }  // a reload replaced or removed this probe
            retries.record(ok: ran.ok, startedAt: start, endedAt: .now)
            if ran.failed, let peers { for job in peers.controls { job.checkNetwork(after: began) } }
            if isRetry {
                _ = slots.skipPassed(now: .now)  // a retry that ran over a slot takes its place
            } else {
                let skipped = slots.advance(now: .now)
                if skipped > 0 { logSkipped(skipped, durationMs: ran.durationMs) }
            }
            slotStart = slots.nextStart(now: .now)
        }
    }

    // The loop's log lines, out of line: what a line builds (metadata, interpolations) then lives
    // on the thread's stack while it is written, not in the loop's frame for the agent's life.
    @inline(never)
    private func logScheduled(_ slots: SlotGrid) {
        let now = ContinuousClock.now
        logger.debug(
            "probe scheduled",
            metadata: ["probe.first_in_ms": "\(Int((slots.slot - now).seconds * 1000))", "probe.interval_ms": "\(Int(slots.interval.seconds * 1000))"])
    }

    @inline(never)
    private func logCancelled() { logger.info("probe run cancelled by shutdown; nothing recorded") }

    @inline(never)
    private func logSkipped(_ skipped: Int, durationMs: Double) {
        logger.warning(
            "probe run took longer than its interval; skipped the missed slots",
            metadata: ["probe.skipped": "\(skipped)", "probe.duration_ms": "\(Int(durationMs))"])
    }

    /// One run, its result recorded: its duration in ms and whether it passed, or nil when it
    /// was cancelled (shutdown grace over, or the service cancelled): then it records nothing,
    /// since half a run is not evidence about the platform.
    func runAndRecord(lateness: Duration, runs: RunsInFlight, retry: Bool = false) async -> RunEnd? {
        var result = await executor.run(probe, context: context)
        let cancelled = Task.isCancelled
        runs.end()
        if cancelled { return nil }
        if isControl { result.control = true }
        if retry { result.retry = true }
        metrics?.recordRun(result.outcome, lateness: lateness, retry: retry)
        await record(result)
        return RunEnd(durationMs: result.durationMs, ok: result.outcome == .ok, failed: result.outcome == .failed)
    }
}

extension ProbeJob {
    /// Another probe's run that began at `failedRunBegan` failed: this control probe runs now,
    /// unless its latest run began after that one, or less than its `retry_interval` ago. The
    /// collector holds back a failure nobody else shares from an agent alone in its region until
    /// its control has passed a run begun after the failure (docs/collector.md, "Local"): checked
    /// now, that takes a second or two instead of up to the control's interval, and the
    /// agent's own broken network is known before its failures count.
    func checkNetwork(after failedRunBegan: ContinuousClock.Instant, now: ContinuousClock.Instant = .now) {
        let due = lastBegan.withLock { last in last.map { $0 < failedRunBegan && now - $0 >= probe.retryInterval } ?? true }
        if due { wake.checkNow() }
    }

    /// The collector asks to confirm one of this probe's components: run at the retry pace for
    /// two intervals from now (a sleeping loop wakes to plan its next run). False when its
    /// retries are off (`retry_interval` equal to `interval`): then it confirms nothing either.
    func confirm(now: ContinuousClock.Instant = .now) -> Bool {
        guard probe.retryInterval < probe.interval else { return false }
        wake.confirm(until: now + probe.interval * 2)
        return true
    }
}

/// What the loop needs from a finished run.
struct RunEnd: Sendable {
    var durationMs: Double
    var ok: Bool
    var failed: Bool
}

/// When a probe runs between its slots: after a failed or slow run, `retryInterval` after the
/// previous run ended (a long journey is not run back to back), until it has passed for two
/// whole intervals since its newest failed or slow run; likewise until a collector's
/// confirmation request runs out (`ProbeJob.confirm`). Retries are extra runs on top of the
/// slot grid, which stays as it was.
struct RetryPace {
    let interval: Duration
    let retryInterval: Duration
    private var lastEnd: ContinuousClock.Instant?
    private var until: ContinuousClock.Instant?

    init(interval: Duration, retryInterval: Duration) {
        self.interval = interval
        self.retryInterval = retryInterval
    }

    /// Notes a finished run.
    mutating func record(ok: Bool, startedAt: ContinuousClock.Instant, endedAt: ContinuousClock.Instant) {
        lastEnd = endedAt
        if !ok { until = startedAt + interval * 2 }
    }

    /// The next retry's start, or nil when none is due before the slot at `slotStart` (one due
    /// within half a retry interval of it waits for the slot instead). `confirmUntil`: the end of
    /// a collector's confirmation request, which paces runs as a failure does (at once when no
    /// run has ended yet).
    func next(
        before slotStart: ContinuousClock.Instant, confirmUntil: ContinuousClock.Instant? = nil, now: ContinuousClock.Instant = .now
    ) -> ContinuousClock.Instant? {
        guard retryInterval < interval else { return nil }
        var end = until
        var confirming = false
        if let confirmUntil, confirmUntil > now {
            confirming = true
            end = max(end ?? confirmUntil, confirmUntil)
        }
        guard let end, let at = lastEnd.map({ $0 + retryInterval }) ?? (confirming ? now : nil) else { return nil }
        guard at < end, at + retryInterval / 2 < slotStart else { return nil }
        return at
    }
}

/// A probe's slots: one every interval from its first, each run at its slot ± jitter × interval.
struct SlotGrid {
    private(set) var slot: ContinuousClock.Instant
    let interval: Duration
    let jitter: Double
    /// Jitter needs spread, not secrecy: the system generator costs a getrandom call per run.
    private var random = SplitMix64(seed: UInt64.random(in: .min ... .max))

    init(first: ContinuousClock.Instant, interval: Duration, jitter: Double, now: ContinuousClock.Instant = .now) {
        self.interval = interval
        self.jitter = jitter
        slot = first
        // After a reload the grid's first slots are past: start at the next one, not at once (a
        // slot passed by less than the allowance, as at start, still runs now).
        if now - slot > allowance { slot = slot + interval * ((now - slot) / interval).rounded(.up) }
    }

    /// How late a slot may still run (just late) instead of being skipped.
    private var allowance: Duration { interval * max(jitter, 0.05) }

    /// When the run of the current slot starts: its slot moved by the jitter, never before `now`.
    mutating func nextStart(now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        let spread = jitter > 0 ? Double.random(in: -jitter...jitter, using: &random) : 0
        return max(slot + interval * spread, now)
    }

    /// After a retry: slots it overran by more than the allowance are skipped (how many is
    /// returned); the current slot, passed by less, still runs (just late).
    mutating func skipPassed(now: ContinuousClock.Instant) -> Int {
        var skipped = 0
        while now - slot > allowance {
            slot = slot + interval
            skipped += 1
        }
        return skipped
    }

    /// After a run: the next slot. Slots the run overran are skipped, not queued (how many is
    /// returned); a slot passed by less than the allowance still runs (just late).
    mutating func advance(now: ContinuousClock.Instant) -> Int {
        slot = slot + interval
        return skipPassed(now: now)
    }
}

/// How many probe runs are in flight, and whether new ones may start. At shutdown `run()` stops
/// new runs and waits (up to the grace time) for this to reach zero.
final class RunsInFlight: Sendable {
    private struct State {
        var running = 0
        var stopped = false
        var idleWaiter: CheckedContinuation<Void, Never>?
        /// The wait is over (the grace time ran out): a waiter installed late returns at once.
        var waitAbandoned = false
    }
    private let state = Mutex(State())

    /// Counts a run in; false once stopped (the loop then ends).
    func begin() -> Bool {
        state.withLock { s in
            guard !s.stopped else { return false }
            s.running += 1
            return true
        }
    }

    func end() {
        let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
            s.running -= 1
            guard s.running == 0 else { return nil }
            defer { s.idleWaiter = nil }
            return s.idleWaiter
        }
        waiter?.resume()
    }

    func stop() { state.withLock { $0.stopped = true } }

    /// Returns when no run is in flight, or after `limit`, whichever comes first.
    func waitUntilIdle(atMost limit: Duration) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                    let idle = self.state.withLock { s -> Bool in
                        if s.running == 0 || s.waitAbandoned { return true }
                        s.idleWaiter = continuation
                        return false
                    }
                    if idle { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: limit) }
            await group.next()
            group.cancelAll()
            // The idle waiter ignores cancellation: release it so the group can end.
            let waiter = state.withLock { s -> CheckedContinuation<Void, Never>? in
                s.waitAbandoned = true
                defer { s.idleWaiter = nil }
                return s.idleWaiter
            }
            waiter?.resume()
        }
    }
}

// ServiceLifecycle names each service by `"\(service)"` (and logs the names at debug level). For a
// struct that is a reflection dump of every field: here every probe script and the run context
// with its secret values, built at every start (≈ 70 µs per probe) and written to debug logs.
extension Scheduler: CustomStringConvertible {
    public var description: String { "Scheduler(\(probes.count) probes, agent \(context.agent))" }
}

/// A probe's loop task and the switch a reload turns off.
struct ProbeLoop {
    var task: Task<Void, Never>
    var control: LoopControl
}

/// Whether a loop is mid-run (from its start until its result is recorded) and whether a reload
/// retired it.
final class LoopControl: Sendable {
    private let state = Mutex((running: false, retired: false))

    /// Marks the loop retired (its next `beginRun` refuses); true when it is not mid-run, so
    /// cancelling its task now loses nothing.
    func retire() -> Bool {
        state.withLock { s in
            s.retired = true
            return !s.running
        }
    }

    /// False once retired; otherwise the loop is running until `endRun`.
    func beginRun() -> Bool {
        state.withLock { s in
            guard !s.retired else { return false }
            s.running = true
            return true
        }
    }

    /// Ends a run; true when the loop was retired meanwhile (it records the result, then stops).
    func endRun() -> Bool {
        state.withLock { s in
            s.running = false
            return s.retired
        }
    }
}

/// The stream of reloads into a running scheduler.
final class ProbeSetReloads: Sendable {
    let stream: AsyncStream<Scheduler.ProbeSet>
    private let continuation: AsyncStream<Scheduler.ProbeSet>.Continuation

    init() { (stream, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1)) }
    func send(_ set: Scheduler.ProbeSet) { continuation.yield(set) }
    func finish() { continuation.finish() }
}

/// The jobs of the running loops (replaced on reload).
final class LiveJobs: Sendable {
    private let jobs = Mutex<(all: [ProbeJob], controls: [ProbeJob])>(([], []))
    func replace(with new: [ProbeJob]) { jobs.withLock { $0 = (new, new.filter(\.isControl)) } }
    var all: [ProbeJob] { jobs.withLock { $0.all } }
    /// The control probes' jobs (few: read on every failed run).
    var controls: [ProbeJob] { jobs.withLock { $0.controls } }
}

/// Set once, read after: whether the scheduler is stopping gracefully (vs cancelled).
final class ShutdownFlag: Sendable {
    private let value = Mutex(false)
    func set() { value.withLock { $0 = true } }
    var isSet: Bool { value.withLock { $0 } }
}
