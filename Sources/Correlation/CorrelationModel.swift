import Foundation
import SondeCore

// The engine's wire types: what the collector serves (`/v1/status`, `/v1/incidents`,
// `/v1/agents`), stores and sends in webhooks. snake_case JSON keys; encode with `SondeJSON`.

// MARK: - Agents

/// An enrolled agent as the collector knows it. `region` here wins over the region in results.
/// When a push was sent (its `sent_at`, on the agent's clock) and when it arrived (on the
/// collector's time line): the engine measures each agent's clock offset on these.
public struct PushTiming: Sendable, Hashable {
    public var sentAt: Date
    public var arrivedAt: Date

    public init(sentAt: Date, arrivedAt: Date) {
        self.sentAt = sentAt
        self.arrivedAt = arrivedAt
    }
}

public struct AgentInfo: Sendable, Codable, Hashable {
    public var id: String
    public var region: String
    public var revoked: Bool

    public init(id: String, region: String, revoked: Bool = false) {
        self.id = id
        self.region = region
        self.revoked = revoked
    }

    enum CodingKeys: String, CodingKey { case id, region, revoked }
}

/// What the collector thinks of an agent itself (not of the platform it probes).
public enum AgentState: String, Sendable, Codable, Hashable, CaseIterable {
    /// Reporting, and its failures (if any) count as evidence.
    case ok
    /// Its control probe fails, or it fails where its region's peers succeed: its data is excluded.
    case localFault = "local_fault"
    /// No result for several of its intervals (or none yet): an agent problem, never an outage.
    case silent
    /// Its key was revoked; its results are ignored.
    case revoked
}

/// One agent's state, since when, and why.
public struct AgentHealth: Sendable, Codable, Hashable {
    public var agent: String
    public var region: String
    public var state: AgentState
    /// When the agent entered `state`. For `silent`, the time of its last result (so the same
    /// silence has the same `since` after a collector restart).
    public var since: Date
    /// When the collector last received a result from it; nil when never.
    public var lastSeen: Date?
    /// For people: why it is local or silent.
    public var reason: String?
    /// Components on which it has failed locally during this local-fault episode (empty unless
    /// `local_fault`).
    public var localComponents: [String]

    /// The event an agent in this state was announced with, while it lasts: `agent.local_fault`,
    /// or `agent.silent` for an agent that had reported before; nil when ok (or never heard).
    public var problemEvent: AlertEventType? {
        switch state {
        case .localFault: .agentLocalFault
        case .silent where lastSeen != nil: .agentSilent
        default: nil
        }
    }

    /// The one-line summary of that event.
    public var problemSummary: String {
        "agent \(agent) (\(region)): \(state == .silent ? "silent" : "local fault"): \(reason ?? "")"
    }

    public init(
        agent: String, region: String, state: AgentState, since: Date, lastSeen: Date? = nil, reason: String? = nil,
        localComponents: [String] = []
    ) {
        self.agent = agent
        self.region = region
        self.state = state
        self.since = since
        self.lastSeen = lastSeen
        self.reason = reason
        self.localComponents = localComponents
    }

    enum CodingKeys: String, CodingKey {
        case agent, region, state, since
        case lastSeen = "last_seen"
        case reason
        case localComponents = "local_components"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        agent = try c.decode(String.self, forKey: .agent)
        region = try c.decode(String.self, forKey: .region)
        state = try c.decode(AgentState.self, forKey: .state)
        since = try c.decode(Date.self, forKey: .since)
        lastSeen = try c.decodeIfPresent(Date.self, forKey: .lastSeen)
        reason = try c.decodeIfPresent(String.self, forKey: .reason)
        localComponents = try c.decodeIfPresent([String].self, forKey: .localComponents) ?? []
    }
}

// MARK: - Verdicts

