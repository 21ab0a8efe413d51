@testable import Collector
import CollectorAPI
import CollectorStore
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// A receiver shaped like PagerDuty's Events API v2 (`POST /v2/enqueue`): it checks each event
/// as PagerDuty does (routing_key, event_action, dedup_key, payload.summary/source/severity and
/// their limits), answers 400 with PagerDuty's error body for a bad one and 202 for a good one,
/// and keeps the accepted events.
final class PagerDutyReceiver: Sendable {
    final class Accepted: Sendable {
        let bodies = Mutex<[Data]>([])
        let signatures = Mutex<[String?]>([])
    }
    private let accepted = Accepted()
    let server: LoopbackHTTPServer
    var url: String { server.baseURL + "/v2/enqueue" }
    /// Each accepted event's `Sonde-Signature` header (nil: none).
    var signatures: [String?] { accepted.signatures.withLock { $0 } }
    var events: [[String: Any]] {
        accepted.bodies.withLock { $0 }.compactMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    }

    init() throws {
        let accepted = self.accepted
        server = try LoopbackHTTPServer { request in
            accepted.signatures.withLock { $0.append(request.header("Sonde-Signature")) }
            guard request.path == "/v2/enqueue", let event = try? JSONSerialization.jsonObject(with: request.body) as? [String: Any] else {
                return .json(400, #"{"status":"invalid event","message":"Event object is invalid"}"#)
            }
            var errors: [String] = []
            if (event["routing_key"] as? String ?? "").isEmpty { errors.append("'routing_key' is missing or blank") }
            let action = event["event_action"] as? String ?? ""
            if !["trigger", "acknowledge", "resolve"].contains(action) { errors.append("'event_action' is invalid") }
            if let key = event["dedup_key"] as? String, key.count > 255 { errors.append("'dedup_key' is too long") }
            if action == "trigger" {
                let payload = event["payload"] as? [String: Any] ?? [:]
                if (payload["summary"] as? String ?? "").isEmpty || (payload["summary"] as? String ?? "").count > 1024 { errors.append("'payload.summary'") }
                if (payload["source"] as? String ?? "").isEmpty { errors.append("'payload.source' is missing") }
                if !["critical", "error", "warning", "info"].contains(payload["severity"] as? String ?? "") { errors.append("'payload.severity'") }
            } else if (event["dedup_key"] as? String ?? "").isEmpty {
                errors.append("'dedup_key' is required to \(action)")
            }
            guard errors.isEmpty else {
                let body = try! JSONSerialization.data(withJSONObject: ["status": "invalid event", "message": "Event object is invalid", "errors": errors])
                return .json(400, String(decoding: body, as: UTF8.self))
            }
            accepted.bodies.withLock { $0.append(request.body) }
            return .json(202, #"{"status":"success","message":"Event processed","dedup_key":"\#(event["dedup_key"] as? String ?? "")"}"#)
        }
    }
}

@Suite("PagerDuty", .serialized)
struct PagerDutyTests {
    /// One run of every agent's login probe, failed (http_500) or ok, pushed now.
    static func push(_ outcome: Outcome, from agents: [TestAgent], to collector: RunningCollector) async throws {
        for agent in agents { _ = try await agent.push(agent.batch([agent.result(outcome: outcome, startedAt: Date(), code: outcome == .failed ? "http_500" : nil)]), to: collector) }
    }

    /// A platform outage triggers one PagerDuty alert keyed by the incident; recovery resolves
    /// that same alert; an agent's local fault pages nobody.
    @Test func incidentTriggersAndResolvesOneAlert() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try PagerDutyReceiver()
        defer { receiver.server.stop() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"),
                      TestAgent(id: "us-1", region: "us"), TestAgent(id: "us-2", region: "us")]
        var config = testConfig(
            dir: dir, agents: agents,
            webhooks: [WebhookTarget(name: "pd", url: receiver.url, secret: "", format: .pagerduty, routingKey: "R0UT1NGKEY0123456789abcdefabcdef")])
        config.components = ["login"]
        try await withCollector(config) { collector in
            func push(_ outcome: Outcome) async throws { try await Self.push(outcome, from: agents, to: collector) }
            try await waitUntil("a trigger for the login incident", timeout: .seconds(60)) {
                try await push(.failed)
                return receiver.events.contains { $0["event_action"] as? String == "trigger" }
            }
            let trigger = try #require(receiver.events.first)
            let dedupKey = try #require(trigger["dedup_key"] as? String)
            let payload = try #require(trigger["payload"] as? [String: Any])
            #expect(trigger["routing_key"] as? String == "R0UT1NGKEY0123456789abcdefabcdef")
            #expect(payload["source"] as? String == "sonde")
            #expect(payload["component"] as? String == "login")
            #expect(["critical", "error"].contains(payload["severity"] as? String ?? ""))
            let incidents = try decode(IncidentsResponse.self, try await get(collector, "/v1/incidents"))
            #expect(incidents.incidents.first?.id == dedupKey, "dedup_key is the incident id")
            // The responder's links: the status page and the operators' view with the evidence.
            let links = (trigger["links"] as? [[String: String]] ?? []).compactMap { $0["href"] }
            #expect(links.count == 2 && links.contains { $0.hasSuffix("/internal/incidents/" + dedupKey) }, "\(links)")
            // No secret, no signature (one made with the empty key proves nothing).
            #expect(receiver.signatures.allSatisfy { $0 == nil }, "\(receiver.signatures)")

            try await waitUntil("a resolve for the same alert", timeout: .seconds(90)) {
                try await push(.ok)
                return receiver.events.contains { $0["event_action"] as? String == "resolve" }
            }
            let resolve = try #require(receiver.events.first { $0["event_action"] as? String == "resolve" })
            #expect(resolve["dedup_key"] as? String == dedupKey)
            #expect(receiver.events.allSatisfy { $0["dedup_key"] as? String == dedupKey }, "one alert per incident")
        }
    }

    /// A test alert reaches PagerDuty as a trigger and is resolved at once: it proves the
    /// route without leaving an open incident for someone to close.
    @Test func aTestAlertIsTriggeredThenResolved() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try PagerDutyReceiver()
        defer { receiver.server.stop() }
        let config = testConfig(
            dir: dir, agents: [],
            webhooks: [WebhookTarget(name: "pd", url: receiver.url, secret: "unused-by-pagerduty", format: .pagerduty, routingKey: "R0UT1NGKEY0123456789abcdefabcdef")])
        try await withCollector(config) { collector in
            let response = try await post(collector, "/v1/alerts/test")
            let id = try decode(AlertTestResponse.self, response).eventID
            try await waitUntil("the test alert triggered and resolved") { receiver.events.count >= 2 }
            #expect(receiver.events.map { $0["event_action"] as? String ?? "" } == ["trigger", "resolve"])
            #expect(receiver.events.allSatisfy { $0["dedup_key"] as? String == id })
        }
    }

