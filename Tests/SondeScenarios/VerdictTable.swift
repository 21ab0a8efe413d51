import Foundation

/// The trials of one scenario folded into one row of VERDICTS.md.
public struct ScenarioReport: Sendable {
    public var scenario: Scenario
    public var outcomes: [TrialOutcome]
    /// Set when the scenario could not run all its trials (the system did not start or recover).
    public var error: String?
    public var detectionTarget: Duration
    public var resolutionTarget: Duration

    public init(scenario: Scenario, outcomes: [TrialOutcome], error: String? = nil, detectionTarget: Duration, resolutionTarget: Duration) {
        self.scenario = scenario
        self.outcomes = outcomes
        self.error = error
        self.detectionTarget = detectionTarget
        self.resolutionTarget = resolutionTarget
    }

    public var rightFinal: Int { outcomes.filter(\.finalVerdictRight).count }
    public var falseLocalFaults: Int { outcomes.map(\.falseLocalFaults).reduce(0, +) }
    public var incidentsFromLocalFaults: Int { outcomes.map(\.incidentsFromLocalFaults).reduce(0, +) }
    public var flaps: Int { outcomes.map(\.flaps).reduce(0, +) }
    public var firstScope: (right: Int, of: Int) {
        let judged = outcomes.compactMap(\.firstAlertScopeRight)
        return (judged.filter { $0 }.count, judged.count)
    }
    public var detections: [Double] { outcomes.compactMap(\.detection).map(\.seconds) }
    /// When the fault first failed a run, per trial (`TrialOutcome.firstFailure`).
    public var firstFailures: [Double] { outcomes.compactMap(\.firstFailure).map(\.seconds) }
    public var missedDetections: Int { scenario.expected.isEmpty ? 0 : outcomes.filter { $0.detection == nil }.count }
    public var resolutions: [Double] { outcomes.compactMap(\.resolution).map(\.seconds) }
    public var unresolved: Int { outcomes.filter { !$0.resolvedInTime }.count }

    /// Every target of issue 10 met in every trial.
    public var meetsTargets: Bool {
        error == nil && !outcomes.isEmpty && rightFinal == outcomes.count && falseLocalFaults == 0 && incidentsFromLocalFaults == 0 && flaps == 0
            && (firstScope.of == 0 || Double(firstScope.right) >= 0.95 * Double(firstScope.of)) && missedDetections == 0
            && (detections.max() ?? 0) <= detectionTarget.seconds && unresolved == 0 && (resolutions.max() ?? 0) <= resolutionTarget.seconds
    }

    static func median(_ values: [Double]) -> Double? {
        guard !values.isEmpty else { return nil }
        let sorted = values.sorted()
        return sorted.count % 2 == 1 ? sorted[sorted.count / 2] : (sorted[sorted.count / 2 - 1] + sorted[sorted.count / 2]) / 2
    }

    /// One markdown table row.
    public var row: String {
        func s(_ value: Double?) -> String { value.map { String(format: "%.1f s", $0) } ?? "—" }
        let n = outcomes.count
        let mark = { (ok: Bool, text: String) in ok ? text : "**\(text)**" }
        let scope = firstScope
        let detection = scenario.expected.isEmpty
            ? "—"
            : mark(missedDetections == 0 && (detections.max() ?? 0) <= detectionTarget.seconds,
                "\(s(Self.median(detections))) / \(s(detections.max()))\(missedDetections > 0 ? ", \(missedDetections) missed" : "")")
                + " (≤ \(s(detectionTarget.seconds)))"
        let resolution = resolutions.isEmpty && unresolved == 0
            ? "—"
            : mark(unresolved == 0 && (resolutions.max() ?? 0) <= resolutionTarget.seconds,
                "\(s(Self.median(resolutions))) / \(s(resolutions.max()))\(unresolved > 0 ? ", \(unresolved) unresolved" : "")")
                + " (≤ \(s(resolutionTarget.seconds)))"
        var notes = Array(Set(outcomes.flatMap(\.wrong))).sorted()
        if let error { notes.insert("stopped: \(error)", at: 0) }
        let cells = [
            "`\(scenario.name)`: \(scenario.title)",
            "\(n)",
            mark(rightFinal == n && n > 0, "\(rightFinal)/\(n)"),
            mark(falseLocalFaults == 0, "\(falseLocalFaults)"),
            scenario.hasLocalFault ? mark(incidentsFromLocalFaults == 0, "\(incidentsFromLocalFaults)") : "—",
            mark(flaps == 0, "\(flaps)"),
            scope.of == 0 ? "—" : mark(Double(scope.right) >= 0.95 * Double(scope.of), "\(scope.right)/\(scope.of)"),
            detection,
            scenario.expected.isEmpty || firstFailures.isEmpty ? "—" : "\(s(Self.median(firstFailures))) / \(s(firstFailures.max()))",
            resolution,
            meetsTargets ? "met" : "**missed**",
            notes.prefix(4).joined(separator: "; ").replacingOccurrences(of: "|", with: "/"),
        ]
        return "| " + cells.joined(separator: " | ") + " |"
    }

