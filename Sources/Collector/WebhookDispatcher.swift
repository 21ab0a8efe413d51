import CollectorStore
import Correlation
import Crypto
import CurlHTTP
import Foundation
import Logging
import ServiceLifecycle
import SondeCore
import Synchronization

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

    /// A link to the event's incident page, else the status page's anchor for it. Ids and anchors
    /// come from agent-reported names, so they are percent-encoded: no `|`, `>` or space can end a Slack link early.
    static func link(for object: [String: Any], linkBase: String) -> String {
        func anchor(_ kind: String, _ name: String, page: String = "/") -> String {
            var allowed = CharacterSet.alphanumerics
            allowed.insert(charactersIn: "-._~")
            let asciiOnly = name.unicodeScalars.allSatisfy(\.isASCII)
            let encoded = asciiOnly ? (name.addingPercentEncoding(withAllowedCharacters: allowed) ?? "") : Data(name.utf8).map { String(format: "%%%02X", $0) }.joined()
            return "\(linkBase)\(page)#\(kind)-\(encoded)"
        }
        // An incident has its own page (public or behind the read token, as the status page is).
        if let incident = object["incident"] as? [String: Any], let id = incident["id"] as? String {
            return "\(linkBase)/incidents/\(StatusPage.pathSegment(id))"
        }
        if let id = object["incident"] as? String { return "\(linkBase)/incidents/\(StatusPage.pathSegment(id))" }
        // Agents are listed on the internal page only (the public one names none): the link
        // asks for the read token, as the agent's state is not public (integrations review, F5).
        if let agent = object["agent"] as? String { return anchor("agent", agent, page: "/internal") }
        if let component = object["component"] as? String { return anchor("component", component) }
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
            case "incident.resolved", "agent.recovered": ":white_check_mark:"
            case "agent.local_fault", "agent.silent": ":satellite_antenna:"
            default: ":bell:"
            }
        var facts: [String] = []
        if let component = object["component"] as? String { facts.append("*Component:* \(component)") }
        if let status = object["status"] as? String { facts.append("*Status:* \(status.replacingOccurrences(of: "_", with: " "))") }
        if let scope = object["scope"] as? String { facts.append("*Scope:* \(scope)") }
        if let regions = object["regions"] as? [String], !regions.isEmpty { facts.append("*Regions:* \(regions.joined(separator: ", "))") }
        if let agents = object["agents"] as? [String], !agents.isEmpty { facts.append("*Agents:* \(agents.joined(separator: ", "))") }
        // A person's timeline entry: who wrote it and what they said.
        if let author = object["author"] as? String, author != IncidentUpdate.automatic, let text = object["message"] as? String {
            facts.append("*Update from \(author):* \(text)")
        }
        if let labels = object["labels"] as? [String: String], !labels.isEmpty {
            facts.append("*Labels:* " + labels.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ", "))
        }
        let message: [String: Any] = [
            // Every agent-reported string is escaped, here too: Slack renders `text` in notifications.
            "text": "\(emoji) [\(slackEscape(event.type))] \(slackEscape(summary))",
            "blocks": [
                ["type": "section", "text": ["type": "mrkdwn", "text": slackSection("\(emoji) *\(slackEscape(summary))*")]],
                ["type": "section", "text": ["type": "mrkdwn", "text": slackSection(slackEscape(facts.isEmpty ? event.type : facts.joined(separator: "\n")))]],
                [
                    "type": "context",
                    "elements": [["type": "mrkdwn", "text": "\(slackEscape(event.type)) · \(RFC3339.string(from: event.occurredAt)) · <\(link)|details>"]],
                ],
            ],
        ]
        return (try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }

    /// A PagerDuty Events API v2 event: one alert per incident (`dedup_key` = incident id), so an
    /// update re-triggers the same alert with the new summary and a resolution resolves it.
    /// Severity from the incident's: major_outage → critical, partial_outage → error,
    /// degraded_performance → warning; anything else → info. Field limits are PagerDuty's
    /// (summary 1,024 characters, dedup_key 255).
    static func pagerDuty(_ event: OutboxEvent, routingKey: String, linkBase: String) -> Data {
        let object = ((try? JSONSerialization.jsonObject(with: event.payload)) as? [String: Any]) ?? [:]
        let incidentID = (object["incident"] as? [String: Any])?["id"] as? String ?? object["incident"] as? String
        // An agent's recovery resolves the alert its problem event raised.
        let dedupKey = String((incidentID ?? object["resolves"] as? String ?? event.id).prefix(255))
        let resolves = event.type == AlertEventType.incidentResolved.rawValue || event.type == AlertEventType.agentRecovered.rawValue
        let severity = severity((object["incident"] as? [String: Any])?["severity"] as? String ?? object["status"] as? String)
        let summary = String(((object["summary"] as? String) ?? event.type).prefix(1024))
        var payload: [String: Any] = [
            "summary": summary, "source": "sonde", "severity": severity, "timestamp": RFC3339.string(from: event.occurredAt),
            "class": event.type, "custom_details": pagerDutyDetails(object),
        ]
        if let component = object["component"] as? String { payload["component"] = component }
        if let scope = object["scope"] as? String { payload["group"] = scope }
        let message: [String: Any] = [
            "routing_key": routingKey,
            "event_action": resolves ? "resolve" : "trigger",
            "dedup_key": dedupKey,
            "payload": payload,
            "links": pagerDutyLinks(object, linkBase: linkBase),
            "client": "Sonde",
        ]
        return (try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }

    /// The status page's link, and for an incident its operators' view (agents, evidence, error
    /// texts; behind the read token), which a responder needs and the public page hides.
    static func pagerDutyLinks(_ object: [String: Any], linkBase: String) -> [[String: String]] {
        var links = [["href": link(for: object, linkBase: linkBase), "text": "Sonde status page"]]
        let id = (object["incident"] as? [String: Any])?["id"] as? String ?? object["incident"] as? String
        if let id { links.append(["href": "\(linkBase)/internal/incidents/\(StatusPage.pathSegment(id))", "text": "Sonde: evidence (operators)"]) }
        return links
    }

    /// Timeline entries PagerDuty's `custom_details` carries: the newest.
    static let pagerDutyUpdates = 10
    /// PagerDuty refuses an event over 512 KB (a 400 the dispatcher takes as final: the alert
    /// would then never resolve); details are cut well below that.
    static let pagerDutyDetailsBytes = 256 * 1024

    /// The event for `custom_details`: the incident's newest timeline entries only (the whole
    /// timeline is on the incident's page), and no timeline at all if that is still too big.
    static func pagerDutyDetails(_ object: [String: Any]) -> [String: Any] {
        guard var incident = object["incident"] as? [String: Any], let updates = incident["updates"] as? [Any] else { return object }
        var details = object
        if updates.count > pagerDutyUpdates {
            incident["updates"] = Array(updates.suffix(pagerDutyUpdates))
            incident["updates_omitted"] = updates.count - pagerDutyUpdates
            details["incident"] = incident
        }
        let size = (try? JSONSerialization.data(withJSONObject: details, options: [.withoutEscapingSlashes]).count) ?? 0
        if size > pagerDutyDetailsBytes {
            incident["updates"] = [Any]()
            incident["updates_omitted"] = updates.count
            details["incident"] = incident
            details["message"] = (details["message"] as? String).map { String($0.prefix(1024)) }
        }
        return details
    }

    /// Whether an event goes to PagerDuty. Opening, resolving, agent events and tests do; an
    /// `incident.updated` only when it should page again: the incident got worse than it has been
    /// (a higher severity), or it came back from `monitoring`. Every trigger re-opens an alert a
    /// responder resolved by hand, so "recovering", a region joining at the same severity or a
    /// person's note must not page (the SRE review's F7); they are on the status page and the
    /// other targets.
    static func pagerDutyWants(_ event: OutboxEvent) -> Bool {
        guard event.type == AlertEventType.incidentUpdated.rawValue else { return true }
        let object = ((try? JSONSerialization.jsonObject(with: event.payload)) as? [String: Any]) ?? [:]
        guard let incident = object["incident"] as? [String: Any], let updates = incident["updates"] as? [[String: Any]], let latest = updates.last else {
            return true
        }
        func rank(_ severity: Any?) -> Int {
            switch severity as? String {
            case "major_outage": 3
            case "partial_outage": 2
            case "degraded_performance": 1
            default: 0
            }
        }
        let earlier = updates.dropLast()
        let worse = rank(latest["severity"]) > (earlier.map { rank($0["severity"]) }.max() ?? 0)
        let relapse = latest["status"] as? String == "investigating" && earlier.last?["status"] as? String == "monitoring"
        return worse || relapse
    }

    /// A PagerDuty resolve of the alert keyed `dedupKey`.
    static func pagerDutyResolve(dedupKey: String, routingKey: String) -> Data {
        let message: [String: Any] = ["routing_key": routingKey, "event_action": "resolve", "dedup_key": String(dedupKey.prefix(255)), "client": "Sonde"]
        return (try? JSONSerialization.data(withJSONObject: message, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
    }

    /// An incident's severity as alerting tools name it: major_outage → critical, partial_outage
    /// → error, degraded_performance → warning; anything else → info.
    static func severity(_ status: String?) -> String {
        switch status {
        case "major_outage": "critical"
        case "partial_outage": "error"
        case "degraded_performance": "warning"
        default: "info"
        }
    }

    /// Slack's three control characters in mrkdwn (`&`, `<`, `>`: with them escaped no link,
    /// mention or `<!channel>` can be formed, so a `|` is plain text), and control characters
    /// other than newline and tab dropped.
    /// Slack refuses a message whose section text is over 3,000 characters (400 `invalid_blocks`,
    /// which would dead-letter the event for good: a long person's update, an incident listing
    /// many agents): escaped text cut to fit, with "…", never inside an entity (`&amp;`).
    static let slackSectionCharacters = 3_000

    static func slackSection(_ escaped: String) -> String {
        guard escaped.count > slackSectionCharacters else { return escaped }
        var cut = String(escaped.prefix(slackSectionCharacters - 1))
        if let amp = cut.lastIndex(of: "&"), !cut[amp...].contains(";") { cut = String(cut[..<amp]) }
        return cut + "…"
    }

    static func slackEscape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\n", "\t": out.unicodeScalars.append(scalar)
            default:
                if scalar.properties.generalCategory == .control || scalar.properties.generalCategory == .format { continue }
                out.unicodeScalars.append(scalar)
            }
        }
        return out
    }
}

