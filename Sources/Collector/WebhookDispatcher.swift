import CollectorStore
import Crypto
import CurlHTTP
import Foundation
import Logging
import ServiceLifecycle
import SondeCore

// MARK: - Signing

/// `Sonde-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>`, the scheme
/// Stripe popularised: the timestamp is signed too, so receivers can refuse replays.
public enum WebhookSignature {
    public static let header = "Sonde-Signature"
    public static let eventIDHeader = "Sonde-Event-Id"
    public static let eventTypeHeader = "Sonde-Event-Type"

    public static func sign(body: Data, secret: String, timestamp: Int) -> String {
        "t=\(timestamp),v1=\(hmacHex(body: body, secret: secret, timestamp: timestamp))"
    }

    static func hmacHex(body: Data, secret: String, timestamp: Int) -> String {
        var message = Data("\(timestamp).".utf8)
        message.append(body)
        let code = HMAC<SHA256>.authenticationCode(for: message, using: SymmetricKey(data: Data(secret.utf8)))
        return code.map { String(format: "%02x", $0) }.joined()
    }

    /// Checks a header value against the body, as a receiver would; `tolerance` bounds the age.
    public static func verify(header: String, body: Data, secret: String, now: Date = Date(), tolerance: TimeInterval = 300) -> Bool {
        var timestamp: Int?
        var signatures: [String] = []
        for part in header.split(separator: ",") {
            let pair = part.split(separator: "=", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            guard pair.count == 2 else { continue }
            if pair[0] == "t" { timestamp = Int(pair[1]) }
            if pair[0] == "v1" { signatures.append(pair[1]) }
        }
        guard let timestamp, abs(now.timeIntervalSince1970 - Double(timestamp)) <= tolerance else { return false }
        let expected = hmacHex(body: body, secret: secret, timestamp: timestamp)
        // Constant-time comparison of equal-length hex strings.
        return signatures.contains { candidate in
            guard candidate.utf8.count == expected.utf8.count else { return false }
            return zip(candidate.utf8, expected.utf8).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
        }
    }
}

// MARK: - Payloads

/// Turns an outbox event into what a target receives.
enum WebhookPayload {
    /// The event's JSON with `link` added (keys sorted for stable bytes).
    static func json(_ event: OutboxEvent, linkBase: String) -> Data {
        guard var object = (try? JSONSerialization.jsonObject(with: event.payload)) as? [String: Any] else { return event.payload }
        object["link"] = link(for: object, linkBase: linkBase)
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? event.payload
    }

    static func link(for object: [String: Any], linkBase: String) -> String {
        if let incident = object["incident"] as? [String: Any], let id = incident["id"] as? String {
            return "\(linkBase)/#incident-\(id)"
        }
        if let id = object["incident"] as? String { return "\(linkBase)/#incident-\(id)" }
        if let agent = object["agent"] as? String { return "\(linkBase)/#agent-\(agent)" }
        if let component = object["component"] as? String { return "\(linkBase)/#component-\(component)" }
        return linkBase + "/"
    }

    /// A Slack incoming-webhook message.
    static func slack(_ event: OutboxEvent, linkBase: String) -> Data {
        let object = ((try? JSONSerialization.jsonObject(with: event.payload)) as? [String: Any]) ?? [:]
        let link = link(for: object, linkBase: linkBase)
        let summary = (object["summary"] as? String) ?? event.type
        let emoji: String =
            switch event.type {
            case "incident.opened": ":rotating_light:"
            case "incident.updated": ":warning:"
            case "incident.resolved": ":white_check_mark:"
            case "agent.local_fault", "agent.silent": ":satellite_antenna:"
            default: ":bell:"
            }
        var facts: [String] = []
        if let component = object["component"] as? String { facts.append("*Component:* \(component)") }
        if let status = object["status"] as? String { facts.append("*Status:* \(status.replacingOccurrences(of: "_", with: " "))") }
        if let scope = object["scope"] as? String { facts.append("*Scope:* \(scope)") }
        if let regions = object["regions"] as? [String], !regions.isEmpty { facts.append("*Regions:* \(regions.joined(separator: ", "))") }
        if let agents = object["agents"] as? [String], !agents.isEmpty { facts.append("*Agents:* \(agents.joined(separator: ", "))") }
        let message: [String: Any] = [
            "text": "\(emoji) [\(event.type)] \(summary)",
            "blocks": [
                ["type": "section", "text": ["type": "mrkdwn", "text": "\(emoji) *\(slackEscape(summary))*"]],
                ["type": "section", "text": ["type": "mrkdwn", "text": facts.isEmpty ? event.type : slackEscape(facts.joined(separator: "\n"))]],
                [
                    "type": "context",
                    "elements": [["type": "mrkdwn", "text": "\(event.type) · \(RFC3339.string(from: event.occurredAt)) · <\(link)|details>"]],
                ],
            ],
        ]
        return (try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }

    /// Slack's three control characters in mrkdwn.
    static func slackEscape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
    }
}

// MARK: - Dispatcher

/// Sends every outbox event to every matching target, in event order per target, until it gets a
/// 2xx. Failures retry with capped exponential backoff and jitter; the state lives in the
/// database, so a restart resumes where it stopped and never resends a delivered event. (An
/// event whose 2xx answer was lost to a crash is sent again: receivers dedupe on
/// `Sonde-Event-Id`.)
public struct WebhookDispatcher: Service {
    let store: any CollectorStorage
    let targets: [WebhookTarget]
    let client: CurlHTTPClient
    let metrics: CollectorMetrics
    let linkBase: @Sendable () -> String
    let retryBase: TimeInterval
    let retryCap: TimeInterval
    let timeout: TimeInterval
    let pollInterval: TimeInterval
    let logger: Logger

