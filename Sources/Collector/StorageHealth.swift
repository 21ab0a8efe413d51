import CollectorStore
import Foundation
import Logging
import Synchronization

/// Whether storage takes writes, for `/healthz`: a tiny committed write proves it (at most once a
/// second, so a flood of health checks costs at most one fsync a second), and a failed ingest
/// commit marks it down for 10 s or until an ingest commit succeeds (a small health row can
/// still fit on a disk too full for a batch; the expiry lets a load balancer send agents back).
final class StorageHealth: Sendable {
    private struct State {
        var checkedAt: ContinuousClock.Instant?
        var writable = true
        var ingestFailedAt: ContinuousClock.Instant?
    }
    private let store: any CollectorStorage
    private let logger: Logger
    private let state = Mutex(State())

    init(store: any CollectorStorage, logger: Logger) {
        self.store = store
        self.logger = logger
    }

    static let checkLimit: Duration = .seconds(1)

    func ingestFailed() { state.withLock { $0.ingestFailedAt = .now } }
    func ingestSucceeded() { state.withLock { $0.ingestFailedAt = nil } }

    func canWrite() async -> Bool {
        let now = ContinuousClock.now
        let ingestFailing = state.withLock { state in state.ingestFailedAt.map { $0.duration(to: now) < .seconds(10) } ?? false }
        if ingestFailing { return false }
        let cached = state.withLock { state -> Bool? in
            if let at = state.checkedAt, at.duration(to: now) < .seconds(1) { return state.writable }
            return nil
        }
        if let cached { return cached }
        // A database that does not answer (down, or its connection pool waiting to reconnect)
        // is as unhealthy as one that refuses: answer in a second, so a load balancer's check
        // sees 503 rather than its own time-out.
        var writable = true
        let store = store
        do { try await withDeadline(Self.checkLimit) { try await store.checkWritable() } } catch {
            writable = false
            logger.error(
                "Storage cannot take writes; /healthz answers 503",
                metadata: ["error": "\(error is DeadlineExceeded ? "no answer within \(Self.checkLimit)" : "\(error)")"])
        }
        return state.withLock { state in
            state.checkedAt = now
            state.writable = writable
            return writable
        }
    }
}
