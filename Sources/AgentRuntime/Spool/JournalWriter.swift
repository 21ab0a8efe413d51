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
/// Results: `submit` queues a result and returns at once; the journal thread writes it straight
/// away (no fsync: written, it survives the agent being killed). Written results are fsynced
/// together (group commit: an fsync per result was ≈ 12 % of an agent's CPU at 100 runs/s):
/// by the uploader's next batch record, whose fsync covers everything written before it, or at
/// the latest `window` after the first of them, so a power loss loses at most that much. Only
/// fsynced results are sent.
///
/// Everything else (the uploader's `nextBatch`, `acknowledge`, `setAside`) goes through
/// `perform`, which runs it on the same thread, in order with the appends.
public final class JournalWriter: Sendable {
    public let spool: Spool
    private let worker: JournalWorker

    public init(spool: Spool, window: Duration = .seconds(1)) {
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
/// has written and fsynced what is queued).
private final class JournalWorker: Sendable {
    typealias Done = @Sendable (Result<ProbeResult, SpoolError>) -> Void
    enum Job: Sendable {
        case append(ProbeResult, Done?)
        /// `flushFirst`: fsync every result written so far before running it.
        case task(flushFirst: Bool, @Sendable (Spool) -> Void)
    }

    let spool: Spool
    private let window: Duration
    private struct State {
        var jobs: [Job] = []
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
            // The thread takes the whole queue each time it wakes: only the first job needs to wake it.
            let wake = s.jobs.isEmpty
            s.jobs.append(job)
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

    private func run() {
        // Written, not yet fsynced: their `done` waits for the fsync. Only this thread uses these.
        var unsynced: [(Result<ProbeResult, SpoolError>, Done?)] = []
        var unsyncedSince: ContinuousClock.Instant?
        // The group commit's fsync: only for written results that no batch record's fsync has
        // covered meanwhile (at low rates the uploader batches them first, nearly always).
        func syncNow() {
            spool.sync(resultsOnly: true)
            for (outcome, done) in unsynced { done?(outcome) }
            unsynced = []
            unsyncedSince = nil
        }
        while true {
            let (jobs, stopped) = state.withLock { s -> ([Job], Bool) in
                defer { s.jobs = [] }
                return (s.jobs, s.stopped)
            }
            for job in jobs {
                switch job {
                case .append(let result, let done):
                    do throws(SpoolError) { unsynced.append((.success(try spool.append(result, durable: false)), done)) } catch {
                        unsynced.append((.failure(error), done))
                    }
                    if unsyncedSince == nil { unsyncedSince = .now }
                case .task(let flushFirst, let body):
                    if flushFirst { syncNow() }
                    body(spool)
                }
            }
            // A batch record's fsync covered the results written so far: done without waiting
            // for the window (and without waking up for it).
            if unsyncedSince != nil, !spool.hasUnsyncedResults { syncNow() }
            if stopped {
                syncNow()
                spool.sync()  // at the end, the acknowledgements too
                if state.withLock({ $0.jobs.isEmpty }) { return }
                continue
            }
            if let since = unsyncedSince {
                let due = since + window
                let now = ContinuousClock.now
                if now >= due {
                    syncNow()
                } else {
                    // Sleep until the fsync is due, or until new work arrives.
                    _ = signal.wait(timeout: .now() + .nanoseconds(Int((due - now).seconds * 1e9)))
                }
            } else {
                signal.wait()
            }
        }
    }
}