/// Why a verdict is what it is. Agent lists are sorted and capped (`max_listed_agents`); the
/// counts are exact.
public struct Evidence: Sendable, Codable, Hashable {
    /// Non-local, non-silent agents failing on the component (hard or flaky), sorted, capped.
    public var failingAgents: [String]
    public var failingAgentCount: Int
    /// Regions whose status is not operational, sorted.
    public var failingRegions: [String]
    /// Agents whose data the verdict is built from (non-silent, non-local, reporting the component).
    public var reportingAgents: Int
    /// Confirmed degraded (slow but passing) agents among them.
    public var degradedAgents: Int
    /// Failed runs / runs over the recent window (`flaky_window` runs per probe) of reporting agents.
    public var failureRatio: Double
    /// Latency of the latest passing run of each reporting (agent, probe): median and 95th percentile.
    public var latencyP50Ms: Double?
    public var latencyP95Ms: Double?
    /// A few distinct latest errors of failing agents (sorted by code, kind, step, message).
    public var sampleErrors: [ProbeError]
    /// Failing (agent, probe) series by their latest error's `code`, or its `kind` when it has no code.
    public var errorCodes: [String: Int]
    /// Agents excluded from this component as local faults, sorted, capped.
    public var localAgents: [String]
    /// Components whose probes fail because of this one (a failing step of this component in
    /// their journeys, e.g. `files` and `batch` when their login step fails), sorted.
    public var affected: [String]
    /// Components whose problem this one shows (its journeys fail at their steps, e.g. `login`
    /// for `files` while logins are rejected): the verdict reads their status, and this component
    /// has no incident of its own for it. Sorted; empty when its status is its own.
    public var affectedBy: [String]
    /// True when the problem rests on one agent's results alone (one failing agent): read it as
    /// unconfirmed by a second source.
    public var singleAgent: Bool
    /// Reporting agents in `failingRegions` (of `reportingAgents`), for texts that say how much
    /// of those regions fails ("2 of 2 agents" in eu, not "2 of 6"); nil in evidence stored
    /// before it existed.
    public var regionReportingAgents: Int?

    public init(
        failingAgents: [String] = [], failingAgentCount: Int = 0, failingRegions: [String] = [], reportingAgents: Int = 0,
        degradedAgents: Int = 0, failureRatio: Double = 0, latencyP50Ms: Double? = nil, latencyP95Ms: Double? = nil,
        sampleErrors: [ProbeError] = [], errorCodes: [String: Int] = [:], localAgents: [String] = [],
        affected: [String] = [], affectedBy: [String] = [], singleAgent: Bool = false
    ) {
        self.affected = affected
        self.affectedBy = affectedBy
        self.singleAgent = singleAgent
        self.failingAgents = failingAgents
        self.failingAgentCount = failingAgentCount
        self.failingRegions = failingRegions
        self.reportingAgents = reportingAgents
        self.degradedAgents = degradedAgents
        self.failureRatio = failureRatio
        self.latencyP50Ms = latencyP50Ms
        self.latencyP95Ms = latencyP95Ms
        self.sampleErrors = sampleErrors
        self.errorCodes = errorCodes
        self.localAgents = localAgents
    }

    enum CodingKeys: String, CodingKey {
        case failingAgents = "failing_agents"
        case failingAgentCount = "failing_agent_count"
        case failingRegions = "failing_regions"
        case reportingAgents = "reporting_agents"
        case degradedAgents = "degraded_agents"
        case failureRatio = "failure_ratio"
        case latencyP50Ms = "latency_p50_ms"
        case latencyP95Ms = "latency_p95_ms"
        case sampleErrors = "sample_errors"
        case errorCodes = "error_codes"
        case localAgents = "local_agents"
        case affected
        case affectedBy = "affected_by"
        case singleAgent = "single_agent"
        case regionReportingAgents = "region_reporting_agents"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        failingAgents = try c.decode([String].self, forKey: .failingAgents)
        failingAgentCount = try c.decode(Int.self, forKey: .failingAgentCount)
        failingRegions = try c.decode([String].self, forKey: .failingRegions)
        reportingAgents = try c.decode(Int.self, forKey: .reportingAgents)
        degradedAgents = try c.decode(Int.self, forKey: .degradedAgents)
        failureRatio = try c.decode(Double.self, forKey: .failureRatio)
        latencyP50Ms = try c.decodeIfPresent(Double.self, forKey: .latencyP50Ms)
        latencyP95Ms = try c.decodeIfPresent(Double.self, forKey: .latencyP95Ms)
        sampleErrors = try c.decode([ProbeError].self, forKey: .sampleErrors)
        errorCodes = try c.decode([String: Int].self, forKey: .errorCodes)
        localAgents = try c.decode([String].self, forKey: .localAgents)
        // Stored before these fields existed: absent means none / no.
        affected = try c.decodeIfPresent([String].self, forKey: .affected) ?? []
        affectedBy = try c.decodeIfPresent([String].self, forKey: .affectedBy) ?? []
        singleAgent = try c.decodeIfPresent(Bool.self, forKey: .singleAgent) ?? false
        regionReportingAgents = try c.decodeIfPresent(Int.self, forKey: .regionReportingAgents)
    }
}