// MARK: - Dispatcher

/// Sends every outbox event to every matching target: one queue (and one task) per target, in
/// event order per target, until it gets a 2xx. Failures retry with capped exponential backoff
/// and jitter; the state lives in the database, so a restart resumes where it stopped and never
/// resends a delivered event. (An event whose 2xx answer was lost to a crash is sent again:
/// receivers dedupe on `Sonde-Event-Id`.) An event the target refuses with a non-retryable 4xx,
/// or still failing after `maxAttempts` or `maxAge`, goes to the dead-letter table, so it never
/// holds up the target's later events; `sonde alert redrive` puts it back.
public struct WebhookDispatcher: Service {
    /// `webhook_retry`: backoff, time-out and when to give up.
    struct Retry: Sendable {
        var base: TimeInterval
        var cap: TimeInterval
        var timeout: TimeInterval
        var maxAttempts: Int
        var maxAge: TimeInterval
    }

    let store: any CollectorStorage
    /// The targets in force; SIGHUP may add, change or remove them while deliveries go on.
    let settings: ReloadableSettings
    let client: CurlHTTPClient
    let metrics: CollectorMetrics
    let linkBase: @Sendable () -> String
    let retry: Retry
    /// `webhook_retry.poll`: how often an idle target looks at the outbox anyway, for deliveries
    /// queued where `outbox` does not reach (another collector on the same PostgreSQL).
    let pollInterval: TimeInterval
    let outbox: WakeSignal
    /// With several collectors: only the leader sends.
    var mayDispatch: @Sendable () -> Bool = { true }
    let logger: Logger

