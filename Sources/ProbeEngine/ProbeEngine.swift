import CurlHTTP
import FoundationEssentials
import Logging
import SondeCore

// MARK: - The ProbeEngine contract
// AgentRuntime builds on exactly these names and signatures; the engine may add more.

/// A probe script that passed validation: what to run, how often, and when to call it slow.
public struct ProbeDefinition: Sendable {
    public var name: String
    public var component: String
    public var interval: Duration
    /// After a failed or slow run, the probe also runs every `retryInterval` between its regular
    /// slots, until it has passed for two whole intervals (`retry_interval`, default a quarter of
    /// `interval`; equal to `interval`: no retries). More runs while something is wrong confirm a
    /// fault, and its end, in seconds when the interval is minutes (as Nagios' `retry_interval`).
    public var retryInterval: Duration
    public var timeout: Duration
    /// Runs slower than this (whole probe) are `degraded`.
    public var degradedAfter: Duration?
    /// A control probe measures the agent's own reach (a reference endpoint), not the platform.
    public var control: Bool
    /// The file it came from, for messages.
    public var sourceFile: String
    /// The steps and rules the runner executes (filled by `ProbeLoader`).
    var script = ProbeScript()
    /// Line of the `name` field, for duplicate-name messages.
    var nameLine: Int?
    /// Things `validate` points out that do not stop the probe from loading (`insecure: true`,
    /// a `stuck_after` state that differs from a polled state only in case).
    public var warnings: [ProbeDiagnostic] = []

    /// The probe's `labels`, carried in its results.
    public var labels: [String: String] { script.labels }

    /// The environment variables its templates read (`${env:NAME}`).
    public var environmentNames: Set<String> { script.secretEnvironment }
    /// The environment variables its runs cannot do without (`${env:NAME}` with no default).
    public var requiredEnvironmentNames: Set<String> { script.requiredEnvironment }

    /// A quarter of the interval, but not under 100 ms (nor over the interval).
    public static func defaultRetryInterval(_ interval: Duration) -> Duration {
        min(interval, max(interval / 4, .milliseconds(100)))
    }

    /// Runs the probe every `newInterval` instead (the agent's `scheduling.interval`), with its
    /// retry interval scaled alike: the default quarter stays a quarter, retries that were off
    /// (equal to the interval) stay off, and the result is at least 100 ms (at most the interval).
    /// Without this, a 1 m probe run every 2 s kept its 15 s retry interval and never retried.
    public mutating func override(interval newInterval: Duration) {
        let share = interval > .zero ? retryInterval / interval : 0.25
        interval = newInterval
        retryInterval = share >= 1 ? newInterval : min(newInterval, max(newInterval * share, .milliseconds(100)))
    }

    /// Every component its runs give evidence about: its own and its steps' (`component:`).
    public var components: Set<String> { Set([component] + script.steps.compactMap(\.component)) }

    /// Step names in order, for listings (`sonde-agent validate`, tables).
    public var stepNames: [String] { script.steps.map(\.name) }

    public init(
        name: String, component: String, interval: Duration, retryInterval: Duration? = nil, timeout: Duration, degradedAfter: Duration? = nil,
        control: Bool = false, sourceFile: String
    ) {
        self.name = name
        self.component = component
        self.interval = interval
        self.retryInterval = retryInterval ?? Self.defaultRetryInterval(interval)
        self.timeout = timeout
        self.degradedAfter = degradedAfter
        self.control = control
        self.sourceFile = sourceFile
    }
}

/// One problem in a probe or config file, located by file, line and field.
public struct ProbeDiagnostic: Sendable, Hashable, CustomStringConvertible {
    public var file: String
    public var line: Int?
    public var column: Int?
    /// Dotted path of the field, e.g. `steps[2].assert.status`.
    public var field: String?
    public var message: String
    /// A warning is printed by `validate` but does not stop the probe from loading.
    public var isWarning = false

    public init(file: String, line: Int? = nil, column: Int? = nil, field: String? = nil, message: String, isWarning: Bool = false) {
        self.file = file
        self.line = line
        self.column = column
        self.field = field
        self.message = message
        self.isWarning = isWarning
    }

    /// `file:line:column: field: message`, the form compilers and editors understand.
    public var description: String {
        var text = file
        if let line { text += ":\(line)" }
        if let column { text += ":\(column)" }
        text += ": "
        if isWarning { text += "warning: " }
        if let field { text += "\(field): " }
        return text + message
    }
}

/// Every problem found while loading probe scripts; nothing is loaded when there is one.
public struct ProbeValidationError: Error, Sendable, CustomStringConvertible {
    public var diagnostics: [ProbeDiagnostic]
    /// Warnings of every file, those with errors too: `validate` shows them all at once.
    public var warnings: [ProbeDiagnostic]
    public init(diagnostics: [ProbeDiagnostic], warnings: [ProbeDiagnostic] = []) {
        self.diagnostics = diagnostics
        self.warnings = warnings
    }
    public var description: String { diagnostics.map(\.description).joined(separator: "\n") }
}

/// Values a run may use: agent variables (`${name}`) and secrets, which are substituted like
/// variables but never appear in results, logs or error messages.
public struct RunContext: Sendable {
    public var agent: String
    public var region: String
    public var variables: [String: String]
    /// Names of variables whose values are secrets (their values are redacted everywhere).
    public var secretNames: Set<String>
    /// HTTP proxy for every request of this agent, e.g. `http://127.0.0.1:3128`.
    public var proxy: String?
    /// PEM CA bundle to trust instead of the system's.
    public var caFile: String?

    public init(agent: String, region: String, variables: [String: String] = [:], secretNames: Set<String> = [], proxy: String? = nil, caFile: String? = nil) {
        self.agent = agent
        self.region = region
        self.variables = variables
        self.secretNames = secretNames
        self.proxy = proxy
        self.caFile = caFile
    }
}

// Printed anywhere (an interpolation, a debugger), a run context must not show secret values.
extension RunContext: CustomStringConvertible {
    public var description: String {
        let shown = variables.keys.sorted().map { name in "\(name): \(secretNames.contains(name) ? "<redacted>" : variables[name]!)" }
        return "RunContext(agent: \(agent), region: \(region), variables: [\(shown.joined(separator: ", "))])"
    }
}
