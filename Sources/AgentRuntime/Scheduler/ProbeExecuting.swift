import CurlHTTP
import ProbeEngine
import SondeCore

/// Runs one probe and returns its result (every failure is data, never a thrown error). The
/// engine's `ProbeRunner` is the real one; tests drive the scheduler with their own.
public protocol ProbeExecuting: Sendable {
    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult

    /// Where the scheduler's probe loops should run; nil for Swift's default pool.
    var preferredTaskExecutor: (any TaskExecutor)? { get }

    /// How a probe loop waits for its next slot.
    func sleep(until deadline: ContinuousClock.Instant) async throws
}

extension ProbeExecuting {
    public var preferredTaskExecutor: (any TaskExecutor)? { nil }

    public func sleep(until deadline: ContinuousClock.Instant) async throws {
        try await Task.sleep(until: deadline, clock: ContinuousClock())
    }
}

/// The real runner's loops live on its HTTP client's loop thread: the slot's timer, the run's
/// transfers and the recording of its result then happen on one thread, with no hand-off between
/// threads per run (see `CurlHTTPClient.taskExecutor`).
extension ProbeRunner: ProbeExecuting {
    public var preferredTaskExecutor: (any TaskExecutor)? { client.taskExecutor }

    public func sleep(until deadline: ContinuousClock.Instant) async throws {
        try await client.sleep(until: deadline)
    }
}
