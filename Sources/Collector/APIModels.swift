import CollectorStore
import Correlation
import Foundation
import SondeCore

// The collector API's response bodies (snake_case JSON via SondeJSON). The `sonde` CLI decodes
// the same shapes (Sources/SondeCLI/APIModels.swift).

/// `GET /v1/status`.
public struct StatusResponse: Codable, Sendable {
    public var generatedAt: Date
    /// The worst component status, for a one-word answer.
    public var overall: ComponentStatus
    public var components: [ComponentVerdict]
    public var agents: AgentsSummary
    public var openIncidents: [Incident]

    enum CodingKeys: String, CodingKey {
        case generatedAt = "generated_at"
        case overall, components, agents
        case openIncidents = "open_incidents"
    }
}

public struct AgentsSummary: Codable, Sendable {
    public var total: Int
    public var ok: Int
    public var localFault: Int
    public var silent: Int
    public var revoked: Int

    enum CodingKeys: String, CodingKey {
        case total, ok
        case localFault = "local_fault"
        case silent, revoked
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
}

public struct IncidentsResponse: Codable, Sendable {
    public var incidents: [Incident]
}

public struct ResultsResponse: Codable, Sendable {
    public var results: [ProbeResult]
    public var nextCursor: String?

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

    enum CodingKeys: String, CodingKey {
        case batches
        case nextCursor = "next_cursor"
    }
}

/// `POST /v1/alerts/test`.
public struct AlertTestResponse: Codable, Sendable {
    public var eventID: String
    public var targets: [String]

    enum CodingKeys: String, CodingKey {
        case eventID = "event_id"
        case targets
    }
}
