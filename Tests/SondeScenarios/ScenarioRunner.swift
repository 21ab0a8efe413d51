import CollectorAPI
import Correlation
import Foundation
import SondeCore
import SondeTestSupport

/// One webhook event as the receiver got it, read loosely (only the fields the metrics need) so
/// the suite keeps measuring while the engine's event shape grows.
public struct ObservedEvent: Sendable {
    public var at: ContinuousClock.Instant
    public var type: String
    public var component: String?
    public var status: String?
    public var scope: String?
    public var regions: [String]
    public var agent: String?
    public var incidentID: String?

    init?(at: ContinuousClock.Instant, body: Data) {
        guard let object = try? JSONSerialization.jsonObject(with: body) as? [String: Any] else { return nil }
        // Webhook bodies are the event, or `{"event": …}` in the signed envelope.
        let event = (object["event"] as? [String: Any]) ?? object
        guard let type = event["type"] as? String else { return nil }
        self.at = at
        self.type = type
        component = event["component"] as? String
        status = event["status"] as? String
        scope = event["scope"] as? String
        regions = event["regions"] as? [String] ?? []
        agent = event["agent"] as? String
        incidentID = (event["incident"] as? [String: Any])?["id"] as? String
    }

    var summary: String {
        [type, component, status, scope, regions.isEmpty ? nil : regions.joined(separator: ","), agent].compactMap { $0 }.joined(separator: " ")
    }
}

/// What one trial measured.
public struct TrialOutcome: Sendable {
    public var finalVerdictRight: Bool
    /// What was wrong with the final verdict, for people.
    public var wrong: [String]
    public var falseLocalFaults: Int
    public var incidentsFromLocalFaults: Int
    public var flaps: Int
    /// nil when the scenario expects no incident.
    public var firstAlertScopeRight: Bool?
    /// Fault → first incident.opened; nil when none came within the hold (or none expected).
    public var detection: Duration?
    /// Fault → the end of the first failed run of an expected component (by the agents' clocks):
    /// when the fault first showed at all. Detection less this is the engine's and the
    /// pipeline's share; the rest is a random fault not failing any run yet. Nil when none did.
    public var firstFailure: Duration?
    /// Fault cleared → the last incident.resolved; nil when not resolved within the wait.
    public var resolution: Duration?
    public var resolvedInTime: Bool
    public var events: [String]
}

/// Runs a scenario's trials against a live `SondeSystem` and measures each one.
public struct ScenarioRunner: Sendable {
    public var interval: Duration
    /// The agents' `collector.flush_interval` in every scenario (nil: the agent's default).
    public var agentFlushInterval: String?
    public var log: @Sendable (String) -> Void

    public init(interval: Duration, agentFlushInterval: String? = "100ms", log: @escaping @Sendable (String) -> Void = { _ in }) {
        self.interval = interval
        self.agentFlushInterval = agentFlushInterval
        self.log = log
    }

    public var intervalText: String { "\(interval.components.seconds * 1000 + interval.components.attoseconds / 1_000_000_000_000_000)ms" }

    public func detectionTarget(_ scenario: Scenario) -> Duration { interval * 2 + scenario.detectionAllowance }
    public var resolutionTarget: Duration { interval * 3 }

    /// Starts a system for the scenario (3 regions × 2 agents), runs `trials` trials and stops it.
    /// `onTrial` sees each outcome as it comes, so a caller keeps the trials done before a failure.
    public func run(_ scenario: Scenario, trials: Int, onTrial: (TrialOutcome) -> Void = { _ in }) async throws -> [TrialOutcome] {
        var outcomes: [TrialOutcome] = []
        var options = scenario.options
        options.agentFlushInterval = agentFlushInterval
        // Trials are separate faults seconds apart on one system: by default the collector reads
        // a problem back within `flap_memory` of a resolution as the same fault coming and going,
        // and holds its resolution for 1.5 × the gap. Stated in VERDICTS.md's head.
        options.correlation = options.correlation == "{}" ? "{flap_memory: 0}" : "{flap_memory: 0, " + options.correlation.dropFirst()
        try await SondeSystem.with(
            agents: ["eu-1", "eu-2", "us-1", "us-2", "ap-1", "ap-2"], interval: intervalText, options: options
        ) { system in
            for trial in 1...trials {
                try await system.waitUntilHealthy(timeout: .seconds(120), exempt: Set(scenario.options.clockOffsets.keys))
                // Each trial starts from agents at their regular pace: a probe's own retries, and
                // a collector's confirmation request, last two intervals after the last failure or
                // ask, so a trial started sooner would find them still probing 4 × as often.
                if trial > 1 { try await Task.sleep(for: interval * 3) }
                let outcome = try await runTrial(scenario, trial: trial, on: system)
                log("\(scenario.name) trial \(trial): " + Self.describe(outcome))
                outcomes.append(outcome)
                onTrial(outcome)
            }
        }
        return outcomes
    }

