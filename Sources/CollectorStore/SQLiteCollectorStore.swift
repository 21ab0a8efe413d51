import CollectorAPI
import Foundation
import GRDB
import Logging
import SondeCore
import Synchronization

/// The default store: one SQLite file in WAL mode through a GRDB `DatabasePool` (one writer,
/// concurrent readers). Ingest writes a batch and all its results in one transaction with cached
/// prepared statements, so tens of thousands of results per second fit.
public final class SQLiteCollectorStore: CollectorStorage {
    public let path: String
    private let pool: DatabasePool
    private let logger: Logger
    /// Series ids already in the database (rows of `series` are never deleted while running).
    private let seriesCache = Mutex<[SeriesKey: Int64]>([:])

    /// When a commit reaches the disk.
    public enum Durability: String, Sendable, CaseIterable {
        /// `synchronous=FULL`: the WAL is fsynced at every commit; an acknowledged batch survives
        /// a power loss. The default.
        case full
        /// `synchronous=NORMAL`: fsync only at checkpoints; a power loss (not a crash of the
        /// process) can lose the last acknowledged batches. Only where that is acceptable.
        case normal
    }

    /// Opens (creating when missing) the database at `path`. Call `migrate()` before use.
    public init(path: String, durability: Durability = .full, logger: Logger) throws {
        self.path = path
        self.logger = logger
        // Owner-only from the start: SQLite gives the -wal and -shm files the database file's
        // mode, so creating it 0600 covers all three; an older file is tightened.
        try Self.restrictPermissions(path)
        var configuration = Configuration()
        configuration.journalMode = .wal
        // Admin commands and the server may share the file; wait rather than fail on a lock.
        configuration.busyMode = .timeout(5)
        configuration.prepareDatabase { db in
            // FULL: the WAL is fsynced at every commit, so a batch acknowledged to an agent (which
            // then deletes it) survives a power loss. Group commit (IngestWriter) shares one
            // fsync among concurrent pushes; the cost is in BENCHMARKS.md.
            try Self.applyDurability(durability, db)
            // 32 KiB pages for a new file (an existing one keeps its size): a push body is one or
            // two pages instead of ~15, and every page is a WAL frame (two pwrite calls) at commit
            // and a copy at checkpoint. Measured: 4.7 → 1.1 pwrite calls per stored result.
            try db.execute(sql: "PRAGMA page_size = 32768")
            // Each batch's savepoint keeps a copy of the pages it changes (its sub-journal). With
            // 32 KiB pages that passed SQLite's 64 KiB in-memory limit at every push, so each push
            // created, unlinked and closed a file in /var/tmp (8 system calls). In memory it is at
            // most the pages one batch touches; nothing durable lives there (the WAL is the journal).
            try db.execute(sql: "PRAGMA temp_store = MEMORY")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // Again on the writer, after the pool is open: GRDB's DatabasePool sets the writer to
            // `synchronous=NORMAL` when it turns WAL on, after `prepareDatabase` has run, which
            // silently made every commit fsync-free whatever `database_sync` said.
            try pool.writeWithoutTransaction { db in try Self.applyDurability(durability, db) }
        } catch {
            throw StorageError("cannot open database \(path): \(error); check that its folder exists and is writable")
        }
    }

    static func applyDurability(_ durability: Durability, _ db: Database) throws {
        try db.execute(sql: "PRAGMA synchronous = \(durability == .full ? "FULL" : "NORMAL")")
    }

    /// The writer connection's `PRAGMA synchronous` (2 = FULL, 1 = NORMAL): what commits really do.
    public func writerSynchronous() async throws -> Int {
        try await pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") ?? -1 }
    }

