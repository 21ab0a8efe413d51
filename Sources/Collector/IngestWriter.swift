import CollectorStore
import Logging
import ServiceLifecycle
import Synchronization

/// Group commit for ingest: pushes that arrive while a write is in progress are stored together
/// in the next transaction (`CollectorStorage.ingest(group:)`), each batch still all-or-nothing
/// and acknowledged only after the commit. One commit per group instead of one per batch was the
/// largest single saving measured on the ingest path (see BENCHMARKS.md).
///
/// A `Service`: its loop runs in the collector's ServiceGroup. The HTTP server shuts down first
/// (finishing in-flight pushes), then this writer stores what is queued and stops.
final class IngestWriter: Service, Sendable {
    private struct Waiting {
        var pending: PendingBatch
        var continuation: CheckedContinuation<IngestOutcome, any Error>
    }
    private struct State {
        var queue: [Waiting] = []
        var finished = false
    }

    private let store: any CollectorStorage
    private let maxGroup: Int
    private let logger: Logger
    private let state = Mutex(State())
    private let wake: AsyncStream<Void>
    private let wakeContinuation: AsyncStream<Void>.Continuation

    /// - Parameter maxGroup: the most batches per transaction.
    init(store: any CollectorStorage, maxGroup: Int = 64, logger: Logger) {
        self.store = store
        self.maxGroup = maxGroup
        self.logger = logger
        (wake, wakeContinuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
    }

    /// Queues a batch and returns once it is committed (or refused).
    func store(_ pending: PendingBatch) async throws -> IngestOutcome {
        try await withCheckedThrowingContinuation { continuation in
            let accepted = state.withLock { state -> Bool in
                guard !state.finished else { return false }
                state.queue.append(Waiting(pending: pending, continuation: continuation))
                return true
            }
            if accepted {
                wakeContinuation.yield()
            } else {
                continuation.resume(throwing: StorageError("the collector is shutting down"))
            }
        }
    }

    func run() async throws {
        await withGracefulShutdownHandler {
            for await _ in wake {
                await drain()
                if state.withLock({ $0.finished }) { break }
            }
        } onGracefulShutdown: {
            self.state.withLock { $0.finished = true }
            self.wakeContinuation.yield()
            self.wakeContinuation.finish()
        }
        // Whatever is still queued is stored before the writer stops.
        await drain()
    }

    private func drain() async {
        while true {
            let group = state.withLock { state -> [Waiting] in
                let group = Array(state.queue.prefix(maxGroup))
                state.queue.removeFirst(group.count)
                return group
            }
            guard !group.isEmpty else { return }
            do {
                let outcomes = try await store.ingest(group: group.map(\.pending))
                for (waiting, outcome) in zip(group, outcomes) { waiting.continuation.resume(with: outcome) }
            } catch {
                logger.error("Cannot store a group of batches", metadata: ["batches": "\(group.count)", "error": "\(error)"])
                for waiting in group { waiting.continuation.resume(throwing: error) }
            }
        }
    }
}
