import Synchronization

/// The response-body bytes one client's transfers hold in memory, and their budget: each kept
/// body's reserved capacity, from its first byte until its transfer ends (the body is then its
/// caller's). A body nothing reads holds only its first bytes (`HTTPRequest.bodyPrefixBytes`).
///
/// A transfer whose body would take more than the budget has left is paused (curl stops
/// reading its socket, so the server waits) until other bodies are let go, in the order they
/// asked. Not failed: every failed run counts against the platform at the collector, whatever
/// its error kind (`internal` and `script` too), and running out of the agent's own memory says
/// nothing about the target. Each transfer's first `ownBytes` are always granted, so bodies of
/// a usual size never wait; and when no transfer holding budget is reading (every one waits
/// for more), the first waiting goes on past the budget, one at a time, so they never wait for
/// each other until their time-outs. Held bytes stay under `limit` + slots × `ownBytes` + the
/// body of that one transfer. Counted on the client's loop thread, read from any.
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

    /// Bytes held now.
    public var held: Int { heldBytes.load(ordering: .relaxed) }
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
