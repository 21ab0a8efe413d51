@testable import Collector
import CollectorAPI
import Correlation
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// A real Alertmanager (Debian's `prometheus-alertmanager`) on a free loopback port, in a
/// temporary directory, clustering off. Its one receiver is a webhook to `notifications`, with
/// resolved notifications on and 1 s grouping, so a test sees what Alertmanager itself decided.
final class RealAlertmanager {
    static let binary = "/usr/bin/prometheus-alertmanager"
    let process: ChildProcess
    let port: Int
    let notifications: LoopbackHTTPServer
    final class Received: Sendable { let bodies = Mutex<[Data]>([]) }
    private let received = Received()
    var url: String { "http://127.0.0.1:\(port)" }

    init(dir: TemporaryDirectory) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary) else {
            throw TestFailure("prometheus-alertmanager is not installed: `apt-get install prometheus-alertmanager` (scripts/install-deps.sh installs it)")
        }
        let received = self.received
        notifications = try LoopbackHTTPServer { request in
            received.bodies.withLock { $0.append(request.body) }
            return .json(200, "{}")
        }
        port = try freeLoopbackPort()
        try """
            route: {receiver: sonde-test, group_by: [alertname, incident], group_wait: 1s, group_interval: 1s, repeat_interval: 1h}
            receivers:
              - name: sonde-test
                webhook_configs: [{url: "\(notifications.baseURL)/alertmanager", send_resolved: true}]
            """.write(toFile: dir.file("alertmanager.yml"), atomically: true, encoding: .utf8)
        process = try ChildProcess(
            Self.binary,
            ["--config.file=\(dir.file("alertmanager.yml"))", "--storage.path=\(dir.file("am-data"))", "--web.listen-address=127.0.0.1:\(port)",
             "--cluster.listen-address=", "--log.level=warn"])
    }

    /// Notifications Alertmanager sent to its webhook receiver (`status`: firing or resolved).
    var notificationsReceived: [[String: Any]] {
        received.bodies.withLock { $0 }.compactMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
    }

    /// `GET /api/v2/alerts`: the alerts Alertmanager holds as active (resolved ones are left out).
    func alerts() async -> [[String: Any]] {
        guard let response = try? await CurlHTTPClient.shared.perform(HTTPRequest(url: url + "/api/v2/alerts", timeout: .seconds(5))),
            response.status == 200
        else { return [] }
        return (try? JSONSerialization.jsonObject(with: Data(response.body)) as? [[String: Any]]) ?? []
    }

    func stop() async {
        notifications.stop()
        await process.stop()
    }
}

