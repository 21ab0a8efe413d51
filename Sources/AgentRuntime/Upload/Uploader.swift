import CurlHTTP
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Logging
import ServiceLifecycle
import SondeCore

/// Pushes the spool's batches to the collector, strictly one after another (order per agent is
/// kept), each signed over its exact body bytes, until the collector acknowledges it.
///
/// | answer | what happens |
/// |---|---|
/// | 2xx (`PushAck`) | batch acknowledged, removed from the spool |
/// | 5xx, 429, time-out, connection refused | same batch again after `Retry-After` if the answer has one, else capped exponential backoff with full jitter |
/// | 401 / 403 | agent unknown or revoked: data kept, error logged (once a minute) with the fix, slow retry |
/// | 400 `clock_skew` | the host clock is off: same as 401 (the batch is fine; the clock needs fixing) |
/// | 400 / 413 / 422 | the collector refuses the batch: it is split in halves, each sent on its own (and split again if refused); only a single result refused alone goes to `spool/rejected/`, with an error line and a count |
/// | other | logged, retried with backoff (a wrong URL should not lose data) |
///
/// `sent_at` is set, and the body re-signed, at each send; the batch id and results never change.
/// The halves of batch `X` are `X.1` and `X.2` (their halves `X.1.1`, …): after a restart the
/// spooled batch `X` is sent again, refused again and split into the same ids, so the collector
/// answers "duplicate" for the parts it already stored. `X` is acknowledged in the spool once
/// every part is delivered or set aside.
public struct Uploader: Service {
    public struct Settings: Sendable {
        public var collectorURL: String
        public var agentID: String
        public var batchSize: Int
        public var timeout: Duration
        public var flushInterval: Duration
        public var backoffBase: Duration
        public var backoffCap: Duration
        public var unauthorizedRetry: Duration
        /// `collector.ca_file`: the CA the collector's certificate must chain to.
        public var caFile: String?
        /// `collector.client_cert` / `client_key`, for mutual TLS.
        public var clientCertificate: (cert: String, key: String)?

        public init(config: AgentConfig) {
            collectorURL = config.collector.url ?? ""
            agentID = config.agentID
            batchSize = config.collector.batchSize
            timeout = config.collector.timeout
            flushInterval = config.collector.flushInterval
            backoffBase = config.collector.backoffBase
            backoffCap = config.collector.backoffCap
            unauthorizedRetry = config.collector.unauthorizedRetry
            caFile = config.collector.caFile
            clientCertificate = config.collector.clientCertificate
        }
    }

    public var settings: Settings
    /// Every spool call goes through the journal's thread (never the probes' thread).
    public var journal: JournalWriter
    public var spool: Spool { journal.spool }
    public var key: AgentSigningKey
    /// The `Sonde-Agent-Claim` sent with every push, signed again once a minute.
    let pushClaim: PushClaim
    public var client: CurlHTTPClient
    public var logger: Logger
    /// Push counts for `/metrics`; nil when it is off.
    public var metrics: AgentMetrics?
    /// Takes the components a collector's answer asks to confirm (`PushAck.confirmComponents`;
    /// the scheduler's `confirm(components:)`), at most `PushProtocol.longestConfirmList` names.
    public var confirm: (@Sendable ([String]) -> Void)?

    public init(settings: Settings, journal: JournalWriter, key: AgentSigningKey, client: CurlHTTPClient = .shared, logger: Logger) {
        self.settings = settings
        self.journal = journal
        self.key = key
        self.pushClaim = PushClaim(key: key, agent: settings.agentID)
        self.client = client
        self.logger = logger
    }

    /// An uploader with a journal writer of its own (for a spool nothing else writes to).
    public init(settings: Settings, spool: Spool, key: AgentSigningKey, client: CurlHTTPClient = .shared, logger: Logger) {
        self.init(settings: settings, journal: JournalWriter(spool: spool), key: key, client: client, logger: logger)
    }

    private func nextBatch() async throws(SpoolError) -> SpoolBatch? {
        try await journal.nextBatch(maxResults: settings.batchSize)
    }

