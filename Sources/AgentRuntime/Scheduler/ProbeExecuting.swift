import CurlHTTP
import ProbeEngine
import SondeCore
import Synchronization

/// Runs one probe and returns its result (every failure is data, never a thrown error). The
/// engine's `ProbeRunner` is the real one; tests drive the scheduler with their own.
public protocol ProbeExecuting: Sendable {
    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult

    /// Where the scheduler's probe loops should run; nil for Swift's default pool.
    var preferredTaskExecutor: (any TaskExecutor)? { get }

    /// How a probe loop waits for its next run; `wake` may end the wait early (a collector's
    /// confirmation request).
    func sleep(until deadline: ContinuousClock.Instant, wake: EarlyWake) async throws
}

extension ProbeExecuting {
    public var preferredTaskExecutor: (any TaskExecutor)? { nil }

    /// On Swift's default pool (tests' executors): a timer task fires the sleep's `LoopTimer`
    /// at the deadline, so `wake` can fire it sooner.
    public func sleep(until deadline: ContinuousClock.Instant, wake: EarlyWake) async throws {
        let ticker = TickerTask()
        defer { ticker.cancel() }  // woken early: the timer task need not sleep on to the deadline
        try await LoopTimer.sleep(until: deadline) { timer in
            ticker.start {
                try? await Task.sleep(until: deadline, clock: ContinuousClock())
                timer.fire()
            }
            wake.armed(timer)
        } unschedule: { _ in
            ticker.cancel()
        }
    }
}

/// The real runner's loops live on its HTTP client's loop thread: the slot's timer, the run's
/// transfers and the recording of its result then happen on one thread, with no hand-off between
/// threads per run (see `CurlHTTPClient.taskExecutor`).
extension ProbeRunner: ProbeExecuting {
    public var preferredTaskExecutor: (any TaskExecutor)? { client.taskExecutor }

    public func sleep(until deadline: ContinuousClock.Instant, wake: EarlyWake) async throws {
        try await client.sleep(until: deadline) { wake.armed($0) }
    }
}

/// The timer task of a default-pool sleep, cancelled with the sleep.
private final class TickerTask: Sendable {
    private let task = Mutex<Task<Void, Never>?>(nil)
    func start(_ body: @escaping @Sendable () async -> Void) { task.withLock { $0 = Task { await body() } } }
    func cancel() { task.withLock { $0?.cancel() } }
}

/// Ends a probe loop's sleep before its deadline: the collector asked to confirm a component
/// the probe exercises. The sleeping side hands over its timer (`armed`) and takes it back when
/// the sleep ends (`slept`); a wake that comes while no sleep is pending ends the next one at once.
public final class EarlyWake: Sendable {
    private struct State {
        var timer: LoopTimer?
        var requested = false
        var confirmUntil: ContinuousClock.Instant?
        /// A control probe's run asked now (another probe's run failed): ``checkNow()``.
        var checkRequested = false
    }
    private let state = Mutex(State())

    public init() {}

    /// The sleep's timer is pending; fired at once when a wake came first.
    public func armed(_ timer: LoopTimer) {
        let now = state.withLock { s -> Bool in
            if s.requested {
                s.requested = false
                return true
            }
            s.timer = timer
            return false
        }
        if now { timer.fire() }
    }

    /// The sleep ended (by its deadline or early).
    func slept() { state.withLock { $0.timer = nil } }

    /// Asks for runs at the retry pace until `until`, and ends the current sleep.
    func confirm(until: ContinuousClock.Instant) {
        wake { $0.confirmUntil = max($0.confirmUntil ?? until, until) }
    }

    /// Asks a control probe's loop for one run now, and ends the current sleep.
    func checkNow() {
        wake { $0.checkRequested = true }
    }

    /// Notes the request, then ends the pending sleep (or the next one, if none is pending).
    private func wake(_ note: (inout State) -> Void) {
        let timer = state.withLock { s -> LoopTimer? in
            note(&s)
            guard let timer = s.timer else {
                s.requested = true
                return nil
            }
            s.timer = nil
            return timer
        }
        timer?.fire()
    }

    /// Whether a run now was asked (``checkNow()``); the request is taken.
    func takeCheck() -> Bool {
        state.withLock { s in
            defer { s.checkRequested = false }
            return s.checkRequested
        }
    }

    /// Until when the collector asked for confirmation runs (nil: never).
    var confirmUntil: ContinuousClock.Instant? { state.withLock { $0.confirmUntil } }
}
