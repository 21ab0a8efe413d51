import Foundation
import SondeCore

// One evaluation, as phases: liveness → per-agent states → local faults → region counts →
// component verdicts and incident transitions → agent health. Each phase reads what the one
// before produced (an `EvaluationFrame`) and the engine's window digests; none reads a clock.

/// Per (agent, component) digest of one evaluation.
struct AgentComponent {
    var reporting = false
    var state = SeriesState.ok
    /// Excluded as the agent's own fault.
    var local = false
    /// Failing alone where same-region peers could confirm it, not (yet) shown to be local:
    /// held back from verdicts until a peer fails too or the peer test calls it local.
    var inDoubt = false
    /// Reporting from a region where fewer than half of the agents that recently reported this
    /// component still do (the others went silent): not the region's witness (`regionQuorumPhase`).
    var withoutQuorum = false
    var latestFailed = false
    var latestSlow = false
    /// Runs and failed runs over the recent window (`flaky_window` per probe).
    var runs: Int32 = 0
    var failed: Int32 = 0
    /// Runs, failed and non-ok runs over the whole window (the peer test and recovery use these).
    var allRuns: Int32 = 0
    var allFailed: Int32 = 0
    var allBad: Int32 = 0
    /// The fewest `ok` runs in a row at the end of any of its probes here.
    var cleanTail = Int32.max
    /// Per-step failure rate terms and the problem span's runs (see `SeriesSummary`).
    var rateSteps: Int32 = 0
    var rateFailed: Int32 = 0
    var spanRuns: Int32 = 0
    var spanBad: Int32 = 0
    /// Newest non-ok run, on the collector's time line (agent time + the agent's offset).
    var newestBadAt = -Double.infinity
    /// When its probes here showed their state (`SeriesSummary.stateShownAt`, the newest of them),
    /// on the collector's time line; -infinity while they are all `ok`.
    var stateShownAt = -Double.infinity
    /// When the collector last received one of its runs here.
    var lastReceived = -Double.infinity
    /// When its newest run here started, on the collector's time line.
    var newestStartedAt = -Double.infinity
    var latencyMs = -1.0
    /// The longest typical interval of its probes here (s; 0 when none can be estimated yet).
    var interval = 0.0
    /// Series whose latest error represents this agent here (-1 when none).
    var errorSeries: Int32 = -1
    var errorCode: Int32 = -1

    var counts: Bool { reporting && !local && !inDoubt && !withoutQuorum }

    /// These counts scaled down to at most `cap` runs over the whole window (rates kept), so one
    /// agent weighs at most as much as `cap` runs in a pooled comparison.
    func weighed(atMost cap: Int32) -> AgentComponent {
        guard allRuns > cap, cap > 0 else { return self }
        var x = self
        let scale = Double(cap) / Double(allRuns)
        x.allRuns = cap
        x.allFailed = Int32((Double(allFailed) * scale).rounded())
        x.allBad = Int32((Double(allBad) * scale).rounded())
        x.runs = Int32((Double(runs) * scale).rounded(.up))
        x.failed = Int32((Double(failed) * scale).rounded())
        return x
    }
}

/// Per (component, region) sums over the agents that count.
struct RegionCounts {
    var reporting: Int32 = 0
    var hard: Int32 = 0
    var flaky: Int32 = 0
    var degraded: Int32 = 0
    var latestFailed: Int32 = 0
    /// Agents whose latest run here was slow (degraded or not yet).
    var latestSlow: Int32 = 0
    var runs: Int32 = 0
    var failed: Int32 = 0
    var allRuns: Int32 = 0
    var allFailed: Int32 = 0
    var allBad: Int32 = 0
    /// Agents with `confirm_failures` failed runs in their window (listed as failing).
    var repeatFailing: Int32 = 0
    var newestBadAt = -Double.infinity
    /// The newest `stateShownAt` of its agents that are not `ok`: the fault was on then.
    var stateShownAt = -Double.infinity
    var lastReceived = -Double.infinity
    /// The newest run's start of any agent here, on the collector's time line.
    var newestStartedAt = -Double.infinity
    var rateSteps: Int32 = 0
    var rateFailed: Int32 = 0
    var spanRuns: Int32 = 0
    var spanBad: Int32 = 0
    /// Σ and least of the agents' clean tails (passing runs in a row at the end).
    var cleanRuns: Int32 = 0
    var leastClean = Int32.max

    /// The per-step failure rate (failed runs / attempted steps of the component, after each
    /// series' first failure); nil before any series has a run after its first failure.
    var stepFailureRate: Double? { rateSteps > 0 ? Double(rateFailed) / Double(rateSteps) : nil }

    /// The run failure rate of the problem (recovery's p), given `clean` runs since its newest
    /// failure. A hard fault — every run between each probe's first and newest failure failed,
    /// at least `hardRuns` (`CorrelationConfig.hardFaultRuns`) of them pooled — is
    /// (n + ½) / (n + 1) (shrunk by half a run: a few failed runs in a row are no proof that every
    /// run fails). Otherwise the window's non-ok runs over its runs before the clean ones: runs
    /// from before the fault dilute it, which only asks a recovery for more runs (a random
    /// fault's rate read from a few failures can be far too high, and would end an incident while
    /// the fault is on).
    func problemFailureRate(clean: Int32, hardRuns: Int) -> Double {
        if spanRuns >= Int32(hardRuns), spanBad == spanRuns { return (Double(spanRuns) + 0.5) / (Double(spanRuns) + 1) }
        return Double(allBad) / Double(max(1, allRuns - clean))
    }

    mutating func add(_ x: AgentComponent, confirm: Int32 = .max) {
        reporting += 1
        if x.state.isFailing || x.allFailed >= confirm { repeatFailing += 1 }
        switch x.state {
        case .failing: hard += 1
        case .flaky: flaky += 1
        case .degraded: degraded += 1
        case .ok: break
        }
        if x.latestFailed { latestFailed += 1 }
        if x.latestSlow { latestSlow += 1 }
        runs += x.runs
        failed += x.failed
        allRuns += x.allRuns
        allFailed += x.allFailed
        allBad += x.allBad
        newestBadAt = max(newestBadAt, x.newestBadAt)
        if x.state != .ok { stateShownAt = max(stateShownAt, x.stateShownAt) }
        lastReceived = max(lastReceived, x.lastReceived)
        newestStartedAt = max(newestStartedAt, x.newestStartedAt)
        rateSteps += x.rateSteps
        rateFailed += x.rateFailed
        spanRuns += x.spanRuns
        spanBad += x.spanBad
        let clean = x.cleanTail == .max ? 0 : x.cleanTail
        cleanRuns += clean
        leastClean = min(leastClean, clean)
    }

    static func += (lhs: inout RegionCounts, rhs: RegionCounts) {
        lhs.reporting += rhs.reporting
        lhs.hard += rhs.hard
        lhs.flaky += rhs.flaky
        lhs.degraded += rhs.degraded
        lhs.latestFailed += rhs.latestFailed
        lhs.latestSlow += rhs.latestSlow
        lhs.runs += rhs.runs
        lhs.failed += rhs.failed
        lhs.allRuns += rhs.allRuns
        lhs.allFailed += rhs.allFailed
        lhs.allBad += rhs.allBad
        lhs.repeatFailing += rhs.repeatFailing
        lhs.newestBadAt = max(lhs.newestBadAt, rhs.newestBadAt)
        lhs.stateShownAt = max(lhs.stateShownAt, rhs.stateShownAt)
        lhs.lastReceived = max(lhs.lastReceived, rhs.lastReceived)
        lhs.newestStartedAt = max(lhs.newestStartedAt, rhs.newestStartedAt)
        lhs.rateSteps += rhs.rateSteps
        lhs.rateFailed += rhs.rateFailed
        lhs.spanRuns += rhs.spanRuns
        lhs.spanBad += rhs.spanBad
        lhs.cleanRuns += rhs.cleanRuns
        lhs.leastClean = min(lhs.leastClean, rhs.leastClean)
    }

    /// Its agents are past the problem: each passed its latest `runs` runs and, pooled, enough
    /// runs passed (M for the problem's failure rate, see `cleanRunsNeeded`) that the problem
    /// still on would have shown. Its old failures then say nothing about now.
    func recovered(runs: Int, hardRuns: Int, confidence: Double) -> Bool {
        guard reporting > 0, allBad > 0, leastClean != .max, leastClean >= Int32(runs) else { return false }
        let p = problemFailureRate(clean: cleanRuns, hardRuns: hardRuns)
        return cleanRuns >= CorrelationEngine.cleanRunsNeeded(failureRate: p, confidence: confidence)
    }

    /// The same counts with the problem forgotten (a recovered region): still reporting, with
    /// its history (recovery of an open incident reads it), but nothing failing or slow now.
    var past: RegionCounts {
        var k = self
        k.hard = 0
        k.flaky = 0
        k.degraded = 0
        k.latestFailed = 0
        k.latestSlow = 0
        k.failed = 0
        k.repeatFailing = 0
        k.stateShownAt = -.infinity
        k.rateSteps = 0
        k.rateFailed = 0
        return k
    }
}

/// A component's incident state machine.
struct ComponentTrack {
    var incident: Incident?
    var badStreak = 0
    /// When the current streak of problem verdicts began (collector time); nil while good.
    var badSince: Double?
    /// When that streak began, the moment (collector time line) its bad agents' runs show the
    /// fault was on: the oldest of the `confirm_failures` bad runs that confirmed each, the newest
    /// of those over the agents (the newest bad run when no agent's own runs confirm it). The
    /// region-scope wait counts another region's runs as fresh only if they started after it.
    var faultSeenAt = -Double.infinity
    var pendingScope: ProblemScope?
    var pendingSeverity: ComponentStatus?
    var pendingCount = 0
    /// Members (regions, agents, failure codes, keyed "region eu", "agent eu-1", "code …") the
    /// open incident does not list yet, and the evaluations in a row each was seen; members it
    /// lists that are gone, and since when (collector time) without a break. See
    /// `keepMembershipCurrent`.
    var memberPresent: [String: Int] = [:]
    var memberAbsentSince: [String: Double] = [:]
    /// When members were first judged to have left and not yet announced (see `departureGather`).
    var departuresJudgedAt: Double?
    /// Every region and agent the open incident listed at some point: its record when it is
    /// resolved (the recovery drops regions one by one, and the history must not say that a
    /// three-region outage was a us one).
    var touchedRegions: Set<String> = []
    var touchedAgents: Set<String> = []
    /// When the incident's membership was last announced (opened, escalated, changed).
    var membershipAnnouncedAt = -Double.infinity
    /// The failure codes last announced, when a membership change set them (else the incident's
    /// evidence at its last transition has them).
    var announcedCodes: [String]?

    /// Pending membership changes are dropped (a transition announced the whole picture anew).
    mutating func forgetMembershipChanges() {
        memberPresent = [:]
        memberAbsentSince = [:]
        departuresJudgedAt = nil
    }

