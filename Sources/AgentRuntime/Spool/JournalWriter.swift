import CurlHTTP
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
/// away (no fsync: written, it survives the agent being killed). With `holdSteadyResults(on:)`,
/// a steady healthy result submitted on the probes' curl loop thread does not wake the journal
/// thread: it waits in the queue until the loop is about to go idle for longer than `holdLimit`
/// (250 ms) since the first held one, so at 10 runs/s about three results share a wake-up (a
/// futex wake and two context switches per result cost ≈ 10 % of the agent's CPU there:
/// BENCHMARKS-agent.md). A result that can change a decision at the collector (`PushUrgency`)
/// is handed over at once, as is everything while the collector asks for prompt pushes. So a
/// SIGKILL can lose the steady results of the last 250 ms, never a failure. Written records are fsynced
/// together (group commit: an fsync per result was ≈ 12 % of an agent's CPU at 100 runs/s, and
/// one per push, before the send, was most of the journal thread's time at 1 run/s), `window`
/// after the first of them, and only if some of them are still live then: results (and their
/// batch records) that the collector acknowledged meanwhile need no fsync, as it has them. So
/// while the collector answers within the window there is no fsync at all, and a power loss
/// loses at most the results of the last `window` that the collector does not have.
///
/// Everything else (the uploader's `nextBatch`, `acknowledge`, `setAside`) goes through
/// `perform`, which runs it on the same thread, in order with the appends. Which results are
/// urgent (`PushUrgency`) is decided as they are submitted (in each probe's run order); the
/// thread ends the uploader's `waitForUrgentResult` once it has written one.
///
/// The thread is also a task executor with timers of its own (`taskExecutor`, `sleep(until:)`):
/// the uploader runs on it, so a push's spool calls, its pause between looks and its wake-up
/// after the collector answers stay on one thread (a push used to cross threads about nine times:
/// Dispatch's timer thread, Swift's pool, this thread and back for each spool call, the curl
/// thread; at 1 probe run/s that hand-off was a large share of the agent's CPU). While the
/// uploader builds and signs a push (well under a millisecond) appends wait in the queue.
public final class JournalWriter: Sendable {
    public let spool: Spool
    private let worker: JournalWorker

    /// `window`: 2 s, so that at the default `flush_interval` (1 s) a result is normally pushed
    /// and acknowledged before its fsync is due.
    public init(spool: Spool, window: Duration = .seconds(2)) {
        self.spool = spool
        worker = JournalWorker(spool: spool, window: window)
    }

    /// The longest a held steady result waits before the journal thread is woken for it.
    public static let holdLimit: Duration = .milliseconds(250)

    /// Lets steady results submitted on `client`'s loop thread wait for a shared wake-up of the
    /// journal thread (see above); `client`'s loop hands them over at the end of a round that
    /// would otherwise leave them held past `holdLimit`. Results submitted on any other thread
    /// wake the journal thread as before (nothing would hand them over).
    public func holdSteadyResults(on client: CurlHTTPClient) {
        worker.holdOn { client.isLoopThread }
        client.afterEachRound { [weak worker] nextLook in worker?.handOverHeld(ifNextLookAfter: nextLook) }
    }

    /// While true (the collector asks for prompt pushes: it is deciding something) no result is
    /// held: each wakes the journal thread, and any held now are handed over.
    public func setPromptHandOff(_ prompt: Bool) { worker.setPromptHandOff(prompt) }

    deinit { worker.stop() }

    /// Queues `result` for the journal and returns at once. `done` runs on the journal thread once
    /// the result is written and then fsynced or acknowledged by the collector (or kept in memory
    /// because the disk fails), with the
    /// result as stored (its `seq` set), or with the error when it cannot be encoded.
    public func submit(_ result: ProbeResult, done: (@Sendable (Result<ProbeResult, SpoolError>) -> Void)? = nil) {
        worker.submit(result, done)
    }

    /// Queues `result` and waits until it is durable (fsynced, or acknowledged by the collector).
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

    /// The journal thread as an executor: a task that prefers it (the uploader) runs its code
    /// there, between the journal's jobs.
    public var taskExecutor: any TaskExecutor { worker }

    /// Suspends until `deadline` on the journal thread's own timers (its wait for work ends
    /// then), or until `wakeSleepers()`; throws `CancellationError` (at once) when the task is
    /// cancelled. `unless` is asked once the timer is in place: true returns at once (a shutdown
    /// that began just before, whose `wakeSleepers()` found no timer yet).
    public func sleep(until deadline: ContinuousClock.Instant, unless: () -> Bool = { false }) async throws(CancellationError) {
        try await LoopTimer.sleep(until: deadline) { timer in
            worker.schedule(timer)
            if unless() { worker.wake(timer) }
        } unschedule: { [worker] timer in
            worker.unschedule(timer)
        }
    }

