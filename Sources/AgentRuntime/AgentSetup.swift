import CurlHTTP
#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import Logging
import ProbeEngine
import ServiceLifecycle
import SondeCore

/// Why the agent cannot start: every problem found, each as `file:line:column: field: message`.
/// Commands print them and exit with status 2.
public struct AgentStartError: Error, Sendable, CustomStringConvertible {
    public var problems: [String]
    /// Probe scripts' warnings, kept for `validate` when there are problems too.
    public var warnings: [String]
    public init(_ problems: [String], warnings: [String] = []) {
        self.problems = problems
        self.warnings = warnings
    }
    public var description: String { problems.joined(separator: "\n") }
}

/// The values every command builds from a loaded config: the probes and the run context.
public struct AgentProbes: Sendable {
    public var probes: [ProbeDefinition]
    public var context: RunContext

    /// The scripts' warnings (`insecure: true`, a password in a URL, …), which `validate`
    /// prints: a running agent logs them at start and on each reload, so an operator who never
    /// ran `validate` still reads them.
    public var warnings: [String] { probes.flatMap(\.warnings).map(\.description) }

    public func logWarnings(_ logger: Logger) {
        for warning in warnings { logger.warning("probe script warning", metadata: ["warning": "\(warning)"]) }
    }
}

extension AgentConfig {
    /// The run context probes see: variables plus secret values (secrets flagged for redaction).
    public var runContext: RunContext {
        RunContext(
            agent: agentID, region: region, variables: variables.merging(secretValues) { _, secret in secret },
            secretNames: Set(secretValues.keys), proxy: proxy, caFile: caFile)
    }

    /// Loads and validates the probe scripts this config names. `requireEnvironment` (the daemon,
    /// at start and on reload): a probe whose `${env:NAME}` (no default) is unset in this
    /// process is a problem, as an unset `secrets:` entry is. Its every run would fail as
    /// `script`, which says nothing about the platform, yet would count against it: a new
    /// agent deployed without its EnvironmentFile opened a public "login is failing" incident.
    public func loadProbes(requireEnvironment: Bool = false) throws(AgentStartError) -> AgentProbes {
        guard !probePaths.isEmpty else {
            throw AgentStartError(["\(sourceFile ?? "(flags)"): probes: no probe scripts given; list files or folders under `probes:` or pass --probes DIR"])
        }
        do {
            var probes = try ProbeLoader.load(paths: probePaths, variables: allVariableNames, values: variables)
            if let interval = scheduling.interval {
                for index in probes.indices { probes[index].override(interval: interval) }
            }
            guard !probes.isEmpty else {
                throw AgentStartError(["\(probePaths.joined(separator: ", ")): no probe scripts (*.yaml, *.yml) found there"])
            }
            if requireEnvironment {
                let unset = probes.flatMap { probe in
                    probe.requiredEnvironmentNames.sorted().filter { getenv($0) == nil }.map { (probe, $0) }
                }
                if !unset.isEmpty {
                    throw AgentStartError(unset.map { probe, name in
                        "\(probe.sourceFile): probe \(probe.name): environment variable \(name) (${env:\(name)}) is not set for the agent;"
                            + " set it where the agent runs (systemd: Environment= or EnvironmentFile= in a drop-in), or give a default: ${env:\(name):-value}"
                    })
                }
            }
            return AgentProbes(probes: probes, context: runContext)
        } catch let error as ProbeValidationError {
            throw AgentStartError(error.diagnostics.map(\.description), warnings: error.warnings.map(\.description))
        } catch let error as AgentStartError {
            throw error
        } catch {
            throw AgentStartError(["\(error)"])
        }
    }
}

/// The long-running agent: scheduler → spool → uploader. `buildAgent` is what `sonde-agent run`
/// calls, and what tests call with their own probe executor.
public struct AgentServices: Sendable {
    public var spool: Spool { uploader.journal.spool }
    public var scheduler: Scheduler
    public var uploader: Uploader
    /// SIGHUP → reload (`run` sets it; nil in tests that drive the scheduler themselves).
    public var reloader: ConfigReloader?
    /// The agent's own `/metrics` (`metrics.listen`); nil when it is off.
    public var metricsServer: AgentMetricsServer?