    init(
        store: any CollectorStorage, targets: [WebhookTarget], client: CurlHTTPClient = CurlHTTPClient(threads: 4), metrics: CollectorMetrics,
        linkBase: @escaping @Sendable () -> String, retryBase: TimeInterval, retryCap: TimeInterval, timeout: TimeInterval,
        pollInterval: TimeInterval, logger: Logger
    ) {
        self.store = store
        self.targets = targets
        self.client = client
        self.metrics = metrics
        self.linkBase = linkBase
        self.retryBase = retryBase
        self.retryCap = retryCap
        self.timeout = timeout
        self.pollInterval = pollInterval
        self.logger = logger
    }

    public func run() async throws {
        guard !targets.isEmpty else {
            // Nothing to deliver to; stay up until shutdown so the group does not see an early exit.
            try? await gracefulShutdown()
            return
        }
        await withDiscardingTaskGroup { group in
            for target in targets {
                group.addTask { await self.work(for: target) }
            }
        }
    }

    /// Capped exponential backoff with ±20 % jitter: base·2^(attempt−1), at most `cap`.
    static func backoff(attempt: Int, base: TimeInterval, cap: TimeInterval) -> TimeInterval {
        let exponential = base * pow(2, Double(max(0, attempt - 1)))
        let capped = min(cap, exponential)
        return min(cap, capped * Double.random(in: 0.8...1.2))
    }

    private func work(for target: WebhookTarget) async {
        var targetLogger = logger
        targetLogger[metadataKey: "webhook.target"] = .string(target.name)
        let logger = targetLogger
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                let delivery: DeliveryRecord?
                do { delivery = try await store.nextPendingDelivery(target: target.name) } catch {
                    logger.warning("Cannot read the webhook outbox", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .seconds(1))
                    continue
                }
                guard let delivery else {
                    try? await Task.sleep(for: .seconds(pollInterval))
                    continue
                }
                let wait = delivery.nextAttemptAt.timeIntervalSinceNow
                if wait > 0 {
                    // Head-of-line: later events wait for this one so each target sees event order.
                    try? await Task.sleep(for: .seconds(min(wait, max(pollInterval, 0.05))))
                    continue
                }
                await attempt(delivery, target: target, logger: logger)
            }
        }
    }

    private func attempt(_ delivery: DeliveryRecord, target: WebhookTarget, logger: Logger) async {
        var logger = logger
        logger[metadataKey: "event.id"] = .string(delivery.event.id)
        logger[metadataKey: "event.type"] = .string(delivery.event.type)
        let base = linkBase()
        let body = target.format == .slack ? WebhookPayload.slack(delivery.event, linkBase: base) : WebhookPayload.json(delivery.event, linkBase: base)
        let timestamp = Int(Date().timeIntervalSince1970)
        let request = HTTPRequest(
            method: "POST", url: target.url,
            headers: [
                HTTPHeader("Content-Type", "application/json"),
                HTTPHeader("User-Agent", "sonde-collector"),
                HTTPHeader(WebhookSignature.header, WebhookSignature.sign(body: body, secret: target.secret, timestamp: timestamp)),
                HTTPHeader(WebhookSignature.eventIDHeader, delivery.event.id),
                HTTPHeader(WebhookSignature.eventTypeHeader, delivery.event.type),
            ],
            body: body, timeout: .milliseconds(Int(timeout * 1000)), maxResponseBytes: 1 << 20)
        let failure: String
        do {
            let response = try await client.perform(request)
            if (200..<300).contains(response.status) {
                do {
                    try await store.markDelivered(eventID: delivery.event.id, target: target.name, at: Date())
                    metrics.webhookDelivered()
                    logger.info("Webhook delivered", metadata: ["http.status": "\(response.status)", "attempts": "\(delivery.attempts + 1)"])
                } catch {
                    logger.error("Webhook delivered but not recorded", metadata: ["error": "\(error)"])
                }
                return
            }
            failure = "HTTP \(response.status)"
        } catch {
            if Task.isCancelled { return }
            failure = "\(error.kind.rawValue): \(error.message)"
        }
        let attempts = delivery.attempts + 1
        let delay = Self.backoff(attempt: attempts, base: retryBase, cap: retryCap)
        metrics.webhookFailed()
        logger.warning(
            "Webhook delivery failed; will retry",
            metadata: ["error": .string(failure), "attempts": "\(attempts)", "retry.in_seconds": "\(String(format: "%.2f", delay))"])
        try? await store.markFailed(
            eventID: delivery.event.id, target: target.name, attempts: attempts, nextAttemptAt: Date().addingTimeInterval(delay), error: failure)
    }
}

// A short name for ServiceLifecycle's logs: a dump of the targets would carry their secrets.
extension WebhookDispatcher: CustomStringConvertible {
    public var description: String { "WebhookDispatcher(\(targets.count) targets)" }
}
