import Foundation
import Logging
import NIOCore
import PostgresNIO
import SondeCore
import Synchronization

/// Leader election among collectors sharing one PostgreSQL: a session advisory lock held on a
/// dedicated connection (not pooled), plus a fencing epoch in the `leader` row.
///
/// - Becoming leader: `pg_try_advisory_lock` succeeds, then `leader.epoch` is incremented; the
///   store checks that epoch in every transaction writing incidents, outbox or deliveries.
/// - Staying leader: a heartbeat every `heartbeat` on the lock's session. The session runs with
///   `idle_session_timeout = lease`, so a leader cut off from the database loses the lock on the
///   server after `lease` at the latest, while it steps down itself as soon as one heartbeat
///   fails or takes longer than `heartbeat` (well before the lease ends: it never acts as leader
///   while another could).
/// - A leader that dies (SIGKILL, host gone) drops its connection: the server frees the lock at
///   once (or after `lease` when the host vanished without a FIN), and a standby, trying every
///   `heartbeat`, takes over.
public final class PostgresLeadership: Sendable {
    public enum Role: Sendable, Equatable {
        case leader(epoch: Int64)
        case standby
    }

    public struct Snapshot: Sendable, Equatable {
        public var role: Role
        /// The collector holding the lease as last read from the `leader` row (nil when unknown).
        public var leaderName: String?
        public var epoch: Int64
        public var isLeader: Bool { if case .leader = role { true } else { false } }
    }

    static let lockKey: Int64 = 0x736F_6E64_6503

    public let name: String
    let store: PostgresCollectorStore
    let heartbeat: Duration
    let lease: Duration
    let logger: Logger
    private let state = Mutex(Snapshot(role: .standby, leaderName: nil, epoch: 0))
    private let changes: AsyncStream<Role>
    private let changesContinuation: AsyncStream<Role>.Continuation

    public init(store: PostgresCollectorStore, name: String, heartbeat: Duration = .milliseconds(500), lease: Duration = .seconds(3), logger: Logger) {
        self.store = store
        self.name = name
        self.heartbeat = heartbeat
        self.lease = lease
        self.logger = logger
        (changes, changesContinuation) = AsyncStream.makeStream(of: Role.self, bufferingPolicy: .unbounded)
        store.enableFencing()
    }

    public var snapshot: Snapshot { state.withLock { $0 } }

    /// Role changes, in order (each promotion and each step-down).
    public var roleChanges: AsyncStream<Role> { changes }

    /// Campaigns until cancelled; steps down (and releases the lock) on the way out.
    public func run() async {
        var connectFailed = false
        while !Task.isCancelled {
            var connection: PostgresConnection?
            do {
                let opened: PostgresConnection
                do {
                    opened = try await withDeadline(.seconds(Int64(store.url.connectTimeout))) { [store, logger] in
                        try await PostgresConnection.connect(configuration: try store.url.connectionConfiguration(), id: 1, logger: logger)
                    }
                } catch {
                    connectFailed = true
                    throw error
                }
                connection = opened
                // The database is back: the pool may still be waiting out its reconnect backoff.
                if connectFailed { store.databaseAnswered() }
                connectFailed = false
                let leaseMs = lease.wholeMilliseconds
                try await opened.query(PostgresQuery(unsafeSQL: "SET idle_session_timeout = \(leaseMs)"), logger: logger)
                // Taking the lead waits for no lock longer than a heartbeat: a frozen leader's
                // transaction holding the leader row kept the UPDATE waiting on the server after
                // this collector gave up, holding the advisory lock with it, so nobody led until
                // the freeze ended (HA review, 33rd session, F2). The session ends instead, the
                // lock with it; the frozen transaction ends by `idle_in_transaction_session_timeout`.
                let heartbeatMs = heartbeat.wholeMilliseconds
                try await opened.query(PostgresQuery(unsafeSQL: "SET lock_timeout = \(heartbeatMs)"), logger: logger)
                try await opened.query(PostgresQuery(unsafeSQL: "SET statement_timeout = \(heartbeatMs * 2)"), logger: logger)
                try await campaign(on: opened)
            } catch {
                if !Task.isCancelled {
                    logger.warning("Leader election: no session with the database; standing by", metadata: ["error": "\(describe(error))"])
                }
            }
            stepDown(reason: "lost the database session")
            if let connection { try? await connection.close() }
            if Task.isCancelled { break }
            try? await Task.sleep(for: heartbeat)
        }
        stepDown(reason: "shutting down")
        changesContinuation.finish()
    }

