import Correlation
import Foundation
import SondeCore

// The collector API's response bodies (snake_case JSON via SondeJSON): the server encodes them,
// the `sonde` CLI and tests decode them. A target of its own so the CLI needs no server stack.

/// `GET /v1/status`.
public struct StatusResponse: Codable, Sendable {
    public var generatedAt: Date
    /// The worst component status, for a one-word answer.
    public var overall: ComponentStatus
    public var components: [ComponentVerdict]
    public var agents: AgentsSummary
    public var openIncidents: [Incident]
    /// With PostgreSQL: which collector answered and which one leads (absent with SQLite).
    public var cluster: ClusterView?
    /// Why `open_incidents` is empty although incidents may be open: this collector cannot read
    /// the stored ones now (absent when it could).
    public var openIncidentsUnavailable: String?

    public init(
        generatedAt: Date, overall: ComponentStatus, components: [ComponentVerdict], agents: AgentsSummary, openIncidents: [Incident],
        cluster: ClusterView? = nil, openIncidentsUnavailable: String? = nil
    ) {
        self.openIncidentsUnavailable = openIncidentsUnavailable
        self.generatedAt = generatedAt
        self.overall = overall
        self.components = components
        self.agents = agents
        self.openIncidents = openIncidents
        self.cluster = cluster
    }

    enum CodingKeys: String, CodingKey {
        case generatedAt = "generated_at"
        case overall, components, agents
        case openIncidents = "open_incidents"
        case cluster
        case openIncidentsUnavailable = "open_incidents_unavailable"
    }
}

/// Several collectors on one PostgreSQL: this one's name and role, and the leader's.
public struct ClusterView: Codable, Sendable, Equatable {
    /// The collector that answered.
    public var collector: String
    /// `leader` or `standby`.
    public var role: String
    /// The leading collector as last seen (nil while nobody is known to lead).
    public var leader: String?
    /// The fencing epoch of the current leadership.
    public var epoch: Int64

    public init(collector: String, role: String, leader: String?, epoch: Int64) {
        self.collector = collector
        self.role = role
        self.leader = leader
        self.epoch = epoch
    }
}

public struct AgentsSummary: Codable, Sendable {
    public var total: Int
    public var ok: Int
    public var localFault: Int
    public var silent: Int
    public var revoked: Int
    /// Which agents those are (sorted, at most `listed` each): "is it me?" is answered by name.
    public var localFaultAgents: [String]
    public var silentAgents: [String]
    public static let listed = 50

    public init(total: Int, ok: Int, localFault: Int, silent: Int, revoked: Int, localFaultAgents: [String] = [], silentAgents: [String] = []) {
        self.total = total
        self.ok = ok
        self.localFault = localFault
        self.silent = silent
        self.revoked = revoked
        self.localFaultAgents = Array(localFaultAgents.sorted().prefix(Self.listed))
        self.silentAgents = Array(silentAgents.sorted().prefix(Self.listed))
    }

    enum CodingKeys: String, CodingKey {
        case total, ok
        case localFault = "local_fault"
        case silent, revoked
        case localFaultAgents = "local_fault_agents"
        case silentAgents = "silent_agents"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        total = try c.decode(Int.self, forKey: .total)
        ok = try c.decode(Int.self, forKey: .ok)
        localFault = try c.decode(Int.self, forKey: .localFault)
        silent = try c.decode(Int.self, forKey: .silent)
        revoked = try c.decode(Int.self, forKey: .revoked)
        // Absent from collectors before these lists.
        localFaultAgents = try c.decodeIfPresent([String].self, forKey: .localFaultAgents) ?? []
        silentAgents = try c.decodeIfPresent([String].self, forKey: .silentAgents) ?? []
    }
}

/// One entry of `GET /v1/agents`.
public struct AgentView: Codable, Sendable {
    public var id: String
    public var region: String
    public var publicKey: String
    public var revoked: Bool
    public var enrolledAt: Date
    public var lastSeen: Date?
    /// The engine's opinion: ok, local_fault, silent, revoked (nil before the first evaluation).
    public var state: AgentState?
    public var stateSince: Date?
    public var reason: String?

    public init(id: String, region: String, publicKey: String, revoked: Bool, enrolledAt: Date, lastSeen: Date? = nil, state: AgentState? = nil, stateSince: Date? = nil, reason: String? = nil) {
        self.id = id
        self.region = region
        self.publicKey = publicKey
        self.revoked = revoked
        self.enrolledAt = enrolledAt
        self.lastSeen = lastSeen
        self.state = state
        self.stateSince = stateSince
        self.reason = reason
    }

