#if canImport(Glibc)
import Glibc
#endif
import SondeCore

/// The memory the trees of JSON bodies being checked hold together, and its budget
/// (`limits.check_memory`). The bodies themselves stay in `CurlHTTP.BodyMemory` until the checks
/// end; each tree is capped alone (`JSONValue.maxTreeBytes`), but nothing bounded the trees
/// together: 40 probes checking 9.5 MB JSON bodies every 2 s held 1.9 GB (the
/// check threads build up to 64 trees at once).
///
/// Before a body is parsed, what its tree will take (`JSONTree.estimate`, one pass over the
/// bytes) is reserved, and let go with the tree (the `Lease`). A reservation that does not fit
/// waits, in the order they asked, until trees are let go; trees of up to `ownBytes` (any body
/// under about 60 KiB) never wait, and when nothing is held the first in line goes on whatever
/// its size, so every check gets its turn. A check waits no longer than its run's deadline,
/// and only on a check thread (never on the curl loop, which drives every other probe);
/// elsewhere it goes on at once.
///
/// Held bytes stay under `limit` + the trees of usual bodies + one tree past the budget.
public final class CheckMemory: @unchecked Sendable {
    // @unchecked: every field but the constants is guarded by `mutex`.
    public static let shared = CheckMemory()
    /// The default `limit`: 256 MiB, five of the largest trees at once.
    public static let defaultLimit = 256 << 20
    /// The smallest `limit` (`limits.check_memory`): more than one largest tree.
    public static let minimumLimit = 64 << 20
    /// A tree of at most this never waits: any body under about 60 KiB makes one (at most 70
    /// tree bytes per body byte, in `[{},{},…]`), as do most of a few hundred KiB.
    static let ownBytes = 4 << 20

    /// How often a waiting reservation looks whether its run was cancelled.
    static let cancellationCheck = Duration.milliseconds(100)
    /// Trees at least this large are handed back to the system when let go (`Lease`).
    static let trimAfter = 8 << 20

    private let mutex = UnsafeMutablePointer<pthread_mutex_t>.allocate(capacity: 1)
    private let changed = UnsafeMutablePointer<pthread_cond_t>.allocate(capacity: 1)
    private var limitBytes = CheckMemory.defaultLimit
    private var heldBytes = 0
    private var peakBytes = 0
    private var waitCount = 0
    private var releasedElsewhere = 0
    /// Tickets of the reservations waiting, in the order they asked.
    private var line: [UInt64] = []
    private var nextTicket: UInt64 = 0

    init() {
        pthread_mutex_init(mutex, nil)
        var attributes = pthread_condattr_t()
        pthread_condattr_init(&attributes)
        pthread_condattr_setclock(&attributes, CLOCK_MONOTONIC)
        pthread_cond_init(changed, &attributes)
        pthread_condattr_destroy(&attributes)
    }

    deinit {
        pthread_cond_destroy(changed)
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
        changed.deallocate()
    }

    /// The budget in bytes (at least 64 MiB: one largest tree, `JSONValue.maxTreeBytes`, fits).
    public var limit: Int {
        get { locked { limitBytes } }
        set { locked { limitBytes = max(Self.minimumLimit, newValue) } }
    }
    /// Bytes held now.
    public var held: Int { locked { heldBytes } }
    /// The most held at once since the agent started.
    public var peak: Int { locked { peakBytes } }
    /// Reservations that had to wait.
    public var waits: Int { locked { waitCount } }

    /// Trees let go off the check threads (tests: they are let go where they were checked).
    var releasedOffCheckThreads: Int { locked { releasedElsewhere } }

    /// Starts `peak` again from what is held now (tests).
    func resetPeak() { locked { peakBytes = heldBytes } }

    /// Bytes held for one tree until its lease is let go (its last copy dropped).
    final class Lease: @unchecked Sendable {
        // @unchecked: `bytes` changes only where the lease was made (one run's step).
        private let memory: CheckMemory
        private(set) var bytes: Int

        fileprivate init(_ memory: CheckMemory, bytes: Int) {
            self.memory = memory
            self.bytes = bytes
        }