    /// Suspends until the journal thread has written a result submitted after this call began
    /// (or `wakeSleepers()`; throws `CancellationError` at once when the task is cancelled).
    /// `unless` is asked once the waiter is in place: true returns at once (results already
    /// waiting, or a shutdown that began). The uploader waits here while there is nothing to
    /// send, so an agent with no results due does not wake up every `flush_interval`.
    public func waitForResult(unless: () -> Bool) async throws(CancellationError) {
        // The deadline is never reached: the waiter is not among the timers.
        try await LoopTimer.sleep(until: .now + .seconds(86_400)) { timer in
            worker.addResultWaiter(timer)
            if unless() { worker.wake(timer) }
        } unschedule: { [worker] timer in
            worker.unschedule(timer)
        }
    }

    /// Suspends until `deadline`, or until an urgent result (`PushUrgency`: not ok, or one of a
    /// probe's first passing runs after that) is written, or `wakeSleepers()`; throws
    /// `CancellationError` at once when the task is cancelled. Returns at once when an urgent
    /// result was written since the last `nextBatch`, or when `unless` (asked once the waiter is
    /// in place) is true. The uploader's idle `flush_interval` pause: what can change a decision
    /// at the collector ends it, steady healthy results do not.
    public func waitForUrgentResult(until deadline: ContinuousClock.Instant, unless: () -> Bool) async throws(CancellationError) {
        try await LoopTimer.sleep(until: deadline) { timer in
            if worker.addUrgentWaiter(timer) || unless() { worker.wake(timer) }
        } unschedule: { [worker] timer in
            worker.unschedule(timer)
        }
    }

    /// The spool's next batch (`Spool.nextBatch`), on the journal thread. It takes every result
    /// written so far (up to `maxResults`; the rest goes in the batches right after), so the
    /// urgent ones among them no longer end `waitForUrgentResult`.
    public func nextBatch(maxResults: Int) async throws(SpoolError) -> SpoolBatch? {
        try await perform { [worker] spool throws(SpoolError) in
            worker.clearUrgent()
            return try spool.nextBatch(maxResults: maxResults)
        }
    }

    /// Ends every sleep and wait in progress now (graceful shutdown).
    public func wakeSleepers() { worker.wakeAll() }

    /// A result is held (queued without waking the journal thread) now.
    var holding: Bool { worker.holding }

    /// How many `waitForResult` and `waitForUrgentResult` calls are waiting now (tests read
    /// where the uploader is: idle, or in its flush pause).
    var waiting: (forResult: Int, forUrgentResult: Int) { worker.waiting }

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
private final class JournalWorker: TaskExecutor, Sendable {
    typealias Done = @Sendable (Result<ProbeResult, SpoolError>) -> Void
    enum Job: Sendable {
        /// `urgent`: `PushUrgency` said so when it was submitted.
        case append(ProbeResult, urgent: Bool, Done?)
        /// `flushFirst`: fsync every result written so far before running it.
        case task(flushFirst: Bool, @Sendable (Spool) -> Void)
    }

    let spool: Spool
    private let window: Duration
    private struct State {
        var jobs: [Job] = []
        /// Jobs of tasks that prefer this thread (the uploader).
        var taskJobs: [UnownedJob] = []
        var timers = TimerQueue()
        /// `waitForResult` callers: fired once a result is written.
        var resultWaiters: [LoopTimer] = []
        /// `waitForUrgentResult` callers (also in `timers`, for their deadline): fired once an
        /// urgent result is written.
        var urgentWaiters: [LoopTimer] = []
        /// An urgent result was written since the last `nextBatch`.
        var urgentWritten = false
        /// Decided as results are submitted, in each probe's run order.
        var urgency = PushUrgency()
        /// The thread was signalled and has not taken the queue since: no further signal needed.
        var wakePending = false
        /// When the oldest result queued without a signal was submitted (nil: none).
        var heldSince: ContinuousClock.Instant?
        /// True on a thread whose loop hands held results over (`holdSteadyResults`); nil: never hold.
        var mayHold: (@Sendable () -> Bool)?
        var promptHandOff = false
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
        let (signal, startThread) = state.withLock { s -> (Bool, Bool) in
            s.jobs.append(job)
            return (Self.needsSignal(&s), Self.markStarted(&s))
        }
        wake(startingThread: startThread, signal: signal)
    }

