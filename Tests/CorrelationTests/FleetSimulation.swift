import Foundation
import SondeCore

@testable import Correlation

/// A simulated fleet for scenario tests: agents in regions, each running one probe per component
/// plus a control probe every `interval` seconds (phases spread across the interval), results
/// pushed to the engine every simulated second and `evaluate(now:)` called after each push.
struct FleetSimulation {
    /// How a run ends: nil → the default (ok).
    typealias Fault = (_ agent: String, _ region: String, _ probe: Probe, _ run: Int) -> (Outcome, ProbeError?)?

    struct Probe: Hashable {
        var name: String
        var component: String
        var control: Bool
    }

    static let start = Date(timeIntervalSince1970: 1_800_000_000)
    static let components = ["api", "batch", "files", "login"]

    var agents: [AgentInfo]
    var probes: [Probe]
    var interval: Double
    var engine: CorrelationEngine
    var now: Date
    var faults: [String: Fault] = [:]
    var stopped: Set<String> = []
    /// Agents whose results wait in their spools (the collector is down): delivered, with the
    /// rest, once they are no longer listed.
    var spooling: Set<String> = []
    /// At most this many spooled results per agent go out each second once it delivers again
    /// (an agent's `batch_size` per push): a long spool arrives over several pushes, oldest first.
    var spoolBatch = Int.max
    private var spooled: [String: [ProbeResult]] = [:]
    /// Every event emitted so far, in order.
    var events: [AlertEvent] = []
    /// Every result pushed, with the time it was received (for rebuild tests).
    var pushed: [(result: ProbeResult, receivedAt: Date)] = []
    var firstFailureAt: Date?
    /// Seconds each agent's clock is ahead of the collector's (negative: behind).
    var clockSkew: [String: Double] = [:]
    /// Components whose journeys log in first: a step of component `login` before their own.
    var loginJourneys: Set<String> = []
    /// Components whose probes make this many requests to them per run (a journey), each
    /// judged by the faults on its own; others make one.
    var requestsPerRun: [String: Int] = [:]
    let controlLag: Double
    /// The control probe runs every this many intervals (real agents run it less often than
    /// their probes: every 30 s beside probes every few seconds).
    var controlEvery = 1
    /// Agents run their control probe at once after another probe's failed run, when its latest
    /// run began before that run (as `sonde-agent` does; older agents wait for its slot).
    var promptControl = false
    /// Agents run a probe again every this many seconds after a failed or slow run, until two
    /// intervals after it, and for two intervals after the collector asks their region to
    /// confirm its component (`confirm_components`), as `sonde-agent` does at its default
    /// `retry_interval`. nil: runs at their slots only.
    var retryInterval: Double?
    /// Seconds between pushes (and evaluations): 1 by default; 0.1 is the scenarios' agents'
    /// `flush_interval`, whose collector evaluates as pushes come.
    var tick = 1.0
    private var retryEnd: [String: Double] = [:]
    private var lastRunAt: [String: Double] = [:]
    private var retryRuns = 0
    private var controlChecks: [String: Int] = [:]
    private var lastControlAt: [String: Double] = [:]
    private var nextRun: [String: (run: Int, at: Double)] = [:]

    /// `controlLag`: how much later than the agent's other probes its control probe runs in each
    /// interval (real agents spread their probes' phases; 0 runs them all at once).
    init(
        regions: [String: Int] = ["eu": 3, "us": 3, "ap": 3], components: [String] = Self.components, interval: Double = 2,
        controlLag: Double = 0, config: CorrelationConfig = CorrelationConfig()
    ) {
        var agents: [AgentInfo] = []
        for region in regions.keys.sorted() {
            for i in 1...regions[region]! { agents.append(AgentInfo(id: "\(region)-\(i)", region: region)) }
        }
        self.agents = agents
        probes = components.map { Probe(name: "\($0)-journey", component: $0, control: false) }
            + [Probe(name: "control", component: "control", control: true)]
        self.interval = interval
        self.controlLag = controlLag
        engine = CorrelationEngine(config: config, agents: agents)
        now = Self.start
        for (n, agent) in agents.enumerated() {
            let phase = interval * Double(n) / Double(agents.count)
            for probe in probes {
                let lag = probe.control ? controlLag : 0
                nextRun[agent.id + "/" + probe.name] = (0, Self.start.timeIntervalSince1970 + phase + lag)
            }
        }
    }

