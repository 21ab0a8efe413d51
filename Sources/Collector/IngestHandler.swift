import CollectorStore
import Crypto
import Foundation
import Hummingbird
import Logging
import SondeCore
import Synchronization

/// `POST /v1/results`: checks a signed batch from the outside in (size, agent, signature, JSON,
/// clock, consistency), stores it in one transaction and only then acknowledges it. Nothing from a
/// refused request is stored.
struct IngestHandler: Sendable {
    let store: any CollectorStorage
    /// Group commit in front of `store` (see `IngestWriter`).
    let writer: IngestWriter
    let hub: CorrelationHub
    let trigger: WakeSignal
    let metrics: CollectorMetrics
    let health: StorageHealth
    let cardinality: AgentCardinality
    /// Pushes per agent (429 with Retry-After past it; the agent waits that long).
    let pushLimiter: RateLimiter
    /// Results per agent (`limits.results_per_minute`): what one agent may add to storage, uptime
    /// and the engine, whatever its batch sizes.
    let resultLimiter: RateLimiter
    /// Push body bytes per agent (`limits.push_bytes_per_minute`): what one agent may add to the
    /// disk, whatever its results hold.
    let byteLimiter: RateLimiter
    let maxBodyBytes: Int
    let maxResults: Int
    let allowedSkew: TimeInterval
    /// `retention_days` in seconds: older results are refused (they would be pruned at once).
    let retention: TimeInterval
    /// False with several collectors: the engine is fed by following the database instead.
    var feedsHub = true
    let logger: Logger
    /// Enrolled keys already parsed (OpenSSL's key object), by their base64.
    let keys = AgentKeyCache()
    /// Each agent's last claim that verified.
    let claims = PushClaimCache()

    /// Bytes of push bodies being read at once, for every agent together.
    let bodyBudget: PushBodyBudget
    /// How long before its enrolment an agent's runs are still accepted.
    static let enrolmentGrace: TimeInterval = 86_400
    /// Longer `Sonde-Agent` values are refused unread (enrolment allows far shorter ids).
    static let longestAgentID = 256
    /// The public key an unknown or revoked id's push is checked against: made at start, its
    /// private half never kept, so nothing verifies against it.
    static let decoyKey = AgentSigningKey().publicKey.base64

    func handle(_ request: Request) async throws(APIError) -> PushAck {
        do {
            let ack = try await accept(request)
            return ack
        } catch {
            metrics.batchRejected()
            metrics.refused(.ingest, reason: error.reason ?? error.code)
            var metadata: Logger.Metadata = [
                "error.code": .string(error.code), "error.message": .string(error.message),
                "agent.id": .string(APIError.clipped(request.headers.first(named: PushProtocol.agentHeader) ?? "?", to: Self.longestAgentID)),
            ]
            if let reason = error.reason { metadata["error.reason"] = .string(reason) }
            logger.notice("Batch refused", metadata: metadata)
            throw error
        }
    }

