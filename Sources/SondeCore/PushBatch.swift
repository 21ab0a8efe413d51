import FoundationEssentials

/// The body an agent POSTs to the collector's `/v1/results` (SPEC "Signed push"). The Ed25519
/// signature covers the exact body bytes and travels in the `Sonde-Agent-Signature` header.
/// `batchID` is fixed when the batch is first spooled, so a resend after a crash carries the
/// same id and the collector acknowledges it without storing it twice.
public struct PushBatch: Codable, Sendable, Hashable {
    public var agent: String
    public var batchID: String
    public var sentAt: Date
    public var results: [ProbeResult]

    public init(agent: String, batchID: String, sentAt: Date, results: [ProbeResult]) {
        self.agent = agent
        self.batchID = batchID
        self.sentAt = sentAt
        self.results = results
    }

    enum CodingKeys: String, CodingKey {
        case agent
        case batchID = "batch_id"
        case sentAt = "sent_at"
        case results
    }
}

/// The collector's answer to an accepted (or already seen) batch.
public struct PushAck: Codable, Sendable, Hashable {
    public var batchID: String
    public var accepted: Int
    /// True when this batch id had been stored before: nothing new was stored.
    public var duplicate: Bool
    /// `fast_flush_for_s`: the collector is making a decision that the agents' newest runs speed
    /// up (a problem being confirmed or scoped, a recovery), so for this many seconds the agent
    /// pushes its results promptly (`PushProtocol.fastFlushInterval`) instead of after its
    /// `flush_interval`. Absent otherwise. Each such answer starts the period again.
    public var fastFlushSeconds: Int?
    /// `confirm_components`: components whose state the collector is deciding in this agent's
    /// region (a failure a peer saw, an open incident): the agent runs every probe that exercises
    /// one of them (its own component or a step's) at its retry pace, as if it had failed, for two
    /// of its intervals after the latest answer naming it. Like Checkly's and Datadog's
    /// double-check from other locations: one agent's failure is confirmed or refuted by its
    /// peers in seconds, not intervals. Absent when nothing is being decided.
    public var confirmComponents: [String]?

    public init(batchID: String, accepted: Int, duplicate: Bool, fastFlushSeconds: Int? = nil, confirmComponents: [String]? = nil) {
        self.batchID = batchID
        self.accepted = accepted
        self.duplicate = duplicate
        self.fastFlushSeconds = fastFlushSeconds
        self.confirmComponents = confirmComponents
    }

    /// Public for the agent, which looks for `fast_flush_for_s` before decoding an answer.
    public enum CodingKeys: String, CodingKey {
        case batchID = "batch_id"
        case accepted, duplicate
        case fastFlushSeconds = "fast_flush_for_s"
        case confirmComponents = "confirm_components"
    }
}

/// Names shared by the agent's uploader and the collector's ingest.
public enum PushProtocol {
    public static let path = "/v1/results"
    /// Base64 of the Ed25519 signature over the exact request body.
    public static let signatureHeader = "Sonde-Agent-Signature"
    /// The agent id, repeated from the body so a collector can find the key before decoding.
    public static let agentHeader = "Sonde-Agent"
    /// `t=<unix ms>, sig=<base64>`: the agent's signature over ``claim(agent:timeMs:)``, which
    /// the collector checks before reading the body. Until the body's own signature is checked, a
    /// push only claims an agent id; with a valid claim its bytes are charged to that agent's
    /// share of the push budget, and without one to the unproven pool, so nobody who only knows an
    /// agent's id can use up its share and hold its pushes back (red team F7). An agent signs a
    /// new claim every ``claimLifetime`` and the collector remembers the last one it checked, so
    /// neither signs nor verifies once per push.
    public static let claimHeader = "Sonde-Agent-Claim"
    /// How long an agent sends one claim before it signs a new one (the collector accepts a claim
    /// for `allowed_clock_skew` around its time).
    public static let claimLifetime: TimeInterval = 60

    /// What a claim signs. Its prefix keeps it from ever being a push body (those are JSON), and a
    /// push body from ever being a claim.
    public static func claim(agent: String, timeMs: Int64) -> Data {
        Data("sonde-push-claim-v1\n\(agent)\n\(timeMs)".utf8)
    }

    /// The time (unix ms) and signature of a `Sonde-Agent-Claim` value; nil when malformed.
    public static func parseClaim(_ value: String) -> (timeMs: Int64, signature: Data)? {
        var time: Int64?
        var signature: Data?
        for part in value.split(separator: ",") {
            let pair = String(part).trimmed()
            if pair.hasPrefix("t=") { time = Int64(pair.dropFirst(2)) }
            if pair.hasPrefix("sig=") { signature = Data(base64Encoded: String(pair.dropFirst(4))) }
        }
        guard let time, let signature, signature.count == 64 else { return nil }
        return (time, signature)
    }
    /// How long a `PushAck.fastFlushSeconds` period lasts from the collector's latest such answer.
    public static let fastFlushSeconds = 10
    /// The agent's pause before a push during that period, instead of `flush_interval`: results
    /// that come together still share a push, and one agent stays under the collector's default
    /// `limits.pushes_per_minute` (600) with pushes to spare for retries.
    public static let fastFlushInterval: Duration = .milliseconds(200)
    /// The longest period an agent honours, whatever a collector asks.
    public static let longestFastFlushSeconds = 60
    /// The most component names an agent takes from one answer (a hostile collector's list is cut).
    public static let longestConfirmList = 64
    /// Largest body the collector accepts by default.
    public static let defaultMaxBodyBytes = 8 * 1024 * 1024
    /// Default allowed difference between `sent_at` and the collector's clock.
    public static let defaultAllowedSkew: TimeInterval = 300
}

/// The error body every Sonde HTTP service answers with: `{"error":{"code":…,"message":…}}`.
public struct APIErrorBody: Codable, Sendable, Hashable {
    public struct Detail: Codable, Sendable, Hashable {
        public var code: String
        public var message: String
        public init(code: String, message: String) {
            self.code = code
            self.message = message
        }
    }
    public var error: Detail
    public init(code: String, message: String) { self.error = Detail(code: code, message: message) }
}