    public static let header = """
        | scenario | trials | right final verdict | false `agent.local_fault` | incidents from local faults | flaps | first alert scope right | detection median / max (target) | first failed run median / max | time to resolve median / max (target) | targets | what was wrong |
        |---|---|---|---|---|---|---|---|---|---|---|---|
        """
}

/// VERDICTS.md: a fixed head (targets, method) and one section per labelled run; writing a run
/// replaces the section with the same label and keeps the others.
public enum VerdictsFile {
    public static let head = """
        # Verdicts under real faults (issue 10 scenario suite)

        Written by `make scenarios` (Benchmarks/sonde-scenarios over Tests/SondeScenarios): a real
        `sonde-sim` (regions eu, us, ap), a `sonde-collector` (SQLite, `evaluation_interval: 1s`,
        default `correlation` settings but `flap_memory: 0`, non-default: the trials are separate
        faults seconds apart on one system, which the default reads as one fault coming and going;
        runs before the 32nd session had no such setting) and 6 `sonde-agent run` processes (2 per region, probes
        `probes/sim`, every probe at the same interval; `collector.flush_interval: 100ms`, non-default,
        unless a run says otherwise), each agent behind its own `sonde-sim relay`
        (its network: cut, flaky or healthy), webhooks received by an in-process receiver. Each trial:
        wait until every component is operational with no open incident, a random phase, the fault
        (set with `sonde-sim fault set` or a relay signal) held for 12 intervals, the verdict read
        from `/v1/status`, the fault cleared, and the incidents watched until resolved.

        Targets (issue 10): 100 % right final verdicts (status and scope of the faulted component,
        its incident open; no other component with an incident of its own; components that only
        depend on the faulted one may show it); 0 false `agent.local_fault` (an agent whose own
        network is fine); 0 incidents from local faults; 0 flaps (an incident going to `monitoring`
        or `resolved` while the fault is steady, or opening again after it cleared); first alert
        scope right in ≥ 95 % of trials; detection (fault → first `incident.opened` at the receiver)
        ≤ 2 intervals + 1 s (stuck: the 1 s limit + 2 intervals); time to resolve (fault cleared →
        last `incident.resolved`) ≤ 3 intervals.

        First failed run (no target): fault → the end of the faulted component's first failed run,
        by the agents' clocks. It is how long a random fault took to show at all; detection less
        this is the engine's and the pipeline's share.

        Bold cells miss a target.

        """

    /// Writes `section` (starting with `## label`) into the file at `path`.
    public static func write(section: String, label: String, to path: String) throws {
        var sections: [(String, String)] = []
        if let text = try? String(contentsOfFile: path, encoding: .utf8) {
            var current: (String, String)?
            for line in text.components(separatedBy: "\n") {
                if line.hasPrefix("## ") {
                    if let current { sections.append(current) }
                    current = (String(line.dropFirst(3)), line + "\n")
                } else if current != nil {
                    current!.1 += line + "\n"
                }
            }
            if let current { sections.append(current) }
        }
        let body = section.hasSuffix("\n") ? section : section + "\n"
        if let index = sections.firstIndex(where: { $0.0 == label }) {
            sections[index].1 = body + "\n"
        } else {
            sections.append((label, body + "\n"))
        }
        let text = head + "\n" + sections.map(\.1).joined()
        try text.trimmingCharacters(in: .whitespacesAndNewlines).appending("\n").write(toFile: path, atomically: true, encoding: .utf8)
    }
}