@Suite("Alertmanager", .serialized)
struct AlertmanagerTests {
    /// An outage in two regions fires one alert in a real Alertmanager with the incident's labels
    /// and the probes' labels; it is re-sent while open (its endsAt moves on), also by a
    /// restarted collector; recovery resolves it (gone from the active alerts, and Alertmanager
    /// notifies its receiver with status resolved).
    @Test func incidentFiresIsResentAndResolvesInRealAlertmanager() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let alertmanager = try RealAlertmanager(dir: dir)
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"),
                      TestAgent(id: "us-1", region: "us"), TestAgent(id: "us-2", region: "us")]
        var config = testConfig(
            dir: dir, agents: agents,
            webhooks: [WebhookTarget(name: "am", url: alertmanager.url, format: .alertmanager, resendInterval: 1)])
        config.components = ["login"]
        func push(_ outcome: Outcome, to collector: RunningCollector) async throws {
            for agent in agents {
                var result = agent.result(outcome: outcome, startedAt: Date(), code: outcome == .failed ? "http_500" : nil)
                result.labels = ["team": "identity", "tier": "1", "alertname": "spoofed"]
                _ = try await agent.push(agent.batch([result]), to: collector)
            }
        }
        func sondeAlerts() async -> [[String: Any]] {
            await alertmanager.alerts().filter { ($0["labels"] as? [String: String])?["alertname"] == "SondeIncident" }
        }
        func endsAt(_ alert: [String: Any]?) -> Date? { (alert?["endsAt"] as? String).flatMap(RFC3339.date(from:)) }

        let firstEndsAt: Date = try await withCollector(config) { collector in
            try await waitUntil("the login incident firing in Alertmanager", timeout: .seconds(60)) {
                try await push(.failed, to: collector)
                return await !sondeAlerts().isEmpty
            }
            // The incident may still escalate (partial → major outage, more regions): labels stay,
            // annotations follow, and each severity it reaches is an alert of its own, firing
            // until the incident resolves (never "resolved" while it grows: the SRE review's F1).
            var current: Incident?
            func reached(_ incident: Incident) -> Set<String> {
                Set((incident.updates.map(\.severity) + [incident.severity]).map { WebhookPayload.severity($0.rawValue) })
            }
            try await waitUntil("an active alert per severity the incident reached, annotated as it is now", timeout: .seconds(30)) {
                current = try decode(IncidentsResponse.self, try await get(collector, "/v1/incidents?status=open")).incidents.first
                guard let incident = current else { return false }
                let alerts = await sondeAlerts()
                let severities = Set(alerts.compactMap { ($0["labels"] as? [String: String])?["severity"] })
                return alerts.count == severities.count && severities == reached(incident)
                    && alerts.allSatisfy { alert in
                        let annotations = alert["annotations"] as? [String: String]
                        return annotations?["status"] == incident.severity.rawValue && annotations?["scope"] == incident.scope.rawValue
                            && annotations?["regions"] == incident.regions.sorted().joined(separator: ",")
                    }
            }
            let alert = try #require(await sondeAlerts().first)
            let labels = try #require(alert["labels"] as? [String: String])
            let incident = try #require(current)
            #expect(labels["incident"] == incident.id)
            #expect(labels["component"] == "login")
            #expect(["critical", "error"].contains(labels["severity"] ?? ""), "\(labels)")
            #expect(labels["scope"] == nil && labels["status"] == nil && labels["regions"] == nil, "what changes is in annotations: \(labels)")
            #expect(labels["team"] == "identity" && labels["tier"] == "1", "the probes' labels: \(labels)")
            #expect(labels["label_alertname"] == "spoofed", "a probe label cannot overwrite Sonde's own")
            #expect((alert["status"] as? [String: Any])?["state"] as? String == "active")
            let annotations = try #require(alert["annotations"] as? [String: String])
            #expect(!(annotations["summary"] ?? "").isEmpty)
            #expect((annotations["description"] ?? "").contains("Agents failing: \(incident.evidence.failingAgentCount) of \(incident.evidence.reportingAgents)"), "\(annotations)")
            #expect((alert["generatorURL"] as? String ?? "").contains("/incidents/"))
            let startsAt = (alert["startsAt"] as? String).flatMap(RFC3339.date(from:))
            #expect(startsAt.map { abs($0.timeIntervalSince(incident.openedAt)) < 1 } == true, "startsAt is when the incident opened")

            // Re-sent every resend_interval (1 s): Alertmanager's endsAt moves on.
            let first = try #require(endsAt(alert))
            try await waitUntil("the alert re-sent (endsAt later)", timeout: .seconds(30)) {
                guard let now = endsAt(await sondeAlerts().first) else { return false }
                return now > first.addingTimeInterval(1.5)
            }
            return try #require(endsAt(await sondeAlerts().first))
        }

        // A new collector process state over the same database keeps re-sending the open incident.
        try await withCollector(config) { collector in
            try await waitUntil("the restarted collector re-sending", timeout: .seconds(30)) {
                guard let now = endsAt(await sondeAlerts().first) else { return false }
                return now > firstEndsAt.addingTimeInterval(1.5)
            }
            let resolvedWhileOpen = alertmanager.notificationsReceived.flatMap { $0["alerts"] as? [[String: Any]] ?? [] }.filter {
                $0["status"] as? String == "resolved"
            }
            #expect(resolvedWhileOpen.isEmpty, "Alertmanager notified a resolution while the incident was open: \(resolvedWhileOpen)")
            try await waitUntil("the alert resolved in Alertmanager", timeout: .seconds(120)) {
                try await push(.ok, to: collector)
                return await sondeAlerts().isEmpty
            }
            try await waitUntil("Alertmanager notifying its receiver of the resolution", timeout: .seconds(30)) {
                alertmanager.notificationsReceived.contains { $0["status"] as? String == "resolved" }
            }
            let resolved = try #require(alertmanager.notificationsReceived.last { $0["status"] as? String == "resolved" })
            let alerts = resolved["alerts"] as? [[String: Any]] ?? []
            #expect(alerts.contains { ($0["labels"] as? [String: String])?["component"] == "login" })
            #expect(alertmanager.notificationsReceived.contains { $0["status"] as? String == "firing" })
        }
        await alertmanager.stop()
    }

    /// An incident that grows from a partial outage in us to a major one platform-wide, then
    /// narrows to eu: its alerts keep the same labels (only `severity` differs, one alert per
    /// severity reached, both firing until it resolves), and scope, status and regions are
    /// annotations that follow it. Resolved, every alert ends at the resolution.
    @Test func incidentAlertsKeepTheirLabelsAsTheIncidentChanges() throws {
        let opened = "2026-12-05T10:00:00Z"
        func incident(severity: String, scope: String, regions: [String], history: [String], resolvedAt: String? = nil) -> [String: Any] {
            var incident: [String: Any] = [
                "id": "api.1796512662608", "component": "api", "severity": severity, "scope": scope, "regions": regions, "opened_at": opened,
                "updates": history.map { ["severity": $0, "status": "investigating", "message": "m"] },
            ]
            if let resolvedAt { incident["resolved_at"] = resolvedAt }
            return incident
        }
        let now = Date()
        func alerts(_ incident: [String: Any]) -> [[String: Any]] {
            AlertmanagerAlerts.alerts(
                event: ["incident": incident, "summary": "s", "labels": ["team": "platform", "severity": "page"]], type: "incident.updated",
                occurredAt: now, link: "https://sonde.example/incidents/x", resendInterval: 60, now: now)
        }
        func labels(_ alerts: [[String: Any]]) -> [[String: String]] { alerts.compactMap { $0["labels"] as? [String: String] } }
        let identity = ["alertname": "SondeIncident", "source": "sonde", "incident": "api.1796512662608", "component": "api", "team": "platform", "label_severity": "page"]

        let opening = alerts(incident(severity: "partial_outage", scope: "region", regions: ["us"], history: ["partial_outage"]))
        #expect(labels(opening) == [identity.merging(["severity": "error"]) { $1 }])
        let worse = alerts(incident(severity: "major_outage", scope: "platform", regions: ["eu", "us"], history: ["partial_outage", "major_outage"]))
        #expect(labels(worse) == [identity.merging(["severity": "critical"]) { $1 }, identity.merging(["severity": "error"]) { $1 }])
        let annotations = try #require(worse.first?["annotations"] as? [String: String])
        #expect(annotations["scope"] == "platform" && annotations["status"] == "major_outage" && annotations["regions"] == "eu,us")
        #expect(annotations["summary"] == "m", "the timeline's latest entry, as a re-send says, not the event's one-liner")
        let narrower = alerts(incident(severity: "partial_outage", scope: "platform", regions: ["eu"], history: ["partial_outage", "major_outage", "partial_outage"]))
        #expect(labels(narrower) == labels(worse), "a narrower outage ends no alert while the incident is open")
        #expect((narrower.first?["annotations"] as? [String: String])?["regions"] == "eu")
        for alert in narrower {
            let ends = try #require((alert["endsAt"] as? String).flatMap(RFC3339.date(from:)))
            #expect(ends > now, "firing")
        }
        let resolvedAt = "2026-12-05T10:30:00Z"
        let resolved = alerts(incident(severity: "partial_outage", scope: "platform", regions: ["eu"], history: ["partial_outage", "major_outage"], resolvedAt: resolvedAt))
        let resolvedDate = try #require(RFC3339.date(from: resolvedAt))
        #expect(labels(resolved) == labels(worse) && resolved.allSatisfy { ($0["endsAt"] as? String).flatMap(RFC3339.date(from:)) == resolvedDate })
    }

    /// An agent that goes silent raises its problem where targets asked for it (Alertmanager's
    /// `SondeAgentProblem`, a PagerDuty trigger, a JSON event); when it reports again,
    /// `agent.recovered` ends each of them: Alertmanager resolves the alert and notifies its
    /// receiver, PagerDuty gets a resolve for the same dedup_key, the JSON target the event
    /// naming what it resolves. A pagerduty target that did not list agent events gets neither.
    @Test func anAgentsReturnEndsItsSilenceAlertEverywhere() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let alertmanager = try RealAlertmanager(dir: dir)
        let pagerDuty = try PagerDutyReceiver()
        defer { pagerDuty.server.stop() }
        let json = try WebhookReceiver()
        json.set(.up)
        defer { json.stop() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        var config = fastSilenceConfig(dir: dir, agents: [eu, us])
        config.webhooks = [
            WebhookTarget(name: "am", url: alertmanager.url, events: ["agent.silent"], format: .alertmanager, resendInterval: 60),
            WebhookTarget(name: "pd", url: pagerDuty.url, events: ["agent.silent", "incident.opened"], format: .pagerduty, routingKey: "R0UT1NGKEY0123456789abcdefabcdef"),
            WebhookTarget(name: "pd-incidents", url: pagerDuty.url, format: .pagerduty, routingKey: "INC1DENTS0NLY0123456789abcdefabc"),
            WebhookTarget(name: "hook", url: json.url, secret: "s3cret"),
        ]
        func agentAlerts() async -> [[String: Any]] {
            await alertmanager.alerts().filter { ($0["labels"] as? [String: String])?["alertname"] == "SondeAgentProblem" }
        }
        try await withCollector(config) { collector in
            for agent in [eu, us] { _ = try await agent.push(agent.batch([agent.result(startedAt: Date())]), to: collector) }
            // us-1 stops; eu-1 goes on.
            try await waitUntil("us-1's silence in Alertmanager, PagerDuty and the JSON target", timeout: .seconds(60)) {
                _ = try await eu.push(eu.batch([eu.result(startedAt: Date())]), to: collector)
                let fired = await agentAlerts().contains { ($0["labels"] as? [String: String])?["agent"] == "us-1" }
                return fired && pagerDuty.events.contains { $0["event_action"] as? String == "trigger" }
                    && json.events.contains { $0["type"] as? String == "agent.silent" }
            }
            let silent = try #require(json.events.first { $0["type"] as? String == "agent.silent" })
            let problemID = try #require(silent["id"] as? String)
            let trigger = try #require(pagerDuty.events.first { $0["event_action"] as? String == "trigger" })
            #expect(trigger["dedup_key"] as? String == problemID)
            let alert = try #require(await agentAlerts().first)
            #expect((alert["labels"] as? [String: String])?["status"] == "silent")
            // us, whose only agent stopped, is a blind spot: unknown, not gone (SRE review F4).
            let metrics = try await get(collector, "/metrics").bodyText
            #expect(metrics.contains(#"sonde_component_region_status{component="login",region="us",status="unknown"} 1"#), "\(metrics)")
            let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
            #expect(status.components.first { $0.component == "login" }?.unwatchedRegions == ["us"])
            // Alertmanager tells its receiver of a resolution only for an alert it notified.
            try await waitUntil("Alertmanager notifying its receiver of us-1's silence", timeout: .seconds(30)) {
                _ = try await eu.push(eu.batch([eu.result(startedAt: Date())]), to: collector)
                return alertmanager.notificationsReceived.contains { note in
                    note["status"] as? String == "firing"
                        && (note["alerts"] as? [[String: Any]] ?? []).contains { ($0["labels"] as? [String: String])?["agent"] == "us-1" }
                }
            }

            // us-1 reports again.
            try await waitUntil("us-1's alert resolved in Alertmanager and PagerDuty", timeout: .seconds(60)) {
                for agent in [eu, us] { _ = try await agent.push(agent.batch([agent.result(startedAt: Date())]), to: collector) }
                return await agentAlerts().isEmpty && pagerDuty.events.contains { $0["event_action"] as? String == "resolve" }
                    && json.events.contains { $0["type"] as? String == "agent.recovered" }
            }
            let resolve = try #require(pagerDuty.events.first { $0["event_action"] as? String == "resolve" })
            #expect(resolve["dedup_key"] as? String == problemID)
            #expect(resolve["routing_key"] as? String == "R0UT1NGKEY0123456789abcdefabcdef", "only the target that got the trigger")
            #expect(pagerDuty.events.allSatisfy { $0["routing_key"] as? String != "INC1DENTS0NLY0123456789abcdefabc" })
            let recovered = try #require(json.events.first { $0["type"] as? String == "agent.recovered" })
            #expect(recovered["resolves"] as? String == problemID)
            #expect(recovered["resolves_type"] as? String == "agent.silent")
            #expect(recovered["agent"] as? String == "us-1" && recovered["status"] as? String == "ok")
            #expect((recovered["summary"] as? String ?? "").contains("reporting again after"), "\(recovered)")
            try await waitUntil("Alertmanager notifying its receiver that us-1's alert resolved", timeout: .seconds(30)) {
                alertmanager.notificationsReceived.contains { note in
                    note["status"] as? String == "resolved"
                        && (note["alerts"] as? [[String: Any]] ?? []).contains { ($0["labels"] as? [String: String])?["agent"] == "us-1" }
                }
            }
        }
        await alertmanager.stop()
    }

    /// An agent still silent stays firing in Alertmanager: its alert is re-sent every
    /// resend_interval from the stored agent states, as incidents' are. It ended by itself 4
    /// re-send intervals after the event while `sonde agents` still said silent, and
    /// Alertmanager told its receiver "resolved" (integrations review, 33rd session, F3).
    @Test func aSilentAgentsAlertStaysFiringWhileItIsSilent() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let alertmanager = try RealAlertmanager(dir: dir)
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        var config = fastSilenceConfig(dir: dir, agents: [eu, us])
        config.webhooks = [WebhookTarget(name: "am", url: alertmanager.url, events: ["agent.silent"], format: .alertmanager, resendInterval: 1)]
        func silenceAlerts() async -> [[String: Any]] {
            await alertmanager.alerts().filter { ($0["labels"] as? [String: String])?["agent"] == "us-1" }
        }
        try await withCollector(config) { collector in
            for agent in [eu, us] { _ = try await agent.push(agent.batch([agent.result(startedAt: Date())]), to: collector) }
            try await waitUntil("us-1's silence in Alertmanager", timeout: .seconds(60)) {
                _ = try await eu.push(eu.batch([eu.result(startedAt: Date())]), to: collector)
                return await !silenceAlerts().isEmpty
            }
            // Twice the 4 s its first send was good for; us-1 is silent all along.
            let until = ContinuousClock.now + .seconds(8)
            while ContinuousClock.now < until {
                _ = try await eu.push(eu.batch([eu.result(startedAt: Date())]), to: collector)
                try await Task.sleep(for: .milliseconds(500))
            }
            let agents = try decode(AgentsResponse.self, try await get(collector, "/v1/agents")).agents
            #expect(agents.first { $0.id == "us-1" }?.state == .silent)
            #expect(await !silenceAlerts().isEmpty, "us-1's silence alert ended while it was still silent")
            #expect(!alertmanager.notificationsReceived.contains { $0["status"] as? String == "resolved" })
        }
        await alertmanager.stop()
    }

    @Test func configAcceptsAlertmanagerAndRefusesResendIntervalElsewhere() throws {
        let ok = try CollectorConfig.parse(
            yaml: """
                listen: {plain_http: true}
                webhooks: [{name: am, url: "http://127.0.0.1:9093", format: alertmanager, resend_interval: 30s}]
                """, file: "c.yaml")
        #expect(ok.webhooks.first?.format == .alertmanager)
        #expect(ok.webhooks.first?.resendInterval == 30)
        #expect(ok.webhooks.first?.accepts("agent.silent") == false, "incident events only by default")
        do {
            _ = try CollectorConfig.parse(
                yaml: """
                    listen: {plain_http: true}
                    webhooks: [{name: j, url: "http://127.0.0.1:9", secret: s, resend_interval: 30s}]
                    """, file: "c.yaml")
            Issue.record("resend_interval on a json target was accepted")
        } catch {
            #expect("\(error)".contains("c.yaml:2:") && "\(error)".contains("resend_interval"), "\(error)")
        }
    }
}
