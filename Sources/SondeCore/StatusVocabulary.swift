/// A component's state in Statuspage's words (SPEC "Verdicts").
public enum ComponentStatus: String, Codable, Sendable, CaseIterable, Comparable {
    case operational
    case degradedPerformance = "degraded_performance"
    case partialOutage = "partial_outage"
    case majorOutage = "major_outage"
    case underMaintenance = "under_maintenance"
    case unknown

    /// Severity for ordering: worse is greater.
    public var severity: Int {
        switch self {
        case .unknown: 0
        case .operational: 1
        case .underMaintenance: 2
        case .degradedPerformance: 3
        case .partialOutage: 4
        case .majorOutage: 5
        }
    }

    public static func < (lhs: ComponentStatus, rhs: ComponentStatus) -> Bool { lhs.severity < rhs.severity }
}

/// Where a problem lives: one agent's host or network, one region, or the whole platform.
public enum ProblemScope: String, Codable, Sendable, CaseIterable {
    case agent
    case region
    case platform
}

/// An incident's lifecycle (SPEC "Incidents and alerts"), in order. `identified` is set by a
/// person only (the cause is known and being worked on).
public enum IncidentStatus: String, Codable, Sendable, CaseIterable {
    case investigating
    case identified
    case monitoring
    case resolved

    /// The problem is still being worked on (`investigating` or `identified`): not yet recovering.
    public var isUnderWay: Bool { self == .investigating || self == .identified }
}

/// Webhook event types (SPEC "Incidents and alerts").
public enum AlertEventType: String, Codable, Sendable, CaseIterable {
    case incidentOpened = "incident.opened"
    case incidentUpdated = "incident.updated"
    case incidentResolved = "incident.resolved"
    case agentLocalFault = "agent.local_fault"
    case agentSilent = "agent.silent"
    /// A silent agent reports again, or an agent's local fault cleared: ends that problem's
    /// alert (PagerDuty resolve, Alertmanager `endsAt`) and tells chat it is over.
    case agentRecovered = "agent.recovered"
    case test = "alert.test"
}