    static func describe(_ o: TrialOutcome) -> String {
        func seconds(_ d: Duration?) -> String { d.map { String(format: "%.2f s", $0.seconds) } ?? "—" }
        return "verdict \(o.finalVerdictRight ? "right" : "WRONG (\(o.wrong.joined(separator: "; ")))"), false local \(o.falseLocalFaults), "
            + "incidents from local \(o.incidentsFromLocalFaults), flaps \(o.flaps), first scope \(o.firstAlertScopeRight.map { $0 ? "right" : "WRONG" } ?? "—"), "
            + "detection \(seconds(o.detection)) (first failed run \(seconds(o.firstFailure))), resolution \(o.resolvedInTime ? seconds(o.resolution) : "not resolved")"
    }

    func perform(_ actions: [Scenario.Action], on system: SondeSystem) async throws {
        for action in actions {
            switch action {
            case .fault(let arguments): try await system.fault(arguments)
            case .clearFaults: try await system.clearFaults()
            case .cut(let agent): system.cutNetwork(of: agent)
            case .flaky(let agent): system.makeNetworkFlaky(of: agent)
            case .restore(let agent): system.restoreNetwork(of: agent)
            case .stopCollector: await system.stopCollector()
            case .startCollector: try await system.startCollectorAgain()
            }
        }
    }

