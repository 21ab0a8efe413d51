import CollectorAPI
import Foundation
import Logging
import NIOCore
import PostgresNIO
import SondeCore
import _ConnectionPoolModule
import Synchronization

/// A write refused because this collector is not (or no longer) the leader.
public struct NotLeaderError: Error, CustomStringConvertible, Sendable {
    public var epoch: Int64?
    public var current: Int64?
    public var description: String {
        if let epoch { return "this collector led with epoch \(epoch) but the current epoch is \(current.map(String.init) ?? "none"): another collector leads; the write was refused (fencing)" }
        return "this collector is not the leader: only the leader writes incidents, outbox and deliveries"
    }
}

/// The store for several collectors on one shared PostgreSQL (`database: postgres://…`).
///
/// - Pooled connections (PostgresNIO's `PostgresClient`), TLS per `sslmode`.
/// - Migrations run under `pg_advisory_lock`, so collectors started together migrate once.
/// - `results` is partitioned by day of `started_at` (native declarative partitioning); retention
///   drops whole partitions. Results older than the oldest partition land in `results_default`.
/// - Needs no superuser: the role that owns the schema (it ran the migrations) is enough.
/// - Every statement has a deadline (`connect_timeout`): an unreachable database is a
///   `StorageError` saying so, never a hang; nothing is acknowledged before its commit.
public final class PostgresCollectorStore: CollectorStorage {
    public let url: PostgresURL
    let logger: Logger
    /// The connection pool and the task that runs it; replaced by `databaseAnswered()`.
    private let pool: Mutex<(client: PostgresClient, task: Task<Void, Never>)>
    /// Series ids already in the database (rows of `series` are never deleted).
    private let seriesCache = Mutex<[SeriesKey: Int64]>([:])
    /// Days (ms since 1970 / 86,400,000) that have a partition of `results`.
    private let partitionDays = Mutex<Set<Int64>>([])
    /// Fencing: once `enableFencing()` is called (by `serve`, with a leader election), writes of
    /// incidents, outbox and deliveries need the current leader epoch, held in `epoch`.
    private let fence = Mutex<(enabled: Bool, epoch: Int64?)>((false, nil))
    /// `connectRefusal()`'s latest attempt and what it found.
    private let refusal = Mutex<(at: ContinuousClock.Instant, reason: String)?>(nil)
    /// When the pool was last replaced because the database refused a write as read-only.
    private let readOnlyRecycle = Mutex<ContinuousClock.Instant?>(nil)

    static let dayMs: Int64 = 86_400_000
    /// Advisory lock keys (arbitrary constants, "sonde" in ASCII plus a suffix).
    static let migrationLockKey: Int64 = 0x736F_6E64_6501
    static let partitionLockKey: Int64 = 0x736F_6E64_6502

    /// Connects lazily: nothing is sent to the server until the first call (`migrate()`).
    public init(url: PostgresURL, logger: Logger) throws {
        self.url = url
        self.logger = logger
        pool = Mutex(try Self.startPool(url: url, logger: logger))
    }

    private static func startPool(url: PostgresURL, logger: Logger) throws(StorageError) -> (client: PostgresClient, task: Task<Void, Never>) {
        // PostgresNIO logs every failed connect of its pool at info, with its own type names: a
        // line a second per collector while the database is away. The store says the same in
        // words on each failed statement, so at info and notice only the pool's warnings show;
        // at debug and trace, everything.
        var poolLogger = logger
        if poolLogger.logLevel > .debug, poolLogger.logLevel < .warning { poolLogger.logLevel = .warning }
        let client = PostgresClient(configuration: try url.clientConfiguration(), backgroundLogger: poolLogger)
        return (client, Task { await client.run() })
    }

    /// The pool in use now.
    var client: PostgresClient { pool.withLock { $0.client } }

    /// Called when the leader election's session to the database is back after it was lost
    /// (it reconnects every heartbeat while the database is away). PostgresNIO's pool retries a
    /// failing database with a growing backoff (8.7 s after 20 failed attempts, up to a minute),
    /// so after an outage of half a minute it could keep this collector from the database for
    /// seconds after the database is back. A new pool starts now; work still queued on the old
    /// one fails and is retried by its caller.
    public func databaseAnswered() {
        if replacePool() {
            logger.notice("PostgreSQL answers again; started a new connection pool instead of waiting out the old one's reconnect backoff")
        }
    }

    /// A new pool in place of the current one; false (logged) when it cannot be started.
    private func replacePool() -> Bool {
        let fresh: (client: PostgresClient, task: Task<Void, Never>)
        do { fresh = try Self.startPool(url: url, logger: logger) } catch {
            logger.error("Cannot start a new database connection pool", metadata: ["error": "\(error)"])
            return false
        }
        let old = pool.withLock { current in
            defer { current = fresh }
            return current.task
        }
        old.cancel()
        return true
    }

    /// The database refused a write as read-only (SQLSTATE 25006). A connection opened while it
    /// was (`default_transaction_read_only`, a failover's old primary) stays so after it is not:
    /// both collectors refused every push for minutes after such an episode ended, until their
    /// connections were ended by hand (HA review, 33rd session, F5). So the pool is replaced, once
    /// every 10 s at most: while the episode lasts the new connections are read-only too.
    private func refusedAsReadOnly() {
        let now = ContinuousClock.now
        let due = readOnlyRecycle.withLock { last -> Bool in
            if let last, now - last < .seconds(10) { return false }
            last = now
            return true
        }
        if due, replacePool() {
            logger.warning("PostgreSQL refused a write as read-only; started a new connection pool, whose connections see the database as it is now")
        }
    }

    public convenience init(url text: String, logger: Logger) throws {
        try self.init(url: try PostgresURL(text), logger: logger)
    }

    deinit { pool.withLock { $0.task.cancel() } }

    /// Closes the pool (a store is unusable afterwards).
    public func close() { pool.withLock { $0.task.cancel() } }

    // MARK: - Fencing

    /// From now on every write of incidents, outbox or deliveries checks the leader epoch.
    public func enableFencing() { fence.withLock { $0.enabled = true } }

    /// The epoch this collector leads with, or nil while it does not lead.
    public func setLeaderEpoch(_ epoch: Int64?) { fence.withLock { $0.epoch = epoch } }

    /// Inside a transaction: fails unless this collector holds the current epoch. `FOR SHARE`
    /// makes a concurrent take-over (which updates the row) wait for this transaction, or this
    /// one see the new epoch: two leaders never both write.
    static func checkFence(_ fence: (enabled: Bool, epoch: Int64?), _ connection: PostgresConnection, _ logger: Logger) async throws {
        guard fence.enabled else { return }
        guard let mine = fence.epoch else { throw NotLeaderError(epoch: nil, current: nil) }
        let current = try await all(connection, "SELECT epoch FROM leader WHERE id = 1 FOR SHARE", logger).first?.decode(Int64.self)
        guard current == mine else { throw NotLeaderError(epoch: mine, current: current) }
    }

    var fenceState: (enabled: Bool, epoch: Int64?) { fence.withLock { $0 } }

    // MARK: - Plumbing

