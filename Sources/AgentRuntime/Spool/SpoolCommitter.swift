import Dispatch
import SondeCore
import Synchronization

/// Group commit for the spool: each probe result is written at once but fsynced together with
/// every other result written meanwhile, on a thread of its own.
///
/// Why: an fsync takes milliseconds (4 ms on the benchmark machine's disk) and blocks its thread.
/// Done per result on Swift's cooperative pool (as many threads as cores), it stalled every other
/// task, so probe runs started late and one agent topped out at a few hundred results per second.
/// Now `commit` suspends the recording task (no thread is held) until one fsync covers its result;
/// under load one fsync covers many results.
///
/// The first result after a quiet spell waits `window` before its fsync, so that results arriving
/// meanwhile share it: an fsync is CPU too (about 12 % of an agent's at 100 runs/s when nearly
/// every result had one of its own). Results become durable, and so sendable, at most `window`
/// later; uploads happen every `flush_interval` (1 s by default) anyway.
public final class SpoolCommitter: Sendable {
    private let spool: Spool
    private let window: Duration
    private let queue = DispatchQueue(label: "sonde.spool.commit")
    private struct State {
        var waiting: [CheckedContinuation<Void, Never>] = []
        var draining = false
    }
    private let state = Mutex(State())

    public init(spool: Spool, window: Duration = .milliseconds(50)) {
        self.spool = spool
        self.window = window
    }

    /// Appends `result` (written, not yet fsynced) and returns once it is durable.
    @discardableResult
    public func commit(_ result: ProbeResult) async throws(SpoolError) -> ProbeResult {
        let stored = try spool.append(result, durable: false)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let start = state.withLock { s -> Bool in
                s.waiting.append(continuation)
                guard !s.draining else { return false }
                s.draining = true
                return true
            }
            if start { scheduleDrain() }
        }
        return stored
    }

    private func scheduleDrain() {
        let (seconds, attoseconds) = window.components
        let nanoseconds = Int(seconds) * 1_000_000_000 + Int(attoseconds / 1_000_000_000)
        if nanoseconds <= 0 {
            queue.async { self.drain() }
        } else {
            queue.asyncAfter(deadline: .now() + .nanoseconds(nanoseconds)) { self.drain() }
        }
    }

    /// Takes every waiter, fsyncs once, wakes them all; results that came meanwhile get the next
    /// round (after another window).
    private func drain() {
        let batch = state.withLock { s -> [CheckedContinuation<Void, Never>] in
            let taken = s.waiting
            s.waiting = []
            if taken.isEmpty { s.draining = false }
            return taken
        }
        if batch.isEmpty { return }
        spool.sync()
        for continuation in batch { continuation.resume() }
        let more = state.withLock { s -> Bool in
            if s.waiting.isEmpty { s.draining = false }
            return s.draining
        }
        if more { scheduleDrain() }
    }
}