    /// Creates the database file 0600 when missing, and takes group/other bits off an existing
    /// one and its -wal/-shm files.
    static func restrictPermissions(_ path: String) throws {
        guard path != ":memory:", !path.isEmpty else { return }
        if !FileManager.default.fileExists(atPath: path) {
            let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
            if fd < 0 && errno != EEXIST {
                throw StorageError("cannot create database \(path): \(String(cString: strerror(errno))); check that its folder exists and is writable")
            }
            if fd >= 0 { close(fd) }
        }
        for file in [path, path + "-wal", path + "-shm"] where FileManager.default.fileExists(atPath: file) {
            if chmod(file, 0o600) != 0 {
                let code = errno
                var info = stat()
                // Made by another user (`agents add --create` run as root, then `serve` as the
                // service user): say whose it is and how to fix it (CLI walk-through, F8).
                if code == EPERM, stat(file, &info) == 0, info.st_uid != geteuid() {
                    throw StorageError(
                        "\(file) belongs to user id \(info.st_uid), not to this user (\(geteuid())): run the collector's commands as the user that owns the database (e.g. `sudo -u sonde-collector …`), or `chown` it (and its -wal/-shm files) to that user")
                }
                throw StorageError("cannot make \(file) owner-only (chmod 600): \(String(cString: strerror(code)))")
            }
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
        // v3: cheap inserts. The four names of a result (agent, probe, component, region) move to a
        // small `series` table (an INTEGER id, cached in memory); a result row keeps integer and
        // real columns only, in a WITHOUT ROWID table keyed by (started_at, id), plus one index for
        // the name filters. Its JSON is no longer copied: the row points at its bytes inside the
        // signed body in `batches` (json_offset, json_length); `json` is set only when the body
        // cannot be sliced, and for rows migrated from v2. Batches get an explicit INTEGER
        // PRIMARY KEY (`seq`, stable across VACUUM) for results to point at, and the latest
        // started_at of their results, so retention keeps a body while a result still needs it.
        migrator.registerMigration("v3-series-and-body-slices") { db in
            try db.execute(
                sql: """
                    CREATE TABLE series (
                        id INTEGER PRIMARY KEY, agent TEXT NOT NULL, probe TEXT NOT NULL, component TEXT NOT NULL,
                        region TEXT NOT NULL, UNIQUE (agent, probe, component, region));
                    INSERT INTO series (agent, probe, component, region)
                        SELECT DISTINCT agent, probe, component, region FROM results ORDER BY agent, probe, component, region;
                    CREATE TABLE batches_v3 (
                        seq INTEGER PRIMARY KEY, batch_id TEXT NOT NULL UNIQUE, agent TEXT NOT NULL, received_at INTEGER NOT NULL,
                        body BLOB NOT NULL, signature TEXT NOT NULL, result_count INTEGER NOT NULL,
                        last_started_at INTEGER NOT NULL DEFAULT 0);
                    INSERT INTO batches_v3 (batch_id, agent, received_at, body, signature, result_count, last_started_at)
                        SELECT batch_id, agent, received_at, body, signature, result_count, 0 FROM batches ORDER BY received_at, batch_id;
                    CREATE TABLE results_v3 (
                        started_at INTEGER NOT NULL, id TEXT NOT NULL, series INTEGER NOT NULL, outcome INTEGER NOT NULL,
                        duration_ms REAL NOT NULL, batch INTEGER NOT NULL, json_offset INTEGER, json_length INTEGER, json BLOB,
                        PRIMARY KEY (started_at, id)) WITHOUT ROWID;
                    INSERT OR IGNORE INTO results_v3 (started_at, id, series, outcome, duration_ms, batch, json)
                        SELECT r.started_at, r.id, s.id, CASE r.outcome WHEN 'ok' THEN 0 WHEN 'degraded' THEN 1 ELSE 2 END,
                            r.duration_ms, COALESCE(b.seq, 0), r.json
                        FROM results r
                        JOIN series s ON s.agent = r.agent AND s.probe = r.probe AND s.component = r.component AND s.region = r.region
                        LEFT JOIN batches_v3 b ON b.batch_id = r.batch_id
                        ORDER BY r.started_at, r.id;
                    DROP TABLE results;
                    DROP TABLE batches;
                    ALTER TABLE results_v3 RENAME TO results;
                    ALTER TABLE batches_v3 RENAME TO batches;
                    CREATE INDEX batches_received ON batches(received_at);
                    CREATE INDEX results_series ON results(series, started_at);
                    """)
        }
        // v4: dead letters (deliveries given up on, until re-driven) and a row the health check
        // rewrites to prove the database still takes writes.
        migrator.registerMigration("v4-dead-letters") { db in
            try db.execute(
                sql: """
                    CREATE TABLE dead_letters (
                        event_id TEXT NOT NULL REFERENCES events(id) ON DELETE CASCADE, target TEXT NOT NULL,
                        attempts INTEGER NOT NULL, last_error TEXT NOT NULL, dead_at INTEGER NOT NULL,
                        PRIMARY KEY (event_id, target));
                    CREATE INDEX dead_letters_time ON dead_letters(dead_at);
                    CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at INTEGER NOT NULL);
                    """)
        }
        // v5: the daily rollup behind uptime (results per component per UTC day), kept after
        // retention prunes the results it counts; filled from the results stored so far.
        migrator.registerMigration("v5-result-days") { db in
            try db.execute(
                sql: """
                    CREATE TABLE result_days (
                        component TEXT NOT NULL, day INTEGER NOT NULL, total INTEGER NOT NULL, failed INTEGER NOT NULL,
                        degraded INTEGER NOT NULL, PRIMARY KEY (component, day)) WITHOUT ROWID;
                    INSERT INTO result_days (component, day, total, failed, degraded)
                        SELECT s.component, r.started_at / 86400000, COUNT(*), SUM(r.outcome = 2), SUM(r.outcome = 1)
                        FROM results r JOIN series s ON s.id = r.series GROUP BY s.component, r.started_at / 86400000;
                    """)
        }
        // v6: the rollup per agent as well (`result_agent_days`), so that one agent's runs of a
        // day weigh no more than its peers' (``UptimeDay/combine(_:)``). `result_days` keeps the
        // days counted before, and is read as one agent's; nothing writes it any more.
        migrator.registerMigration("v6-result-agent-days") { db in
            try db.execute(
                sql: """
                    CREATE TABLE result_agent_days (
                        component TEXT NOT NULL, day INTEGER NOT NULL, agent TEXT NOT NULL, total INTEGER NOT NULL, failed INTEGER NOT NULL,
                        degraded INTEGER NOT NULL, PRIMARY KEY (component, day, agent)) WITHOUT ROWID;
                    """)
        }
        // v7: the runs that did not pass, newest first, for `/v1/results?outcome=failed`: without
        // it that filter walked every stored run to find a page (red team, fourth pass). Partial:
        // a passing run, nearly all of them, costs the insert nothing more.
        migrator.registerMigration("v7-results-not-ok") { db in
            try db.execute(sql: "CREATE INDEX results_not_ok ON results(started_at) WHERE outcome > 0")
        }
        return migrator
    }

    public func migrate() async throws {
        // Runs once at start-up, before serving: blocking here briefly is fine.
        try Self.migrator.migrate(pool)
    }

    /// Applies the migrations up to and including `identifier` only: tests build a database as an
    /// older collector left it, then upgrade it with `migrate()`.
    public func migrateForTesting(upTo identifier: String) async throws {
        try Self.migrator.migrate(pool, upTo: identifier)
    }

    /// Names of the migrations applied so far (for tests and diagnostics).
    public func appliedMigrations() async throws -> [String] {
        try await pool.read { db in try Array(Self.migrator.appliedMigrations(db)) }
    }

    // MARK: - Agents

    public func upsertAgent(_ agent: AgentRecord) async throws {
        try await pool.write { db in
            if let holder = try String.fetchOne(
                db, sql: "SELECT id FROM agents WHERE public_key = ? AND id != ? LIMIT 1", arguments: [agent.publicKey, agent.id])
            {
                throw DuplicateKeyError(agent: agent.id, holder: holder)
            }
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

    // Cached statements: the evaluator reads the agents every second and ingest looks one up per
    // push; compiling the SQL each time was most of those reads' cost.
    public func agents() async throws -> [AgentRecord] {
        try await pool.read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM agents ORDER BY region, id")).map(Self.agent(from:))
        }
    }

    /// Once per push. GRDB's synchronous read: it runs on the calling thread (a reader's queue
    /// taken with `sync`), where the async one hops to the reader's queue and back, waking two
    /// threads for a lookup of a few microseconds. A WAL reader never waits for the writer.
    public func agent(id: String) async throws -> AgentRecord? { try agentOnThisThread(id: id) }

    /// Synchronous, so that GRDB's synchronous `read` is the one called.
    private func agentOnThisThread(id: String) throws -> AgentRecord? {
        try pool.read { db in
            try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM agents WHERE id = ?"), arguments: [id]).map(Self.agent(from:))
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

    /// A result's names, interned as one `series` row.
    private struct SeriesKey: Hashable, Sendable {
        var agent: String, probe: String, component: String, region: String
        init(_ result: ProbeResult) {
            (agent, probe, component, region) = (result.agent, result.probe, result.component, result.region)
        }
    }

    /// Where each result's JSON is kept: a range of the batch body, or its own bytes when the body
    /// cannot be sliced with certainty.
    private enum StoredJSON {
        case slices([Range<Int>])
        case copies([Data])
    }

    /// All batches in one write transaction (one commit: measured about a third cheaper per
    /// result than a commit per batch), each in its own savepoint so one failing batch rolls back
    /// alone. Each result points at its exact bytes in the signed body (ranges from the decoder,
    /// or found by `ResultJSONSlicer`); only a body that cannot be sliced has its results
    /// re-encoded. That work happens before taking the write lock.
    public func ingest(group: [PendingBatch]) async throws -> [Result<IngestOutcome, any Error>] {
        let stored: [Result<StoredJSON, any Error>] = group.map { pending in
            let count = pending.results.count
            if let ranges = pending.resultRanges, ranges.count == count, ranges.allSatisfy({ $0.upperBound <= pending.batch.body.count }) {
                return .success(.slices(ranges))
            }
            if let ranges = ResultJSONSlicer.ranges(of: pending.batch.body, expectedCount: count) { return .success(.slices(ranges)) }
            let encoder = SondeJSON.encoder()
            return Result { .copies(try pending.results.map { try encoder.encode($0) }) }
        }
        let known = seriesCache.withLock { $0 }
        let (outcomes, newSeries) = try await pool.write { db in
            // Series first, outside the per-batch savepoints: a batch rolled back alone never
            // leaves a cached id without its row. Ids are cached only after the commit.
            var series = known
            var added: [SeriesKey: Int64] = [:]
            for pending in group {
                for result in pending.results {
                    let key = SeriesKey(result)
                    if series[key] == nil {
                        let id = try Self.seriesID(key, db)
                        series[key] = id
                        added[key] = id
                    }
                }
            }
            var outcomes: [Result<IngestOutcome, any Error>] = []
            outcomes.reserveCapacity(group.count)
            for (pending, json) in zip(group, stored) {
                do {
                    let json = try json.get()
                    var outcome = IngestOutcome.duplicate
                    try db.inSavepoint {
                        outcome = try Self.insert(pending.batch, pending.results, json, series, db)
                        return .commit
                    }
                    outcomes.append(.success(outcome))
                } catch {
                    outcomes.append(.failure(error))
                }
            }
            return (outcomes, added)
        }
        if !newSeries.isEmpty { seriesCache.withLock { $0.merge(newSeries) { old, _ in old } } }
        return outcomes
    }

    private static func seriesID(_ key: SeriesKey, _ db: Database) throws -> Int64 {
        let arguments: StatementArguments = [key.agent, key.probe, key.component, key.region]
        if let id = try Int64.fetchOne(
            db.cachedStatement(sql: "SELECT id FROM series WHERE agent = ? AND probe = ? AND component = ? AND region = ?"),
            arguments: arguments)
        {
            return id
        }
        try db.cachedStatement(sql: "INSERT INTO series (agent, probe, component, region) VALUES (?, ?, ?, ?)").execute(arguments: arguments)
        return db.lastInsertedRowID
    }

    /// Outcomes as stored in `results.outcome`.
    private static func code(_ outcome: Outcome) -> Int {
        switch outcome {
        case .ok: 0
        case .degraded: 1
        case .failed: 2
        }
    }

    private static func insert(
        _ batch: BatchRecord, _ results: [ProbeResult], _ json: StoredJSON, _ series: [SeriesKey: Int64], _ db: Database
    ) throws -> IngestOutcome {
        var lastStartedAt: Int64 = 0
        if case .slices = json { lastStartedAt = results.map(\.startedAt.epochMs).max() ?? 0 }
        let insertBatch = try db.cachedStatement(
            sql: """
                INSERT INTO batches (batch_id, agent, received_at, body, signature, result_count, last_started_at) VALUES (?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(batch_id) DO NOTHING
                """)
        try insertBatch.execute(arguments: [
            batch.batchID, batch.agent, batch.receivedAt.epochMs, batch.body, batch.signature, results.count, lastStartedAt,
        ])
        guard db.changesCount > 0 else { return .duplicate }
        let batchSeq = db.lastInsertedRowID
        var inserted = 0
        // Multi-row inserts of up to `rowsPerInsert` rows: fewer statement steps per batch.
        var index = 0
        while index < results.count {
            let count = min(Self.rowsPerInsert, results.count - index)
            let statement = try db.cachedStatement(sql: Self.insertResultsSQL(rows: count))
            var values: [(any DatabaseValueConvertible)?] = []
            values.reserveCapacity(count * 9)
            for offset in index..<index + count {
                let result = results[offset]
                values.append(result.startedAt.epochMs)
                values.append(result.id)
                values.append(series[SeriesKey(result)])
                values.append(Self.code(result.outcome))
                values.append(result.durationMs)
                values.append(batchSeq)
                switch json {
                case .slices(let ranges):
                    values.append(ranges[offset].lowerBound)
                    values.append(ranges[offset].count)
                    values.append(nil)
                case .copies(let copies):
                    values.append(nil)
                    values.append(nil)
                    values.append(copies[offset])
                }
            }
            try statement.execute(arguments: StatementArguments(values))
            inserted += db.changesCount
            index += count
        }
        let outcome: IngestOutcome
        if inserted == results.count {
            outcome = .stored(all: results.count)
            try addToDays(results, from: batch.uptimeFrom, db)
        } else {
            // Some rows were there already (re-sent under a new batch id): the new ones are those
            // that now point at this batch.
            let times = results.map(\.startedAt.epochMs)
            let rows = try Row.fetchAll(
                db, sql: "SELECT started_at, id FROM results WHERE started_at BETWEEN ? AND ? AND batch = ?",
                arguments: [times.min() ?? 0, times.max() ?? 0, batchSeq])
            let new = IngestOutcome.newPositions(of: results, inserted: Set(rows.map { ResultCursor(startedAtMs: $0["started_at"], id: $0["id"]) }))
            outcome = .stored(new: new)
            try addToDays(new.map { results[$0] }, from: batch.uptimeFrom, db)
        }
        try db.cachedStatement(sql: "UPDATE agents SET last_seen = MAX(COALESCE(last_seen, 0), ?) WHERE id = ?")
            .execute(arguments: [batch.receivedAt.epochMs, batch.agent])
        return outcome
    }

    private static let rowsPerInsert = 50

    /// Adds results stored now (never one stored before) to the daily rollup.
    private static func addToDays(_ results: [ProbeResult], from: Date?, _ db: Database) throws {
        guard !results.isEmpty else { return }
        var days = DayCounts()
        for result in results { days.count(result, from: from) }
        let upsert = try db.cachedStatement(
            sql: """
                INSERT INTO result_agent_days (component, day, agent, total, failed, degraded) VALUES (?, ?, ?, ?, ?, ?)
                ON CONFLICT(component, day, agent) DO UPDATE SET total = total + excluded.total, failed = failed + excluded.failed,
                    degraded = degraded + excluded.degraded
                """)
        for (key, counts) in days.counts {
            try upsert.execute(arguments: [key.component, key.day, key.agent, counts.total, counts.failed, counts.degraded])
        }
    }

    private static func insertResultsSQL(rows: Int) -> String {
        "INSERT OR IGNORE INTO results (started_at, id, series, outcome, duration_ms, batch, json_offset, json_length, json) VALUES "
            + Array(repeating: "(?, ?, ?, ?, ?, ?, ?, ?, ?)", count: rows).joined(separator: ", ")
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
                    LEFT JOIN (SELECT batch, COUNT(*) AS n FROM results GROUP BY batch) r ON r.batch = b.seq
                    """)
            for row in rows { integrity[row["batch_id"]] = (row["result_count"], row["stored"]) }
            return integrity
        }
    }

    // MARK: - Reading results

    /// Columns that locate a result's JSON (see `json(of:bodies:db:)`).
    private static let jsonColumns = "r.batch, r.json_offset, r.json_length, r.json"

    /// A result's JSON: its own copy, or its slice of the batch body (bodies fetched once per
    /// batch and kept in `bodies`, which is emptied when it grows past 256 bodies).
    private static func json(of row: Row, bodies: inout [Int64: Data], db: Database) throws -> Data {
        if let copy = row["json"] as Data? { return copy }
        let seq: Int64 = row["batch"], offset: Int = row["json_offset"], length: Int = row["json_length"]
        let body: Data
        if let cached = bodies[seq] {
            body = cached
        } else {
            guard let fetched = try Data.fetchOne(db, sql: "SELECT body FROM batches WHERE seq = ?", arguments: [seq]) else {
                throw StorageError("result row points at batch \(seq), which is gone; run `sonde-collector` retention again or restore the database")
            }
            if bodies.count >= 256 { bodies.removeAll(keepingCapacity: true) }
            bodies[seq] = fetched
            body = fetched
        }
        guard offset >= 0, length >= 0, offset + length <= body.count else {
            throw StorageError("result row points outside batch \(seq)'s body (offset \(offset), length \(length), body \(body.count) bytes)")
        }
        return body.subdata(in: body.startIndex + offset..<body.startIndex + offset + length)
    }

    /// The strict decoder first; Foundation's for rows stored before it (v2 kept what Foundation
    /// accepted).
    private static func decodeResult(_ json: Data) throws -> ProbeResult {
        do { return try PushBatchDecoder.result(from: json) } catch { return try SondeJSON.decode(ProbeResult.self, from: json) }
    }

    /// The series the query's name filters select, as a subquery.
    private static func names(_ query: ResultQuery) -> (series: String, arguments: [any DatabaseValueConvertible])? {
        var clauses: [String] = []
        var arguments: [any DatabaseValueConvertible] = []
        if let probe = query.probe { clauses.append("probe = ?"); arguments.append(probe) }
        if let component = query.component { clauses.append("component = ?"); arguments.append(component) }
        if let agent = query.agent { clauses.append("agent = ?"); arguments.append(agent) }
        if let region = query.region { clauses.append("region = ?"); arguments.append(region) }
        guard !clauses.isEmpty else { return nil }
        return ("SELECT id FROM series WHERE " + clauses.joined(separator: " AND "), arguments)
    }

    public func results(_ query: ResultQuery) async throws -> ResultPage {
        var clauses: [String] = []
        var arguments = StatementArguments()
        func add(_ clause: String, _ values: [any DatabaseValueConvertible]) {
            clauses.append(clause)
            arguments += StatementArguments(values)
        }
        if let names = Self.names(query) {
            // No such series: no results, without looking at any (a name nobody reports would
            // otherwise walk every stored run).
            let exists = "SELECT EXISTS (\(names.series))"
            let seriesArguments = StatementArguments(names.arguments.map { $0 as (any DatabaseValueConvertible)? })
            let known = try await pool.read { db in try Bool.fetchOne(db, sql: exists, arguments: seriesArguments) }
            if known != true { return ResultPage(results: [], nextCursor: nil) }
            add("r.series IN (\(names.series))", names.arguments)
        }
        if let outcome = query.outcome {
            // `outcome > 0` as written lets SQLite read `results_not_ok` for failed and degraded runs.
            add(outcome == .ok ? "r.outcome = ?" : "r.outcome > 0 AND r.outcome = ?", [Self.code(outcome)])
        }
        if let since = query.since { add("r.started_at >= ?", [since.epochMs]) }
        if let until = query.until { add("r.started_at < ?", [until.epochMs]) }
        if let cursor = query.cursor { add("(r.started_at, r.id) < (?, ?)", [cursor.startedAtMs, cursor.id]) }
        let whereSQL = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        let limit = max(1, query.limit)
        arguments += [limit + 1]
        let sql = "SELECT \(Self.jsonColumns) FROM results r \(whereSQL) ORDER BY r.started_at DESC, r.id DESC LIMIT ?"
        let rows = try await pool.read { [arguments] db in
            var bodies: [Int64: Data] = [:]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { try Self.json(of: $0, bodies: &bodies, db: db) }
        }
        let results = try rows.map(Self.decodeResult)
        return ResultPage(fetched: results, sizes: rows.map(\.count), limit: limit)
    }

    public func results(since: Date, limit: Int) async throws -> [ProbeResult] {
        try await pool.read { db in
            var bodies: [Int64: Data] = [:]
            let cursor = try Row.fetchCursor(
                db, sql: "SELECT \(Self.jsonColumns) FROM results r WHERE r.started_at >= ? ORDER BY r.started_at DESC, r.id DESC LIMIT ?",
                arguments: [since.epochMs, limit])
            var results: [ProbeResult] = []
            while let row = try cursor.next() { results.append(try Self.decodeResult(Self.json(of: row, bodies: &bodies, db: db))) }
            return results.reversed()
        }
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

    public func timeline(since: Date, until: Date) async throws -> [TimelineBucket] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT s.component, r.started_at / 3600000 AS hour, COUNT(*) AS total,
                        SUM(r.outcome = 2) AS failed, SUM(r.outcome = 1) AS degraded
                    FROM results r JOIN series s ON s.id = r.series
                    WHERE r.started_at >= ? AND r.started_at < ? GROUP BY s.component, hour ORDER BY s.component, hour
                    """,
                arguments: [since.epochMs, until.epochMs]
            ).map { row in
                TimelineBucket(
                    component: row["component"], hourStart: Date(epochMs: (row["hour"] as Int64) * 3_600_000),
                    total: row["total"], failed: row["failed"], degraded: row["degraded"])
            }
        }
    }

    public func uptimeDays(since: Date) async throws -> [UptimeDay] {
        let first = UptimeDay.dayNumber(since)
        let rows = try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT component, day, agent, total, failed, degraded FROM result_agent_days WHERE day >= ?
                    UNION ALL SELECT component, day, '', total, failed, degraded FROM result_days WHERE day >= ?
                    """,
                arguments: [first, first]
            ).map { row in
                AgentDayCount(
                    component: row[0], day: row[1], agent: row[2], total: row[3], failed: row[4], degraded: row[5])
            }
        }
        return UptimeDay.combine(rows)
    }

    public func seriesNames() async throws -> [SeriesNames] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT DISTINCT agent, probe, component FROM series").map {
                SeriesNames(agent: $0["agent"], probe: $0["probe"], component: $0["component"])
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
            // Cached: each webhook target's dispatcher asks every `webhook_retry.poll` (200 ms).
            try Row.fetchOne(
                db.cachedStatement(sql: Self.deliverySelect + " WHERE d.target = ? AND d.status = 'pending' ORDER BY d.occurred_at, d.event_id LIMIT 1"),
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

    public func markDead(eventID: String, target: String, attempts: Int, error: String, at: Date) async throws {
        try await pool.write { db in
            try db.execute(
                sql: "UPDATE deliveries SET status = 'dead', attempts = ?, last_error = ? WHERE event_id = ? AND target = ? AND status = 'pending'",
                arguments: [attempts, error, eventID, target])
            guard db.changesCount > 0 else { return }
            try db.execute(
                sql: "INSERT OR REPLACE INTO dead_letters (event_id, target, attempts, last_error, dead_at) VALUES (?, ?, ?, ?, ?)",
                arguments: [eventID, target, attempts, error, at.epochMs])
        }
    }

    public func deadLetters(limit: Int) async throws -> [DeadLetterRecord] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT l.*, e.type, e.occurred_at FROM dead_letters l JOIN events e ON e.id = l.event_id
                    ORDER BY l.dead_at DESC, l.event_id DESC LIMIT ?
                    """, arguments: [limit]
            ).map { row in
                DeadLetterRecord(
                    eventID: row["event_id"], eventType: row["type"], target: row["target"], attempts: row["attempts"], lastError: row["last_error"],
                    occurredAt: Date(epochMs: row["occurred_at"]), deadAt: Date(epochMs: row["dead_at"]))
            }
        }
    }

