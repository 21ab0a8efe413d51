import Synchronization

/// One `sleep(until:)` on a thread that runs its own timers (the curl loop, the spool's journal
/// writer): the thread's wait for work ends at the next deadline, so a task that prefers that
/// thread wakes up without a hand-off from Dispatch's timer thread. Whoever takes the
/// continuation out (the thread firing it, or the cancel handler) resumes it, exactly once.
public final class LoopTimer: Sendable {
    public let deadline: ContinuousClock.Instant
    private struct Slot {
        var continuation: CheckedContinuation<Bool, Never>?
        var cancelled = false
    }
    private let slot = Mutex(Slot())

    init(deadline: ContinuousClock.Instant) { self.deadline = deadline }

    /// Suspends until the timer fires; throws `CancellationError` (at once) when the task is
    /// cancelled. `schedule` hands the armed timer to the thread that fires it (it may fire it at
    /// once); `unschedule` takes it back when the task is cancelled first.
    public static func sleep(
        until deadline: ContinuousClock.Instant, schedule: (LoopTimer) -> Void, unschedule: @escaping @Sendable (LoopTimer) -> Void
    ) async throws(CancellationError) {
        let timer = LoopTimer(deadline: deadline)
        let fired = await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
                guard timer.arm(continuation) else { return }  // cancelled before it was armed
                schedule(timer)
            }
        } onCancel: {
            guard timer.disarm() else { return }  // fired meanwhile
            unschedule(timer)
        }
        if !fired { throw CancellationError() }
    }

    /// Stores the continuation; false (and resumed as cancelled) when the task was cancelled first.
    private func arm(_ continuation: CheckedContinuation<Bool, Never>) -> Bool {
        let cancelled = slot.withLock { s -> Bool in
            if !s.cancelled { s.continuation = continuation }
            return s.cancelled
        }
        if cancelled { continuation.resume(returning: false) }
        return !cancelled
    }

    /// Cancels; true when the timer was still pending (the caller takes it off its thread).
    private func disarm() -> Bool {
        let continuation = slot.withLock { s -> CheckedContinuation<Bool, Never>? in
            s.cancelled = true
            defer { s.continuation = nil }
            return s.continuation
        }
        continuation?.resume(returning: false)
        return continuation != nil
    }

    /// Ends the sleep (a no-op once it has ended).
    public func fire() {
        let continuation = slot.withLock { s -> CheckedContinuation<Bool, Never>? in
            defer { s.continuation = nil }
            return s.continuation
        }
        continuation?.resume(returning: true)
    }
}

/// A thread's pending timers, sorted latest deadline first (the next one due is `last`). Kept
/// under the owning thread's lock.
public struct TimerQueue: Sendable {
    private var timers: [LoopTimer] = []

    public init() {}

    public var isEmpty: Bool { timers.isEmpty }
    public var nextDeadline: ContinuousClock.Instant? { timers.last?.deadline }

    /// Adds `timer`; true when it is now the next one due (a thread waiting for a later deadline
    /// needs a wake-up).
    public mutating func insert(_ timer: LoopTimer) -> Bool {
        // The insertion point by binary search.
        var low = 0, high = timers.count
        while low < high {
            let mid = (low + high) / 2
            if timers[mid].deadline > timer.deadline { low = mid + 1 } else { high = mid }
        }
        timers.insert(timer, at: low)
        return low == timers.count - 1
    }

    public mutating func remove(_ timer: LoopTimer) { timers.removeAll { $0 === timer } }

    /// Moves the timers due at `now` to `due` (the caller fires them outside the lock).
    public mutating func takeDue(at now: ContinuousClock.Instant, into due: inout [LoopTimer]) {
        while let next = timers.last, next.deadline <= now { due.append(timers.removeLast()) }
    }

    /// Takes every timer out (to fire them early).
    public mutating func removeAll() -> [LoopTimer] {
        defer { timers = [] }
        return timers
    }
}
