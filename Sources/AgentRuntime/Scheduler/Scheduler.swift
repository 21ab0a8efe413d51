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

    public func run() async throws {
        logger.info("scheduler started", metadata: ["agent.id": "\(context.agent)", "probes.count": "\(probes.count)"])
        guard !probes.isEmpty else { return }
        let runs = RunsInFlight()
        await withTaskGroup(of: Void.self) { group in
            let loopExecutor = executor.preferredTaskExecutor
            // One origin for every loop's slots: a loop whose task starts late (thousands start at
            // once) still keeps the slots of the agent's schedule instead of shifting its own.
            let origin = ContinuousClock.now
            for probe in probes {
                group.addTask(executorPreference: loopExecutor) { await self.loop(probe, from: origin, runs: runs) }
            }
            // Graceful shutdown (or cancellation): no new runs; runs in flight get the grace time,
            // then every loop is cancelled (which also ends the ones asleep until their slot).
            let shutdown = (try? await gracefulShutdown()) != nil
            runs.stop()
            if shutdown { await runs.waitUntilIdle(atMost: shutdownGrace) }
            group.cancelAll()
        }
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

    // MARK: - One probe's loop

    // Each loop sleeps and runs in its own task: no task group per run and no child task per
    // sleep to watch for shutdown (those were several thread wake-ups per run); `run()` handles
    // shutdown for all loops at once.
    func loop(_ probe: ProbeDefinition, from origin: ContinuousClock.Instant, runs: RunsInFlight) async {
        let clock = ContinuousClock()
        let interval = probe.interval
        var logger = logger
        logger[metadataKey: "probe.name"] = "\(probe.name)"
        let offset = interval * Self.offsetFraction(agent: context.agent, probe: probe.name)
        var slot = origin + offset
        // Jitter needs spread, not secrecy: the system generator costs a getrandom call per run.
        var random = SplitMix64(seed: UInt64.random(in: .min ... .max))
        let isControl = probe.control || controlProbes.contains(probe.name)
        logger.debug("probe scheduled", metadata: ["probe.first_in_ms": "\(Int(offset.seconds * 1000))", "probe.interval_ms": "\(Int(interval.seconds * 1000))"])
        while !Task.isCancelled {
            let spread = jitter > 0 ? Double.random(in: -jitter...jitter, using: &random) : 0
            let start = max(slot + interval * spread, clock.now)
            // Cancelled at shutdown: no new run starts after SIGTERM.
            guard (try? await executor.sleep(until: start)) != nil, runs.begin() else { break }
            var result = await executor.run(probe, context: context)
            // A run cancelled (shutdown grace over, or the service cancelled) records nothing:
            // half a run is not evidence about the platform.
            let cancelled = Task.isCancelled
            runs.end()
            if cancelled {
                logger.info("probe run cancelled by shutdown; nothing recorded")
                break
            }
            if isControl { result.control = true }
            await record(result)

            // Next slot after the one just run. Slots this run overran are skipped, not queued;
            // a slot passed by less than the jitter allowance still runs (just late).
            slot = slot + interval
            let allowance = interval * max(jitter, 0.05)
            var skipped = 0
            while clock.now - slot > allowance {
                slot = slot + interval
                skipped += 1
            }
            if skipped > 0 {
                logger.warning(
                    "probe run took longer than its interval; skipped the missed slots",
                    metadata: ["probe.skipped": "\(skipped)", "probe.duration_ms": "\(Int(result.durationMs))"])
            }
        }
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