    init(
        store: any CollectorStorage, settings: ReloadableSettings, client: CurlHTTPClient = CurlHTTPClient(threads: 4), metrics: CollectorMetrics,
        linkBase: @escaping @Sendable () -> String, retry: Retry, pollInterval: TimeInterval, outbox: WakeSignal, logger: Logger
    ) {
        self.store = store
        self.settings = settings
        self.client = client
        self.metrics = metrics
        self.linkBase = linkBase
        self.retry = retry
        self.pollInterval = pollInterval
        self.outbox = outbox
        self.logger = logger
    }

    /// Statuses that say "this request will never be accepted": retrying them only jams the queue.
    /// 408 (timeout), 425 and 429 (rate limit) are worth another try, as is every 5xx. A redirect
    /// is not followed (a signed event goes where it was configured to, not where a receiver
    /// points) and is as permanent: retried, a 307 from an http→https move held the target's
    /// queue about an hour per event (integrations review, 33rd session, F4).
    static func isPermanentRefusal(_ status: Int) -> Bool {
        (300..<400).contains(status) || ((400..<500).contains(status) && ![408, 425, 429].contains(status))
    }

    /// One task per target name, started when the target appears (at start or on SIGHUP). A
    /// task ends once its target is removed or changed (after the attempt in progress), and a
    /// changed target's new task then takes its queue over where the old one stopped.
    public func run() async throws {
        final class Running: Sendable { let names = Mutex<Set<String>>([]) }
        let running = Running()
        await cancelWhenGracefulShutdown {
            await outbox.waiting { wait in
                await withDiscardingTaskGroup { group in
                    while !Task.isCancelled {
                        for target in settings.webhooks where running.names.withLock({ $0.insert(target.name).inserted }) {
                            group.addTask {
                                await self.work(for: target)
                                running.names.withLock { _ = $0.remove(target.name) }
                                // A changed target's new task starts now, not at the next poll.
                                self.outbox.fire()
                            }
                        }
                        // A reload fires `outbox`.
                        await wait(.seconds(max(pollInterval, 0.2)))
                    }
                }
            }
        }
    }

