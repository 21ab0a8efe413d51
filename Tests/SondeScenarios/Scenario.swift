import Foundation

/// One scenario of the suite (issue 10): what is done to the system, when, and what an on-call
/// engineer should see. Times are in probe intervals so the same scenario runs at 1 s (the quick
/// version in `make test`) and 2 s (`make scenarios`).
public struct Scenario: Sendable {
    /// Something done to the running system.
    public enum Action: Sendable {
        /// `sonde-sim fault set` with these arguments.
        case fault([String])
        /// `sonde-sim fault clear --all`.
        case clearFaults
        case cut(agent: String)
        case flaky(agent: String)
        case restore(agent: String)
        /// The collector crashes (SIGKILL), and later starts again on its database.
        case stopCollector
        case startCollector
    }

    /// Actions at a point of the fault's hold (`at` = share of the hold, 0 = onset).
    public struct Step: Sendable {
        public var at: Double
        /// True when the step changes the platform fault (it moves): flaps are not counted while
        /// the old part of the incident resolves.
        public var changesFault: Bool
        public var actions: [Action]
    }

    /// What the collector should say about one component while the fault holds.
    public struct Expectation: Sendable {
        public var statuses: Set<String>
        public var scope: String
        /// For `scope: region`: the regions that are not operational.
        public var regions: Set<String>?
    }

    public var name: String
    public var title: String
    public var steps: [Step]
    /// Components that should have an incident (and this verdict) at the end of the hold.
    public var expected: [String: Expectation]
    /// Components that may be non-operational because they depend on an expected one, but must
    /// not get an incident of their own (e.g. files and batch while login is down).
    public var affected: Set<String> = []
    /// Components the faulted component's verdict must list as affected by it (its evidence's
    /// `affected`), e.g. the journeys that log in while login is down.
    public var listsAffected: Set<String> = []
    /// Agents with a real local fault: their `agent.local_fault` is right.
    public var localAgents: Set<String> = []
    /// Hold of the fault, in intervals.
    public var holdIntervals: Int = 12
    /// Added to the detection target (2 intervals + 1 s), e.g. a stuck-state limit.
    public var detectionAllowance: Duration = .seconds(1)
    /// Stop this agent right after the fault clears (SIGTERM in odd trials, SIGKILL in even ones),
    /// watch `observeAfterClear`, then start it again.
    public var stopAgentOnClear: String?
    public var observeAfterClear: Duration = .zero
    public var options = SondeSystem.Options()

    /// Whether the scenario contains a real local fault (for the "incidents from local faults" column).
    public var hasLocalFault: Bool { !localAgents.isEmpty }
}

extension Scenario {
    static let filesAffected: Set<String> = ["batch"]

