import Synchronization

/// The response-body bytes one client's transfers hold in memory: each kept body's reserved
/// capacity, from its first byte until its transfer ends (the body is then its caller's). A
/// body nothing reads holds only its first bytes (`HTTPRequest.bodyPrefixBytes`). Counted on
/// the client's loop thread, read from any.
public final class BodyMemory: Sendable {
    private let heldBytes = Atomic<Int>(0)
    private let peakBytes = Atomic<Int>(0)

    /// Bytes held now.
    public var held: Int { heldBytes.load(ordering: .relaxed) }
    /// The most held at once since the client was made.
    public var peak: Int { peakBytes.load(ordering: .relaxed) }

    func add(_ bytes: Int) {
        let now = heldBytes.add(bytes, ordering: .relaxed).newValue
        peakBytes.max(now, ordering: .relaxed)
    }

    func release(_ bytes: Int) {
        heldBytes.subtract(bytes, ordering: .relaxed)
    }
}