    /// Queues a result: held (no wake-up) when it is steady and submitted on the thread of a
    /// loop that hands held results over, else as any job.
    func submit(_ result: ProbeResult, _ done: Done?) {
        let (signal, startThread) = state.withLock { s -> (Bool, Bool) in
            let urgent = s.urgency.isUrgent(result)
            s.jobs.append(.append(result, urgent: urgent, done))
            let start = Self.markStarted(&s)
            // `mayHold` reads the calling thread's id only.
            if !urgent, !s.promptHandOff, !s.wakePending, s.mayHold?() == true {
                if s.heldSince == nil { s.heldSince = .now }
                return (false, start)
            }
            return (Self.needsSignal(&s), start)
        }
        wake(startingThread: startThread, signal: signal)
    }

    var holding: Bool { state.withLock { $0.heldSince != nil } }

    func holdOn(_ mayHold: @escaping @Sendable () -> Bool) { state.withLock { $0.mayHold = mayHold } }

    /// From the loop that submits held results, at the end of each of its rounds: wakes the
    /// thread when waiting for that loop's next look would keep the oldest held result past
    /// `holdLimit`.
    func handOverHeld(ifNextLookAfter nextLook: ContinuousClock.Instant) {
        let signal = state.withLock { s -> Bool in
            guard let since = s.heldSince, nextLook > since + JournalWriter.holdLimit else { return false }
            return Self.needsSignal(&s)
        }
        wake(startingThread: false, signal: signal)
    }

    func setPromptHandOff(_ prompt: Bool) {
        let signal = state.withLock { s -> Bool in
            s.promptHandOff = prompt
            return prompt && s.heldSince != nil && Self.needsSignal(&s)
        }
        wake(startingThread: false, signal: signal)
    }

    /// The thread takes the whole queue each time it wakes: one signal until then is enough.
    private static func needsSignal(_ s: inout State) -> Bool {
        defer { s.wakePending = true }
        return !s.wakePending
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let (signal, startThread) = state.withLock { s -> (Bool, Bool) in
            s.taskJobs.append(job)
            return (Self.needsSignal(&s), Self.markStarted(&s))
        }
        wake(startingThread: startThread, signal: signal)
    }

    func schedule(_ timer: LoopTimer) {
        let (signal, startThread) = state.withLock { s -> (Bool, Bool) in
            // A later deadline than one already pending needs no wake-up: the wait ends sooner anyway.
            let isNext = s.timers.insert(timer)
            return (isNext && Self.needsSignal(&s), Self.markStarted(&s))
        }
        wake(startingThread: startThread, signal: signal)
    }

    func unschedule(_ timer: LoopTimer) {
        state.withLock { s in
            s.timers.remove(timer)
            s.resultWaiters.removeAll { $0 === timer }
            s.urgentWaiters.removeAll { $0 === timer }
        }
    }

    func addResultWaiter(_ timer: LoopTimer) { state.withLock { $0.resultWaiters.append(timer) } }

    /// Adds `timer` to the timers and to the urgent result's waiters; true when an urgent result
    /// is already waiting (the caller fires it).
    func addUrgentWaiter(_ timer: LoopTimer) -> Bool {
        let (urgent, signal, startThread) = state.withLock { s -> (Bool, Bool, Bool) in
            s.urgentWaiters.append(timer)
            let isNext = s.timers.insert(timer)
            return (s.urgentWritten, isNext && Self.needsSignal(&s), Self.markStarted(&s))
        }
        wake(startingThread: startThread, signal: signal)
        return urgent
    }

    func clearUrgent() { state.withLock { $0.urgentWritten = false } }

    var waiting: (forResult: Int, forUrgentResult: Int) { state.withLock { ($0.resultWaiters.count, $0.urgentWaiters.count) } }

    /// Fires `timer` now, ahead of its deadline.
    func wake(_ timer: LoopTimer) {
        unschedule(timer)
        timer.fire()
    }

    func wakeAll() {
        let timers = state.withLock { s in
            defer {
                s.resultWaiters = []
                s.urgentWaiters = []
            }
            // Urgent waiters are among the timers.
            return s.timers.removeAll() + s.resultWaiters
        }
        for timer in timers { timer.fire() }
    }

    /// Marks the thread started; true when the caller must start it.
    private static func markStarted(_ s: inout State) -> Bool {
        defer { s.threadStarted = true }
        return !s.threadStarted
    }

