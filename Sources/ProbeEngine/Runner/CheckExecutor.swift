#if canImport(Glibc)
import Glibc
#endif
import SondeCore

/// Threads for a run's CPU-bound checks (regexes, JSON), so that they never run on the curl
/// loop thread, which drives every other probe's transfers and timers, nor hold Swift's
/// cooperative pool, which the agent's shutdown needs. A step hops here with
/// `withTaskExecutorPreference` for its checks and back to the loop for its next request.
///
/// A thread is started whenever a job finds none idle (up to `maxThreads`), so one slow check
/// never queues another probe's; idle threads wait for the next job. Each check bounds itself
/// (a regex stops at the run's deadline, a JSON body is at most `max_body`), and the threads run
/// at a lower priority than the loop.
final class CheckExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `jobs`, `idle` and `threads` are guarded by `mutex`.
    static let shared = CheckExecutor(maxThreads: 64)

    private let maxThreads: Int
    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let ready = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var jobs: [UnownedJob] = []
    private var head = 0
    private var idle = 0
    private var threads = 0

    init(maxThreads: Int) {
        self.maxThreads = maxThreads
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(ready, nil)
    }

    // Shared instances live as long as the process.
    deinit {
        pthread_cond_destroy(ready)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        ready.deallocate()
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        pthread_mutex_lock(mutex)
        jobs.append(job)
        // Idle threads already woken count as idle until they take a job: start one only when
        // more jobs wait than idle threads can take.
        let start = jobs.count - head > idle && threads < maxThreads
        if start { threads += 1 }
        pthread_cond_signal(ready)
        pthread_mutex_unlock(mutex)
        if start {
            DetachedThread.start(name: "sonde.check", stackSize: 1 << 20) { [self] in self.work() }
        }
    }

    /// Runs `wait` (a check waiting for `CheckMemory`) on this check thread without counting the
    /// thread against `maxThreads`, starting another when jobs are queued: 64 checks waiting for
    /// memory must not hold back other probes' checks (a `body_contains` waited behind them until
    /// they gave up). Threads stay at most `maxThreads` plus the checks waiting at once.
    func whileWaiting<T>(_ wait: () -> T) -> T {
        pthread_mutex_lock(mutex)
        threads -= 1
        let start = jobs.count - head > idle && threads < maxThreads
        if start { threads += 1 }
        pthread_mutex_unlock(mutex)
        if start {
            DetachedThread.start(name: "sonde.check", stackSize: 1 << 20) { [self] in self.work() }
        }
        defer {
            pthread_mutex_lock(mutex)
            threads += 1
            pthread_mutex_unlock(mutex)
        }
        return wait()
    }

    /// Nice value of the check threads: when the CPU is short, a spinning check yields to the
    /// curl loop (which keeps every probe's schedule) and to the rest of the agent.
    static let niceness: Int32 = 10

    /// Whether the calling thread is a check thread: only there may a check wait (for
    /// `CheckMemory`), since no other probe's transfers or timers run on it.
    static var isCurrentThread: Bool { pthread_getspecific(threadKey) != nil }
    private static let threadKey: pthread_key_t = {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        return key
    }()

    private func work() {
        // On Linux the nice value is per thread, and `who` 0 is the calling thread.
        _ = setpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0, Self.niceness)
        pthread_setspecific(Self.threadKey, UnsafeRawPointer(bitPattern: 1))
        while true {
            pthread_mutex_lock(mutex)
            while head == jobs.count {
                idle += 1
                pthread_cond_wait(ready, mutex)
                idle -= 1
            }
            let job = jobs[head]
            head += 1
            if head == jobs.count {
                jobs.removeAll(keepingCapacity: true)
                head = 0
            }
            pthread_mutex_unlock(mutex)
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}