    /// An incident opened, escalated or relapsed at `t`: its membership is the evidence's now.
    mutating func membershipAnnounced(at t: Double) {
        forgetMembershipChanges()
        membershipAnnouncedAt = t
        announcedCodes = nil
    }
    /// The status the verdict shows (see `shownVerdict`), and since when.
    var lastStatus: ComponentStatus?
    /// The status measured at the last evaluation (a held verdict may show a problem meanwhile).
    var measured: ComponentStatus?
    var since: Date?
    /// Runs up to this time (collector time line) belong to a recovered incident: verdicts use
    /// only later runs, so its failures never colour the next ones. -infinity: all runs count.
    var horizon = -Double.infinity
    /// Each agent's clock offset when `horizon` was set, so the horizon splits every agent's runs
    /// where it did then. Offsets are re-measured on every push and jitter by milliseconds: with
    /// today's offset a run at the horizon (the incident's newest failure) flipped back into the
    /// verdicts' runs, read as a pass-fail mix, and a hard fault's recovery asked for more runs.
    /// Empty (restored incidents): today's offsets.
    var horizonOffsets: [Double] = []

    /// The horizon on agent `a`'s clock: its runs that started after this count.
    func horizonCutoff(agent a: Int, offsets: [Double]) -> Double {
        horizon - (a < horizonOffsets.count ? horizonOffsets[a] : offsets[a]) + Self.cutoffSlack
    }

    /// Added to a cutoff taken back to an agent's clock (`t + o − o`), so the run at `t` stays on
    /// its side: run starts are whole milliseconds, and the sum may round below `t`.
    static let cutoffSlack = 0.0005
    /// The newest problem run seen since the component's verdict turned bad, and the longest
    /// stretch between two of them: a recovery must stay clean for 1.5 × the longest lull the
    /// fault itself had (a fault that fails in bursts is not over at its first pause).
    var newestBad = -Double.infinity
    var longestLull = 0.0
    /// The newest run (any outcome) the last evaluation saw from the agents that count: a gap
    /// between problem runs is a lull only if runs after the earlier one had been seen by then.
    var newestRunSeen = -Double.infinity
    /// The latest automatic resolution: when, the newest problem run then, and the longest lull.
    /// A problem back within `flap_memory` of it may be the same fault coming and going: the gap
    /// it came back after is `carriedLull`, and the new incident's resolution waits out a longer
    /// clean stretch than it (a fault 20 s on, 20 s off opened an incident every 40 s: five and
    /// 32 webhooks in 3 minutes; the verdict review, 32nd session).
    var lastResolution: (at: Double, newestBad: Double, lull: Double)?
    /// The gap an incident's fault came back after its predecessor's resolution (and that one's
    /// own lulls). Only resolution waits for it: `monitoring` follows the runs, so an incident
    /// whose fault came back minutes later says it is recovering once every agent passes (it
    /// stayed `investigating` for 4 minutes with every agent passing; verdict review, 34th session).
    var carriedLull = 0.0
    /// How long a recovery (to `monitoring`, or of one region in the verdict) must stay clean.
    var recoveryLull: Double { 1.5 * longestLull }
    /// How long a clean stretch must last before the incident resolves.
    var resolutionLull: Double { 1.5 * max(longestLull, carriedLull) }
    /// An open incident whose newest failure is older than the longest lull its fault had, with
    /// passing runs since: its recovery looks under way (`wantsFreshRuns`).
    var recoveryUnderway = false
    /// What people said about this component's incidents (see CorrelationEngine+HumanUpdates).
    var human = HumanTrack()
    /// The open incident's fault over its whole life, in runs (see ``FaultRecord``).
    var faultRecord = FaultRecord()

    struct Membership: Equatable {
        var regions: [String]
        var agents: [String]
        var codes: [String]
    }
}

/// An open incident's fault counted in its regions' runs as they reach the collector, from the
/// incident's opening on: not only the windows' latest `window_runs`, which cap how many passing
/// runs a recovery can ask for. With 20 runs per series a region of two agents at a 10 % fault
/// read its rate from the few runs before its newest failure, 0.25 and more, and "recovered"
/// after 24–40 passes: 7 of 8 simulated half-hours of a steady regional fault resolved and opened
/// again, up to 5 times.
struct FaultRecord {
    /// Whether the incident's first evaluation has taken every series' counts as its baseline.
    var started = false
    /// Each series' `received` / `receivedBad` when last read.
    var seen: [Int32: (runs: Int, bad: Int)] = [:]
    /// Runs counted in the incident's regions since it opened, the non-ok ones, and the runs
    /// that passed since the newest non-ok one.
    var runs = 0
    var bad = 0
    var clean = 0
    /// Clean stretches that a non-ok run ended: each was a chance for a fault still on to look
    /// recovered, so recovery's confidence is split among them (see ``neededRuns(confidence:)``).
    var stretches = 0

    /// Reads the runs added since the last evaluation. `counted` says whether a series' new runs
    /// are evidence (its agent counts and its region is in the incident's scope); the rest are
    /// only taken as seen, so an agent back from a local fault does not bring its episode's
    /// failures in.
    /// `after` gives a series' horizon (agent clock): the first read takes the fault so far from
    /// its window's runs after it, not from a recovered incident's runs before.
    mutating func read(_ series: [SeriesWindow], open: [Int32], after: (Int32) -> Double, counted: (Int32) -> Bool) {
        var newRuns = 0
        var newBad = 0
        for s in open {
            let w = series[Int(s)]
            let last = seen[s] ?? (started ? (0, 0) : (w.received, w.receivedBad))
            seen[s] = (w.received, w.receivedBad)
            guard counted(s) else { continue }
            newRuns += w.received - last.runs
            newBad += w.receivedBad - last.bad
            if !started, let first = w.runs.firstIndex(where: { $0.startedAt > after(s) && $0.outcome != .ok }) {
                // The fault so far, from the windows: the runs after each series' first non-ok
                // one (starting at a failure would read a higher rate than the fault's).
                runs += w.runs.count - first - 1
                bad += w.runs[(first + 1)...].count { $0.outcome != .ok }
            }
        }
        started = true
        runs += newRuns
        bad += newBad
        if newBad > 0 {
            // The order inside one push is not kept here: passes beside a failure start nothing.
            if clean > 0 { stretches += 1 }
            clean = 0
        } else {
            clean += newRuns
        }
    }

    /// Passing runs in a row after which the fault, failing this record's share of runs, would
    /// have shown a failure with `confidence`, taken over every clean stretch it had (Bonferroni):
    /// ⌈ln((1 − c) / stretches) / ln(1 − p)⌉, p = bad / (runs − clean). 0 when nothing failed.
    func neededRuns(confidence: Double) -> Int32 {
        guard bad > 0, runs > clean else { return 0 }
        let p = Double(bad) / Double(runs - clean)
        return CorrelationEngine.cleanRunsNeeded(failureRate: p, confidence: 1 - (1 - confidence) / Double(max(1, stretches + 1)))
    }
}

/// What the phases of one evaluation hand to each other.
struct EvaluationFrame {
    var t: Double
    var agentInterval: [Double]
    /// Silent or revoked: nothing of theirs counts.
    var excluded: [Bool]
    var silent: [Bool]
    /// Catching up: not silent, but none of its series holds a run that ended within its
    /// silence threshold (on the collector's time line). Its spool is still arriving after a
    /// downtime (oldest first), or it has not pushed since this collector started: what its
    /// windows say is not its view of now. It counts nowhere, like a silent agent, without an event.
    var catchingUp: [Bool] = []
    /// Per (component, region): an agent catching up there reported the component, within the
    /// allowance after the collector's own downtime (`CorrelationEngine.collectorGapUntil`).
    var awaitedRegion: [Bool] = []
    var grid: [AgentComponent]
    /// Per component: agents (not revoked) with runs of it in their windows, counting or not.
    var reporters: [Int32] = []
    var controlFailing: [Bool]
    var controlInDoubt: [Bool]
    /// When the agent's newest passing control run started (collector time line; -infinity when
    /// none is in its window), and whether it runs a control probe at all.
    var controlPassedAt: [Double] = []
    var hasControl: [Bool] = []
    /// Step-component series failing now (their `affects` names a probe component shown affected).
    var affectingSeries: [Int32] = []
    /// Series of components with an open incident, for the recovery count.
    var openSeries: [[Int32]]
    var wholeLocal: [Bool] = []
    var localReason: [String?] = []
    var counts: [RegionCounts] = []
    /// Per (component, region): recovered from a problem its windows still hold (see `RegionCounts.recovered`).
    var recovered: [Bool] = []
    /// Per (component, region): fewer than half of its recent agents sent runs within 2 of their
    /// intervals, so what the rest say cannot end a problem there (`regionQuorumPhase`).
    var recoveryHeld: [Bool] = []

    /// Counted as evidence: not silent, not local by its control, not in doubt about it.
    func agentCounts(_ a: Int) -> Bool { !excluded[a] && !controlFailing[a] && !controlInDoubt[a] }
}

/// Facts about one component that its incident transitions need, beyond the verdict.
struct RecoveryFacts {
    /// Every agent counted in the incident's regions has `monitor_runs` / `resolve_runs` passing
    /// runs in a row, and the pooled passing runs since the newest failure reached M.
    var canMonitor = false
    var canResolve = false
    /// The newest failure in the incident's regions (collector time line).
    var newestFailure = -Double.infinity
    var cleanRuns: Int32 = 0
    var needed: Int32 = 0
    /// The clean stretch resolution waits for when it is longer than `monitoring`'s: the fault
    /// came back after such a gap last time (``ComponentTrack/carriedLull``).
    var heldFor: Double?
}

extension CorrelationEngine {
    /// Decides verdicts, agent health and incidents as of `now`, and returns the events of the
    /// transitions it made. Call it on a steady tick (e.g. every second). `now` and every
    /// `receivedAt` should come from one monotonic clock (the collector passes its monotonic
    /// clock anchored at its start), so silence is never judged on a clock that jumps.
    public mutating func evaluate(now: Date) -> CorrelationOutput {
        refreshAgentOrder(now: now)
        var frame = livenessPhase(at: now.timeIntervalSince1970)
        forgetRunsOfRecoveredControls()
        agentStatesPhase(&frame)
        localFaultPhase(&frame)
        regionQuorumPhase(&frame)
        regionCountsPhase(&frame)
        // People's updates since the last evaluation go out first, in this evaluation's commit.
        var (changed, events) = takeHumanChanges()
        verdictPhase(frame, now: now, changed: &changed, events: &events)
        agentHealthPhase(frame, now: now, events: &events)
        awaitsPassingRuns = Self.awaitsPassingRuns(tracks: tracks, health: health, controlFaults: !controlFaultAgents.isEmpty)
        let confirmations = Self.confirmationRequests(
            tracks: tracks, frame: frame, componentNames: componentNames, regionNames: regionNames, agentRegion: agentRegion,
            lone: &loneConfirmations, spread: &spreadConfirmations, config)
        confirmationRequests = confirmations.requests
        wantsFreshRuns = confirmations.fromEvidence || Self.wantsFreshRuns(tracks: tracks, t: frame.t)
        return CorrelationOutput(verdicts: verdictList, agents: health, changedIncidents: Self.latestByID(changed), events: events)
    }

