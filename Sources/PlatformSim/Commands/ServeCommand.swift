import ArgumentParser
import Foundation
import Logging
import SondeCore

/// Serves every region until SIGTERM or SIGINT, printing `<region> <base_url>` per region once
/// all of them listen.
struct ServeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve", abstract: "Serve the simulated platform (the default command).")

    @Option(help: "Comma-separated region names; region i listens on --port-base + i.")
    var regions: String = "eu,us,ap"

    @Option(help: "Address to listen on.")
    var host: String = "127.0.0.1"

    @Option(name: .customLong("port-base"), help: "First port; without it every region gets an ephemeral port (still printed).")
    var portBase: Int?

    @Option(name: .customLong("batch-pace"), help: "Time per batch state step, e.g. 500ms, 2s.")
    var batchPace: String = "1s"

    @Option(name: .customLong("user"), help: "name:password (repeatable; replaces the default user probe/probe-password).")
    var users: [String] = []

    @Option(name: .customLong("token-ttl"), help: "Bearer token lifetime in seconds.")
    var tokenTTL: Int = 3600

    @Option(help: "Seed for fractional fault draws (reproducible runs).")
    var seed: UInt64?

    @OptionGroup var logging: LoggingOptions

    var regionList: [String] { regions.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty } }

    func validate() throws {
        guard !regionList.isEmpty else { throw ValidationError("--regions: give at least one region, e.g. --regions eu,us,ap") }
        guard let pace = parseDuration(batchPace), pace > .zero else {
            throw ValidationError("--batch-pace: expected a duration such as 500ms or 2s, got \"\(batchPace)\"")
        }
        guard tokenTTL > 0 else { throw ValidationError("--token-ttl: expected seconds above zero, got \(tokenTTL)") }
        for user in users where !user.contains(":") || user.hasPrefix(":") {
            throw ValidationError("--user: expected name:password, got \"\(user)\"")
        }
        if let portBase, portBase < 1 || portBase + regionList.count - 1 > 65535 {
            throw ValidationError("--port-base: \(portBase) leaves no room for \(regionList.count) ports below 65536")
        }
    }

    func makeConfiguration(environment: [String: String]) -> PlatformSimulator.Configuration {
        var userTable: [String: String] = [:]
        for entry in users {
            let colon = entry.firstIndex(of: ":")!
            userTable[String(entry[..<colon])] = String(entry[entry.index(after: colon)...])
        }
        if userTable.isEmpty {
            userTable = PlatformSimulator.Configuration.defaultUsers
            if let password = environment["SONDE_SIM_PASSWORD"], !password.isEmpty { userTable["probe"] = password }
        }
        return PlatformSimulator.Configuration(
            regions: regionList, host: host, portBase: portBase, batchPace: parseDuration(batchPace) ?? .seconds(1), users: userTable,
            tokenTTL: .seconds(tokenTTL), seed: seed)
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "sonde-sim", default: .info)
        // Install the handlers before anyone can learn our ports and signal us.
        let signals = SignalStream.make([SIGTERM, SIGINT])
        let sim: PlatformSimulator
        do {
            sim = try await PlatformSimulator.start(makeConfiguration(environment: ProcessInfo.processInfo.environment), logger: logger)
        } catch let error as PlatformSimError {
            Console.err("sonde-sim: \(error)")
            throw ExitCode(1)
        }
        for endpoint in sim.endpoints { Console.out("\(endpoint.region) \(endpoint.baseURL)") }
        for await signal in signals {
            logger.info("shutting down", metadata: ["signal": "\(signal == SIGTERM ? "SIGTERM" : "SIGINT")"])
            break
        }
        try await sim.shutdown()
    }
}