    /// Runs `body` with the URL's deadline; a connection failure or time-out becomes a
    /// `StorageError` that names the server (never the password) and says what to check.
    /// - Parameter long: for reads that grow with the fleet (a new leader's window): a deadline
    ///   of 30 × `connect_timeout` (300 s by default) instead of `connect_timeout`.
    func run<T: Sendable>(_ what: String, long: Bool = false, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
        let timeout = long ? url.connectTimeout * 30 : url.connectTimeout
        do {
            return try await withDeadline(.milliseconds(Int64(timeout * 1000)), body)
        } catch is DeadlineExceeded {
            throw StorageError(
                "PostgreSQL at \(url.host):\(url.port) did not answer \(what) within \(timeout) s\(await connectRefusal()); check that it runs and is reachable (database: \(url))")
        } catch let error as PSQLError {
            throw describe(error, what)
        } catch let error as PostgresTransactionError {
            throw describe(error.closureError ?? error.commitError ?? error.beginError ?? error, what)
        } catch let error as ConnectionPoolError where error == .connectionCreationCircuitBreakerTripped {
            throw StorageError(
                "cannot reach PostgreSQL at \(url.host):\(url.port) for \(what): connections to it have failed for a while\(await connectRefusal()) and the pool is waiting before it tries again; check that it runs and is reachable (database: \(url))")
        }
    }

    /// PostgreSQL's own words for why new connections fail ("too many connections for role",
    /// "sorry, too many clients already", a refused login), as ", answering: …", or "" when a
    /// connection of its own succeeds or says nothing. The pool keeps its connect errors to itself
    /// (logged at info, which `startPool` hides), so a statement that waited in vain could only
    /// say "did not answer", and the operator had to find the reason in PostgreSQL's log. One
    /// attempt every 10 s at most: a failing database brings such errors by the hundred.
    func connectRefusal() async -> String {
        let now = ContinuousClock.now
        let claimed = refusal.withLock { last -> String? in
            if let last, now - last.at < .seconds(10) { return last.reason }
            last = (now, "")
            return nil
        }
        if let claimed { return claimed }
        var reason = ""
        do {
            let connection = try await withDeadline(.milliseconds(Int64(url.connectTimeout * 1000))) { [url] in
                try await PostgresConnection.connect(configuration: try url.connectionConfiguration(), id: 0, logger: Logger(label: "sonde.postgres.probe") { _ in SwiftLogNoOpLogHandler() })
            }
            try? await connection.close()
        } catch let error as PSQLError {
            if let message = error.serverInfo?[.message] {
                reason = ", answering: \(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))"
            } else if error.code == .connectionError || error.code == .unexpectedBackendMessage {
                reason = ", refusing or dropping connections (\(error.code))"
            }
        } catch {}
        refusal.withLock { $0 = (now, reason) }
        return reason
    }

    private func describe(_ error: any Error, _ what: String) -> any Error {
        guard let error = error as? PSQLError else { return error }
        switch error.code {
        case .server:
            let message = error.serverInfo?[.message] ?? "error"
            let state = error.serverInfo?[.sqlState] ?? "?"
            if state == "25006" { refusedAsReadOnly() }
            return StorageError("PostgreSQL refused \(what): \(message) (SQLSTATE \(state))")
        case .sslUnsupported:
            return StorageError("PostgreSQL at \(url.host):\(url.port) does not offer TLS but sslmode=\(url.sslMode.rawValue) requires it")
        case .unsupportedAuthMechanism, .authMechanismRequiresPassword, .saslError:
            return StorageError("PostgreSQL at \(url.host):\(url.port) refused the login of \(url.user): check the user and password in `database:`")
        default:
            return StorageError(
                "cannot reach PostgreSQL at \(url.host):\(url.port) for \(what) (\(error.code)); check that it runs, the address, and sslmode (database: \(url))")
        }
    }