    /// Advances simulated time `seconds`, a `tick` at a time; returns the events of these steps.
    @discardableResult
    mutating func step(seconds: Int = 1) -> [AlertEvent] {
        step(ticks: Int((Double(seconds) / tick).rounded()))
    }

    /// Advances simulated time `ticks` pushes and evaluations; returns their events.
    @discardableResult
    mutating func step(ticks: Int) -> [AlertEvent] {
        var emitted: [AlertEvent] = []
        for _ in 0..<ticks {
            now = now.addingTimeInterval(tick)
            let t = now.timeIntervalSince1970
            var batch: [ProbeResult] = []
            for agent in agents {
                for probe in probes {
                    let key = agent.id + "/" + probe.name
                    while let next = nextRun[key] {
                        // A retry between the slots, unless the next slot comes about as soon.
                        var retryAt: Double?
                        if let pace = retryInterval, !probe.control, let end = retryEnd[key] {
                            let at = lastRunAt[key].map { $0 + pace } ?? t - 1
                            if at < end, at + pace / 2 < next.at { retryAt = at }
                        }
                        let at = retryAt ?? next.at
                        guard at + 0.1 <= t else { break }
                        var run = next.run
                        if retryAt != nil {
                            retryRuns += 1
                            run = 1_000_000 + retryRuns
                        } else {
                            nextRun[key] = (next.run + 1, next.at + interval * Double(probe.control ? controlEvery : 1))
                        }
                        lastRunAt[key] = at
                        if stopped.contains(agent.id) { continue }
                        var r = result(agent: agent, probe: probe, run: run, at: at)
                        if retryAt != nil { r.retry = true }
                        if retryInterval != nil, !probe.control, r.outcome != .ok { retryEnd[key] = max(retryEnd[key] ?? 0, at + 2 * interval) }
                        batch.append(r)
                    }
                }
            }
            for r in batch where r.control == true { lastControlAt[r.agent] = max(lastControlAt[r.agent] ?? 0, r.startedAt.timeIntervalSince1970) }
            if promptControl, let control = probes.first(where: \.control) {
                let failedAgents = Set(batch.filter { $0.control != true && $0.outcome == .failed && $0.startedAt.timeIntervalSince1970 > (lastControlAt[$0.agent] ?? 0) }.map(\.agent))
                for agent in agents where failedAgents.contains(agent.id) {
                    let run = nextRun[agent.id + "/" + control.name]?.run ?? 0
                    var check = result(agent: agent, probe: control, run: run, at: t - min(0.5, tick / 2))
                    controlChecks[agent.id, default: 0] += 1
                    check.id += "-check-\(controlChecks[agent.id]!)"
                    check.retry = true
                    lastControlAt[agent.id] = t - min(0.5, tick / 2)
                    batch.append(check)
                }
            }
            // Every agent's results queue behind what it still holds; those delivering send
            // the oldest first.
            for r in batch { spooled[r.agent, default: []].append(r) }
            batch = []
            for agent in agents.map(\.id) where !spooling.contains(agent) {
                guard let queue = spooled[agent], !queue.isEmpty else { continue }
                let n = min(queue.count, spoolBatch)
                batch += queue.prefix(n)
                spooled[agent] = Array(queue.dropFirst(n))
            }
            if !batch.isEmpty {
                engine.ingest(batch, receivedAt: now)
                for r in batch { pushed.append((r, now)) }
            }
            let output = engine.evaluate(now: now)
            emitted += output.events
            if retryInterval != nil {
                // The push's answer: the regions asked to confirm run those components' probes
                // at the retry pace for two intervals.
                for agent in agents {
                    guard let asked = engine.confirmationRequests.components(forRegion: agent.region) else { continue }
                    for probe in probes where !probe.control && asked.contains(probe.component) {
                        let key = agent.id + "/" + probe.name
                        retryEnd[key] = max(retryEnd[key] ?? 0, t + 2 * interval)
                    }
                }
            }
        }
        events += emitted
        return emitted
    }

    private func verdict(agent: AgentInfo, probe: Probe, run: Int) -> (Outcome, ProbeError?) {
        for name in faults.keys.sorted() {
            if let verdict = faults[name]!(agent.id, agent.region, probe, run) { return verdict }
        }
        return (.ok, nil)
    }