/// The collector's current opinion of one platform component.
public struct ComponentVerdict: Sendable, Codable, Hashable {
    public var component: String
    public var status: ComponentStatus
    /// Where the problem lives; nil when operational or unknown.
    public var scope: ProblemScope?
    /// Each reporting region's own status.
    public var regions: [String: ComponentStatus]
    public var evidence: Evidence
    /// When `status` last changed.
    public var since: Date
    /// The evaluation that produced this verdict.
    public var updatedAt: Date
    /// The open incident of this component, if any.
    public var incidentID: String?
    /// A person resolved this component's incident while the fault is still measured (the
    /// incident's `conflict`); nil otherwise.
    public var conflict: String?
    /// Declared in the collector's `components:` or reported by `min_component_agents` agents.
    /// False: one agent's name for something nobody else reports, shown only to operators
    /// (`/v1/status`, `/internal`), never in `overall`, the public pages or `sonde_component_status`.
    public var known: Bool
    /// Regions whose agents have run the component's probes but none of which counts now (all
    /// silent, or local faults), sorted: nothing watches the component there. Not in `regions`
    /// and never a failing region (a blind spot is not an outage), but shown as "no data" to
    /// operators instead of vanishing (the SRE review's F4).
    public var unwatchedRegions: [String] = []

    public init(
        component: String, status: ComponentStatus, scope: ProblemScope? = nil, regions: [String: ComponentStatus] = [:],
        evidence: Evidence = Evidence(), since: Date, updatedAt: Date, incidentID: String? = nil, conflict: String? = nil, known: Bool = true,
        unwatchedRegions: [String] = []
    ) {
        self.unwatchedRegions = unwatchedRegions
        self.component = component
        self.status = status
        self.scope = scope
        self.regions = regions
        self.evidence = evidence
        self.since = since
        self.updatedAt = updatedAt
        self.incidentID = incidentID
        self.conflict = conflict
        self.known = known
    }

    enum CodingKeys: String, CodingKey {
        case component, status, scope, regions, evidence, since
        case updatedAt = "updated_at"
        case incidentID = "incident_id"
        case conflict, known
        case unwatchedRegions = "unwatched_regions"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        unwatchedRegions = try c.decodeIfPresent([String].self, forKey: .unwatchedRegions) ?? []
        component = try c.decode(String.self, forKey: .component)
        status = try c.decode(ComponentStatus.self, forKey: .status)
        scope = try c.decodeIfPresent(ProblemScope.self, forKey: .scope)
        regions = try c.decodeIfPresent([String: ComponentStatus].self, forKey: .regions) ?? [:]
        evidence = try c.decodeIfPresent(Evidence.self, forKey: .evidence) ?? Evidence()
        since = try c.decode(Date.self, forKey: .since)
        updatedAt = try c.decode(Date.self, forKey: .updatedAt)
        incidentID = try c.decodeIfPresent(String.self, forKey: .incidentID)
        conflict = try c.decodeIfPresent(String.self, forKey: .conflict)
        known = try c.decodeIfPresent(Bool.self, forKey: .known) ?? true  // written before `known` existed
    }
}

// MARK: - Incidents

/// One entry of an incident's timeline: automatic ones (author `sonde`) and people's share it.
public struct IncidentUpdate: Sendable, Codable, Hashable {
    public var time: Date
    public var status: IncidentStatus
    public var scope: ProblemScope
    public var severity: ComponentStatus
    public var message: String
    /// Who wrote it: `sonde` for the engine, else the name of the API token a person used.
    public var author: String

    /// The author of automatic updates.
    public static let automatic = "sonde"

    public init(
        time: Date, status: IncidentStatus, scope: ProblemScope, severity: ComponentStatus, message: String, author: String = Self.automatic
    ) {
        self.time = time
        self.status = status
        self.scope = scope
        self.severity = severity
        self.message = message
        self.author = author
    }

    /// Written by a person (through the API), not by the engine.
    public var isHuman: Bool { author != Self.automatic }