    /// A trigger PagerDuty refused is dead-lettered with PagerDuty's reason (never the routing
    /// key, even echoed); once its incident has resolved, redriving that trigger to PagerDuty is
    /// refused: it would open a page for an outage that is over.
    @Test func aDeadLetteredTriggerOfAResolvedIncidentIsNotRedriven() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let key = "R0UT1NGKEY0123456789abcdefabcdef"
        let refusing = Mutex(true)
        let accepted = Mutex<[String]>([])
        let receiver = try LoopbackHTTPServer { request in
            let body = (try? JSONSerialization.jsonObject(with: request.body)) as? [String: Any] ?? [:]
            if refusing.withLock({ $0 }) {
                return .json(400, #"{"status":"invalid event","message":"Event object is invalid","errors":["routing_key \#(key) is unknown"]}"#)
            }
            accepted.withLock { $0.append(body["event_action"] as? String ?? "") }
            return .json(202, #"{"status":"success"}"#)
        }
        defer { receiver.stop() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "us-1", region: "us")]
        var config = testConfig(
            dir: dir, agents: agents,
            webhooks: [WebhookTarget(name: "pd", url: receiver.baseURL + "/v2/enqueue", secret: "unused-by-pagerduty", format: .pagerduty, routingKey: key)])
        config.components = ["login"]
        try await withCollector(config) { collector in
            func push(_ outcome: Outcome) async throws { try await Self.push(outcome, from: agents, to: collector) }
            try await waitUntil("the trigger dead-lettered", timeout: .seconds(60)) {
                try await push(.failed)
                return try decode(DeadLettersResponse.self, try await get(collector, "/v1/alerts/dead-letters")).deadLetters.contains { $0.eventType == "incident.opened" }
            }
            let letters = try decode(DeadLettersResponse.self, try await get(collector, "/v1/alerts/dead-letters")).deadLetters
            let letter = try #require(letters.first { $0.eventType == "incident.opened" })
            #expect(letter.lastError.hasPrefix("HTTP 400: {\"status\":\"invalid event\",\"message\":\"Event object is invalid\""), "\(letter.lastError)")
            #expect(letter.lastError.contains("routing_key [redacted] is unknown") && !letter.lastError.contains(key), "\(letter.lastError)")
            refusing.withLock { $0 = false }
            try await waitUntil("the incident resolved and its resolve sent", timeout: .seconds(90)) {
                try await push(.ok)
                return accepted.withLock { $0.contains("resolve") }
            }
            let redrive = try await post(collector, "/v1/alerts/dead-letters/\(letter.eventID)/redrive?target=pd")
            #expect(redrive.status == 409 && redrive.bodyText.contains("incident_resolved"), "\(redrive.status) \(redrive.bodyText)")
            let still = try decode(DeadLettersResponse.self, try await get(collector, "/v1/alerts/dead-letters")).deadLetters
            #expect(still.contains { $0.eventID == letter.eventID }, "the trigger stays a dead letter, not re-queued")
        }
    }