    private func wake(startingThread: Bool, signal needed: Bool) {
        if startingThread {
            // 1 MiB: the uploader's code (JSON, signing, logging) runs here too.
            DetachedThread.start(name: "sonde.journal", stackSize: 1 << 20) { [self] in self.run() }
        }
        if needed { signal.signal() }
    }

    func stop() {
        state.withLock {
            $0.stopped = true
            $0.wakePending = true
        }
        signal.signal()
    }

    private func run() {
        // Written, not yet fsynced: their `done` waits for the fsync. Only this thread uses these.
        var unsynced: [(Result<ProbeResult, SpoolError>, Done?)] = []
        var unsyncedSince: ContinuousClock.Instant?
        // The group commit's fsync: only for written records not acknowledged meanwhile (at low
        // rates the uploader pushes them and the collector acknowledges them first, nearly always).
        func syncNow() {
            spool.sync(resultsOnly: true)
            for (outcome, done) in unsynced { done?(outcome) }
            unsynced = []
            unsyncedSince = nil
        }
        var due: [LoopTimer] = []
        while true {
            let now = ContinuousClock.now
            let (jobs, taskJobs, stopped) = state.withLock { s -> ([Job], [UnownedJob], Bool) in
                defer {
                    s.jobs = []
                    s.taskJobs = []
                    s.wakePending = false
                    s.heldSince = nil
                }
                s.timers.takeDue(at: now, into: &due)
                // An urgent waiter whose deadline came is done: not fired again by a result.
                if !s.urgentWaiters.isEmpty, !due.isEmpty { s.urgentWaiters.removeAll { waiter in due.contains { $0 === waiter } } }
                return (s.jobs, s.taskJobs, s.stopped)
            }
            var wrote = false
            var wroteUrgent = false
            // Results that came together are written together (one write), up to the next task.
            var group: [(result: ProbeResult, urgent: Bool, done: Done?)] = []
            func writeGroup() {
                guard !group.isEmpty else { return }
                let outcomes = spool.appendAll(group.map(\.result))
                for (outcome, job) in zip(outcomes, group) {
                    unsynced.append((outcome, job.done))
                    if case .success = outcome, job.urgent {
                        // Noted now, not after these jobs: a `nextBatch` later among them
                        // takes this result and clears the note, one earlier does not.
                        state.withLock { $0.urgentWritten = true }
                        wroteUrgent = true
                    }
                }
                if unsyncedSince == nil { unsyncedSince = .now }
                wrote = true
                group.removeAll(keepingCapacity: true)
            }
            for job in jobs {
                switch job {
                case .append(let result, let urgent, let done):
                    group.append((result, urgent, done))
                case .task(let flushFirst, let body):
                    writeGroup()
                    if flushFirst { syncNow() }
                    body(spool)
                }
            }
            writeGroup()
            if wrote {
                let waiters = state.withLock { s -> [LoopTimer] in
                    var waiters = s.resultWaiters
                    s.resultWaiters = []
                    if wroteUrgent {
                        for waiter in s.urgentWaiters { s.timers.remove(waiter) }
                        waiters += s.urgentWaiters
                        s.urgentWaiters = []
                    }
                    return waiters
                }
                for waiter in waiters { waiter.fire() }
            }
            // Timers first (their tasks' jobs come back through `enqueue`), then the tasks' jobs.
            for timer in due { timer.fire() }
            due.removeAll(keepingCapacity: true)
            for job in taskJobs { job.runSynchronously(on: asUnownedTaskExecutor()) }
            // Nothing live waits for an fsync (the collector acknowledged it, or an fsync covered
            // it): done without waiting for the window (and without waking up for it).
            if unsyncedSince != nil, !spool.hasUnsyncedResults { syncNow() }
            if let since = unsyncedSince, ContinuousClock.now >= since + window { syncNow() }
            if stopped {
                syncNow()
                spool.sync()  // at the end, the acknowledgements too
                // No caller can be waiting for a timer then: each holds the writer.
                if state.withLock({ $0.jobs.isEmpty && $0.taskJobs.isEmpty }) { return }
                continue
            }
            // Sleep until the group commit's fsync or the next timer is due, or new work arrives.
            var deadline = unsyncedSince.map { $0 + window }
            if let next = state.withLock({ $0.timers.nextDeadline }) { deadline = min(deadline ?? next, next) }
            if let deadline {
                let wait = deadline - ContinuousClock.now
                if wait > .zero { _ = signal.wait(timeout: .now() + .nanoseconds(Int(wait.seconds * 1e9))) }
            } else {
                signal.wait()
            }
        }
    }
}
