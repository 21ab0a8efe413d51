import ArgumentParser
import Foundation
import Logging
import SondeCore

/// `sonde-sim relay --listen 127.0.0.1:0 --to 127.0.0.1:18400`: forwards TCP both ways until
/// SIGTERM/SIGINT; SIGUSR1 cuts it (connections closed, connects refused), SIGHUP makes it flaky
/// (`--error-fraction` of new connections answered `--error-status` by the relay itself),
/// SIGUSR2 restores it to healthy from either.
struct RelayCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "A TCP relay to fake one agent's network faults: SIGUSR1 cuts it, SIGHUP makes it flaky, SIGUSR2 restores it.",
        discussion: """
            Flaky: each new connection fails with probability --error-fraction; a failing one gets \
            --error-status (502 by default) with a JSON error body as soon as its request head \
            arrives, or with --error-status 0 is closed unanswered. Agents open one connection per \
            request, so the fraction is the share of their requests that fail.
            Example: sonde-sim relay --to 127.0.0.1:18400 --error-fraction 0.3 --flaky
            """)

    @Option(help: "host:port to listen on (port 0 = ephemeral; printed as `relay http://host:port`).")
    var listen: String = "127.0.0.1:0"

    @Option(help: "host:port to forward to, e.g. a sim region.")
    var to: String

    @Option(name: .customLong("error-fraction"), help: "Share of new connections that fail while flaky, 0 to 1.")
    var errorFraction: Double = 0.3

    @Option(name: .customLong("error-status"), help: "HTTP status the relay answers failing connections with (0 = close them unanswered).")
    var errorStatus: Int = 502

    @Flag(help: "Start flaky instead of healthy.")
    var flaky = false

    @Option(help: "Seed for the draws that pick failing connections (reproducible runs).")
    var seed: UInt64?

    @OptionGroup var logging: LoggingOptions

    var errors: RelayErrors { RelayErrors(fraction: errorFraction, status: errorStatus == 0 ? nil : errorStatus) }

    func validate() throws {
        do { try errors.validate() } catch { throw ValidationError("--error-\(error.message)") }
        guard HostPort(listen) != nil else { throw ValidationError("--listen: expected host:port such as 127.0.0.1:0, got \"\(listen)\"") }
        guard let target = HostPort(to), target.port > 0 else {
            throw ValidationError("--to: expected host:port such as 127.0.0.1:18400, got \"\(to)\"")
        }
    }

    func run() async throws {
        let logger = logging.makeLogger(label: "sonde-sim.relay", default: .info)
        let listenAddress = HostPort(listen)!
        let target = HostPort(to)!
        let signals = SignalStream.make([SIGTERM, SIGINT, SIGUSR1, SIGUSR2, SIGHUP])
        let relay: TCPRelay
        do {
            relay = try await TCPRelay.start(
                listenHost: listenAddress.host, listenPort: listenAddress.port, targetHost: target.host, targetPort: target.port, seed: seed,
                logger: logger)
        } catch {
            Console.err("sonde-sim relay: cannot listen on \(listen): \(error)")
            throw ExitCode(1)
        }
        if flaky { relay.setErrors(errors) }
        Console.out("relay \(relay.url)")
        for await signal in signals {
            switch signal {
            case SIGUSR1:
                await relay.cut()
            case SIGHUP:
                relay.setErrors(errors)
                logger.info("relay flaky", metadata: ["relay.listen": "\(relay.url)", "relay.error_fraction": "\(errorFraction)", "relay.error_status": "\(errorStatus)"])
            case SIGUSR2:
                relay.setErrors(nil)
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