        /// The tree took `actual` bytes: the rest of the reservation goes back.
        func shrink(to actual: Int) {
            let back = bytes - max(0, min(actual, bytes))
            guard back > 0 else { return }
            bytes -= back
            memory.release(back)
        }

        deinit {
            memory.release(bytes, onCheckThread: CheckExecutor.isCurrentThread)
            // A large tree's memory goes back to the system: freed on a check thread it stayed in
            // that thread's malloc arena, and with up to 64 check threads (16 arenas on 2 cores)
            // the agent kept about one largest tree per arena (40 probes checking 4.7 MB JSON
            // bodies held 1.1 GB with trees of 256 MiB at most at once).
            // Never on the curl loop, which drives every other probe (trees are let go on check
            // threads: `LazyJSON.letGo`).
            #if canImport(Glibc)
            if bytes >= CheckMemory.trimAfter, CheckExecutor.isCurrentThread { _ = glibcMallocTrim(0) }
            #endif
        }
    }

    /// Reserves `bytes`, waiting for them until `deadline` when `mayWait`; nil when the deadline
    /// came first or the run's task was cancelled (the agent is stopping: `shutdown_grace`), which
    /// a wait looks for every `cancellationCheck`.
    func reserve(_ bytes: Int, until deadline: ContinuousClock.Instant, mayWait: Bool) -> Lease? {
        pthread_mutex_lock(mutex)
        if bytes <= Self.ownBytes || !mayWait || (line.isEmpty && fits(bytes)) {
            let lease = grant(bytes)
            pthread_mutex_unlock(mutex)
            return lease
        }
        waitCount += 1
        pthread_mutex_unlock(mutex)
        // A waiting check thread does not count against the check threads' limit.
        guard CheckExecutor.isCurrentThread else { return waitInLine(bytes, until: deadline) }
        return CheckExecutor.shared.whileWaiting { waitInLine(bytes, until: deadline) }
    }

    /// `reserve`'s wait in line, on a check thread.
    private func waitInLine(_ bytes: Int, until deadline: ContinuousClock.Instant) -> Lease? {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        let ticket = nextTicket
        nextTicket += 1
        line.append(ticket)
        let clock = ContinuousClock()
        while !(line.first == ticket && fits(bytes)) {
            let left = clock.now.duration(to: deadline)
            guard left > .zero, !Task.isCancelled else {
                line.removeAll { $0 == ticket }
                pthread_cond_broadcast(changed)  // the next in line may fit now
                return nil
            }
            var until = timespec()
            clock_gettime(CLOCK_MONOTONIC, &until)
            let (seconds, attoseconds) = min(left, Self.cancellationCheck).components
            let nanoseconds = Int(until.tv_nsec) + Int(attoseconds / 1_000_000_000)
            until.tv_sec += Int(seconds) + nanoseconds / 1_000_000_000
            until.tv_nsec = nanoseconds % 1_000_000_000
            pthread_cond_timedwait(changed, mutex, &until)
        }
        line.removeFirst()
        pthread_cond_broadcast(changed)  // the next in line may fit too
        return grant(bytes)
    }

    /// Whether `bytes` more fit (mutex held); with nothing held, any size does.
    private func fits(_ bytes: Int) -> Bool {
        heldBytes == 0 || heldBytes + bytes <= limitBytes
    }

    private func grant(_ bytes: Int) -> Lease {
        heldBytes += bytes
        peakBytes = max(peakBytes, heldBytes)
        return Lease(self, bytes: bytes)
    }

    fileprivate func release(_ bytes: Int, onCheckThread: Bool = true) {
        guard bytes > 0 else { return }
        locked {
            heldBytes -= bytes
            if !onCheckThread { releasedElsewhere += 1 }
            if !line.isEmpty { pthread_cond_broadcast(changed) }
        }
    }

    private func locked<T>(_ body: () -> T) -> T {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return body()
    }
}

#if canImport(Glibc)
/// glibc's `malloc_trim` (malloc.h, which the Glibc module does not export): returns the free
/// memory of every arena to the system.
@_silgen_name("malloc_trim")
private func glibcMallocTrim(_ pad: Int) -> Int32
#endif