    private func accept(_ request: Request) async throws(APIError) -> PushAck {
        let receivedAt = Date()
        let arrived = ContinuousClock.now
        // Size first: a declared length over the limit is refused before reading anything.
        let declared = request.headers[.contentLength].flatMap(Int.init)
        if let declared, declared > maxBodyBytes {
            throw tooLarge(declared)
        }
        // A compressed body is not read (a bomb would cost what it expands to): said as such, not
        // as "malformed_body … byte 0x1f" (red team, 32nd session).
        if let encoding = request.headers[.contentEncoding], encoding.trimmingCharacters(in: .whitespaces).lowercased() != "identity" {
            throw APIError(
                .unsupportedMediaType, "unsupported_media_type",
                "Content-Encoding is \"\(APIError.clipped(encoding, to: 64))\"; push batches uncompressed (the agent's own pushes are)")
        }
        // Only JSON is accepted; a missing Content-Type is tolerated (the body is checked anyway).
        if let type = request.headers[.contentType] {
            let media = type.split(separator: ";", maxSplits: 1).first.map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
            guard media == "application/json" else {
                throw APIError(.unsupportedMediaType, "unsupported_media_type", "Content-Type is \"\(type)\"; push batches as application/json")
            }
        }
        // Who claims to have sent it. An unknown, revoked or wrongly signed push gets the same
        // 401, after its body like any other (read and dropped for an unknown or revoked id), so
        // nobody without a key can learn which agent ids exist (the reason goes to the log and
        // `sonde_refusals_total`).
        guard let agentID = request.headers.first(named: PushProtocol.agentHeader)?.trimmingCharacters(in: .whitespaces), !agentID.isEmpty else {
            throw Self.unauthorized(reason: "unknown_agent", "no \(PushProtocol.agentHeader) header: name the pushing agent's id in it")
        }
        guard let signature = request.headers.first(named: PushProtocol.signatureHeader), !signature.isEmpty else {
            throw Self.unauthorized(reason: "bad_signature", "no \(PushProtocol.signatureHeader) header: the agent signs every push with its key")
        }
        guard agentID.utf8.count <= Self.longestAgentID, !AgentCardinality.hasControlCharacters(agentID) else {
            throw Self.unauthorized(
                reason: "unknown_agent", "the \(PushProtocol.agentHeader) header is not an agent id (over \(Self.longestAgentID) bytes or with control characters)")
        }
        let agent: AgentRecord?
        do { agent = try await store.agent(id: agentID) } catch {
            // Anyone may send this request: the storage error (a database's address, user and
            // name) goes to the log, not to them (red team, third pass).
            logger.error("Cannot look an agent up", metadata: ["error": "\(error)"])
            throw APIError(.serviceUnavailable, "storage_unavailable", "cannot look the agent up; retry later (the collector's log says why)")
        }
        let usable = agent.flatMap { $0.revoked ? nil : $0 }
        // An unknown or revoked id is checked as an enrolled one would be, against a key nobody
        // holds: the same claim and signature checks, the same body budget, the same `busy`, so
        // neither the answer nor its timing tells which ids are enrolled (red team, third pass).
        let checked = usable ?? AgentRecord(id: agentID, region: "", publicKey: Self.decoyKey, revoked: false, enrolledAt: receivedAt)
        // A push whose claim (signed id, time and length, checked before its body) holds reads
        // into its agent's own share; any other into the unproven pool (`PushBodyBudget`).
        let proven: Bool
        if let claim = request.headers.first(named: PushProtocol.claimHeader) {
            proven = claims.holds(claim, agent: checked, now: receivedAt, allowedSkew: allowedSkew, keys: keys)
        } else {
            proven = false
        }
        // Held until the push is answered: the body stays in memory while it is checked and stored.
        var charged = 0
        defer { bodyBudget.release(charged, agent: agentID, proven: proven) }
        let body = try await readBody(request, agent: agentID, proven: proven, charged: &charged)

        // The signature covers the exact bytes received (an empty body fails it too).
        let verified = keys.key(checked.publicKey)?.verify(signatureHeader: signature, body: body) ?? false
        guard let agent = usable else {
            throw Self.unauthorized(reason: agent == nil ? "unknown_agent" : "agent_revoked")
        }
        guard verified else { throw Self.unauthorized(reason: "bad_signature") }
        guard !body.isEmpty else { throw APIError(.badRequest, "malformed_body", "the request body is empty; expected a JSON push batch") }

        // Rate after the signature: nobody can spend an agent's allowance by naming it.
        if let wait = pushLimiter.take(agentID) {
            throw RateLimiter.tooMany("rate_limited", "agent \"\(agentID)\" pushes faster than limits.pushes_per_minute allows", retryAfter: wait)
        }
        if let wait = byteLimiter.take(agentID, count: Double(body.count)) {
            throw RateLimiter.tooMany(
                "rate_limited", "agent \"\(agentID)\" sends more bytes than limits.push_bytes_per_minute allows", retryAfter: wait)
        }

        // Now the content.
        // Runs from well before the agent was enrolled, or older than what is kept, are not its
        // to report: else one enrolled agent could rewrite months of public uptime history. A
        // day's grace: agents are often started (and spool) before someone enrols them.
        let notBefore = max(agent.enrolledAt.addingTimeInterval(-max(allowedSkew, Self.enrolmentGrace)), receivedAt.addingTimeInterval(-retention))
        let decoded = try IngestDecoding.decode(
            from: body, agentID: agentID, region: agent.region, maxResults: maxResults, allowedSkew: allowedSkew, receivedAt: receivedAt,
            notBefore: notBefore)
        let batch = decoded.batch
        try cardinality.admit(batch.results, agent: agentID)
        // Volume after the content is known good: one agent pushing 10,000-result batches within
        // its push rate grew the database by 12 MB/s and starved /healthz (red team F4). The
        // agent keeps what it could not push in its spool and sends it after Retry-After.
        if let wait = resultLimiter.take(agentID, count: Double(batch.results.count)) {
            throw RateLimiter.tooMany(
                "rate_limited", "agent \"\(agentID)\" sends more results than limits.results_per_minute allows", retryAfter: wait)
        }

        let outcome: IngestOutcome
        do {
            outcome = try await writer.store(
                PendingBatch(
                    // Runs from the day of grace before enrolment are kept, but uptime counts
                    // only the days the agent watched (red team F3: one agent enrolled today
                    // painted yesterday's bar red).
                    batch: BatchRecord(
                        batchID: batch.batchID, agent: agentID, receivedAt: receivedAt, body: body, signature: signature,
                        uptimeFrom: agent.enrolledAt.addingTimeInterval(-allowedSkew)),
                    results: batch.results, resultRanges: decoded.resultRanges))
        } catch {
            health.ingestFailed()
            // With several collectors too: this one may be the leader, which judges silence
            // (with PostgreSQL a 25 s table lock paged every agent silent; HA review, 33rd
            // session, F3).
            await hub.pushRefusedByStorage()
            logger.error("Cannot store a batch", metadata: ["agent.id": .string(agentID), "batch.id": .string(batch.batchID), "error": "\(error)"])
            throw APIError(.serviceUnavailable, "storage_unavailable", "the batch could not be stored; retry later")
        }
        health.ingestSucceeded()
        switch outcome {
        case .duplicate:
            metrics.batchDuplicate()
            logger.debug("Duplicate batch acknowledged", metadata: ["agent.id": .string(agentID), "batch.id": .string(batch.batchID)])
            return PushAck(
                batchID: batch.batchID, accepted: 0, duplicate: true, fastFlushSeconds: fastFlushSeconds,
                confirmComponents: confirmComponents(region: agent.region))
        case .stored(let new):
            // Only results stored now: one the store already had (re-sent under a new batch id)
            // was counted, correlated and shown when it first came.
            let fresh = new.count == batch.results.count ? batch.results : new.map { batch.results[$0] }
            metrics.batchAccepted(results: fresh.count)
            if !fresh.isEmpty {
                if feedsHub, await hub.ingest(fresh, push: (batch.sentAt, arrived)) { trigger.fire() }
                // After the hub has them: an evaluation that did not see them ended before their receive
                // time, so /metrics never hides them behind a verdict older than they are.
                metrics.record(fresh)
            }
            logger.debug(
                "Batch stored",
                metadata: ["agent.id": .string(agentID), "batch.id": .string(batch.batchID), "results": "\(batch.results.count)", "results.new": "\(fresh.count)"])
            return PushAck(
                batchID: batch.batchID, accepted: batch.results.count, duplicate: false, fastFlushSeconds: fastFlushSeconds,
                confirmComponents: confirmComponents(region: agent.region))
        }
    }

