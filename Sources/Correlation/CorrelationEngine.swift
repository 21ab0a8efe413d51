import Foundation
import SondeCore

/// Verdicts, agent health and incidents from probe results (logic lands in the next commit).
public struct CorrelationEngine: Sendable {
    public private(set) var config: CorrelationConfig
    public private(set) var verdicts: [ComponentVerdict] = []
    public private(set) var agentHealth: [AgentHealth] = []
    public private(set) var openIncidents: [Incident]

    public init(config: CorrelationConfig, agents: [AgentInfo], openIncidents: [Incident] = [], agentStates: [AgentHealth] = []) {
        self.config = config.sanitized
        self.openIncidents = openIncidents
    }

    public mutating func setAgents(_ agents: [AgentInfo]) {}

    public mutating func ingest(_ results: [ProbeResult], receivedAt: Date) {}

    public mutating func evaluate(now: Date) -> CorrelationOutput {
        CorrelationOutput(verdicts: verdicts, agents: agentHealth, changedIncidents: [], events: [])
    }
}
