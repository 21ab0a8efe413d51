import CollectorAPI
import Correlation
import Foundation
import SondeCore

// MARK: - Records

/// An enrolled agent as the collector knows it.
public struct AgentRecord: Sendable, Codable, Hashable {
    public var id: String
    public var region: String
    /// Base64 of the agent's 32-byte Ed25519 public key.
    public var publicKey: String
    public var revoked: Bool
    public var enrolledAt: Date
    public var lastSeen: Date?

    public init(id: String, region: String, publicKey: String, revoked: Bool = false, enrolledAt: Date = Date(), lastSeen: Date? = nil) {
        self.id = id
        self.region = region
        self.publicKey = publicKey
        self.revoked = revoked
        self.enrolledAt = enrolledAt
        self.lastSeen = lastSeen
    }

    enum CodingKeys: String, CodingKey {
        case id, region
        case publicKey = "public_key"
        case revoked
        case enrolledAt = "enrolled_at"
        case lastSeen = "last_seen"
    }
}

/// One accepted push, kept byte for byte with its signature so `sonde verify` can re-check it.
public struct BatchRecord: Sendable, Hashable {
    public var batchID: String
    public var agent: String
    public var receivedAt: Date
    /// The exact request body the agent signed.
    public var body: Data
    /// The `Sonde-Agent-Signature` header value (base64 Ed25519 signature of `body`).
    public var signature: String
    /// Results started before this are stored but left out of uptime: the agent was not enrolled
    /// yet (ingest sets it to the enrolment less the allowed clock skew). Not stored.
    public var uptimeFrom: Date?

    public init(batchID: String, agent: String, receivedAt: Date, body: Data, signature: String, uptimeFrom: Date? = nil) {
        self.batchID = batchID
        self.agent = agent
        self.receivedAt = receivedAt
        self.body = body
        self.signature = signature
        self.uptimeFrom = uptimeFrom
    }
}

/// What happened to a batch handed to `ingest`.
public enum IngestOutcome: Sendable, Hashable {
    /// Stored now. `new`: the positions (in the batch's results) of the results stored for the
    /// first time. The others were stored before under another batch id (an agent that lost its
    /// batch record to a power loss sends them again in a new batch): kept once, so they must not
    /// be counted, correlated or shown again either.
    case stored(new: IndexSet)
    /// Its batch id had been stored before; nothing was written.
    case duplicate

    /// Stored, every one of `count` results new (the usual case).
    public static func stored(all count: Int) -> IngestOutcome { .stored(new: IndexSet(integersIn: 0..<count)) }

    /// The positions of `results` whose key is in `inserted` (the rows a store's insert really
    /// added), each key once: a result repeated within one batch is new at its first position.
    /// (`ResultCursor` is a result's identity: its start and id, the key of the `results` tables.)
    public static func newPositions(of results: [ProbeResult], inserted: Set<ResultCursor>) -> IndexSet {
        var seen = Set<ResultCursor>()
        var positions = IndexSet()
        for (position, result) in results.enumerated() {
            let key = ResultCursor(after: result)
            if inserted.contains(key), seen.insert(key).inserted { positions.insert(position) }
        }
        return positions
    }
}

/// Runs per component, UTC day and agent, added to `result_agent_days` once per ingest transaction.
struct DayCounts {
    struct Key: Hashable, Comparable {
        var component: String
        var day: Int64
        var agent: String
        static func < (a: Key, b: Key) -> Bool { (a.component, a.day, a.agent) < (b.component, b.day, b.agent) }
    }
    var counts: [Key: (total: Int64, failed: Int64, degraded: Int64)] = [:]