    /// Asks the agent to push promptly while the engine decides something its newest runs speed
    /// up (`CorrelationEngine.wantsFreshRuns`), so the region-scope wait and a recovery need not
    /// wait out other agents' `flush_interval`. With several collectors each one's engine follows
    /// the database and evaluates, so any of them can answer it.
    private var fastFlushSeconds: Int? {
        hub.wantsFreshRuns.load(ordering: .relaxed) ? PushProtocol.fastFlushSeconds : nil
    }

    /// The components this agent's region is asked to confirm now (`PushAck.confirmComponents`):
    /// the agent runs their probes at its retry pace for a while.
    private func confirmComponents(region: String) -> [String]? {
        hub.confirmations.withLock { $0.components(forRegion: region) }
    }

    /// The one answer to a push not signed by an enrolled, unrevoked agent: the same code and
    /// message whatever the reason, which is kept for the log and metrics.
    static func unauthorized(
        reason: String,
        _ message: String =
            "the push is not signed by an enrolled agent: check that the agent is enrolled (sonde-collector agents list), not revoked, and that its key matches the enrolled public key"
    ) -> APIError {
        var error = APIError(.unauthorized, "unauthorized", message)
        error.reason = reason
        return error
    }

    /// Reads the body, charging `bodyBudget` for the bytes as they arrive (not the declared
    /// length: a slow sender holds only what it has sent). A stalled body is cut by
    /// `RequestReadDeadline`'s minimum rate.
    /// `charged`: the bytes reserved so far, for the caller to release once the push is answered.
    private func readBody(_ request: Request, agent: String, proven: Bool, charged: inout Int) async throws(APIError) -> Data {
        var body = Data()
        var received = 0
        do {
            for try await chunk in request.body {
                let size = chunk.readableBytes
                guard received + size <= maxBodyBytes else { throw tooLarge(nil) }
                guard bodyBudget.reserve(size, agent: agent, proven: proven) else {
                    var error = APIError(
                        .serviceUnavailable, "busy",
                        "the collector is reading too many push bodies at once (limits.max_push_bytes_in_flight, or twice max_body_bytes for one agent id)"
                            + (proven ? "" : "; this push has no valid \(PushProtocol.claimHeader) header, so it shares the pool of unproven pushes")
                            + "; retry in 1 s")
                    error.headers[.retryAfter] = "1"
                    throw error
                }
                charged += size
                body.append(contentsOf: chunk.readableBytesView)
                received += size
            }
        } catch let error as APIError {
            throw error
        } catch let error as any HTTPResponseError where error.status == .contentTooLarge {
            throw tooLarge(nil)
        } catch {
            throw APIError(.badRequest, "malformed_body", "the request body could not be read: \(error)")
        }
        return body
    }