    /// Capped exponential backoff with ±20 % jitter: base·2^(attempt−1), at most `cap`.
    /// What a refusing receiver said, for the log and the dead-letter list (PagerDuty's 400
    /// names the bad field, Slack's says `invalid_blocks`): the start of its body on one line,
    /// printable characters only, and never our own credentials should it echo them.
    static func reason(in body: Data, hiding secrets: [String]) -> String {
        // Redacted (in every encoding a receiver may echo it in: percent, JSON, HTML, base64)
        // before it is cut, over a window that reaches past the cut by the longest secret's
        // longest form, so no part of a secret survives at the cut.
        var redactor = Redactor()
        for secret in secrets where secret.count >= 4 { redactor.add(secret) }
        var text = redactor.redact(String(decoding: body.prefix(4 * 600 + redactor.reach), as: UTF8.self))
        text = String(text.prefix(600))
        let line = String(String.UnicodeScalarView(text.unicodeScalars.map { $0.properties.generalCategory == .control ? " " : $0 }))
            .split(separator: " ", omittingEmptySubsequences: true).joined(separator: " ")
        guard !line.isEmpty else { return "" }
        return ": " + (line.count > 200 ? String(line.prefix(200)) + "…" : line)
    }

    /// What a target's refusal must never show, for the log and the dead letters a read token
    /// lists: its signing secret and routing key, and its URL, which for Slack, Discord, Teams or
    /// a `?token=` receiver is the credential itself: the whole URL, its password, its query
    /// values, and its path segments that look like keys (a digit in 6 characters or more, or 16
    /// characters). A receiver's 404 often echoes the path it was sent (red team, third pass).
    static func credentials(of target: WebhookTarget) -> [String] {
        var secrets = [target.secret, target.url] + [target.routingKey].compactMap { $0 }
        if let url = URLComponents(string: target.url) {
            if let password = url.password { secrets.append(password) }
            secrets += (url.queryItems ?? []).compactMap(\.value)
            secrets += url.path.split(separator: "/").map(String.init).filter { segment in
                segment.count >= 16 || (segment.count >= 6 && segment.contains { $0.isNumber })
            }
        }
        return secrets.filter { !$0.isEmpty }
    }

