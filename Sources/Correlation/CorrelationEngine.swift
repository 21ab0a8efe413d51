import Foundation
import SondeCore

/// Decides, per platform component, whether failures are local (one agent), regional or
/// platform-wide; keeps agent health and incidents, and emits alert events. Pure logic: no I/O, no
/// clock reads (every time comes in as an argument), deterministic. The collector wraps it in an
/// actor and feeds it one monotonic time line (`receivedAt`, `now`).
///
/// ## Rules (defaults in ``CorrelationConfig``)
/// - **Evidence per component.** A run counts for its probe's component, except when the step
///   that failed names another one (`component:` on the step): then it is that component's
///   failure, and the probe's component is *affected* (`evidence.affected`) but gets no run.
///   Steps of another component that passed count as its passing runs (``observations(of:)``).
/// - **Window.** Per (agent, probe, component) the last `window_runs` (20) runs, none older than
///   `window_age` (600 s) before the series' newest run; a result starting more than `window_age`
///   after it was received is ignored. Cross-agent times are put on the collector's time line:
///   `started_at` + the agent's offset (the smallest receive − finish delay of its last 8 pushes).
///   `ingest` is O(results × window_runs); `evaluate` reads per-series digests:
///   O(series + agents × components), independent of history.
/// - **Per (agent, probe).** `failing` after `confirm_failures` (2) consecutive failed runs;
///   `flaky` when at least `confirm_failures` and more than `flaky_ratio` (0.2) of the latest
///   `flaky_window` (10) runs failed (a shorter window counting as `min_runs` (5)); `degraded` when
///   the latest `confirm_failures` runs were all non-ok with one `degraded`; else `ok`. An agent's
///   state on a component is the worst of its probes there.
/// - **Silent.** Nothing received for longer than max(`silent_min` 10 s, `silent_after_intervals`
///   3 × its shortest probe interval), or `silent_after` (30 s) when no interval is known. A silent
///   agent counts nowhere (no scope, no verdict, no recovery); one `agent.silent` per silence. A
///   series with nothing received for its own threshold is ignored too, and so is one whose newest
///   run ended longer ago than that (collector time line, never later than it arrived): an agent
///   with no series left is *catching up* (its spool arriving after the collector's downtime,
///   oldest first) and counts nowhere, without an event; the region quorum counts it missing.
/// - **Local (scope agent), phase `localFaultPhase`.** (1) A failing control probe makes the whole
///   agent local; a control whose latest run failed, unconfirmed, holds the agent's data back.
///   (2) Per component: the agent's failure rate over its window (≥ `min_runs` runs) is above its
///   same-region peers' pooled rate (≥ `min_runs` runs) by Fisher's exact test, one-sided, at
///   `local_confidence` (0.999) — so random errors at the same rate everywhere never make
///   an agent local, while one bad host is. (3) Local by (2) on 2+ components and more than half it
///   reports: all its data is excluded. While an investigating incident covers its region, its
///   failure is that incident's evidence instead. A failing agent that no same-region peer
///   corroborates (none failing, fewer than `confirm_failures` failed runs between them recently)
///   and no other agent anywhere either is *in doubt*: held back from verdicts, no event. Local
///   data is excluded and listed in `evidence.local_agents`; one `agent.local_fault` per episode,
///   which ends after `resolve_after` (3) clean evaluations with new data from the agent.
/// - **Verdict** from the agents that count. Per region: `major_outage` when ≥ `major_ratio` (0.8)
///   fail hard and the per-step failure rate (failed runs / the component's attempted steps, up to
///   each run's first failure, after each probe's first failure in its recent window) is at least
///   `major_step_ratio` (0.5); `partial_outage` when any fails (hard or flaky) or the region's
///   pooled recent failure ratio exceeds `flaky_ratio`; `degraded_performance` when more than
///   `degraded_ratio` (0.5) are degraded. Component: `major_outage` by the same rule over all,
///   else the worst region capped at `partial_outage`; `unknown` when nobody reports. A region
///   whose agents each passed their latest `monitor_runs` runs, with M pooled passing runs (M as
///   for recovery, from the region's problem rate), and its newest problem run older than 1.5 × the
///   longest lull (as for recovery), is past its problem: operational and out of
///   the scope, whatever failures its windows still hold. Affected regions: not
///   operational ones, plus (while one is) regions with `confirm_failures` failed runs recently or
///   an agent with `confirm_failures` failures in its window. Scope: `platform` with ≥
///   `min_platform_regions` (2) affected regions, else `region`. `evidence.single_agent` when one
///   agent carries the problem. While an incident Sonde opened is `investigating` or
///   `identified`, the verdict shows at least its severity (≤ `partial_outage`) and the scope
///   and regions of its membership (``shownVerdict(_:incident:recoveredNow:platformRegions:)``):
///   a random fault's lulls read operational.
/// - **Incidents, phase `verdictPhase`.** Only evaluations with new results for the component
///   step the machine. Open after `open_after` (2) problem verdicts in a row, and only for a
///   component declared in the collector's `components:` or reported by ≥ `min_component_agents`
///   (2) agents. Region scope waits up to `scope_wait_intervals` (1) probe interval until every
///   other region has reported since the problem showed with no failed latest run (a platform
///   fault reaches them a little later), so the first alert says platform (twice that while
///   another region shows a failure since about when the problem showed); and up to
///   `silent_after` (30 s) for a region where nobody reports but agents are catching up. While investigating:
///   a wider scope or higher severity `open_after` times in a row updates it ("spread:",
///   "worse:"); regions, agents or failure codes that differ `open_after` times in a row are
///   announced ("changed: …"). Recovery is counted in runs, not evaluations: `monitoring` once
///   every fresh agent of its regions passed its latest `monitor_runs` (1) runs, the pooled
///   passing runs since the newest problem run reached M = ⌈ln(1 − `recovery_confidence`) /
///   ln(1 − p)⌉ (p: (n + ½) / (n + 1) for a hard fault — all n ≥ `min_runs` runs strictly between each
///   probe's first and newest problem run failed —, else those regions' failure rate up to the
///   newest problem run; 0.999 gives M ≈ 3 after a hard outage, 20 at 30 %, 66 at 10 %), the same
///   for the incident's own record of its fault past the windows' 20 runs (``FaultRecord``: its rate
///   since it opened, the confidence split over its clean stretches), and the time since exceeds
///   1.5 × the longest lull between problem runs since the problem began. An agent silent for 2 of its intervals is skipped. From then on
///   verdicts read only runs after that newest problem run (the incident's *horizon*, split on each
///   agent's clock with the offset it had then), so its
///   failures never colour later verdicts. Resolved when, still clean, every agent passed its
///   latest `resolve_runs` (2) runs; `open_after` problem verdicts first bring it back to
///   `investigating` ("relapse:"). At most one open incident per component.
/// - **People** (``applyHumanUpdate(_:now:)``, ``openHumanIncident(_:now:)``): their entries
///   join the timeline (author = token name) and leave with the next `evaluate`; a person's status
///   holds until measurements change after it, a person's `resolved` closes for good (a fault
///   still measured is the incident's `conflict`, and nothing opens until the component was
///   healthy), an incident Sonde never measured moves only by people. Automatic entries read
///   like a person's ("Files is failing for users in eu (2 of 2 agents, since 14:02 UTC)."); the
///   events' `summary` stays terse. See CorrelationEngine+HumanUpdates.swift.
/// - **Events** are emitted once per transition, with stable ids (see ``AlertEvent``). Rebuild after a
///   restart: construct with the open incidents and agent states last stored, then `ingest` the
///   window's stored results (with the time they were received when known) and `evaluate`; nothing
///   already emitted is emitted again.
public struct CorrelationEngine: Sendable {
    public private(set) var config: CorrelationConfig

