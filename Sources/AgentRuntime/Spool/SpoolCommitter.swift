import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore
import Synchronization

/// Group commit for the spool: each probe result is written at once but fsynced together with
/// every other result written meanwhile, on a thread of its own.
///
/// Why: an fsync takes milliseconds (4 ms on the benchmark machine's disk) and blocks its thread.
/// Done per result on Swift's cooperative pool (as many threads as cores), it stalled every other
/// task, so probe runs started late and one agent topped out at a few hundred results per second.
/// Done on the HTTP client's loop thread (where probe runs execute), it would delay every
/// transfer in flight and so distort their timings. Now `commit` suspends the recording task (no
/// thread is held) until one fsync covers its result; under load one fsync covers many results.
///
/// The first result after a quiet spell waits `window` before its fsync, so that results arriving
/// meanwhile share it: an fsync is CPU too (about 12 % of an agent's at 100 runs/s when nearly
/// every result had one of its own, still 7 % with a 50 ms window). Results become durable, and so
/// sendable, at most `window` later; uploads happen every `flush_interval` (1 s by default) anyway.
/// A result written but not yet fsynced survives the agent being killed (it is in the page cache);
/// only a power loss or kernel crash within the window can lose it.
///
/// The window is slept on the commit thread itself (not a Dispatch timer, which costs a hand-off
/// through Dispatch's timer thread to a worker per round).
public final class SpoolCommitter: Sendable {
    private let worker: CommitWorker

    public init(spool: Spool, window: Duration = .milliseconds(100)) {
        worker = CommitWorker(spool: spool, window: window)
    }

    deinit { worker.stop() }

    /// Appends `result` (written, not yet fsynced) and returns once it is durable.
    @discardableResult
    public func commit(_ result: ProbeResult) async throws(SpoolError) -> ProbeResult {
        let stored = try worker.spool.append(result, durable: false)
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            worker.enqueue(continuation)
        }
        return stored
    }
}

/// The commit thread and its waiters. Separate from `SpoolCommitter` so that the thread, which
/// holds this, does not keep the committer alive: the committer's deinit stops the thread.
private final class CommitWorker: Sendable {
    let spool: Spool
    private let window: Duration
    private struct State {
        var waiting: [CheckedContinuation<Void, Never>] = []
        /// A round (window, fsync, resume) is signalled or under way.
        var roundPending = false
        var threadStarted = false
        var stopped = false
    }
    private let state = Mutex(State())
    /// Signalled once per round by the first waiter, and by `stop`.
    private let signal = DispatchSemaphore(value: 0)

    init(spool: Spool, window: Duration) {
        self.spool = spool
        self.window = window
    }

    func enqueue(_ continuation: CheckedContinuation<Void, Never>) {
        let (startRound, startThread) = state.withLock { s -> (Bool, Bool) in
            s.waiting.append(continuation)
            guard !s.roundPending else { return (false, false) }
            s.roundPending = true
            defer { s.threadStarted = true }
            return (true, !s.threadStarted)
        }
        if startThread {
            DetachedThread.start(name: "sonde.commit", stackSize: 256 << 10) { [self] in self.run() }
        }
        if startRound { signal.signal() }
    }

    func stop() {
        state.withLock { $0.stopped = true }
        signal.signal()
    }

    private func run() {
        while true {
            signal.wait()
            var more = state.withLock { $0.roundPending }
            while more {
                Self.pause(window)
                // Take every waiter, fsync once, wake them all; results that came meanwhile get
                // the next round (after another window).
                let batch = state.withLock { s -> [CheckedContinuation<Void, Never>] in
                    defer { s.waiting = [] }
                    return s.waiting
                }
                spool.sync()
                for continuation in batch { continuation.resume() }
                more = state.withLock { s -> Bool in
                    if s.waiting.isEmpty { s.roundPending = false }
                    return s.roundPending
                }
            }
            // Stopped by the committer's deinit: no caller is left to enqueue another round.
            if state.withLock({ $0.stopped }) { return }
        }
    }

    private static func pause(_ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        guard seconds > 0 || attoseconds > 0 else { return }
        var request = timespec(tv_sec: Int(seconds), tv_nsec: Int(attoseconds / 1_000_000_000))
        var remaining = timespec()
        while nanosleep(&request, &remaining) != 0 && errno == EINTR { request = remaining }
    }
}
