import Foundation
import SondeCore
import SondeTestSupport

/// `sonde-sim` serving some regions, as a process: each region's URL, and faults set and
/// cleared through the real `sonde-sim fault` command.
public final class SimulatedPlatform: Sendable {
    public let process: ChildProcess
    public let regionURLs: [String: String]

    public init(regions: [String]) async throws {
        process = try ChildProcess("sonde-sim", ["--regions", regions.joined(separator: ","), "--batch-pace", "100ms"])
        var urls: [String: String] = [:]
        for region in regions {
            let line = try await process.waitForLine { $0.hasPrefix(region + " ") }
            urls[region] = String(line.split(separator: " ")[1])
        }
        regionURLs = urls
    }

    /// Sets a fault (`sonde-sim fault set` arguments, e.g. `--type error --status 503 --component files`).
    public func fault(_ arguments: [String]) async throws {
        let command = try ChildProcess("sonde-sim", ["fault", "set", "--sim", regionURLs.values.sorted().first!] + arguments)
        guard try await command.waitForExit() == 0 else { throw TestFailure("fault set failed: \(command.allOutput)") }
    }

    public func clearFaults() async throws {
        let command = try ChildProcess("sonde-sim", ["fault", "clear", "--all", "--sim", regionURLs.values.sorted().first!])
        guard try await command.waitForExit() == 0 else { throw TestFailure("fault clear failed: \(command.allOutput)") }
    }

    public func stop() async { await process.stop() }
}

/// How a test sets up `sonde-agent run`: keys, and a config probing the sim's probe set.
public enum SimAgentSetup {
    static let probesDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../probes/sim").standardized.path

    /// The region an agent id names (`eu-1` → eu).
    public static func region(of agent: String) -> String { String(agent.split(separator: "-").first ?? "local") }

    /// `sonde-agent keygen` for each id into `dir` (`ID.key`); the public keys by id.
    public static func keygen(_ ids: [String], in dir: TemporaryDirectory) async throws -> [String: String] {
        var keys: [String: String] = [:]
        for id in ids {
            let keygen = try ChildProcess("sonde-agent", ["keygen", "--out", dir.file("\(id).key")])
            guard try await keygen.waitForExit() == 0 else { throw TestFailure("keygen failed: \(keygen.allOutput)") }
            keys[id] = try String(contentsOfFile: dir.file("\(id).key.pub"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        }
        return keys
    }

    /// Writes `dir/ID.yaml`: the agent pushes to `collectorURL` (trusting `caFile` when given) with
    /// its key and spool in `dir`, and probes `baseURL` (a region of the sim, or a relay before it).
    /// `flushInterval` nil keeps the agent's default.
    public static func writeConfig(
        id: String, dir: TemporaryDirectory, collectorURL: String, caFile: String?, baseURL: String, interval: String, flushInterval: String? = "100ms"
    ) throws {
        try """
            agent: {id: \(id), region: \(region(of: id))}
            collector: {url: \(collectorURL),\(caFile.map { " ca_file: \($0)," } ?? "") key: \(dir.file("\(id).key")),\(flushInterval.map { " flush_interval: \($0)," } ?? "") backoff: {base: 100ms, cap: 1s}}
            spool: {path: \(dir.file("spool-\(id)"))}
            probes: [\(probesDirectory)]
            variables: {base_url: \(baseURL), batch_poll_every: 100ms, finalizing_limit: 1s, latency_degraded_after: 1s}
            scheduling: {interval: \(interval), jitter: 0.1}
            """.write(toFile: dir.file("\(id).yaml"), atomically: true, encoding: .utf8)
    }

    /// The environment every agent needs (the sim's probe password).
    public static let environment = ["SONDE_SIM_PASSWORD": "probe-password"]
}
