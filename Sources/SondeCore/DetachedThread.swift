import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A named, detached POSIX thread for the agent's loops that must not run on Swift's thread
/// pool (the curl loop, the spool's group commit). Foundation's `Thread` would do the same, but
/// the agent does not load Foundation.
public enum DetachedThread {
    private final class Box {
        let name: String
        let body: @Sendable () -> Void
        init(name: String, body: @escaping @Sendable () -> Void) { self.name = name; self.body = body }
    }

    /// Starts `body` on a new thread called `name` (as `top -H` shows it; at most 15 bytes are
    /// kept) with a stack of `stackSize` bytes. Stops the process when the system refuses a
    /// thread: without its loop the agent cannot work, and the operator needs to know why.
    public static func start(name: String, stackSize: Int, _ body: @escaping @Sendable () -> Void) {
        let result = tryStart(name: name, stackSize: stackSize, body)
        guard result == 0 else {
            fatalError("cannot start thread \(name): \(String(cString: strerror(result))) (raise the process's thread or memory limits)")
        }
    }

    /// Runs blocking work (getaddrinfo, a blocking socket exchange) off Swift's thread pool and
    /// returns its value; nil when the system refuses a thread, or at once when the calling task
    /// is cancelled. The work is then abandoned: its thread ends by the work's own deadline, but
    /// the caller does not wait for it (a TCP step waiting on a silent server kept a stopping
    /// agent alive for the step's whole timeout, 5 minutes past SIGTERM; red team, fifth pass).
    ///
    /// `slots`: for a probe's exchange with a server (tcp, dns, icmp steps, `ProbeWorkSlots.shared`),
    /// the bound it counts against, holding a slot until the work ends, abandoned or not; past
    /// the bound `run` gives nil at once.
    public static func run<T: Sendable>(
        name: String, stackSize: Int = 256 << 10, slots: ProbeWorkSlots? = nil, _ body: @escaping @Sendable () -> T
    ) async -> T? {
        if let slots, !slots.take() { return nil }
        // Given back once: when the work ends, or at once when it never starts.
        let release = ReleaseOnce(slots)
        let once = ResumeOnce<T?>()
        return await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
                guard once.await(continuation) else {  // cancelled before it started
                    release.release()
                    return
                }
                let result = tryStart(name: name, stackSize: stackSize) {
                    let value = body()
                    release.release()
                    once.resume(value)
                }
                if result != 0 {
                    release.release()
                    once.resume(nil)
                }
            }
        } onCancel: {
            once.resume(nil)
        }
    }

    private final class ReleaseOnce: Sendable {
        private let slots: ProbeWorkSlots?
        private let held: Atomic<Bool>
        init(_ slots: ProbeWorkSlots?) {
            self.slots = slots
            held = Atomic(slots != nil)
        }
        func release() {
            if held.exchange(false, ordering: .relaxed) { slots?.give() }
        }
    }

    /// A continuation resumed once, by whichever comes first: the work's value or cancellation
    /// (which may come before the continuation exists).
    private final class ResumeOnce<Value: Sendable>: Sendable {
        private enum State {
            case waiting
            case awaiting(CheckedContinuation<Value, Never>)
            case resumed(Value)
        }
        private let state = Mutex<State>(.waiting)

        /// Keeps `continuation`; false (having resumed it) when a value came first.
        func await(_ continuation: CheckedContinuation<Value, Never>) -> Bool {
            let early: Value? = state.withLock { state in
                if case .resumed(let value) = state { return value }
                state = .awaiting(continuation)
                return nil
            }
            guard let early else { return true }
            continuation.resume(returning: early)
            return false
        }

        func resume(_ value: Value) {
            let continuation: CheckedContinuation<Value, Never>? = state.withLock { state in
                switch state {
                case .waiting:
                    state = .resumed(value)
                    return nil
                case .awaiting(let continuation):
                    state = .resumed(value)
                    return continuation
                case .resumed:
                    return nil
                }
            }
            continuation?.resume(returning: value)
        }
    }

    /// What to say when `run` gave no value: the caller was cancelled (the agent is stopping),
    /// or the system refused a thread.
    public static func noValue(for work: String) -> String {
        if Task.isCancelled { return "\(work) was cancelled (the agent is stopping)" }
        if ProbeWorkSlots.shared.busy {
            return "\(work) did not start: the agent already runs \(ProbeWorkSlots.shared.limit) tcp, dns and icmp exchanges, each waiting on its server "
                + "up to its step's time-out (fewer such probes, or shorter time-outs)"
        }
        return "no thread for \(work) (raise the process's thread limit)"
    }

    /// Starts `body` on a new detached thread; 0, or the error pthread_create gave.
    private static func tryStart(name: String, stackSize: Int, _ body: @escaping @Sendable () -> Void) -> Int32 {
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, max(stackSize, Int(PTHREAD_STACK_MIN)))
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let context = Unmanaged.passRetained(Box(name: name, body: body)).toOpaque()
        var thread = pthread_t()
        let result = pthread_create(&thread, &attributes, { context in
            let box = Unmanaged<Box>.fromOpaque(context!).takeRetainedValue()
            // The kernel's thread name, written where pthread_setname_np would (not exported to Swift).
            if let file = fopen("/proc/thread-self/comm", "w") {
                fputs(String(decoding: box.name.utf8.prefix(15), as: UTF8.self), file)
                fclose(file)
            }
            box.body()
            return nil
        }, context)
        if result != 0 { Unmanaged<Box>.fromOpaque(context).release() }
        return result
    }
}

/// A bound on probe exchanges (tcp, dns, icmp steps) holding a thread at once, abandoned ones
/// included until their own deadline ends them. 400 tcp steps waiting on a silent server held
/// 340 threads and every file descriptor, and the agent's other probes and its pushes then
/// failed to connect (red team, 34th session).
public final class ProbeWorkSlots: Sendable {
    /// The agent's: with the 64 HTTP transfers, well under the 1,024 descriptors a service gets
    /// by default.
    public static let shared = ProbeWorkSlots(limit: 64)
    public let limit: Int
    private let running = Atomic<Int>(0)

    public init(limit: Int) { self.limit = limit }

    /// Whether every slot is taken now (what a refusal says).
    public var busy: Bool { running.load(ordering: .relaxed) >= limit }

    func take() -> Bool {
        guard running.add(1, ordering: .relaxed).newValue <= limit else {
            running.subtract(1, ordering: .relaxed)
            return false
        }
        return true
    }

    func give() { running.subtract(1, ordering: .relaxed) }
}
