import FoundationEssentials
import ProbeEngine
import SondeCore
import SondeYAML

/// Every problem found in a config file (and in the flags and environment applied over it), each
/// located by file, line, column and field; nothing is used when there is one.
public struct ConfigError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ProbeDiagnostic]
    public init(diagnostics: [ProbeDiagnostic]) { self.diagnostics = diagnostics }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Values from command-line flags that win over the file and the environment.
public struct ConfigOverrides: Sendable {
    public var agentID: String?
    public var region: String?
    /// Replaces the file's `probes` list when not empty.
    public var probePaths: [String] = []
    /// Added to (and winning over) the file's `variables`.
    public var variables: [String: String] = [:]

    public init(agentID: String? = nil, region: String? = nil, probePaths: [String] = [], variables: [String: String] = [:]) {
        self.agentID = agentID
        self.region = region
        self.probePaths = probePaths
        self.variables = variables
    }
}

extension AgentConfig {
    /// Environment variables read over the file: `SONDE_AGENT_ID`, `SONDE_AGENT_REGION`,
    /// `SONDE_COLLECTOR_URL`.
    public static let environmentKeys = ["SONDE_AGENT_ID", "SONDE_AGENT_REGION", "SONDE_COLLECTOR_URL"]

    /// Builds the config from `file` (nil: defaults only), then the environment, then `overrides`,
    /// and resolves secrets. `requireCollector` makes `collector.url` mandatory (for `run`).
    /// Throws every problem at once.
    public static func load(
        file: String?, overrides: ConfigOverrides = ConfigOverrides(),
        environment: [String: String] = ProcessInfo.processInfo.environment, requireCollector: Bool = false
    ) throws(ConfigError) -> AgentConfig {
        let (config, diagnostics) = loadCollecting(file: file, overrides: overrides, environment: environment, requireCollector: requireCollector)
        if !diagnostics.isEmpty { throw ConfigError(diagnostics: diagnostics) }
        return config
    }

    /// Like `load`, but returns the problems next to the best-effort value instead of throwing
    /// (for `validate`, which goes on to check the probes the config names).
    public static func loadCollecting(
        file: String?, overrides: ConfigOverrides = ConfigOverrides(),
        environment: [String: String] = ProcessInfo.processInfo.environment, requireCollector: Bool = false
    ) -> (AgentConfig, [ProbeDiagnostic]) {
        var config = AgentConfig()
        var reader = ConfigFileReader(file: file ?? "(flags)")
        var secretMarks: [String: Mark] = [:]
        if let file {
            config.sourceFile = file
            secretMarks = reader.read(file: file, into: &config)
            if reader.unreadable { return (config, reader.diagnostics) }
        }
        // Environment, then flags.
        if let id = environment["SONDE_AGENT_ID"], !id.isEmpty { config.agentID = id }
        if let region = environment["SONDE_AGENT_REGION"], !region.isEmpty { config.region = region }
        if let url = environment["SONDE_COLLECTOR_URL"], !url.isEmpty { config.collector.url = url }
        if let id = overrides.agentID { config.agentID = id }
        if let region = overrides.region { config.region = region }
        if !overrides.probePaths.isEmpty { config.probePaths = overrides.probePaths }
        config.variables.merge(overrides.variables) { _, flag in flag }

        reader.checkValues(of: config, requireCollector: requireCollector)
        config.secretValues = reader.resolveSecrets(config.secrets, marks: secretMarks, environment: environment)
        return (config, reader.diagnostics)
    }
}

// MARK: - Reading the YAML node tree

/// Walks the composed YAML nodes (not a Decodable) so every problem carries its line and column,
/// and keys nobody reads are reported instead of silently ignored.
struct ConfigFileReader {
    let file: String
    var diagnostics: [ProbeDiagnostic] = []
    /// The file could not be read at all: nothing else is worth reporting.
    var unreadable = false
    /// The file's folder, for relative paths.
    var baseDirectory: String = FileManager.default.currentDirectoryPath

    init(file: String) { self.file = file }

    mutating func problem(_ node: Node?, _ field: String?, _ message: String) {
        diagnostics.append(ProbeDiagnostic(file: file, line: node?.mark?.line, column: node?.mark?.column, field: field, message: message))
    }