    enum CodingKeys: String, CodingKey {
        case id, region
        case publicKey = "public_key"
        case revoked
        case enrolledAt = "enrolled_at"
        case lastSeen = "last_seen"
        case state
        case stateSince = "state_since"
        case reason
    }
}

public struct AgentsResponse: Codable, Sendable {
    public var agents: [AgentView]

    public init(agents: [AgentView]) {
        self.agents = agents
    }
}

public struct IncidentsResponse: Codable, Sendable {
    public var incidents: [Incident]

    public init(incidents: [Incident]) {
        self.incidents = incidents
    }
}

public struct ResultsResponse: Codable, Sendable {
    public var results: [ProbeResult]
    public var nextCursor: String?

    public init(results: [ProbeResult], nextCursor: String? = nil) {
        self.results = results
        self.nextCursor = nextCursor
    }

    enum CodingKeys: String, CodingKey {
        case results
        case nextCursor = "next_cursor"
    }
}

/// A stored batch as `sonde verify` re-checks it: the exact signed body, base64.
public struct BatchView: Codable, Sendable {
    public var batchID: String
    public var agent: String
    public var receivedAt: Date
    public var body: String
    public var signature: String

    public init(batchID: String, agent: String, receivedAt: Date, body: String, signature: String) {
        self.batchID = batchID
        self.agent = agent
        self.receivedAt = receivedAt
        self.body = body
        self.signature = signature
    }

    enum CodingKeys: String, CodingKey {
        case batchID = "batch_id"
        case agent
        case receivedAt = "received_at"
        case body, signature
    }
}

public struct BatchesResponse: Codable, Sendable {
    public var batches: [BatchView]
    public var nextCursor: String?

    public init(batches: [BatchView], nextCursor: String? = nil) {
        self.batches = batches
        self.nextCursor = nextCursor
    }

    enum CodingKeys: String, CodingKey {
        case batches
        case nextCursor = "next_cursor"
    }
}

/// `POST /v1/alerts/test`.
public struct AlertTestResponse: Codable, Sendable {
    public var eventID: String
    public var targets: [String]

    public init(eventID: String, targets: [String]) {
        self.eventID = eventID
        self.targets = targets
    }

    enum CodingKeys: String, CodingKey {
        case eventID = "event_id"
        case targets
    }
}

/// `POST /v1/alerts/dead-letters/ID/redrive`.
public typealias RedriveResponse = AlertTestResponse

/// One delivery given up on, as `GET /v1/alerts/dead-letters` shows it.
public struct DeadLetterView: Codable, Sendable, Hashable {
    public var eventID: String
    public var eventType: String
    public var target: String
    public var attempts: Int
    public var lastError: String
    public var occurredAt: Date
    public var deadAt: Date

    public init(eventID: String, eventType: String, target: String, attempts: Int, lastError: String, occurredAt: Date, deadAt: Date) {
        self.eventID = eventID
        self.eventType = eventType
        self.target = target
        self.attempts = attempts
        self.lastError = lastError
        self.occurredAt = occurredAt
        self.deadAt = deadAt
    }

    enum CodingKeys: String, CodingKey {
        case eventID = "event_id"
        case eventType = "event_type"
        case target, attempts
        case lastError = "last_error"
        case occurredAt = "occurred_at"
        case deadAt = "dead_at"
    }
}

/// `GET /v1/alerts/dead-letters`: newest first.
public struct DeadLettersResponse: Codable, Sendable {
    public var deadLetters: [DeadLetterView]
    public init(deadLetters: [DeadLetterView]) { self.deadLetters = deadLetters }
    enum CodingKeys: String, CodingKey { case deadLetters = "dead_letters" }
}

/// `POST /v1/incidents/{id}/updates` (admin): a person's timeline entry. `status` omitted keeps
/// the incident's status.
public struct IncidentUpdateRequest: Codable, Sendable {
    public var status: String?
    public var message: String

    public init(status: String? = nil, message: String) {
        self.status = status
        self.message = message
    }
}

/// `POST /v1/incidents` (admin): an incident a person opens, one per component named
/// (`component`, or `components` for several).
public struct IncidentCreateRequest: Codable, Sendable {
    public var component: String?
    public var components: [String]?
    public var title: String?
    public var message: String
    /// investigating (default), identified or monitoring.
    public var status: String?
    /// degraded_performance, partial_outage (default) or major_outage.
    public var severity: String?
    /// Empty or omitted: platform-wide.
    public var regions: [String]?

    public init(
        component: String? = nil, components: [String]? = nil, title: String? = nil, message: String, status: String? = nil,
        severity: String? = nil, regions: [String]? = nil
    ) {
        self.component = component
        self.components = components
        self.title = title
        self.message = message
        self.status = status
        self.severity = severity
        self.regions = regions
    }
}