    public func deadLetterCount() async throws -> Int {
        try await pool.read { db in try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM dead_letters") ?? 0 }
    }

    public func redrive(eventID: String, target: String?) async throws -> [String] {
        try await pool.write { db in
            let targets = try String.fetchAll(
                db, sql: "SELECT target FROM dead_letters WHERE event_id = ? AND (? IS NULL OR target = ?) ORDER BY target",
                arguments: [eventID, target, target])
            for name in targets {
                try db.execute(sql: "DELETE FROM dead_letters WHERE event_id = ? AND target = ?", arguments: [eventID, name])
                try db.execute(
                    sql: "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = ? WHERE event_id = ? AND target = ?",
                    arguments: [Date().epochMs, eventID, name])
            }
            return targets
        }
    }

    public func renameDeliveryTarget(from old: String, to new: String) async throws {
        try await pool.write { db in
            for table in ["dead_letters", "deliveries"] {
                try db.execute(
                    sql: "UPDATE OR IGNORE \(table) SET target = ? WHERE target = ?", arguments: [new, old])
            }
        }
    }

    public func checkWritable() async throws {
        do {
            try await pool.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)", arguments: [Date().epochMs])
            }
        } catch {
            // After a full disk the WAL can hold the space a write needs: checkpoint it into the
            // database and truncate it, then try once more.
            try? await pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)") }
            try await pool.write { db in
                try db.execute(sql: "INSERT OR REPLACE INTO health (id, checked_at) VALUES (1, ?)", arguments: [Date().epochMs])
            }
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
            // A body stays while a result still points into it (a result can start after its batch
            // arrived when the agent's clock runs ahead).
            try db.execute(sql: "DELETE FROM batches WHERE received_at < ? AND last_started_at < ?", arguments: [ms, ms])
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
            // The daily rollup outlives results: uptime history is kept `UptimeDay.keptDays`.
            let oldestDay = UptimeDay.dayNumber(Date()) - UptimeDay.keptDays
            try db.execute(sql: "DELETE FROM result_days WHERE day < ?", arguments: [oldestDay])
            try db.execute(sql: "DELETE FROM result_agent_days WHERE day < ?", arguments: [oldestDay])
            return report
        }
    }

    /// Runs raw SQL (tests use it to tamper with stored rows).
    public func executeForTesting(_ sql: String) async throws {
        try await pool.write { db in try db.execute(sql: sql) }
    }
}