    enum CodingKeys: String, CodingKey { case time, status, scope, severity, message, author }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        time = try c.decode(Date.self, forKey: .time)
        status = try c.decode(IncidentStatus.self, forKey: .status)
        scope = try c.decode(ProblemScope.self, forKey: .scope)
        severity = try c.decode(ComponentStatus.self, forKey: .severity)
        message = try c.decode(String.self, forKey: .message)
        // Stored before people could write updates: the engine wrote it.
        author = try c.decodeIfPresent(String.self, forKey: .author) ?? Self.automatic
    }
}

/// One component problem, from opening to resolution. At most one open incident per component.
public struct Incident: Sendable, Codable, Hashable, Identifiable {
    /// Stable: `<component>.<opened_at unix ms>`.
    public var id: String
    public var component: String
    public var status: IncidentStatus
    /// `region` or `platform` (local problems never open incidents).
    public var scope: ProblemScope
    /// The worst confirmed status while open: `degraded_performance`, `partial_outage` or `major_outage`.
    public var severity: ComponentStatus
    public var regions: [String]
    public var agents: [String]
    public var openedAt: Date
    public var updatedAt: Date
    public var resolvedAt: Date?
    /// Evidence at the last transition.
    public var evidence: Evidence
    /// Events emitted for this incident so far; event ids are `<id>.<seq>` with seq 1…eventSeq.
    public var eventSeq: Int
    public var updates: [IncidentUpdate]
    /// Set by a person who opened it (`POST /v1/incidents`), for a problem Sonde may not see.
    public var title: String?
    /// Who opened it: `sonde`, or the token name of the person who created it.
    public var openedBy: String
    /// A person opened it and has not moved it on: as on Statuspage, their word sets the
    /// component's status (the page's `declaredImpact`, `sonde status`'s exit code).
    public var declaresImpact: Bool { openedBy != IncidentUpdate.automatic && status.isUnderWay }
    /// The person who resolved it; nil when the engine did (or it is open).
    public var resolvedBy: String?
    /// While a person's status stands against what is measured: e.g. "resolved by alice while 2
    /// of 2 agents still fail". The person's word is kept; this shows the disagreement.
    public var conflict: String?
    /// Resolved by a person while the component was not yet measured healthy: no new incident
    /// opens for it until it is (then a returning fault opens a new one).
    public var awaitingRecovery: Bool

    public init(
        id: String, component: String, status: IncidentStatus, scope: ProblemScope, severity: ComponentStatus,
        regions: [String], agents: [String], openedAt: Date, updatedAt: Date, resolvedAt: Date? = nil,
        evidence: Evidence, eventSeq: Int, updates: [IncidentUpdate], title: String? = nil, openedBy: String = IncidentUpdate.automatic,
        resolvedBy: String? = nil, conflict: String? = nil, awaitingRecovery: Bool = false
    ) {
        self.id = id
        self.component = component
        self.status = status
        self.scope = scope
        self.severity = severity
        self.regions = regions
        self.agents = agents
        self.openedAt = openedAt
        self.updatedAt = updatedAt
        self.resolvedAt = resolvedAt
        self.evidence = evidence
        self.eventSeq = eventSeq
        self.updates = updates
        self.title = title
        self.openedBy = openedBy
        self.resolvedBy = resolvedBy
        self.conflict = conflict
        self.awaitingRecovery = awaitingRecovery
    }

    enum CodingKeys: String, CodingKey {
        case id, component, status, scope, severity, regions, agents
        case openedAt = "opened_at"
        case updatedAt = "updated_at"
        case resolvedAt = "resolved_at"
        case evidence
        case eventSeq = "event_seq"
        case updates, title
        case openedBy = "opened_by"
        case resolvedBy = "resolved_by"
        case conflict
        case awaitingRecovery = "awaiting_recovery"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        component = try c.decode(String.self, forKey: .component)
        status = try c.decode(IncidentStatus.self, forKey: .status)
        scope = try c.decode(ProblemScope.self, forKey: .scope)
        severity = try c.decode(ComponentStatus.self, forKey: .severity)
        regions = try c.decode([String].self, forKey: .regions)
        agents = try c.decode([String].self, forKey: .agents)
        openedAt = try c.decode(Date.self, forKey: .openedAt)
        updatedAt = try c.decode(Date.self, forKey: .updatedAt)
        resolvedAt = try c.decodeIfPresent(Date.self, forKey: .resolvedAt)
        evidence = try c.decode(Evidence.self, forKey: .evidence)
        eventSeq = try c.decode(Int.self, forKey: .eventSeq)
        updates = try c.decode([IncidentUpdate].self, forKey: .updates)
        // Stored before people could write to incidents: the engine opened it, nobody resolved it by hand.
        title = try c.decodeIfPresent(String.self, forKey: .title)
        openedBy = try c.decodeIfPresent(String.self, forKey: .openedBy) ?? IncidentUpdate.automatic
        resolvedBy = try c.decodeIfPresent(String.self, forKey: .resolvedBy)
        conflict = try c.decodeIfPresent(String.self, forKey: .conflict)
        awaitingRecovery = try c.decodeIfPresent(Bool.self, forKey: .awaitingRecovery) ?? false
    }
}