    /// Every scenario of `make scenarios`, in table order.
    public static let all: [Scenario] = {
        var list: [Scenario] = []
        // 20 % everywhere too: the thinnest fault whose first bad region comes soon enough that
        // one interval of other regions' passing runs can look like a regional fault (verdict
        // review, D3).
        for (percent, statuses) in [
            (10, ["degraded_performance", "partial_outage"]), (20, ["degraded_performance", "partial_outage"]), (30, ["partial_outage"]),
            (60, ["partial_outage", "major_outage"]),
        ] {
            let fault = ["--type", "error", "--status", "500", "--component", "files", "--fraction", "\(Double(percent) / 100)"]
            list.append(Scenario(
                name: "errors-\(percent)-everywhere", title: "\(percent) % of files requests answer 500, every region",
                steps: [Step(at: 0, changesFault: false, actions: [.fault(fault)])],
                expected: ["files": Expectation(statuses: Set(statuses), scope: "platform")], affected: filesAffected))
        }
        for (percent, statuses) in [(10, ["degraded_performance", "partial_outage"]), (30, ["partial_outage"]), (60, ["partial_outage", "major_outage"])] {
            let fault = ["--type", "error", "--status", "500", "--component", "files", "--region", "eu", "--fraction", "\(Double(percent) / 100)"]
            list.append(Scenario(
                name: "errors-\(percent)-eu", title: "\(percent) % of files requests answer 500 in eu",
                steps: [Step(at: 0, changesFault: false, actions: [.fault(fault)])],
                expected: ["files": Expectation(statuses: Set(statuses), scope: "region", regions: ["eu"])], affected: filesAffected))
        }
        list.append(Scenario(
            name: "errors-one-agent", title: "eu-1's network fails 30 % of its requests (502 from its relay)",
            steps: [Step(at: 0, changesFault: false, actions: [.flaky(agent: "eu-1")])], expected: [:], localAgents: ["eu-1"]))
        list.append(Scenario(
            name: "login-down", title: "valid logins rejected (401) everywhere: one login incident, the journeys that log in affected",
            steps: [Step(at: 0, changesFault: false, actions: [.fault(["--type", "login_reject", "--component", "login"])])],
            expected: ["login": Expectation(statuses: ["major_outage", "partial_outage"], scope: "platform")],
            affected: ["files", "batch", "api"], listsAffected: ["files", "batch", "api"]))
        list.append(Scenario(
            name: "latency-everywhere", title: "api answers 1.2 s late everywhere (degraded after 1 s)",
            steps: [Step(at: 0, changesFault: false, actions: [.fault(["--type", "latency", "--delay-ms", "1200", "--component", "api"])])],
            expected: ["api": Expectation(statuses: ["degraded_performance"], scope: "platform")]))
        list.append(Scenario(
            name: "latency-eu", title: "api answers 1.2 s late in eu",
            steps: [Step(at: 0, changesFault: false, actions: [.fault(["--type", "latency", "--delay-ms", "1200", "--component", "api", "--region", "eu"])])],
            expected: ["api": Expectation(statuses: ["degraded_performance"], scope: "region", regions: ["eu"])]))
        list.append(Scenario(
            name: "stuck-everywhere", title: "batches stuck in finalizing everywhere (limit 1 s)",
            steps: [Step(at: 0, changesFault: false, actions: [.fault(["--type", "batch_stuck", "--state", "finalizing", "--component", "batch"])])],
            expected: ["batch": Expectation(statuses: ["partial_outage", "major_outage"], scope: "platform")],
            detectionAllowance: .seconds(1)))
        list.append(Scenario(
            name: "fault-moves", title: "batch answers 503 in eu, then (half-way) in us instead",
            steps: [
                Step(at: 0, changesFault: false, actions: [.fault(["--type", "error", "--status", "503", "--component", "batch", "--region", "eu"])]),
                Step(at: 0.5, changesFault: true, actions: [.clearFaults, .fault(["--type", "error", "--status", "503", "--component", "batch", "--region", "us"])]),
            ],
            expected: ["batch": Expectation(statuses: ["partial_outage", "major_outage"], scope: "region", regions: ["us"])]))
        list.append(Scenario(
            name: "cut-during-outage", title: "batch answers 503 everywhere; a third in, eu-1's network is cut",
            steps: [
                Step(at: 0, changesFault: false, actions: [.fault(["--type", "error", "--status", "503", "--component", "batch"])]),
                Step(at: 1.0 / 3, changesFault: false, actions: [.cut(agent: "eu-1")]),
            ],
            expected: ["batch": Expectation(statuses: ["major_outage", "partial_outage"], scope: "platform")], localAgents: ["eu-1"]))
        list.append(Scenario(
            name: "agent-stopped-in-recovery", title: "batch answers 503 everywhere; eu-1 stopped (SIGTERM/SIGKILL) as it clears, watched 130 s",
            steps: [Step(at: 0, changesFault: false, actions: [.fault(["--type", "error", "--status", "503", "--component", "batch"])])],
            expected: ["batch": Expectation(statuses: ["major_outage", "partial_outage"], scope: "platform")],
            stopAgentOnClear: "eu-1", observeAfterClear: .seconds(130)))
        // The integrations review's F2: the collector was down when a platform fault began. On
        // its return each agent delivers its spool after its own back-off (1 s doubling, full
        // jitter: spread over about 30 s), oldest first; those back first must not be called
        // local against the others' runs from before the downtime, nor the first alert say region.
        list.append(Scenario(
            name: "collector-down-at-onset",
            title: "the collector crashes as batch starts answering 503 everywhere; back 30 s later (at 2 s intervals), agents deliver their spools",
            steps: [
                Step(at: 0, changesFault: false, actions: [.stopCollector, .fault(["--type", "error", "--status", "503", "--component", "batch"])]),
                Step(at: 0.375, changesFault: false, actions: [.startCollector]),
            ],
            expected: ["batch": Expectation(statuses: ["major_outage", "partial_outage"], scope: "platform")],
            holdIntervals: 40,
            // Detection waits for the collector (15 intervals down) and the agents' back-off after it.
            detectionAllowance: .seconds(65)))
        var skewed = SondeSystem.Options()
        skewed.clockOffsets = ["eu-1": -240]
        list.append(Scenario(
            name: "clock-4min-behind", title: "eu-1's clock 4 minutes behind; batch answers 503 in eu",
            steps: [Step(at: 0, changesFault: false, actions: [.fault(["--type", "error", "--status", "503", "--component", "batch", "--region", "eu"])])],
            expected: ["batch": Expectation(statuses: ["partial_outage", "major_outage"], scope: "region", regions: ["eu"])],
            options: skewed))
        // The same 4 minutes the other way ("a clock 4 minutes off" either way). Both run under
        // libfaketime with `SondeSystem.monotonicTimersShim`, without which a clock set behind
        // also delays every Swift `Task.sleep` by the offset.
        var ahead = SondeSystem.Options()
        ahead.clockOffsets = ["eu-1": 240]
        list.append(Scenario(
            name: "clock-4min-ahead", title: "eu-1's clock 4 minutes ahead; batch answers 503 in eu",
            steps: [Step(at: 0, changesFault: false, actions: [.fault(["--type", "error", "--status", "503", "--component", "batch", "--region", "eu"])])],
            expected: ["batch": Expectation(statuses: ["partial_outage", "major_outage"], scope: "region", regions: ["eu"])],
            options: ahead))
        return list
    }()

    public static func named(_ name: String) -> Scenario? { all.first { $0.name == name } }
}