    /// Reads the file into `config`; returns where each secret was declared (for later errors).
    mutating func read(file: String, into config: inout AgentConfig) -> [String: Mark] {
        baseDirectory = URL(fileURLWithPath: file).deletingLastPathComponent().path
        let text: String
        do { text = try String(contentsOfFile: file, encoding: .utf8) } catch {
            let why = FileManager.default.fileExists(atPath: file) ? "cannot be read by this user (or is not UTF-8 text)" : "does not exist"
            problem(nil, nil, "the config file \(why)")
            unreadable = true
            return [:]
        }
        let root: Node?
        do { root = try compose(yaml: text) } catch {
            diagnostics.append(ProbeDiagnostic(invalidYAML: error, file: file))
            return [:]
        }
        guard let root else { return [:] }  // An empty file means all defaults.
        let top = fields(root, nil, known: [
            "agent", "collector", "spool", "probes", "control_probes", "variables", "secrets", "proxy", "ca_file", "scheduling", "metrics",
            "limits",
        ])
        if let agent = top["agent"] {
            let keys = fields(agent, "agent", known: ["id", "region"])
            if let id = string(keys["id"], "agent.id") { config.agentID = id }
            if let region = string(keys["region"], "agent.region") { config.region = region }
        }
        if let collector = top["collector"] {
            let keys = fields(collector, "collector", known: ["url", "ca_file", "client_cert", "client_key", "key", "batch_size", "timeout", "flush_interval", "backoff", "unauthorized_retry"])
            if let url = string(keys["url"], "collector.url") { config.collector.url = url }
            if let key = string(keys["key"], "collector.key") { config.collector.keyPath = path(key) }
            if let caFile = string(keys["ca_file"], "collector.ca_file") { config.collector.caFile = path(caFile) }
            let clientCert = string(keys["client_cert"], "collector.client_cert")
            let clientKey = string(keys["client_key"], "collector.client_key")
            if let clientCert, let clientKey {
                config.collector.clientCertificate = (path(clientCert), path(clientKey))
            } else if clientCert != nil || clientKey != nil {
                problem(collector, "collector.client_cert", "set both collector.client_cert and collector.client_key, or neither")
            }
            if let size = integer(keys["batch_size"], "collector.batch_size", range: 1...10_000) { config.collector.batchSize = size }
            if let value = duration(keys["timeout"], "collector.timeout") { config.collector.timeout = value }
            if let value = duration(keys["flush_interval"], "collector.flush_interval") { config.collector.flushInterval = value }
            if let value = duration(keys["unauthorized_retry"], "collector.unauthorized_retry") { config.collector.unauthorizedRetry = value }
            if let backoff = keys["backoff"] {
                let b = fields(backoff, "collector.backoff", known: ["base", "cap"])
                if let value = duration(b["base"], "collector.backoff.base") { config.collector.backoffBase = value }
                if let value = duration(b["cap"], "collector.backoff.cap") { config.collector.backoffCap = value }
            }
        }
        if let spool = top["spool"] {
            let keys = fields(spool, "spool", known: ["path", "max_bytes", "memory_limit"])
            if let value = integer(keys["memory_limit"], "spool.memory_limit", range: 0...10_000_000) { config.spool.memoryLimit = value }
            if let value = string(keys["path"], "spool.path") { config.spool.path = path(value) }
            if let node = keys["max_bytes"] {
                if let text = string(node, "spool.max_bytes") {
                    if let bytes = ConfigValues.byteSize(text), bytes >= 64 << 10 {
                        config.spool.maxBytes = bytes
                    } else {
                        problem(node, "spool.max_bytes", "expected a size of at least 64KiB such as 256MiB, got \"\(text)\"")
                    }
                }
            }
        }
        if let node = top["probes"] { config.probePaths = stringList(node, "probes").map(path) }
        if let node = top["control_probes"] { config.controlProbes = Set(stringList(node, "control_probes")) }
        if let node = top["variables"] {
            for (name, value, _) in stringMap(node, "variables") { config.variables[name] = value }
        }
        var secretMarks: [String: Mark] = [:]
        if let node = top["secrets"] {
            for (name, value, valueNode) in stringMap(node, "secrets") {
                let field = "secrets.\(name)"
                if value.hasPrefix("env:"), value.count > 4 {
                    config.secrets[name] = .environment(String(value.dropFirst(4)))
                } else if value.hasPrefix("file:"), value.count > 5 {
                    config.secrets[name] = .file(path(String(value.dropFirst(5))))
                } else {
                    // Never echo the value: it may be a secret pasted in by mistake.
                    problem(valueNode, field, "expected env:NAME or file:PATH (secret values do not belong in the config file)")
                }
                if let mark = valueNode.mark { secretMarks[name] = mark }
            }
        }
        if let value = string(top["proxy"], "proxy") { config.proxy = value }
        if let value = string(top["ca_file"], "ca_file") { config.caFile = path(value) }
        if let scheduling = top["scheduling"] {
            let keys = fields(scheduling, "scheduling", known: ["jitter", "shutdown_grace", "interval"])
            if let node = keys["jitter"], let text = string(node, "scheduling.jitter") {
                if let value = Double(text), (0...0.5).contains(value) {
                    config.scheduling.jitter = value
                } else {
                    problem(node, "scheduling.jitter", "expected a fraction between 0 and 0.5 such as 0.1, got \"\(text)\"")
                }
            }
            if let value = duration(keys["shutdown_grace"], "scheduling.shutdown_grace") { config.scheduling.shutdownGrace = value }
            if let node = keys["interval"], let value = duration(node, "scheduling.interval") {
                if value > .zero { config.scheduling.interval = value } else { problem(node, "scheduling.interval", "must be longer than 0s") }
            }
        }
        if let limits = top["limits"] {
            let keys = fields(limits, "limits", known: ["body_memory", "check_memory"])
            if let node = keys["body_memory"], let text = string(node, "limits.body_memory") {
                if let bytes = ConfigValues.byteSize(text), bytes >= 1 << 20 {
                    config.limits.bodyMemory = bytes
                } else {
                    problem(node, "limits.body_memory", "expected a size of at least 1MiB such as 256MiB, got \"\(text)\"")
                }
            }
            if let node = keys["check_memory"], let text = string(node, "limits.check_memory") {
                if let bytes = ConfigValues.byteSize(text), bytes >= CheckMemory.minimumLimit {
                    config.limits.checkMemory = bytes
                } else {
                    problem(node, "limits.check_memory", "expected a size of at least 64MiB such as 256MiB, got \"\(text)\"")
                }
            }
        }
        if let metrics = top["metrics"] {
            let keys = fields(metrics, "metrics", known: ["listen"])
            if let node = keys["listen"], let text = string(node, "metrics.listen") {
                if let address = MetricsListenAddress.parse(text) {
                    config.metrics = AgentConfig.Metrics(listen: address)
                } else {
                    problem(node, "metrics.listen", "expected an IP address and port such as 127.0.0.1:9465 or [::1]:9465, got \"\(text)\"")
                }
            } else if keys["listen"] == nil, case .mapping = metrics {
                problem(metrics, "metrics.listen", "missing: the address to serve /metrics on, such as 127.0.0.1:9465 (leave out `metrics:` to serve none)")
            }
        }
        return secretMarks
    }