    static func backoff(attempt: Int, base: TimeInterval, cap: TimeInterval) -> TimeInterval {
        let exponential = base * pow(2, Double(max(0, attempt - 1)))
        let capped = min(cap, exponential)
        return min(cap, capped * Double.random(in: 0.8...1.2))
    }

    private func work(for target: WebhookTarget) async {
        var targetLogger = logger
        targetLogger[metadataKey: "webhook.target"] = .string(target.name)
        let logger = targetLogger
        // Alertmanager: each open incident's alert is re-sent every resend_interval, and the
        // label set last sent per incident is remembered, so a changed one is ended, not left firing.
        await cancelWhenGracefulShutdown {
            await outbox.waiting { wait in
                var sentLabels: [String: [String: String]] = [:]
                var renamed = false
                var nextResend = ContinuousClock.now
                let poll = Duration.milliseconds(Int(pollInterval * 1000))
                // Idle: until woken, `limit`, the next poll, or the next Alertmanager re-send.
                func idle(upTo limit: Duration? = nil) async {
                    var longest = min(poll, limit ?? poll)
                    if target.format == .alertmanager { longest = max(.zero, min(longest, nextResend - ContinuousClock.now)) }
                    await wait(longest)
                }
                while !Task.isCancelled {
                    guard settings.webhooks.contains(target) else {
                        logger.notice("Webhook target removed or changed by a reload; its old settings stop here")
                        return
                    }
                    // A standby is woken when it becomes leader.
                    guard mayDispatch() else {
                        await wait(poll)
                        continue
                    }
                    // An unnamed target's queue, kept under its URL by earlier versions, moves to its name.
                    if let legacy = target.legacyName, !renamed {
                        do {
                            try await store.renameDeliveryTarget(from: legacy, to: target.name)
                            renamed = true
                        } catch {
                            logger.warning("Cannot move this target's queue to its name; retrying", metadata: ["error": "\(error)"])
                            await idle()
                            continue
                        }
                    }
                    if target.format == .alertmanager, ContinuousClock.now >= nextResend {
                        await resendOpenIncidents(target: target, sentLabels: &sentLabels, logger: logger)
                        nextResend = ContinuousClock.now + .milliseconds(Int(target.resendInterval * 1000))
                    }
                    let delivery: DeliveryRecord?
                    do { delivery = try await store.nextPendingDelivery(target: target.name) } catch {
                        logger.warning("Cannot read the webhook outbox", metadata: ["error": "\(error)"])
                        try? await Task.sleep(for: .seconds(1))
                        continue
                    }
                    guard let delivery else {
                        await idle()
                        continue
                    }
                    let due = delivery.nextAttemptAt.timeIntervalSinceNow
                    if due > 0 {
                        // Head-of-line: later events wait for this one so each target sees event order.
                        await idle(upTo: .milliseconds(Int((due * 1000).rounded(.up))))
                        continue
                    }
                    // Again just before sending: one that stepped down while reading must not send
                    // what the new leader sends too.
                    guard mayDispatch() else { continue }
                    await attempt(delivery, target: target, sentLabels: &sentLabels, logger: logger)
                }
            }
        }
    }

    /// Records a delivery the receiver acknowledged, retrying with backoff until the store takes
    /// it, for as long as this collector may dispatch. The queue waits meanwhile: returning with
    /// the record missing read the same row, still due, and sent it again at once (1,626 copies
    /// of one event in 10 s with the database read-only; HA review, 33rd session, F1). False
    /// when it gave up (stopping, or no longer leading: the next leader may send it again, the
    /// at-least-once window of a leader's end).
    private func recordDelivered(_ delivery: DeliveryRecord, target: WebhookTarget, logger: Logger) async -> Bool {
        var failures = 0
        while true {
            do {
                try await store.markDelivered(eventID: delivery.event.id, target: target.name, at: Date())
                if failures > 0 { logger.notice("Webhook delivery recorded after \(failures) failed attempt(s)") }
                return true
            } catch {
                failures += 1
                if failures == 1 {
                    logger.error(
                        "Webhook delivered but not recorded; recording it again before this target gets anything else",
                        metadata: ["error": "\(error)"])
                }
                guard mayDispatch(), !Task.isCancelled else {
                    logger.warning("Webhook delivered but not recorded when this collector stopped dispatching; the next leader may send it again")
                    return false
                }
                try? await Task.sleep(for: .seconds(Self.backoff(attempt: failures, base: retry.base, cap: retry.cap)))
            }
        }
    }