    private mutating func result(agent: AgentInfo, probe: Probe, run: Int, at: Double) -> ProbeResult {
        var (outcome, error) = verdict(agent: agent, probe: probe, run: run)
        var steps: [StepResult] = []
        var loginSlow = false
        if loginJourneys.contains(probe.component), !probe.control {
            // The journey's login step is judged as the login probe would be at this run; a slow
            // one is marked as an agent marks a step over its own `degraded_after`.
            let (login, loginError) = verdict(agent: agent, probe: Probe(name: "login-step", component: "login", control: false), run: run)
            let loginOK = login != .failed
            loginSlow = login == .degraded
            var timings = PhaseTimings.zero
            timings.total = loginSlow ? 2500 : 0
            steps.append(
                StepResult(
                    name: "login", method: "POST", url: "https://x/login", ok: loginOK, timings: timings, error: loginError, component: "login",
                    degraded: loginSlow ? "step 'login' took 2500 ms, over degraded_after 1s" : nil))
            if !loginOK {
                (outcome, error) = (.failed, loginError)
            } else if requestsPerRun[probe.component] == nil {
                steps.append(StepResult(name: "main", method: "GET", url: "https://x/main", ok: outcome != .failed, timings: .zero, error: error))
            }
        }
        if let requests = requestsPerRun[probe.component], !probe.control, steps.allSatisfy(\.ok) {
            // Each request of the journey is judged on its own (a fault hits requests, not runs);
            // the run stops at the first that fails.
            (outcome, error) = (.ok, nil)
            for i in 0..<requests {
                let (o, e) = verdict(agent: agent, probe: Probe(name: "\(probe.name)#\(i)", component: probe.component, control: false), run: run)
                steps.append(StepResult(name: "request \(i)", method: "GET", url: "https://x/\(i)", ok: o != .failed, timings: .zero, error: e))
                if o == .failed {
                    (outcome, error) = (o, e)
                    break
                }
                if o == .degraded { outcome = .degraded }
            }
        }
        // The run's own slowness (the probe's `degraded_after`), as against its login step's.
        let runSlow = outcome == .degraded
        if loginSlow, outcome == .ok { outcome = .degraded }
        var duration = 100.0
        if outcome == .degraded { duration = 2500 }
        if outcome == .failed {
            duration = 300
            if firstFailureAt == nil && !probe.control { firstFailureAt = Date(timeIntervalSince1970: at) }
        }
        return ProbeResult(
            id: "\(agent.id)/\(probe.name)/\(run)", probe: probe.name, component: probe.component, agent: agent.id,
            region: agent.region, startedAt: Date(timeIntervalSince1970: at + (clockSkew[agent.id] ?? 0)), durationMs: duration,
            outcome: outcome, error: error, steps: steps, control: probe.control ? true : nil,
            degraded: runSlow ? "the run took 2500 ms, over degraded_after 1s" : nil)
    }

    /// What one compromised agent pushes besides its real runs: a passing run of each of
    /// `probes` probes it made up, all for `component`, received now.
    mutating func ingestMadeUpPassingRuns(from agent: String, region: String, component: String, probes: Int = 150) {
        let flood = (0..<probes).map { i in
            ProbeResult(
                id: "made-up-\(agent)-\(now.timeIntervalSince1970)-\(i)", probe: "up-\(i)", component: component, agent: agent,
                region: region, startedAt: now.addingTimeInterval(-0.5), durationMs: 5, outcome: .ok, steps: [])
        }
        engine.ingest(flood, receivedAt: now)
    }

    /// Steps `seconds` one at a time; returns the times (seconds since the start) at which
    /// `agent` was listed among `component`'s failing agents.
    mutating func stepListingFailing(_ agent: String, on component: String, seconds: Int) -> [Double] {
        var listed: [Double] = []
        for _ in 0..<seconds {
            step()
            if verdicts[component]?.evidence.failingAgents.contains(agent) == true {
                listed.append(now.timeIntervalSince(Self.start))
            }
        }
        return listed
    }

    /// A collector "restart": an engine from the stored open incidents and agent states, fed the
    /// window's stored results as they were received.
    func rebuiltEngine() -> CorrelationEngine {
        var rebuilt = CorrelationEngine(
            config: CorrelationConfig(), agents: agents, openIncidents: engine.openIncidents, agentStates: engine.agentHealth)
        let horizon = now.addingTimeInterval(-600)
        let window = pushed.filter { $0.receivedAt >= horizon }
        for (receivedAt, results) in Dictionary(grouping: window, by: \.receivedAt).sorted(by: { $0.key < $1.key }) {
            rebuilt.ingest(results.map(\.result), receivedAt: receivedAt)
        }
        return rebuilt
    }

    /// What a collector killed now has stored: the decisions a restart starts from.
    var storedDecisions: (incidents: [Incident], agents: [AgentHealth]) { (engine.openIncidents, engine.agentHealth) }

