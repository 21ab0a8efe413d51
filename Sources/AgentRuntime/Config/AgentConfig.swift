import CurlHTTP
import FoundationEssentials
import ProbeEngine

/// Everything the agent process needs, as one typed value built from the YAML config file, the
/// environment and command-line flags (flags win over the environment, which wins over the file).
/// `AgentConfig.load(…)` in `AgentConfig+Loading.swift` reads each key; the doc comment of each
/// property names its key, type and default.
///
/// ```yaml
/// agent: {id: eu-1, region: eu}
/// collector: {url: https://collector:18300, ca_file: /etc/sonde/ca.crt, key: /var/lib/sonde/agent.key, batch_size: 100, timeout: 10s}
/// spool: {path: /var/lib/sonde/spool, max_bytes: 256MiB, memory_limit: 10000}
/// probes: [/etc/sonde/probes]
/// control_probes: [reach-reference]
/// variables: {base_url: http://127.0.0.1:18400}
/// secrets: {sim_password: env:SONDE_SIM_PASSWORD, api_token: file:/etc/sonde/token}
/// proxy: http://127.0.0.1:3128
/// scheduling: {jitter: 0.1}
/// metrics: {listen: 127.0.0.1:9465}
/// limits: {body_memory: 256MiB, check_memory: 256MiB}
/// ```
///
/// Relative paths in the file are relative to the file's folder.
public struct AgentConfig: Sendable {
    /// `agent.id` (string, default: the host name; env `SONDE_AGENT_ID`, flag `--id`): the
    /// name the collector knows this agent by.
    public var agentID: String
    /// `agent.region` (string, default `local`; env `SONDE_AGENT_REGION`, flag `--region`).
    public var region: String

    public var collector: Collector
    public var spool: SpoolSettings

    /// `probes` (list of files or folders, default: none): where the probe scripts are.
    public var probePaths: [String]
    /// `control_probes` (list of probe names, default: none): probes that measure this agent's
    /// own reach; their results carry `control: true` (as do probes with `control: true`).
    public var controlProbes: Set<String>
    /// `variables` (map of name → string, default: none): `${name}` values for probe scripts.
    public var variables: [String: String]
    /// `secrets` (map of name → `env:NAME` | `file:PATH`, default: none): resolved when the agent
    /// starts; usable as `${name}` like variables, but redacted from results and logs.
    public var secrets: [String: SecretSource]
    /// Resolved secret values, by name (filled by `load`; empty until then).
    public var secretValues: [String: String]
    /// `proxy` (URL, optional): HTTP proxy for probe traffic only; the push to the collector does
    /// not use it (it follows libcurl's usual `https_proxy`/`no_proxy` environment, if any).
    public var proxy: String?
    /// `ca_file` (path, optional): PEM bundle that probes trust instead of the system's CAs.
    public var caFile: String?

    public var scheduling: Scheduling

    /// `metrics.listen` (IP address and port such as `127.0.0.1:9465`, default: off): where the
    /// agent serves its own Prometheus `/metrics` (runs, start lateness, pushes, spool).
    public var metrics: Metrics?

    public var limits = Limits()

    /// The file this came from (nil when built from flags only).
    public var sourceFile: String?

    public struct Collector: Sendable {
        /// `collector.url` (URL, required by `run`; env `SONDE_COLLECTOR_URL`): the collector's
        /// base URL; results go to `<url>/v1/results`.
        public var url: String?
        /// `collector.key` (path, default `/var/lib/sonde/agent.key`): the Ed25519 private key
        /// written by `sonde-agent keygen`, mode 0600.
        public var keyPath: String = "/var/lib/sonde/agent.key"
        /// `collector.batch_size` (integer 1…10000, default 100): most results per push.
        public var batchSize: Int = 100
        /// `collector.timeout` (duration, default `10s`): whole-request time-out of one push.
        public var timeout: Duration = .seconds(10)
        /// `collector.flush_interval` (duration, default `1s`): how often the uploader looks for
        /// new results when the spool was empty. A result that can change a decision at the
        /// collector (`PushUrgency`) ends that wait at once.
        public var flushInterval: Duration = .seconds(1)
        /// `collector.backoff.base` (duration, default `1s`) and `collector.backoff.cap` (duration,
        /// default `10s`): capped exponential backoff with full jitter between failed pushes. The
        /// cap is how late an agent may come back after the collector does: with 60 s, agents
        /// returned up to a minute after a restart, and faults that began meanwhile waited for
        /// them (verdict review, 34th session). A collector that is up but busy says when to come
        /// back (`Retry-After`), which takes the backoff's place.
        public var backoffBase: Duration = .seconds(1)
        public var backoffCap: Duration = .seconds(10)
        /// `collector.unauthorized_retry` (duration, default `60s`): how often a push refused with
        /// 401/403 (agent unknown or revoked) is retried.
        public var unauthorizedRetry: Duration = .seconds(60)
        /// `collector.ca_file` (path, optional): PEM of the CA that signed the collector's
        /// certificate (a private CA); default: the system's CAs.
        public var caFile: String?
        /// `collector.client_cert` and `collector.client_key` (paths, optional, both or neither):
        /// the agent's certificate for a collector that requires mutual TLS (`listen.tls.client_ca`).
        public var clientCertificate: (cert: String, key: String)?