    /// Whether a decision is being made now that every agent's newest runs speed up, so the
    /// collector asks agents to push promptly (`PushAck.fastFlushSeconds`): a problem verdict
    /// not yet opened, for at most `fastFlushOpeningLimit` s (confirmation, and the region-scope
    /// wait, which reads other regions' fresh passing runs), or an incident whose component
    /// looks recovered (its `monitoring` and `resolved` steps count passing runs). Not during a
    /// steady incident, nor for a local fault or a silent agent: then batching goes on, so a
    /// long outage or one broken host never turns a fleet's pushes into one per result.
    static func wantsFreshRuns(tracks: [ComponentTrack], t: Double) -> Bool {
        for track in tracks {
            if let incident = track.incident {
                if incident.status == .monitoring || track.recoveryUnderway || track.measured == .operational { return true }
            } else if let since = track.badSince, t - since <= fastFlushOpeningLimit {
                return true
            }
        }
        return false
    }

    /// How long a problem verdict that has not opened an incident keeps agents pushing promptly
    /// (one that never opens, e.g. resting on a single agent, must not do so for good).
    static let fastFlushOpeningLimit: Double = 60

    /// Whether passing runs could change a decision: an open incident (monitoring, resolved), a
    /// problem verdict or streak (the region-scope wait reads other regions' fresh passing runs),
    /// or an agent in a local fault (its episode ends on clean data). False for a healthy fleet,
    /// whose passing runs wait for the next tick. Silent and revoked agents do not count: one
    /// that never reports must not make every healthy push evaluate.
    static func awaitsPassingRuns(tracks: [ComponentTrack], health: [AgentHealth], controlFaults: Bool) -> Bool {
        if controlFaults { return true }
        for track in tracks {
            if track.incident != nil || track.badStreak > 0 { return true }
            if let status = track.lastStatus, status != .operational, status != .unknown { return true }
        }
        return health.contains { $0.state == .localFault }
    }

    // MARK: Phase 1: liveness

    /// Each agent's shortest probe interval, and who is silent (no result for its threshold).
    mutating func livenessPhase(at t: Double) -> EvaluationFrame {
        let agentCount = agentIDs.count
        let cfg = config
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
        var excluded = [Bool](repeating: false, count: agentCount)
        var silent = [Bool](repeating: false, count: agentCount)
        for a in 0..<agentCount {
            if agentRevoked[a] {
                excluded[a] = true
                continue
            }
            let last = max(agentLastReceived[a], agentSilenceCountedFrom[a])
            if last == -.infinity || t - last > Self.silenceThreshold(interval: agentInterval[a], cfg) {
                excluded[a] = true
                silent[a] = true
            }
        }
        return EvaluationFrame(
            t: t, agentInterval: agentInterval, excluded: excluded, silent: silent, grid: [],
            controlFailing: [Bool](repeating: false, count: agentCount),
            controlInDoubt: [Bool](repeating: false, count: agentCount),
            openSeries: [[Int32]](repeating: [], count: componentNames.count))
    }

    /// An agent whose control probe recovered: what its other probes saw while its network was
    /// broken is no evidence about the platform, so their windows start afresh.
    mutating func forgetRunsOfRecoveredControls() {
        guard !controlFaultAgents.isEmpty else { return }
        var stillFailing = Set<Int32>()
        for s in summaries where s.control && (s.state == .failing || (s.state.isFailing && s.latestFailed)) {
            stillFailing.insert(s.agent)
        }
        for a in controlFaultAgents.subtracting(stillFailing) {
            forgetRunsBeforeRecovery(agent: a)
            controlFaultAgents.remove(a)
        }
    }

    // MARK: Phase 2: per-agent states

    /// Each fresh agent's state per component (the worst of its probes there, over the runs after
    /// the component's horizon), and its control probes' verdict.
    mutating func agentStatesPhase(_ frame: inout EvaluationFrame) {
        let agentCount = agentIDs.count
        let componentCount = componentNames.count
        let cfg = config
        let t = frame.t
        var grid = [AgentComponent](repeating: AgentComponent(), count: agentCount * componentCount)
        let horizonTracks = tracks
        let open = tracks.map { $0.incident != nil }
        let fallbackLimit = max(cfg.silentMin, cfg.silentAfter)
        let excluded = frame.excluded
        var controlFailing = frame.controlFailing
        var controlInDoubt = frame.controlInDoubt
        var controlPassedAt = [Double](repeating: -.infinity, count: agentCount)
        var hasControl = [Bool](repeating: false, count: agentCount)
        var affecting: [Int32] = []
        var openSeries = frame.openSeries
        let offsets = agentOffset
        let regionCount = regionNames.count
        var current = [Bool](repeating: false, count: agentCount)
        var reported = [Bool](repeating: false, count: agentCount * componentCount)
        var stale: [(agent: Int32, component: Int32)] = []
        summaries.withUnsafeBufferPointer { all in
            var i = -1
            while i + 1 < all.count {
                i += 1
                var s = all[i]
                let a = Int(s.agent)
                // Reporting makes a component known whether or not the agent counts now: after a
                // restart agents catching up count nowhere, and a component known before read as
                // "fewer agents than min_component_agents report it" (verdict review, 34th session).
                if s.windowRuns > 0, !s.control, !agentRevoked[a], t - s.lastReceived <= cfg.windowAge {
                    reported[a * componentCount + Int(s.component)] = true
                }
                if excluded[a] || s.windowRuns == 0 { continue }
                if s.control { hasControl[a] = true }
                // Judged on when its newest run ended, not only on when it arrived: a spool
                // delivered after a downtime arrives now with runs from before it, and those
                // said nothing about now (found by the integrations review, F2). Never newer
                // than its arrival: an agent's durations cannot make its data current.
                let age = t - min(s.newestEndAt + offsets[a], s.lastReceived)
                let limit = s.interval > 0 ? max(cfg.silentMin, cfg.silentAfterIntervals * s.interval) : fallbackLimit
                if age > cfg.windowAge || age > limit {
                    if !s.control, age <= cfg.windowAge { stale.append((s.agent, s.component)) }
                    continue
                }
                current[a] = true
                if s.control {
                    // A control that passes its latest run counts as recovered at once: its own
                    // window of old failures says nothing about the agent's network now.
                    if s.state == .failing || (s.state.isFailing && s.latestFailed) {
                        controlFailing[a] = true
                    } else if s.latestFailed {
                        // Not confirmed yet: the agent's own network is in doubt, so its data is
                        // held back (a cut agent's other probes may be confirmed before its control).
                        controlInDoubt[a] = true
                    } else {
                        controlPassedAt[a] = max(controlPassedAt[a], s.newestAt + offsets[a])
                    }
                    continue
                }
                let c = Int(s.component)
                let offset = offsets[a]
                let cutoff = horizonTracks[c].horizonCutoff(agent: a, offsets: offsets)
                if s.oldestAt <= cutoff {
                    // Part of this window belongs to a recovered incident: judge the rest only.
                    s = series[i].summarize(config: cfg, errorCode: s.errorCode, after: cutoff)
                    if s.windowRuns == 0 { continue }
                }
                if open[c] { openSeries[c].append(Int32(i)) }
                if s.affects >= 0, s.state.isFailing { affecting.append(Int32(i)) }
                let g = a * componentCount + c
                var x = grid[g]
                x.reporting = true
                x.runs += s.windowRuns
                x.failed += s.windowFailed
                x.allRuns += s.allRuns
                x.allFailed += s.allFailed
                x.allBad += s.allBad
                x.cleanTail = min(x.cleanTail, s.cleanTail)
                x.rateSteps += s.rateSteps
                x.rateFailed += s.rateFailed
                x.spanRuns += s.spanRuns
                x.spanBad += s.spanBad
                x.newestBadAt = max(x.newestBadAt, s.newestBadAt + offset)
                if s.state != .ok { x.stateShownAt = max(x.stateShownAt, s.stateShownAt + offset) }
                x.lastReceived = max(x.lastReceived, s.lastReceived)
                x.newestStartedAt = max(x.newestStartedAt, s.newestAt + offset)
                if s.latestFailed { x.latestFailed = true }
                if s.latestSlow { x.latestSlow = true }
                if s.latencyMs > x.latencyMs { x.latencyMs = s.latencyMs }
                x.interval = max(x.interval, s.interval)
                let worse = s.state.rawValue > x.state.rawValue
                if worse || (x.errorSeries < 0 && s.errorCode >= 0 && s.state.rawValue == x.state.rawValue) {
                    if worse { x.state = s.state }
                    x.errorSeries = s.errorCode >= 0 ? Int32(i) : x.errorSeries
                    x.errorCode = s.errorCode >= 0 ? s.errorCode : x.errorCode
                }
                grid[g] = x
            }
        }
        frame.grid = grid
        frame.reporters = (0..<componentCount).map { c in Int32((0..<agentCount).count { reported[$0 * componentCount + c] }) }
        frame.catchingUp = (0..<agentCount).map { a in !excluded[a] && !current[a] }
        frame.awaitedRegion = [Bool](repeating: false, count: componentNames.count * regionCount)
        for (a, c) in stale where frame.catchingUp[Int(a)] && t < collectorGapUntil {
            frame.awaitedRegion[Int(c) * regionCount + Int(agentRegion[Int(a)])] = true
        }
        frame.controlFailing = controlFailing
        frame.controlInDoubt = controlInDoubt
        frame.controlPassedAt = controlPassedAt
        frame.hasControl = hasControl
        frame.affectingSeries = affecting
        frame.openSeries = openSeries
    }

    // MARK: Phase 3: local faults

