import ArgumentParser
import Foundation

extension CollectorCommand {
    /// `sonde-collector validate`: loads the config exactly as `serve` does and says what is wrong,
    /// without opening the database or the port, so a config can be checked before a restart.
    public struct Validate: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Check a config file as `serve` would read it; print its problems.",
            discussion: "Prints every problem it finds after reading the YAML, one `file:line:column: field: message` line each, in file order (a YAML syntax error or an unknown key stops the read at that point). Exit status: 0 and \"ok\" when the config is usable, 2 when it is not (the same code `serve` exits with).")

        @Option(name: .long, help: "The YAML configuration file.")
        var config: String

        public init() {}

        public func run() async throws {
            do {
                let loaded = try CollectorConfig.load(path: config)
                print("ok: \(config) (listen \(loaded.host):\(loaded.port), \(loaded.agents.count) agents, \(loaded.webhooks.count) webhooks)")
            } catch {
                printConfigError(error)
                throw ExitCode(2)
            }
        }
    }
}
