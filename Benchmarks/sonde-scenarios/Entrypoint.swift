// sonde-scenarios: the scenario suite of issue 10 (`make scenarios`). Runs each scenario's
// trials against real processes (Tests/SondeScenarios) and writes its table to VERDICTS.md.
// It reports; it does not fail on a missed target (exit 0), only when it cannot run at all.

import ArgumentParser
import Dispatch
import Foundation
import SondeScenarios
import SondeTestSupport

#if canImport(Glibc)
import Glibc
#endif

@main
struct SondeScenariosCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sonde-scenarios",
        abstract: "Runs the verdict scenarios (issue 10) against real sim, collector and agents; writes VERDICTS.md.",
        discussion: "Scenarios: " + Scenario.all.map(\.name).joined(separator: ", "))

    @Option(help: "Trials per scenario.") var trials = 5
    @Option(help: "Probe interval of every agent, seconds.") var interval: Double = 2
    @Option(help: "Only these scenarios (comma separated names).") var only: String?
    @Option(help: "The file to write the table into.") var out = "VERDICTS.md"
    @Option(help: "Section title in that file; a run replaces the section with the same title.") var label = "Current engine"
    @Option(help: "One line saying what was measured (engine commit, branch), printed under the title.") var note: String?
    @Option(help: "Also write every trial's webhook timeline here.") var eventsLog: String?
    @Option(help: "The agents' collector.flush_interval (e.g. 100ms, non-default), or \"default\" for the agent's own default.")
    var flushInterval = "100ms"

    func validate() throws {
        guard trials >= 1 else { throw ValidationError("--trials: expected 1 or more") }
        guard interval >= 0.5, interval <= 60 else { throw ValidationError("--interval: expected 0.5 to 60 seconds") }
        for name in selectedNames where Scenario.named(name) == nil {
            throw ValidationError("--only: no scenario \"\(name)\"; known: \(Scenario.all.map(\.name).joined(separator: ", "))")
        }
    }

    var selectedNames: [String] {
        only.map { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } } ?? Scenario.all.map(\.name)
    }

    func run() async throws {
        let signals = stopChildrenOnSignals()
        defer { signals.forEach { $0.cancel() } }
        let started = ContinuousClock.now
        let runner = ScenarioRunner(
            interval: .milliseconds(Int64(interval * 1000)), agentFlushInterval: flushInterval == "default" ? nil : flushInterval
        ) { line in
            FileHandle.standardError.write(Data("\(Self.timestamp()) \(line)\n".utf8))
        }
        var timeline = ""
        var reports: [ScenarioReport] = []
        for name in selectedNames {
            let scenario = Scenario.named(name)!
            var outcomes: [TrialOutcome] = []
            var error: String?
            do {
                _ = try await runner.run(scenario, trials: trials) { outcomes.append($0) }
            } catch let failure {
                error = "\(failure)".split(separator: "\n").first.map(String.init) ?? "\(failure)"
                runner.log("\(name): stopped after \(outcomes.count) trials: \(failure)")
            }
            for (index, outcome) in outcomes.enumerated() {
                timeline += "\(name) trial \(index + 1)\n" + outcome.events.map { "  \($0)\n" }.joined()
            }
            let report = ScenarioReport(
                scenario: scenario, outcomes: outcomes, error: error, detectionTarget: runner.detectionTarget(scenario),
                resolutionTarget: runner.resolutionTarget)
            reports.append(report)
            print(report.row)
        }
        let elapsed = ContinuousClock.now - started
        var section = "## \(label)\n\n"
        if let note { section += "\(note)\n\n" }
        section += "Reproduce: `\(reproduceCommand)`. Interval \(interval) s, agents' `flush_interval` "
            + (flushInterval == "default" ? "at its default" : "\(flushInterval) (non-default)") + ", \(trials) trial(s) per scenario, "
            + "run \(Self.timestamp()) UTC in \(Int(elapsed.components.seconds / 60)) min. "
            + "Scenarios met: \(reports.filter(\.meetsTargets).count) of \(reports.count).\n\n"
        section += ScenarioReport.header + "\n" + reports.map(\.row).joined(separator: "\n") + "\n"
        try VerdictsFile.write(section: section, label: label, to: out)
        if let eventsLog { try timeline.write(toFile: eventsLog, atomically: true, encoding: .utf8) }
        FileHandle.standardError.write(Data("wrote \(out) (section \"\(label)\")\n".utf8))
    }

    var reproduceCommand: String {
        var command = "make scenarios"
        if label != "Current engine" { command += " SCENARIO_LABEL=\"\(label)\"" }
        var arguments: [String] = []
        if trials != 5 { arguments.append("--trials \(trials)") }
        if interval != 2 { arguments.append("--interval \(interval)") }
        if let only { arguments.append("--only \(only)") }
        if flushInterval != "100ms" { arguments.append("--flush-interval \(flushInterval)") }
        if !arguments.isEmpty { command += " SCENARIO_ARGS=\"\(arguments.joined(separator: " "))\"" }
        return command
    }

    static func timestamp() -> String {
        let formatter = DateFormatter()
        formatter.dateFormat = "yyyy-MM-dd HH:mm:ss"
        formatter.timeZone = TimeZone(identifier: "UTC")
        return formatter.string(from: Date())
    }

    /// Ctrl-C or SIGTERM stops every sim, collector, relay and agent this run started, then exits.
    func stopChildrenOnSignals() -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { (number: Int32) -> any DispatchSourceSignal in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("sonde-scenarios: stopping every process it started\n".utf8))
                ChildProcess.stopAllLive()
                Glibc.exit(130)
            }
            source.resume()
            return source
        }
    }
}
