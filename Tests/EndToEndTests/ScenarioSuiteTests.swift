import SondeScenarios
import SondeTestSupport
import Testing

/// The quick version of `make scenarios` (issue 10): one trial of a few representative scenarios
/// at 1 s intervals, asserting the targets the current engine meets. The full suite, with every
/// scenario and 5 trials each at 2 s, writes VERDICTS.md.
///
/// Left out here because the engine before issue 10 misses a target in them at 2 s (VERDICTS.md,
/// "Baseline"; they move in here when the engine meets them): errors-{10,30,60}-everywhere and
/// errors-{10,30,60}-eu (batch gets an incident of its own, false `agent.local_fault`, flaps),
/// login-down (files, batch and api get incidents of their own), latency-everywhere (the first
/// alert says region), fault-moves (ends platform-wide), agent-stopped-in-recovery (130 s of
/// watching: too long here). clock-4min-behind and clock-4min-ahead skew one agent's wall clock
/// both ways (libfaketime, with a shim that keeps its monotonic timers: see
/// `SondeSystem.monotonicTimersShim`). collector-down-at-onset crashes the collector as the
/// fault begins and starts it again 15 s later.
/// stuck-everywhere and cut-during-outage run without the first-alert-scope check: their first
/// alert sometimes says region (issue 10, point 4). Detection and resolution times are reported
/// in VERDICTS.md, never asserted here.
@Suite("Scenario suite (quick)", .serialized)
struct ScenarioSuiteTests {
    static let runner = ScenarioRunner(interval: .seconds(1)) { print($0) }
    /// Scenarios whose first alert's scope the engine before issue 10 gets wrong at times.
    static let firstScopeUnmet: Set<String> = ["stuck-everywhere", "cut-during-outage"]

    @Test("scenario", arguments: ["errors-one-agent", "latency-eu", "stuck-everywhere", "cut-during-outage", "clock-4min-behind", "clock-4min-ahead", "collector-down-at-onset"])
    func scenario(_ name: String) async throws {
        let scenario = try #require(Scenario.named(name))
        let outcomes = try await Self.runner.run(scenario, trials: 1)
        let report = ScenarioReport(
            scenario: scenario, outcomes: outcomes, detectionTarget: Self.runner.detectionTarget(scenario),
            resolutionTarget: Self.runner.resolutionTarget)
        let timeline = outcomes.flatMap(\.events).joined(separator: "\n")
        #expect(report.rightFinal == outcomes.count, "\(outcomes.flatMap(\.wrong))\n\(timeline)")
        #expect(report.falseLocalFaults == 0, "\(timeline)")
        #expect(report.incidentsFromLocalFaults == 0, "\(timeline)")
        #expect(report.flaps == 0, "\(timeline)")
        if !Self.firstScopeUnmet.contains(name) { #expect(report.firstScope.right == report.firstScope.of, "\(timeline)") }
        #expect(report.missedDetections == 0, "\(timeline)")
        #expect(report.unresolved == 0, "\(timeline)")
    }
}