    /// Which failing agents are local: (1) a failing control probe makes the whole agent local;
    /// (2) per component, an agent whose failure rate over its window is above its same-region
    /// peers' pooled rate by Fisher's exact test (one-sided) at `local_confidence`; (3) local
    /// by (2) on 2+ components and more than half of those it reports: all its data is excluded.
    /// Each agent weighs at most as much as its region's lower-median agent in the peer pool, and
    /// no agent is local by (2) where most of its region's agents fail. A failing agent
    /// (`showsFailure`) whose same-region peers report the component but none of them fails there
    /// (nor have they `confirm_failures` failed runs between them recently), and no other agent
    /// anywhere fails there with the same error code, is *in doubt*: held back until the test
    /// decides or a peer fails too; so is one failing on its own elsewhere (local on another
    /// component, or in a local-fault episode) even where others fail with its code. An
    /// investigating incident covering its region makes its failure evidence. An agent alone in
    /// its region whose failure nobody shares is in doubt until its control passes a run begun
    /// after it (``loneFailureUnchecked(_:controlPassedAt:controlExpected:t:)``).
    mutating func localFaultPhase(_ frame: inout EvaluationFrame) {
        let agentCount = agentIDs.count
        let componentCount = componentNames.count
        let regionCount = regionNames.count
        let cfg = config
        // Peer pools: every agent that counts, before any local decision. Each agent weighs at
        // most as much as the region's lower-median agent there: one agent that reports a
        // component through 150 probes of its own (runs the others cannot check) must not
        // outvote its peers and have them called local (found by the red team, F2).
        var runsOfAgents = [[Int32]](repeating: [], count: componentCount * regionCount)
        var failingInRegion = [Int32](repeating: 0, count: componentCount * regionCount)
        for a in 0..<agentCount where frame.agentCounts(a) {
            let r = Int(agentRegion[a])
            for c in 0..<componentCount where frame.grid[a * componentCount + c].reporting {
                runsOfAgents[c * regionCount + r].append(frame.grid[a * componentCount + c].allRuns)
                if Self.showsFailure(frame.grid[a * componentCount + c], cfg) { failingInRegion[c * regionCount + r] += 1 }
            }
        }
        let weightCap = runsOfAgents.map { runs in runs.isEmpty ? Int32.max : runs.sorted()[(runs.count - 1) / 2] }
        var pool = [RegionCounts](repeating: RegionCounts(), count: componentCount * regionCount)
        var failingAnywhere = [Int32](repeating: 0, count: componentCount)
        // Failing agents per component and newest error code: a failure elsewhere corroborates
        // only the same failure (a connection reset on one host is not a 503 in another region).
        var failingWithCode = [[Int32: Int32]](repeating: [:], count: componentCount)
        var candidates: [Int] = []
        for a in 0..<agentCount where frame.agentCounts(a) {
            let r = Int(agentRegion[a])
            var failsSomewhere = false
            for c in 0..<componentCount {
                let x = frame.grid[a * componentCount + c]
                guard x.reporting else { continue }
                pool[c * regionCount + r].add(x.weighed(atMost: weightCap[c * regionCount + r]))
                if Self.showsFailure(x, cfg) {
                    failingAnywhere[c] += 1
                    failingWithCode[c][x.errorCode, default: 0] += 1
                    failsSomewhere = true
                }
            }
            if failsSomewhere { candidates.append(a) }
        }
        var wholeLocal = frame.controlFailing
        var localReason = [String?](repeating: nil, count: agentCount)
        for a in 0..<agentCount where frame.controlFailing[a] && !frame.excluded[a] {
            localReason[a] = "control probe failing"
            controlFaultAgents.insert(Int32(a))
        }
        // No passing run of anything in its windows: a new agent, or one broken for all of them.
        func neverPassed(_ a: Int) -> Bool {
            (0..<componentCount).allSatisfy { c in
                let x = frame.grid[a * componentCount + c]
                return !x.reporting || x.allBad >= x.allRuns
            }
        }
        for a in candidates {
            let r = Int(agentRegion[a])
            var reported = 0
            var localHere: [Int] = []
            var doubtful: [Int] = []
            for c in 0..<componentCount {
                let g = a * componentCount + c
                let x = frame.grid[g]
                guard x.reporting else { continue }
                reported += 1
                guard Self.showsFailure(x, cfg) else { continue }
                let k = pool[c * regionCount + r]
                let covered =
                    tracks[c].incident.map {
                        $0.status.isUnderWay && ($0.scope == .platform || $0.regions.contains(regionNames[r]))
                    } ?? false
                // Too few passing peers to outvote it (`local_fault_peers`): with one, a lying
                // peer's passes would make an honest agent's view of a regional outage "local".
                let tooFewPeers = cfg.localFaultPeers > 1 && k.reporting - failingInRegion[c * regionCount + r] < Int32(cfg.localFaultPeers)
                guard k.reporting > 1, !tooFewPeers else {
                    // Alone in its region (or too few peers pass): nobody to compare with, only its control to ask.
                    if !covered, failingWithCode[c][x.errorCode, default: 0] <= 1,
                        Self.loneFailureUnchecked(x, controlPassedAt: frame.controlPassedAt[a], controlExpected: frame.hasControl[a] || neverPassed(a), t: frame.t)
                    {
                        frame.grid[g].inDoubt = true
                    }
                    continue
                }
                let own = x.weighed(atMost: weightCap[c * regionCount + r])
                let peerRuns = k.allRuns - own.allRuns
                let peerFailed = k.allFailed - own.allFailed
                // Most of the region's agents failing there is the region's problem, whatever
                // the rest say: none of them is one bad host.
                let regionMostlyFailing = failingInRegion[c * regionCount + r] * 2 > k.reporting
                let abovePeers =
                    !regionMostlyFailing
                    && Self.exceedsPeers(
                        failed: Int(x.allFailed), runs: Int(x.allRuns), peerFailed: Int(peerFailed), peerRuns: Int(peerRuns),
                        minRuns: cfg.minRuns, confidence: cfg.localConfidence)
                if covered, let incident = tracks[c].incident {
                    // A fault of its own from before the incident, failing unlike anyone else
                    // (connection refused while the platform answers 500): it stays local, neither
                    // absorbed into the incident nor "recovered" while it still fails. Absorbed, one
                    // broken host kept an incident open long after the outage, as "1 of 2 agents
                    // in eu" (found by the new-user walk-through).
                    let h = health[Int(healthPosition[a])]
                    if h.state == .localFault, h.since < incident.openedAt, h.localComponents.contains(componentNames[c]),
                        failingWithCode[c][x.errorCode, default: 0] <= 1
                    {
                        localHere.append(c)
                        continue
                    }
                    // Otherwise the incident explains it (its fault may be spreading to this
                    // agent, or leaving it last), unless it fails well above its own region's
                    // peers and nothing but its own failures ties its region to the incident: no
                    // other agent fails there, and the incident spans fewer than two other
                    // regions. One agent failing with an eu outage's error code, its us peer
                    // passing, widened the incident to the platform and held it open alone after
                    // eu recovered (red team, 32nd session, F1); a platform outage in eu and ap
                    // still explains one us agent's failures.
                    let otherRegions = incident.regions.count { $0 != regionNames[r] }
                    if abovePeers, failingInRegion[c * regionCount + r] <= 1, otherRegions < 2 { localHere.append(c) }
                    continue
                }
                let peersFailing = k.hard + k.flaky - (x.state.isFailing ? 1 : 0)
                let peersFailedRecently = k.failed - own.failed >= Int32(cfg.confirmFailures)
                if abovePeers {
                    localHere.append(c)
                } else if peersFailing == 0, !peersFailedRecently {
                    if failingAnywhere[c] <= 1 || failingWithCode[c][x.errorCode, default: 0] <= 1 {
                        frame.grid[g].inDoubt = true
                    } else {
                        doubtful.append(c)
                    }
                }
            }
            // An agent known to be failing on its own (local on some component now, or in a
            // local-fault episode) is not evidence for another component its region's peers pass,
            // even where other regions fail: a flaky network's resets on jobs turned a us outage
            // into a "platform" one (found by the on-call review, F10).
            if !localHere.isEmpty || health[Int(healthPosition[a])].state == .localFault {
                for c in doubtful { frame.grid[a * componentCount + c].inDoubt = true }
            }
            guard !localHere.isEmpty else { continue }
            let names = localHere.map { componentNames[$0] }.joined(separator: ", ")
            if localHere.count >= 2, localHere.count * 2 > reported {
                wholeLocal[a] = true
                localReason[a] = "fails on most of its components (\(names)) well above its \(regionNames[r]) peers"
            } else {
                localReason[a] = "fails on \(names) well above its \(regionNames[r]) peers"
            }
            for c in localHere { frame.grid[a * componentCount + c].local = true }
        }
        for a in 0..<agentCount where wholeLocal[a] && !frame.excluded[a] {
            for c in 0..<componentCount where frame.grid[a * componentCount + c].reporting {
                frame.grid[a * componentCount + c].local = true
            }
        }
        // An agent in a local-fault episode that stopped failing on a component it was local on
        // still holds the episode's failures in its window: they stay its own until the episode
        // ends (its recovery forgets them), not evidence again meanwhile. A hostile agent's
        // failures came back into the pool when it stopped, and held a platform incident's
        // resolution until 2 minutes after them (verdict review, 35th session).
        for a in 0..<agentCount where !frame.excluded[a] {
            let h = health[Int(healthPosition[a])]
            guard h.state == .localFault else { continue }
            for name in h.localComponents {
                guard let c = componentIndex[name].map(Int.init) else { continue }
                let g = a * componentCount + c
                if frame.grid[g].reporting, !Self.showsFailure(frame.grid[g], cfg) { frame.grid[g].local = true }
            }
        }
        frame.wholeLocal = wholeLocal
        frame.localReason = localReason
    }

    /// The failing agents of a component with, for each region counted failing where none is
    /// listed, its agents with a failed run: a region counts from its agents' pooled runs, so two
    /// agents' single failures can make it count while neither is listed alone, and incidents
    /// named regions without any of their agents ("regions ap, eu, us; agents ap-2, us-1": the
    /// verdict review's D8). In agent id order, at most `max_listed_agents`.
    private func listingTheirAgents(
        _ regions: [String], component c: Int, names: [String], count: Int, listed: [Bool], singleFailures: [Int: [Int32]]
    ) -> (names: [String], count: Int) {
        var added: [Int32] = []
        for name in regions {
            guard let r = regionIndex[name], !listed[c * regionNames.count + Int(r)] else { continue }
            added += singleFailures[c * regionNames.count + Int(r)] ?? []
        }
        guard !added.isEmpty else { return (names, count) }
        let all = (names + added.map { agentIDs[Int($0)] }).sorted()
        return (Array(all.prefix(config.maxListedAgents)), count + added.count)
    }

    /// How long a lone agent's unshared failure waits for its control (s): enough for a control
    /// probe every 30 s to run, when the agent does not run it at once on a failure (older agents).
    static let loneDoubtLimit = 60.0

    /// Whether the failure of an agent alone in its region (no peer reports the component there),
    /// that no agent anywhere shares (its error code), still waits for the agent's control: its
    /// control has not passed a run begun after the failure showed, a control is expected (the
    /// agent runs one, or has not passed a single run yet: a new agent whose network is broken
    /// from its start, before its control's first run), and it began less than `loneDoubtLimit` ago. A broken new agent
    /// alone in us opened an incident per component there and spread eu's to the platform before
    /// its control's first run (found by the CLI walk-through, F2). The agent runs its control at
    /// once after a failure (docs/agent.md), so the wait is usually a second or two.
    static func loneFailureUnchecked(_ x: AgentComponent, controlPassedAt: Double, controlExpected: Bool, t: Double) -> Bool {
        guard controlExpected else { return false }
        let onset = x.stateShownAt.isFinite ? x.stateShownAt : x.newestBadAt
        guard onset.isFinite, t - onset < loneDoubtLimit else { return false }
        return controlPassedAt < onset
    }

    /// Whether an agent's runs of a component could move its region's verdict: its state is
    /// failing or flaky, or its window holds `confirm_failures` failed runs. The second matters
    /// when journeys log in first: one cut agent's login step fails in each journey at once, and
    /// those failures, one per series, read as a region's pooled failures (no series failing yet).
    static func showsFailure(_ x: AgentComponent, _ cfg: CorrelationConfig) -> Bool {
        x.state.isFailing || x.failed >= Int32(cfg.confirmFailures)
    }

