import Foundation
import SondeCore

/// Decides, per platform component, whether failures are local (one agent), regional or
/// platform-wide; keeps agent health and incidents, and emits alert events. Pure logic: no I/O, no
/// clock reads (every time comes in as an argument), deterministic. The collector wraps it in an actor.
///
/// ## Rules (defaults in ``CorrelationConfig``)
/// - **Window.** Per (agent, probe) the last `window_runs` (20) runs, none older than `window_age`
///   (600 s) before the series' newest run. `ingest` costs O(results × window_runs) and updates a
///   small per-series digest; `evaluate` reads only digests: O(series + agents × components),
///   independent of history.
/// - **Per (agent, probe).** `failing` after `confirm_failures` (2) consecutive failed runs (a single
///   failed run opens nothing); `flaky` when at least `confirm_failures` and more than `flaky_ratio`
///   (0.2) of the latest `flaky_window` (10) runs failed, a shorter window counting as `min_runs`
///   (5) runs (so filling it with passing runs never makes a probe flaky); `degraded` when the latest
///   `confirm_failures` runs were all non-ok with at least one `degraded` (slower than the probe's
///   threshold); otherwise `ok`. An agent's state on a component is the worst of its probes there.
///   After a hard outage the failure ratio keeps a probe `flaky` until enough passing runs push the
///   old failures out of the window: recovery is deliberately slower than detection.
/// - **Silent.** No result received (collector clock, `receivedAt`) for longer than
///   max(`silent_min` 10 s, `silent_after_intervals` 3 × the agent's shortest estimated probe
///   interval from `started_at` spacing), or `silent_after` (30 s) when no interval is known. A silent
///   agent's data is ignored (stale failures never count). `agent.silent` once per silence; an
///   agent never heard from is `silent` without an event. A single series with nothing received for
///   its own threshold (or `window_age`) is ignored too (a probe removed from an agent).
/// - **Local (scope agent).** An agent is local when (1) one of its control probes is failing or
///   flaky — even if everything else fails too; or (2) per component: it fails there while its
///   same-region peers reporting that component (non-silent, without failing control) all passed
///   their latest run and either none of them failed since this agent's problem began (not counting
///   failures from before the recovery of a resolved incident of that component covering the
///   region) or their combined recent failure ratio is below `local_peer_max_ratio` (0.1), unless an incident of that
///   component under investigation covers its region (its failure is then that incident's evidence);
///   or (3) it is local by (2) on at least 2 components and on more than half of the components it
///   reports, in which case all its data is excluded. Local data is excluded from verdicts (listed
///   in `evidence.local_agents`), never opens an incident, and the agent becomes `local_fault`
///   with one `agent.local_fault` event per episode; the episode ends after `resolve_after` (3)
///   clean evaluations with new data from the agent. A control probe whose latest run failed
///   but is not confirmed yet puts the agent *in doubt*: its data is held back from verdicts (not
///   counted, not listed) until the control is confirmed failing (local) or passes again.
/// - **Verdict** from the remaining agents. Per region: `major_outage` when ≥ `major_ratio` (0.8) of
///   its reporting agents fail hard; `partial_outage` when any fails (hard or flaky) or the region's
///   combined failure ratio exceeds `flaky_ratio` (with `min_runs`); `degraded_performance` when ≥
///   `degraded_ratio` (0.5) are degraded; else `operational`. Component: `major_outage` when ≥
///   `major_ratio` of all reporting agents fail hard, else the worst region status capped at
///   `partial_outage`; `unknown` when no agent reports it. Scope: `region` when exactly one
///   reporting region is not operational and another region reports; `platform` when 2+ regions
///   are, or when the only reporting region is.
/// - **Incidents (hysteresis).** Only evaluations with new (non-control) results for the component
///   count. Open after `open_after` (2) consecutive problem verdicts (`incident.opened`). While
///   investigating, a wider scope (region → platform) or a higher severity seen `open_after` times
///   in a row updates the same incident (`incident.updated`); milder verdicts do not (during
///   recovery the window drains through milder states; recovery is what `monitoring` reports).
///   The first operational verdict moves it to `monitoring` (`updated`); `resolve_after` (3)
///   consecutive operational verdicts resolve it (`incident.resolved`); `open_after` problem
///   verdicts during monitoring bring it back to `investigating` (`updated`). An `unknown` verdict
///   (nobody reporting) changes nothing. At most one open incident per component.
/// - **Events** are emitted once per transition, with stable ids (see ``AlertEvent``). Rebuild after a
///   restart: construct with the open incidents and agent states last stored, then `ingest` the
///   window's stored results (with the time they were received when known) and `evaluate`; nothing
///   already emitted is emitted again.
public struct CorrelationEngine: Sendable {
    public private(set) var config: CorrelationConfig