    /// One run, counted for each component it decides (``CorrelationEngine/outcomes(of:)``): a
    /// step of another component that failed is that component's downtime, not the probe's.
    /// Retries (`"retry": true`) are not counted: they come only after a failure (or while the
    /// collector asks to confirm one), up to 4 per interval, so counting them weighed each
    /// failure up to 4 times (found by the first-use review: 81.36 % where the scheduled runs
    /// gave 89.47 %). Uptime is the scheduled runs' passing share, as a check's uptime is.
    /// Runs started before `from` (the agent's enrolment, see ``BatchRecord/uptimeFrom``) are
    /// stored but not counted: an agent reports on the days it watched, not on the days before.
    mutating func count(_ result: ProbeResult, from: Date? = nil) {
        guard result.retry != true else { return }
        if let from, result.startedAt < from { return }
        let day = UptimeDay.dayNumber(result.startedAt)
        for (component, outcome) in CorrelationEngine.outcomes(of: result) {
            let key = Key(component: component, day: day, agent: result.agent)
            var value = counts[key] ?? (0, 0, 0)
            value.total += 1
            if outcome == .failed { value.failed += 1 }
            if outcome == .degraded { value.degraded += 1 }
            counts[key] = value
        }
    }

    mutating func add(_ other: DayCounts) {
        for (key, value) in other.counts {
            let old = counts[key] ?? (0, 0, 0)
            counts[key] = (old.total + value.total, old.failed + value.failed, old.degraded + value.degraded)
        }
    }

    /// The rows as stores read them back.
    var rows: [AgentDayCount] {
        counts.map { AgentDayCount(component: $0.key.component, day: $0.key.day, agent: $0.key.agent, total: $0.value.total, failed: $0.value.failed, degraded: $0.value.degraded) }
    }
}

/// Filters of `GET /v1/results`; results come newest first.
public struct ResultQuery: Sendable, Hashable {
    public var probe: String?
    public var component: String?
    public var agent: String?
    public var region: String?
    public var outcome: Outcome?
    /// Inclusive lower bound on `started_at`.
    public var since: Date?
    /// Exclusive upper bound on `started_at`.
    public var until: Date?
    public var limit: Int
    /// `next_cursor` of the previous page.
    public var cursor: ResultCursor?

    public init(
        probe: String? = nil, component: String? = nil, agent: String? = nil, region: String? = nil, outcome: Outcome? = nil,
        since: Date? = nil, until: Date? = nil, limit: Int = 100, cursor: ResultCursor? = nil
    ) {
        self.probe = probe
        self.component = component
        self.agent = agent
        self.region = region
        self.outcome = outcome
        self.since = since
        self.until = until
        self.limit = limit
        self.cursor = cursor
    }

    /// True when `result` passes every filter (cursor and limit aside).
    public func matches(_ result: ProbeResult) -> Bool {
        if let probe, result.probe != probe { return false }
        if let component, result.component != component { return false }
        if let agent, result.agent != agent { return false }
        if let region, result.region != region { return false }
        if let outcome, result.outcome != outcome { return false }
        if let since, result.startedAt.epochMs < since.epochMs { return false }
        if let until, result.startedAt.epochMs >= until.epochMs { return false }
        return true
    }
}

public struct ResultPage: Sendable {
    public var results: [ProbeResult]
    /// Pass as `cursor` to get the next (older) page; nil on the last page.
    public var nextCursor: ResultCursor?
    /// Bytes of each result's stored JSON, in the order of `results` (empty where the store keeps
    /// no JSON): lets the API end a page by size as well as by count.
    public var sizes: [Int]
    public init(results: [ProbeResult], nextCursor: ResultCursor?, sizes: [Int] = []) {
        self.results = results
        self.nextCursor = nextCursor
        self.sizes = sizes
    }
    /// A page from a query that asked for `limit + 1` rows: the extra row only says there is more.
    /// `sizes`: each fetched row's stored JSON bytes, in the same order.
    public init(fetched: [ProbeResult], sizes: [Int], limit: Int) {
        guard fetched.count > limit else {
            self.init(results: fetched, nextCursor: nil, sizes: sizes)
            return
        }
        let page = Array(fetched.prefix(limit))
        self.init(results: page, nextCursor: page.last.map(ResultCursor.init(after:)), sizes: Array(sizes.prefix(limit)))
    }
}

