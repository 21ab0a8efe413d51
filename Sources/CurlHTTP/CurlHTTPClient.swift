import CCurl
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore
import Synchronization

/// Performs HTTP requests over libcurl's multi interface, every transfer of a client driven by
/// one thread of its own, so no curl call ever blocks Swift's cooperative thread pool. Each
/// request gets a fresh easy handle and a fresh connection (probes measure DNS, connect and TLS
/// every time), unless it sets `reuseConnection` (the agent's pushes). Cancelling the calling
/// task aborts the transfer.
///
/// Why one thread and not a pool of threads each blocking in `curl_easy_perform`: every transfer
/// then cost a hand-off to a worker thread and back, plus a multi handle and its wake-up socket
/// pair set up and torn down inside curl; at 100 probe runs/s that was a large share of the
/// agent's CPU (futex wake-ups and context switches).
public final class CurlHTTPClient: Sendable {
    /// A process-wide client for callers that do not need their own.
    public static let shared = CurlHTTPClient(threads: 64)

    private let loop: CurlMultiLoop
    /// The environment's proxy variables, read once (see `ProxyEnvironment`).
    private let proxies: ProxyEnvironment

    /// - Parameters:
    ///   - threads: the most transfers in flight at once; further requests queue. (All of them
    ///     run on one thread; the name is kept from when each transfer had a thread.) With 16 or
    ///     more, one origin may hold at most a quarter of them (`CurlMultiLoop.originShare`).
    ///   - proxies: the proxy for requests that name none; the process environment's by default.
    public init(threads: Int = 16, proxies: ProxyEnvironment = .current()) {
        loop = CurlMultiLoop(maxTransfers: max(1, threads))
        self.proxies = proxies
    }

    deinit { loop.stop() }

    /// Requests waiting for a transfer slot (all `threads` in use, or their origin's share).
    var waitingTransfers: Int { loop.waiting }

    /// The response-body bytes this client's transfers hold in memory.
    public var bodyMemory: BodyMemory { loop.memory }