    // MARK: Interning (names → dense indices, so evaluation works on flat arrays)
    var agentIndex: [String: Int32] = [:]
    var agentIDs: [String] = []
    var agentRegion: [Int32] = []
    var agentRevoked: [Bool] = []
    var agentLastReceived: [Double] = []
    /// From when an agent's silence is counted when that is later than its last result: a
    /// start or a new leader's take-over, until the agent is heard from (see `countSilence(from:)`).
    var agentSilenceCountedFrom: [Double] = []
    /// The latest `countSilence(from:)`: until then the agents may still be delivering what the
    /// collector's own downtime held back, and only until then is a region of agents catching
    /// up waited for (an agent that sends old runs on purpose must not delay other regions'
    /// first alerts in normal operation).
    var collectorGapUntil = -Double.infinity
    var agentHasNewData: [Bool] = []
    var agentCleanStreak: [Int32] = []
    /// How long each (agent × component) alone in its region has asked its peers to confirm its
    /// failures in its budget window (see `confirmationRequests`).
    var loneConfirmations: [Int: ConfirmationBudget] = [:]
    /// How long each component has asked every region to confirm because two or more agents of
    /// one region failed it (see `confirmationRequests`), keyed by component index.
    var spreadConfirmations: [Int: ConfirmationBudget] = [:]
    /// Agents seen with a failing control probe whose episode has not ended yet.
    var controlFaultAgents = Set<Int32>()
    var regionIndex: [String: Int32] = [:]
    var regionNames: [String] = []
    var componentIndex: [String: Int32] = [:]
    var componentNames: [String] = []
    var componentHasNewData: [Bool] = []
    /// True once a non-control series reports the component (control-only "components" get no verdict).
    var componentIsWatched: [Bool] = []
    /// True once the component is declared or reported by `min_component_agents` agents: only
    /// known components open incidents, count in the overall status and show on the status
    /// pages and in `sonde_component_status`, so one agent cannot put a made-up one there.
    var componentIsKnown: [Bool] = []
    var errorCodeIndex: [String: Int32] = [:]
    var errorCodeNames: [String] = []
    /// Codes still in use after the last `forgetUnusedErrorCodes`.
    var errorCodesInUse = 0
    /// Each agent's clock offset: the smallest (arrived − sent_at) of its last pushes (or, for
    /// results without their push, received − finished), so its runs compare with other agents'
    /// on the collector's time line (see `noteDelay`).
    var agentOffset: [Double] = []
    var agentDelaySamples: [Double] = []
    var agentDelayNext: [Int32] = []
    static let delaySampleCount = 8
    /// Components declared in the collector's `components:` list: they may open incidents on
    /// one agent's data (others need `min_component_agents` reporting agents).
    public var declaredComponents: Set<String> = []

