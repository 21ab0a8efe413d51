import ArgumentParser
import SondeCore
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Logging

/// `sonde-agent`: the probe agent. The executable's Entrypoint only calls `main()` on this.
///
/// Exit codes: 0 success; 1 a probe failed (`once`) or problems were found (`validate`), or the
/// key file exists (`keygen`); 2 the config, key or probes are unusable (nothing ran); 64 wrong
/// command-line usage.
public struct SondeAgentCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sonde-agent",
        abstract: "Runs scripted probes, signs their results and pushes them to a Sonde collector.",
        version: SondeBuildInfo.versionLine,
        subcommands: [RunCommand.self, OnceCommand.self, ValidateCommand.self, KeygenCommand.self]
    )

    public init() {}
}

// MARK: - Shared options

/// Where the config comes from and what flags override in it.
struct ConfigOptions: ParsableArguments {
    @Option(name: .long, help: "The agent's YAML config file.")
    var config: String?

    @Option(name: .long, help: "Agent id (overrides agent.id; default: the host name).")
    var id: String?

    @Option(name: .long, help: "Agent region (overrides agent.region; default: local).")
    var region: String?

    @Option(name: .customLong("probes"), help: "A probe file or folder (repeatable; replaces the config's probes).")
    var probes: [String] = []

    @Option(name: .customLong("var"), help: "A variable for probe scripts, name=value (repeatable).")
    var variables: [String] = []

    func validate() throws {
        for item in variables where !item.contains("=") || item.hasPrefix("=") {
            throw ValidationError("--var expects name=value, got \"\(item)\"")
        }
    }

    var overrides: ConfigOverrides {
        var values: [String: String] = [:]
        for item in variables {
            let parts = item.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
            values[String(parts[0])] = parts.count > 1 ? String(parts[1]) : ""
        }
        return ConfigOverrides(agentID: id, region: region, probePaths: probes, variables: values)
    }

    func load(requireCollector: Bool = false) throws(ConfigError) -> AgentConfig {
        try AgentConfig.load(file: config, overrides: overrides, requireCollector: requireCollector)
    }
}

/// Prints to stderr.
func printError(_ text: String) {
    let line = Array((text.hasSuffix("\n") ? text : text + "\n").utf8)
    _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
}

/// Exit status for an unusable config, key or probe set: nothing ran.
let configErrorExit = ExitCode(2)
