import Synchronization

/// Wakes tasks that otherwise sleep until a deadline, so an idle collector waits instead of
/// polling: the evaluator (results that could change a decision arrived, a person's update, a
/// take-over) and the webhook dispatcher's target tasks (deliveries queued, targets reloaded,
/// leadership gained). Each waiter holds at most one pending wake-up, so a burst of `fire()`s
/// costs one wake-up.
public final class WakeSignal: Sendable {
    private struct Waiters {
        var next: UInt64 = 0
        var all: [UInt64: AsyncStream<Void>.Continuation] = [:]
    }
    private let waiters = Mutex(Waiters())
    private let fired = Atomic<Int>(0)

    public init() {}

    public func fire() {
        fired.add(1, ordering: .relaxed)
        waiters.withLock { for wake in $0.all.values { wake.yield() } }
    }

    /// `fire()` calls so far (what woke the evaluator, for tests).
    var fires: Int { fired.load(ordering: .relaxed) }

    /// Runs `body` with a function that waits until the next `fire()` (or one that came since the
    /// last wait), at most `limit`. Call it from one task.
    func waiting<T>(_ body: (_ wait: (_ limit: Duration) async -> Void) async -> T) async -> T {
        let (stream, wake) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let id = waiters.withLock { waiters in
            waiters.next += 1
            waiters.all[waiters.next] = wake
            return waiters.next
        }
        defer { _ = waiters.withLock { $0.all.removeValue(forKey: id) } }
        var wakes = stream.makeAsyncIterator()
        return await body { limit in
            let timer = Task {
                // A timer cancelled because a `fire()` ended the wait must not yield: its wake-up
                // would end the next wait at once, and that wait's cancelled timer the one after,
                // so the waiter would spin for good.
                do { try await Task.sleep(for: limit) } catch { return }
                wake.yield()
            }
            // Cancellation ends the stream: later waits return at once.
            _ = await wakes.next()
            timer.cancel()
        }
    }
}