/// The position of a result in newest-first order (started_at, then id), as an opaque cursor.
public struct ResultCursor: Sendable, Hashable {
    public var startedAtMs: Int64
    public var id: String

    public init(startedAtMs: Int64, id: String) {
        self.startedAtMs = startedAtMs
        self.id = id
    }

    public init(after result: ProbeResult) { self.init(startedAtMs: result.startedAt.epochMs, id: result.id) }

    /// Parses a cursor made by `text`; nil when it is not one.
    public init?(_ text: String) {
        guard let data = Data(base64Encoded: text), let plain = String(data: data, encoding: .utf8),
            let bar = plain.firstIndex(of: "|"), let ms = Int64(plain[..<bar])
        else { return nil }
        startedAtMs = ms
        id = String(plain[plain.index(after: bar)...])
    }

    public var text: String { Data("\(startedAtMs)|\(id)".utf8).base64EncodedString() }

    /// True when `result` comes after this position in newest-first order.
    public func isBefore(_ result: ProbeResult) -> Bool {
        let ms = result.startedAt.epochMs
        return ms < startedAtMs || (ms == startedAtMs && result.id < id)
    }
}

/// An incident as stored: the engine's JSON plus the columns the API filters on.
public struct IncidentRecord: Sendable, Hashable {
    public var id: String
    public var component: String
    public var status: String
    public var openedAt: Date
    public var updatedAt: Date
    public var resolvedAt: Date?
    public var json: Data

    public init(id: String, component: String, status: String, openedAt: Date, updatedAt: Date, resolvedAt: Date?, json: Data) {
        self.id = id
        self.component = component
        self.status = status
        self.openedAt = openedAt
        self.updatedAt = updatedAt
        self.resolvedAt = resolvedAt
        self.json = json
    }

    public var isOpen: Bool { status != "resolved" }
}

/// Which incidents `incidents(_:limit:)` returns.
public enum IncidentFilter: String, Sendable, CaseIterable {
    case open, resolved, all
}

/// An alert event in the durable outbox. `id` is stable: a re-derived event has the same id and
/// is stored once.
public struct OutboxEvent: Sendable, Hashable {
    public var id: String
    public var type: String
    public var occurredAt: Date
    /// The event's JSON as the engine produced it.
    public var payload: Data

    public init(id: String, type: String, occurredAt: Date, payload: Data) {
        self.id = id
        self.type = type
        self.occurredAt = occurredAt
        self.payload = payload
    }
}

public enum DeliveryStatus: String, Sendable, Codable {
    case pending, delivered
    /// Given up on (refused with a non-retryable 4xx, or out of attempts or time): in the
    /// dead-letter table until re-driven.
    case dead
}

/// A delivery given up on: a row of the `dead_letters` table, shown by `sonde alert
/// dead-letters` and re-driven by `sonde alert redrive` (the API's view is the record itself).
public typealias DeadLetterRecord = DeadLetterView

/// The names an agent's results have used (for the per-agent cardinality caps).
public struct SeriesNames: Sendable, Hashable {
    public var agent: String
    public var probe: String
    public var component: String
    public init(agent: String, probe: String, component: String) {
        self.agent = agent
        self.probe = probe
        self.component = component
    }
}

/// One event for one webhook target.
public struct DeliveryRecord: Sendable, Hashable {
    public var event: OutboxEvent
    public var target: String
    public var status: DeliveryStatus
    public var attempts: Int
    public var nextAttemptAt: Date
    public var lastError: String?
    public var deliveredAt: Date?

    public init(
        event: OutboxEvent, target: String, status: DeliveryStatus, attempts: Int, nextAttemptAt: Date, lastError: String?,
        deliveredAt: Date?
    ) {
        self.event = event
        self.target = target
        self.status = status
        self.attempts = attempts
        self.nextAttemptAt = nextAttemptAt
        self.lastError = lastError
        self.deliveredAt = deliveredAt
    }
}

/// A delivery to create: this event for this target.
public struct DeliveryKey: Sendable, Hashable {
    public var eventID: String
    public var target: String
    public init(eventID: String, target: String) {
        self.eventID = eventID
        self.target = target
    }
}