    /// Fisher's exact test, one-sided: is `failed/runs` above `peerFailed/peerRuns` at
    /// `confidence`? The chance that, with every run as likely to fail on this agent as on its
    /// peers, at least `failed` of the `failed + peerFailed` failures would fall among its `runs`
    /// (the hypergeometric tail) must be at most 1 − `confidence`. Each side needs `minRuns`
    /// runs; no failure is never above. Exact at any size: the two-proportion z-test it replaces
    /// is too eager on the few runs an agent has after a recovery (5 of 5 failed against 0 of 5
    /// passed z = 3.16 > 3.09; here p = 1/252), and called 6 in 300 simulated agents local
    /// during a 10 % fault in their region (their region's runs all fail alike).
    static func exceedsPeers(failed: Int, runs: Int, peerFailed: Int, peerRuns: Int, minRuns: Int, confidence: Double) -> Bool {
        guard runs >= minRuns, peerRuns >= minRuns, failed > 0 else { return false }
        guard failed * peerRuns > peerFailed * runs else { return false }
        return fisherUpperTail(failed: failed, runs: runs, peerFailed: peerFailed, peerRuns: peerRuns) <= 1 - confidence
    }

    /// P(X ≥ failed) for X hypergeometric: `runs` drawn from `runs + peerRuns` of which
    /// `failed + peerFailed` failed.
    static func fisherUpperTail(failed: Int, runs: Int, peerFailed: Int, peerRuns: Int) -> Double {
        let all = runs + peerRuns
        let failures = failed + peerFailed
        func logChoose(_ n: Int, _ k: Int) -> Double { lgamma(Double(n + 1)) - lgamma(Double(k + 1)) - lgamma(Double(n - k + 1)) }
        let total = logChoose(all, runs)
        var tail = 0.0
        for x in failed...min(runs, failures) where runs - x <= all - failures {
            tail += exp(logChoose(failures, x) + logChoose(all - failures, runs - x) - total)
        }
        return min(1, tail)
    }

    // MARK: Phase 3b: region quorum

    /// A region speaks for a component only while at least half of the agents that reported it
    /// there within `region_quorum_window` still report (silent ones count against it; revoked
    /// ones and agents that stopped running the component's probes do not). Otherwise the
    /// agents left there do not count: the region reads as unwatched, opens nothing and resolves
    /// nothing. Without it, whoever silences a region's honest agents (a network position, a
    /// maintenance) makes one remaining agent, perhaps compromised, the region's only witness:
    /// it could hide a real outage or publish and page a made-up one (red team, second pass, N3).
    /// Two agents in a region: one left is half, and still decides (with two, nobody can tell
    /// which one is right anyway). Agents quiet for 2 of their intervals but not yet silent count
    /// against a recovery only (`recoveryHeld`): the few seconds before silence is called must not
    /// let the one left resolve its region's incident.
    mutating func regionQuorumPhase(_ frame: inout EvaluationFrame) {
        let cfg = config
        let componentCount = componentNames.count
        let regionCount = regionNames.count
        frame.recoveryHeld = [Bool](repeating: false, count: componentCount * regionCount)
        guard cfg.regionQuorumWindow > 0 else { return }
        var reporting = [Int32](repeating: 0, count: componentCount * regionCount)
        var late = [Int32](repeating: 0, count: componentCount * regionCount)
        for a in 0..<agentIDs.count where !frame.excluded[a] {
            let r = Int(agentRegion[a])
            let quiet = frame.agentInterval[a].isFinite && frame.t - agentLastReceived[a] > 2 * frame.agentInterval[a]
            for c in 0..<componentCount where frame.grid[a * componentCount + c].reporting {
                reporting[c * regionCount + r] += 1
                if quiet { late[c * regionCount + r] += 1 }
            }
        }
        // Silent agents that reported a component there recently, each (agent, component) once,
        // and agents still catching up (their view of now has not arrived yet). Read from every
        // series only while there are some: not on a healthy fleet's ticks.
        var missing = [Int32](repeating: 0, count: componentCount * regionCount)
        if frame.silent.contains(true) || frame.catchingUp.contains(true) {
            var counted = Set<Int>()
            for s in summaries
            where !s.control && (frame.silent[Int(s.agent)] || frame.catchingUp[Int(s.agent)]) && frame.t - s.lastReceived <= cfg.regionQuorumWindow {
                let a = Int(s.agent)
                let c = Int(s.component)
                guard counted.insert(a * componentCount + c).inserted else { continue }
                missing[c * regionCount + Int(agentRegion[a])] += 1
            }
        }
        for k in missing.indices where missing[k] + late[k] > 0 {
            let known = reporting[k] + missing[k]
            frame.recoveryHeld[k] = (reporting[k] - late[k]) * 2 < known
            guard reporting[k] * 2 < known else { continue }
            let c = k / regionCount
            let r = Int32(k % regionCount)
            for a in 0..<agentIDs.count where agentRegion[a] == r && frame.grid[a * componentCount + c].reporting {
                frame.grid[a * componentCount + c].withoutQuorum = true
            }
        }
    }

    // MARK: Phase 4: region counts

    /// Sums per (component, region) over the agents that count (fresh, not local, not in doubt).
    /// A region whose agents have recovered (``RegionCounts/recovered(runs:hardRuns:confidence:)``, with
    /// `monitor_runs` and `recovery_confidence`), its newest problem run older than 1.5 × the
    /// component's longest lull (``ComponentTrack/recoveryLull``), counts as past its problem: scope and status come
    /// from what its fresh runs say, not from failures still in its windows (a fault that moved
    /// away from it leaves it at once).
    mutating func regionCountsPhase(_ frame: inout EvaluationFrame) {
        let componentCount = componentNames.count
        let regionCount = regionNames.count
        corroborateSlowRuns(&frame)
        var counts = [RegionCounts](repeating: RegionCounts(), count: componentCount * regionCount)
        for a in 0..<agentIDs.count where frame.agentCounts(a) {
            let r = Int(agentRegion[a])
            for c in 0..<componentCount {
                let x = frame.grid[a * componentCount + c]
                if x.counts { counts[c * regionCount + r].add(x, confirm: Int32(config.confirmFailures)) }
            }
        }
        var recovered = [Bool](repeating: false, count: counts.count)
        let hardRuns = config.hardFaultRuns
        for g in counts.indices where !frame.recoveryHeld[g]
            && counts[g].recovered(runs: config.monitorRuns, hardRuns: hardRuns, confidence: config.recoveryConfidence)
        {
            // The incident's own lull guard: a random fault's pause is not its end, for the
            // verdict either (else the verdict read operational while its incident stayed open).
            guard frame.t - counts[g].newestBadAt > tracks[g / regionCount].recoveryLull else { continue }
            recovered[g] = true
            counts[g] = counts[g].past
        }
        frame.counts = counts
        frame.recovered = recovered
    }

    /// A slow latest run is an agent's `degraded` state at once when its region's peers confirm
    /// it: at least `confirm_failures` of the region's counting agents, and more than
    /// `degraded_ratio` of them, had their latest run there slow. Agents slow at the same time
    /// are independent witnesses, as good as one agent's slow runs in a row, and waiting for
    /// each agent's second slow run costs a whole probe interval on top of the delay itself. One
    /// slow agent (or one agent alone in its region) still needs `confirm_failures` in a row.
    mutating func corroborateSlowRuns(_ frame: inout EvaluationFrame) {
        let componentCount = componentNames.count
        let regionCount = regionNames.count
        var reporting = [Int32](repeating: 0, count: componentCount * regionCount)
        var slow = [Int32](repeating: 0, count: componentCount * regionCount)
        var anySlow = false
        for a in 0..<agentIDs.count where frame.agentCounts(a) {
            let r = Int(agentRegion[a])
            for c in 0..<componentCount {
                let x = frame.grid[a * componentCount + c]
                guard x.counts else { continue }
                reporting[c * regionCount + r] += 1
                if x.latestSlow {
                    slow[c * regionCount + r] += 1
                    anySlow = true
                }
            }
        }
        guard anySlow else { return }
        for a in 0..<agentIDs.count where frame.agentCounts(a) {
            let r = Int(agentRegion[a])
            for c in 0..<componentCount {
                let g = a * componentCount + c
                let k = c * regionCount + r
                guard frame.grid[g].counts, frame.grid[g].latestSlow, frame.grid[g].state == .ok,
                    slow[k] >= Int32(config.confirmFailures), Double(slow[k]) > config.degradedRatio * Double(reporting[k])
                else { continue }
                frame.grid[g].state = .degraded
            }
        }
    }

    // MARK: Phase 5: verdicts and incidents

