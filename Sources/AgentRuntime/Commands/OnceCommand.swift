import ArgumentParser
import CurlHTTP
import FoundationEssentials
import ProbeEngine
import SondeCore

/// `sonde-agent once`: every probe once, concurrently (bounded), printed for people or as JSON.
struct OnceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "once",
        abstract: "Run every probe once and print the results.",
        discussion: "Exit status: 0 when every probe is ok or degraded, 1 when any failed, 2 when the config or probes are unusable."
    )

    enum Format: String, ExpressibleByArgument, CaseIterable {
        case table, json
    }

    @OptionGroup var options: ConfigOptions
    @OptionGroup var logging: LoggingOptions

    @Option(help: "table (for people) or json (one SPEC result object per line).")
    var format: Format = .table

    @Option(help: "Most probes running at the same time.")
    var concurrency: Int = 8

    func validate() throws {
        if options.config == nil && options.probes.isEmpty {
            throw ValidationError("give --config FILE or at least one --probes DIR")
        }
        if concurrency < 1 { throw ValidationError("--concurrency must be at least 1") }
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "sonde.agent", default: .warning)
        let config: AgentConfig
        let loaded: AgentProbes
        do {
            config = try options.load()
            loaded = try config.loadProbes()
        } catch let error as ConfigError {
            printError(error.description)
            throw configErrorExit
        } catch let error as AgentStartError {
            printError(error.description)
            throw configErrorExit
        }
        for warning in loaded.warnings { printError(warning) }
        CurlHTTPClient.shared.bodyMemory.limit = config.limits.bodyMemory
        CheckMemory.shared.limit = config.limits.checkMemory
        let runner = ProbeRunner(client: .shared, logger: logger)
        let results = await Self.runAll(
            loaded.probes, context: loaded.context, executor: runner, controlProbes: config.controlProbes, concurrency: concurrency)
        switch format {
        case .json:
            let encoder = SondeJSON.encoder()
            for result in results {
                print(String(decoding: try encoder.encode(result), as: UTF8.self))
            }
        case .table:
            print(ResultTable.render(results), terminator: "")
        }
        if results.contains(where: { $0.outcome == .failed }) { throw ExitCode(1) }
    }

    /// Runs each probe once, at most `concurrency` at a time; results in probe-name order.
    static func runAll(
        _ probes: [ProbeDefinition], context: RunContext, executor: any ProbeExecuting, controlProbes: Set<String>, concurrency: Int
    ) async -> [ProbeResult] {
        var results: [ProbeResult] = []
        await withTaskGroup(of: ProbeResult.self) { group in
            var next = 0
            func startNext() {
                guard next < probes.count else { return }
                let probe = probes[next]
                next += 1
                group.addTask {
                    var result = await executor.run(probe, context: context)
                    if probe.control || controlProbes.contains(probe.name) { result.control = true }
                    return result
                }
            }
            for _ in 0..<min(concurrency, probes.count) { startNext() }
            for await result in group {
                results.append(result)
                startNext()
            }
        }
        return results.sorted { ($0.probe, $0.startedAt) < ($1.probe, $1.startedAt) }
    }
}

/// The `--format table` view: one line per result, columns sized to fit.
enum ResultTable {
    static let headers = ["PROBE", "COMPONENT", "OUTCOME", "DURATION", "STATUS", "ERROR"]

    static func render(_ results: [ProbeResult]) -> String {
        // Errors too long for the table are given whole below it: the end of a message is
        // often where the fix is ("… is not set on this agent").
        var cut: [(probe: String, error: String)] = []
        let rows = results.map { result -> [String] in
            let status = result.steps.last(where: { $0.status != nil })?.status.map(String.init) ?? "-"
            var error = "-"
            if let e = result.error {
                error = "\(e.kind.rawValue)" + (e.code.map { "/\($0)" } ?? "") + " at \(e.step): \(e.message)"
            } else if let slow = result.degradedReason {
                error = "slow: \(slow)"
            }
            if error.count > 80 {
                cut.append((result.probe, error))
                error = String(error.prefix(79)) + "…"
            }
            return [result.probe, result.component, result.outcome.rawValue, formatDuration(result.durationMs), status, error]
        }
        let all = [headers] + rows
        let widths = headers.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
        var text = ""
        for row in all {
            let cells = row.enumerated().map { column, cell in
                column == row.count - 1 ? cell : cell + String(repeating: " ", count: max(0, widths[column] - cell.count))
            }
            text += cells.joined(separator: "  ") + "\n"
        }
        let failed = results.filter { $0.outcome == .failed }.count
        let degraded = results.filter { $0.outcome == .degraded }.count
        if !cut.isEmpty {
            text += "\nErrors in full:\n" + cut.map { "  \($0.probe): \($0.error)\n" }.joined()
        }
        text += "\n\(results.count) probes: \(results.count - failed - degraded) ok, \(degraded) degraded, \(failed) failed\n"
        return text
    }

    static func formatDuration(_ ms: Double) -> String {
        ms >= 1000 ? fixedDecimals(ms / 1000, 2) + "s" : fixedDecimals(ms, 0) + "ms"
    }
}