        public init() {}
    }

    public struct SpoolSettings: Sendable {
        /// `spool.path` (folder, default `/var/lib/sonde/spool`): the durable queue of results.
        public var path: String = "/var/lib/sonde/spool"
        /// `spool.max_bytes` (size such as `256MiB`, default `256MiB`): when the spool is full the
        /// oldest unsent results are dropped (counted and logged).
        public var maxBytes: Int = 256 << 20
        /// `spool.memory_limit` (integer 0…10000000, default 10000): while the spool's disk fails
        /// (full, read-only, I/O errors), at most this many results wait in memory; beyond it the
        /// oldest are dropped (counted and logged).
        public var memoryLimit: Int = 10_000

        public init() {}
    }

    public struct Scheduling: Sendable {
        /// `scheduling.jitter` (fraction 0…0.5, default `0.1`): each run starts within ±jitter ×
        /// interval of its slot, so agents that share an id pattern still spread out.
        public var jitter: Double = 0.1
        /// `scheduling.shutdown_grace` (duration, default `5s`): on SIGTERM, how long runs in
        /// flight may take to finish before they are cancelled (a cancelled run records nothing).
        public var shutdownGrace: Duration = .seconds(5)
        /// `scheduling.interval` (duration, default: none): runs every probe at this interval
        /// instead of its script's own (for demos, drills and lab agents that must react fast).
        public var interval: Duration?

        public init() {}
    }

    public struct Limits: Sendable, Hashable {
        /// `limits.body_memory` (size of at least 1MiB such as `256MiB`, default `256MiB`): the
        /// response-body bytes all probes may hold in memory together, from the first byte until
        /// the step's checks end, beyond 256 KiB each (`CurlHTTP.BodyMemory`); a transfer that
        /// finds it spent is paused until bodies are let go. Applied at start.
        public var bodyMemory: Int = BodyMemory.defaultLimit
        /// `limits.check_memory` (size of at least 64MiB such as `256MiB`, default `256MiB`): the
        /// memory the trees of JSON bodies being checked may hold together (`ProbeEngine.CheckMemory`);
        /// a check whose tree would pass it waits, within its run's time-out, for others to end.
        /// Applied at start.
        public var checkMemory: Int = CheckMemory.defaultLimit

        public init() {}
    }

    public struct Metrics: Sendable, Hashable {
        public var listen: MetricsListenAddress
        public init(listen: MetricsListenAddress) { self.listen = listen }
    }

    public init(agentID: String = AgentConfig.defaultAgentID, region: String = "local") {
        self.agentID = agentID
        self.region = region
        collector = Collector()
        spool = SpoolSettings()
        probePaths = []
        controlProbes = []
        variables = [:]
        secrets = [:]
        secretValues = [:]
        scheduling = Scheduling()
    }

    /// The host name, the default agent id.
    public static var defaultAgentID: String {
        let name = ProcessInfo.processInfo.hostName
        return name.isEmpty ? "agent" : name
    }
}

/// Where a secret's value comes from: `env:NAME` or `file:PATH`.
public enum SecretSource: Sendable, Hashable, CustomStringConvertible {
    case environment(String)
    case file(String)

    public var description: String {
        switch self {
        case .environment(let name): "env:\(name)"
        case .file(let path): "file:\(path)"
        }
    }
}

extension AgentConfig {
    /// Variables and secret values merged, for `RunContext`; names that probes may use.
    public var allVariableNames: Set<String> { Set(variables.keys).union(secrets.keys) }
}

// Printed anywhere (an interpolation, a log line that describes a value holding one, as
// swift-service-lifecycle's debug lines describe each service), a config must not show the
// values of its secrets, nor a proxy URL's credentials: names and places only.
extension AgentConfig: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String {
        "AgentConfig(agent: \(agentID), region: \(region), file: \(sourceFile ?? "-"), probes: \(probePaths), variables: \(variables.keys.sorted()), secrets: \(secrets.keys.sorted()))"
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        Mirror(self, children: ["agentID": agentID, "region": region, "sourceFile": sourceFile ?? "-", "probePaths": probePaths, "secrets": secrets.keys.sorted()], displayStyle: .struct)
    }
}