    func runTrial(_ scenario: Scenario, trial: Int, on system: SondeSystem) async throws -> TrialOutcome {
        let clock = ContinuousClock()
        let hold = interval * scenario.holdIntervals
        // A random phase against the agents' schedules.
        try await Task.sleep(for: interval * Double.random(in: 0..<1))
        let t0 = clock.now
        let t0Wall = Date()
        var steadyWindows: [(ContinuousClock.Instant, ContinuousClock.Instant)] = []
        var windowStart = t0
        for (index, step) in scenario.steps.enumerated() {
            try await clock.sleep(until: t0 + hold * step.at)
            if step.changesFault {
                steadyWindows.append((windowStart, clock.now))
                // The old part resolves within the resolution target: not a flap.
                windowStart = clock.now + resolutionTarget + .seconds(1)
            }
            try await perform(step.actions, on: system)
            if index == 0 { log("\(scenario.name) trial \(trial): fault on at \(Self.epochMilliseconds()) ms") }
        }
        try await clock.sleep(until: t0 + hold)
        let t1 = clock.now
        steadyWindows.append((windowStart, t1))
        let finalStatus = try JSONSerialization.jsonObject(with: try await system.api("/v1/status")) as? [String: Any] ?? [:]
        var wrong = Self.judge(finalStatus, scenario)
        // An agent whose clock is off is still a healthy agent.
        for view in try await system.agentsView() where scenario.options.clockOffsets[view.id] != nil && view.state != .ok {
            wrong.append("\(view.id) (clock off) \(view.state?.rawValue ?? "no state")")
        }

        // Clear: the platform fault, every agent network, then the scenario's stop. Resolution is
        // timed from here, not from `t1`: reading the verdict above (two API calls, slow on a
        // loaded machine) happens while the fault is still on.
        let clearing = clock.now
        try await system.clearFaults()
        log("\(scenario.name) trial \(trial): fault cleared at \(Self.epochMilliseconds()) ms")
        for agent in system.agents.keys.sorted() { system.restoreNetwork(of: agent) }
        if let stopped = scenario.stopAgentOnClear {
            system.agents[stopped]?.process.signal(trial % 2 == 1 ? SIGTERM : SIGKILL)
        }
        var resolvedInTime = true
        do {
            // Resolved in the API and its incident.resolved webhook arrived, for every incident.
            try await waitUntil("every incident resolved", timeout: max(interval * 20, .seconds(40)), every: .milliseconds(100)) {
                let status = try JSONSerialization.jsonObject(with: try await system.api("/v1/status")) as? [String: Any] ?? [:]
                let events = Self.events(system, from: t0)
                let opened = Set(events.filter { $0.type == "incident.opened" }.compactMap(\.incidentID))
                let resolved = Set(events.filter { $0.type == "incident.resolved" }.compactMap(\.incidentID))
                return ((status["open_incidents"] as? [Any])?.isEmpty ?? false) && opened.isSubset(of: resolved)
            }
        } catch {
            resolvedInTime = false
        }
        if scenario.observeAfterClear > .zero {
            try await clock.sleep(until: t1 + scenario.observeAfterClear)
            let status = try JSONSerialization.jsonObject(with: try await system.api("/v1/status")) as? [String: Any] ?? [:]
            let open = (status["open_incidents"] as? [[String: Any]]) ?? []
            if !open.isEmpty {
                wrong.append("\(open.count) incident(s) open \(Int(scenario.observeAfterClear.seconds)) s after recovery: "
                    + open.map { "\($0["component"] ?? "?") \($0["scope"] ?? "?")" }.joined(separator: ", "))
            }
        }
        let events = Self.events(system, from: t0)
        let openedInTrial = Set(events.filter { $0.type == "incident.opened" }.compactMap(\.incidentID))

        // Metrics from the webhooks.
        let localFaults = events.filter { $0.type == "agent.local_fault" }
        let falseLocal = localFaults.filter { !scenario.localAgents.contains($0.agent ?? "") }.count
        let unexpectedOpened = events.filter { $0.type == "incident.opened" && scenario.expected[$0.component ?? ""] == nil }
        let incidentsFromLocal = scenario.hasLocalFault ? unexpectedOpened.count : 0
        var flaps = 0
        for event in events {
            let inSteady = steadyWindows.contains { event.at >= $0.0 && event.at < $0.1 }
            let goesDown = event.type == "incident.resolved" || (event.type == "incident.updated" && event.status == "monitoring")
            if inSteady && goesDown { flaps += 1 }
            // Reopening with the platform healthy again is noise too.
            if event.at >= t1 && event.type == "incident.opened" { flaps += 1 }
        }
        // The first page: right only when it names an expected component at its expected scope.
        let firstOpened = events.first { $0.type == "incident.opened" && $0.at < t1 }
        var firstScopeRight: Bool?
        var detection: Duration?
        if let firstOpened, !scenario.expected.isEmpty {
            firstScopeRight = scenario.expected[firstOpened.component ?? ""].map { firstOpened.scope == $0.scope } ?? false
            detection = firstOpened.at - t0
        } else if !scenario.expected.isEmpty {
            firstScopeRight = false
            wrong.append("no incident.opened within the hold")
        }
        var resolution: Duration?
        if !openedInTrial.isEmpty {
            let resolved = events.filter { $0.type == "incident.resolved" && $0.at >= t1 }
            resolution = resolved.map(\.at).max().map { $0 - clearing }
        }
        if let stopped = scenario.stopAgentOnClear {
            try await system.restartAgent(stopped)
        }
        let shown = await Self.firstFailures(scenario, system: system, since: t0Wall)
        let firstFailure = shown.filter { $0.1.hasPrefix("first failed run") }.map(\.0).min().map { Duration.milliseconds(Int64(($0 * 1000).rounded())) }
        return TrialOutcome(
            finalVerdictRight: wrong.isEmpty, wrong: wrong, falseLocalFaults: falseLocal, incidentsFromLocalFaults: incidentsFromLocal,
            flaps: flaps, firstAlertScopeRight: firstScopeRight, detection: detection, firstFailure: firstFailure, resolution: resolution,
            resolvedInTime: resolvedInTime,
            events: (events.map { (($0.at - t0).seconds, $0.summary) } + shown)
                .sorted { $0.0 < $1.0 }.map { String(format: "%+.2f ", $0.0) + $0.1 })
    }

    /// Wall-clock milliseconds, to line the log up with the collector's stored times.
    static func epochMilliseconds() -> Int64 { Int64((Date().timeIntervalSince1970 * 1000).rounded()) }