    // MARK: Window
    var seriesIndex: [String: Int32] = [:]
    var series: [SeriesWindow] = []
    var summaries: [SeriesSummary] = []
    var touchStamp: [UInt32] = []
    var stamp: UInt32 = 0

    // MARK: Decisions
    /// Agents in id order, and the health of each in that order.
    var sortedAgents: [Int32] = []
    var health: [AgentHealth] = []
    var healthPosition: [Int32] = []
    var agentOrderDirty = true
    var restoredHealth: [String: AgentHealth] = [:]
    var tracks: [ComponentTrack] = []
    var verdictList: [ComponentVerdict] = []
    /// People's incident writes not yet handed out by `evaluate` (see CorrelationEngine+HumanUpdates).
    var humanChanged: [Incident] = []
    var humanEvents: [AlertEvent] = []
    /// As of the last `evaluate`: whether results that all passed could change a decision (see
    /// `awaitsPassingRuns(tracks:health:controlFaults:)`). The collector evaluates at once on a
    /// push with a failure, or with passing runs while this is true; otherwise at its next tick.
    public internal(set) var awaitsPassingRuns = false
    /// As of the last `evaluate`: whether agents' newest runs, passing ones too, would speed a
    /// decision up now (see `wantsFreshRuns(tracks:t:)`); the collector's push answers then ask
    /// agents to push promptly for a while.
    public internal(set) var wantsFreshRuns = false
    /// As of the last `evaluate`: the components agents are asked to confirm, per region (see
    /// `confirmationRequests(tracks:frame:componentNames:regionNames:agentRegion:_:)`).
    public internal(set) var confirmationRequests = ConfirmationRequests()

