import Foundation

/// Tunables of the correlation engine. Every key is optional in a config file (snake_case JSON or
/// YAML through `Codable`); a missing key takes the default documented here. Durations are seconds.
/// The rules these numbers feed are described on ``CorrelationEngine``.
public struct CorrelationConfig: Sendable, Codable, Hashable {
    /// `window_runs` (Int, default 20): runs kept per (agent, probe) in memory.
    public var windowRuns: Int
    /// `window_age` (seconds, default 600): runs older than this (relative to the series' newest
    /// run) are dropped, and a series that received nothing for this long is ignored.
    public var windowAge: TimeInterval
    /// `confirm_failures` (Int, default 2): consecutive failed runs that make an (agent, probe)
    /// failing "hard"; the same count of consecutive non-ok runs confirms `degraded`.
    public var confirmFailures: Int
    /// `flaky_window` (Int, default 10): latest runs looked at for the failure ratio.
    public var flakyWindow: Int
    /// `flaky_ratio` (0…1, default 0.2): a failure ratio above this over `flaky_window` runs
    /// (with at least `min_runs`) is failing even without consecutive failures ("30% of requests fail").
    public var flakyRatio: Double
    /// `min_runs` (Int, default 5): runs needed before a failure ratio means anything.
    public var minRuns: Int
    /// `silent_after_intervals` (default 3): an agent is silent after this many of its probes'
    /// typical intervals (estimated from `started_at` spacing) without a result.
    public var silentAfterIntervals: Double
    /// `silent_after` (seconds, default 30): the silence threshold when no interval can be estimated.
    public var silentAfter: TimeInterval
    /// `silent_min` (seconds, default 10): never call an agent silent sooner than this, so push
    /// batching and network jitter do not make fast-probing agents flap.
    public var silentMin: TimeInterval
    /// `local_confidence` (0.5…0.999999, default 0.999): an agent failing on a component is local
    /// when Fisher's exact test (one-sided) says, at this confidence, that its failure rate over
    /// its window is above its same-region peers' pooled rate, each side with at least
    /// `min_runs` runs.
    public var localConfidence: Double
    /// `local_fault_peers` (Int, default 1): passing same-region peers an agent needs before the
    /// peer test can call its failures its own. With 1, a region of two agents can tell one bad
    /// host from a regional outage, but one lying (compromised) agent there can have its honest
    /// peer called local and hide that region's outage. With 2, no single agent can, and in a
    /// region of two one agent's failures (a broken host whose control passes, or a liar) open a
    /// regional incident instead. The control probe still makes an agent local either way.
    public var localFaultPeers: Int
    /// `recovery_confidence` (0.5…0.999999, default 0.999): an incident recovers only after enough
    /// passing runs in a row (pooled over its regions' agents) that, were the failure rate it had
    /// still on, seeing none fail would have a chance below 1 − this: M = ⌈ln(1−c) / ln(1−p)⌉.
    public var recoveryConfidence: Double
    /// Failed runs, pooled strictly inside each probe's problem span, that read as an incident's
    /// hard fault (recovery's p near 1, a few passing runs end it): at least `min_runs`, and so
    /// many that a fault failing half the runs would have shown a pass among them, at
    /// `recovery_confidence` (10 at 0.999, 7 at 0.99). Five could be a burst of a random fault:
    /// a 10 % fault whose failures came together on 4 series read as hard, resolved on its next
    /// few passing runs, and opened again (a flap). An agent's local-fault episode keeps
    /// `min_runs` (see `runsRecovered`).
    public var hardFaultRuns: Int {
        max(minRuns, Int(CorrelationEngine.cleanRunsNeeded(failureRate: 0.5, confidence: recoveryConfidence)))
    }
    /// `monitor_runs` (Int, default 1): passing runs in a row every reporting agent needs (besides
    /// the pooled M) before an incident moves to `monitoring`.
    public var monitorRuns: Int
    /// `resolve_runs` (Int, default 2): passing runs in a row every reporting agent needs (besides
    /// the pooled M) before a `monitoring` incident is resolved.
    public var resolveRuns: Int
    /// `min_platform_regions` (Int, default 2): regions that must be affected for scope `platform`;
    /// fewer is scope `region` (also when only one region reports).
    public var minPlatformRegions: Int
    /// `min_component_agents` (Int, default 2): agents that must report a component not declared in
    /// the collector's `components:` list before it can open an incident.
    public var minComponentAgents: Int
    /// `scope_wait_intervals` (default 1): before opening an incident at `region` scope, wait up to
    /// this many probe intervals for the other regions' fresh runs (a platform-wide fault reaches
    /// them a little later); opened at once when they all reported since and none of them failed.
    /// Twice as long while another region has a failed or slow run since about when the problem
    /// showed: its latest run passing does not clear it of a partial fault.
    public var scopeWaitIntervals: Double
    /// `major_ratio` (0…1, default 0.8): share of reporting agents failing hard for `major_outage`.
    public var majorRatio: Double
    /// `major_step_ratio` (0…1, default 0.5): `major_outage` also needs the component to fail at
    /// least this share of the steps of it the agents attempt (failed runs / attempted steps of
    /// the component, up to each run's first failure: the per-request failure rate). Below it a
    /// fault is `partial_outage` however many runs it fails (30 % of requests everywhere).
    public var majorStepRatio: Double
    /// `degraded_ratio` (0…1, default 0.5): a region is `degraded_performance` when more than this
    /// share of its reporting agents are (confirmed) degraded.
    public var degradedRatio: Double
    /// `open_after` (Int, default 2): consecutive evaluations with new data and a problem verdict
    /// before an incident opens (also used to confirm a scope/severity change and a relapse).
    public var openAfter: Int
    /// `resolve_after` (Int, default 3): consecutive clean evaluations with new data from an agent
    /// before its local-fault episode ends (incidents recover by runs: `monitor_runs`, `resolve_runs`).
    public var resolveAfter: Int
    /// `max_sample_errors` (Int, default 5): distinct sample errors kept in evidence.
    public var maxSampleErrors: Int
    /// `max_listed_agents` (Int, default 50): agent ids listed in evidence (counts are always exact).
    public var maxListedAgents: Int
    /// `confirmation_runs` (Bool, default true): ask agents, in their push answers, to run the
    /// probes of a component at their retry pace while its state is being decided (a failure in
    /// their region, a problem verdict, an open incident); see `ConfirmationRequests`. The cost:
    /// while a component fails, its probes run up to `interval / retry_interval` times as often
    /// in the regions concerned (4 × at the agents' default), as a hard outage's own retries do.
    public var confirmationRuns: Bool
    /// `membership_update_gap` (seconds, default 10): regions, agents and failure codes that join
    /// an open incident are announced (`incident.updated`, "changed: …") at most once per this
    /// long after it opened or last changed, all together: a random fault reaching the other
    /// agents' next runs is one update, not one per agent in two seconds. A failure code leaves
    /// once gone this long without a break; agents and regions leave by runs (see the engine).
    public var membershipUpdateGap: TimeInterval
    /// `region_quorum_window` (seconds, default 3600; 0 turns it off): a region decides a
    /// component only while at least half of the agents that reported it there within this long
    /// still report; otherwise it reads as unwatched (see `regionQuorumPhase`). Revoke an agent
    /// you retire, or its region may read "no data" for up to this long. After a restart the
    /// collector knows only the agents in the results it re-reads (`window_age`).
    public var regionQuorumWindow: TimeInterval
    /// `flap_memory` (seconds, default 300; 0 turns it off): a component's problem back within
    /// this long of its incident's automatic resolution is read as the same fault coming and
    /// going: the new incident reaches `monitoring` as its runs recover, but resolves only after
    /// a clean stretch of 1.5 × the gap it came back after. A fault 20 s on, 20 s off is two
    /// incidents, not one every 40 s. The cost: a separate fault within this long of the last
    /// one's end also stays in `monitoring` 1.5 × the gap between them before it resolves.
    public var flapMemory: TimeInterval