/// Everything one evaluation changed, committed in one transaction.
public struct EvaluationCommit: Sendable {
    public var incidents: [IncidentRecord]
    public var events: [OutboxEvent]
    /// Deliveries to create; ignored when they exist (so a re-derived event is never re-sent).
    public var deliveries: [DeliveryKey]
    /// Agent id → the engine's agent-health JSON.
    public var agentStates: [String: Data]

    public init(incidents: [IncidentRecord] = [], events: [OutboxEvent] = [], deliveries: [DeliveryKey] = [], agentStates: [String: Data] = [:]) {
        self.incidents = incidents
        self.events = events
        self.deliveries = deliveries
        self.agentStates = agentStates
    }

    public var isEmpty: Bool { incidents.isEmpty && events.isEmpty && deliveries.isEmpty && agentStates.isEmpty }
}

/// Results of one component in one hour, for the status page's timeline.
public struct TimelineBucket: Sendable, Hashable {
    public var component: String
    public var hourStart: Date
    public var total: Int
    public var failed: Int
    public var degraded: Int

    public init(component: String, hourStart: Date, total: Int, failed: Int, degraded: Int) {
        self.component = component
        self.hourStart = hourStart
        self.total = total
        self.failed = failed
        self.degraded = degraded
    }
}

/// One agent's runs of one component on one UTC day, as the rollup keeps them. `agent` is empty
/// for rows of the older rollup (`result_days`, from before runs were kept per agent, or written
/// by an older collector during a rolling upgrade): those count as they are, without a weight.
struct AgentDayCount: Sendable, Hashable {
    var component: String
    var day: Int64
    var agent: String
    var total: Int64
    var failed: Int64
    var degraded: Int64
}

/// Results of one component on one UTC day, for uptime. Kept in a daily rollup maintained at
/// ingest, so pruning raw results (`retention_days`) does not erase the page's 90-day history.
public struct UptimeDay: Sendable, Hashable {
    public var component: String
    /// Midnight UTC starting the day.
    public var day: Date
    /// Runs stored, failed and degraded, over all agents.
    public var total: Int
    public var failed: Int
    public var degraded: Int
    /// Agents whose runs count (rows of the older rollup count as one).
    public var agents: Int
    /// Runs counted once each agent's weight is bounded (``combine(_:)``), and how many of those passed.
    public var counted: Double
    public var passed: Double

    /// One agent's day (or the older rollup's), counted as it is.
    public init(component: String, day: Date, total: Int, failed: Int, degraded: Int) {
        self.component = component
        self.day = day
        self.total = total
        self.failed = failed
        self.degraded = degraded
        self.agents = 1
        self.counted = Double(total)
        self.passed = Double(total - failed)
    }

    /// Runs that did not fail (degraded runs passed, slowly) over all runs, each agent's runs
    /// weighing at most as much as the median agent's.
    public var uptime: Double { counted <= 0 ? 1 : passed / counted }

