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
/// | 5xx, 429, time-out, connection refused | same batch again after capped exponential backoff with full jitter |
/// | 401 / 403 | agent unknown or revoked: data kept, error logged (once a minute) with the fix, slow retry |
/// | 400 `clock_skew` | the host clock is off: same as 401 (the batch is fine; the clock needs fixing) |
/// | 400 / 413 / 422 | the collector refuses the batch itself: moved to `spool/rejected/`, next batch |
/// | other | logged, retried with backoff (a wrong URL should not lose data) |
///
/// `sent_at` is set, and the body re-signed, at each send; the batch id and results never change.
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
    public var spool: Spool
    public var key: AgentSigningKey
    public var client: CurlHTTPClient
    public var logger: Logger

    public init(settings: Settings, spool: Spool, key: AgentSigningKey, client: CurlHTTPClient = .shared, logger: Logger) {
        self.settings = settings
        self.spool = spool
        self.key = key
        self.client = client
        self.logger = logger
    }

    public var endpoint: String {
        var base = settings.collectorURL
        while base.hasSuffix("/") { base.removeLast() }
        return base + PushProtocol.path
    }

    /// Until graceful shutdown: send the next batch, or wait `flushInterval` for results. On
    /// shutdown a send in flight is abandoned; its batch is in the spool and goes out (same id)
    /// on the next start.
    public func run() async throws {
        logger.info("uploader started", metadata: ["collector.url": "\(endpoint)"])
        var state = DeliveryState()
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            let batch: SpoolBatch?
            do { batch = try spool.nextBatch(maxResults: settings.batchSize) } catch {
                logger.error("cannot read the spool; retrying", metadata: ["error": "\(error)"])
                await pause(settings.backoffCap)
                continue
            }
            guard let batch else {
                await pause(settings.flushInterval)
                continue
            }
            await deliver(batch, state: &state)
        }
        if !Task.isCancelled { await drain() }
        logger.info("uploader stopped", metadata: ["spool.unsent": "\(spool.status.unsentResults)"])
    }

    /// On graceful shutdown (the scheduler has stopped by then: it is shut down first), pushes
    /// what is left while the collector accepts, for at most one `timeout`; anything not
    /// delivered stays in the spool for the next start.
    func drain() async {
        let clock = ContinuousClock()
        let deadline = clock.now + settings.timeout
        while !Task.isCancelled, clock.now < deadline {
            guard let batch = try? spool.nextBatch(maxResults: settings.batchSize) else { return }
            var logger = logger
            logger[metadataKey: "batch.id"] = "\(batch.id)"
            switch await send(batch, logger: logger) {
            case .acknowledged:
                try? spool.acknowledge(batch.id)
            case .rejected(let status, let message):
                logger.error("collector refused the batch itself; moved it to spool/rejected/", metadata: ["http.status": "\(status)", "error.message": "\(message)"])
                try? spool.reject(batch, reason: "HTTP \(status): \(message)")
            case .agentRefused, .retry:
                return
            }
        }
    }

    /// What the retry loop remembers across attempts.
    struct DeliveryState {
        var lastUnauthorizedLog: ContinuousClock.Instant?
        var lastRetryWarning: ContinuousClock.Instant?
        /// Pushes have been failing (so the recovery is worth an info line).
        var failing = false
    }

    /// Sends `batch` until it is acknowledged or rejected, or shutdown begins.
    func deliver(_ batch: SpoolBatch, state: inout DeliveryState) async {
        var logger = logger
        logger[metadataKey: "batch.id"] = "\(batch.id)"
        var attempt = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            attempt += 1
            switch await send(batch, logger: logger) {
            case .acknowledged(let ack):
                do { try spool.acknowledge(batch.id) } catch {
                    // The collector has it; a resend after restart is deduplicated by batch id.
                    logger.error("batch delivered but the spool could not record it", metadata: ["error": "\(error)"])
                }
                let metadata: Logger.Metadata = [
                    "batch.results": "\(batch.count)", "batch.duplicate": "\(ack?.duplicate ?? false)", "batch.attempts": "\(attempt)",
                ]
                if state.failing {
                    state.failing = false
                    logger.info("collector reachable again; batch delivered", metadata: metadata)
                } else {
                    logger.debug("batch delivered", metadata: metadata)
                }
                return
            case .rejected(let status, let message):
                logger.error(
                    "collector refused the batch itself; moved it to spool/rejected/ and going on",
                    metadata: ["http.status": "\(status)", "error.message": "\(message)", "batch.results": "\(batch.count)"])
                do { try spool.reject(batch, reason: "HTTP \(status): \(message)") } catch {
                    logger.error("cannot move the rejected batch aside; retrying", metadata: ["error": "\(error)"])
                    await pause(settings.backoffCap)
                }
                return
            case .agentRefused(let status, let message, let clockSkew):
                let clock = ContinuousClock()
                if state.lastUnauthorizedLog.map({ clock.now - $0 >= .seconds(60) }) ?? true {
                    state.lastUnauthorizedLog = clock.now
                    let text: Logger.Message =
                        clockSkew
                        ? "collector refuses this agent's sent_at: the host clock is off; results are kept in the spool. Fix: synchronise the clock (NTP, e.g. `timedatectl set-ntp true`)"
                        : "collector does not accept this agent's key (unknown or revoked agent); results are kept in the spool. Fix: enrol the key on the collector with `sonde-collector agents add --db <collector.db> --id \(settings.agentID) --region <region> --public-key \(key.publicKey.base64)`"
                    logger.error(text, metadata: ["http.status": "\(status)", "error.message": "\(message)", "spool.unsent": "\(spool.status.unsentResults)"])
                }
                await pause(settings.unauthorizedRetry)
            case .retry(let reason):
                let delay = Self.backoff(attempt: attempt, base: settings.backoffBase, cap: settings.backoffCap)
                // A long outage logs a warning once a minute, not once per attempt.
                let clock = ContinuousClock()
                let loud = state.lastRetryWarning.map { clock.now - $0 >= .seconds(60) } ?? true
                if loud { state.lastRetryWarning = clock.now }
                state.failing = true
                logger.log(
                    level: loud ? .warning : .debug, "push failed; will resend the same batch",
                    metadata: [
                        "error.message": "\(reason)", "batch.attempt": "\(attempt)", "retry.in_ms": "\(Int(delay.seconds * 1000))",
                        "spool.unsent": "\(spool.status.unsentResults)",
                    ])
                await pause(delay)
            }
        }
    }

    enum SendOutcome {
        case acknowledged(PushAck?)
        case rejected(status: Int, message: String)
        /// Not this batch's fault but this agent's (key not enrolled, revoked, clock off): keep
        /// everything and retry slowly.
        case agentRefused(status: Int, message: String, clockSkew: Bool)
        case retry(String)
    }

    /// One signed POST of `batch`, `sent_at` = now.
    func send(_ batch: SpoolBatch, logger: Logger) async -> SendOutcome {
        let body: Data
        let signature: String
        do {
            body = try Self.pushBody(agent: settings.agentID, batch: batch, sentAt: Date())
            signature = try key.signatureHeader(for: body)
        } catch {
            return .retry("cannot encode or sign the batch: \(error)")
        }
        var request = HTTPRequest(
            method: "POST", url: endpoint,
            headers: [
                HTTPHeader("Content-Type", "application/json"),
                HTTPHeader(PushProtocol.signatureHeader, signature),
                HTTPHeader(PushProtocol.agentHeader, settings.agentID),
            ],
            body: body, timeout: settings.timeout, caFile: settings.caFile, maxResponseBytes: 1 << 20)
        request.clientCertificate = settings.clientCertificate
        let response: HTTPResponse
        do { response = try await client.perform(request) } catch {
            return .retry("\(error.kind.rawValue): \(error.message)")
        }
        let message = Self.errorMessage(response)
        let code = (try? SondeJSON.decode(APIErrorBody.self, from: response.body))?.error.code
        switch response.status {
        case 200..<300:
            return .acknowledged(try? SondeJSON.decode(PushAck.self, from: response.body))
        case 401, 403:
            return .agentRefused(status: response.status, message: message, clockSkew: false)
        case 400 where code == "clock_skew":
            // The host's clock, not the batch: moving batches aside would empty the spool into
            // rejected/ until someone fixes NTP.
            return .agentRefused(status: response.status, message: message, clockSkew: true)
        case 400, 413, 422:
            return .rejected(status: response.status, message: message)
        default:
            return .retry("HTTP \(response.status): \(message)")
        }
    }

    /// A `PushBatch` body whose results are the spooled JSON bytes as they are (see `SpoolBatch`):
    /// the envelope's other fields come from the same encoder, then `"results":[…]` is appended.
    static func pushBody(agent: String, batch: SpoolBatch, sentAt: Date) throws -> Data {
        struct Envelope: Encodable {
            var agent: String
            var batchID: String
            var sentAt: Date
            enum CodingKeys: String, CodingKey {
                case agent
                case batchID = "batch_id"  // PushBatch's keys (SPEC); UploaderTests decode the body as a PushBatch
                case sentAt = "sent_at"
            }
        }
        var body = try SondeJSON.encode(Envelope(agent: agent, batchID: batch.id, sentAt: sentAt))
        guard body.last == UInt8(ascii: "}") else { throw SpoolError("unexpected push envelope") }
        body.removeLast()
        body.append(contentsOf: Array(#","results":["#.utf8))
        for (index, raw) in batch.rawResults.enumerated() {
            if index > 0 { body.append(UInt8(ascii: ",")) }
            body.append(raw)
        }
        body.append(contentsOf: Array("]}".utf8))
        return body
    }

    /// The collector's `{"error":{"message":…}}`, or the start of whatever it sent.
    static func errorMessage(_ response: HTTPResponse) -> String {
        if let body = try? SondeJSON.decode(APIErrorBody.self, from: response.body) {
            return "\(body.error.code): \(body.error.message)"
        }
        return String(response.bodyText.prefix(300))
    }

    /// Capped exponential backoff with full jitter: uniform in [0, min(cap, base × 2^(attempt−1))].
    public static func backoff(attempt: Int, base: Duration, cap: Duration) -> Duration {
        let exponent = Double(min(max(attempt - 1, 0), 30))
        let ceiling = min(cap.seconds, base.seconds * pow(2, exponent))
        return .seconds(double: Double.random(in: 0...max(ceiling, 0)))
    }

    /// Sleeps, but wakes at once on graceful shutdown or cancellation.
    func pause(_ duration: Duration) async {
        _ = try? await cancelWhenGracefulShutdown { try await Task.sleep(for: duration) }
    }
}

// A short name for ServiceLifecycle's logs, not a dump of the settings and the signing key.
extension Uploader: CustomStringConvertible {
    public var description: String { "Uploader(to \(endpoint))" }
}