    /// Per component: region statuses, the component's status and scope, evidence, and one step
    /// of its incident state machine.
    mutating func verdictPhase(_ frame: EvaluationFrame, now: Date, changed: inout [Incident], events: inout [AlertEvent]) {
        let componentCount = componentNames.count
        let regionCount = regionNames.count
        let cfg = config
        // Evidence lists, in agent id order so they are the same after a rebuild.
        var failingNames = [[String]](repeating: [], count: componentCount)
        var failingCount = [Int32](repeating: 0, count: componentCount)
        var localNames = [[String]](repeating: [], count: componentCount)
        var sampleSeries = [[Int32]](repeating: [], count: componentCount)
        var latencies = [[Double]](repeating: [], count: componentCount)
        var failingNow = [Bool](repeating: false, count: componentCount)
        var componentInterval = [Double](repeating: 0, count: componentCount)
        // Per component, failing agents by their error code: sparse, so a tick costs what is
        // failing, not every code ever seen (one agent can send thousands of made-up codes).
        var codeCounts = [[Int32: Int32]](repeating: [:], count: componentCount)
        let listCap = cfg.maxListedAgents
        // Per component × region: whether an agent there is listed, and the agents with a failed
        // run too few to be listed alone (see `listingTheirAgents`).
        var listedIn = [Bool](repeating: false, count: componentCount * regionCount)
        var singleFailures: [Int: [Int32]] = [:]
        for a32 in sortedAgents {
            let a = Int(a32)
            if frame.excluded[a] || (frame.controlInDoubt[a] && !frame.controlFailing[a]) { continue }
            for c in 0..<componentCount {
                let x = frame.grid[a * componentCount + c]
                guard x.reporting else { continue }
                if x.local {
                    if localNames[c].count < listCap { localNames[c].append(agentIDs[a]) }
                    continue
                }
                guard x.counts else { continue }
                if frame.agentInterval[a].isFinite { componentInterval[c] = max(componentInterval[c], frame.agentInterval[a]) }
                if x.latencyMs >= 0 { latencies[c].append(x.latencyMs) }
                if frame.recovered[c * regionCount + Int(agentRegion[a])] { continue }
                // A latest run that failed, from an agent still sending (one quiet for 2 of its
                // intervals may be stopping: its last failure says nothing about now).
                if x.latestFailed, !(frame.agentInterval[a].isFinite && frame.t - x.lastReceived > 2 * frame.agentInterval[a]) {
                    failingNow[c] = true
                }
                // Failing now, or with `confirm_failures` failed runs in its window: a random fault's
                // agents stay listed while it lasts (their flaky state comes and goes).
                if x.state.isFailing || x.allFailed >= Int32(cfg.confirmFailures) {
                    failingCount[c] += 1
                    if failingNames[c].count < listCap { failingNames[c].append(agentIDs[a]) }
                    listedIn[c * regionCount + Int(agentRegion[a])] = true
                    if x.errorCode >= 0 { codeCounts[c][x.errorCode, default: 0] += 1 }
                    if x.errorSeries >= 0, sampleSeries[c].count < 50 { sampleSeries[c].append(x.errorSeries) }
                } else if x.allFailed > 0 {
                    singleFailures[c * regionCount + Int(agentRegion[a]), default: []].append(a32)
                }
            }
        }
        // What each component's failing steps affect: the probe components of those journeys.
        var affected = [Set<String>](repeating: [], count: componentCount)
        for s in frame.affectingSeries {
            let summary = summaries[Int(s)]
            let g = Int(summary.agent) * componentCount + Int(summary.component)
            // Only known components (declared, or reported by `min_component_agents` agents):
            // one agent must not put a name it made up on the page as "affected" (red team F8).
            if frame.grid[g].counts, componentIsKnown[Int(summary.affects)] {
                affected[Int(summary.component)].insert(componentNames[Int(summary.affects)])
            }
        }

        // Regions where an agent that is not revoked has runs of each component: where it is
        // watched, when its agents report.
        var watchedIn = [Set<Int32>](repeating: [], count: componentCount)
        for summary in summaries where !summary.control && !agentRevoked[Int(summary.agent)] {
            watchedIn[Int(summary.component)].insert(agentRegion[Int(summary.agent)])
        }

        var newVerdicts: [ComponentVerdict] = []
        var verdictComponents: [Int] = []
        for c in componentNames.indices.sorted(by: { componentNames[$0] < componentNames[$1] }) where componentIsWatched[c] {
            let slice = frame.counts[(c * regionCount)..<(c * regionCount + regionCount)]
            let rollup = Self.rollup(slice, regionNames: regionNames, cfg)
            let (names, count) = listingTheirAgents(
                rollup.affectedRegions, component: c, names: failingNames[c], count: Int(failingCount[c]), listed: listedIn, singleFailures: singleFailures)
            var evidence = makeEvidence(
                component: c, total: rollup.total, failingCount: count, failingRegions: rollup.affectedRegions,
                failingNames: names,
                localNames: localNames[c], sampleSeries: sampleSeries[c],
                codeCounts: codeCounts[c], latencies: &latencies[c])
            if rollup.status != .operational && rollup.status != .unknown {
                evidence.regionReportingAgents = Int(
                    rollup.affectedRegions.reduce(Int32(0)) { sum, name in sum + (regionIndex[name].map { slice[slice.startIndex + Int($0)].reporting } ?? 0) })
                evidence.affected = affected[c].subtracting([componentNames[c]]).sorted()
                // An incident that more than one agent confirmed stays confirmed when one of them
                // stops (a routine restart of an agent is not "seen by one agent only so far").
                let confirmedByMore = tracks[c].incident.map { tracks[c].touchedAgents.union($0.agents).count >= 2 } ?? false
                evidence.singleAgent =
                    !confirmedByMore && (evidence.failingAgentCount + Int(rollup.total.degraded) == 1 || rollup.total.reporting == 1)
            }
            var track = tracks[c]
            track.measured = rollup.status
            if (rollup.status != .operational && rollup.status != .unknown) || track.incident != nil {
                let newest = rollup.total.newestBadAt
                if newest > track.newestBad {
                    if track.newestBad > -.infinity {
                        // Only a pause someone saw: a spool delivered after the collector's
                        // downtime moves the newest problem run forward a whole push at a time,
                        // with no passing run between (a 15 s downtime made a 5 s "lull", and the
                        // recovery waited 8 s for it).
                        if track.newestRunSeen > track.newestBad + ComponentTrack.cutoffSlack {
                            track.longestLull = max(track.longestLull, newest - track.newestBad)
                        }
                    } else if let last = track.lastResolution, frame.t - last.at <= cfg.flapMemory, newest > last.newestBad {
                        track.carriedLull = max(track.carriedLull, last.lull, newest - last.newestBad)
                    }
                    track.newestBad = newest
                }
            } else {
                track.newestBad = -.infinity
                track.longestLull = 0
                track.carriedLull = 0
            }
            track.newestRunSeen = rollup.total.newestStartedAt
            if let incident = track.incident {
                var inScope = [Bool](repeating: incident.scope == .platform, count: regionCount)
                for name in incident.regions { if let r = regionIndex[name] { inScope[Int(r)] = true } }
                // The horizon as this evaluation began (`tracks[c]`, not copied: `track` is being changed).
                track.faultRecord.read(series, open: frame.openSeries[c], after: { tracks[c].horizonCutoff(agent: Int(series[Int($0)].agent), offsets: agentOffset) }) { s in
                    let a = Int(series[Int(s)].agent)
                    return inScope[Int(agentRegion[a])] && frame.agentCounts(a) && frame.grid[a * componentCount + c].counts
                }
            } else if track.faultRecord.started {
                track.faultRecord = FaultRecord()
            }
            let facts = recoveryFacts(component: c, frame: frame, track: track)
            track.recoveryUnderway = track.incident != nil && facts.cleanRuns > 0 && frame.t - facts.newestFailure > track.longestLull
            // Declared components are the list: once there is one, no number of agents makes
            // another name known (red team, second pass, N1: two compromised agents put a made-up
            // component on the public page as a platform-wide major outage, and paged). Without
            // one, `min_component_agents` agents make a component known.
            let eligible =
                declaredComponents.isEmpty ? Int(frame.reporters[c]) >= cfg.minComponentAgents : declaredComponents.contains(componentNames[c])
            if eligible { componentIsKnown[c] = true }
            // When the runs that confirmed the problem show the fault was on: another region's
            // run is fresh evidence only if it started after that. Not the newest bad run (the
            // confirming one, an interval later: the wait then waited an interval longer).
            if track.badSince == nil {
                let shown = rollup.total.stateShownAt
                track.faultSeenAt = shown.isFinite ? shown : rollup.total.newestBadAt
            }
            let wait = cfg.scopeWaitIntervals * min(componentInterval[c], max(cfg.silentMin, cfg.silentAfter))
            let settled = Self.regionScopeSettled(
                slice, badRegions: rollup.affectedRegions, regionNames: regionNames, badSince: track.badSince ?? frame.t,
                faultSeenAt: track.faultSeenAt, t: frame.t, wait: wait,
                // Only an incident still to open at region scope reads it.
                stirring: rollup.scope == .region && track.incident == nil
                    ? stirringRegions(component: c, frame: frame, since: track.faultSeenAt - wait) : [],
                awaited: frame.awaitedRegion[(c * regionCount)..<(c * regionCount + regionCount)], awaitedWait: max(cfg.silentMin, cfg.silentAfter))
            let wasMonitoring = track.incident?.status == .monitoring
            stepIncident(
                &track, component: componentNames[c], status: rollup.status, scope: rollup.scope, evidence: evidence,
                hasNewData: componentHasNewData[c], eligible: eligible, scopeSettled: settled, recovery: facts, t: frame.t,
                failingNow: failingNow[c], now: now, changed: &changed, events: &events)
            let shown = Self.shownVerdict(
                rollup, incident: track.incident, recoveredNow: !wasMonitoring && track.incident?.status == .monitoring,
                platformRegions: cfg.minPlatformRegions)
            newVerdicts.append(
                ComponentVerdict(
                    component: componentNames[c], status: shown.status, scope: shown.scope, regions: shown.regions,
                    evidence: evidence, since: now, updatedAt: now, incidentID: track.incident?.id,
                    conflict: track.incident?.conflict ?? track.human.closed?.conflict, known: componentIsKnown[c],
                    unwatchedRegions: watchedIn[c].map { regionNames[Int($0)] }.filter { shown.regions[$0] == nil }.sorted()))
            verdictComponents.append(c)
            tracks[c] = track
            componentHasNewData[c] = false
        }
        Self.showAffected(&newVerdicts)
        for (i, c) in verdictComponents.enumerated() {
            if tracks[c].lastStatus != newVerdicts[i].status || tracks[c].since == nil {
                tracks[c].lastStatus = newVerdicts[i].status
                tracks[c].since = now
            }
            newVerdicts[i].since = tracks[c].since ?? now
        }
        verdictList = newVerdicts
    }

    /// A component whose journeys fail at another component's step (`files` while logins are
    /// rejected: its runs stop at login, so it has no failure of its own, or no runs at all)
    /// shows that component's problem where its own reads better: status, scope and regions,
    /// with `evidence.affected_by` naming the cause. The page then does not say "Operational"
    /// or "No data" for what users cannot use, and the incident stays the cause's alone (this is
    /// display only: incidents were decided from each component's own runs before this).
    static func showAffected(_ verdicts: inout [ComponentVerdict]) {
        var index: [String: Int] = [:]
        for (i, verdict) in verdicts.enumerated() { index[verdict.component] = i }
        // Only a known cause: one agent's made-up component must not colour a real one (red team).
        let causes = verdicts.filter {
            $0.known && $0.status >= .degradedPerformance && $0.status != .underMaintenance && !$0.evidence.affected.isEmpty
        }
        for cause in causes {
            for name in cause.evidence.affected {
                guard let i = index[name], verdicts[i].status < cause.status, verdicts[i].status != .underMaintenance else { continue }
                verdicts[i].status = cause.status
                verdicts[i].scope = cause.scope
                for (region, status) in cause.regions where verdicts[i].regions[region].map({ $0 < status }) ?? true {
                    verdicts[i].regions[region] = status
                }
                // A region it has no runs in because its journeys stop at the cause's step shows
                // the cause's status: it is not unwatched (the log said such regions "no longer
                // decide" it, as if its agents had gone silent; verdict review, 34th session).
                verdicts[i].unwatchedRegions.removeAll { cause.regions[$0] != nil }
                verdicts[i].evidence.affectedBy = (verdicts[i].evidence.affectedBy + [cause.component]).sorted()
            }
        }
    }

    /// What a component's verdict shows: what is measured, with two exceptions tied to its incident.
    /// - An incident that just reached `monitoring` shows operational at once (from the next
    ///   evaluation on the verdict reads only runs after its horizon, and says so itself).
    /// - While an incident Sonde opened is still `investigating` (or `identified`), the verdict
    ///   shows at least what the incident says: its severity (at most `partial_outage`: a major
    ///   outage must be measured now), and the scope and regions of its current membership (not
    ///   its scope, which only widens: a fault that moved from eu to us once touched two regions,
    ///   and is now in us alone). At 10 % of requests failing, a region's runs pass often enough
    ///   to read operational (or a platform fault to read as one region) for a minute at a time,
    ///   while the incident stays open until its recovery rule
    ///   (in runs, past the fault's lulls) says the fault is over: the page showed an open
    ///   platform incident beside an operational or one-region component, flipping back and
    ///   forth. A person's incident holds nothing (the verdict is what Sonde measures), and a
    ///   measured `unknown` (nobody reporting) is shown as it is.
    static func shownVerdict(_ rollup: Rollup, incident: Incident?, recoveredNow: Bool, platformRegions: Int) -> (
        status: ComponentStatus, scope: ProblemScope?, regions: [String: ComponentStatus]
    ) {
        let operational = rollup.regionStatus.mapValues { _ in ComponentStatus.operational }
        if recoveredNow { return (.operational, nil, operational) }
        var shown = (status: rollup.status, scope: rollup.scope, regions: rollup.status == .operational ? operational : rollup.regionStatus)
        guard rollup.status != .unknown, let incident, incident.openedBy == IncidentUpdate.automatic,
            incident.status.isUnderWay
        else { return shown }
        let held = min(incident.severity, .partialOutage)
        shown.status = max(shown.status, held)
        shown.scope = shown.scope == .platform || incident.regions.count >= platformRegions ? .platform : .region
        for region in incident.regions {
            if let status = shown.regions[region] { shown.regions[region] = max(status, held) }
        }
        return shown
    }