    private func attempt(_ delivery: DeliveryRecord, target: WebhookTarget, sentLabels: inout [String: [String: String]], logger: Logger) async {
        var logger = logger
        logger[metadataKey: "event.id"] = .string(delivery.event.id)
        logger[metadataKey: "event.type"] = .string(delivery.event.type)
        let base = linkBase()
        if target.format == .pagerduty, !WebhookPayload.pagerDutyWants(delivery.event) {
            // Nothing to page about: recorded as delivered, never sent.
            try? await store.markDelivered(eventID: delivery.event.id, target: target.name, at: Date())
            logger.debug("Update not sent to PagerDuty: it neither raises the severity nor follows monitoring")
            return
        }
        var alertmanagerSent: [String: [String: String]] = [:]
        let body: Data =
            switch target.format {
            case .json: WebhookPayload.json(delivery.event, linkBase: base)
            case .slack: WebhookPayload.slack(delivery.event, linkBase: base)
            case .pagerduty: WebhookPayload.pagerDuty(delivery.event, routingKey: target.routingKey ?? "", linkBase: base)
            case .alertmanager:
                alertmanagerAlerts(
                    [(((try? JSONSerialization.jsonObject(with: delivery.event.payload)) as? [String: Any]) ?? [:], delivery.event.type, delivery.event.occurredAt)],
                    target: target, sentLabels: sentLabels, sent: &alertmanagerSent)
            }
        let timestamp = Int(Date().timeIntervalSince1970)
        let request = HTTPRequest(
            method: "POST", url: target.format == .alertmanager ? AlertmanagerAlerts.endpoint(target.url) : target.url,
            headers: [
                HTTPHeader("Content-Type", "application/json"),
                HTTPHeader("User-Agent", "sonde-collector"),
                HTTPHeader(WebhookSignature.eventIDHeader, delivery.event.id),
                HTTPHeader(WebhookSignature.eventTypeHeader, delivery.event.type),
            ]
                // No signature made with no secret (pagerduty and alertmanager targets need none):
                // it would verify against the empty key, which proves nothing (integrations review #7).
                + (target.secret.isEmpty ? [] : [HTTPHeader(WebhookSignature.header, WebhookSignature.sign(body: body, secret: target.secret, timestamp: timestamp))]),
            body: body, timeout: .milliseconds(Int(retry.timeout * 1000)), maxResponseBytes: 1 << 20)
        let failure: String
        var permanent = false
        var retryAfter: Duration?
        var rateLimited = false
        do {
            let response = try await client.perform(request)
            if (200..<300).contains(response.status) {
                // Until this is recorded a crash means the event is sent again (same id): record first.
                let answered = ContinuousClock.now
                if await recordDelivered(delivery, target: target, logger: logger) {
                    let recording = answered.duration(to: .now)
                    metrics.webhookDelivered(target: target.name)
                    logger.info(
                        "Webhook delivered",
                        metadata: [
                            "http.status": "\(response.status)", "attempts": "\(delivery.attempts + 1)",
                            "recorded_ms": "\(recording.wholeMilliseconds)",
                        ])
                }
                sentLabels.merge(alertmanagerSent) { $1 }
                sentLabels = sentLabels.filter { !$0.value.isEmpty }
                // A test alert proves the route; in PagerDuty it would stay an open incident
                // for someone to close by hand. Resolve it at once (as Alertmanager's test
                // alert ends by its endsAt). Best effort: the test itself was delivered.
                if target.format == .pagerduty, delivery.event.type == AlertEventType.test.rawValue {
                    var resolve = request
                    resolve.body = WebhookPayload.pagerDutyResolve(dedupKey: delivery.event.id, routingKey: target.routingKey ?? "")
                    resolve.headers.removeAll { $0.name == WebhookSignature.header }
                    let answer = try? await client.perform(resolve)
                    if !(200..<300).contains(answer?.status ?? 0) {
                        logger.warning("The PagerDuty test alert was delivered but not resolved; resolve it in PagerDuty", metadata: ["http.status": "\(answer?.status ?? 0)"])
                    }
                }
                return
            }
            failure =
                (300..<400).contains(response.status)
                ? "HTTP \(response.status): the receiver redirects to \(Self.reason(in: Data((response.headers.value(for: "Location") ?? "nowhere").utf8), hiding: Self.credentials(of: target)).dropFirst(2)); set the webhook's url to where it should go"
                : "HTTP \(response.status)" + Self.reason(in: response.body, hiding: Self.credentials(of: target))
            permanent = Self.isPermanentRefusal(response.status)
            // A receiver that asks for a pause (429, 503) gets at least that; an hour at most.
            rateLimited = response.status == 429
            if response.status == 429 || response.status == 503 {
                retryAfter = response.headers.value(for: "Retry-After").flatMap { RetryAfter.parse($0, now: Date()) }.map { min($0, .seconds(3600)) }
            }
        } catch {
            if Task.isCancelled { return }
            failure = "\(error.kind.rawValue): " + String(Self.reason(in: Data(error.message.utf8), hiding: Self.credentials(of: target)).dropFirst(2))
        }
        let attempts = delivery.attempts + 1
        metrics.webhookFailed(target: target.name)
        let age = -delivery.event.occurredAt.timeIntervalSinceNow
        // Being rate limited says nothing against the event: it does not use up max_attempts
        // (a burst of incidents would otherwise drop pages), only max_age bounds it.
        if permanent || (attempts >= retry.maxAttempts && !rateLimited) || age >= retry.maxAge {
            let why =
                permanent ? "refused with a non-retryable status" : attempts >= retry.maxAttempts ? "out of attempts (webhook_retry.max_attempts)" : "too old (webhook_retry.max_age)"
            do {
                try await store.markDead(eventID: delivery.event.id, target: target.name, attempts: attempts, error: "\(failure); \(why)", at: Date())
                metrics.webhookDeadLettered(target: target.name)
                logger.error(
                    "Webhook event dead-lettered; later events go on (`sonde alert dead-letters`, `sonde alert redrive`)",
                    metadata: ["error": .string(failure), "reason": .string(why), "attempts": "\(attempts)"])
            } catch {
                logger.error("Cannot dead-letter a webhook event", metadata: ["error": "\(error)"])
                try? await Task.sleep(for: .seconds(1))
            }
            return
        }
        let delay = max(Self.backoff(attempt: attempts, base: retry.base, cap: retry.cap), retryAfter.map { Double($0.components.seconds) } ?? 0)
        logger.warning(
            "Webhook delivery failed; will retry",
            metadata: ["error": .string(failure), "attempts": "\(attempts)", "retry.in_seconds": "\(String(format: "%.2f", delay))"])
        try? await store.markFailed(
            eventID: delivery.event.id, target: target.name, attempts: attempts, nextAttemptAt: Date().addingTimeInterval(delay), error: failure)
    }
}