    /// The days of per-agent rows, sorted by component and day. One agent's runs of a day weigh at
    /// most as many runs as the lower-median agent made that day (its pass share is kept): one
    /// agent cannot rewrite a day's uptime by sending more runs, made up or retried, than its peers
    /// (red team F3: 29,000 made-up failures took a day from 100 % to 10.7 %). With n agents one
    /// agent moves a day by at most about 1/n, as its share of the fleet. The peer pool of the
    /// correlation engine bounds an agent the same way (`AgentComponent.weighed`).
    static func combine(_ rows: [AgentDayCount]) -> [UptimeDay] {
        let byDay = Dictionary(grouping: rows) { DayKey(component: $0.component, day: $0.day) }
        return byDay.map { key, rows in
            var agents: [String: (total: Int64, failed: Int64, degraded: Int64)] = [:]
            var legacy = (total: Int64(0), failed: Int64(0), degraded: Int64(0))
            for row in rows {
                if row.agent.isEmpty {
                    legacy = (legacy.total + row.total, legacy.failed + row.failed, legacy.degraded + row.degraded)
                } else {
                    let old = agents[row.agent] ?? (0, 0, 0)
                    agents[row.agent] = (old.total + row.total, old.failed + row.failed, old.degraded + row.degraded)
                }
            }
            let sizes = agents.values.map(\.total).filter { $0 > 0 }.sorted()
            let cap = sizes.isEmpty ? 0 : Double(sizes[(sizes.count - 1) / 2])
            var day = UptimeDay(
                component: key.component, day: Date(epochMs: key.day * 86_400_000), total: Int(legacy.total), failed: Int(legacy.failed),
                degraded: Int(legacy.degraded))
            day.agents = legacy.total > 0 ? 1 : 0
            for counts in agents.values where counts.total > 0 {
                let weight = min(1, cap / Double(counts.total))
                day.total += Int(counts.total)
                day.failed += Int(counts.failed)
                day.degraded += Int(counts.degraded)
                day.agents += 1
                day.counted += Double(counts.total) * weight
                day.passed += Double(counts.total - counts.failed) * weight
            }
            return day
        }
        .sorted { ($0.component, $0.day) < ($1.component, $1.day) }
    }

    private struct DayKey: Hashable {
        var component: String
        var day: Int64
    }

    /// The UTC day number (days since 1970) of a time.
    public static func dayNumber(_ date: Date) -> Int64 {
        let ms = date.epochMs
        return ms >= 0 ? ms / 86_400_000 : (ms - 86_399_999) / 86_400_000
    }

    /// How long daily rows are kept, whatever `retention_days` says.
    public static let keptDays: Int64 = 400
}

/// Rows removed by one retention pass.
public struct PruneReport: Sendable, Hashable {
    public var results = 0
    public var batches = 0
    public var incidents = 0
    public var events = 0
    public init() {}
    public var total: Int { results + batches + incidents + events }
}

/// A storage failure the operator can act on.
public struct StorageError: Error, CustomStringConvertible, Sendable {
    public var description: String
    public init(_ description: String) { self.description = description }
}

/// An agent enrolment refused because its public key already belongs to another agent.
public struct DuplicateKeyError: Error, CustomStringConvertible, Sendable {
    public var agent: String
    public var holder: String
    public init(agent: String, holder: String) {
        self.agent = agent
        self.holder = holder
    }
    public var description: String {
        "agent \(agent)'s public key is already enrolled as agent \(holder); a key belongs to one agent: make a new one with `sonde-agent keygen`"
    }
}

// MARK: - The protocol

/// One batch waiting to be stored (see `CollectorStorage.ingest(group:)`).
public struct PendingBatch: Sendable {
    public var batch: BatchRecord
    public var results: [ProbeResult]
    /// Where each result's JSON is in `batch.body` (byte offsets), when the decoder knows; a
    /// store that keeps the body then needs no copy of each result.
    public var resultRanges: [Range<Int>]?
    public init(batch: BatchRecord, results: [ProbeResult], resultRanges: [Range<Int>]? = nil) {
        self.batch = batch
        self.results = results
        self.resultRanges = resultRanges
    }
}

extension CollectorStorage {
    /// One batch at a time, for stores without a cheaper way.
    public func ingest(group: [PendingBatch]) async throws -> [Result<IngestOutcome, any Error>] {
        var outcomes: [Result<IngestOutcome, any Error>] = []
        for pending in group {
            do { outcomes.append(.success(try await ingest(batch: pending.batch, results: pending.results))) } catch { outcomes.append(.failure(error)) }
        }
        return outcomes
    }
}

/// Everything the collector keeps. Implementations: `SQLiteCollectorStore` (one file, WAL) and
/// `InMemoryCollectorStore` (tests, demos without a disk).
public protocol CollectorStorage: Sendable {
    /// Creates or upgrades the schema; idempotent. Call before serving.
    func migrate() async throws