    public init(
        config: CorrelationConfig, agents: [AgentInfo], openIncidents: [Incident] = [], agentStates: [AgentHealth] = [],
        declaredComponents: Set<String> = [], resolved: [Incident] = []
    ) {
        self.config = config.sanitized
        self.declaredComponents = declaredComponents
        for state in agentStates {
            restoredHealth[state.agent] = state
            let a = Int(internAgent(state.agent, region: state.region))
            // An agent that reported before the restart but has nothing in the window since is
            // judged from when it was last seen, so its silence is still noticed (once).
            if let seen = state.lastSeen { agentLastReceived[a] = seen.timeIntervalSince1970 }
        }
        setAgents(agents)
        restoreOpenIncidents(openIncidents)
        restoreResolved(resolved)
    }

    /// Every known component's verdict, sorted by name (as of the last `evaluate`).
    public var verdicts: [ComponentVerdict] { verdictList }
    /// Every known agent's health, sorted by id (as of the last `evaluate`).
    public var agentHealth: [AgentHealth] { health }
    /// Open (investigating or monitoring) incidents, sorted by component.
    public var openIncidents: [Incident] {
        tracks.indices.compactMap { tracks[$0].incident }.sorted { $0.component < $1.component }
    }

    /// Replaces the enrolled agents. `region` from here wins over results; agents dropped from a
    /// previous list, and revoked ones, are `revoked` and their results ignored.
    public mutating func setAgents(_ agents: [AgentInfo]) {
        var listed = Set<Int32>()
        for info in agents {
            let a = internAgent(info.id, region: info.region)
            listed.insert(a)
            let region = internRegion(info.region)
            if agentRegion[Int(a)] != region {
                agentRegion[Int(a)] = region
                agentOrderDirty = true
            }
            agentRevoked[Int(a)] = info.revoked
        }
        if !agents.isEmpty {
            for a in agentIDs.indices where !listed.contains(Int32(a)) && enrolled.contains(Int32(a)) {
                agentRevoked[a] = true
            }
        }
        enrolled = listed
    }
    var enrolled = Set<Int32>()