// MARK: - Alertmanager

extension WebhookDispatcher {
    /// The request body for some events (the event JSON, its type, when it occurred): their
    /// alerts, plus, for an incident whose labels changed since `sentLabels` (its probes' labels
    /// did), the old ones ended now. `sent` gets each incident's labels as they will be after a
    /// 2xx (empty: resolved), without `severity` (``AlertmanagerAlerts/severities(_:)``).
    func alertmanagerAlerts(
        _ events: [([String: Any], String, Date)], target: WebhookTarget, sentLabels: [String: [String: String]], sent: inout [String: [String: String]]
    ) -> Data {
        let now = Date()
        var alerts: [[String: Any]] = []
        for (object, type, occurredAt) in events {
            let link = WebhookPayload.link(for: object, linkBase: linkBase())
            let made = AlertmanagerAlerts.alerts(
                event: object, type: type, occurredAt: occurredAt, link: link, resendInterval: target.resendInterval, now: now)
            alerts += made
            guard let incident = object["incident"] as? [String: Any], let id = incident["id"] as? String,
                var labels = made.first?["labels"] as? [String: String]
            else { continue }
            labels["severity"] = nil
            if let old = sentLabels[id], !old.isEmpty, old != labels {
                for alert in made {
                    var ended = alert
                    var oldLabels = old
                    oldLabels["severity"] = (alert["labels"] as? [String: String])?["severity"]
                    ended["labels"] = oldLabels
                    ended["endsAt"] = RFC3339.string(from: now)
                    alerts.append(ended)
                }
            }
            sent[id] = incident["resolved_at"] is String ? [:] : labels
        }
        return AlertmanagerAlerts.body(alerts)
    }