    public init(
        windowRuns: Int = 20, windowAge: TimeInterval = 600, confirmFailures: Int = 2, flakyWindow: Int = 10,
        flakyRatio: Double = 0.2, minRuns: Int = 5, silentAfterIntervals: Double = 3, silentAfter: TimeInterval = 30,
        silentMin: TimeInterval = 10, localConfidence: Double = 0.999, recoveryConfidence: Double = 0.999,
        localFaultPeers: Int = 1, monitorRuns: Int = 1, resolveRuns: Int = 2, minPlatformRegions: Int = 2, minComponentAgents: Int = 2,
        scopeWaitIntervals: Double = 1, majorRatio: Double = 0.8, degradedRatio: Double = 0.5, openAfter: Int = 2,
        resolveAfter: Int = 3, maxSampleErrors: Int = 5, maxListedAgents: Int = 50, majorStepRatio: Double = 0.5,
        confirmationRuns: Bool = true, membershipUpdateGap: TimeInterval = 10, regionQuorumWindow: TimeInterval = 3600,
        flapMemory: TimeInterval = 300
    ) {
        self.windowRuns = windowRuns
        self.windowAge = windowAge
        self.confirmFailures = confirmFailures
        self.flakyWindow = flakyWindow
        self.flakyRatio = flakyRatio
        self.minRuns = minRuns
        self.silentAfterIntervals = silentAfterIntervals
        self.silentAfter = silentAfter
        self.silentMin = silentMin
        self.localConfidence = localConfidence
        self.localFaultPeers = localFaultPeers
        self.recoveryConfidence = recoveryConfidence
        self.monitorRuns = monitorRuns
        self.resolveRuns = resolveRuns
        self.minPlatformRegions = minPlatformRegions
        self.minComponentAgents = minComponentAgents
        self.scopeWaitIntervals = scopeWaitIntervals
        self.majorRatio = majorRatio
        self.majorStepRatio = majorStepRatio
        self.degradedRatio = degradedRatio
        self.openAfter = openAfter
        self.resolveAfter = resolveAfter
        self.maxSampleErrors = maxSampleErrors
        self.maxListedAgents = maxListedAgents
        self.confirmationRuns = confirmationRuns
        self.membershipUpdateGap = membershipUpdateGap
        self.regionQuorumWindow = regionQuorumWindow
        self.flapMemory = flapMemory
    }