    private func tooLarge(_ declared: Int?) -> APIError {
        APIError(
            .contentTooLarge, "body_too_large",
            "the body\(declared.map { " (\($0) bytes)" } ?? "") is over the \(maxBodyBytes)-byte limit; send smaller batches")
    }
}

/// Push bodies being read at once share one byte budget (`limits.max_push_bytes_in_flight`),
/// charged for the bytes received so far (a declared `Content-Length` costs nothing until its
/// bytes come), and one agent id may hold at most `perAgent` of it (twice `max_body_bytes`: an
/// agent pushes one batch at a time). Past either: 503 `busy` at once.
///
/// The body's signature can be checked only once it is read, so a push is charged as proven
/// (its `Sonde-Agent-Claim` header verified) or unproven. Unproven pushes (an older agent, or
/// anyone naming an id they only know) have shares of their own, apart from the proven ones of
/// the same id, and hold at most half the budget together: nobody without an agent's key can
/// use up that agent's share or the proven pushes' half (red team F7).
final class PushBodyBudget: Sendable {
    private struct Usage {
        var total = 0
        var unproven = 0
        var byAgent: [String: Int] = [:]
    }
    private let limit: Int
    private let perAgent: Int
    private let used = Mutex(Usage())

    init(limit: Int, perAgent: Int = .max) {
        self.limit = limit
        self.perAgent = perAgent
    }

    /// The share a push is charged to. Agent ids hold no control characters, so no proven id
    /// can be an unproven one's key.
    private static func share(_ agent: String, proven: Bool) -> String { proven ? agent : "\u{1}" + agent }

    /// False (nothing reserved) when `bytes` more would pass the budget, the unproven half or the
    /// share; a push alone always fits the shared budget.
    func reserve(_ bytes: Int, agent: String, proven: Bool) -> Bool {
        let share = Self.share(agent, proven: proven)
        return used.withLock { used in
            let mine = used.byAgent[share, default: 0]
            guard used.total == 0 || (used.total + bytes <= limit && (proven || used.unproven + bytes <= limit / 2)), mine + bytes <= perAgent
            else { return false }
            used.total += bytes
            if !proven { used.unproven += bytes }
            used.byAgent[share] = mine + bytes
            return true
        }
    }

    func release(_ bytes: Int, agent: String, proven: Bool) {
        guard bytes > 0 else { return }
        let share = Self.share(agent, proven: proven)
        used.withLock { used in
            used.total -= bytes
            if !proven { used.unproven -= bytes }
            let left = used.byAgent[share, default: 0] - bytes
            used.byAgent[share] = left > 0 ? left : nil
        }
    }

