import Foundation
import Logging
import ProbeEngine
import ServiceLifecycle
import SondeCore

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
        await withTaskGroup(of: Void.self) { group in
            for probe in probes {
                group.addTask { await self.loop(probe) }
            }
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

    func loop(_ probe: ProbeDefinition) async {
        let clock = ContinuousClock()
        let interval = probe.interval
        var logger = logger
        logger[metadataKey: "probe.name"] = "\(probe.name)"
        let offset = interval * Self.offsetFraction(agent: context.agent, probe: probe.name)
        var slot = clock.now + offset
        logger.debug("probe scheduled", metadata: ["probe.first_in_ms": "\(Int(offset.seconds * 1000))", "probe.interval_ms": "\(Int(interval.seconds * 1000))"])
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let spread = jitter > 0 ? Double.random(in: -jitter...jitter) : 0
            let start = max(slot + interval * spread, clock.now)
            // The wait ends early on graceful shutdown: no new run starts after SIGTERM.
            let waited: Bool = (try? await cancelWhenGracefulShutdown { try await Task.sleep(until: start, clock: clock); return true }) ?? false
            guard waited, !Task.isShuttingDownGracefully else { break }

            guard let result = await runOnce(probe) else {
                logger.info("probe run cancelled by shutdown; nothing recorded")
                break
            }
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

    /// One run, marked as a control run when it is one; nil when cancelled (shutdown grace over,
    /// or the whole service cancelled).
    func runOnce(_ probe: ProbeDefinition) async -> ProbeResult? {
        let executor = executor
        let context = context
        let grace = shutdownGrace
        let result = await withTaskGroup(of: ProbeResult?.self) { group -> ProbeResult? in
            group.addTask { await executor.run(probe, context: context) }
            group.addTask {
                // Races the run: returns once shutdown was requested AND the grace time is over.
                do {
                    try await gracefulShutdown()
                    try await Task.sleep(for: grace)
                } catch {}
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard var result, !Task.isCancelled else { return nil }
        if probe.control || controlProbes.contains(probe.name) { result.control = true }
        return result
    }
}