    /// Scheduler and uploader in one group with graceful shutdown on SIGTERM/SIGINT. Services shut
    /// down in reverse order: the scheduler first (no new runs; runs in flight finish or are
    /// cancelled and their results spooled), then the uploader (last push, then stop).
    /// `handleSignals: false` is for tests that trigger the shutdown themselves.
    public func serviceGroup(logger: Logger, handleSignals: Bool = true) -> ServiceGroup {
        var configuration = ServiceGroupConfiguration(
            services: [
                .init(service: uploader, successTerminationBehavior: .gracefullyShutdownGroup),
                .init(service: scheduler, successTerminationBehavior: .gracefullyShutdownGroup),
            ] + (reloader.map { [.init(service: $0)] } ?? []) + (metricsServer.map { [.init(service: $0)] } ?? []),
            gracefulShutdownSignals: handleSignals ? [.sigterm, .sigint] : [], logger: logger)
        // A last resort if a run or a push ignores cancellation: never hang a service manager.
        configuration.maximumGracefulShutdownDuration = scheduler.shutdownGrace + uploader.settings.timeout + .seconds(10)
        return ServiceGroup(configuration: configuration)
    }
}

/// Opens the spool, loads the key and probes, and wires the services. Every problem is reported at
/// once (config problems come before this, from `AgentConfig.load`).
public func buildAgent(
    config: AgentConfig, logger: Logger, executor: (any ProbeExecuting)? = nil, client: CurlHTTPClient = .shared
) throws(AgentStartError) -> AgentServices {
    var problems: [String] = []
    let file = config.sourceFile ?? "(flags)"
    if config.collector.url == nil { problems.append("\(file): collector.url: missing: the agent needs the collector's URL") }
    var key: AgentSigningKey?
    do { key = try AgentSigningKey.load(from: config.collector.keyPath) } catch {
        problems.append("\(file): collector.key: \(error)")
    }
    var loaded: AgentProbes?
    do { loaded = try config.loadProbes(requireEnvironment: true) } catch { problems += error.problems }
    guard problems.isEmpty, let key, let loaded else { throw AgentStartError(problems) }
    loaded.logWarnings(logger)
    let spool: Spool
    do { spool = try Spool(directory: config.spool.path, maxBytes: config.spool.maxBytes, memoryLimit: config.spool.memoryLimit, logger: logger) } catch {
        throw AgentStartError(["\(file): spool.path: \(error)"])
    }
    client.bodyMemory.limit = config.limits.bodyMemory
    CheckMemory.shared.limit = config.limits.checkMemory
    let journal = JournalWriter(spool: spool)
    // The probes' runs submit their results on the client's loop thread: steady ones share
    // wake-ups of the journal thread.
    if executor == nil { journal.holdSteadyResults(on: client) }
    let scheduler = Scheduler(
        probes: loaded.probes, context: loaded.context,
        executor: executor ?? ProbeRunner(client: client, logger: logger), controlProbes: config.controlProbes,
        jitter: config.scheduling.jitter, shutdownGrace: config.scheduling.shutdownGrace, logger: logger
    ) { result in
        // Queued for the journal thread: the probe's loop goes on at once, whatever the disk does.
        journal.submit(result) { outcome in
            switch outcome {
            case .success(let stored):
                logger.debug(
                    "result spooled",
                    metadata: ["probe.name": "\(stored.probe)", "probe.outcome": "\(stored.outcome.rawValue)", "result.seq": "\(stored.seq ?? 0)"])
            case .failure(let error):
                // Disk failures are handled inside the spool (results go to memory); only an unencodable result lands here.
                logger.error("cannot spool a result; it is lost", metadata: ["probe.name": "\(result.probe)", "error": "\(error)"])
            }
        }
    }
    var uploader = Uploader(settings: .init(config: config), journal: journal, key: key, client: client, logger: logger)
    // A collector deciding about a component asks this agent's probes of it to confirm.
    uploader.confirm = { [scheduler] components in
        let probes = scheduler.confirm(components: components)
        if probes > 0 { logger.debug("collector asks to confirm components", metadata: ["components": "\(components)", "probes.count": "\(probes)"]) }
    }
    var services = AgentServices(scheduler: scheduler, uploader: uploader)
    if let listen = config.metrics?.listen {
        let metrics = AgentMetrics()
        do {
            services.metricsServer = try AgentMetricsServer(listen: listen, metrics: metrics, spool: spool, logger: logger)
        } catch {
            spool.close()
            throw error
        }
        services.uploader.metrics = metrics
        services.scheduler.metrics = metrics
    }
    return services
}