    var inUse: Int { used.withLock { $0.total } }
}

/// The last `Sonde-Agent-Claim` that verified, per agent (and key): an agent sends one claim for
/// a minute, so a push whose claim was checked before costs no verification, only a string
/// comparison and the time check. Emptied when it holds more agents than any fleet.
final class PushClaimCache: Sendable {
    private let verified = Mutex<[String: (key: String, header: String, timeMs: Int64)]>([:])

    func holds(_ header: String, agent: AgentRecord, now: Date, allowedSkew: TimeInterval, keys: AgentKeyCache) -> Bool {
        if let kept = verified.withLock({ $0[agent.id] }), ConstantTime.equal(kept.header, header), kept.key == agent.publicKey {
            return PushClaim.isCurrent(timeMs: kept.timeMs, now: now, allowedSkew: allowedSkew)
        }
        guard let key = keys.key(agent.publicKey), key.verify(claimHeader: header, agent: agent.id, now: now, allowedSkew: allowedSkew),
            let claim = PushProtocol.parseClaim(header)
        else { return false }
        verified.withLock { verified in
            if verified.count >= 100_000 { verified.removeAll() }
            verified[agent.id] = (agent.publicKey, header, claim.timeMs)
        }
        return true
    }
}

/// Agents' public keys as parsed for verification, by the base64 the store holds: parsing one
/// (decompressing the curve point) is paid once per key, not once per push. A key that changes
/// (re-enrolment) is a new entry; the cache is emptied when it holds more keys than any fleet.
final class AgentKeyCache: Sendable {
    private let keys = Mutex<[String: AgentPublicKey]>([:])

    /// Nil when `base64` is not a valid key.
    func key(_ base64: String) -> AgentPublicKey? {
        if let key = keys.withLock({ $0[base64] }) { return key }
        guard let key = try? AgentPublicKey(base64: base64) else { return nil }
        keys.withLock { keys in
            if keys.count >= 100_000 { keys.removeAll() }
            keys[base64] = key
        }
        return key
    }
}

/// The content checks of a push body, after its signature verified: JSON shape, agent
/// consistency, batch size and clock skew. Pure (no I/O), so a property test can throw arbitrary
/// bytes at it: any input either decodes to a batch that satisfies every check or throws an
/// `APIError` with a 4xx status.
public enum IngestDecoding {
    public static func batch(
        from body: Data, agentID: String, region: String? = nil, maxResults: Int, allowedSkew: TimeInterval, receivedAt: Date,
        notBefore: Date? = nil
    ) throws(APIError) -> PushBatch {
        try decode(
            from: body, agentID: agentID, region: region, maxResults: maxResults, allowedSkew: allowedSkew, receivedAt: receivedAt,
            notBefore: notBefore
        ).batch
    }