    /// The probes' `labels` ride along in every format: the json event's `labels`, a Slack
    /// `Labels:` line, PagerDuty's `custom_details.labels`. Probes that disagree on a label's
    /// value give both values, sorted; a journey whose login step fails gives its labels to the
    /// login incident (found by the first-use review).
    @Test func probeLabelsReachEveryWebhookFormat() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pagerDuty = try PagerDutyReceiver()
        defer { pagerDuty.server.stop() }
        let json = try WebhookReceiver()
        defer { json.server.stop() }
        json.set(.up)
        let slack = try WebhookReceiver()
        defer { slack.server.stop() }
        slack.set(.up)
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "us-1", region: "us")]
        var config = testConfig(
            dir: dir, agents: agents,
            webhooks: [
                WebhookTarget(name: "pd", url: pagerDuty.url, format: .pagerduty, routingKey: "R0UT1NGKEY0123456789abcdefabcdef"),
                WebhookTarget(name: "json", url: json.url, secret: "s", events: ["incident.opened"]),
                WebhookTarget(name: "slack", url: slack.url, secret: "s", events: ["incident.opened"], format: .slack),
            ])
        config.components = ["login"]
        try await withCollector(config) { collector in
            try await waitUntil("the login incident sent to all three", timeout: .seconds(60)) {
                for (index, agent) in agents.enumerated() {
                    var result = agent.result(outcome: .failed, startedAt: Date(), code: "http_500")
                    result.labels = ["team": "identity", "tier": index == 0 ? "1" : "2"]
                    if index == 1 {
                        // A journey of another component failing at its login step: its labels
                        // go with the login incident too.
                        result.probe = "files-journey"
                        result.component = "files"
                        result.steps[0].component = "login"
                    }
                    _ = try await agent.push(agent.batch([result]), to: collector)
                }
                return !pagerDuty.events.isEmpty && !json.acknowledgedRequests.isEmpty && !slack.acknowledgedRequests.isEmpty
            }
        }
        let expected = ["team": "identity", "tier": "1,2"]
        let jsonBody = try #require(json.acknowledgedRequests.first).body
        let event = try #require(try JSONSerialization.jsonObject(with: jsonBody) as? [String: Any])
        #expect(event["labels"] as? [String: String] == expected, "\(event)")
        let details = try #require((pagerDuty.events.first?["payload"] as? [String: Any])?["custom_details"] as? [String: Any])
        #expect(details["labels"] as? [String: String] == expected)
        let slackBody = try #require(slack.acknowledgedRequests.first).body
        let message = try #require(try JSONSerialization.jsonObject(with: slackBody) as? [String: Any])
        let blocks = try #require(message["blocks"] as? [[String: Any]])
        #expect(blocks.contains { ((($0["text"] as? [String: Any])?["text"] as? String) ?? "").contains("*Labels:* team=identity, tier=1,2") }, "\(blocks)")
    }

    /// An update pages again only when the incident got worse than it has been, or came back
    /// from monitoring; "recovering", a region joining at the same severity and a person's note
    /// do not (a trigger re-opens an alert a responder resolved: the SRE review's F7).
    @Test func onlyWorseOrRelapsingUpdatesTriggerPagerDuty() throws {
        func event(_ history: [(status: String, severity: String)], type: String = "incident.updated") throws -> OutboxEvent {
            let incident: [String: Any] = [
                "id": "api.1", "component": "api", "severity": history.last?.severity ?? "partial_outage",
                "updates": history.map { ["status": $0.status, "severity": $0.severity, "message": "m", "author": "sonde"] },
            ]
            return OutboxEvent(
                id: UUID().uuidString, type: type, occurredAt: Date(), payload: try JSONSerialization.data(withJSONObject: ["incident": incident, "summary": "s"]))
        }
        let opened = ("investigating", "partial_outage")
        #expect(WebhookPayload.pagerDutyWants(try event([opened], type: "incident.opened")))
        #expect(WebhookPayload.pagerDutyWants(try event([opened, ("resolved", "partial_outage")], type: "incident.resolved")))
        #expect(WebhookPayload.pagerDutyWants(try event([opened, ("investigating", "major_outage")])), "worse")
        #expect(!WebhookPayload.pagerDutyWants(try event([opened, ("investigating", "partial_outage")])), "a region joined at the same severity")
        #expect(!WebhookPayload.pagerDutyWants(try event([opened, ("investigating", "major_outage"), ("investigating", "partial_outage")])), "narrower")
        #expect(!WebhookPayload.pagerDutyWants(try event([opened, ("investigating", "major_outage"), ("investigating", "major_outage")])), "major again")
        #expect(!WebhookPayload.pagerDutyWants(try event([opened, ("monitoring", "partial_outage")])), "recovering")
        #expect(!WebhookPayload.pagerDutyWants(try event([opened, ("identified", "partial_outage")])), "a person's note")
        #expect(WebhookPayload.pagerDutyWants(try event([opened, ("monitoring", "partial_outage"), ("investigating", "partial_outage")])), "back from monitoring")
    }

    @Test func configRefusesAnUnknownFormatAndAPagerDutyTargetWithoutRoutingKey() throws {
        let unknown = """
            listen: {plain_http: true}
            webhooks: [{name: x, url: "https://example.com/h", secret: s, format: pagerduty2}]
            """
        #expect(throws: ConfigError.self) { try CollectorConfig.parse(yaml: unknown, file: "c.yaml") }
        do { _ = try CollectorConfig.parse(yaml: unknown, file: "c.yaml") } catch {
            #expect("\(error)".contains("unknown format \"pagerduty2\"; expected one of json, slack, pagerduty, alertmanager"), "\(error)")
        }
        let keyless = """
            listen: {plain_http: true}
            webhooks: [{name: x, url: "https://events.pagerduty.com/v2/enqueue", secret: s, format: pagerduty}]
            """
        do { _ = try CollectorConfig.parse(yaml: keyless, file: "c.yaml") } catch {
            #expect("\(error)".contains("routing_key"), "\(error)")
            return
        }
        Issue.record("a pagerduty target without routing_key was accepted")
    }

    /// Agent events link to the agent's row, which only the internal page has: the public page
    /// names no agent, so `/#agent-ap-2` led nowhere (integrations review, 33rd session, F5).
    @Test func agentEventsLinkToTheInternalPage() {
        #expect(WebhookPayload.link(for: ["agent": "ap-2"], linkBase: "https://status.example") == "https://status.example/internal#agent-ap-2")
        #expect(WebhookPayload.link(for: ["component": "files"], linkBase: "https://status.example") == "https://status.example/#component-files")
        #expect(WebhookPayload.link(for: ["incident": "files.1"], linkBase: "https://status.example") == "https://status.example/incidents/files.1")
    }
}