    enum CodingKeys: String, CodingKey {
        case windowRuns = "window_runs"
        case windowAge = "window_age"
        case confirmFailures = "confirm_failures"
        case flakyWindow = "flaky_window"
        case flakyRatio = "flaky_ratio"
        case minRuns = "min_runs"
        case silentAfterIntervals = "silent_after_intervals"
        case silentAfter = "silent_after"
        case silentMin = "silent_min"
        case localConfidence = "local_confidence"
        case localFaultPeers = "local_fault_peers"
        case recoveryConfidence = "recovery_confidence"
        case monitorRuns = "monitor_runs"
        case resolveRuns = "resolve_runs"
        case minPlatformRegions = "min_platform_regions"
        case minComponentAgents = "min_component_agents"
        case scopeWaitIntervals = "scope_wait_intervals"
        case majorRatio = "major_ratio"
        case majorStepRatio = "major_step_ratio"
        case degradedRatio = "degraded_ratio"
        case openAfter = "open_after"
        case resolveAfter = "resolve_after"
        case maxSampleErrors = "max_sample_errors"
        case maxListedAgents = "max_listed_agents"
        case confirmationRuns = "confirmation_runs"
        case membershipUpdateGap = "membership_update_gap"
        case regionQuorumWindow = "region_quorum_window"
        case flapMemory = "flap_memory"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = CorrelationConfig()
        windowRuns = try c.decodeIfPresent(Int.self, forKey: .windowRuns) ?? d.windowRuns
        windowAge = try c.decodeIfPresent(Double.self, forKey: .windowAge) ?? d.windowAge
        confirmFailures = try c.decodeIfPresent(Int.self, forKey: .confirmFailures) ?? d.confirmFailures
        flakyWindow = try c.decodeIfPresent(Int.self, forKey: .flakyWindow) ?? d.flakyWindow
        flakyRatio = try c.decodeIfPresent(Double.self, forKey: .flakyRatio) ?? d.flakyRatio
        minRuns = try c.decodeIfPresent(Int.self, forKey: .minRuns) ?? d.minRuns
        silentAfterIntervals = try c.decodeIfPresent(Double.self, forKey: .silentAfterIntervals) ?? d.silentAfterIntervals
        silentAfter = try c.decodeIfPresent(Double.self, forKey: .silentAfter) ?? d.silentAfter
        silentMin = try c.decodeIfPresent(Double.self, forKey: .silentMin) ?? d.silentMin
        localConfidence = try c.decodeIfPresent(Double.self, forKey: .localConfidence) ?? d.localConfidence
        localFaultPeers = try c.decodeIfPresent(Int.self, forKey: .localFaultPeers) ?? d.localFaultPeers
        recoveryConfidence = try c.decodeIfPresent(Double.self, forKey: .recoveryConfidence) ?? d.recoveryConfidence
        monitorRuns = try c.decodeIfPresent(Int.self, forKey: .monitorRuns) ?? d.monitorRuns
        resolveRuns = try c.decodeIfPresent(Int.self, forKey: .resolveRuns) ?? d.resolveRuns
        minPlatformRegions = try c.decodeIfPresent(Int.self, forKey: .minPlatformRegions) ?? d.minPlatformRegions
        minComponentAgents = try c.decodeIfPresent(Int.self, forKey: .minComponentAgents) ?? d.minComponentAgents
        scopeWaitIntervals = try c.decodeIfPresent(Double.self, forKey: .scopeWaitIntervals) ?? d.scopeWaitIntervals
        majorRatio = try c.decodeIfPresent(Double.self, forKey: .majorRatio) ?? d.majorRatio
        majorStepRatio = try c.decodeIfPresent(Double.self, forKey: .majorStepRatio) ?? d.majorStepRatio
        degradedRatio = try c.decodeIfPresent(Double.self, forKey: .degradedRatio) ?? d.degradedRatio
        openAfter = try c.decodeIfPresent(Int.self, forKey: .openAfter) ?? d.openAfter
        resolveAfter = try c.decodeIfPresent(Int.self, forKey: .resolveAfter) ?? d.resolveAfter
        maxSampleErrors = try c.decodeIfPresent(Int.self, forKey: .maxSampleErrors) ?? d.maxSampleErrors
        maxListedAgents = try c.decodeIfPresent(Int.self, forKey: .maxListedAgents) ?? d.maxListedAgents
        confirmationRuns = try c.decodeIfPresent(Bool.self, forKey: .confirmationRuns) ?? d.confirmationRuns
        membershipUpdateGap = try c.decodeIfPresent(Double.self, forKey: .membershipUpdateGap) ?? d.membershipUpdateGap
        regionQuorumWindow = try c.decodeIfPresent(Double.self, forKey: .regionQuorumWindow) ?? d.regionQuorumWindow
        flapMemory = try c.decodeIfPresent(Double.self, forKey: .flapMemory) ?? d.flapMemory
    }