    // Agents
    /// Enrols or updates an agent. Throws `StorageError` when another agent id holds the same
    /// public key (revoked or not): a key belongs to one agent, so revoking it revokes the key.
    func upsertAgent(_ agent: AgentRecord) async throws
    /// Marks an agent revoked; false when no such agent.
    func revokeAgent(id: String) async throws -> Bool
    func agents() async throws -> [AgentRecord]
    func agent(id: String) async throws -> AgentRecord?

    // Ingest
    /// Stores the batch and its results in one transaction, or nothing when the batch id exists.
    /// Also sets the agent's `last_seen`.
    func ingest(batch: BatchRecord, results: [ProbeResult]) async throws -> IngestOutcome
    /// Group commit: stores several batches in one transaction, each all-or-nothing on its own
    /// (one outcome or error per batch, in order). Nothing is acknowledged before the commit.
    func ingest(group: [PendingBatch]) async throws -> [Result<IngestOutcome, any Error>]
    func results(_ query: ResultQuery) async throws -> ResultPage
    /// The newest `limit` results started at or after `since`, oldest first (to rebuild the
    /// engine at start-up: past the limit, the oldest are the ones left out, not the newest).
    func results(since: Date, limit: Int) async throws -> [ProbeResult]
    /// Batches received at or after `since` and after the `after` position (received_at ms,
    /// batch id), oldest first, at most `limit`.
    func batches(since: Date?, after: ResultCursor?, limit: Int) async throws -> [BatchRecord]
    /// Results per component and hour, of runs started in [since, until), sorted by component
    /// and hour.
    func timeline(since: Date, until: Date) async throws -> [TimelineBucket]
    /// The daily rollup from the UTC day holding `since` on, sorted by component and day
    /// (``UptimeDay/combine(_:)``). Every stored result counts once in its component's day (a
    /// duplicate ignored at ingest does not), for the agent that ran it.
    func uptimeDays(since: Date) async throws -> [UptimeDay]
    /// Every (agent, probe, component) stored so far.
    func seriesNames() async throws -> [SeriesNames]
    func resultCount() async throws -> Int

    // Incidents, events, agent states
    func commit(_ evaluation: EvaluationCommit) async throws
    func incidents(_ filter: IncidentFilter, limit: Int) async throws -> [IncidentRecord]
    func incident(id: String) async throws -> IncidentRecord?
    func agentStates() async throws -> [String: Data]

    // Deliveries
    /// The oldest (by event time) pending delivery of a target, whatever its next attempt time.
    func nextPendingDelivery(target: String) async throws -> DeliveryRecord?
    func markDelivered(eventID: String, target: String, at: Date) async throws
    func markFailed(eventID: String, target: String, attempts: Int, nextAttemptAt: Date, error: String) async throws
    /// Moves a pending delivery to the dead-letter table; the target's later events go on.
    func markDead(eventID: String, target: String, attempts: Int, error: String, at: Date) async throws
    /// Dead letters, newest first.
    func deadLetters(limit: Int) async throws -> [DeadLetterRecord]
    func deadLetterCount() async throws -> Int
    /// Puts an event's dead letters (one target's, or all) back in their queues with fresh
    /// attempts; returns the targets re-driven.
    func redrive(eventID: String, target: String?) async throws -> [String]
    /// Moves a target's deliveries and dead letters from its old key to `new` (an unnamed
    /// target's key stopped being its URL); a delivery already under `new` stays as it is.
    func renameDeliveryTarget(from old: String, to new: String) async throws
    /// Proves storage can still write (a tiny committed write); throws when it cannot.
    func checkWritable() async throws
    /// Every delivery, oldest event first (for tests and diagnostics).
    func deliveries() async throws -> [DeliveryRecord]

    /// Removes results, batches, resolved incidents and fully delivered events older than `cutoff`.
    func prune(before cutoff: Date) async throws -> PruneReport
}

extension Date {
    /// Milliseconds since 1970, as stored in INTEGER columns.
    package var epochMs: Int64 { Int64((timeIntervalSince1970 * 1000).rounded()) }
    package init(epochMs: Int64) { self.init(timeIntervalSince1970: Double(epochMs) / 1000) }
}
