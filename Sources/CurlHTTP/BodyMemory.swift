import Synchronization

/// The response-body bytes one client's transfers hold in memory, and their budget: each kept
/// body's reserved capacity, from its first byte until its caller lets the response go (its
/// `Hold`). A body nothing reads holds only its first bytes (`HTTPRequest.bodyPrefixBytes`).
/// Counted only while transfers read, bodies handed to checks that wait their turn for check
/// memory were held by no budget: 150 probes checking 4.6 MB JSON bodies every 2 s peaked at
/// 1053 MiB with both budgets at 256 MiB, 564 MiB since (BENCHMARKS-agent.md, 38th session).
///
/// A transfer whose body would take more than the budget has left is paused (curl stops
/// reading its socket, so the server waits) until other bodies are let go, in the order they
/// asked. Not failed: every failed run counts against the platform at the collector, whatever
/// its error kind (`internal` and `script` too), and running out of the agent's own memory says
/// nothing about the target. Each transfer's first `ownBytes` are always granted, so bodies of
/// a usual size never wait; and when no transfer holding budget is reading (every one waits
/// for more) and the bodies already handed over hold at most half the budget, the first waiting
/// goes on past the budget, one at a time, so they never wait for each other until their
/// time-outs. Bodies handed over are let go as their callers finish with them (checks end), so
/// past that half the waiting transfers wait for them. Held bytes stay under `limit` + slots ×
/// `ownBytes` + the body of one transfer. Counted on the client's loop thread, and let go by a
/// `Hold` on any thread.
public final class BodyMemory: Sendable {
    /// The default `limit`: 256 MiB (60 probes reading 10 MB bodies at once held 672 MB; red
    /// team, 35th session).
    public static let defaultLimit = 256 << 20
    /// What each transfer's body may hold whatever the budget says: 256 KiB, more than most
    /// answers, so that only large bodies can wait for memory.
    public static let ownBytes = 256 << 10

    private let heldBytes = Atomic<Int>(0)
    private let peakBytes = Atomic<Int>(0)
    private let limitBytes = Atomic<Int>(BodyMemory.defaultLimit)
    /// A body was let go or a transfer began to wait since the loop last looked (loop thread).
    private let changedFlag = Atomic<Bool>(false)
    private let waits = Atomic<UInt64>(0)
    /// Transfers waiting now: only then does a body let go need a look.
    private let waiting = Atomic<Int>(0)
    /// Bytes of bodies whose transfers ended and whose callers still hold them (`Hold`).
    private let handedOverBytes = Atomic<Int>(0)
    /// Wakes the loop thread from its poll (set once by the loop): a `Hold` let go elsewhere
    /// while transfers wait.
    private let waker = Mutex<(@Sendable () -> Void)?>(nil)

    /// A response body's reserved bytes after its transfer ended, counted until the last copy of
    /// the response is let go (the checks that read it ended).
    final class Hold: Sendable {
        let bytes: Int
        let memory: BodyMemory
        init(bytes: Int, memory: BodyMemory) {
            self.bytes = bytes
            self.memory = memory
        }
        deinit { memory.letGo(handedOver: bytes) }
    }

    /// Bytes held now.
    public var held: Int { heldBytes.load(ordering: .relaxed) }
    /// Of `held`, the bytes of bodies whose transfers ended, held by their callers.
    public var handedOver: Int { handedOverBytes.load(ordering: .relaxed) }
    /// Transfers paused for body memory now.
    public var waitingTransfers: Int { waiting.load(ordering: .relaxed) }
    /// The most held at once since the client was made.
    public var peak: Int { peakBytes.load(ordering: .relaxed) }
    /// The budget, in bytes (at least `ownBytes`): what the bodies of transfers in flight may
    /// hold together beyond their first `ownBytes` each.
    public var limit: Int {
        get { limitBytes.load(ordering: .relaxed) }
        set { limitBytes.store(max(Self.ownBytes, newValue), ordering: .relaxed) }
    }

    /// Whether a transfer whose body holds `holding` bytes may take `bytes` more.
    func fits(_ bytes: Int, holding: Int) -> Bool {
        holding + bytes <= Self.ownBytes || held + bytes <= limit
    }

    /// Counts `bytes` more for a transfer holding `holding`, when they fit or it is `excused`.
    func grant(_ bytes: Int, holding: Int, excused: Bool) -> Bool {
        guard excused || fits(bytes, holding: holding) else { return false }
        let now = heldBytes.add(bytes, ordering: .relaxed).newValue
        peakBytes.max(now, ordering: .relaxed)
        return true
    }

    func release(_ bytes: Int) {
        guard bytes > 0 else { return }
        heldBytes.subtract(bytes, ordering: .relaxed)
        if waiting.load(ordering: .relaxed) > 0 { changedFlag.store(true, ordering: .relaxed) }
    }

    /// The `bytes` a transfer reserved, now its caller's to let go (the transfer ended with a
    /// response): counted until the `Hold` goes.
    func handOver(_ bytes: Int) -> Hold? {
        guard bytes > 0 else { return nil }
        handedOverBytes.add(bytes, ordering: .relaxed)
        return Hold(bytes: bytes, memory: self)
    }

    private func letGo(handedOver bytes: Int) {
        handedOverBytes.subtract(bytes, ordering: .relaxed)
        heldBytes.subtract(bytes, ordering: .relaxed)
        guard waiting.load(ordering: .relaxed) > 0 else { return }
        changedFlag.store(true, ordering: .relaxed)
        waker.withLock { $0 }?()
    }

    /// Whether the first waiting transfer may go on past the budget when no transfer holding
    /// budget reads: only while bodies handed over hold at most half of it (beyond that, their
    /// callers letting them go makes the room).
    var mayExcuse: Bool { handedOverBytes.load(ordering: .relaxed) <= limit / 2 }

    /// Sets what wakes the loop thread when a body is let go off it (the loop, once).
    func setWaker(_ wake: @escaping @Sendable () -> Void) {
        waker.withLock { $0 = wake }
    }

    /// A transfer begins to wait: its place in the line.
    func waitTurn() -> UInt64 {
        waiting.add(1, ordering: .relaxed)
        changedFlag.store(true, ordering: .relaxed)
        return waits.add(1, ordering: .relaxed).newValue
    }

    /// A transfer stops waiting (it goes on, or ends).
    func stopWaiting() {
        waiting.subtract(1, ordering: .relaxed)
    }

    /// Whether waiting transfers may go on now, or one of them must (since the loop last took it).
    var changed: Bool { changedFlag.load(ordering: .relaxed) }
    func takeChanged() -> Bool { changedFlag.exchange(false, ordering: .relaxed) }
}
