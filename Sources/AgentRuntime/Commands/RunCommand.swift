import ArgumentParser
import FoundationEssentials
import SondeCore
#if canImport(Glibc)
import Glibc
#endif
import Logging
import ServiceLifecycle

/// `sonde-agent run`: the daemon. Refuses to start on any config, key, probe or spool problem.
struct RunCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run the probes on their schedules and push signed results to the collector (stops on SIGTERM/SIGINT, reloads on SIGHUP).",
        discussion: """
            SIGHUP re-reads the config and probe scripts (probes, variables, secrets, control probes) without dropping a result; a config with problems is refused, logged, and the running one keeps going.
            Exit status: 0 after a graceful stop, 2 when the config, key, probes or spool are unusable (it says why).
            """
    )

    @OptionGroup var options: ConfigOptions
    @OptionGroup var logging: LoggingOptions

    func validate() throws {
        if options.config == nil { throw ValidationError("run needs --config FILE") }
    }

    func run() async throws {
        // SIGHUP reloads (ConfigReloader); until its handler is in place, one must not kill us.
        signal(SIGHUP, SIG_IGN)
        let logger = logging.makeLogger(label: "sonde.agent", default: .info)
        Self.raiseDescriptorLimit()
        var services: AgentServices
        do {
            let config = try options.load(requireCollector: true)
            services = try buildAgent(config: config, logger: logger)
            let options = self.options
            services.reloader = ConfigReloader(running: config, scheduler: services.scheduler, logger: logger) { () throws(ConfigError) in
                try options.load(requireCollector: true)
            }
            services.reloader?.metrics = services.metricsServer?.metrics
        } catch let error as ConfigError {
            refuse(error.diagnostics.map(\.description))
        } catch let error as AgentStartError {
            refuse(error.problems)
        }
        let status = services.spool.status
        logger.info(
            "agent starting",
            metadata: [
                "agent.id": "\(services.uploader.settings.agentID)", "probes.count": "\(services.scheduler.probes.count)",
                "spool.unsent": "\(status.unsentResults)", "spool.last_seq": "\(status.lastSeq)",
            ])
        try await services.serviceGroup(logger: logger).run()
        // Results of the last runs still queued for the journal are written before it closes.
        await services.uploader.journal.flush()
        // Results held in memory only (the spool's disk failed) do not outlive the process: say
        // how many go, so a restart meant to "fix" a full disk is not a silent loss.
        let lost = services.spool.status.memoryResults
        services.spool.close()
        if lost > 0 {
            logger.warning(
                "stopping discards results held in memory only, because the spool's disk failed (free it first, then restart)",
                metadata: ["spool.memory_results": "\(lost)"])
        }
        logger.info("agent stopped", metadata: ["spool.unsent": "\(services.spool.status.unsentResults)"])
    }

    private func refuse(_ problems: [String]) -> Never {
        for problem in problems { printError(problem) }
        printError("sonde-agent: refusing to start: \(problems.count) problem\(problems.count == 1 ? "" : "s") (see above)")
        Glibc.exit(2)
    }

    /// The soft limit on open descriptors up to the hard one, as Go's runtime does: a shell or
    /// container's default 1,024 is close to what 64 transfers, 64 probe exchanges and the pushes
    /// may hold, and running out makes healthy probes fail to connect (red team, 34th session).
    static func raiseDescriptorLimit() {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0, limit.rlim_cur < limit.rlim_max else { return }
        limit.rlim_cur = limit.rlim_max
        _ = setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
    }
}