    /// One transaction on one pooled connection; the caller's own error is rethrown as is.
    /// `long`: the deadline of `run(_:long:_:)`'s long reads, for a transaction that may wait on
    /// a lock another collector holds for a while.
    func transaction<T: Sendable>(
        _ what: String, long: Bool = false, _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws -> T {
        try await run(what, long: long) { [client, logger, url] in
            try await client.withConnection { connection in
                try await connection.query("BEGIN", logger: logger)
                do {
                    if long { try await connection.query(PostgresQuery(unsafeSQL: "SET LOCAL statement_timeout = \(url.longStatementTimeoutMs)"), logger: logger) }
                    let value = try await body(connection)
                    try await connection.query("COMMIT", logger: logger)
                    return value
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
            }
        }
    }

    func rows(_ query: PostgresQuery, _ what: String, long: Bool = false) async throws -> [PostgresRow] {
        // A long read needs its own statement_timeout, so a transaction to SET LOCAL it in.
        if long { return try await transaction(what, long: true) { [logger] connection in try await Self.all(connection, query, logger) } }
        return try await run(what) { [client, logger] in try await client.query(query, logger: logger).collect() }
    }

    func execute(_ query: PostgresQuery, _ what: String) async throws {
        _ = try await rows(query, what)
    }

    static func all(_ connection: PostgresConnection, _ query: PostgresQuery, _ logger: Logger) async throws -> [PostgresRow] {
        try await connection.query(query, logger: logger).collect()
    }

    // MARK: - Schema

    /// The schema, one version per entry; a version's statements run in one transaction.
    public static let migrations: [(version: String, statements: [String])] = [
        (
            "v1",
            [
                """
                CREATE TABLE agents (
                    id TEXT PRIMARY KEY, region TEXT NOT NULL, public_key TEXT NOT NULL,
                    revoked BOOLEAN NOT NULL DEFAULT FALSE, enrolled_at BIGINT NOT NULL, last_seen BIGINT)
                """,
                "CREATE INDEX agents_public_key ON agents (public_key)",
                """
                CREATE TABLE series (
                    id BIGSERIAL PRIMARY KEY, agent TEXT NOT NULL, probe TEXT NOT NULL, component TEXT NOT NULL,
                    region TEXT NOT NULL, UNIQUE (agent, probe, component, region))
                """,
                // `xid`: the inserting transaction, so a reader following ingest can take exactly the
                // batches whose transactions have ended (below its snapshot's xmin), none twice.
                """
                CREATE TABLE batches (
                    seq BIGSERIAL PRIMARY KEY, batch_id TEXT NOT NULL UNIQUE, agent TEXT NOT NULL, received_at BIGINT NOT NULL,
                    body BYTEA NOT NULL, signature TEXT NOT NULL, result_count INTEGER NOT NULL,
                    xid BIGINT NOT NULL DEFAULT pg_current_xact_id()::TEXT::BIGINT)
                """,
                "CREATE INDEX batches_received ON batches (received_at, batch_id)",
                "CREATE INDEX batches_xid ON batches (xid)",
                """
                CREATE TABLE results (
                    started_at BIGINT NOT NULL, id TEXT NOT NULL, series BIGINT NOT NULL, outcome SMALLINT NOT NULL,
                    duration_ms DOUBLE PRECISION NOT NULL, batch BIGINT NOT NULL, json BYTEA NOT NULL,
                    PRIMARY KEY (started_at, id)) PARTITION BY RANGE (started_at)
                """,
                "CREATE TABLE results_default PARTITION OF results DEFAULT",
                "CREATE INDEX results_series ON results (series, started_at)",
                "CREATE INDEX results_batch ON results (batch)",
                """
                CREATE TABLE incidents (
                    id TEXT PRIMARY KEY, component TEXT NOT NULL, status TEXT NOT NULL,
                    opened_at BIGINT NOT NULL, updated_at BIGINT NOT NULL, resolved_at BIGINT, json BYTEA NOT NULL)
                """,
                "CREATE INDEX incidents_status ON incidents (status, opened_at)",
                """
                CREATE TABLE events (
                    id TEXT PRIMARY KEY, type TEXT NOT NULL, occurred_at BIGINT NOT NULL,
                    created_at BIGINT NOT NULL, payload BYTEA NOT NULL)
                """,
                """
                CREATE TABLE deliveries (
                    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE, target TEXT NOT NULL,
                    status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, next_attempt_at BIGINT NOT NULL,
                    last_error TEXT, delivered_at BIGINT, occurred_at BIGINT NOT NULL, PRIMARY KEY (event_id, target))
                """,
                "CREATE INDEX deliveries_pending ON deliveries (target, status, occurred_at)",
                """
                CREATE TABLE dead_letters (
                    event_id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE, target TEXT NOT NULL,
                    attempts INTEGER NOT NULL, last_error TEXT NOT NULL, dead_at BIGINT NOT NULL, PRIMARY KEY (event_id, target))
                """,
                "CREATE INDEX dead_letters_time ON dead_letters (dead_at)",
                "CREATE TABLE agent_states (agent TEXT PRIMARY KEY, json BYTEA NOT NULL, updated_at BIGINT NOT NULL)",
                "CREATE TABLE health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at BIGINT NOT NULL)",
                // The fencing token: a collector that becomes leader increments `epoch`; every write
                // of incidents, outbox and deliveries checks it still holds the current one.
                "CREATE TABLE leader (id INTEGER PRIMARY KEY CHECK (id = 1), epoch BIGINT NOT NULL, holder TEXT NOT NULL, since BIGINT NOT NULL)",
                "INSERT INTO leader (id, epoch, holder, since) VALUES (1, 0, '', 0)",
            ]
        ),
        (
            // The daily rollup behind uptime (results per component per UTC day), kept after
            // retention drops the partitions it counts; filled from the results stored so far.
            "v2-result-days",
            [
                """
                CREATE TABLE result_days (
                    component TEXT NOT NULL, day BIGINT NOT NULL, total BIGINT NOT NULL, failed BIGINT NOT NULL,
                    degraded BIGINT NOT NULL, PRIMARY KEY (component, day))
                """,
                """
                INSERT INTO result_days (component, day, total, failed, degraded)
                    SELECT s.component, floor(r.started_at / 86400000.0)::BIGINT, COUNT(*), COUNT(*) FILTER (WHERE r.outcome = 2),
                        COUNT(*) FILTER (WHERE r.outcome = 1)
                    FROM results r JOIN series s ON s.id = r.series GROUP BY 1, 2
                """,
            ]
        ),
        (
            // The rollup per agent as well, so that one agent's runs of a day weigh no more than
            // its peers' (`UptimeDay.combine`). `result_days` keeps the days counted before (and
            // what an older collector writes during a rolling upgrade), read as one agent's.
            "v3-result-agent-days",
            [
                """
                CREATE TABLE result_agent_days (
                    component TEXT NOT NULL, day BIGINT NOT NULL, agent TEXT NOT NULL, total BIGINT NOT NULL, failed BIGINT NOT NULL,
                    degraded BIGINT NOT NULL, PRIMARY KEY (component, day, agent))
                """
            ]
        ),
        // The runs that did not pass, for `/v1/results?outcome=failed` (partial: passing runs,
        // nearly all of them, cost the insert nothing more).
        ("v4-results-not-ok", ["CREATE INDEX results_not_ok ON results (started_at) WHERE outcome > 0"]),
    ]

    /// Applies missing migrations under a session advisory lock (collectors started together
    /// wait for each other, and the later ones find nothing to do), then makes sure the partitions
    /// around today exist.
    public func migrate() async throws {
        // Long: a migration may build an index over every stored result, and another collector's
        // may hold the lock meanwhile. The session's statement_timeout is back to the pool's at the end.
        // A database that does not answer is said within `connect_timeout`, as for everything else.
        _ = try await rows("SELECT 1", "migrations")
        let applied = try await run("migrations", long: true) { [client, logger, url] in
            try await client.withConnection { connection in
                try await connection.query(PostgresQuery(unsafeSQL: "SET statement_timeout = \(url.longStatementTimeoutMs)"), logger: logger)
                try await connection.query("SELECT pg_advisory_lock(\(Self.migrationLockKey))", logger: logger)
                do {
                    var applied: [String] = []
                    try await connection.query(
                        "CREATE TABLE IF NOT EXISTS schema_migrations (version TEXT PRIMARY KEY, applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
                        logger: logger)
                    let done = Set(
                        try await Self.all(connection, "SELECT version FROM schema_migrations", logger).map { try $0.decode(String.self) })
                    for migration in Self.migrations where !done.contains(migration.version) {
                        try await connection.query("BEGIN", logger: logger)
                        do {
                            for statement in migration.statements { try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger) }
                            try await connection.query("INSERT INTO schema_migrations (version) VALUES (\(migration.version))", logger: logger)
                            try await connection.query("COMMIT", logger: logger)
                        } catch {
                            _ = try? await connection.query("ROLLBACK", logger: logger)
                            throw error
                        }
                        applied.append(migration.version)
                    }
                    try await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLockKey))", logger: logger)
                    try await connection.query("RESET statement_timeout", logger: logger)
                    return applied
                } catch {
                    // The lock and the setting go with the session; the pool may keep this
                    // connection, so free and reset them.
                    _ = try? await connection.query("SELECT pg_advisory_unlock(\(Self.migrationLockKey))", logger: logger)
                    _ = try? await connection.query("RESET statement_timeout", logger: logger)
                    throw error
                }
            }
        }
        for version in applied { logger.notice("Applied database migration", metadata: ["db.migration": .string(version)]) }
        try await loadPartitions()
        try await ensurePartitions(around: Date())
    }

    /// Names of the migrations applied so far.
    public func appliedMigrations() async throws -> [String] {
        try await rows("SELECT version FROM schema_migrations ORDER BY version", "reading migrations").map { try $0.decode(String.self) }
    }

    // MARK: - Partitions

    public static func partitionName(day: Int64) -> String {
        let date = Date(epochMs: day * dayMs)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        let parts = calendar.dateComponents([.year, .month, .day], from: date)
        return String(format: "results_%04d%02d%02d", parts.year ?? 0, parts.month ?? 0, parts.day ?? 0)
    }

    /// The day partitions that exist, from the catalogue.
    private func loadPartitions() async throws {
        let rows = try await rows(
            """
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'results' AND c.relname <> 'results_default'
            """, "listing partitions")
        var days = Set<Int64>()
        for row in rows {
            let name = try row.decode(String.self)
            if let day = Self.day(ofPartition: name) { days.insert(day) }
        }
        partitionDays.withLock { $0 = days }
    }

    static func day(ofPartition name: String) -> Int64? {
        guard name.hasPrefix("results_"), name.count == 16 else { return nil }
        let digits = name.dropFirst(8)
        guard let year = Int(digits.prefix(4)), let month = Int(digits.dropFirst(4).prefix(2)), let day = Int(digits.suffix(2)) else { return nil }
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(identifier: "UTC")!
        guard let date = calendar.date(from: DateComponents(year: year, month: month, day: day)) else { return nil }
        return date.epochMs / dayMs
    }

    /// Creates the partitions of yesterday through the day after tomorrow when missing. They are
    /// made ahead of the data, so `results_default` only ever gets results older than them (a
    /// new partition must not overlap rows already in the default one).
    public func ensurePartitions(around now: Date) async throws {
        let today = now.epochMs / Self.dayMs
        let wanted = (today - 1...today + 2).filter { day in !partitionDays.withLock { $0.contains(day) } }
        guard !wanted.isEmpty else { return }
        let created = try await transaction("creating partitions") { [logger] connection in
            // One creator at a time across collectors; IF NOT EXISTS then makes it race-free.
            try await connection.query("SELECT pg_advisory_xact_lock(\(Self.partitionLockKey))", logger: logger)
            for day in wanted {
                try await connection.query(
                    PostgresQuery(
                        unsafeSQL: "CREATE TABLE IF NOT EXISTS \(Self.partitionName(day: day)) PARTITION OF results FOR VALUES FROM (\(day * Self.dayMs)) TO (\((day + 1) * Self.dayMs))"
                    ), logger: logger)
            }
            return wanted
        }
        partitionDays.withLock { $0.formUnion(created) }
    }

    /// Partition names, oldest first (for tests and diagnostics).
    public func partitions() async throws -> [String] {
        try await rows(
            """
            SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'results' ORDER BY c.relname
            """, "listing partitions"
        ).map { try $0.decode(String.self) }
    }

    // MARK: - Agents

    public func upsertAgent(_ agent: AgentRecord) async throws {
        // Long: collectors started together enrol the agents of their configs at once, each
        // waiting for the others' table lock (and for a migration still running); found with
        // three collectors on 2 loaded cores, where one gave up after connect_timeout (2 s there).
        try await transaction("enrolling agent \(agent.id)", long: true) { [logger] connection in
            // Serialises enrolments so two collectors cannot give one key to two agents.
            try await connection.query("LOCK TABLE agents IN SHARE ROW EXCLUSIVE MODE", logger: logger)
            let holders = try await Self.all(
                connection, "SELECT id FROM agents WHERE public_key = \(agent.publicKey) AND id <> \(agent.id) LIMIT 1", logger)
            if let holder = try holders.first?.decode(String.self) { throw DuplicateKeyError(agent: agent.id, holder: holder) }
            try await connection.query(
                """
                INSERT INTO agents (id, region, public_key, revoked, enrolled_at, last_seen)
                VALUES (\(agent.id), \(agent.region), \(agent.publicKey), \(agent.revoked), \(agent.enrolledAt.epochMs), \(agent.lastSeen?.epochMs))
                ON CONFLICT (id) DO UPDATE SET region = excluded.region, public_key = excluded.public_key, revoked = excluded.revoked
                """, logger: logger)
        }
    }

    public func revokeAgent(id: String) async throws -> Bool {
        try await !rows("UPDATE agents SET revoked = TRUE WHERE id = \(id) RETURNING id", "revoking agent \(id)").isEmpty
    }

    public func agents() async throws -> [AgentRecord] {
        try await rows("SELECT id, region, public_key, revoked, enrolled_at, last_seen FROM agents ORDER BY region, id", "reading agents")
            .map(Self.agent(from:))
    }

    public func agent(id: String) async throws -> AgentRecord? {
        try await rows("SELECT id, region, public_key, revoked, enrolled_at, last_seen FROM agents WHERE id = \(id)", "reading agent \(id)")
            .first.map(Self.agent(from:))
    }

    private static func agent(from row: PostgresRow) throws -> AgentRecord {
        let (id, region, key, revoked, enrolled, lastSeen) = try row.decode((String, String, String, Bool, Int64, Int64?).self)
        return AgentRecord(
            id: id, region: region, publicKey: key, revoked: revoked, enrolledAt: Date(epochMs: enrolled), lastSeen: lastSeen.map(Date.init(epochMs:)))
    }

    // MARK: - Ingest

    struct SeriesKey: Hashable, Sendable {
        var agent: String, probe: String, component: String, region: String
        init(_ result: ProbeResult) {
            (agent, probe, component, region) = (result.agent, result.probe, result.component, result.region)
        }
        init(agent: String, probe: String, component: String, region: String) {
            (self.agent, self.probe, self.component, self.region) = (agent, probe, component, region)
        }
    }

    static func code(_ outcome: Outcome) -> Int16 {
        switch outcome {
        case .ok: 0
        case .degraded: 1
        case .failed: 2
        }
    }

    public func ingest(batch: BatchRecord, results: [ProbeResult]) async throws -> IngestOutcome {
        try await ingest(group: [PendingBatch(batch: batch, results: results)])[0].get()
    }

    /// All batches in one transaction (one commit), each in its own savepoint so one failing
    /// batch rolls back alone; results go in with one `unnest` insert per batch.
    public func ingest(group: [PendingBatch]) async throws -> [Result<IngestOutcome, any Error>] {
        // Each result's JSON: its exact bytes in the signed body when they can be found, else re-encoded.
        let encoded: [Result<[ByteBuffer], any Error>] = group.map { pending in
            let body = pending.batch.body
            let count = pending.results.count
            var ranges = pending.resultRanges
            if ranges == nil || ranges?.count != count || !(ranges ?? []).allSatisfy({ $0.upperBound <= body.count }) {
                ranges = ResultJSONSlicer.ranges(of: body, expectedCount: count)
            }
            if let ranges { return .success(ranges.map { ByteBuffer(bytes: body[body.startIndex + $0.lowerBound..<body.startIndex + $0.upperBound]) }) }
            let encoder = SondeJSON.encoder()
            return Result { try pending.results.map { ByteBuffer(data: try encoder.encode($0)) } }
        }
        let newest = group.flatMap(\.results).map(\.startedAt).max() ?? Date()
        if !partitionDays.withLock({ $0.contains(newest.epochMs / Self.dayMs) }) { try await ensurePartitions(around: Date()) }
        let series = try await seriesIDs(for: group.flatMap(\.results))
        return try await transaction("storing \(group.count) batches") { [logger] connection in
            var outcomes: [Result<IngestOutcome, any Error>] = []
            outcomes.reserveCapacity(group.count)
            var days = DayCounts()
            for (pending, json) in zip(group, encoded) {
                guard case .success(let json) = json else {
                    if case .failure(let error) = json { outcomes.append(.failure(error)) }
                    continue
                }
                try await connection.query("SAVEPOINT batch", logger: logger)
                do {
                    var batchDays = DayCounts()
                    outcomes.append(.success(try await Self.insert(pending, json, series, &batchDays, connection, logger)))
                    try await connection.query("RELEASE SAVEPOINT batch", logger: logger)
                    days.add(batchDays)
                } catch let error as PSQLError where error.code == .server {
                    try await connection.query("ROLLBACK TO SAVEPOINT batch", logger: logger)
                    outcomes.append(.failure(StorageError("PostgreSQL refused batch \(pending.batch.batchID): \(error.serverInfo?[.message] ?? "error")")))
                }
            }
            try await Self.addToDays(days, connection, logger)
            // Wakes whoever follows ingest (the leading collector), at commit.
            try await connection.query("SELECT pg_notify('sonde_ingest', '')", logger: logger)
            return outcomes
        }
    }

    private static func insert(
        _ pending: PendingBatch, _ json: [ByteBuffer], _ series: [SeriesKey: Int64], _ days: inout DayCounts, _ connection: PostgresConnection,
        _ logger: Logger
    ) async throws -> IngestOutcome {
        let batch = pending.batch
        let inserted = try await all(
            connection,
            """
            INSERT INTO batches (batch_id, agent, received_at, body, signature, result_count)
            VALUES (\(batch.batchID), \(batch.agent), \(batch.receivedAt.epochMs), \(ByteBuffer(data: batch.body)), \(batch.signature), \(pending.results.count))
            ON CONFLICT (batch_id) DO NOTHING RETURNING seq
            """, logger)
        guard let seq = try inserted.first?.decode(Int64.self) else { return .duplicate }
        let results = pending.results
        var new = IndexSet()
        if !results.isEmpty {
            // Only the rows really inserted are new and count towards uptime (a result stored twice counts once).
            let insertedIDs = try await all(
                connection,
                """
                INSERT INTO results (started_at, id, series, outcome, duration_ms, batch, json)
                SELECT s, i, se, o, d, \(seq), j FROM unnest(\(results.map(\.startedAt.epochMs))::BIGINT[], \(results.map(\.id))::TEXT[],
                    \(results.map { series[SeriesKey($0)] ?? 0 })::BIGINT[], \(results.map { code($0.outcome) })::SMALLINT[],
                    \(results.map(\.durationMs))::DOUBLE PRECISION[], \(json)::BYTEA[]) AS t(s, i, se, o, d, j)
                ON CONFLICT DO NOTHING RETURNING started_at, id
                """, logger)
            var inserted = Set<ResultCursor>()
            for row in insertedIDs {
                let (startedAt, id) = try row.decode((Int64, String).self)
                inserted.insert(ResultCursor(startedAtMs: startedAt, id: id))
            }
            new = IngestOutcome.newPositions(of: results, inserted: inserted)
            for position in new { days.count(results[position], from: batch.uptimeFrom) }
        }
        try await connection.query(
            "UPDATE agents SET last_seen = GREATEST(COALESCE(last_seen, 0), \(batch.receivedAt.epochMs)) WHERE id = \(batch.agent)", logger: logger)
        return .stored(new: new)
    }

    /// One upsert in key order: collectors ingesting at once lock the rows in the same order,
    /// so they wait for each other instead of deadlocking.
    private static func addToDays(_ days: DayCounts, _ connection: PostgresConnection, _ logger: Logger) async throws {
        guard !days.counts.isEmpty else { return }
        let keys = days.counts.keys.sorted()
        let values = keys.map { days.counts[$0]! }
        try await connection.query(
            """
            INSERT INTO result_agent_days (component, day, agent, total, failed, degraded)
            SELECT c, d, a, n, f, g FROM unnest(\(keys.map(\.component))::TEXT[], \(keys.map(\.day))::BIGINT[], \(keys.map(\.agent))::TEXT[],
                \(values.map(\.total))::BIGINT[], \(values.map(\.failed))::BIGINT[], \(values.map(\.degraded))::BIGINT[])
                WITH ORDINALITY AS t(c, d, a, n, f, g, o) ORDER BY o
            ON CONFLICT (component, day, agent) DO UPDATE SET total = result_agent_days.total + excluded.total,
                failed = result_agent_days.failed + excluded.failed, degraded = result_agent_days.degraded + excluded.degraded
            """, logger: logger)
    }

    public func uptimeDays(since: Date) async throws -> [UptimeDay] {
        let first = UptimeDay.dayNumber(since)
        let rows = try await rows(
            """
            SELECT component, day, agent, total, failed, degraded FROM result_agent_days WHERE day >= \(first)
            UNION ALL SELECT component, day, '', total, failed, degraded FROM result_days WHERE day >= \(first)
            """,
            "reading uptime history"
        ).map { row in
            let (component, day, agent, total, failed, degraded) = try row.decode((String, Int64, String, Int64, Int64, Int64).self)
            return AgentDayCount(component: component, day: day, agent: agent, total: total, failed: failed, degraded: degraded)
        }
        return UptimeDay.combine(rows)
    }

    /// Series ids for these results' names, adding the new ones (committed on their own, before
    /// the batches, so a cached id always has its row).
    private func seriesIDs(for results: [ProbeResult]) async throws -> [SeriesKey: Int64] {
        let known = seriesCache.withLock { $0 }
        let missing = Array(Set(results.map(SeriesKey.init)).filter { known[$0] == nil })
        guard !missing.isEmpty else { return known }
        let agents = missing.map(\.agent), probes = missing.map(\.probe), components = missing.map(\.component), regions = missing.map(\.region)
        try await execute(
            """
            INSERT INTO series (agent, probe, component, region)
            SELECT * FROM unnest(\(agents)::TEXT[], \(probes)::TEXT[], \(components)::TEXT[], \(regions)::TEXT[]) ON CONFLICT DO NOTHING
            """, "adding series")
        let found = try await rows(
            """
            SELECT s.id, s.agent, s.probe, s.component, s.region FROM series s
            JOIN unnest(\(agents)::TEXT[], \(probes)::TEXT[], \(components)::TEXT[], \(regions)::TEXT[]) AS k(a, p, c, r)
              ON s.agent = k.a AND s.probe = k.p AND s.component = k.c AND s.region = k.r
            """, "reading series")
        var added: [SeriesKey: Int64] = [:]
        for row in found {
            let (id, agent, probe, component, region) = try row.decode((Int64, String, String, String, String).self)
            added[SeriesKey(agent: agent, probe: probe, component: component, region: region)] = id
        }
        return seriesCache.withLock { cache in
            cache.merge(added) { old, _ in old }
            return cache
        }
    }

    /// Every stored batch with the result count it declared and the rows actually stored for it.
    public func batchIntegrity() async throws -> [String: (declared: Int, stored: Int)] {
        var integrity: [String: (declared: Int, stored: Int)] = [:]
        for row in try await rows(
            """
            SELECT b.batch_id, b.result_count, COALESCE(r.n, 0) FROM batches b
            LEFT JOIN (SELECT batch, COUNT(*) AS n FROM results GROUP BY batch) r ON r.batch = b.seq
            """, "checking batches")
        {
            let (id, declared, stored) = try row.decode((String, Int32, Int64).self)
            integrity[id] = (Int(declared), Int(stored))
        }
        return integrity
    }

    // MARK: - Reading results

    private static func decodeResults(_ rows: [PostgresRow]) throws -> [ProbeResult] {
        let decoder = SondeJSON.decoder()
        return try rows.map { row in
            let buffer = try row.decode(ByteBuffer.self)
            do { return try decoder.decode(ProbeResult.self, from: Data(buffer: buffer)) } catch {
                throw StorageError("a stored result no longer decodes (\(error)); the database was changed outside Sonde")
            }
        }
    }

    public func results(_ query: ResultQuery) async throws -> ResultPage {
        // A name with a NUL matches nothing stored (see `incident(id:)`).
        if [query.probe, query.component, query.agent, query.region].contains(where: { $0?.contains("\0") == true }) {
            return ResultPage(results: [], nextCursor: nil)
        }
        var clauses: [String] = []
        var binds = PostgresBindings()
        func add(_ clause: (String) -> String, _ value: some PostgresDynamicTypeEncodable) {
            binds.append(value)
            clauses.append(clause("$\(binds.count)"))
        }
        if let probe = query.probe { add({ "s.probe = \($0)" }, probe) }
        if let component = query.component { add({ "s.component = \($0)" }, component) }
        if let agent = query.agent { add({ "s.agent = \($0)" }, agent) }
        if let region = query.region { add({ "s.region = \($0)" }, region) }
        if !clauses.isEmpty {
            // The series first: a name nobody reports finds nothing without walking every stored
            // run (3.2 s over 3 M rows; HA review, 33rd session, F6), and the runs are then read
            // by their series' index, as on SQLite.
            let series = try await rows(
                PostgresQuery(unsafeSQL: "SELECT s.id FROM series s WHERE " + clauses.joined(separator: " AND "), binds: binds), "finding series"
            ).map { try $0.decode(Int64.self) }
            if series.isEmpty { return ResultPage(results: [], nextCursor: nil) }
            clauses = []
            binds = PostgresBindings()
            add({ "r.series = ANY(\($0))" }, series)
        }
        if let outcome = query.outcome { add({ (outcome == .ok ? "" : "r.outcome > 0 AND ") + "r.outcome = \($0)" }, Self.code(outcome)) }
        if let since = query.since { add({ "r.started_at >= \($0)" }, since.epochMs) }
        if let until = query.until { add({ "r.started_at < \($0)" }, until.epochMs) }
        if let cursor = query.cursor {
            binds.append(cursor.startedAtMs)
            binds.append(cursor.id)
            clauses.append("(r.started_at, r.id) < ($\(binds.count - 1), $\(binds.count))")
        }
        let limit = max(1, query.limit)
        binds.append(Int64(limit + 1))
        let whereSQL = clauses.isEmpty ? "" : "WHERE " + clauses.joined(separator: " AND ")
        let sql = "SELECT r.json FROM results r \(whereSQL) ORDER BY r.started_at DESC, r.id DESC LIMIT $\(binds.count)"
        let fetched = try await rows(PostgresQuery(unsafeSQL: sql, binds: binds), "reading results")
        let sizes = try fetched.map { try $0.decode(ByteBuffer.self).readableBytes }
        return ResultPage(fetched: try Self.decodeResults(fetched), sizes: sizes, limit: limit)
    }

    public func results(since: Date, limit: Int) async throws -> [ProbeResult] {
        try Self.decodeResults(
            try await rows(
                "SELECT json FROM results WHERE started_at >= \(since.epochMs) ORDER BY started_at DESC, id DESC LIMIT \(Int64(limit))",
                "reading recent results", long: true)
        ).reversed()
    }

    public func batches(since: Date?, after: ResultCursor?, limit: Int) async throws -> [BatchRecord] {
        let afterMs = after?.startedAtMs ?? Int64.min
        let afterID = after?.id ?? ""
        return try await rows(
            """
            SELECT batch_id, agent, received_at, body, signature FROM batches
            WHERE received_at >= \(since?.epochMs ?? 0) AND (received_at > \(afterMs) OR (received_at = \(afterMs) AND batch_id > \(afterID)))
            ORDER BY received_at, batch_id LIMIT \(Int64(limit))
            """, "reading batches"
        ).map(Self.batch(from:))
    }

    static func batch(from row: PostgresRow) throws -> BatchRecord {
        let (id, agent, received, body, signature) = try row.decode((String, String, Int64, ByteBuffer, String).self)
        return BatchRecord(batchID: id, agent: agent, receivedAt: Date(epochMs: received), body: Data(buffer: body), signature: signature)
    }

    public func timeline(since: Date, until: Date) async throws -> [TimelineBucket] {
        try await rows(
            """
            SELECT s.component, r.started_at / 3600000 AS hour, COUNT(*), COUNT(*) FILTER (WHERE r.outcome = 2),
                COUNT(*) FILTER (WHERE r.outcome = 1)
            FROM results r JOIN series s ON s.id = r.series
            WHERE r.started_at >= \(since.epochMs) AND r.started_at < \(until.epochMs) GROUP BY s.component, hour ORDER BY s.component, hour
            """, "reading the timeline"
        ).map { row in
            let (component, hour, total, failed, degraded) = try row.decode((String, Int64, Int64, Int64, Int64).self)
            return TimelineBucket(
                component: component, hourStart: Date(epochMs: hour * 3_600_000), total: Int(total), failed: Int(failed), degraded: Int(degraded))
        }
    }

    public func seriesNames() async throws -> [SeriesNames] {
        try await rows("SELECT DISTINCT agent, probe, component FROM series", "reading series").map { row in
            let (agent, probe, component) = try row.decode((String, String, String).self)
            return SeriesNames(agent: agent, probe: probe, component: component)
        }
    }

    public func resultCount() async throws -> Int {
        Int(try await rows("SELECT COUNT(*) FROM results", "counting results").first?.decode(Int64.self) ?? 0)
    }

    // MARK: - Following ingest (the leader's engine sees every collector's results)

    /// The ingest horizon: every batch whose `xid` is below it has committed or never will, so
    /// a reader that has taken all batches below it has missed none (ids are given out before
    /// commit, so "the highest seq seen" would skip a slow transaction's batch).
    public func ingestHorizon() async throws -> Int64 {
        try await rows("SELECT pg_snapshot_xmin(pg_current_snapshot())::TEXT::BIGINT", "reading the ingest horizon").first?.decode(Int64.self) ?? 0
    }

    /// Results of batches with `from <= xid < to`, in commit-independent xid order.
    public func ingested(from: Int64, to: Int64) async throws -> [ProbeResult] {
        guard from < to else { return [] }
        return try Self.decodeResults(
            try await rows(
                """
                SELECT r.json FROM batches b JOIN results r ON r.batch = b.seq
                WHERE b.xid >= \(from) AND b.xid < \(to) ORDER BY b.xid, b.seq
                """, "following ingest", long: true))
    }

    /// The newest `limit` results started at or after `since` (oldest first: past the limit the
    /// oldest are left out, and following starts at the horizon, so the newest would never be
    /// fed; HA review, 33rd session, F7), and the ids among them whose batch is at or above
    /// `horizon` (a follower starting at `horizon` will see those again).
    public func window(since: Date, horizon: Int64, limit: Int) async throws -> (results: [ProbeResult], atOrAbove: Set<String>) {
        let found = try await rows(
            """
            SELECT r.json, b.xid >= \(horizon) FROM results r JOIN batches b ON b.seq = r.batch
            WHERE r.started_at >= \(since.epochMs) ORDER BY r.started_at DESC, r.id DESC LIMIT \(Int64(limit))
            """, "rebuilding the window", long: true)
        let decoder = SondeJSON.decoder()
        var results: [ProbeResult] = []
        var again = Set<String>()
        results.reserveCapacity(found.count)
        for row in found {
            let (json, above) = try row.decode((ByteBuffer, Bool).self)
            let result = try decoder.decode(ProbeResult.self, from: Data(buffer: json))
            results.append(result)
            if above { again.insert(result.id) }
        }
        return (results.reversed(), again)
    }

    /// Waits for the next `NOTIFY sonde_ingest` (sent by every ingest commit) or `timeout`,
    /// whichever first; a listening connection is kept while `notifications` is iterated.
    public func ingestNotifications() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let task = Task { [weak self, logger] in
            while !Task.isCancelled, let client = self?.client {
                do {
                    try await client.withConnection { connection in
                        try await connection.listen(on: "sonde_ingest") { notifications in
                            for try await _ in notifications { continuation.yield() }
                        }
                    }
                } catch {
                    if Task.isCancelled { break }
                    logger.debug("LISTEN sonde_ingest ended; listening again", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                }
            }
            continuation.finish()
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: - Incidents, events, agent states

    /// Fenced (see `enableFencing()`): only the current leader's evaluations are stored.
    public func commit(_ evaluation: EvaluationCommit) async throws {
        guard !evaluation.isEmpty else { return }
        let fence = fenceState
        try await transaction("storing an evaluation") { [logger] connection in
            try await Self.checkFence(fence, connection, logger)
            try await Self.write(evaluation, connection, logger)
        }
    }

    /// Not fenced: for events any collector may queue (test alerts); ids make it idempotent.
    public func queueUnfenced(_ evaluation: EvaluationCommit) async throws {
        guard !evaluation.isEmpty else { return }
        try await transaction("queueing events") { [logger] connection in try await Self.write(evaluation, connection, logger) }
    }

    static func write(_ evaluation: EvaluationCommit, _ connection: PostgresConnection, _ logger: Logger) async throws {
        let now = Date().epochMs
        for incident in evaluation.incidents {
            try await connection.query(
                """
                INSERT INTO incidents (id, component, status, opened_at, updated_at, resolved_at, json)
                VALUES (\(incident.id), \(incident.component), \(incident.status), \(incident.openedAt.epochMs), \(incident.updatedAt.epochMs),
                    \(incident.resolvedAt?.epochMs), \(ByteBuffer(data: incident.json)))
                ON CONFLICT (id) DO UPDATE SET component = excluded.component, status = excluded.status,
                    updated_at = excluded.updated_at, resolved_at = excluded.resolved_at, json = excluded.json
                """, logger: logger)
        }
        for event in evaluation.events {
            try await connection.query(
                """
                INSERT INTO events (id, type, occurred_at, created_at, payload)
                VALUES (\(event.id), \(event.type), \(event.occurredAt.epochMs), \(now), \(ByteBuffer(data: event.payload))) ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        for key in evaluation.deliveries {
            try await connection.query(
                """
                INSERT INTO deliveries (event_id, target, status, attempts, next_attempt_at, occurred_at)
                SELECT id, \(key.target), 'pending', 0, \(now), occurred_at FROM events WHERE id = \(key.eventID) ON CONFLICT DO NOTHING
                """, logger: logger)
        }
        for (agent, json) in evaluation.agentStates {
            try await connection.query(
                """
                INSERT INTO agent_states (agent, json, updated_at) VALUES (\(agent), \(ByteBuffer(data: json)), \(now))
                ON CONFLICT (agent) DO UPDATE SET json = excluded.json, updated_at = excluded.updated_at
                """, logger: logger)
        }
    }

    private static let incidentColumns = "id, component, status, opened_at, updated_at, resolved_at, json"

    public func incidents(_ filter: IncidentFilter, limit: Int) async throws -> [IncidentRecord] {
        let condition =
            switch filter {
            case .open: "WHERE status <> 'resolved'"
            case .resolved: "WHERE status = 'resolved'"
            case .all: ""
            }
        return try await rows(
            PostgresQuery(
                unsafeSQL: "SELECT \(Self.incidentColumns) FROM incidents \(condition) ORDER BY opened_at DESC, id LIMIT $1",
                binds: { var binds = PostgresBindings(); binds.append(Int64(limit)); return binds }()),
            "reading incidents"
        ).map(Self.incident(from:))
    }

    public func incident(id: String) async throws -> IncidentRecord? {
        // PostgreSQL text holds no NUL (it refuses the query), and no stored id has one: not found,
        // as SQLite answers (found by the HA review, F4: 500 and an error log line per request).
        guard !id.contains("\0") else { return nil }
        return try await rows("SELECT id, component, status, opened_at, updated_at, resolved_at, json FROM incidents WHERE id = \(id)", "reading incident")
            .first.map(Self.incident(from:))
    }

    private static func incident(from row: PostgresRow) throws -> IncidentRecord {
        let (id, component, status, opened, updated, resolved, json) = try row.decode((String, String, String, Int64, Int64, Int64?, ByteBuffer).self)
        return IncidentRecord(
            id: id, component: component, status: status, openedAt: Date(epochMs: opened), updatedAt: Date(epochMs: updated),
            resolvedAt: resolved.map(Date.init(epochMs:)), json: Data(buffer: json))
    }

    public func agentStates() async throws -> [String: Data] {
        var states: [String: Data] = [:]
        for row in try await rows("SELECT agent, json FROM agent_states", "reading agent states") {
            let (agent, json) = try row.decode((String, ByteBuffer).self)
            states[agent] = Data(buffer: json)
        }
        return states
    }

    // MARK: - Deliveries

    private static let deliverySelect = """
        SELECT d.event_id, e.type, d.occurred_at, e.payload, d.target, d.status, d.attempts, d.next_attempt_at, d.last_error, d.delivered_at
        FROM deliveries d JOIN events e ON e.id = d.event_id
        """

    private static func delivery(from row: PostgresRow) throws -> DeliveryRecord {
        let (eventID, type, occurred, payload, target, status, attempts, next, lastError, delivered) = try row.decode(
            (String, String, Int64, ByteBuffer, String, String, Int32, Int64, String?, Int64?).self)
        return DeliveryRecord(
            event: OutboxEvent(id: eventID, type: type, occurredAt: Date(epochMs: occurred), payload: Data(buffer: payload)), target: target,
            status: DeliveryStatus(rawValue: status) ?? .pending, attempts: Int(attempts), nextAttemptAt: Date(epochMs: next), lastError: lastError,
            deliveredAt: delivered.map(Date.init(epochMs:)))
    }

    public func nextPendingDelivery(target: String) async throws -> DeliveryRecord? {
        try await rows(
            PostgresQuery(
                unsafeSQL: Self.deliverySelect + " WHERE d.target = $1 AND d.status = 'pending' ORDER BY d.occurred_at, d.event_id LIMIT 1",
                binds: { var binds = PostgresBindings(); binds.append(target); return binds }()),
            "reading the webhook outbox"
        ).first.map(Self.delivery(from:))
    }

    /// A fenced statement in its own transaction.
    private func fenced(_ what: String, _ query: PostgresQuery) async throws {
        let fence = fenceState
        try await transaction(what) { [logger] connection in
            try await Self.checkFence(fence, connection, logger)
            try await connection.query(query, logger: logger)
        }
    }

    /// Not fenced, and one autocommitted statement: a 2xx the target gave is a fact whoever sent
    /// the request, and until it is stored a failover resends the event (same `Sonde-Event-Id`).
    /// Refusing it to a leader that just stepped down, or spending round trips on a transaction,
    /// would only widen that at-least-once window.
    public func markDelivered(eventID: String, target: String, at: Date) async throws {
        try await execute(
            """
            UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, delivered_at = \(at.epochMs), last_error = NULL
            WHERE event_id = \(eventID) AND target = \(target) AND status <> 'delivered'
            """, "recording a delivery")
    }

    public func markFailed(eventID: String, target: String, attempts: Int, nextAttemptAt: Date, error: String) async throws {
        try await fenced(
            "recording a failed delivery",
            """
            UPDATE deliveries SET attempts = \(Int32(clamping: attempts)), next_attempt_at = \(nextAttemptAt.epochMs), last_error = \(error)
            WHERE event_id = \(eventID) AND target = \(target) AND status = 'pending'
            """)
    }

    public func markDead(eventID: String, target: String, attempts: Int, error: String, at: Date) async throws {
        let fence = fenceState
        try await transaction("dead-lettering a delivery") { [logger] connection in
            try await Self.checkFence(fence, connection, logger)
            let changed = try await Self.all(
                connection,
                """
                UPDATE deliveries SET status = 'dead', attempts = \(Int32(clamping: attempts)), last_error = \(error)
                WHERE event_id = \(eventID) AND target = \(target) AND status = 'pending' RETURNING event_id
                """, logger)
            guard !changed.isEmpty else { return }
            try await connection.query(
                """
                INSERT INTO dead_letters (event_id, target, attempts, last_error, dead_at)
                VALUES (\(eventID), \(target), \(Int32(clamping: attempts)), \(error), \(at.epochMs))
                ON CONFLICT (event_id, target) DO UPDATE SET attempts = excluded.attempts, last_error = excluded.last_error, dead_at = excluded.dead_at
                """, logger: logger)
        }
    }

    public func deadLetters(limit: Int) async throws -> [DeadLetterRecord] {
        try await rows(
            """
            SELECT l.event_id, e.type, l.target, l.attempts, l.last_error, e.occurred_at, l.dead_at FROM dead_letters l JOIN events e ON e.id = l.event_id
            ORDER BY l.dead_at DESC, l.event_id DESC LIMIT \(Int64(limit))
            """, "reading dead letters"
        ).map { row in
            let (eventID, type, target, attempts, lastError, occurred, dead) = try row.decode((String, String, String, Int32, String, Int64, Int64).self)
            return DeadLetterRecord(
                eventID: eventID, eventType: type, target: target, attempts: Int(attempts), lastError: lastError,
                occurredAt: Date(epochMs: occurred), deadAt: Date(epochMs: dead))
        }
    }

    public func deadLetterCount() async throws -> Int {
        Int(try await rows("SELECT COUNT(*) FROM dead_letters", "counting dead letters").first?.decode(Int64.self) ?? 0)
    }

    public func redrive(eventID: String, target: String?) async throws -> [String] {
        try await transaction("re-driving dead letters") { [logger] connection in
            let targets = try await Self.all(
                connection,
                "DELETE FROM dead_letters WHERE event_id = \(eventID) AND (\(target)::TEXT IS NULL OR target = \(target)) RETURNING target", logger
            ).map { try $0.decode(String.self) }.sorted()
            for name in targets {
                try await connection.query(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, next_attempt_at = \(Date().epochMs) WHERE event_id = \(eventID) AND target = \(name)",
                    logger: logger)
            }
            return targets
        }
    }

    public func renameDeliveryTarget(from old: String, to new: String) async throws {
        try await transaction("renaming a webhook target's deliveries") { [logger] connection in
            try await connection.query(
                "UPDATE dead_letters SET target = \(new) WHERE target = \(old) AND event_id NOT IN (SELECT event_id FROM dead_letters WHERE target = \(new))",
                logger: logger)
            try await connection.query(
                "UPDATE deliveries SET target = \(new) WHERE target = \(old) AND event_id NOT IN (SELECT event_id FROM deliveries WHERE target = \(new))",
                logger: logger)
        }
    }

    public func checkWritable() async throws {
        try await execute(
            "INSERT INTO health (id, checked_at) VALUES (1, \(Date().epochMs)) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
            "the health check")
    }

    public func deliveries() async throws -> [DeliveryRecord] {
        try await rows(PostgresQuery(unsafeSQL: Self.deliverySelect + " ORDER BY d.occurred_at, d.event_id, d.target"), "reading deliveries")
            .map(Self.delivery(from:))
    }

    // MARK: - Retention

    /// Drops every day partition that ends at or before `cutoff` (a whole partition: no row-by-row
    /// delete, no bloat), deletes older rows from `results_default`, then batches, resolved
    /// incidents and delivered events as SQLite does. Results in the day that contains `cutoff`
    /// stay until that whole day is past retention. A day still in use (a long read holds its
    /// lock for more than 2 s) stays for the next pass; the rows go 10,000 per statement.
    public func prune(before cutoff: Date) async throws -> PruneReport {
        try await ensurePartitions(around: Date())
        let ms = cutoff.epochMs
        let expired = partitionDays.withLock { days in days.filter { ($0 + 1) * Self.dayMs <= ms }.sorted() }
        // Many short steps, each its own transaction, instead of one: a single pass under one
        // deadline, with the partitions' DROP (an ACCESS EXCLUSIVE lock on `results`) held to its
        // commit, queued every collector's ingest behind a reader of an expired day, and past 2 M
        // expired batches it failed every time, rolled back, and pruned nothing (HA review, 33rd
        // session, F4).
        var report = PruneReport()
        for day in expired {
            let name = Self.partitionName(day: day)
            // The planner's count for an analysed day (a big one always is), else a real one.
            let estimate = try await rows(
                "SELECT CASE WHEN reltuples >= 0 THEN reltuples::BIGINT END FROM pg_class WHERE oid = to_regclass(\(name))", "counting a partition"
            )
            guard let found = estimate.first else { continue }  // gone already (another collector)
            var count = try found.decode(Int64?.self)
            if count == nil || count == 0 {
                count = try await rows(PostgresQuery(unsafeSQL: "SELECT COUNT(*) FROM \(name)"), "counting a partition", long: true).first?.decode(Int64.self)
            }
            do {
                try await transaction("dropping the partition \(name)") { [logger] connection in
                    // Waits for its lock a moment at most: ingest queues behind a waiting DROP, so
                    // a long reader of that day makes this pass leave it, not every push wait.
                    try await connection.query("SET LOCAL lock_timeout = 2000", logger: logger)
                    try await connection.query("SELECT pg_advisory_xact_lock(\(Self.partitionLockKey))", logger: logger)
                    try await connection.query(PostgresQuery(unsafeSQL: "DROP TABLE IF EXISTS \(name)"), logger: logger)
                }
            } catch {
                logger.warning(
                    "An expired day of results is in use (a long read or a dump of it); the next retention pass drops it",
                    metadata: ["partition": .string(name), "error": "\(error)"])
                continue
            }
            partitionDays.withLock { _ = $0.remove(day) }
            report.results += Int(count ?? 0)
        }
        report.results += try await deleteInChunks("results_default", where: "started_at < \(ms)", "pruning old results")
        // The daily rollup outlives results: uptime history is kept `UptimeDay.keptDays`.
        let oldestDay = UptimeDay.dayNumber(Date()) - UptimeDay.keptDays
        try await execute("DELETE FROM result_days WHERE day < \(oldestDay)", "pruning the daily rollup")
        try await execute("DELETE FROM result_agent_days WHERE day < \(oldestDay)", "pruning the daily rollup")
        // A body goes once no result still points into it.
        report.batches = try await deleteInChunks(
            "batches", where: "received_at < \(ms) AND NOT EXISTS (SELECT 1 FROM results r WHERE r.batch = batches.seq)", "pruning old batches")
        report.incidents = try await deleteInChunks("incidents", where: "status = 'resolved' AND resolved_at < \(ms)", "pruning old incidents")
        // An event goes only once nothing is left to deliver, so retention never loses an alert.
        try await execute(
            """
            DELETE FROM deliveries WHERE event_id IN (SELECT id FROM events WHERE created_at < \(ms))
                AND event_id NOT IN (SELECT event_id FROM deliveries WHERE status = 'pending')
            """, "pruning old deliveries")
        report.events = try await deleteInChunks(
            "events", where: "created_at < \(ms) AND id NOT IN (SELECT event_id FROM deliveries)", "pruning old events")
        return report
    }

    /// Deletes `table`'s rows matching `condition` 10,000 at a time, each chunk its own short
    /// statement (so locks and the pass's work are bounded, and what was deleted stays deleted
    /// when a later chunk fails); the number deleted.
    private func deleteInChunks(_ table: String, where condition: String, _ what: String) async throws -> Int {
        let chunk = 10_000
        var deleted = 0
        while true {
            let n = try await rows(
                PostgresQuery(
                    unsafeSQL: """
                        WITH gone AS (DELETE FROM \(table) WHERE ctid IN (SELECT ctid FROM \(table) WHERE \(condition) LIMIT \(chunk)) RETURNING 1)
                        SELECT COUNT(*) FROM gone
                        """), what
            ).first?.decode(Int64.self) ?? 0
            deleted += Int(n)
            if n < chunk { return deleted }
        }
    }

    /// Runs raw SQL (tests use it to tamper with stored rows).
    public func executeForTesting(_ sql: String) async throws {
        try await execute(PostgresQuery(unsafeSQL: sql), "a test statement")
    }
}