    // MARK: - Typed accessors (each reports its own problems)

    /// A mapping's values by key; reports a non-mapping and every key not in `known`.
    mutating func fields(_ node: Node, _ field: String?, known: [String]) -> [String: Node] {
        guard case .mapping(let mapping) = node else {
            problem(node, field, "expected a mapping (key: value lines)")
            return [:]
        }
        var result: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.string else { problem(keyNode, field, "expected a text key"); continue }
            let path = field.map { "\($0).\(key)" } ?? key
            if !known.contains(key) {
                // The closest key as the collector's config suggests it; a flat key (`agent_id`)
                // is pointed at its section only, since this reader does not know each section's keys.
                problem(keyNode, path, "unknown key '\(key)'" + NodeDecodingError.suggestion(for: key, among: known, accepts: { _, _ in false }))
            } else if result[key] != nil {
                problem(keyNode, path, "appears twice")
            } else {
                result[key] = value
            }
        }
        return result
    }

    mutating func string(_ node: Node?, _ field: String) -> String? {
        guard let node else { return nil }
        guard case .scalar(let scalar) = node else {
            problem(node, field, "expected a single value, not a list or mapping")
            return nil
        }
        return scalar.string
    }

    mutating func integer(_ node: Node?, _ field: String, range: ClosedRange<Int>) -> Int? {
        guard let text = string(node, field) else { return nil }
        guard let value = Int(text), range.contains(value) else {
            problem(node, field, "expected a whole number from \(range.lowerBound) to \(range.upperBound), got \"\(text)\"")
            return nil
        }
        return value
    }

    mutating func duration(_ node: Node?, _ field: String) -> Duration? {
        guard let text = string(node, field) else { return nil }
        guard let value = ConfigValues.duration(text), value > .zero else {
            problem(node, field, "expected a duration such as 500ms, 10s or 2m, got \"\(text)\"")
            return nil
        }
        return value
    }

    mutating func stringList(_ node: Node, _ field: String) -> [String] {
        if case .scalar(let scalar) = node { return [scalar.string] }  // A single item is fine.
        guard case .sequence(let sequence) = node else {
            problem(node, field, "expected a list such as [a, b]")
            return []
        }
        return sequence.enumerated().compactMap { index, item in string(item, "\(field)[\(index)]") }
    }

    mutating func stringMap(_ node: Node, _ field: String) -> [(String, String, Node)] {
        guard case .mapping(let mapping) = node else {
            problem(node, field, "expected a mapping of name: value")
            return []
        }
        var seen = Set<String>()
        var result: [(String, String, Node)] = []
        for (keyNode, value) in mapping {
            guard let key = keyNode.string, !key.isEmpty else { problem(keyNode, field, "expected a name"); continue }
            guard seen.insert(key).inserted else { problem(keyNode, "\(field).\(key)", "appears twice"); continue }
            if let text = string(value, "\(field).\(key)") { result.append((key, text, value)) }
        }
        return result
    }

    /// `~` or `~/…` with the user's home folder, as a shell would.
    static func expandingTilde(_ path: String) -> String {
        guard path == "~" || path.hasPrefix("~/") else { return path }
        let home = ProcessInfo.processInfo.environment["HOME"] ?? FileManager.default.homeDirectoryForCurrentUser.path
        return home + path.dropFirst()
    }

    func path(_ value: String) -> String {
        let expanded = Self.expandingTilde(value)
        return expanded.hasPrefix("/") ? expanded : baseDirectory + "/" + expanded
    }

    // MARK: - Checks over the final value

    mutating func checkValues(of config: AgentConfig, requireCollector: Bool) {
        func bad(_ field: String, _ message: String) {
            diagnostics.append(ProbeDiagnostic(file: file, field: field, message: message))
        }
        if let problem = ResultText.nameProblem(config.agentID) {
            bad("agent.id", "expected a name without spaces or control characters: it \(problem)")
        }
        if let problem = ResultText.nameProblem(config.region) {
            bad("agent.region", "expected a name without spaces or control characters: it \(problem)")
        }
        if let url = config.collector.url {
            if !Self.isHTTPURL(url) { bad("collector.url", "expected an http:// or https:// URL such as http://collector:18300, got \"\(url)\"") }
        } else if requireCollector {
            bad("collector.url", "missing: `run` needs the collector's URL (collector: {url: http://…}) or SONDE_COLLECTOR_URL")
        }
        if let proxy = config.proxy, !Self.isHTTPURL(proxy) {
            bad("proxy", "expected a proxy URL such as http://127.0.0.1:3128, got \"\(proxy)\"")
        }
        if config.collector.backoffCap < config.collector.backoffBase {
            bad("collector.backoff.cap", "must not be shorter than collector.backoff.base")
        }
    }

    static func isHTTPURL(_ text: String) -> Bool {
        guard let url = URL(string: text), let scheme = url.scheme?.lowercased(), ["http", "https"].contains(scheme), url.host != nil else { return false }
        return true
    }

    /// Reads every secret now, so a missing one stops the agent at start with a clear message
    /// that names the secret and where it should come from, never its value.
    mutating func resolveSecrets(_ secrets: [String: SecretSource], marks: [String: Mark], environment: [String: String]) -> [String: String] {
        var values: [String: String] = [:]
        for (name, source) in secrets.sorted(by: { $0.key < $1.key }) {
            let mark = marks[name]
            func missing(_ message: String) {
                diagnostics.append(ProbeDiagnostic(file: file, line: mark?.line, column: mark?.column, field: "secrets.\(name)", message: message))
            }
            switch source {
            case .environment(let variable):
                if let value = environment[variable], !value.isEmpty {
                    values[name] = value
                } else {
                    missing("secret \"\(name)\": environment variable \(variable) is not set (or empty)")
                }
            case .file(let path):
                do {
                    let text = try String(contentsOfFile: path, encoding: .utf8)
                    // A trailing newline from `echo … > file` is not part of the secret.
                    values[name] = text.hasSuffix("\n") ? String(text.dropLast()) : text
                } catch {
                    let why = FileManager.default.fileExists(atPath: path) ? "cannot be read by this user" : "does not exist"
                    missing("secret \"\(name)\": file \(path) \(why)")
                }
            }
        }
        return values
    }
}