    /// Refuses a header name or value, or a URL, holding CR, LF or NUL before curl sees it: such
    /// bytes come from a templated value a server supplied (an extracted token), and curl would
    /// send them as they are, ending the header and starting another, or another request.
    static func checkLines(_ request: HTTPRequest) throws(HTTPTransferError) {
        func breaks(_ text: String) -> Bool { text.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 } }
        if breaks(request.url) {
            throw HTTPTransferError(kind: .invalidRequest, curlCode: 0, message: "the URL holds a line break or NUL; not sent")
        }
        for header in request.headers where breaks(header.name) || breaks(header.value) || header.name.utf8.contains(UInt8(ascii: ":")) {
            let name = breaks(header.name) ? "a header name" : "header \(header.name)"
            throw HTTPTransferError(
                kind: .invalidRequest, curlCode: 0,
                message: "\(name) holds a line break, NUL or colon (from a templated value?); not sent: it would end the header and start another")
        }
    }

    /// Sends `request`, following redirects hop by hop when it asks to (see `RedirectHops`).
    public func perform(_ request: HTTPRequest) async throws(HTTPTransferError) -> HTTPResponse {
        try RedirectHops.checkScheme(request.url, redirect: false)
        try Self.checkLines(request)
        guard request.followRedirects else { return try await performOnce(request) }
        var hops = RedirectHops(request)
        while true {
            let response: HTTPResponse
            do {
                response = try await performOnce(hops.current)
            } catch {
                throw hops.failed(error)
            }
            guard let next = try hops.next(after: response) else { return hops.finished(response) }
            hops.current = next
        }
    }

    /// One exchange with one URL: no redirect followed.
    private func performOnce(_ request: HTTPRequest) async throws(HTTPTransferError) -> HTTPResponse {
        // Set once the transfer exists (inside the continuation closure); the cancel handler
        // may run before that, and then the transfer sees `alreadyCancelled`.
        let slot = Mutex<(transfer: CurlTransfer?, cancelled: Bool)>((nil, false))
        let result: Result<HTTPResponse, HTTPTransferError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let transfer = CurlTransfer(request: request, proxies: proxies, continuation: continuation)
                let alreadyCancelled = slot.withLock { s -> Bool in
                    s.transfer = transfer
                    return s.cancelled
                }
                if alreadyCancelled { transfer.cancelled.store(true, ordering: .sequentiallyConsistent) }
                loop.submit(transfer)
            }
        } onCancel: {
            let transfer = slot.withLock { s -> CurlTransfer? in
                s.cancelled = true
                return s.transfer
            }
            if let transfer {
                transfer.cancelled.store(true, ordering: .sequentiallyConsistent)
                loop.cancel(transfer)
            }
        }
        return try result.get()
    }

    /// The executor of the client's loop thread. A task that prefers it (`Task(executorPreference:)`,
    /// `TaskGroup.addTask(executorPreference:)`) runs its code on the thread that also drives its
    /// transfers and its `sleep(until:)` timers, so a probe run that sleeps, sends a request and
    /// records the answer never crosses threads.
    ///
    /// Keep such tasks short between suspensions: while one runs, no transfer of this client
    /// progresses (curl's timings then include the delay).
    public var taskExecutor: any TaskExecutor { loop }

    /// Suspends until `deadline` on the client's loop thread (the curl poll's time-out), not on
    /// Dispatch's timer thread: a task on `taskExecutor` then wakes up without a thread hand-off.
    /// Throws `CancellationError` (at once) when the task is cancelled. `armed` gets the sleep's
    /// timer once it is pending: firing it (`LoopTimer.fire`) ends the sleep early.
    public func sleep(until deadline: ContinuousClock.Instant, armed: ((LoopTimer) -> Void)? = nil) async throws(CancellationError) {
        try await loop.sleep(until: deadline, armed: armed)
    }

    /// True when the caller runs on the client's loop thread (code of a task on `taskExecutor`).
    public var isLoopThread: Bool { loop.isLoopThread }

    /// Calls `observer` on the loop thread at the end of each round of its work, with the latest
    /// time the loop looks at its queues again: now when more work is waiting, else the end of
    /// the wait it is about to begin (a socket, curl's own time-out or new work may end it
    /// sooner). For as long as the client lives. Keep it short: no transfer progresses meanwhile.
    ///
    /// Why: work that the loop's own tasks produce can wait for the loop's next round instead of
    /// waking another thread for each piece (the agent's journal writer takes steady results in
    /// groups this way).
    public func afterEachRound(_ observer: @escaping @Sendable (_ nextLook: ContinuousClock.Instant) -> Void) {
        loop.addRoundObserver(observer)
    }
}

/// The thread that drives a client's transfers: adds queued ones to a curl multi handle, runs
/// curl until something happens (`curl_multi_poll`), resumes the callers of finished ones. It is
/// also a task executor (it runs the jobs of tasks that prefer it between curl calls) and a timer
/// service (`sleep(until:)` deadlines bound the poll).
///
/// Why one thread for all of that: a probe run used to cross four threads (Dispatch's timer thread
/// ended the sleep, a cooperative thread ran the probe, this thread ran the transfer and resumed
/// the probe on a cooperative thread again); each crossing is a futex wake-up and a context switch,
/// which was the largest share of the agent's CPU after the transfer itself.
///
/// `@unchecked Sendable`: the queues, timers and stop flag are guarded by `state`'s lock; the multi
/// handle is used only by the loop thread, except `curl_multi_wakeup`, which libcurl documents as
/// safe to call from any thread.
final class CurlMultiLoop: TaskExecutor, @unchecked Sendable {
    private struct State {
        var queued: [CurlTransfer] = []
        /// Transfers were queued since the loop last looked for ones it may start.
        var queueChanged = false
        var cancelRequests: [CurlTransfer] = []
        var jobs: [UnownedJob] = []
        /// Pending sleeps.
        var timers = TimerQueue()
        var started = false
        var stopping = false
        /// The loop thread ended and cleaned the multi handle up: nothing may wake it now.
        var finished = false
        /// `afterEachRound` observers.
        var roundObservers: [@Sendable (ContinuousClock.Instant) -> Void] = []
    }

