import Foundation
import SondeCore
import SondeTestSupport
import Synchronization

/// A stand-in collector on a real socket: verifies every push's Ed25519 signature over the exact
/// body bytes with the agent's public key, and stores results once per batch id the way the
/// collector does (a batch id seen before is acknowledged without storing).
final class PushReceiver: Sendable {
    enum Mode: Sendable {
        case accept
        case fail(Int)
        /// Answers `status` for this batch id, accepts the others.
        case refuse(batchID: String?, status: Int)
        /// Answers 400 `clock_skew`, as the collector does when `sent_at` is off.
        case clockSkew
        /// Answers 413 to a body over `maxBytes`, as the collector does over `max_body_bytes`.
        case tooLarge(maxBytes: Int)
        /// Answers `status` to any batch holding a result of probe `probe` (one bad result).
        case refuseProbe(String, status: Int)
        /// Answers 429 with this `Retry-After` value to the next `times` pushes, then accepts.
        case throttle(retryAfter: String, times: Int)
        /// Answers as something that is not the collector would (a captive portal's 200 page, a
        /// load balancer's 400 page, a 503 with `Retry-After: 0`), storing nothing.
        case foreign(status: Int, body: String, retryAfter: String? = nil)
        /// Answers 200 with an acknowledgement of another batch, storing nothing.
        case wrongAck
    }

    struct State {
        var mode: Mode = .accept
        var badSignatures = 0
        /// Signed pushes whose `Sonde-Agent-Claim` is missing or does not hold (the collector
        /// charges those to the unproven pool).
        var unprovenPushes = 0
        var requests = 0
        /// Batch ids in the order they were first stored.
        var storedBatches: [String] = []
        /// Every batch id received, in order, including resends.
        var receivedBatches: [String] = []
        var results: [ProbeResult] = []
        var duplicates = 0
        var sentAts: [Date] = []
        /// When each push arrived (signed and well-formed ones).
        var arrivals: [ContinuousClock.Instant] = []
        /// Sizes of the bodies answered 413.
        var tooLargeBodies: [Int] = []
        /// Once this many batches are stored, every push is answered 503 (an outage mid-way).
        var outageAfterStored: Int?
        /// Put in every acknowledgement, as the collector does while it decides something.
        var fastFlushSeconds: Int?
        /// Put in every acknowledgement, as the collector does while it decides about a component.
        var confirmComponents: [String]?
    }

    /// The state, in a class the server's handler can hold.
    final class Store: Sendable {
        let state: Mutex<State>
        init(_ state: State) { self.state = Mutex(state) }
    }

    let publicKey: AgentPublicKey
    private let store: Store
    let server: LoopbackHTTPServer

    init(publicKey: AgentPublicKey, mode: Mode = .accept) throws {
        self.publicKey = publicKey
        let store = Store(State(mode: mode))
        self.store = store
        server = try LoopbackHTTPServer { request in PushReceiver.handle(request, store: store, publicKey: publicKey) }
    }

    var url: String { server.baseURL }
    var snapshot: State { store.state.withLock { $0 } }
    func setMode(_ mode: Mode) { store.state.withLock { $0.mode = mode } }
    func setOutage(afterStored count: Int?) { store.state.withLock { $0.outageAfterStored = count } }
    func setFastFlush(seconds: Int?) { store.state.withLock { $0.fastFlushSeconds = seconds } }
    func setConfirm(_ components: [String]?) { store.state.withLock { $0.confirmComponents = components } }
    func stop() { server.stop() }

    private static func handle(_ request: LoopbackHTTPServer.Request, store: Store, publicKey: AgentPublicKey) -> LoopbackHTTPServer.Reply {
        store.state.withLock { s in
            s.requests += 1
            guard request.method == "POST", request.path == PushProtocol.path else {
                return .json(404, #"{"error":{"code":"not_found","message":"no such route"}}"#)
            }
            guard let signature = request.header(PushProtocol.signatureHeader),
                publicKey.verify(signatureHeader: signature, body: request.body)
            else {
                s.badSignatures += 1
                return .json(401, #"{"error":{"code":"bad_signature","message":"signature does not match"}}"#)
            }
            guard let batch = try? SondeJSON.decode(PushBatch.self, from: request.body),
                request.header(PushProtocol.agentHeader) == batch.agent
            else {
                return .json(400, #"{"error":{"code":"malformed","message":"not a push batch"}}"#)
            }
            let claim = request.header(PushProtocol.claimHeader) ?? ""
            if !publicKey.verify(claimHeader: claim, agent: batch.agent, now: Date(), allowedSkew: 300) { s.unprovenPushes += 1 }
            s.receivedBatches.append(batch.batchID)
            s.sentAts.append(batch.sentAt)
            s.arrivals.append(.now)
            if let limit = s.outageAfterStored, s.storedBatches.count >= limit {
                return .json(503, #"{"error":{"code":"unavailable","message":"try later"}}"#)
            }
            switch s.mode {
            case .tooLarge(let maxBytes) where request.body.count > maxBytes:
                s.tooLargeBodies.append(request.body.count)
                return .json(413, #"{"error":{"code":"body_too_large","message":"the push body is over max_body_bytes"}}"#)
            case .refuseProbe(let probe, let status) where batch.results.contains(where: { $0.probe == probe }):
                return .json(status, #"{"error":{"code":"invalid_batch","message":"result 0: duration_ms must not be negative"}}"#)
            case .throttle(let retryAfter, let times) where times > 0:
                s.mode = .throttle(retryAfter: retryAfter, times: times - 1)
                return .respond(
                    status: 429, headers: [("Content-Type", "application/json"), ("Retry-After", retryAfter)],
                    body: Data(#"{"error":{"code":"rate_limited","message":"slow down"}}"#.utf8))
            case .foreign(let status, let body, let retryAfter):
                return .respond(
                    status: status, headers: [("Content-Type", "text/html")] + (retryAfter.map { [("Retry-After", $0)] } ?? []), body: Data(body.utf8))
            case .wrongAck:
                let ack = PushAck(batchID: "some-other-batch", accepted: 1, duplicate: false)
                return .respond(status: 200, headers: [("Content-Type", "application/json")], body: (try? SondeJSON.encode(ack)) ?? Data())
            case .fail(let status):
                return .json(status, #"{"error":{"code":"unavailable","message":"try later"}}"#)
            case .clockSkew:
                return .json(400, #"{"error":{"code":"clock_skew","message":"sent_at is 900 s ahead of the collector's clock"}}"#)
            case .refuse(let id, let status) where id == nil || id == batch.batchID:
                return .json(status, #"{"error":{"code":"invalid_batch","message":"result 0: duration_ms must not be negative"}}"#)
            default:
                break
            }
            let duplicate = s.storedBatches.contains(batch.batchID)
            if duplicate {
                s.duplicates += 1
            } else {
                s.storedBatches.append(batch.batchID)
                s.results += batch.results
            }
            let ack = PushAck(
                batchID: batch.batchID, accepted: duplicate ? 0 : batch.results.count, duplicate: duplicate, fastFlushSeconds: s.fastFlushSeconds,
                confirmComponents: s.confirmComponents)
            return .respond(status: 200, headers: [("Content-Type", "application/json")], body: (try? SondeJSON.encode(ack)) ?? Data())
        }
    }
}
