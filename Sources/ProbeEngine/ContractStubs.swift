import CurlHTTP
import Foundation
import Logging
import SondeCore

// Placeholder implementations of the engine's entry points so AgentRuntime can build against
// them; the engine's real files replace this one.

public enum ProbeLoader {
    /// Loads and validates every `*.yaml`/`*.yml` probe script under `paths` (files or folders).
    /// `variables` names what `${…}` may refer to beyond built-ins, `${env:…}` and `${file:…}`.
    /// Throws every problem found, each with file, line and field.
    public static func load(paths: [String], variables: Set<String>) throws(ProbeValidationError) -> [ProbeDefinition] {
        throw ProbeValidationError(diagnostics: [ProbeDiagnostic(file: paths.first ?? "-", message: "probe engine not built yet")])
    }
}

public struct ProbeRunner: Sendable {
    let client: CurlHTTPClient
    let logger: Logger

    public init(client: CurlHTTPClient = .shared, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Runs every step of `probe` and returns its result; never throws: every failure is data.
    public func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        ProbeResult(
            probe: probe.name, component: probe.component, agent: context.agent, region: context.region,
            startedAt: Date(), durationMs: 0, outcome: .failed,
            error: ProbeError(kind: .internal, step: "-", message: "probe engine not built yet"), steps: [],
            control: probe.control)
    }
}