    /// Region statuses, the component's status and scope from one component's region counts.
    /// The affected regions are those not operational, plus (while some region is not) those
    /// whose agents failed `confirm_failures` runs between them recently or that have an agent
    /// with `confirm_failures` failed runs in its window: a random fault reaches
    /// every region's verdict at its own pace, and the scope must not wait for the slowest.
    /// Scope `platform` needs `min_platform_regions` affected regions.
    static func rollup(_ counts: ArraySlice<RegionCounts>, regionNames: [String], _ cfg: CorrelationConfig) -> Rollup {
        var total = RegionCounts()
        var regionStatus: [String: ComponentStatus] = [:]
        var badRegions: [String] = []
        var suspect: [String] = []
        var worst = ComponentStatus.operational
        for (r, k) in zip(regionNames.indices, counts) where k.reporting > 0 {
            total += k
            let status = Self.regionStatus(k, cfg)
            regionStatus[regionNames[r]] = status
            if status != .operational {
                badRegions.append(regionNames[r])
            } else if k.failed >= Int32(cfg.confirmFailures) || k.repeatFailing > 0 {
                suspect.append(regionNames[r])
            }
            if status > worst { worst = status }
        }
        badRegions.sort()
        let affectedRegions = badRegions.isEmpty ? [] : (badRegions + suspect).sorted()
        let status: ComponentStatus
        if total.reporting == 0 {
            status = .unknown
        } else if Self.isMajor(total, cfg) {
            status = .majorOutage
        } else {
            status = min(worst, .partialOutage)
        }
        var scope: ProblemScope?
        if status != .operational && status != .unknown {
            scope = affectedRegions.count >= cfg.minPlatformRegions ? .platform : .region
        }
        return Rollup(
            status: status, scope: scope, regionStatus: regionStatus, badRegions: badRegions, affectedRegions: affectedRegions,
            total: total)
    }

    struct Rollup {
        var status: ComponentStatus
        var scope: ProblemScope?
        var regionStatus: [String: ComponentStatus]
        var badRegions: [String]
        var affectedRegions: [String]
        var total: RegionCounts
    }

    /// May a problem in fewer regions than platform scope needs be announced as regional yet?
    /// Yes once every other reporting region has sent a run since the problem showed and none of
    /// its agents' latest runs failed or was slow (the fault has not reached it: a latency fault
    /// shows as one slow run before it is confirmed), or after `wait` seconds. A region where
    /// nobody reports but agents are catching up (`awaited`, per region: after this collector's
    /// downtime their spools come back one by one, each after its own back-off) is waited for up
    /// to `awaitedWait` seconds: it is not known to be fine, only not heard from yet.
    static func regionScopeSettled(
        _ counts: ArraySlice<RegionCounts>, badRegions: [String], regionNames: [String], badSince: Double, faultSeenAt: Double, t: Double,
        wait: Double, stirring: [Bool] = [], awaited: ArraySlice<Bool> = [], awaitedWait: Double = 0
    ) -> Bool {
        if t - badSince < awaitedWait {
            for (r, k) in zip(regionNames.indices, counts)
            where k.reporting == 0 && awaited.indices.contains(awaited.startIndex + r) && awaited[awaited.startIndex + r]
                && !badRegions.contains(regionNames[r])
            {
                return false
            }
        }
        // Another region with a failed or slow run since about when the fault showed (one run,
        // not yet enough to count it as affected) is where a platform-wide partial fault is most
        // likely showing next: wait for its next runs, at most one `wait` more. Its latest run
        // passing is no proof there: a fault that fails a third of the runs passes most of them,
        // and most first alerts of region scope for 10 % of requests failing everywhere were
        // made with such a region in sight (a failure there, then a pass).
        let stirs = regionNames.indices.contains { stirring.indices.contains($0) && stirring[$0] && !badRegions.contains(regionNames[$0]) }
        if t - badSince >= wait { return !stirs || t - badSince >= 2 * wait }
        if stirs { return false }
        // Fresh: started after the fault was seen on (`ComponentTrack.faultSeenAt`; received
        // after the problem verdict is not enough: a healthy run from before the fault may arrive
        // late, one flush later).
        let freshAfter = faultSeenAt.isFinite ? faultSeenAt : badSince
        for (r, k) in zip(regionNames.indices, counts) where k.reporting > 0 && !badRegions.contains(regionNames[r]) {
            if k.latestFailed > 0 || k.latestSlow > 0 || k.newestStartedAt <= freshAfter { return false }
        }
        return true
    }

    /// Per region, whether an agent there that may witness for it (counting, or failing alone
    /// and in doubt; not local, not without quorum) had a failed or slow run of component `c`
    /// at or after `since`.
    func stirringRegions(component c: Int, frame: EvaluationFrame, since: Double) -> [Bool] {
        var stirring = [Bool](repeating: false, count: regionNames.count)
        guard since.isFinite else { return stirring }
        let componentCount = componentNames.count
        for a in agentRegion.indices where frame.agentCounts(a) {
            let x = frame.grid[a * componentCount + c]
            if x.reporting, !x.local, !x.withoutQuorum, x.newestBadAt >= since { stirring[Int(agentRegion[a])] = true }
        }
        return stirring
    }

    /// Whether an open incident has recovered, counted in runs: every agent that counts in its
    /// regions passed its latest `monitor_runs` (`resolve_runs`) runs, and the pooled passing
    /// runs since the newest failure there reached M = ⌈ln(1 − recovery_confidence) / ln(1 − p)⌉,
    /// p being the failure rate of those regions' windows up to that failure; and the time since
    /// that failure is longer than the track's `recoveryLull` (to monitor) or `resolutionLull`
    /// (to resolve).
    func recoveryFacts(component c: Int, frame: EvaluationFrame, track: ComponentTrack) -> RecoveryFacts {
        guard let incident = track.incident else { return RecoveryFacts() }
        let record = track.faultRecord
        // A member not heard from since this collector's start or take-over (its spool not yet in)
        // cannot be counted out: other regions' clean runs said "every agent passes" over a
        // platform outage whose failing agents had not pushed again yet (found while testing the
        // integrations review's restart).
        for name in incident.agents {
            if let a = agentIndex[name].map(Int.init), agentSilenceCountedFrom[a] > -.infinity, !frame.excluded[a] { return RecoveryFacts() }
        }
        let regionCount = regionNames.count
        let componentCount = componentNames.count
        var scope = RegionCounts()
        var inScope = [Bool](repeating: false, count: regionCount)
        for r in 0..<regionCount where incident.scope == .platform || incident.regions.contains(regionNames[r]) {
            // Most of a region's agents just went quiet: the rest cannot vouch for its recovery.
            if frame.recoveryHeld[c * regionCount + r], frame.counts[c * regionCount + r].reporting > 0 { return RecoveryFacts() }
            inScope[r] = true
            scope += frame.counts[c * regionCount + r]
        }
        guard scope.reporting > 0 else { return RecoveryFacts() }
        // Every agent that counts must have passed its latest runs, except one that has sent
        // nothing for 2 of its intervals: late or stopping, it can neither confirm nor hold a
        // recovery (once silent it does not count at all).
        var minClean = Int32.max
        for a in 0..<agentIDs.count where inScope[Int(agentRegion[a])] && frame.agentCounts(a) {
            let x = frame.grid[a * componentCount + c]
            guard x.counts else { continue }
            if frame.agentInterval[a].isFinite, frame.t - x.lastReceived > 2 * frame.agentInterval[a] { continue }
            minClean = min(minClean, x.cleanTail)
        }
        var clean: Int32 = 0
        for s in frame.openSeries[c] {
            let a = Int(series[Int(s)].agent)
            guard inScope[Int(agentRegion[a])], frame.agentCounts(a), frame.grid[a * componentCount + c].counts else { continue }
            let after = max(
                scope.newestBadAt - agentOffset[a] + ComponentTrack.cutoffSlack, tracks[c].horizonCutoff(agent: a, offsets: agentOffset))
            clean += series[Int(s)].runs(after: after)
        }
        let p = scope.problemFailureRate(clean: clean, hardRuns: config.hardFaultRuns)
        let needed = Self.cleanRunsNeeded(failureRate: p, confidence: config.recoveryConfidence)
        // The windows hold 20 runs a series; the incident's record counts past them, with its
        // fault's rate over its whole life, so a low-rate fault's lucky stretch is not its end.
        let recordClean = record.clean >= record.neededRuns(confidence: config.recoveryConfidence)
        let pooledClean = clean >= needed && recordClean && frame.t - scope.newestBadAt > track.recoveryLull
        // Past `monitoring` the windows' runs before its horizon no longer count: the track's
        // newest problem run is the one resolution's stretch starts from.
        let resolutionLull = track.resolutionLull
        return RecoveryFacts(
            canMonitor: pooledClean && minClean != .max && minClean >= Int32(config.monitorRuns),
            canResolve: pooledClean && minClean != .max && minClean >= Int32(config.resolveRuns)
                && frame.t - max(scope.newestBadAt, track.newestBad) > resolutionLull,
            newestFailure: scope.newestBadAt, cleanRuns: max(clean, Int32(clamping: record.clean)), needed: needed,
            heldFor: resolutionLull > track.recoveryLull ? resolutionLull : nil)
    }

    /// Passing runs in a row after which a failure rate `p` still on would have shown a failure
    /// with probability `confidence`: ⌈ln(1 − confidence) / ln(1 − p)⌉ (0 when p is 0 or 1).
    static func cleanRunsNeeded(failureRate p: Double, confidence: Double) -> Int32 {
        guard p > 0, p < 1 else { return 0 }
        return Int32(min(10_000, (log(1 - confidence) / log(1 - p)).rounded(.up)))
    }

    // MARK: Phase 6: agent health

