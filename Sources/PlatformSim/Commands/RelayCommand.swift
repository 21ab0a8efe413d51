import ArgumentParser
import Foundation
import Logging

/// `sonde-sim relay --listen 127.0.0.1:0 --to 127.0.0.1:18400`: forwards TCP both ways until
/// SIGTERM/SIGINT; SIGUSR1 cuts it (connections closed, connects refused), SIGUSR2 restores it.
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "A cuttable TCP relay (SIGUSR1 cuts, SIGUSR2 restores) to fake one agent's network fault.")

    @Option(help: "host:port to listen on (port 0 = ephemeral; printed as `relay http://host:port`).")
    var listen: String = "127.0.0.1:0"

    @Option(help: "host:port to forward to, e.g. a sim region.")
    var to: String

    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        guard HostPort(listen) != nil else { throw ValidationError("--listen: expected host:port such as 127.0.0.1:0, got \"\(listen)\"") }
        guard let target = HostPort(to), target.port > 0 else {
            throw ValidationError("--to: expected host:port such as 127.0.0.1:18400, got \"\(to)\"")
        }
    }

    func run() async throws {
        let logger = logging.logger(label: "sonde-sim.relay")
        let listenAddress = HostPort(listen)!
        let target = HostPort(to)!
        let signals = SignalStream.make([SIGTERM, SIGINT, SIGUSR1, SIGUSR2])
        let relay: TCPRelay
        do {
            relay = try await TCPRelay.start(
                listenHost: listenAddress.host, listenPort: listenAddress.port, targetHost: target.host, targetPort: target.port, logger: logger)
        } catch {
            Console.err("sonde-sim relay: cannot listen on \(listen): \(error)")
            throw ExitCode(1)
        }
        Console.out("relay \(relay.url)")
        for await signal in signals {
            switch signal {
            case SIGUSR1:
                await relay.cut()
            case SIGUSR2:
                do { try await relay.restore() } catch {
                    logger.error("relay cannot listen again", metadata: ["relay.listen": "\(relay.url)", "error": "\(error)"])
                }
            default:
                await relay.stop()
                return
            }
        }
    }
}

/// `host:port`, with `[v6]:port` accepted.
struct HostPort {
    var host: String
    var port: Int

    init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            return nil
        }
        var host = String(text[..<colon])
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.host = host
        self.port = port
    }
}
