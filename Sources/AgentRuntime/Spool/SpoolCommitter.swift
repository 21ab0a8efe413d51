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
public final class SpoolCommitter: Sendable {
    private let spool: Spool
    private let queue = DispatchQueue(label: "sonde.spool.commit")
    private struct State {
        var waiting: [CheckedContinuation<Void, Never>] = []
        var draining = false
    }
    private let state = Mutex(State())

    public init(spool: Spool) { self.spool = spool }

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
            if start { queue.async { self.drain() } }
        }
        return stored
    }

    /// Until nobody waits: take every waiter, fsync once, wake them all.
    private func drain() {
        while true {
            let batch = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                let taken = s.waiting
                s.waiting = []
                if taken.isEmpty { s.draining = false }
                return taken
            }
            if batch.isEmpty { return }
            spool.sync()
            for continuation in batch { continuation.resume() }
        }
    }
}
