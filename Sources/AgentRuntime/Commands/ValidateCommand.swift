import ArgumentParser
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import ProbeEngine
import SondeCore

/// `sonde-agent validate`: every problem in the config, its key and its probes, as
/// `file:line:column: field: message`; exit 1 if there is any.
struct ValidateCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "validate",
        abstract: "Check the config and probe scripts; print every problem as file:line:column: field: message.",
        discussion: "Exit status: 0 and \"ok: N probes\" when everything is usable, 1 when any problem was found."
    )

    @OptionGroup var options: ConfigOptions

    func validate() throws {
        if options.config == nil && options.probes.isEmpty {
            throw ValidationError("give --config FILE and/or --probes DIR")
        }
    }

    func run() async throws {
        let (config, configProblems) = AgentConfig.loadCollecting(file: options.config, overrides: options.overrides)
        var problems = configProblems.map(\.description)
        // The key matters only to `run`, which needs a collector.
        if options.config != nil, config.collector.url != nil {
            do { _ = try AgentSigningKey.load(from: config.collector.keyPath) } catch {
                problems.append("\(config.sourceFile ?? "-"): collector.key: \(error)")
            }
        }
        var count = 0
        do {
            let probes = try config.loadProbes().probes
            count = probes.count
            // A control probe named in the config but absent would silently leave the agent
            // without its reach check (its failures would then count against the platform).
            if options.probes.isEmpty {
                let names = Set(probes.map(\.name))
                for name in config.controlProbes.sorted() where !names.contains(name) {
                    problems.append("\(config.sourceFile ?? "-"): control_probes: no probe is named \"\(name)\" (probes: \(names.sorted().joined(separator: ", ")))")
                }
            }
            // Warnings do not fail validation, but are worth a look.
            for warning in probes.flatMap(\.warnings) { print(warning) }
            // `${env:NAME}` unset here fails every run as `script` where it is unset too; validate
            // may run outside the agent's service environment, so this only warns.
            let unset = Set(probes.flatMap { $0.environmentNames }).filter { getenv($0) == nil }
            for name in unset.sorted() {
                let users = probes.filter { $0.environmentNames.contains(name) }.map(\.name).sorted()
                print("warning: environment variable \(name) (${env:\(name)} in \(users.joined(separator: ", "))) is not set here; the agent needs it where it runs")
            }
        } catch {
            // Every file's warnings, also when some file has errors: fixing the errors first
            // should not be the only way to see them.
            for warning in error.warnings { print(warning) }
            problems += error.problems
        }
        if problems.isEmpty {
            print("ok: \(count) probes")
        } else {
            for problem in problems { print(problem) }
            printError("\(problems.count) problem\(problems.count == 1 ? "" : "s") found")
            throw ExitCode(1)
        }
    }
}