    // MARK: Interning (names → dense indices, so evaluation works on flat arrays)
    private var agentIndex: [String: Int32] = [:]
    private var agentIDs: [String] = []
    private var agentRegion: [Int32] = []
    private var agentRevoked: [Bool] = []
    private var agentLastReceived: [Double] = []
    private var agentHasNewData: [Bool] = []
    private var agentCleanStreak: [Int32] = []
    /// Agents seen with a failing control probe whose episode has not ended yet.
    private var controlFaultAgents = Set<Int32>()
    private var regionIndex: [String: Int32] = [:]
    private var regionNames: [String] = []
    private var componentIndex: [String: Int32] = [:]
    private var componentNames: [String] = []
    private var componentHasNewData: [Bool] = []
    /// True once a non-control series reports the component (control-only "components" get no verdict).
    private var componentIsWatched: [Bool] = []
    private var errorCodeIndex: [String: Int32] = [:]
    private var errorCodeNames: [String] = []

    // MARK: Window
    private var seriesIndex: [String: Int32] = [:]
    private var series: [SeriesWindow] = []
    private var summaries: [SeriesSummary] = []
    private var touchStamp: [UInt32] = []
    private var stamp: UInt32 = 0

    // MARK: Decisions
    /// Agents in id order, and the health of each in that order.
    private var sortedAgents: [Int32] = []
    private var health: [AgentHealth] = []
    private var healthPosition: [Int32] = []
    private var agentOrderDirty = true
    private var restoredHealth: [String: AgentHealth] = [:]
    private var tracks: [ComponentTrack] = []
    private var verdictList: [ComponentVerdict] = []