    /// The collector starts again on what it stored (`decisions`, from `storedDecisions` when it
    /// was killed, and every result pushed, as received), counting the agents' silence from
    /// its 70 s allowance, as `sonde-collector` does after a restart.
    mutating func restartCollector(
        from decisions: (incidents: [Incident], agents: [AgentHealth]), resolved: [Incident] = [], config: CorrelationConfig = CorrelationConfig()
    ) {
        var rebuilt = CorrelationEngine(
            config: config, agents: agents, openIncidents: decisions.incidents, agentStates: decisions.agents, resolved: resolved)
        for (result, receivedAt) in pushed { rebuilt.ingest([result], receivedAt: receivedAt) }
        rebuilt.countSilence(from: now.addingTimeInterval(70))
        engine = rebuilt
    }

    var verdicts: [String: ComponentVerdict] {
        Dictionary(uniqueKeysWithValues: engine.verdicts.map { ($0.component, $0) })
    }

    func health(_ agent: String) -> AgentHealth? { engine.agentHealth.first { $0.agent == agent } }

    // MARK: - Fault helpers

    static func failing(
        agents: Set<String>? = nil, regions: Set<String>? = nil, components: Set<String>? = nil, control: Bool = false,
        error: ProbeError = ProbeError(kind: .httpStatus, step: "request", message: "HTTP 503", code: "server_error"),
        when pattern: @escaping (Int) -> Bool = { _ in true }
    ) -> Fault {
        { agent, region, probe, run in
            if let agents, !agents.contains(agent) { return nil }
            if let regions, !regions.contains(region) { return nil }
            if probe.control && !control { return nil }
            if !probe.control, let components, !components.contains(probe.component) { return nil }
            return pattern(run) ? (.failed, error) : nil
        }
    }

    /// `agent`'s network cut from `seconds` after the start: every probe (control included) that
    /// starts from then on fails to connect, whatever its phase.
    func networkCut(of agent: String, from seconds: Double) -> Fault {
        let n = Double(agents.firstIndex { $0.id == agent } ?? 0)
        let phase = interval * n / Double(agents.count)
        let (interval, lag) = (interval, controlLag)
        return { id, _, probe, run in
            let startsAt = phase + (probe.control ? lag : 0) + Double(run) * interval
            guard id == agent, startsAt >= seconds else { return nil }
            return (.failed, ProbeError(kind: .connect, step: "request", message: "connection refused"))
        }
    }

    static func slow(components: Set<String>, regions: Set<String>? = nil, agents: Set<String>? = nil) -> Fault {
        { agent, region, probe, _ in
            if let regions, !regions.contains(region) { return nil }
            if let agents, !agents.contains(agent) { return nil }
            return components.contains(probe.component) && !probe.control ? (.degraded, nil) : nil
        }
    }

    /// A `fraction` of runs fail, at random but reproducibly: the same (seed, agent, probe, run)
    /// always gives the same answer.
    static func randomly(
        _ fraction: Double, seed: UInt64, agents: Set<String>? = nil, regions: Set<String>? = nil, components: Set<String>
    ) -> Fault {
        let error = ProbeError(kind: .httpStatus, step: "request", message: "HTTP 500", code: "server_error")
        return { agent, region, probe, run in
            if let agents, !agents.contains(agent) { return nil }
            if let regions, !regions.contains(region) { return nil }
            guard !probe.control, components.contains(probe.component) else { return nil }
            return chance("\(agent)/\(probe.name)/\(run)", seed: seed) < fraction ? (.failed, error) : nil
        }
    }

    /// `agent`'s network drops a `fraction` of its connections: every probe it runs, its control
    /// too, fails now and then, at random but reproducibly.
    static func flakyNetwork(of agent: String, _ fraction: Double, seed: UInt64) -> Fault {
        let reset = ProbeError(kind: .connect, step: "request", message: "connection reset")
        return { id, _, probe, run in
            guard id == agent else { return nil }
            return chance("\(probe.name)/\(run)", seed: seed) < fraction ? (.failed, reset) : nil
        }
    }

    /// A uniform number in 0..<1 fixed by `key` and `seed` (FNV-1a, then SplitMix64).
    private static func chance(_ key: String, seed: UInt64) -> Double {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in key.utf8 { hash = (hash ^ UInt64(byte)) &* 0x100_0000_01b3 }
        var random = SplitMix64(seed: hash ^ seed)
        return random.nextUnitDouble()
    }
}
