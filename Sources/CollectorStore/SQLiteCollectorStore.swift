import Foundation
import GRDB
import Logging
import SondeCore

/// The default store: one SQLite file in WAL mode through a GRDB `DatabasePool` (one writer,
/// concurrent readers). Ingest writes a batch and all its results in one transaction with cached
/// prepared statements, so tens of thousands of results per second fit.
public final class SQLiteCollectorStore: CollectorStorage {
    public let path: String
    private let pool: DatabasePool
    private let logger: Logger

    /// Opens (creating when missing) the database at `path`. Call `migrate()` before use.
    public init(path: String, logger: Logger) throws {
        self.path = path
        self.logger = logger
        var configuration = Configuration()
        configuration.journalMode = .wal
        // Admin commands and the server may share the file; wait rather than fail on a lock.
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw StorageError("cannot open database \(path): \(error); check that its folder exists and is writable")
        }
    }

    // MARK: - Schema

    private static var migrator: DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1") { db in
            try db.execute(
                sql: """
                    CREATE TABLE agents (
                        id TEXT PRIMARY KEY, region TEXT NOT NULL, public_key TEXT NOT NULL,
                        revoked INTEGER NOT NULL DEFAULT 0, enrolled_at INTEGER NOT NULL, last_seen INTEGER);
                    CREATE TABLE batches (
                        batch_id TEXT PRIMARY KEY, agent TEXT NOT NULL, received_at INTEGER NOT NULL,
                        body BLOB NOT NULL, signature TEXT NOT NULL, result_count INTEGER NOT NULL);
                    CREATE INDEX batches_received ON batches(received_at);
                    CREATE TABLE results (
                        id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, agent TEXT NOT NULL, probe TEXT NOT NULL,
                        component TEXT NOT NULL, region TEXT NOT NULL, started_at INTEGER NOT NULL,
                        outcome TEXT NOT NULL, duration_ms REAL NOT NULL, error_kind TEXT, error_code TEXT,
                        json BLOB NOT NULL);
                    CREATE INDEX results_started ON results(started_at, id);
                    CREATE INDEX results_component ON results(component, started_at);
                    CREATE INDEX results_agent ON results(agent, started_at);
                    CREATE INDEX results_probe ON results(probe, started_at);
                    CREATE INDEX results_region ON results(region, started_at);
                    CREATE TABLE incidents (
                        id TEXT PRIMARY KEY, component TEXT NOT NULL, status TEXT NOT NULL,
                        opened_at INTEGER NOT NULL, updated_at INTEGER NOT NULL, resolved_at INTEGER,
                        json BLOB NOT NULL);
                    CREATE INDEX incidents_status ON incidents(status, opened_at);
                    CREATE TABLE events (
                        id TEXT PRIMARY KEY, type TEXT NOT NULL, occurred_at INTEGER NOT NULL,
                        created_at INTEGER NOT NULL, payload BLOB NOT NULL);
                    CREATE TABLE deliveries (
                        event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE, target TEXT NOT NULL,
                        status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
                        next_attempt_at INTEGER NOT NULL, last_error TEXT, delivered_at INTEGER,
                        occurred_at INTEGER NOT NULL,
                        PRIMARY KEY (event_id, target));
                    CREATE INDEX deliveries_pending ON deliveries(target, status, occurred_at);
                    CREATE TABLE agent_states (agent TEXT PRIMARY KEY, json BLOB NOT NULL, updated_at INTEGER NOT NULL);
                    """)
        }
        // v2: a result's uniqueness moves from `id` alone (a random UUID: every insert dirtied a
        // random page of that index, ~5 page writes per result) to (started_at, id), which grows at
        // the right edge. A resent result has the same started_at, so duplicates are still ignored.
        migrator.registerMigration("v2-results-time-ordered") { db in
            try db.execute(
                sql: """
                    CREATE TABLE results_v2 (
                        id TEXT NOT NULL, batch_id TEXT NOT NULL, agent TEXT NOT NULL, probe TEXT NOT NULL,
                        component TEXT NOT NULL, region TEXT NOT NULL, started_at INTEGER NOT NULL,
                        outcome TEXT NOT NULL, duration_ms REAL NOT NULL, error_kind TEXT, error_code TEXT,
                        json BLOB NOT NULL);
                    INSERT OR IGNORE INTO results_v2 SELECT id, batch_id, agent, probe, component, region, started_at, outcome,
                        duration_ms, error_kind, error_code, json FROM results ORDER BY started_at, id;
                    DROP TABLE results;
                    ALTER TABLE results_v2 RENAME TO results;
                    CREATE UNIQUE INDEX results_started ON results(started_at, id);
                    CREATE INDEX results_component ON results(component, started_at);
                    CREATE INDEX results_agent ON results(agent, started_at);
                    CREATE INDEX results_probe ON results(probe, started_at);
                    CREATE INDEX results_region ON results(region, started_at);
                    """)
        }
        return migrator
    }

    public func migrate() async throws {
        // Runs once at start-up, before serving: blocking here briefly is fine.
        try Self.migrator.migrate(pool)
    }

    /// Names of the migrations applied so far (for tests and diagnostics).
    public func appliedMigrations() async throws -> [String] {
        try await pool.read { db in try Array(Self.migrator.appliedMigrations(db)) }
    }

    // MARK: - Agents

    public func upsertAgent(_ agent: AgentRecord) async throws {
        try await pool.write { db in
            try db.execute(
                sql: """
                    INSERT INTO agents (id, region, public_key, revoked, enrolled_at, last_seen) VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET region = excluded.region, public_key = excluded.public_key, revoked = excluded.revoked
                    """,
                arguments: [agent.id, agent.region, agent.publicKey, agent.revoked, agent.enrolledAt.epochMs, agent.lastSeen?.epochMs])
        }
    }

    public func revokeAgent(id: String) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: "UPDATE agents SET revoked = 1 WHERE id = ?", arguments: [id])
            return db.changesCount > 0
        }
    }

    public func agents() async throws -> [AgentRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM agents ORDER BY region, id").map(Self.agent(from:))
        }
    }

    public func agent(id: String) async throws -> AgentRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM agents WHERE id = ?", arguments: [id]).map(Self.agent(from:))
        }
    }

    private static func agent(from row: Row) -> AgentRecord {
        AgentRecord(
            id: row["id"], region: row["region"], publicKey: row["public_key"], revoked: row["revoked"],
            enrolledAt: Date(epochMs: row["enrolled_at"]), lastSeen: (row["last_seen"] as Int64?).map(Date.init(epochMs:)))
    }

    // MARK: - Ingest

    public func ingest(batch: BatchRecord, results: [ProbeResult]) async throws -> IngestOutcome {
        try await ingest(group: [PendingBatch(batch: batch, results: results)])[0].get()
    }

    /// All batches in one write transaction (one commit: measured about a third cheaper per
    /// result than a commit per batch), each in its own savepoint so one failing batch rolls back
    /// alone. Each result's JSON is kept as the agent sent it (sliced from the signed body),
    /// re-encoded only when the body cannot be sliced with certainty; that work happens before
    /// taking the write lock.
    public func ingest(group: [PendingBatch]) async throws -> [Result<IngestOutcome, any Error>] {
        let encoder = SondeJSON.encoder()
        let encoded: [Result<[Data], any Error>] = group.map { pending in
            if let slices = ResultJSONSlicer.slices(of: pending.batch.body, expectedCount: pending.results.count) { return .success(slices) }
            return Result { try pending.results.map { try encoder.encode($0) } }
        }
        return try await pool.write { db in
            var outcomes: [Result<IngestOutcome, any Error>] = []
            outcomes.reserveCapacity(group.count)
            for (pending, json) in zip(group, encoded) {
                do {
                    let json = try json.get()
                    var outcome = IngestOutcome.duplicate
                    try db.inSavepoint {
                        outcome = try Self.insert(pending.batch, pending.results, json, db)
                        return .commit
                    }
                    outcomes.append(.success(outcome))
                } catch {
                    outcomes.append(.failure(error))
                }
            }
            return outcomes
        }
    }

    private static func insert(_ batch: BatchRecord, _ results: [ProbeResult], _ encoded: [Data], _ db: Database) throws -> IngestOutcome {
        let insertBatch = try db.cachedStatement(
            sql: """
                INSERT INTO batches (batch_id, agent, received_at, body, signature, result_count) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(batch_id) DO NOTHING
                """)
        try insertBatch.execute(arguments: [
            batch.batchID, batch.agent, batch.receivedAt.epochMs, batch.body, batch.signature, results.count,
        ])
        guard db.changesCount > 0 else { return .duplicate }
        // Multi-row inserts of up to `rowsPerInsert` rows: fewer statement steps per batch.
        var index = 0
        while index < results.count {
            let count = min(Self.rowsPerInsert, results.count - index)
            let statement = try db.cachedStatement(sql: Self.insertResultsSQL(rows: count))
            var values: [(any DatabaseValueConvertible)?] = []
            values.reserveCapacity(count * 12)
            for (result, json) in zip(results[index..<index + count], encoded[index..<index + count]) {
                values += [
                    result.id, batch.batchID, result.agent, result.probe, result.component, result.region,
                    result.startedAt.epochMs, result.outcome.rawValue, result.durationMs, result.error?.kind.rawValue,
                    result.error?.code, json,
                ] as [(any DatabaseValueConvertible)?]
            }
            try statement.execute(arguments: StatementArguments(values))
            index += count
        }
        try db.cachedStatement(sql: "UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE id = ?")
            .execute(arguments: [batch.receivedAt.epochMs, batch.agent])
        return .stored(results.count)
    }

    private static let rowsPerInsert = 50

    private static func insertResultsSQL(rows: Int) -> String {
        "INSERT OR IGNORE INTO results (id, batch_id, agent, probe, component, region, started_at, outcome, duration_ms, error_kind, error_code, json) VALUES "
            + Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", count: rows).joined(separator: ", ")
    }

    /// Every stored batch with the result count it declared and the result rows actually stored
    /// for it (drills check that no batch is ever half-stored).
    public func batchIntegrity() async throws -> [String: (declared: Int, stored: Int)] {
        try await pool.read { db in
            var integrity: [String: (declared: Int, stored: Int)] = [:]
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT b.batch_id, b.result_count, COALESCE(r.n, 0) AS stored FROM batches b
                    LEFT JOIN (SELECT batch_id, COUNT(*) AS n FROM results GROUP BY batch_id) r ON r.batch_id = b.batch_id
                    """)
            for row in rows { integrity[row["batch_id"]] = (row["result_count"], row["stored"]) }
            return integrity
        }
    }

    public func results(_ query: ResultQuery) async throws -> ResultPage {
        var clauses: [String] = []
        var arguments = StatementArguments()
        func add(_ clause: String, _ values: [any DatabaseValueConvertible]) {
            clauses.append(clause)
            arguments += StatementArguments(values)
        }
        if let probe = query.probe { add("probe = ?", [probe]) }
        if let component = query.component { add("component = ?", [component]) }
        if let agent = query.agent { add("agent = ?", [agent]) }
        if let region = query.region { add("region = ?", [region]) }
        if let outcome = query.outcome { add("outcome = ?", [outcome.rawValue]) }
        if let since = query.since { add("started_at >= ?", [since.epochMs]) }
        if let until = query.until { add("started_at < ?", [until.epochMs]) }
        if let cursor = query.cursor {
            add("(started_at < ? OR (started_at = ? AND id < ?))", [cursor.startedAtMs, cursor.startedAtMs, cursor.id])
        }
        let whereSQL = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        let limit = max(1, query.limit)
        arguments += [limit + 1]
        let sql = "SELECT json FROM results \(whereSQL) ORDER BY started_at DESC, id DESC LIMIT ?"
        let rows = try await pool.read { [arguments] db in try Data.fetchAll(db, sql: sql, arguments: arguments) }
        let decoder = SondeJSON.decoder()
        var results = try rows.map { try decoder.decode(ProbeResult.self, from: $0) }
        var next: ResultCursor?
        if results.count > limit {
            results.removeLast(results.count - limit)
            next = results.last.map(ResultCursor.init(after:))
        }
        return ResultPage(results: results, nextCursor: next)
    }

    public func results(since: Date, limit: Int) async throws -> [ProbeResult] {
        let rows = try await pool.read { db in
            try Data.fetchAll(
                db, sql: "SELECT json FROM results WHERE started_at >= ? ORDER BY started_at, id LIMIT ?",
                arguments: [since.epochMs, limit])
        }
        let decoder = SondeJSON.decoder()
        return try rows.map { try decoder.decode(ProbeResult.self, from: $0) }
    }

    public func batches(since: Date?, after: ResultCursor?, limit: Int) async throws -> [BatchRecord] {
        let afterMs = after?.startedAtMs ?? Int64.min
        let afterID = after?.id ?? ""
        return try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM batches WHERE received_at >= ? AND (received_at > ? OR (received_at = ? AND batch_id > ?))
                    ORDER BY received_at, batch_id LIMIT ?
                    """,
                arguments: [since?.epochMs ?? 0, afterMs, afterMs, afterID, limit]
            ).map { row in
                BatchRecord(
                    batchID: row["batch_id"], agent: row["agent"], receivedAt: Date(epochMs: row["received_at"]),
                    body: row["body"], signature: row["signature"])
            }
        }
    }

    public func timeline(since: Date) async throws -> [TimelineBucket] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT component, started_at / 3600000 AS hour, COUNT(*) AS total,
                        SUM(outcome = 'failed') AS failed, SUM(outcome = 'degraded') AS degraded
                    FROM results WHERE started_at >= ? GROUP BY component, hour ORDER BY component, hour
                    """,
                arguments: [since.epochMs]
            ).map { row in
                TimelineBucket(
                    component: row["component"], hourStart: Date(epochMs: (row["hour"] as Int64) * 3_600_000),
                    total: row["total"], failed: row["failed"], degraded: row["degraded"])
            }
        }
    }

    public func resultCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM results") ?? 0 }
    }

    // MARK: - Incidents, events, agent states

    public func commit(_ evaluation: EvaluationCommit) async throws {
        guard !evaluation.isEmpty else { return }
        let now = Date().epochMs
        try await pool.write { db in
            let upsertIncident = try db.cachedStatement(
                sql: """
                    INSERT INTO incidents (id, component, status, opened_at, updated_at, resolved_at, json) VALUES (?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT(id) DO UPDATE SET component = excluded.component, status = excluded.status,
                        updated_at = excluded.updated_at, resolved_at = excluded.resolved_at, json = excluded.json
                    """)
            for incident in evaluation.incidents {
                try upsertIncident.execute(arguments: [
                    incident.id, incident.component, incident.status, incident.openedAt.epochMs, incident.updatedAt.epochMs,
                    incident.resolvedAt?.epochMs, incident.json,
                ])
            }
            let insertEvent = try db.cachedStatement(
                sql: "INSERT OR IGNORE INTO events (id, type, occurred_at, created_at, payload) VALUES (?, ?, ?, ?, ?)")
            for event in evaluation.events {
                try insertEvent.execute(arguments: [event.id, event.type, event.occurredAt.epochMs, now, event.payload])
            }
            let insertDelivery = try db.cachedStatement(
                sql: """
                    INSERT OR IGNORE INTO deliveries (event_id, target, status, attempts, next_attempt_at, occurred_at)
                    SELECT id, ?, 'pending', 0, ?, occurred_at FROM events WHERE id = ?
                    """)
            for key in evaluation.deliveries {
                try insertDelivery.execute(arguments: [key.target, now, key.eventID])
            }
            let upsertState = try db.cachedStatement(
                sql: """
                    INSERT INTO agent_states (agent, json, updated_at) VALUES (?, ?, ?)
                    ON CONFLICT(agent) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at
                    """)
            for (agent, json) in evaluation.agentStates {
                try upsertState.execute(arguments: [agent, json, now])
            }
        }
    }

    public func incidents(_ filter: IncidentFilter, limit: Int) async throws -> [IncidentRecord] {
        let condition =
            switch filter {
            case .open: "WHERE status != 'resolved'"
            case .resolved: "WHERE status = 'resolved'"
            case .all: ""
            }
        return try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM incidents \(condition) ORDER BY opened_at DESC, id LIMIT ?", arguments: [limit])
                .map(Self.incident(from:))
        }
    }

    public func incident(id: String) async throws -> IncidentRecord? {
        try await pool.read { db in
            try Row.fetchOne(db, sql: "SELECT * FROM incidents WHERE id = ?", arguments: [id]).map(Self.incident(from:))
        }
    }

    private static func incident(from row: Row) -> IncidentRecord {
        IncidentRecord(
            id: row["id"], component: row["component"], status: row["status"], openedAt: Date(epochMs: row["opened_at"]),
            updatedAt: Date(epochMs: row["updated_at"]), resolvedAt: (row["resolved_at"] as Int64?).map(Date.init(epochMs:)),
            json: row["json"])
    }

    public func agentStates() async throws -> [String: Data] {
        try await pool.read { db in
            var states: [String: Data] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT agent, json FROM agent_states") { states[row["agent"]] = row["json"] }
            return states
        }
    }

    // MARK: - Deliveries

    private static let deliverySelect = """
        SELECT d.*, e.type, e.payload FROM deliveries d JOIN events e ON e.id = d.event_id
        """

    private static func delivery(from row: Row) -> DeliveryRecord {
        DeliveryRecord(
            event: OutboxEvent(id: row["event_id"], type: row["type"], occurredAt: Date(epochMs: row["occurred_at"]), payload: row["payload"]),
            target: row["target"], status: DeliveryStatus(rawValue: row["status"]) ?? .pending, attempts: row["attempts"],
            nextAttemptAt: Date(epochMs: row["next_attempt_at"]), lastError: row["last_error"],
            deliveredAt: (row["delivered_at"] as Int64?).map(Date.init(epochMs:)))
    }

    public func nextPendingDelivery(target: String) async throws -> DeliveryRecord? {
        try await pool.read { db in
            try Row.fetchOne(
                db,
                sql: Self.deliverySelect + " WHERE d.target = ? AND d.status = 'pending' ORDER BY d.occurred_at, d.event_id LIMIT 1",
                arguments: [target]
            ).map(Self.delivery(from:))
        }
    }

    public func markDelivered(eventID: String, target: String, at: Date) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = ?, last_error = NULL WHERE event_id = ? AND target = ?",
                arguments: [at.epochMs, eventID, target])
        }
    }

    public func markFailed(eventID: String, target: String, attempts: Int, nextAttemptAt: Date, error: String) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE deliveries SET attempts = ?, next_attempt_at = ?, last_error = ? WHERE event_id = ? AND target = ? AND status = 'pending'",
                arguments: [attempts, nextAttemptAt.epochMs, error, eventID, target])
        }
    }

    public func deliveries() async throws -> [DeliveryRecord] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: Self.deliverySelect + " ORDER BY d.occurred_at, d.event_id, d.target").map(Self.delivery(from:))
        }
    }

    // MARK: - Retention

    public func prune(before cutoff: Date) async throws -> PruneReport {
        let ms = cutoff.epochMs
        return try await pool.write { db in
            var report = PruneReport()
            try db.execute(sql: "DELETE FROM results WHERE started_at < ?", arguments: [ms])
            report.results = db.changesCount
            try db.execute(sql: "DELETE FROM batches WHERE received_at < ?", arguments: [ms])
            report.batches = db.changesCount
            try db.execute(sql: "DELETE FROM incidents WHERE status = 'resolved' AND resolved_at < ?", arguments: [ms])
            report.incidents = db.changesCount
            // An event goes only once nothing is left to deliver, so retention never loses an alert.
            try db.execute(
                sql: """
                    DELETE FROM deliveries WHERE event_id IN (SELECT id FROM events WHERE created_at < ?)
                        AND event_id NOT IN (SELECT event_id FROM deliveries WHERE status = 'pending')
                    """,
                arguments: [ms])
            try db.execute(
                sql: "DELETE FROM events WHERE created_at < ? AND id NOT IN (SELECT event_id FROM deliveries)", arguments: [ms])
            report.events = db.changesCount
            return report
        }
    }

    /// Runs raw SQL (tests use it to tamper with stored rows).
    public func executeForTesting(_ sql: String) async throws {
        try await pool.write { db in try db.execute(sql: sql) }
    }
}