    /// Adds results to the rolling window. `receivedAt` is the collector's clock when they arrived
    /// (liveness is judged on it, not on agents' clocks; pass a monotonic clock's reading, see
    /// `Evaluator`). Results of revoked agents are ignored; a result id already in its window is
    /// ignored; a result that claims to start more than `window_age` after it arrived is ignored (a
    /// broken clock must not pin a window). A run whose failing step names another component is
    /// evidence for that component (see ``observations(of:)``).
    public mutating func ingest(_ results: [ProbeResult], receivedAt: Date, push: PushTiming? = nil) {
        let received = receivedAt.timeIntervalSince1970
        // Measured on the push when known: how long results waited in the agent (its
        // flush_interval) is not clock error.
        let pushDelay = push.map { $0.arrivedAt.timeIntervalSince1970 - $0.sentAt.timeIntervalSince1970 }
        stamp &+= 1
        var touched: [Int32] = []
        var delays: [Int32: Double] = [:]
        for result in results {
            let started = result.startedAt.timeIntervalSince1970
            if started - received > config.windowAge { continue }
            let a = internAgent(result.agent, region: result.region)
            if agentRevoked[Int(a)] { continue }
            if !enrolled.contains(a) {
                // Not enrolled through setAgents: the result's region is all we know.
                let region = internRegion(result.region)
                if agentRegion[Int(a)] != region {
                    agentRegion[Int(a)] = region
                    agentOrderDirty = true
                }
            }
            delays[a] = min(delays[a] ?? .infinity, pushDelay ?? received - (started + result.durationMs / 1000))
            let control = result.control == true
            let own = internComponent(result.component)
            for observation in Self.observations(of: result) {
                let c = internComponent(observation.component)
                let s = seriesFor(agent: a, probe: result.probe, component: c, affects: c == own ? -1 : own, control: control)
                if let outcome = observation.outcome {
                    series[Int(s)].insert(
                        WindowRun(
                            id: result.id, startedAt: started, durationMs: Self.boundedMs(observation.durationMs), outcome: outcome,
                            error: observation.error,
                            steps: observation.steps, retry: result.retry == true),
                        config: config)
                }
                series[Int(s)].lastReceived = max(series[Int(s)].lastReceived, received)
                if touchStamp[Int(s)] != stamp {
                    touchStamp[Int(s)] = stamp
                    touched.append(s)
                }
                if !control {
                    componentHasNewData[Int(c)] = true
                    componentIsWatched[Int(c)] = true
                }
            }
            agentLastReceived[Int(a)] = max(agentLastReceived[Int(a)], received)
            // Heard from again: its silence is its own from now on (see `countSilence(from:)`).
            agentSilenceCountedFrom[Int(a)] = -.infinity
            agentHasNewData[Int(a)] = true
        }
        for (a, delay) in delays { noteDelay(delay, agent: Int(a)) }
        for s in touched {
            var code: Int32 = -1
            if let error = series[Int(s)].latestError { code = internErrorCode(error.code ?? error.kind.rawValue) }
            summaries[Int(s)] = series[Int(s)].summarize(config: config, errorCode: code)
        }
        // Twice what was in use at the last clean-up at least: the clean-up walks every series.
        if errorCodeNames.count > max(Self.errorCodesKept, 2 * errorCodesInUse) { forgetUnusedErrorCodes() }
    }

    /// Error codes held before the ones no series reports any more are forgotten: agents choose
    /// codes, and one sending a new one with every run must not grow the engine for good.
    static let errorCodesKept = 4_096

    /// Keeps only the codes some series' latest error still carries, renumbered.
    mutating func forgetUnusedErrorCodes() {
        var index: [String: Int32] = [:]
        var names: [String] = []
        for s in summaries.indices where summaries[s].errorCode >= 0 {
            let name = errorCodeNames[Int(summaries[s].errorCode)]
            if let e = index[name] {
                summaries[s].errorCode = e
            } else {
                let e = Int32(names.count)
                index[name] = e
                names.append(name)
                summaries[s].errorCode = e
            }
        }
        errorCodeIndex = index
        errorCodeNames = names
        errorCodesInUse = names.count
    }