    private let state = Mutex(State())
    private let multi: UnsafeMutableRawPointer
    private let maxTransfers: Int
    /// The most transfers one origin may hold at once (`originShare(slots:)`).
    let originShare: Int
    /// What the transfers' bodies hold.
    let memory = BodyMemory()
    /// The loop thread's id once it runs (0 before): work queued from that thread needs no wake-up.
    private let loopThread = Atomic<UInt>(0)

    init(maxTransfers: Int) {
        _ = curlGlobalInit
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed (out of memory?)") }
        self.multi = multi
        self.maxTransfers = maxTransfers
        originShare = Self.originShare(slots: maxTransfers)
        // A caller letting a body go (off this thread) may make room for transfers paused for it.
        memory.setWaker { [weak self] in self?.wakeUnlessFinished() }
    }

    /// The most transfers one origin (scheme, host and port of the request's URL; a redirect
    /// hop's is its own URL's) may hold at once: a quarter of the slots, 16 of the agent's 64.
    /// Probes of one hanging or slow host filled every slot, and the probes of healthy hosts
    /// waited behind them until their time-outs (red team, 35th session). Waiting transfers of
    /// other origins go ahead of an origin at its share. Clients with fewer than 16 slots (the
    /// collector's webhooks, the CLI) keep every slot open to any origin: a quarter of them would
    /// allow one transfer or two per server.
    static func originShare(slots: Int) -> Int { slots >= 16 ? slots / 4 : slots }

    var waiting: Int { state.withLock { $0.queued.count } }

    /// Queues `transfer` (its continuation set); the thread starts with the first one.
    func submit(_ transfer: CurlTransfer) {
        let isNew = state.withLock { s -> Bool in
            // A push to the collector (the one request that reuses its connection) goes ahead of
            // the probes' requests: probes stuck on hanging servers must not hold results back.
            if transfer.request.reuseConnection {
                s.queued.insert(transfer, at: s.queued.firstIndex { !$0.request.reuseConnection } ?? s.queued.endIndex)
            } else {
                s.queued.append(transfer)
            }
            s.queueChanged = true
            return Self.markStarted(&s)
        }
        wake(startingThread: isNew)
    }

    /// Aborts `transfer` (its `cancelled` flag already set): at once when still queued, else on
    /// the loop thread. A transfer submitted after this sees the flag when the loop takes it.
    func cancel(_ transfer: CurlTransfer) {
        let wasQueued = state.withLock { s -> Bool in
            if let index = s.queued.firstIndex(where: { $0 === transfer }) {
                s.queued.remove(at: index)
                return true
            }
            s.cancelRequests.append(transfer)
            return false
        }
        if wasQueued {
            transfer.finish(CURLE_ABORTED_BY_CALLBACK)
        } else {
            wake(startingThread: false)
        }
    }

    /// Ends the thread once no transfer, job or timer is left (no caller can be waiting: each
    /// holds the client).
    func stop() {
        let started = state.withLock { s -> Bool in
            s.stopping = true
            return s.started
        }
        if started { curl_multi_wakeup(multi) } else { curl_multi_cleanup(multi) }
    }

