import Dispatch
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore
import Synchronization

/// The spool's one journal writer: a thread of its own that does every append, fsync, batch and
/// acknowledgement record and compaction of the agent's journal. Nothing else in the agent
/// touches the journal, so the thread that drives the probes' transfers never waits on the disk
/// (a slow fsync, a compaction of up to `max_bytes`, a full spool) and never waits for a lock
/// held across disk I/O.
///
/// Results: `submit` queues a result and returns at once. The first result after a quiet spell
/// waits `window`, then every result queued meanwhile is written and covered by one fsync (group
/// commit: an fsync per result was ≈ 12 % of an agent's CPU at 100 runs/s). A result is written
/// at most `window` (plus the disk's own time) after its run ends, and goes into a batch once its
/// fsync is done; a result not yet written is lost if the agent is killed, like a run in flight.
///
/// Everything else (the uploader's `nextBatch`, `acknowledge`, `reject`) goes through `perform`,
/// which runs it on the same thread, at once, between rounds.
public final class JournalWriter: Sendable {
    public let spool: Spool
    private let worker: JournalWorker

    public init(spool: Spool, window: Duration = .milliseconds(100)) {
        self.spool = spool
        worker = JournalWorker(spool: spool, window: window)
    }

    deinit { worker.stop() }

    /// Queues `result` for the journal and returns at once. `done` runs on the journal thread once
    /// the result is written and fsynced (or kept in memory because the disk fails), with the
    /// result as stored (its `seq` set), or with the error when it cannot be encoded.
    public func submit(_ result: ProbeResult, done: (@Sendable (Result<ProbeResult, SpoolError>) -> Void)? = nil) {
        worker.enqueue(.append(result, done))
    }

    /// Queues `result` and waits until it is durable.
    @discardableResult
    public func commit(_ result: ProbeResult) async throws(SpoolError) -> ProbeResult {
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Result<ProbeResult, SpoolError>, Never>) in
            submit(result) { continuation.resume(returning: $0) }
        }
        return try outcome.get()
    }

    /// Returns once every result submitted before it is written and fsynced.
    public func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            worker.enqueue(.task(flushFirst: true) { _ in continuation.resume() })
        }
    }

    /// Runs `body` on the journal thread (so a caller on the probes' thread never waits on disk).
    public func perform<T: Sendable>(_ body: @escaping @Sendable (Spool) throws(SpoolError) -> T) async throws(SpoolError) -> T {
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<Result<T, SpoolError>, Never>) in
            worker.enqueue(
                .task(flushFirst: false) { spool in
                    do throws(SpoolError) { continuation.resume(returning: .success(try body(spool))) } catch {
                        continuation.resume(returning: .failure(error))
                    }
                })
        }
        return try outcome.get()
    }
}

/// The journal thread and its queue. Separate from `JournalWriter` so that the thread, which
/// holds this, does not keep the writer alive: the writer's deinit stops the thread (after it
/// has written what is queued).
private final class JournalWorker: Sendable {
    enum Job: Sendable {
        case append(ProbeResult, (@Sendable (Result<ProbeResult, SpoolError>) -> Void)?)
        /// `flushFirst`: write and fsync every queued result before running it.
        case task(flushFirst: Bool, @Sendable (Spool) -> Void)
    }

    let spool: Spool
    private let window: Duration
    private struct State {
        var appends: [Job] = []
        var tasks: [Job] = []
        /// When the oldest queued result arrived: its round starts `window` later.
        var firstAppend: ContinuousClock.Instant?
        var threadStarted = false
        var stopped = false
    }
    private let state = Mutex(State())
    private let signal = DispatchSemaphore(value: 0)

    init(spool: Spool, window: Duration) {
        self.spool = spool
        self.window = window
    }

    func enqueue(_ job: Job) {
        let (wake, startThread) = state.withLock { s -> (Bool, Bool) in
            var wake = true
            switch job {
            case .append:
                // The thread only needs waking for the first result of a round; it sleeps the window itself.
                wake = s.appends.isEmpty
                if wake { s.firstAppend = .now }
                s.appends.append(job)
            case .task:
                s.tasks.append(job)
            }
            defer { s.threadStarted = true }
            return (wake, !s.threadStarted)
        }
        if startThread {
            DetachedThread.start(name: "sonde.journal", stackSize: 512 << 10) { [self] in self.run() }
        }
        if wake { signal.signal() }
    }

    func stop() {
        state.withLock { $0.stopped = true }
        signal.signal()
    }

    private enum Step {
        case wait
        case sleep(Duration)
        case work(appends: [Job], tasks: [Job])
        case exit
    }

    private func run() {
        while true {
            let step = state.withLock { s -> Step in
                let flushFirst = s.tasks.contains { if case .task(true, _) = $0 { true } else { false } }
                if !s.tasks.isEmpty || s.stopped || flushFirst {
                    let appendsNow = flushFirst || s.stopped ? s.appends : []
                    if !appendsNow.isEmpty { s.appends = [] }
                    defer { s.tasks = [] }
                    if s.stopped && s.tasks.isEmpty && appendsNow.isEmpty && s.appends.isEmpty { return .exit }
                    return .work(appends: appendsNow, tasks: s.tasks)
                }
                guard let first = s.firstAppend, !s.appends.isEmpty else { return .wait }
                let due = first + window
                let now = ContinuousClock.now
                if now < due { return .sleep(due - now) }
                defer { s.appends = [] }
                return .work(appends: s.appends, tasks: [])
            }
            switch step {
            case .exit:
                return
            case .wait:
                signal.wait()
            case .sleep(let duration):
                // Woken early by a task or by stop; otherwise the window ends.
                _ = signal.wait(timeout: .now() + .nanoseconds(Int(duration.seconds * 1e9)))
            case .work(let appends, let tasks):
                writeRound(appends)
                for case .task(_, let body) in tasks { body(spool) }
            }
        }
    }

    /// Writes the queued results (no fsync each), then one fsync for all of them.
    private func writeRound(_ jobs: [Job]) {
        guard !jobs.isEmpty else { return }
        var outcomes: [(Result<ProbeResult, SpoolError>, (@Sendable (Result<ProbeResult, SpoolError>) -> Void)?)] = []
        outcomes.reserveCapacity(jobs.count)
        for case .append(let result, let done) in jobs {
            do throws(SpoolError) { outcomes.append((.success(try spool.append(result, durable: false)), done)) } catch {
                outcomes.append((.failure(error), done))
            }
        }
        spool.sync()
        for (outcome, done) in outcomes { done?(outcome) }
    }
}