    /// The values clamped to sane ranges (at least 1 run confirms, ratios within 0…1, …), so a
    /// typo in a config file cannot make the engine divide by zero or never decide.
    public var sanitized: CorrelationConfig {
        var c = self
        c.windowRuns = max(2, c.windowRuns)
        c.windowAge = max(1, c.windowAge)
        c.confirmFailures = min(max(1, c.confirmFailures), c.windowRuns)
        c.flakyWindow = min(max(1, c.flakyWindow), c.windowRuns)
        c.flakyRatio = min(max(0, c.flakyRatio), 1)
        c.minRuns = max(1, c.minRuns)
        c.silentAfterIntervals = max(1, c.silentAfterIntervals)
        c.silentAfter = max(0.001, c.silentAfter)
        c.silentMin = max(0, c.silentMin)
        c.localConfidence = min(max(0.5, c.localConfidence), 0.999999)
        c.localFaultPeers = max(1, c.localFaultPeers)
        c.recoveryConfidence = min(max(0.5, c.recoveryConfidence), 0.999999)
        c.monitorRuns = max(1, c.monitorRuns)
        c.resolveRuns = max(c.monitorRuns, c.resolveRuns)
        c.minPlatformRegions = max(1, c.minPlatformRegions)
        c.minComponentAgents = max(1, c.minComponentAgents)
        c.scopeWaitIntervals = max(0, c.scopeWaitIntervals)
        c.majorRatio = min(max(0, c.majorRatio), 1)
        c.majorStepRatio = min(max(0, c.majorStepRatio), 1)
        c.degradedRatio = min(max(0, c.degradedRatio), 1)
        c.openAfter = max(1, c.openAfter)
        c.resolveAfter = max(1, c.resolveAfter)
        c.maxSampleErrors = max(0, c.maxSampleErrors)
        c.maxListedAgents = max(0, c.maxListedAgents)
        c.membershipUpdateGap = max(0, c.membershipUpdateGap)
        c.regionQuorumWindow = max(0, c.regionQuorumWindow)
        c.flapMemory = max(0, c.flapMemory)
        return c
    }
}