    // MARK: - Executor and timers

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        let isNew = state.withLock { s -> Bool in
            s.jobs.append(job)
            return Self.markStarted(&s)
        }
        wake(startingThread: isNew)
    }

    func sleep(until deadline: ContinuousClock.Instant, armed: ((LoopTimer) -> Void)? = nil) async throws(CancellationError) {
        try await LoopTimer.sleep(until: deadline) { timer in
            let (isNew, isNext) = state.withLock { s in (Self.markStarted(&s), s.timers.insert(timer)) }
            // A later deadline than one already pending needs no wake-up: the poll ends sooner anyway.
            if isNew || isNext { wake(startingThread: isNew) }
            armed?(timer)
        } unschedule: { [self] timer in
            state.withLock { $0.timers.remove(timer) }
        }
    }

    /// Marks the loop started; true when the caller must start its thread.
    private static func markStarted(_ s: inout State) -> Bool {
        defer { s.started = true }
        return !s.started
    }

    var isLoopThread: Bool { loopThread.load(ordering: .relaxed) == UInt(pthread_self()) }

    func addRoundObserver(_ observer: @escaping @Sendable (ContinuousClock.Instant) -> Void) {
        state.withLock { $0.roundObservers.append(observer) }
    }

    /// Starts the thread (first work ever) or wakes it from its poll, unless this is the loop
    /// thread itself (it looks at its queues before polling again).
    private func wake(startingThread: Bool) {
        if startingThread {
            // The thread keeps the loop alive until `stop` (the client's deinit) and its queues are empty.
            DetachedThread.start(name: "sonde.curl", stackSize: 1 << 20) { [self] in self.run() }
        } else if !isLoopThread {
            curl_multi_wakeup(multi)
        }
    }

    /// Wakes the loop from another thread unless it has ended: a body let go after its client
    /// (`BodyMemory.Hold`) must not wake a multi handle that is cleaned up. Under the lock, so
    /// the cleanup cannot come between the look and the wake-up.
    private func wakeUnlessFinished() {
        guard !isLoopThread else { return }
        state.withLock { s in
            if s.started, !s.finished { curl_multi_wakeup(multi) }
        }
    }

    // MARK: - The loop thread

    private func run() {
        loopThread.store(UInt(pthread_self()), ordering: .relaxed)
        let clock = ContinuousClock()
        // Transfers in the multi handle, by easy handle. Only this thread touches it.
        var active: [UnsafeMutableRawPointer: CurlTransfer] = [:]
        // A slot or an origin's share came free since the queue was last looked through: the
        // transfers it skipped may start now.
        var slotFreed = false
        var jobs: [UnownedJob] = []
        var due: [LoopTimer] = []
        let share = RoundShare()
        // Transfers paused by their round's share, resumed next round.
        var paused: [CurlTransfer] = []
        /// Ends a transfer whose resume failed (`code`): curl does not end it for that.
        func resumed(_ transfer: CurlTransfer, _ code: CURLcode) {
            guard code != CURLE_OK, let handle = transfer.handle, active[handle] === transfer else { return }
            active[handle] = nil
            curl_multi_remove_handle(multi, handle)
            slotFreed = true
            transfer.finish(code)
        }
        /// Transfers paused for body memory go on, in the order they began to wait, while what
        /// they want fits; when no transfer holding budget is reading (none will let any go) and
        /// the bodies handed over hold at most half the budget, the first of them goes on past
        /// it (`BodyMemory`).
        func resumeWaitingForMemory() {
            let waiting = active.values.filter(\.waitsForMemory).sorted { $0.memoryTurn < $1.memoryTurn }
            for transfer in waiting {
                guard transfer.memoryFits(memory) else {
                    if memory.mayExcuse, !active.values.contains(where: \.readsOnBudget) {
                        resumed(transfer, transfer.resumeForMemory(excuse: true))
                    }
                    return
                }
                resumed(transfer, transfer.resumeForMemory())
            }
        }
        while true {
            let now = clock.now
            let (expired, cancels, stopping) = state.withLock { s -> ([(CurlTransfer, String)], [CurlTransfer], Bool) in
                swap(&jobs, &s.jobs)
                s.timers.takeDue(at: now, into: &due)
                // A request whose time-out ended while it waited for a slot, or for its origin's
                // share, ends now, as a time-out: a hanging server holding every slot must not
                // stretch other probes' time-outs (or freeze them) past what they asked for.
                var expired: [(CurlTransfer, String)] = []
                if !s.queued.isEmpty, s.queued.contains(where: { $0.deadline <= now }) {
                    let held = active.count < maxTransfers && originShare < maxTransfers ? Self.heldByOrigin(active.values) : [:]
                    for transfer in s.queued where transfer.deadline <= now {
                        let atShare = held.isEmpty ? nil : transfer.origin.flatMap { held[$0, default: 0] >= originShare ? $0 : nil }
                        expired.append((transfer, atShare.map(shareBusy) ?? allBusy))
                    }
                    s.queued.removeAll { $0.deadline <= now }
                }
                let cancels = s.cancelRequests
                s.cancelRequests.removeAll(keepingCapacity: true)
                let idle = s.queued.isEmpty && s.jobs.isEmpty && s.timers.isEmpty && jobs.isEmpty && due.isEmpty
                return (expired, cancels, s.stopping && idle)
            }
            for (transfer, why) in expired { transfer.expireUnstarted(why) }
            // Timers first (their tasks' jobs come back through `enqueue`), then the jobs, then
            // what those queued, for up to `jobPasses` passes; then the transfers they queued
            // start, all in this round. Each round ends in a `curl_multi_perform`, which in
            // libcurl 7.88 polls every transfer in flight: a plain GET run took about 7 rounds,
            // only 2 of them ending in a wait, when each hop of a run's task waited for the next.
            for timer in due { timer.fire() }
            due.removeAll(keepingCapacity: true)
            var added: [CurlTransfer] = []
            var pass = 1
            while true {
                for job in jobs { job.runSynchronously(on: asUnownedTaskExecutor()) }
                jobs.removeAll(keepingCapacity: true)
                let more = state.withLock { s -> Bool in
                    if pass < Self.jobPasses, !s.jobs.isEmpty {
                        swap(&jobs, &s.jobs)
                        return true
                    }
                    let room = max(0, maxTransfers - active.count)
                    if room > 0, !s.queued.isEmpty, s.queueChanged || slotFreed {
                        s.queueChanged = false
                        slotFreed = false
                        added = take(from: &s.queued, room: room, active: active.values)
                    }
                    return false
                }
                guard more else { break }
                pass += 1
            }

            for transfer in added {
                if transfer.cancelled.load(ordering: .sequentiallyConsistent) {
                    slotFreed = true
                    transfer.finish(CURLE_ABORTED_BY_CALLBACK)
                    continue
                }
                guard let handle = transfer.start(share: share, memory: memory) else {  // the caller has its error
                    slotFreed = true
                    continue
                }
                guard curl_multi_add_handle(multi, handle) == CURLM_OK else {
                    slotFreed = true
                    transfer.finish(CURLE_OUT_OF_MEMORY)
                    continue
                }
                active[handle] = transfer
            }
            for transfer in cancels {
                // Not in the multi handle (finished meanwhile, or never added): nothing to do.
                guard let handle = transfer.handle, let current = active[handle], current === transfer else { continue }
                active[handle] = nil
                curl_multi_remove_handle(multi, handle)
                slotFreed = true
                transfer.finish(CURLE_ABORTED_BY_CALLBACK)
            }
            if stopping && active.isEmpty { break }

            // A new round: the paused get their next share (after this round's timers and jobs).
            share.round &+= 1
            for transfer in paused {
                guard let handle = transfer.handle, active[handle] === transfer else { continue }
                resumed(transfer, transfer.resume())
            }
            paused.removeAll(keepingCapacity: true)
            // A body let go, or a transfer began to wait, since the last look.
            if memory.takeChanged() { resumeWaitingForMemory() }
            var running: Int32 = 0
            curl_multi_perform(multi, &running)
            var pending: Int32 = 0
            while let message = curl_multi_info_read(multi, &pending) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, easy)
                if let transfer = active.removeValue(forKey: easy) {
                    slotFreed = true
                    transfer.finish(code)
                }
            }
            if share.anyPaused {
                share.anyPaused = false
                paused = active.values.filter(\.isPaused)
            }
            // Sleeps until a socket is ready, curl's next time-out (curl_multi_poll takes the
            // sooner of it and ours), the next timer, or a wake-up (new transfer, job, timer,
            // cancel, stop), unless there is work already. Nothing else can be due, so an idle
            // loop does not wake up to look (it used to, every second).
            let (timeout, observers) = state.withLock { s -> (Int32?, [@Sendable (ContinuousClock.Instant) -> Void]) in
                // Queued transfers that the last look left for their origins' shares wait for a
                // slot to come free (this thread's own doing) or for new ones, not in a spin.
                let mayStart = !s.queued.isEmpty && (s.queueChanged || slotFreed)
                if !s.jobs.isEmpty || !paused.isEmpty || memory.changed || (active.count < maxTransfers && mayStart) { return (nil, s.roundObservers) }
                // Waiting requests: wake when the first of their time-outs ends.
                var next = s.timers.nextDeadline
                if !s.queued.isEmpty, let waiting = s.queued.lazy.map(\.deadline).min() { next = next.map { min($0, waiting) } ?? waiting }
                guard let next else { return (Self.longestPoll, s.roundObservers) }
                return (Self.pollMilliseconds(until: next, now: clock.now), s.roundObservers)
            }
            if !observers.isEmpty {
                let nextLook = clock.now + .milliseconds(max(0, timeout ?? 0))
                for observer in observers { observer(nextLook) }
            }
            if let timeout, timeout > 0 {
                curl_multi_poll(multi, nil, 0, timeout, nil)
            }
        }
        state.withLock { $0.finished = true }
        curl_multi_cleanup(multi)
    }

    /// Takes from `queue`, in order, up to `room` transfers that may start: pushes always (they
    /// come first and hold no origin's share), others while their origin holds less than
    /// `originShare` among `active` and those taken before them. The rest stay queued in order,
    /// so another origin's transfer goes ahead of one whose origin is at its share.
    private func take(from queue: inout [CurlTransfer], room: Int, active: Dictionary<UnsafeMutableRawPointer, CurlTransfer>.Values) -> [CurlTransfer] {
        if originShare >= maxTransfers || active.count + min(room, queue.count) <= originShare {
            // No origin can reach its share (the usual case, a few transfers at a time): the
            // first `room`, as they came, with no URL parsed.
            let taken = Array(queue.prefix(room))
            queue.removeFirst(taken.count)
            return taken
        }
        var perOrigin = Self.heldByOrigin(active)
        var taken: [CurlTransfer] = []
        var kept: [CurlTransfer] = []
        for transfer in queue {
            guard taken.count < room else {
                kept.append(transfer)
                continue
            }
            if let origin = transfer.origin {
                let held = perOrigin[origin, default: 0]
                guard held < originShare else {
                    kept.append(transfer)
                    continue
                }
                perOrigin[origin] = held + 1
            }
            taken.append(transfer)
        }
        queue = kept
        return taken
    }

    /// Transfers in the multi handle by origin (pushes hold none). Counted when a share may be
    /// reached rather than kept up to date, so a probe run parses its URL's origin only then.
    private static func heldByOrigin(_ active: Dictionary<UnsafeMutableRawPointer, CurlTransfer>.Values) -> [Origin: Int] {
        var held: [Origin: Int] = [:]
        for transfer in active { if let origin = transfer.origin { held[origin, default: 0] += 1 } }
        return held
    }

    /// Why a transfer that waited for a slot never started, for `CurlTransfer.expireUnstarted`.
    private var allBusy: String { "all \(maxTransfers) of the agent's transfers were busy (slow or hanging servers)" }

    private func shareBusy(_ origin: Origin) -> String {
        "\(originShare) transfers to \(origin) were under way already, the most one server gets of the agent's \(maxTransfers) (a slow or hanging server?)"
    }

    /// Passes over queued jobs in one round of the loop: a run's task hops a few times between
    /// its request and its next await, and each pass saves a round; a bound, so that jobs that
    /// keep queueing jobs cannot keep libcurl from its sockets.
    static let jobPasses = 4

    /// The longest poll. Only a suspended host needs a bound: `ContinuousClock` counts the time
    /// suspended and poll's time-out does not, so a timer due meanwhile fires at most this late
    /// after the resume.
    static let longestPoll: Int32 = 60_000

    /// Whole milliseconds to `deadline`, rounded up (waking early would only spin), at most
    /// `longestPoll`.
    private static func pollMilliseconds(until deadline: ContinuousClock.Instant, now: ContinuousClock.Instant) -> Int32 {
        guard deadline > now else { return 0 }
        let (seconds, attoseconds) = (deadline - now).components
        if seconds >= Int64(longestPoll / 1000) { return longestPoll }
        let milliseconds = seconds * 1000 + (attoseconds / 1_000_000_000 + 999_999) / 1_000_000
        return Int32(milliseconds)
    }
}