    /// Tries for the lock every `heartbeat`; once held, heartbeats until one fails.
    private func campaign(on connection: PostgresConnection) async throws {
        let clock = ContinuousClock()
        while !Task.isCancelled {
            let started = clock.now
            let got = try await withDeadline(heartbeat * 2) { [logger] in
                try await connection.query("SELECT pg_try_advisory_lock(\(Self.lockKey))", logger: logger).collect().first?.decode(Bool.self) ?? false
            }
            if got {
                let epoch = try await withDeadline(heartbeat * 2) { [name, logger] in
                    try await connection.query(
                        "UPDATE leader SET epoch = epoch + 1, holder = \(name), since = \(Int64(Date().timeIntervalSince1970 * 1000)) WHERE id = 1 RETURNING epoch",
                        logger: logger
                    ).collect().first?.decode(Int64.self) ?? 0
                }
                promote(epoch: epoch)
                while !Task.isCancelled {
                    try await Task.sleep(for: heartbeat)
                    // A heartbeat slower than `heartbeat` counts as lost: step down long before the lease.
                    try await withDeadline(heartbeat) { [logger] in
                        _ = try await connection.query("SELECT 1", logger: logger).collect()
                    }
                }
                return
            }
            let holder = try? await withDeadline(heartbeat * 2) { [logger] in
                try await connection.query("SELECT holder, epoch FROM leader WHERE id = 1", logger: logger).collect().first?.decode((String, Int64).self)
            }
            if let holder { state.withLock { $0.leaderName = holder.0.isEmpty ? nil : holder.0; $0.epoch = holder.1 } }
            try await Task.sleep(until: started.advanced(by: heartbeat))
        }
    }

    private func promote(epoch: Int64) {
        store.setLeaderEpoch(epoch)
        state.withLock { $0 = Snapshot(role: .leader(epoch: epoch), leaderName: name, epoch: epoch) }
        logger.notice("Leading: this collector evaluates and sends webhooks", metadata: ["collector": .string(name), "leader.epoch": "\(epoch)"])
        changesContinuation.yield(.leader(epoch: epoch))
    }

    private func stepDown(reason: String) {
        let was = state.withLock { snapshot -> Bool in
            let was = snapshot.isLeader
            snapshot.role = .standby
            if was { snapshot.leaderName = nil }
            return was
        }
        // The fence first: no write of this collector's passes once it is not sure to lead.
        store.setLeaderEpoch(nil)
        guard was else { return }
        logger.warning("Stepped down: standing by", metadata: ["collector": .string(name), "reason": .string(reason)])
        changesContinuation.yield(.standby)
    }

    /// The server's own words when it gave any ("cannot execute UPDATE in a read-only
    /// transaction (SQLSTATE 25006)"), not only PostgresNIO's `server`.
    private func describe(_ error: any Error) -> String {
        guard let error = error as? PSQLError else { return "\(error)" }
        if let message = error.serverInfo?[.message] {
            return "\(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))"
        }
        return "\(error.code)"
    }
}

public struct DeadlineExceeded: Error, CustomStringConvertible {
    public var description: String { "no answer in time" }
}

/// Runs `body`, throwing `DeadlineExceeded` when it takes longer than `limit`. Returns at the
/// deadline even when `body` ignores cancellation (a query on a connection that went silent):
/// `body` is cancelled and left to end on its own; the caller then closes what it used.
public func withDeadline<T: Sendable>(_ limit: Duration, _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let race = DeadlineRace<T>()
    return try await withTaskCancellationHandler {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<T, any Error>) in
            race.start(continuation, limit: limit, body)
        }
    } onCancel: {
        race.finish(.failure(CancellationError()))
    }
}

/// The first of the work, the timer and cancellation resumes the caller; the others are cancelled.
final class DeadlineRace<T: Sendable>: Sendable {
    private let state = Mutex<(continuation: CheckedContinuation<T, any Error>?, tasks: [Task<Void, Never>], done: Bool)>((nil, [], false))

    func start(_ continuation: CheckedContinuation<T, any Error>, limit: Duration, _ body: @escaping @Sendable () async throws -> T) {
        let alreadyDone = state.withLock { state -> Bool in
            if state.done { return true }
            state.continuation = continuation
            return false
        }
        if alreadyDone {
            continuation.resume(throwing: CancellationError())
            return
        }
        let work = Task { self.finish(await Result { try await body() }) }
        let timer = Task {
            try? await Task.sleep(for: limit)
            self.finish(.failure(DeadlineExceeded()))
        }
        let cancelNow = state.withLock { state -> Bool in
            state.tasks = [work, timer]
            return state.done
        }
        if cancelNow { for task in [work, timer] { task.cancel() } }
    }

    func finish(_ result: Result<T, any Error>) {
        let (continuation, tasks) = state.withLock { state -> (CheckedContinuation<T, any Error>?, [Task<Void, Never>]) in
            state.done = true
            let continuation = state.continuation
            state.continuation = nil
            return (continuation, state.tasks)
        }
        guard let continuation else { return }
        continuation.resume(with: result)
        for task in tasks { task.cancel() }
    }
}

extension Result where Failure == any Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
