import CollectorAPI
import Foundation
import SondeCore

/// A store that keeps everything in memory, with the same semantics as the SQLite one (duplicate
/// batches, stable event ids, ordered deliveries). For tests and throw-away demos.
public actor InMemoryCollectorStore: CollectorStorage {
    private var agentsByID: [String: AgentRecord] = [:]
    private var batchesByID: [String: BatchRecord] = [:]
    private var batchOrder: [String] = []
    private var resultsByID: [String: ProbeResult] = [:]
    private var incidentsByID: [String: IncidentRecord] = [:]
    private var eventsByID: [String: (event: OutboxEvent, createdAt: Date)] = [:]
    private var deliveryRows: [DeliveryKey: DeliveryRecord] = [:]
    private var states: [String: Data] = [:]
    private var dead: [DeliveryKey: DeadLetterRecord] = [:]
    /// The daily rollup, by component, UTC day number and agent; pruned only after `UptimeDay.keptDays`.
    private var days = DayCounts()

    public init() {}

    public func migrate() async throws {}

    // MARK: - Agents

    public func upsertAgent(_ agent: AgentRecord) async throws {
        if let holder = agentsByID.values.first(where: { $0.publicKey == agent.publicKey && $0.id != agent.id }) {
            throw DuplicateKeyError(agent: agent.id, holder: holder.id)
        }
        var record = agent
        if let existing = agentsByID[agent.id] {
            record.enrolledAt = existing.enrolledAt
            record.lastSeen = existing.lastSeen
        }
        agentsByID[agent.id] = record
    }

    public func revokeAgent(id: String) async throws -> Bool {
        guard agentsByID[id] != nil else { return false }
        agentsByID[id]?.revoked = true
        return true
    }

    public func agents() async throws -> [AgentRecord] {
        agentsByID.values.sorted { ($0.region, $0.id) < ($1.region, $1.id) }
    }

    public func agent(id: String) async throws -> AgentRecord? { agentsByID[id] }

    // MARK: - Ingest

    public func ingest(batch: BatchRecord, results: [ProbeResult]) async throws -> IngestOutcome {
        guard batchesByID[batch.batchID] == nil else { return .duplicate }
        batchesByID[batch.batchID] = batch
        batchOrder.append(batch.batchID)
        var new = IndexSet()
        var counts = DayCounts()
        for (position, result) in results.enumerated() where resultsByID[result.id] == nil {
            new.insert(position)
            resultsByID[result.id] = result
            counts.count(result, from: batch.uptimeFrom)
        }
        days.add(counts)
        if var agent = agentsByID[batch.agent] {
            agent.lastSeen = max(agent.lastSeen ?? .distantPast, batch.receivedAt)
            agentsByID[batch.agent] = agent
        }
        return .stored(new: new)
    }

    private func newestFirst(_ a: ProbeResult, _ b: ProbeResult) -> Bool {
        let (ma, mb) = (a.startedAt.epochMs, b.startedAt.epochMs)
        return ma != mb ? ma > mb : a.id > b.id
    }

    public func results(_ query: ResultQuery) async throws -> ResultPage {
        let limit = max(1, query.limit)
        var matching = resultsByID.values.filter { query.matches($0) && (query.cursor?.isBefore($0) ?? true) }
        matching.sort(by: newestFirst)
        let page = Array(matching.prefix(limit))
        let next = matching.count > limit ? page.last.map(ResultCursor.init(after:)) : nil
        return ResultPage(results: page, nextCursor: next)
    }

    public func results(since: Date, limit: Int) async throws -> [ProbeResult] {
        Array(resultsByID.values.filter { $0.startedAt.epochMs >= since.epochMs }.sorted { newestFirst($1, $0) }.suffix(limit))
    }

    public func batches(since: Date?, after: ResultCursor?, limit: Int) async throws -> [BatchRecord] {
        let floor = since?.epochMs ?? 0
        func isAfter(_ batch: BatchRecord) -> Bool {
            guard let after else { return true }
            let ms = batch.receivedAt.epochMs
            return ms > after.startedAtMs || (ms == after.startedAtMs && batch.batchID > after.id)
        }
        return Array(
            batchOrder.compactMap { batchesByID[$0] }.filter { $0.receivedAt.epochMs >= floor && isAfter($0) }
                .sorted { ($0.receivedAt.epochMs, $0.batchID) < ($1.receivedAt.epochMs, $1.batchID) }.prefix(limit))
    }

    public func timeline(since: Date, until: Date) async throws -> [TimelineBucket] {
        var buckets: [String: TimelineBucket] = [:]
        for result in resultsByID.values where result.startedAt.epochMs >= since.epochMs && result.startedAt.epochMs < until.epochMs {
            let hour = result.startedAt.epochMs / 3_600_000
            let key = "\(result.component)|\(hour)"
            var bucket = buckets[key] ?? TimelineBucket(component: result.component, hourStart: Date(epochMs: hour * 3_600_000), total: 0, failed: 0, degraded: 0)
            bucket.total += 1
            if result.outcome == .failed { bucket.failed += 1 }
            if result.outcome == .degraded { bucket.degraded += 1 }
            buckets[key] = bucket
        }
        return buckets.values.sorted { ($0.component, $0.hourStart) < ($1.component, $1.hourStart) }
    }

    public func uptimeDays(since: Date) async throws -> [UptimeDay] {
        let first = UptimeDay.dayNumber(since)
        return UptimeDay.combine(days.rows.filter { $0.day >= first })
    }

    public func resultCount() async throws -> Int { resultsByID.count }

    public func seriesNames() async throws -> [SeriesNames] {
        Array(Set(resultsByID.values.map { SeriesNames(agent: $0.agent, probe: $0.probe, component: $0.component) }))
    }

    // MARK: - Incidents, events, agent states

    public func commit(_ evaluation: EvaluationCommit) async throws {
        for incident in evaluation.incidents {
            var record = incident
            if let existing = incidentsByID[incident.id] { record.openedAt = existing.openedAt }
            incidentsByID[incident.id] = record
        }
        let now = Date()
        for event in evaluation.events where eventsByID[event.id] == nil { eventsByID[event.id] = (event, now) }
        for key in evaluation.deliveries where deliveryRows[key] == nil {
            guard let event = eventsByID[key.eventID]?.event else { continue }
            deliveryRows[key] = DeliveryRecord(
                event: event, target: key.target, status: .pending, attempts: 0, nextAttemptAt: now, lastError: nil, deliveredAt: nil)
        }
        for (agent, json) in evaluation.agentStates { states[agent] = json }
    }

    public func incidents(_ filter: IncidentFilter, limit: Int) async throws -> [IncidentRecord] {
        let chosen = incidentsByID.values.filter {
            switch filter {
            case .open: $0.isOpen
            case .resolved: !$0.isOpen
            case .all: true
            }
        }
        return Array(chosen.sorted { ($0.openedAt, $1.id) > ($1.openedAt, $0.id) }.prefix(limit))
    }

    public func incident(id: String) async throws -> IncidentRecord? { incidentsByID[id] }

    public func agentStates() async throws -> [String: Data] { states }

    // MARK: - Deliveries

    private func ordered(_ rows: some Sequence<DeliveryRecord>) -> [DeliveryRecord] {
        rows.sorted { ($0.event.occurredAt.epochMs, $0.event.id, $0.target) < ($1.event.occurredAt.epochMs, $1.event.id, $1.target) }
    }

    public func nextPendingDelivery(target: String) async throws -> DeliveryRecord? {
        ordered(deliveryRows.values.filter { $0.target == target && $0.status == .pending }).first
    }

    public func markDelivered(eventID: String, target: String, at: Date) async throws {
        let key = DeliveryKey(eventID: eventID, target: target)
        deliveryRows[key]?.status = .delivered
        deliveryRows[key]?.attempts += 1
        deliveryRows[key]?.deliveredAt = at
        deliveryRows[key]?.lastError = nil
    }

    public func markFailed(eventID: String, target: String, attempts: Int, nextAttemptAt: Date, error: String) async throws {
        let key = DeliveryKey(eventID: eventID, target: target)
        guard deliveryRows[key]?.status == .pending else { return }
        deliveryRows[key]?.attempts = attempts
        deliveryRows[key]?.nextAttemptAt = nextAttemptAt
        deliveryRows[key]?.lastError = error
    }

    public func deliveries() async throws -> [DeliveryRecord] { ordered(deliveryRows.values) }

    public func markDead(eventID: String, target: String, attempts: Int, error: String, at: Date) async throws {
        let key = DeliveryKey(eventID: eventID, target: target)
        guard let row = deliveryRows[key], row.status == .pending else { return }
        deliveryRows[key]?.status = .dead
        deliveryRows[key]?.attempts = attempts
        deliveryRows[key]?.lastError = error
        dead[key] = DeadLetterRecord(
            eventID: eventID, eventType: row.event.type, target: target, attempts: attempts, lastError: error, occurredAt: row.event.occurredAt, deadAt: at)
    }

    public func deadLetters(limit: Int) async throws -> [DeadLetterRecord] {
        Array(dead.values.sorted { ($0.deadAt, $0.eventID) > ($1.deadAt, $1.eventID) }.prefix(limit))
    }

    public func deadLetterCount() async throws -> Int { dead.count }

    public func redrive(eventID: String, target: String?) async throws -> [String] {
        let keys = dead.keys.filter { $0.eventID == eventID && (target == nil || $0.target == target) }
        for key in keys {
            dead[key] = nil
            deliveryRows[key]?.status = .pending
            deliveryRows[key]?.attempts = 0
            deliveryRows[key]?.nextAttemptAt = Date()
        }
        return keys.map(\.target).sorted()
    }

    public func renameDeliveryTarget(from old: String, to new: String) async throws {
        for key in deliveryRows.keys where key.target == old {
            let renamed = DeliveryKey(eventID: key.eventID, target: new)
            guard deliveryRows[renamed] == nil, var row = deliveryRows.removeValue(forKey: key) else { continue }
            row.target = new
            deliveryRows[renamed] = row
            if var letter = dead.removeValue(forKey: key) {
                letter.target = new
                dead[renamed] = letter
            }
        }
    }

    public func checkWritable() async throws {}

    // MARK: - Retention

    public func prune(before cutoff: Date) async throws -> PruneReport {
        var report = PruneReport()
        let ms = cutoff.epochMs
        let oldResults = resultsByID.values.filter { $0.startedAt.epochMs < ms }.map(\.id)
        oldResults.forEach { resultsByID[$0] = nil }
        report.results = oldResults.count
        let oldBatches = batchesByID.values.filter { $0.receivedAt.epochMs < ms }.map(\.batchID)
        oldBatches.forEach { batchesByID[$0] = nil }
        batchOrder.removeAll { batchesByID[$0] == nil }
        report.batches = oldBatches.count
        let oldIncidents = incidentsByID.values.filter { !$0.isOpen && ($0.resolvedAt?.epochMs ?? .max) < ms }.map(\.id)
        oldIncidents.forEach { incidentsByID[$0] = nil }
        report.incidents = oldIncidents.count
        let pendingEvents = Set(deliveryRows.values.filter { $0.status == .pending }.map(\.event.id))
        let oldEvents = eventsByID.filter { $0.value.createdAt.epochMs < ms && !pendingEvents.contains($0.key) }.map(\.key)
        for id in oldEvents {
            eventsByID[id] = nil
            for key in deliveryRows.keys where key.eventID == id {
                deliveryRows[key] = nil
                dead[key] = nil
            }
        }
        report.events = oldEvents.count
        let oldestDay = UptimeDay.dayNumber(Date()) - UptimeDay.keptDays
        days.counts = days.counts.filter { $0.key.day >= oldestDay }
        return report
    }
}
