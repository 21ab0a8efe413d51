import ArgumentParser
import FoundationEssentials
import SondeCore

/// `sonde-agent keygen`: a new Ed25519 key pair, and the command that enrols it on the collector.
struct KeygenCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keygen",
        abstract: "Create this agent's Ed25519 signing key (PATH, mode 0600) and its public key (PATH.pub).",
        discussion: "Exit status: 0 when written, 1 when PATH exists (pass --force to replace it) or cannot be written."
    )

    @Option(help: "Where to write the private key; the public key goes to PATH.pub.")
    var out: String

    @Flag(help: "Replace an existing key (the collector must then be given the new public key).")
    var force = false

    // Optional, not defaulted to the host name: the help (and the man page made from it at
    // build time) would show the build host's name as the default (CLI walk-through, F11).
    @Option(help: "Agent id for the printed enrol command (default: this host's name).")
    var id: String?

    @Option(help: "Agent region for the printed enrol command.")
    var region: String = "local"

    func run() async throws {
        let key = AgentSigningKey()
        do {
            try key.write(to: out, overwrite: force)
        } catch {
            printError("sonde-agent keygen: \(error)")
            throw ExitCode(1)
        }
        let publicKey = key.publicKey.base64
        print("wrote \(out) (private key, mode 0600) and \(out).pub")
        print("public key: \(publicKey)")
        print("enrol this agent on the collector with:")
        print("  sonde-collector agents add --config <collector.yaml> --id \(id ?? AgentConfig.defaultAgentID) --region \(region) --public-key \(publicKey)")
        print("(or --db <collector.db>; before the collector's first start, add --create to make that database)")
    }
}