// MARK: - Alert events

/// One webhook-worthy transition. `id` is stable: the same situation gives the same id, also after
/// a collector restart, so an outbox keyed by id never sends it twice:
/// `<incident id>.<event seq>` for incident events, `agent.local_fault.<agent>.<since unix ms>` and
/// `agent.silent.<agent>.<since unix ms>` (since = time of its last result) for agent events.
public struct AlertEvent: Sendable, Codable, Hashable, Identifiable {
    public var id: String
    public var type: AlertEventType
    public var occurredAt: Date
    public var component: String?
    /// Incident status (`investigating`, `identified`, `monitoring`, `resolved`) or agent state (`local_fault`, `silent`).
    public var status: String?
    public var scope: ProblemScope?
    public var regions: [String]
    public var agents: [String]
    public var evidence: Evidence?
    /// The incident after this transition (incident events only).
    public var incident: Incident?
    /// The agent (agent events only).
    public var agent: String?
    /// One line for people, e.g. "files: partial outage in eu (3/3 agents failing, file_expired)".
    public var summary: String
    /// Incident events: who wrote the timeline entry behind it (`sonde` or a person's token name).
    public var author: String?
    /// Incident events: that timeline entry's text, as people read it on the page.
    public var message: String?
    /// `agent.recovered`: the id of the agent event whose problem ended (PagerDuty's dedup key).
    public var resolves: String?
    /// `agent.recovered`: that event's type (`agent.silent`, `agent.local_fault`).
    public var resolvesType: AlertEventType?

    public init(
        id: String, type: AlertEventType, occurredAt: Date, component: String? = nil, status: String? = nil,
        scope: ProblemScope? = nil, regions: [String] = [], agents: [String] = [], evidence: Evidence? = nil,
        incident: Incident? = nil, agent: String? = nil, summary: String, author: String? = nil, message: String? = nil,
        resolves: String? = nil, resolvesType: AlertEventType? = nil
    ) {
        self.id = id
        self.type = type
        self.occurredAt = occurredAt
        self.component = component
        self.status = status
        self.scope = scope
        self.regions = regions
        self.agents = agents
        self.evidence = evidence
        self.incident = incident
        self.agent = agent
        self.summary = summary
        self.author = author
        self.message = message
        self.resolves = resolves
        self.resolvesType = resolvesType
    }

    enum CodingKeys: String, CodingKey {
        case id, type
        case occurredAt = "occurred_at"
        case component, status, scope, regions, agents, evidence, incident, agent, summary, author, message, resolves
        case resolvesType = "resolves_type"
    }
}

/// What one `evaluate(now:)` produced.
public struct CorrelationOutput: Sendable, Codable, Hashable {
    /// Every known component, sorted by name.
    public var verdicts: [ComponentVerdict]
    /// Every known agent, sorted by id.
    public var agents: [AgentHealth]
    /// Incidents opened, updated or resolved by this evaluation (store these).
    public var changedIncidents: [Incident]
    /// Events to send, in order, each exactly once.
    public var events: [AlertEvent]

    public init(verdicts: [ComponentVerdict], agents: [AgentHealth], changedIncidents: [Incident], events: [AlertEvent]) {
        self.verdicts = verdicts
        self.agents = agents
        self.changedIncidents = changedIncidents
        self.events = events
    }

    enum CodingKeys: String, CodingKey {
        case verdicts, agents
        case changedIncidents = "changed_incidents"
        case events
    }
}