    /// What one run says, per component: the probe's own component gets the run's outcome, unless
    /// the step that failed names another component (`component:` on a step): then that component
    /// gets the failure and the probe's own component nothing (it was not reached; `outcome` nil
    /// only keeps its series fresh). Steps of other components that passed before count as passing
    /// runs of theirs, or as slow ones when a step of theirs went over its own `degraded_after`
    /// (`StepResult.degraded`). A failed run without a failed step is its own component's failure.
    /// A degraded run whose agent says why is degraded for the probe's own component only when
    /// the run as a whole (`ProbeResult.degraded`) or one of its own steps was slow: a slow login
    /// step makes login slow, not the journey; without a reason (an older agent) it is the probe's.
    static func observations(of result: ProbeResult) -> [Observation] {
        let own = result.component
        let failedStep = result.outcome == .failed ? result.steps.firstIndex { !$0.ok } : nil
        // Steps of a component the run attempted: up to and including the first failed step.
        let attempted = result.steps.prefix(failedStep.map { $0 + 1 } ?? result.steps.count)
        func steps(of c: String) -> Int32 { max(1, Int32(attempted.filter { ($0.component ?? own) == c }.count)) }
        if result.control == true || (result.outcome == .failed && failedStep == nil)
            || result.steps.allSatisfy({ ($0.component ?? own) == own })
        {
            return [Observation(component: own, outcome: result.outcome, error: result.error, steps: steps(of: own), durationMs: result.durationMs)]
        }
        // A step component's latency is its own steps' time (a 1 ms login step in a journey
        // that waits 2 s for a job is not a 2 s login); the journey's is the rest of the run.
        func milliseconds(of c: String) -> Double { attempted.reduce(0) { ($1.component ?? own) == c ? $0 + $1.timings.total : $0 } }
        let elsewhere = attempted.reduce(0) { ($1.component ?? own) != own ? $0 + $1.timings.total : $0 }
        func slow(_ c: String) -> Bool { attempted.contains { ($0.component ?? own) == c && $0.degraded != nil } }
        var ownOutcome = result.outcome
        if result.outcome == .degraded, result.degraded != nil || attempted.contains(where: { $0.degraded != nil }) {
            ownOutcome = result.degraded != nil || slow(own) ? .degraded : .ok
        }
        var list: [Observation] = []
        var decidedElsewhere = false
        for (i, step) in result.steps.enumerated() {
            let c = step.component ?? own
            if i == failedStep {
                if c != own {
                    list.removeAll { $0.component == c }
                    list.append(Observation(component: c, outcome: .failed, error: result.error ?? step.error, steps: steps(of: c), durationMs: milliseconds(of: c)))
                    decidedElsewhere = true
                }
                break
            }
            if c != own, !list.contains(where: { $0.component == c }) {
                list.append(Observation(component: c, outcome: slow(c) ? .degraded : .ok, error: nil, steps: steps(of: c), durationMs: milliseconds(of: c)))
            }
        }
        list.append(
            decidedElsewhere
                ? Observation(component: own, outcome: nil, error: nil)
                : Observation(component: own, outcome: ownOutcome, error: result.error, steps: steps(of: own), durationMs: max(0, result.durationMs - elsewhere)))
        return list
    }

    /// The components a run counts for and its outcome for each, as the engine reads it
    /// (``observations(of:)`` without the components it does not decide): what uptime counts, so
    /// that a journey failing at its login step is login's failure, not the journey's.
    public static func outcomes(of result: ProbeResult) -> [(component: String, outcome: Outcome)] {
        observations(of: result).compactMap { observation in observation.outcome.map { (observation.component, $0) } }
    }

    /// A run's duration as the engine keeps it: 0 … 10⁹ ms (11 days). An agent's number is
    /// not trusted: 1e308 ms made the latency text's integer conversion trap, every evaluation
    /// and every restart that read the run back (found by the red team, F15).
    static func boundedMs(_ ms: Double) -> Double {
        ms.isFinite ? min(max(ms, 0), 1e9) : 0
    }

    struct Observation: Equatable {
        var component: String
        var outcome: Outcome?
        var error: ProbeError?
        /// Steps of `component` the run attempted (see `WindowRun.steps`).
        var steps: Int32 = 1
        /// The run's time spent on `component`: the whole run when it is all one component.
        var durationMs: Double = 0
    }

    private mutating func seriesFor(agent a: Int32, probe: String, component c: Int32, affects: Int32, control: Bool) -> Int32 {
        var key = agentIDs[Int(a)] + "\u{1F}" + probe
        if affects >= 0 { key += "\u{1F}" + componentNames[Int(c)] }
        if let existing = seriesIndex[key] {
            if affects < 0 { series[Int(existing)].component = c }
            series[Int(existing)].control = control
            return existing
        }
        let s = Int32(series.count)
        seriesIndex[key] = s
        series.append(SeriesWindow(agent: a, probe: probe, component: c, affects: affects, control: control))
        summaries.append(
            SeriesSummary(
                agent: a, component: c, affects: affects, control: control, state: .ok, windowRuns: 0, windowFailed: 0,
                latestFailed: false, lastReceived: -.infinity, interval: 0, latencyMs: -1, errorCode: -1))
        touchStamp.append(0)
        return s
    }