    public init(config: CorrelationConfig, agents: [AgentInfo], openIncidents: [Incident] = [], agentStates: [AgentHealth] = []) {
        self.config = config.sanitized
        for state in agentStates {
            restoredHealth[state.agent] = state
            let a = Int(internAgent(state.agent, region: state.region))
            // An agent that reported before the restart but has nothing in the window since is
            // judged from when it was last seen, so its silence is still noticed (once).
            if let seen = state.lastSeen { agentLastReceived[a] = seen.timeIntervalSince1970 }
        }
        setAgents(agents)
        for incident in openIncidents where incident.status != .resolved {
            let c = Int(internComponent(incident.component))
            componentIsWatched[c] = true
            // Never two open incidents per component: keep the most recently opened.
            if let existing = tracks[c].incident, existing.openedAt > incident.openedAt { continue }
            tracks[c].incident = incident
        }
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
    private var enrolled = Set<Int32>()

    /// Adds results to the rolling window. `receivedAt` is the collector's clock when they arrived
    /// (liveness is judged on it, not on agents' clocks). Results of revoked agents are ignored; a
    /// result id already in its window is ignored.
    public mutating func ingest(_ results: [ProbeResult], receivedAt: Date) {
        let received = receivedAt.timeIntervalSince1970
        stamp &+= 1
        var touched: [Int32] = []
        for result in results {
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
            let c = internComponent(result.component)
            let control = result.control == true
            let key = result.agent + "\u{1F}" + result.probe
            let s: Int32
            if let existing = seriesIndex[key] {
                s = existing
                series[Int(s)].component = c
                series[Int(s)].control = control
            } else {
                s = Int32(series.count)
                seriesIndex[key] = s
                series.append(SeriesWindow(agent: a, probe: result.probe, component: c, control: control))
                summaries.append(
                    SeriesSummary(
                        agent: a, component: c, control: control, state: .ok, windowRuns: 0, windowFailed: 0,
                        latestFailed: false, lastReceived: -.infinity, interval: 0, latencyMs: -1, errorCode: -1))
                touchStamp.append(0)
            }
            series[Int(s)].insert(
                WindowRun(
                    id: result.id, startedAt: result.startedAt.timeIntervalSince1970, durationMs: result.durationMs,
                    outcome: result.outcome, error: result.error),
                config: config)
            series[Int(s)].lastReceived = max(series[Int(s)].lastReceived, received)
            if touchStamp[Int(s)] != stamp {
                touchStamp[Int(s)] = stamp
                touched.append(s)
            }
            agentLastReceived[Int(a)] = max(agentLastReceived[Int(a)], received)
            agentHasNewData[Int(a)] = true
            if !control {
                componentHasNewData[Int(c)] = true
                componentIsWatched[Int(c)] = true
            }
        }
        for s in touched {
            var code: Int32 = -1
            if let error = series[Int(s)].latestError { code = internErrorCode(error.code ?? error.kind.rawValue) }
            summaries[Int(s)] = series[Int(s)].summarize(config: config, errorCode: code)
        }
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
        agentHasNewData.append(false)
        agentCleanStreak.append(0)
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

    private mutating func internComponent(_ name: String) -> Int32 {
        if let c = componentIndex[name] { return c }
        let c = Int32(componentNames.count)
        componentIndex[name] = c
        componentNames.append(name)
        componentHasNewData.append(false)
        componentIsWatched.append(false)
        tracks.append(ComponentTrack())
        return c
    }

    private mutating func internErrorCode(_ code: String) -> Int32 {
        if let e = errorCodeIndex[code] { return e }
        let e = Int32(errorCodeNames.count)
        errorCodeIndex[code] = e
        errorCodeNames.append(code)
        return e
    }

    /// Re-sorts agents by id and carries their health over (only when agents were added or moved).
    private mutating func refreshAgentOrder(now: Date) {
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

// MARK: - Evaluation

/// Per (agent, component) digest of one evaluation.
struct AgentComponent {
    var reporting = false
    var state = SeriesState.ok
    var local = false
    var latestFailed = false
    var runs: Int32 = 0
    var failed: Int32 = 0
    var latencyMs = -1.0
    /// Series whose latest error represents this agent here (-1 when none).
    var errorSeries: Int32 = -1
    var errorCode: Int32 = -1
    /// Earliest `failingSince` of its failing probes here (+infinity when none fails).
    var failingSince = Double.infinity
    /// Newest failed run of its probes here within their recent windows (-infinity when none).
    var lastFailedAt = -Double.infinity
}

/// The newest failed runs in one (component, region), by two different agents, so that "did any
/// peer fail recently?" excludes the agent asking.
struct RecentPeerFailures {
    var newest = -Double.infinity
    var newestAgent = -1
    var runnerUp = -Double.infinity

    mutating func note(_ at: Double, agent: Int) {
        guard at > -.infinity else { return }
        if at > newest {
            if newestAgent != agent { runnerUp = newest }
            newest = at
            newestAgent = agent
        } else if agent != newestAgent, at > runnerUp {
            runnerUp = at
        }
    }

    func newest(excluding agent: Int) -> Double { newestAgent == agent ? runnerUp : newest }
}

/// Per (component, region) counts of one evaluation.
struct RegionCounts {
    var reporting: Int32 = 0
    var hard: Int32 = 0
    var flaky: Int32 = 0
    var degraded: Int32 = 0
    var latestFailed: Int32 = 0
    var runs: Int32 = 0
    var failed: Int32 = 0

    mutating func add(_ x: AgentComponent, sign: Int32 = 1) {
        reporting += sign
        switch x.state {
        case .failing: hard += sign
        case .flaky: flaky += sign
        case .degraded: degraded += sign
        case .ok: break
        }
        if x.latestFailed { latestFailed += sign }
        runs += sign * x.runs
        failed += sign * x.failed
    }

    static func += (lhs: inout RegionCounts, rhs: RegionCounts) {
        lhs.reporting += rhs.reporting
        lhs.hard += rhs.hard
        lhs.flaky += rhs.flaky
        lhs.degraded += rhs.degraded
        lhs.latestFailed += rhs.latestFailed
        lhs.runs += rhs.runs
        lhs.failed += rhs.failed
    }
}

/// A component's incident state machine.
struct ComponentTrack {
    var incident: Incident?
    var badStreak = 0
    var goodStreak = 0
    var pendingScope: ProblemScope?
    var pendingSeverity: ComponentStatus?
    var pendingCount = 0
    var lastStatus: ComponentStatus?
    var since: Date?
    /// When the component's current run of operational evaluations began (nil while bad).
    var goodSince: Double?
    /// The last resolved incident: when its recovery began and where it was. Failures before
    /// that belong to it and say nothing about a later problem of one agent.
    var lastRecovery: Recovery?

    struct Recovery {
        var at: Double
        var platform: Bool
        var regions: Set<String>
    }
}

extension CorrelationEngine {
    /// Decides verdicts, agent health and incidents as of `now`, and returns the events of the
    /// transitions it made. Call it on a steady tick (e.g. every second).
    public mutating func evaluate(now: Date) -> CorrelationOutput {
        refreshAgentOrder(now: now)
        let t = now.timeIntervalSince1970
        let agentCount = agentIDs.count
        let componentCount = componentNames.count
        let regionCount = regionNames.count
        let cfg = config

        // 1. Liveness: each agent's shortest probe interval, then silence.
        var agentInterval = [Double](repeating: .infinity, count: agentCount)
        // Hot loops over every series use buffer pointers and `while`: debug builds (what tests
        // run) do not specialize Array iteration, and this keeps 200,000 series within budget.
        summaries.withUnsafeBufferPointer { all in
            var i = 0
            while i < all.count {
                let s = all[i]
                let a = Int(s.agent)
                if s.interval > 0 && s.interval < agentInterval[a] { agentInterval[a] = s.interval }
                i += 1
            }
        }
        var excluded = [Bool](repeating: false, count: agentCount)  // silent or revoked
        var silent = [Bool](repeating: false, count: agentCount)
        for a in 0..<agentCount {
            if agentRevoked[a] {
                excluded[a] = true
                continue
            }
            let last = agentLastReceived[a]
            if last == -.infinity || t - last > Self.silenceThreshold(interval: agentInterval[a], cfg) {
                excluded[a] = true
                silent[a] = true
            }
        }

        // 1b. An agent whose control probe recovered: what its other probes saw while its network
        // was broken is no evidence about the platform, so their windows start afresh.
        if !controlFaultAgents.isEmpty {
            var stillFailing = Set<Int32>()
            for s in summaries where s.control && (s.state == .failing || (s.state.isFailing && s.latestFailed)) {
                stillFailing.insert(s.agent)
            }
            for a in controlFaultAgents.subtracting(stillFailing) {
                forgetRunsBeforeRecovery(agent: a)
                controlFaultAgents.remove(a)
            }
        }

        // 2. Each agent's state per component (worst of its probes), and failing controls.
        var grid = [AgentComponent](repeating: AgentComponent(), count: agentCount * componentCount)
        var controlFailing = [Bool](repeating: false, count: agentCount)
        // A control probe whose latest run failed but is not confirmed yet: the agent's own network
        // is in doubt, so its data is held back from verdicts (not yet a local fault). Without this,
        // a cut agent's other probes, confirmed before its control, counted against the platform.
        var controlInDoubt = [Bool](repeating: false, count: agentCount)
        let fallbackLimit = max(cfg.silentMin, cfg.silentAfter)
        summaries.withUnsafeBufferPointer { all in
            var i = -1
            while i + 1 < all.count {
                i += 1
                let s = all[i]
                let a = Int(s.agent)
                if excluded[a] || s.windowRuns == 0 { continue }
                let age = t - s.lastReceived
                let limit = s.interval > 0 ? max(cfg.silentMin, cfg.silentAfterIntervals * s.interval) : fallbackLimit
                if age > cfg.windowAge || age > limit { continue }
                if s.control {
                    // A control that passes its latest run counts as recovered at once: its own
                    // window of old failures says nothing about the agent's network now.
                    if s.state == .failing || (s.state.isFailing && s.latestFailed) {
                        controlFailing[a] = true
                    } else if s.latestFailed {
                        controlInDoubt[a] = true
                    }
                    continue
                }
                let g = a * componentCount + Int(s.component)
                var x = grid[g]
                x.reporting = true
                x.runs += s.windowRuns
                x.failed += s.windowFailed
                if s.latestFailed { x.latestFailed = true }
                if s.latencyMs > x.latencyMs { x.latencyMs = s.latencyMs }
                if s.state.isFailing, s.failingSince < x.failingSince { x.failingSince = s.failingSince }
                if s.lastFailedAt > x.lastFailedAt { x.lastFailedAt = s.lastFailedAt }
                let worse = s.state.rawValue > x.state.rawValue
                if worse || (x.errorSeries < 0 && s.errorCode >= 0 && s.state.rawValue == x.state.rawValue) {
                    if worse { x.state = s.state }
                    x.errorSeries = s.errorCode >= 0 ? Int32(i) : x.errorSeries
                    x.errorCode = s.errorCode >= 0 ? s.errorCode : x.errorCode
                }
                grid[g] = x
            }
        }

        // 3. Counts per (component, region) from agents whose control probes pass.
        var counts = [RegionCounts](repeating: RegionCounts(), count: componentCount * regionCount)
        var recentFailures = [RecentPeerFailures](repeating: RecentPeerFailures(), count: componentCount * regionCount)
        var candidates: [Int] = []
        for a in 0..<agentCount where !excluded[a] && !controlFailing[a] && !controlInDoubt[a] {
            let r = Int(agentRegion[a])
            var failsSomewhere = false
            for c in 0..<componentCount {
                let x = grid[a * componentCount + c]
                guard x.reporting else { continue }
                counts[c * regionCount + r].add(x)
                recentFailures[c * regionCount + r].note(x.lastFailedAt, agent: a)
                if x.state.isFailing { failsSomewhere = true }
            }
            if failsSomewhere { candidates.append(a) }
        }

        // 4. Local faults by peers; 5. take local data out of the counts.
        var wholeLocal = controlFailing
        var localReason = [String?](repeating: nil, count: agentCount)
        for a in 0..<agentCount where controlFailing[a] && !excluded[a] {
            localReason[a] = "control probe failing"
            controlFaultAgents.insert(Int32(a))
        }
        var peerLocal: [(agent: Int, component: Int)] = []
        for a in candidates {
            let r = Int(agentRegion[a])
            var reported = 0
            var localHere: [Int] = []
            for c in 0..<componentCount {
                let x = grid[a * componentCount + c]
                guard x.reporting else { continue }
                reported += 1
                guard x.state.isFailing else { continue }
                // An incident under investigation covering this region explains the failure: it is
                // that incident's evidence, not a local fault (e.g. an agent whose slow probe still
                // fails when its peers already pass again as the platform recovers).
                if let incident = tracks[c].incident, incident.status == .investigating,
                    incident.scope == .platform || incident.regions.contains(regionNames[r])
                {
                    continue
                }
                let k = counts[c * regionCount + r]
                let peers = k.reporting - 1
                let peerRuns = k.runs - x.runs
                let peerFailed = k.failed - x.failed
                let peerLatestFailed = k.latestFailed - (x.latestFailed ? 1 : 0)
                // Peers' failures from before this agent's problem began (a platform incident that
                // has since recovered, still in their windows) say nothing about it. Nor do those
                // of a resolved incident here: a flaky series' problem "began" at its first failure
                // in the window, which may be that incident's.
                var problemSince = x.failingSince
                if let recovery = tracks[c].lastRecovery, recovery.platform || recovery.regions.contains(regionNames[r]) {
                    problemSince = max(problemSince, recovery.at)
                }
                let peersFailedSince = recentFailures[c * regionCount + r].newest(excluding: a) >= problemSince
                if peers >= 1, peerLatestFailed == 0, peerRuns > 0,
                    !peersFailedSince || Double(peerFailed) < cfg.localPeerMaxRatio * Double(peerRuns)
                {
                    localHere.append(c)
                }
            }
            guard !localHere.isEmpty else { continue }
            let names = localHere.map { componentNames[$0] }.joined(separator: ", ")
            if localHere.count >= 2, localHere.count * 2 > reported {
                wholeLocal[a] = true
                localReason[a] = "fails on most of its components (\(names)) while its \(regionNames[r]) peers succeed"
            } else {
                localReason[a] = "fails on \(names) while its \(regionNames[r]) peers succeed"
            }
            for c in localHere { peerLocal.append((a, c)) }
        }
        for (a, c) in peerLocal where !wholeLocal[a] {
            let g = a * componentCount + c
            grid[g].local = true
            counts[c * regionCount + Int(agentRegion[a])].add(grid[g], sign: -1)
        }
        for a in 0..<agentCount where wholeLocal[a] && !excluded[a] {
            let r = Int(agentRegion[a])
            for c in 0..<componentCount {
                let g = a * componentCount + c
                guard grid[g].reporting else { continue }
                if !controlFailing[a] { counts[c * regionCount + r].add(grid[g], sign: -1) }
                grid[g].local = true
            }
        }

        // 6. Evidence lists, in agent id order so they are the same after a rebuild.
        var failingNames = [[String]](repeating: [], count: componentCount)
        var localNames = [[String]](repeating: [], count: componentCount)
        var sampleSeries = [[Int32]](repeating: [], count: componentCount)
        var codeCounts = [Int32](repeating: 0, count: componentCount * max(1, errorCodeNames.count))
        var latencies = [[Double]](repeating: [], count: componentCount)
        let codeStride = max(1, errorCodeNames.count)
        let listCap = cfg.maxListedAgents
        for a32 in sortedAgents {
            let a = Int(a32)
            if excluded[a] || (controlInDoubt[a] && !controlFailing[a]) { continue }
            for c in 0..<componentCount {
                let x = grid[a * componentCount + c]
                guard x.reporting else { continue }
                if x.local {
                    if localNames[c].count < listCap { localNames[c].append(agentIDs[a]) }
                    continue
                }
                if x.latencyMs >= 0 { latencies[c].append(x.latencyMs) }
                if x.state.isFailing {
                    if failingNames[c].count < listCap { failingNames[c].append(agentIDs[a]) }
                    if x.errorCode >= 0 { codeCounts[c * codeStride + Int(x.errorCode)] += 1 }
                    if x.errorSeries >= 0, sampleSeries[c].count < 50 { sampleSeries[c].append(x.errorSeries) }
                }
            }
        }

        // 7. Verdicts and incidents per component.
        var newVerdicts: [ComponentVerdict] = []
        var changed: [Incident] = []
        var events: [AlertEvent] = []
        for c in componentNames.indices.sorted(by: { componentNames[$0] < componentNames[$1] }) where componentIsWatched[c] {
            var total = RegionCounts()
            var regionStatus: [String: ComponentStatus] = [:]
            var badRegions: [String] = []
            var worstRegion = ComponentStatus.operational
            for r in 0..<regionCount {
                let k = counts[c * regionCount + r]
                guard k.reporting > 0 else { continue }
                total += k
                let status = Self.regionStatus(k, cfg)
                regionStatus[regionNames[r]] = status
                if status != .operational { badRegions.append(regionNames[r]) }
                if status > worstRegion { worstRegion = status }
            }
            badRegions.sort()
            var status: ComponentStatus
            var scope: ProblemScope?
            if total.reporting == 0 {
                status = .unknown
            } else if total.hard > 0, Double(total.hard) >= cfg.majorRatio * Double(total.reporting) {
                status = .majorOutage
            } else {
                status = min(worstRegion, .partialOutage)
            }
            if status != .operational && status != .unknown {
                scope = badRegions.count == 1 && regionStatus.count > 1 ? .region : .platform
            }
            let evidence = makeEvidence(
                component: c, total: total, failingRegions: badRegions, failingNames: failingNames[c],
                localNames: localNames[c], sampleSeries: sampleSeries[c],
                codeCounts: codeCounts[(c * codeStride)..<(c * codeStride + codeStride)], latencies: &latencies[c])
            var track = tracks[c]
            if track.lastStatus != status || track.since == nil {
                track.lastStatus = status
                track.since = now
            }
            stepIncident(
                &track, component: componentNames[c], status: status, scope: scope, evidence: evidence,
                hasNewData: componentHasNewData[c], now: now, changed: &changed, events: &events)
            newVerdicts.append(
                ComponentVerdict(
                    component: componentNames[c], status: status, scope: scope, regions: regionStatus, evidence: evidence,
                    since: track.since ?? now, updatedAt: now, incidentID: track.incident?.id))
            tracks[c] = track
            componentHasNewData[c] = false
        }
        verdictList = newVerdicts

        // 8. Agent health and agent events.
        for a32 in sortedAgents {
            let a = Int(a32)
            let position = Int(healthPosition[a])
            var h = health[position]
            let lastSeen = agentLastReceived[a] == -.infinity ? nil : Date(timeIntervalSince1970: agentLastReceived[a])
            if h.lastSeen != lastSeen { h.lastSeen = lastSeen }
            let previous = h.state
            if agentRevoked[a] {
                if previous != .revoked { h = enter(h, .revoked, since: now, reason: "agent key revoked") }
            } else if silent[a] {
                if previous != .silent {
                    let since = lastSeen ?? now
                    h = enter(h, .silent, since: since, reason: "no result for \(Int((t - (lastSeen?.timeIntervalSince1970 ?? t)).rounded())) s")
                    if lastSeen != nil {
                        events.append(agentEvent(.agentSilent, health: h, now: now))
                    }
                }
                agentCleanStreak[a] = 0
            } else if let reason = localReason[a] {
                agentCleanStreak[a] = 0
                let components = (0..<componentCount).filter { grid[a * componentCount + $0].local && grid[a * componentCount + $0].state.isFailing }
                    .map { componentNames[$0] }.sorted()
                if previous != .localFault {
                    h = enter(h, .localFault, since: now, reason: reason)
                    h.localComponents = components
                    events.append(agentEvent(.agentLocalFault, health: h, now: now))
                } else {
                    h.reason = reason
                    h.localComponents = components
                }
            } else if previous == .localFault {
                if controlInDoubt[a] {
                    agentCleanStreak[a] = 0
                } else if agentHasNewData[a] {
                    agentCleanStreak[a] += 1
                }
                if agentCleanStreak[a] >= cfg.resolveAfter {
                    h = enter(h, .ok, since: now, reason: nil)
                    agentCleanStreak[a] = 0
                    forgetRunsBeforeRecovery(agent: Int32(a))
                }
            } else if previous != .ok {
                h = enter(h, .ok, since: now, reason: nil)
            }
            health[position] = h
            agentHasNewData[a] = false
        }
        return CorrelationOutput(verdicts: verdictList, agents: health, changedIncidents: changed, events: events)
    }

    // Static: in debug builds a method call on `self` from a mutating context copies the engine.
    private static func silenceThreshold(interval: Double, _ cfg: CorrelationConfig) -> Double {
        interval.isFinite ? max(cfg.silentMin, cfg.silentAfterIntervals * interval) : max(cfg.silentMin, cfg.silentAfter)
    }

    /// What the runs of an agent's local-fault episode said about the platform: nothing. Once the
    /// agent has recovered, its failures from that time must not count as evidence against the
    /// platform (they would otherwise linger in its windows and colour the next verdicts), so its
    /// non-control windows start afresh.
    private mutating func forgetRunsBeforeRecovery(agent: Int32) {
        for s in series.indices where series[s].agent == agent && !series[s].control {
            series[s].runs.removeAll(keepingCapacity: true)
            summaries[s] = series[s].summarize(config: config, errorCode: -1)
        }
    }

    static func regionStatus(_ k: RegionCounts, _ cfg: CorrelationConfig) -> ComponentStatus {
        let reporting = Double(k.reporting)
        if k.hard > 0, Double(k.hard) >= cfg.majorRatio * reporting { return .majorOutage }
        if k.hard + k.flaky > 0 { return .partialOutage }
        // The pooled ratio catches failures spread thinly over many agents. Early on a window
        // counts as `min_runs` long per agent, so one failed run of each of two agents does not read
        // as an outage ("a single failed run opens nothing"), and passing runs arriving later can
        // only lower the ratio (never re-open a problem without a new failure).
        if k.failed >= Int32(cfg.confirmFailures),
            Double(k.failed) > cfg.flakyRatio * Double(max(k.runs, Int32(cfg.minRuns) * max(1, k.reporting)))
        {
            return .partialOutage
        }
        // More than the ratio: one slow agent of two is that agent's problem, not the region's.
        if k.degraded > 0, Double(k.degraded) > cfg.degradedRatio * reporting { return .degradedPerformance }
        return .operational
    }

    private func enter(_ h: AgentHealth, _ state: AgentState, since: Date, reason: String?) -> AgentHealth {
        var h = h
        h.state = state
        h.since = since
        h.reason = reason
        h.localComponents = []
        return h
    }

    private func agentEvent(_ type: AlertEventType, health h: AgentHealth, now: Date) -> AlertEvent {
        let ms = Int64((h.since.timeIntervalSince1970 * 1000).rounded())
        let what = type == .agentSilent ? "silent" : "local fault"
        return AlertEvent(
            id: "\(type.rawValue).\(h.agent).\(ms)", type: type, occurredAt: now, status: h.state.rawValue, scope: .agent,
            regions: [h.region], agents: [h.agent], agent: h.agent,
            summary: "agent \(h.agent) (\(h.region)): \(what): \(h.reason ?? "")")
    }

    // MARK: - Evidence

    private func makeEvidence(
        component c: Int, total: RegionCounts, failingRegions: [String], failingNames: [String], localNames: [String],
        sampleSeries: [Int32], codeCounts: ArraySlice<Int32>, latencies: inout [Double]
    ) -> Evidence {
        var codes: [String: Int] = [:]
        for (offset, n) in codeCounts.enumerated() where n > 0 { codes[errorCodeNames[offset]] = Int(n) }
        var distinct = Set<ProbeError>()
        for s in sampleSeries {
            if let e = series[Int(s)].latestError { distinct.insert(e) }
        }
        let samples = distinct.sorted {
            ($0.code ?? "", $0.kind.rawValue, $0.step, $0.message) < ($1.code ?? "", $1.kind.rawValue, $1.step, $1.message)
        }.prefix(config.maxSampleErrors)
        let (p50, p95) = Self.percentiles(&latencies)
        return Evidence(
            failingAgents: failingNames, failingAgentCount: Int(total.hard + total.flaky), failingRegions: failingRegions,
            reportingAgents: Int(total.reporting), degradedAgents: Int(total.degraded),
            failureRatio: total.runs > 0 ? (Double(total.failed) / Double(total.runs) * 1000).rounded() / 1000 : 0,
            latencyP50Ms: p50, latencyP95Ms: p95, sampleErrors: Array(samples), errorCodes: codes, localAgents: localNames)
    }

    /// Nearest-rank p50/p95: exact for up to 512 values, from a log-bucket histogram (about 2%
    /// resolution) above that so large fleets never sort per tick.
    static func percentiles(_ values: inout [Double]) -> (Double?, Double?) {
        guard !values.isEmpty else { return (nil, nil) }
        func rank(_ p: Double, _ n: Int) -> Int { max(0, min(n - 1, Int((p * Double(n)).rounded(.up)) - 1)) }
        func round1(_ v: Double) -> Double { (v * 10).rounded() / 10 }
        if values.count <= 512 {
            values.sort()
            return (round1(values[rank(0.5, values.count)]), round1(values[rank(0.95, values.count)]))
        }
        let growth = log(1.02)
        var buckets = [Int32](repeating: 0, count: 1200)
        for v in values {
            let b = v <= 0.1 ? 0 : min(buckets.count - 1, Int(log(v / 0.1) / growth))
            buckets[b] += 1
        }
        func value(atRank target: Int) -> Double {
            var seen = 0
            for (b, n) in buckets.enumerated() {
                seen += Int(n)
                if seen > target { return round1(0.1 * exp((Double(b) + 0.5) * growth)) }
            }
            return round1(values.max() ?? 0)
        }
        return (value(atRank: rank(0.5, values.count)), value(atRank: rank(0.95, values.count)))
    }
}