    /// `batch(from:…)` with the byte range of each result in the body (for the store). `region`:
    /// the agent's enrolled region, which every result must carry. `notBefore`: the oldest
    /// `started_at` accepted (the agent's enrolment, the retention window).
    public static func decode(
        from body: Data, agentID: String, region: String? = nil, maxResults: Int, allowedSkew: TimeInterval, receivedAt: Date,
        notBefore: Date? = nil
    ) throws(APIError) -> PushBatchDecoder.Decoded {
        let decoded: PushBatchDecoder.Decoded
        do { decoded = try PushBatchDecoder.decode(body) } catch {
            throw APIError(.badRequest, "malformed_body", "the body is not a valid push batch: \(error)")
        }
        let batch = decoded.batch
        guard batch.agent == agentID else {
            throw APIError(.badRequest, "agent_mismatch", "the body's agent \"\(batch.agent)\" is not the \(PushProtocol.agentHeader) header's \"\(agentID)\"")
        }
        if let index = batch.results.firstIndex(where: { $0.agent != agentID }) {
            throw APIError(
                .badRequest, "agent_mismatch", "results[\(index)].agent is \"\(batch.results[index].agent)\", not the batch's agent \"\(agentID)\"")
        }
        if let region, let index = batch.results.firstIndex(where: { $0.region != region }) {
            throw APIError(
                .unprocessableContent, "region_mismatch",
                "results[\(index)].region is \"\(batch.results[index].region)\", but agent \"\(agentID)\" is enrolled in region \"\(region)\"; fix the agent's region or re-enrol it")
        }
        guard !batch.batchID.isEmpty else { throw APIError(.badRequest, "malformed_body", "batch_id: must not be empty") }
        if let reason = ResultText.idProblem(batch.batchID) {
            throw APIError(.badRequest, "bad_field", "batch_id (\(APIError.clipped(batch.batchID, to: 64))): \(reason)")
        }
        guard !batch.results.isEmpty else { throw APIError(.badRequest, "empty_batch", "the batch has no results") }
        guard batch.results.count <= maxResults else {
            throw APIError(.contentTooLarge, "too_many_results", "the batch has \(batch.results.count) results; at most \(maxResults) are accepted per batch, split it")
        }
        let skew = batch.sentAt.timeIntervalSince(receivedAt)
        guard abs(skew) <= allowedSkew else {
            throw APIError(
                .badRequest, "clock_skew",
                "sent_at \(RFC3339.string(from: batch.sentAt)) is \(Int(abs(skew).rounded())) s \(skew < 0 ? "behind" : "ahead of") the collector's clock (\(RFC3339.string(from: receivedAt))); at most \(Int(allowedSkew)) s is allowed: fix the agent host's clock (NTP)"
            )
        }
        // A run may be older than its push (an agent's spool drains late), never newer: a result
        // "from the future" would sit at the head of its window and pin a verdict there.
        if let index = batch.results.firstIndex(where: { $0.startedAt.timeIntervalSince(batch.sentAt) > allowedSkew }) {
            let result = batch.results[index]
            throw APIError(
                .badRequest, "result_clock_skew",
                "results[\(index)] (id \(result.id)): started_at \(RFC3339.string(from: result.startedAt)) is \(Int(result.startedAt.timeIntervalSince(batch.sentAt).rounded())) s after the batch's sent_at \(RFC3339.string(from: batch.sentAt)); at most \(Int(allowedSkew)) s is allowed: fix the agent host's clock (NTP)"
            )
        }
        // Names, codes, labels and texts reach pages, webhooks, metrics and terminals: one rule
        // (`ResultText`, also the probe loader's) for what they may hold.
        for (index, result) in batch.results.enumerated() {
            if let (field, reason) = ResultText.problem(in: result) {
                throw APIError(.badRequest, "bad_field", "results[\(index)].\(field) (id \(APIError.clipped(result.id, to: 64))): \(reason); fix the probe script (sonde-agent validate checks it)")
            }
        }
        // What is stored is the body as signed: beside its results it may carry only a little
        // (the batch's own fields, members a newer agent adds), not megabytes of padding (red
        // team, third pass: one result and 8 MiB of filler per push), and no result may be huge.
        var resultBytes = 0
        for (index, range) in decoded.resultRanges.enumerated() {
            guard range.count <= ResultText.largestResultBytes else {
                throw APIError(
                    .contentTooLarge, "result_too_large",
                    "results[\(index)] is \(range.count) bytes of JSON; at most \(ResultText.largestResultBytes) are accepted per result")
            }
            resultBytes += range.count
        }
        guard body.count - resultBytes <= ResultText.largestBatchOverhead else {
            throw APIError(
                .badRequest, "padded_body",
                "the body holds \(body.count - resultBytes) bytes beside its results; at most \(ResultText.largestBatchOverhead) are accepted")
        }
        if let notBefore, let index = batch.results.firstIndex(where: { $0.startedAt < notBefore }) {
            let result = batch.results[index]
            throw APIError(
                .badRequest, "result_too_old",
                "results[\(index)] (id \(result.id)): started_at \(RFC3339.string(from: result.startedAt)) is before \(RFC3339.string(from: notBefore)), the oldest accepted from agent \"\(agentID)\" (a day before its enrolment, or retention_days ago); it is set aside, not stored"
            )
        }
        return decoded
    }
}

extension HTTPFields {
    /// The first value of a header, by case-insensitive name.
    func first(named name: String) -> String? {
        first { $0.name.canonicalName == name.lowercased() }?.value
    }
}