    /// For the events log, per expected component: when its first failed runs after the fault
    /// went on ended (seconds after it, by the agents' clocks: a detection time less this is the
    /// engine's and the pipeline's share, the rest is waiting for a random fault to show at all),
    /// and how often each agent ran it in the 10 s before and after (the confirmation pace). One
    /// read of the runs from 10 s before to 30 s after (6 agents at the retry pace: about 500 of
    /// its 1,000).
    static func firstFailures(_ scenario: Scenario, system: SondeSystem, since start: Date) async -> [(Double, String)] {
        var out: [(Double, String)] = []
        let since = RFC3339.string(from: start.addingTimeInterval(-10))
        let until = RFC3339.string(from: start.addingTimeInterval(30))
        for component in scenario.expected.keys.sorted() {
            guard let data = try? await system.api("/v1/results?component=\(component)&limit=1000&since=\(since)&until=\(until)"),
                let page = try? SondeJSON.decode(ResultsResponse.self, from: data)
            else { continue }
            let ends = page.results.filter { $0.outcome == .failed }
                .map { ($0.startedAt.addingTimeInterval($0.durationMs / 1000).timeIntervalSince(start), $0.agent) }
                .filter { $0.0 >= 0 }.sorted { $0.0 < $1.0 }
            // The first few, each with its agent: which ones the engine needed before it opened.
            for (i, run) in ends.prefix(6).enumerated() {
                out.append((run.0, "\(i == 0 ? "first" : "then a") failed run of \(component) ended (\(run.1))"))
            }
            var pace: [String: (before: Int, after: Int)] = [:]
            for run in page.results {
                let at = run.startedAt.timeIntervalSince(start)
                if (-10..<0).contains(at) { pace[run.agent, default: (0, 0)].before += 1 }
                if (0..<10).contains(at) { pace[run.agent, default: (0, 0)].after += 1 }
            }
            out.append((10, "runs of \(component) started in the 10 s before / after: "
                + pace.keys.sorted().map { "\($0) \(pace[$0]!.before)/\(pace[$0]!.after)" }.joined(separator: ", ")))
        }
        return out
    }

    static func events(_ system: SondeSystem, from start: ContinuousClock.Instant) -> [ObservedEvent] {
        system.arrivedEvents.filter { $0.at >= start }.compactMap { ObservedEvent(at: $0.at, body: $0.body) }
    }

    /// What is wrong with `/v1/status` against the scenario's expectations (empty = right).
    static func judge(_ status: [String: Any], _ scenario: Scenario) -> [String] {
        var wrong: [String] = []
        let components = (status["components"] as? [[String: Any]]) ?? []
        let openIncidents = (status["open_incidents"] as? [[String: Any]]) ?? []
        for (name, expectation) in scenario.expected.sorted(by: { $0.key < $1.key }) {
            guard let verdict = components.first(where: { $0["component"] as? String == name }) else {
                wrong.append("\(name): no verdict")
                continue
            }
            let statusText = verdict["status"] as? String ?? "?"
            let scope = verdict["scope"] as? String ?? "-"
            let regions = Set(((verdict["regions"] as? [String: String]) ?? [:]).filter { $0.value != "operational" && $0.value != "unknown" }.keys)
            var problems: [String] = []
            if !expectation.statuses.contains(statusText) { problems.append(statusText) }
            if scope != expectation.scope { problems.append("scope \(scope)") }
            if let expectedRegions = expectation.regions, regions != expectedRegions { problems.append("regions \(regions.sorted().joined(separator: ","))") }
            if !openIncidents.contains(where: { $0["component"] as? String == name }) { problems.append("no open incident") }
            let listed = Set(((verdict["evidence"] as? [String: Any])?["affected"] as? [String]) ?? [])
            if !scenario.listsAffected.isSubset(of: listed) {
                problems.append("affected lists [\(listed.sorted().joined(separator: ","))], not \(scenario.listsAffected.sorted().joined(separator: ","))")
            }
            if !problems.isEmpty { wrong.append("\(name): " + problems.joined(separator: ", ")) }
        }
        for verdict in components {
            guard let name = verdict["component"] as? String, scenario.expected[name] == nil else { continue }
            if openIncidents.contains(where: { $0["component"] as? String == name }) {
                let incident = openIncidents.first { $0["component"] as? String == name } ?? [:]
                wrong.append("\(name): own incident (\(incident["severity"] ?? incident["status"] ?? "?") \(incident["scope"] ?? "?"))")
            } else if !scenario.affected.contains(name), let text = verdict["status"] as? String, text != "operational" {
                wrong.append("\(name): \(text)")
            }
        }
        return wrong
    }
}

extension Duration {
    public var seconds: Double {
        let (s, attoseconds) = components
        return Double(s) + Double(attoseconds) / 1e18
    }
}