    public var endpoint: String {
        var base = settings.collectorURL
        while base.hasSuffix("/") { base.removeLast() }
        return base + PushProtocol.path
    }

    /// Until graceful shutdown: send the next batch, or, when there is none, wait for the next
    /// result and then `flushInterval` (so that one push carries what that interval brings),
    /// a pause that a result able to change a decision at the collector ends at once
    /// (`PushUrgency`: a run not ok, or a probe's first passing runs after one). On shutdown a
    /// send in flight runs to its answer or its `timeout`; what is not acknowledged stays in the
    /// spool and goes out (same batch id, deduplicated) on the next start.
    ///
    /// Runs on the journal's thread (`JournalWriter.taskExecutor`): its spool calls, its pauses
    /// and its wake-up when the collector answers then need no hand-off between threads.
    public func run() async throws {
        await withTaskExecutorPreference(journal.taskExecutor) {
            await withGracefulShutdownHandler {
                await deliverUntilShutdown()
            } onGracefulShutdown: { [journal] in
                journal.wakeSleepers()
            }
        }
    }

    private func deliverUntilShutdown() async {
        logger.info("uploader started", metadata: ["collector.url": "\(endpoint)"])
        var state = DeliveryState()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let batch: SpoolBatch?
            do { batch = try await nextBatch() } catch {
                logger.error("cannot read the spool; retrying", metadata: ["error": "\(error)"])
                await pause(settings.backoffCap)
                continue
            }
            guard let batch else {
                // No look every flush_interval while nothing comes: an agent with no run due sleeps.
                try? await journal.waitForResult { [spool] in Task.isShuttingDownGracefully || spool.status.unsentResults > 0 }
                await pauseForMoreResults(fast: state.fastFlushUntil.map { ContinuousClock.now < $0 } ?? false)
                continue
            }
            await deliver(batch, state: &state)
        }
        // No last push while pushes are failing: against a collector that hangs, it held the stop
        // for one more `timeout` (red team, fifth pass). The spool keeps everything for the next start.
        if !Task.isCancelled && !state.failing { await drain() }
        logger.info("uploader stopped", metadata: ["spool.unsent": "\(spool.status.unsentResults)"])
    }

    /// On graceful shutdown (the scheduler has stopped by then: it is shut down first), pushes
    /// what is left while the collector accepts, for at most one `timeout`; anything not
    /// delivered stays in the spool for the next start.
    func drain() async {
        let clock = ContinuousClock()
        let deadline = clock.now + settings.timeout
        await journal.flush()  // the last runs' results
        var state = DeliveryState()
        while !Task.isCancelled, clock.now < deadline {
            guard let batch = try? await nextBatch() else { return }
            guard await deliver(batch, state: &state, patient: false) else { return }
        }
    }

    /// What the retry loop remembers across attempts.
    struct DeliveryState {
        var lastUnauthorizedLog: ContinuousClock.Instant?
        var lastRetryWarning: ContinuousClock.Instant?
        /// Pushes have been failing (so the recovery is worth an info line).
        var failing = false
        /// Results set aside (refused alone) since the uploader started.
        var setAside = 0
        /// Until when the collector asked for prompt pushes (`PushAck.fastFlushSeconds`).
        var fastFlushUntil: ContinuousClock.Instant?
    }

    /// Sends `batch` until every result in it is delivered (or, refused alone, set aside), then
    /// acknowledges it in the spool. False when it stopped first: shutdown began, or (not
    /// `patient`: the last push at shutdown) the collector did not take it at once.
    @discardableResult
    func deliver(_ batch: SpoolBatch, state: inout DeliveryState, patient: Bool = true) async -> Bool {
        var logger = logger
        logger[metadataKey: "batch.id"] = "\(batch.id)"
        guard await deliverPart(batch, state: &state, patient: patient, logger: logger) else { return false }
        let id = batch.id
        do { try await journal.perform { spool throws(SpoolError) in try spool.acknowledge(id) } } catch {
            // The collector has it; a resend after restart is deduplicated by batch id.
            logger.error("batch delivered but the spool could not record it", metadata: ["error": "\(error)"])
        }
        return true
    }

    /// One batch or part of one, sent until the collector takes it; a refused part is split.
    private func deliverPart(_ part: SpoolBatch, state: inout DeliveryState, patient: Bool, logger: Logger) async -> Bool {
        var attempt = 0
        while !Task.isCancelled && (!patient || !Task.isShuttingDownGracefully) {
            attempt += 1
            let outcome = await send(part, logger: logger)
            if let metrics {
                if case .acknowledged = outcome { metrics.recordPush(ok: true) } else { metrics.recordPush(ok: false) }
            }
            switch outcome {
            case .acknowledged(let ack):
                if let names = ack.confirmComponents, !names.isEmpty, let confirm {
                    confirm(Array(names.prefix(PushProtocol.longestConfirmList)))
                    metrics?.recordConfirmationRequest()
                }
                if let seconds = ack.fastFlushSeconds, seconds > 0 {
                    if state.fastFlushUntil.map({ ContinuousClock.now >= $0 }) ?? true {
                        logger.debug("collector asks for prompt pushes while it decides", metadata: ["push.fast_flush_for_s": "\(seconds)"])
                    }
                    state.fastFlushUntil = .now + .seconds(min(seconds, PushProtocol.longestFastFlushSeconds))
                    metrics?.recordPromptPushRequest()
                }
                guard state.failing || logger.logLevel <= .debug else { return true }
                let metadata: Logger.Metadata = [
                    "batch.part": "\(part.id)", "batch.results": "\(part.count)", "batch.duplicate": "\(ack.duplicate)",
                    "batch.attempts": "\(attempt)",
                ]
                if state.failing {
                    state.failing = false
                    logger.info("collector reachable again; batch delivered", metadata: metadata)
                } else {
                    logger.debug("batch delivered", metadata: metadata)
                }
                return true
            case .rejected(let status, let message) where part.count > 1:
                // Too large (413), or one bad result spoiling the rest (400/422): halves, each on its own.
                let half = part.count / 2
                logger.info(
                    "collector refused the batch; splitting it in two and sending each half",
                    metadata: ["http.status": "\(status)", "error.message": "\(message)", "batch.part": "\(part.id)", "batch.results": "\(part.count)"])
                let first = SpoolBatch(id: part.id + ".1", rawResults: Array(part.rawResults.prefix(half)))
                let second = SpoolBatch(id: part.id + ".2", rawResults: Array(part.rawResults.dropFirst(half)))
                guard await deliverPart(first, state: &state, patient: patient, logger: logger) else { return false }
                return await deliverPart(second, state: &state, patient: patient, logger: logger)
            case .rejected(let status, let message):
                let reason = "HTTP \(status): \(message)"
                do { try await journal.perform { spool throws(SpoolError) in try spool.setAside(part, reason: reason) } } catch {
                    logger.error("cannot keep the refused result in spool/rejected/; retrying", metadata: ["error": "\(error)"])
                    guard patient else { return false }
                    await pause(settings.backoffCap)
                    continue
                }
                state.setAside += 1
                logger.error(
                    "collector refused a single result on its own; kept it in spool/rejected/ and going on",
                    metadata: [
                        "http.status": "\(status)", "error.message": "\(message)", "batch.part": "\(part.id)",
                        "result.id": "\(part.results.first?.id ?? "?")", "results.set_aside": "\(state.setAside)",
                    ])
                return true
            case .agentRefused(let status, let message, let clockSkew):
                guard patient else { return false }
                let clock = ContinuousClock()
                if state.lastUnauthorizedLog.map({ clock.now - $0 >= .seconds(60) }) ?? true {
                    state.lastUnauthorizedLog = clock.now
                    let text: Logger.Message =
                        clockSkew
                        ? "collector refuses this agent's sent_at: the host clock is off; results are kept in the spool. Fix: synchronise the clock (NTP, e.g. `timedatectl set-ntp true`)"
                        : "collector does not accept this agent's pushes (not enrolled, revoked, or its key does not match the enrolled public key); results are kept in the spool. Fix: enrol the key on the collector with `sonde-collector agents add --db <collector.db> --id \(settings.agentID) --region <region> --public-key \(key.publicKey.base64)`"
                    logger.error(text, metadata: ["http.status": "\(status)", "error.message": "\(message)", "spool.unsent": "\(spool.status.unsentResults)"])
                }
                await pause(settings.unauthorizedRetry)
            case .retry(let reason, let retryAfter):
                guard patient else { return false }
                // Never sooner than the backoff: `Retry-After: 0` (or a date past on this clock) made
                // the agent resend in a loop, 2,000 pushes a second (red team, fifth pass).
                let delay = max(retryAfter ?? .zero, Self.backoff(attempt: attempt, base: settings.backoffBase, cap: settings.backoffCap))
                // A long outage logs a warning once a minute, not once per attempt.
                let clock = ContinuousClock()
                let loud = state.lastRetryWarning.map { clock.now - $0 >= .seconds(60) } ?? true
                if loud { state.lastRetryWarning = clock.now }
                state.failing = true
                logger.log(
                    level: loud ? .warning : .debug, "push failed; will resend the same batch",
                    metadata: [
                        "error.message": "\(reason)", "batch.attempt": "\(attempt)", "retry.in_ms": "\(Int(delay.seconds * 1000))",
                        "retry.after_header": "\(retryAfter != nil)", "spool.unsent": "\(spool.status.unsentResults)",
                    ])
                await pause(delay)
            }
        }
        return false
    }

    enum SendOutcome {
        /// The collector's acknowledgement of this batch.
        case acknowledged(PushAck)
        case rejected(status: Int, message: String)
        /// Not this batch's fault but this agent's (key not enrolled, revoked, clock off): keep
        /// everything and retry slowly.
        case agentRefused(status: Int, message: String, clockSkew: Bool)
        /// `retryAfter`: the collector's `Retry-After`, when it sent one.
        case retry(String, retryAfter: Duration? = nil)
    }

    /// One signed POST of `batch`, `sent_at` = now.
    func send(_ batch: SpoolBatch, logger: Logger) async -> SendOutcome {
        // The spooled results' JSON bytes as they are (see `SpoolBatch`): encoded once in their life.
        let body = PushBatch.body(agent: settings.agentID, batchID: batch.id, sentAt: Date(), rawResults: batch.rawResults)
        let signature: String
        let claim: String
        do {
            signature = try key.signatureHeader(for: body)
            claim = try pushClaim.header()
        } catch {
            return .retry("cannot sign the batch: \(error)", retryAfter: nil)
        }
        var request = HTTPRequest(
            method: "POST", url: endpoint,
            headers: [
                HTTPHeader("Content-Type", "application/json"),
                HTTPHeader(PushProtocol.signatureHeader, signature),
                HTTPHeader(PushProtocol.agentHeader, settings.agentID),
                HTTPHeader(PushProtocol.claimHeader, claim),
            ],
            body: body, timeout: settings.timeout, caFile: settings.caFile, maxResponseBytes: 1 << 20)
        request.clientCertificate = settings.clientCertificate
        // One connection to the collector for every push (keep-alive): a TLS handshake per push
        // was most of a push's cost on both sides.
        request.reuseConnection = true
        let response: HTTPResponse
        do { response = try await client.perform(request) } catch {
            // Say the fix, as the 401 message does: a collector with a private CA needs its CA.
            let hint =
                error.kind == .tls && error.message.contains("certificate")
                ? (settings.caFile == nil
                    ? " (if the collector's certificate comes from a private CA, set collector.ca_file to that CA's PEM file)"
                    : " (check that collector.ca_file \(settings.caFile ?? "") is the CA that signed the collector's certificate)")
                : ""
            return .retry("\(error.kind.rawValue): \(error.message)\(hint)", retryAfter: nil)
        }
        if (200..<300).contains(response.status) {
            // Only the collector's acknowledgement of this very batch lets its results go: a
            // captive portal's, a proxy's or a maintenance page's 200 deleted results nobody had
            // stored (red team, fifth pass).
            guard let ack = try? SondeJSON.decode(PushAck.self, from: response.body), ack.batchID == batch.id else {
                return .retry(
                    "HTTP \(response.status) without the collector's acknowledgement of batch \(batch.id) (is collector.url the collector, not a proxy or portal?): \(Self.errorMessage(response))")
            }
            return .acknowledged(ack)
        }
        // Only a refusal is worth decoding as an error (one JSON decode per push, not three).
        let message = Self.errorMessage(response)
        let collectorError = try? SondeJSON.decode(APIErrorBody.self, from: response.body)
        let code = collectorError?.error.code
        switch response.status {
        case 401, 403:
            return .agentRefused(status: response.status, message: message, clockSkew: false)
        case 400 where code == "clock_skew":
            // The host's clock, not the batch: moving batches aside would empty the spool into
            // rejected/ until someone fixes NTP.
            return .agentRefused(status: response.status, message: message, clockSkew: true)
        case 400 where collectorError == nil, 422 where collectorError == nil:
            // Not the collector's refusal of the batch (a load balancer's "plain HTTP sent to an
            // HTTPS port" page): nothing about the results, so nothing is set aside (red team).
            return .retry("HTTP \(response.status) that is not the collector's answer (is collector.url right?): \(message)")
        case 400, 413, 422:
            // 413 from anything: the size is the batch's, so halves may pass.
            return .rejected(status: response.status, message: message)
        default:
            let retryAfter = response.headers.value(for: "Retry-After").flatMap { RetryAfter.parse($0, now: Date()) }
            return .retry("HTTP \(response.status): \(message)", retryAfter: retryAfter.map { min($0, Self.longestRetryAfter) })
        }
    }

    /// The collector's `{"error":{"message":…}}`, or the start of whatever it sent; at most 300
    /// characters either way (a 1 MB message wrote 91 MB of log in 10 s; red team, fifth pass).
    static func errorMessage(_ response: HTTPResponse) -> String {
        if let body = try? SondeJSON.decode(APIErrorBody.self, from: response.body) {
            return String("\(body.error.code): \(body.error.message)".prefix(300))
        }
        return String(response.bodyText.prefix(300))
    }

    /// Capped exponential backoff with full jitter: uniform in [0, min(cap, base × 2^(attempt−1))].
    public static func backoff(attempt: Int, base: Duration, cap: Duration) -> Duration {
        let exponent = Double(min(max(attempt - 1, 0), 30))
        let ceiling = min(cap.seconds, base.seconds * pow(2, exponent))
        return .seconds(double: Double.random(in: 0...max(ceiling, 0)))
    }

    /// A collector asking for more than this is waited for this long, then asked again.
    static let longestRetryAfter: Duration = .seconds(3600)

    /// Sleeps, but wakes at once on graceful shutdown or cancellation. On the journal thread's
    /// timers (no task group and no child task per pause, no Dispatch timer).
    func pause(_ duration: Duration) async {
        guard !Task.isShuttingDownGracefully else { return }
        try? await journal.sleep(until: .now + duration) { Task.isShuttingDownGracefully }
    }

    /// The idle `flushInterval` pause, which an urgent result also ends (at once if one came
    /// already); `PushProtocol.fastFlushInterval` instead while the collector asks for prompt
    /// pushes (`fast`). Only this pause: the backoff and retry pauses between failed pushes stay
    /// whole, so failures during a collector outage never make the uploader push faster.
    private func pauseForMoreResults(fast: Bool) async {
        guard !Task.isShuttingDownGracefully else { return }
        let pause = fast ? min(settings.flushInterval, PushProtocol.fastFlushInterval) : settings.flushInterval
        // While the collector decides, a steady result is not held back for a shared hand-off either.
        journal.setPromptHandOff(fast)
        try? await journal.waitForUrgentResult(until: .now + pause) { Task.isShuttingDownGracefully }
    }
}

// A short name for ServiceLifecycle's logs, not a dump of the settings and the signing key.
extension Uploader: CustomStringConvertible {
    public var description: String { "Uploader(to \(endpoint))" }
}