    /// Posts every open incident's alert again (read from the database, so a restart loses
    /// nothing): Alertmanager keeps an alert firing only while it is re-sent before its
    /// `endsAt`. A failure is logged; the next interval tries again, well before they end.
    func resendOpenIncidents(target: WebhookTarget, sentLabels: inout [String: [String: String]], logger: Logger) async {
        let now = Date()
        var events: [([String: Any], String, Date)] = []
        // Agents still silent or local: their alerts ended by themselves 4 re-send intervals
        // after the event while `sonde agents` still said silent (integrations review, 33rd
        // session, F3). Re-sent from the stored agent states, as the incidents are.
        if target.accepts(AlertEventType.agentSilent.rawValue) || target.accepts(AlertEventType.agentLocalFault.rawValue) {
            do {
                let decoder = SondeJSON.decoder()
                for data in try await store.agentStates().values {
                    guard let health = try? decoder.decode(AgentHealth.self, from: data), let type = health.problemEvent, target.accepts(type.rawValue)
                    else { continue }
                    let object: [String: Any] = ["agent": health.agent, "status": health.state.rawValue, "summary": health.problemSummary]
                    events.append((object, type.rawValue, health.since))
                }
            } catch {
                logger.warning("Cannot read agent states to re-send to Alertmanager", metadata: ["error": "\(error)"])
            }
        }
        var records: [IncidentRecord] = []
        if target.accepts(AlertEventType.incidentOpened.rawValue) {
            do { records = try await store.incidents(.open, limit: 10_000) } catch {
                logger.warning("Cannot read open incidents to re-send to Alertmanager", metadata: ["error": "\(error)"])
                return
            }
        }
        for record in records {
            guard let incident = (try? JSONSerialization.jsonObject(with: record.json)) as? [String: Any] else { continue }
            let updates = incident["updates"] as? [[String: Any]] ?? []
            var object: [String: Any] = [
                "incident": incident, "component": record.component,
                "summary": updates.last?["message"] as? String ?? "\(record.component): \(record.status)",
            ]
            let labels = metrics.probeLabels(component: record.component, now: now)
            if !labels.isEmpty { object["labels"] = labels }
            events.append((object, AlertEventType.incidentUpdated.rawValue, record.updatedAt))
        }
        guard !events.isEmpty else { return }
        var sent: [String: [String: String]] = [:]
        let body = alertmanagerAlerts(events, target: target, sentLabels: sentLabels, sent: &sent)
        let request = HTTPRequest(
            method: "POST", url: AlertmanagerAlerts.endpoint(target.url),
            headers: [HTTPHeader("Content-Type", "application/json"), HTTPHeader("User-Agent", "sonde-collector")],
            body: body, timeout: .milliseconds(Int(retry.timeout * 1000)), maxResponseBytes: 1 << 20)
        do {
            let response = try await client.perform(request)
            guard (200..<300).contains(response.status) else {
                logger.warning("Alertmanager refused the re-sent alerts; next try in resend_interval", metadata: ["http.status": "\(response.status)"])
                return
            }
            sentLabels.merge(sent) { $1 }
            logger.debug("Open incidents and agent problems re-sent to Alertmanager", metadata: ["alerts": "\(events.count)"])
        } catch {
            logger.warning("Cannot re-send open incidents to Alertmanager; next try in resend_interval", metadata: ["error": "\(error.message)"])
        }
    }
}

// A short name for ServiceLifecycle's logs: a dump of the targets would carry their secrets.
extension WebhookDispatcher: CustomStringConvertible {
    public var description: String { "WebhookDispatcher(\(settings.webhooks.count) targets)" }
}
