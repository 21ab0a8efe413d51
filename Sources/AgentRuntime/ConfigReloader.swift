import FoundationEssentials
import Logging
import ServiceLifecycle
import UnixSignals

/// SIGHUP re-reads the agent's config file and probe scripts, re-resolves variables and secrets,
/// and switches the running scheduler to them (``Scheduler/reload(_:)``): nothing spooled or in
/// flight is dropped, and the schedule's slots stay where they were. A config or probe with any
/// problem is refused as a whole, each problem logged, and the running set keeps going.
///
/// What a reload cannot change without a restart (agent id and region, collector, key, spool:
/// they are what the spool and the signed pushes are made of; the metrics address; the body
/// memory budget) is left as it runs, with a warning.
public struct ConfigReloader: Service, CustomStringConvertible {
    /// Loads the config again, as at start (same file, same command-line overrides).
    let load: @Sendable () throws(ConfigError) -> AgentConfig
    let running: AgentConfig
    let scheduler: Scheduler
    let logger: Logger
    /// The agent's `/metrics`, when it serves one: each reload's outcome.
    var metrics: AgentMetrics?

    public init(running: AgentConfig, scheduler: Scheduler, logger: Logger, load: @escaping @Sendable () throws(ConfigError) -> AgentConfig) {
        self.running = running
        self.scheduler = scheduler
        self.logger = logger
        self.load = load
    }

    /// What swift-service-lifecycle's log lines name it by (never the config it holds).
    public var description: String { "ConfigReloader(\(running.sourceFile ?? "-"))" }

    public func run() async throws {
        for await _ in await UnixSignalsSequence(trapping: .sighup).cancelOnGracefulShutdown() {
            reload()
        }
    }

    /// One reload: refused with its problems, or applied. Returns whether it was applied.
    @discardableResult
    public func reload() -> Bool {
        logger.info("SIGHUP: reloading config and probes", metadata: ["config.file": "\(running.sourceFile ?? "-")"])
        var config: AgentConfig
        let probes: AgentProbes
        let restartOnly: [(String, Bool)]
        do {
            config = try load()
            // The agent and region keep their running values in the probes' context too: results
            // are stamped with them, and the collector refuses a result whose agent or region is
            // not the one the push is signed as.
            restartOnly = restartOnlyChanges(config)
            config.agentID = running.agentID
            config.region = running.region
            probes = try config.loadProbes(requireEnvironment: true)
        } catch let error as ConfigError {
            return refuse(error.diagnostics.map(\.description))
        } catch let error as AgentStartError {
            return refuse(error.problems)
        } catch {
            return refuse(["\(error)"])
        }
        for (field, changed) in restartOnly where changed {
            logger.warning("reload: this setting changes only on restart; still using the running value", metadata: ["config.field": "\(field)"])
        }
        probes.logWarnings(logger)
        scheduler.reload(.init(probes: probes.probes, context: probes.context, controlProbes: config.controlProbes))
        logger.info("reload applied", metadata: ["probes.count": "\(probes.probes.count)"])
        metrics?.recordReload(ok: true)
        return true
    }

    private func refuse(_ problems: [String]) -> Bool {
        for problem in problems { logger.error("reload refused", metadata: ["problem": "\(problem)"]) }
        logger.error("reload refused; the running config and probes are unchanged", metadata: ["problems.count": "\(problems.count)"])
        metrics?.recordReload(ok: false)
        return false
    }

    /// Every key a reload cannot apply, and whether it changed: each one changed is said in a
    /// warning, so an operator never believes a new value is in force.
    private func restartOnlyChanges(_ new: AgentConfig) -> [(String, Bool)] {
        let (c, r) = (new.collector, running.collector)
        return [
            ("agent.id", new.agentID != running.agentID), ("agent.region", new.region != running.region),
            ("collector.url", c.url != r.url), ("collector.key", c.keyPath != r.keyPath), ("collector.batch_size", c.batchSize != r.batchSize),
            ("collector.timeout", c.timeout != r.timeout), ("collector.flush_interval", c.flushInterval != r.flushInterval),
            ("collector.backoff", c.backoffBase != r.backoffBase || c.backoffCap != r.backoffCap),
            ("collector.unauthorized_retry", c.unauthorizedRetry != r.unauthorizedRetry), ("collector.ca_file", c.caFile != r.caFile),
            ("collector.client_cert", c.clientCertificate?.cert != r.clientCertificate?.cert || c.clientCertificate?.key != r.clientCertificate?.key),
            ("spool.path", new.spool.path != running.spool.path), ("spool.max_bytes", new.spool.maxBytes != running.spool.maxBytes),
            ("spool.memory_limit", new.spool.memoryLimit != running.spool.memoryLimit),
            ("scheduling.jitter", new.scheduling.jitter != running.scheduling.jitter),
            ("scheduling.shutdown_grace", new.scheduling.shutdownGrace != running.scheduling.shutdownGrace),
            ("metrics.listen", new.metrics != running.metrics), ("limits.body_memory", new.limits.bodyMemory != running.limits.bodyMemory),
            ("limits.check_memory", new.limits.checkMemory != running.limits.checkMemory),
        ]
    }
}