    /// Each agent's state (ok, local fault, silent, revoked) and its events.
    mutating func agentHealthPhase(_ frame: EvaluationFrame, now: Date, events: inout [AlertEvent]) {
        let componentCount = componentNames.count
        let t = frame.t
        for a32 in sortedAgents {
            let a = Int(a32)
            let position = Int(healthPosition[a])
            var h = health[position]
            let before = h
            let lastSeen = agentLastReceived[a] == -.infinity ? nil : Date(timeIntervalSince1970: agentLastReceived[a])
            if h.lastSeen != lastSeen { h.lastSeen = lastSeen }
            let previous = h.state
            if agentRevoked[a] {
                if previous != .revoked { h = enter(h, .revoked, since: now, reason: "agent key revoked") }
            } else if frame.silent[a] {
                if previous != .silent {
                    let since = lastSeen ?? now
                    // When, not how long: the reason stays on the agent while it is silent, and "no
                    // result for 16 s" read 47 s later was wrong (CLI walk-through, F7).
                    let quiet = Int((t - (lastSeen?.timeIntervalSince1970 ?? t)).rounded())
                    h = enter(h, .silent, since: since, reason: lastSeen.map { "no result since \(Self.clock($0)) (\(quiet) s when judged silent)" } ?? "no result yet")
                    if lastSeen != nil {
                        events.append(agentEvent(.agentSilent, health: h, now: now))
                    }
                }
                agentCleanStreak[a] = 0
            } else if let reason = frame.localReason[a] {
                agentCleanStreak[a] = 0
                let components = (0..<componentCount).filter {
                    frame.grid[a * componentCount + $0].local && frame.grid[a * componentCount + $0].state.isFailing
                }.map { componentNames[$0] }.sorted()
                if previous != .localFault {
                    h = enter(h, .localFault, since: now, reason: reason)
                    h.localComponents = components
                    events.append(agentEvent(.agentLocalFault, health: h, now: now))
                } else {
                    h.reason = reason
                    // Every component of the episode, until it ends: one whose runs have started
                    // passing is still the agent's own (its failures stay out of the pools).
                    h.localComponents = Array(Set(h.localComponents).union(components)).sorted()
                }
            } else if previous == .localFault {
                if frame.controlInDoubt[a] {
                    agentCleanStreak[a] = 0
                } else if agentHasNewData[a], !frame.catchingUp[a] {
                    // Runs from its spool's past are not the agent's network now.
                    agentCleanStreak[a] += 1
                }
                if agentCleanStreak[a] >= config.resolveAfter, agentRunsRecovered(Int32(a)) {
                    h = enter(h, .ok, since: now, reason: nil)
                    agentCleanStreak[a] = 0
                    forgetRunsBeforeRecovery(agent: Int32(a))
                }
            } else if previous != .ok {
                h = enter(h, .ok, since: now, reason: nil)
            }
            // Back to ok, or a silent agent reporting again with a local fault: the earlier
            // problem's alert ends (a local fault that turns into silence stays open).
            if h.state != before.state, h.state == .ok || h.state == .localFault, let ended = before.problemEvent {
                events.append(recoveredEvent(after: before, ended: ended, now: now))
            }
            health[position] = h
            agentHasNewData[a] = false
        }
    }

    /// Whether an agent in a local-fault episode has passed enough runs in a row for it to end
    /// (``runsRecovered(agents:component:)`` over all its probes, control included): a hard cut
    /// needs no more than `resolve_after` clean evaluations, while a flaky network that drops 30 %
    /// of connections (clean moments every few seconds) needs about 20 clean runs, so its
    /// episode no longer ends and starts again with every lucky stretch (found by the on-call
    /// review: 9 `agent.local_fault` and 9 `agent.recovered` in 50 s).
    func agentRunsRecovered(_ a: Int32) -> Bool {
        runsRecovered(agents: [a], component: nil)
    }

    /// Whether `agents`' runs (of `component`'s series, or of all their series when nil) since
    /// their newest failed run are as many as, were the failure rate they had still on, would
    /// have shown a failure with `recovery_confidence`: M = ⌈ln(1−c) / ln(1−p)⌉ passing runs in a
    /// row, pooled, as an incident's recovery counts them (`needed` gives M, else it comes from
    /// their own windows' rate, read as an incident's is). A hard fault needs a few runs once it
    /// is over; a fault failing 10 % of runs needs 66, counted past the windows' length.
    func runsRecovered(agents: Set<Int32>, component: Int32?, needed: Int32? = nil) -> Bool {
        func counted(_ s: Int) -> Bool {
            agents.contains(series[s].agent) && (component.map { series[s].component == $0 && !series[s].control } ?? true)
        }
        // Passing runs since the newest failure of them all: a series whose own newest failure is
        // older (or that never failed: a healthy probe beside a flaky one) counts only its runs
        // after that moment, not every pass it ever had (which ended a flaky control's episode
        // at once, an `agent.local_fault` and `agent.recovered` pair every 14 s; red team F2).
        var newestFailure = -Double.infinity
        for s in series.indices where counted(s) { newestFailure = max(newestFailure, series[s].newestFailedAt) }
        var clean: Int32 = 0
        for s in series.indices where counted(s) {
            if series[s].newestFailedAt == newestFailure {
                clean += series[s].passedSinceFailure
            } else {
                clean += Int32(series[s].runs.count { $0.startedAt > newestFailure && $0.outcome != .failed })
            }
        }
        if let needed { return clean >= needed }
        var oldestBad = Double.infinity, newestBad = -Double.infinity
        for s in series.indices where counted(s) {
            for run in series[s].runs where run.outcome == .failed {
                oldestBad = min(oldestBad, run.startedAt)
                newestBad = max(newestBad, run.startedAt)
            }
        }
        guard newestBad > -.infinity else { return true }
        var scope = RegionCounts()
        var cleanInWindow: Int32 = 0
        for s in series.indices where counted(s) {
            for run in series[s].runs {
                scope.allRuns += 1
                if run.outcome == .failed { scope.allBad += 1 }
                if run.startedAt > newestBad {
                    if run.outcome != .failed { cleanInWindow += 1 }
                } else if run.startedAt >= oldestBad {
                    scope.spanRuns += 1
                    if run.outcome == .failed { scope.spanBad += 1 }
                }
            }
        }
        // An agent's own episode reads a hard cut from `min_runs` failed runs, not an incident's
        // `hardFaultRuns`: its runs are spread over all its probes (a 2-minute cut of 4 probes at
        // 60 s leaves about 8), and reading 10 would keep a recovered agent's data out for minutes
        // (~31 runs); a flaky network is still told apart by the passing runs in its span.
        let p = scope.problemFailureRate(clean: cleanInWindow, hardRuns: config.minRuns)
        return clean >= Self.cleanRunsNeeded(failureRate: p, confidence: config.recoveryConfidence)
    }

    // Static: in debug builds a method call on `self` from a mutating context copies the engine.
    private static func silenceThreshold(interval: Double, _ cfg: CorrelationConfig) -> Double {
        interval.isFinite ? max(cfg.silentMin, cfg.silentAfterIntervals * interval) : max(cfg.silentMin, cfg.silentAfter)
    }

    /// What the runs of an agent's local-fault episode said about the platform: nothing. Once the
    /// agent has recovered, its failures from that time must not count as evidence against the
    /// platform (they would otherwise linger in its windows and colour the next verdicts), so its
    /// non-control windows drop every run up to their newest problem run.
    ///
    /// Passing runs after a series' newest problem run stay: they were made with the agent's
    /// network back (a run that passed before its control's next run did, or the runs between
    /// the control recovering and the local-fault episode ending `resolve_after` evaluations
    /// later). Dropping them too made a recovered agent start its recovery count again, one
    /// probe interval later than its peers (cut-during-outage resolved an interval late).
    private mutating func forgetRunsBeforeRecovery(agent: Int32) {
        for s in series.indices where series[s].agent == agent && !series[s].control {
            guard let newestProblem = series[s].runs.lastIndex(where: { $0.outcome != .ok }) else { continue }
            series[s].runs.removeFirst(newestProblem + 1)
            summaries[s] = series[s].summarize(config: config, errorCode: -1)
        }
    }

    /// `major_outage`: at least `major_ratio` of the agents fail hard, and the component fails at
    /// least `major_step_ratio` of the steps they attempt (per step, not per run: a journey that
    /// calls a component 4 times fails most runs while 30 % of its requests fail, a partial outage).
    static func isMajor(_ k: RegionCounts, _ cfg: CorrelationConfig) -> Bool {
        guard k.hard > 0, Double(k.hard) >= cfg.majorRatio * Double(k.reporting) else { return false }
        return (k.stepFailureRate ?? 1) >= cfg.majorStepRatio
    }

    static func regionStatus(_ k: RegionCounts, _ cfg: CorrelationConfig) -> ComponentStatus {
        let reporting = Double(k.reporting)
        if isMajor(k, cfg) { return .majorOutage }
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
        AlertEvent(
            id: Self.agentEventID(type, h), type: type, occurredAt: now, status: h.state.rawValue, scope: .agent,
            regions: [h.region], agents: [h.agent], agent: h.agent, summary: h.problemSummary)
    }

    /// `agent.silent.<agent>.<since unix ms>`: stable across re-evaluation and restarts.
    private static func agentEventID(_ type: AlertEventType, _ h: AgentHealth) -> String {
        "\(type.rawValue).\(h.agent).\(Int64((h.since.timeIntervalSince1970 * 1000).rounded()))"
    }

    /// `agent.recovered` for the problem `h` was in until now.
    private func recoveredEvent(after h: AgentHealth, ended type: AlertEventType, now: Date) -> AlertEvent {
        let minutes = max(0, now.timeIntervalSince(h.since)) / 60
        let lasted = minutes < 1 ? "\(Int(minutes * 60)) s" : minutes < 120 ? "\(Int(minutes)) min" : "\(Int(minutes / 60)) h"
        let what = type == .agentSilent ? "reporting again after \(lasted) silent" : "local fault cleared after \(lasted)"
        let problem = Self.agentEventID(type, h)
        return AlertEvent(
            id: "\(AlertEventType.agentRecovered.rawValue).\(problem.dropFirst(type.rawValue.count + 1))", type: .agentRecovered,
            occurredAt: now, status: AgentState.ok.rawValue, scope: .agent, regions: [h.region], agents: [h.agent], agent: h.agent,
            summary: "agent \(h.agent) (\(h.region)): \(what)", resolves: problem, resolvesType: type)
    }

    // MARK: - Evidence

    private func makeEvidence(
        component c: Int, total: RegionCounts, failingCount: Int, failingRegions: [String], failingNames: [String], localNames: [String],
        sampleSeries: [Int32], codeCounts: [Int32: Int32], latencies: inout [Double]
    ) -> Evidence {
        var codes: [String: Int] = [:]
        for (code, n) in codeCounts where n > 0 { codes[errorCodeNames[Int(code)]] = Int(n) }
        var distinct = Set<ProbeError>()
        for s in sampleSeries {
            if let e = series[Int(s)].latestError { distinct.insert(e) }
        }
        let samples = distinct.sorted {
            ($0.code ?? "", $0.kind.rawValue, $0.step, $0.message) < ($1.code ?? "", $1.kind.rawValue, $1.step, $1.message)
        }.prefix(config.maxSampleErrors)
        let (p50, p95) = Self.percentiles(&latencies)
        return Evidence(
            failingAgents: failingNames, failingAgentCount: failingCount, failingRegions: failingRegions,
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