    /// The agent's clock offset is the smallest delay between a push's `sent_at` (agent clock)
    /// and its arrival (collector clock) over its last pushes: transport delay plus clock error,
    /// so `started_at + offset` puts every agent's runs on the collector's time line. Without the
    /// push (results followed from the database) the delay runs from each run's end, which also
    /// holds the time the result waited in the agent: up to its `flush_interval` late, and more
    /// for a healthy agent than for a failing one, whose results go out at once.
    private mutating func noteDelay(_ delay: Double, agent a: Int) {
        let n = Self.delaySampleCount
        let slot = Int(agentDelayNext[a])
        agentDelaySamples[a * n + slot] = delay
        agentDelayNext[a] = Int32((slot + 1) % n)
        var smallest = Double.infinity
        for k in 0..<n { smallest = min(smallest, agentDelaySamples[a * n + k]) }
        agentOffset[a] = smallest
    }

    // MARK: - Interning

    private mutating func internAgent(_ id: String, region: String) -> Int32 {
        if let a = agentIndex[id] { return a }
        let a = Int32(agentIDs.count)
        agentIndex[id] = a
        agentIDs.append(id)
        agentRegion.append(internRegion(region))
        agentRevoked.append(false)
        agentLastReceived.append(-.infinity)
        agentSilenceCountedFrom.append(-.infinity)
        agentHasNewData.append(false)
        agentCleanStreak.append(0)
        agentOffset.append(0)
        agentDelaySamples.append(contentsOf: repeatElement(Double.infinity, count: Self.delaySampleCount))
        agentDelayNext.append(0)
        agentOrderDirty = true
        return a
    }

    private mutating func internRegion(_ name: String) -> Int32 {
        if let r = regionIndex[name] { return r }
        let r = Int32(regionNames.count)
        regionIndex[name] = r
        regionNames.append(name)
        return r
    }

    mutating func internComponent(_ name: String) -> Int32 {
        if let c = componentIndex[name] { return c }
        let c = Int32(componentNames.count)
        componentIndex[name] = c
        componentNames.append(name)
        componentHasNewData.append(false)
        componentIsWatched.append(false)
        componentIsKnown.append(false)
        tracks.append(ComponentTrack())
        return c
    }

    mutating func internErrorCode(_ code: String) -> Int32 {
        if let e = errorCodeIndex[code] { return e }
        let e = Int32(errorCodeNames.count)
        errorCodeIndex[code] = e
        errorCodeNames.append(code)
        return e
    }

    /// Re-sorts agents by id and carries their health over (only when agents were added or moved).
    mutating func refreshAgentOrder(now: Date) {
        guard agentOrderDirty else { return }
        agentOrderDirty = false
        var previous: [String: AgentHealth] = restoredHealth
        restoredHealth = [:]
        for h in health { previous[h.agent] = h }
        sortedAgents = agentIDs.indices.map { Int32($0) }.sorted { agentIDs[Int($0)] < agentIDs[Int($1)] }
        healthPosition = Array(repeating: 0, count: agentIDs.count)
        health = []
        health.reserveCapacity(sortedAgents.count)
        for (position, a) in sortedAgents.enumerated() {
            healthPosition[Int(a)] = Int32(position)
            let id = agentIDs[Int(a)]
            let region = regionNames[Int(agentRegion[Int(a)])]
            if var h = previous[id] {
                h.region = region
                health.append(h)
            } else {
                // Never heard from: silent without an event (see the rules above).
                health.append(
                    AgentHealth(agent: id, region: region, state: .silent, since: now, reason: "no results received yet"))
            }
        }
    }
}

