import Collector
import CollectorAPI
import Correlation
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// People's side of incidents through a real collector: `sonde incidents update` (the real
/// binary) → API → the incident's timeline → `incident.updated` with its author at a real local
/// receiver; a person's resolution stands while the fault is still measured (the conflict is
/// shown) and a fault that returns after recovery opens a new incident; `sonde incidents create`
/// for a problem Sonde cannot see; read tokens are refused.
@Suite(.serialized)
struct HumanIncidentFlowTests {
    static let agents = [
        TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"), TestAgent(id: "us-1", region: "us"),
        TestAgent(id: "us-2", region: "us"),
    ]

    @Test func aPersonsUpdatesShareTheTimelineAndTheirResolutionStands() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.server.stop() }
        receiver.set(.up)
        let pagerDuty = try WebhookReceiver()
        defer { pagerDuty.server.stop() }
        pagerDuty.set(.up)
        let config = testConfig(
            dir: dir, agents: Self.agents,
            webhooks: [
                WebhookTarget(name: "ops-hook", url: receiver.url, secret: "k"),
                WebhookTarget(name: "pd", url: pagerDuty.url, secret: "unused", format: .pagerduty, routingKey: "R0UT1NGKEY0123456789abcdefabcdef"),
            ])
        try await withCollector(config) { collector in
            let admin = ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.admin]
            let reader = ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.read]
            // Login fails everywhere until Sonde opens an incident.
            var opened: Incident?
            try await waitUntil("an incident on login", timeout: .seconds(30), every: .milliseconds(200)) {
                try await Self.round(collector, .failed)
                opened = try await Self.openIncidents(collector).first { $0.component == "login" }
                return opened != nil
            }
            let incident = try #require(opened)
            let first = try #require(incident.updates.first)
            #expect(first.author == "sonde")
            #expect(first.message.hasPrefix("Login is ") && first.message.contains(" platform-wide ("), "written for people: \(first.message)")
            #expect(first.message.contains("since ") && first.message.contains(" UTC)"), "\(first.message)")
            #expect(incident.evidence.failingAgentCount > 0, "the raw evidence stays with the incident")

            // A read token may not write: the CLI says so and exits 2; the API answers 403.
            let refused = try await Self.sonde(["incidents", "update", incident.id, "--status", "identified", "--message", "x"], reader)
            #expect(refused.status == 2 && refused.output.contains("403"), "\(refused.output)")
            #expect(try await Self.postJSON(collector, "/v1/incidents/\(incident.id)/updates", #"{"message":"x"}"#, token: TestTokens.read).status == 403)
            // Bad input names the field.
            let badStatus = try await Self.postJSON(collector, "/v1/incidents/\(incident.id)/updates", #"{"status":"fixed","message":"x"}"#)
            #expect(badStatus.status == 400 && badStatus.bodyText.contains("status:"), "\(badStatus.bodyText)")
            let long = String(repeating: "a", count: HumanUpdateLimits.messageCharacters + 1)
            let tooLong = try await Self.postJSON(collector, "/v1/incidents/\(incident.id)/updates", #"{"message":"\#(long)"}"#)
            #expect(tooLong.status == 400 && tooLong.bodyText.contains("message:"), "\(tooLong.bodyText)")
            #expect(try await Self.postJSON(collector, "/v1/incidents/nope.1/updates", #"{"message":"x"}"#).status == 404)

            // A person identifies the cause with the real CLI.
            let identified = try await Self.sonde(
                ["incidents", "update", incident.id, "--status", "identified", "--message", "Bad deploy of the auth service; rolling back"], admin)
            #expect(identified.status == 0, "\(identified.output)")
            #expect(identified.output.contains("identified (ops): Bad deploy of the auth service"), "\(identified.output)")
            let stored = try decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)"))
            #expect(stored.status == .identified)
            #expect(stored.updates.last?.author == "ops" && stored.updates.last?.message == "Bad deploy of the auth service; rolling back")
            try await waitUntil("incident.updated from ops at the receiver") {
                try Self.events(receiver).contains { $0["type"] as? String == "incident.updated" && $0["author"] as? String == "ops" }
            }
            let update = try #require(try Self.events(receiver).first { $0["type"] as? String == "incident.updated" && $0["author"] as? String == "ops" })
            #expect(update["message"] as? String == "Bad deploy of the auth service; rolling back")
            #expect(update["status"] as? String == "identified")

            // The fault goes on; automatic transitions keep the person's identified.
            for _ in 0..<4 { try await Self.round(collector, .failed) }
            try await Self.evaluatedSince(Date(), collector, "login")
            #expect(try decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)")).status == .identified)

            // A person resolves it while the fault is still measured: it stays resolved, the
            // conflict is shown, and no new incident opens.
            let resolved = try await Self.sonde(["incidents", "update", incident.id, "--status", "resolved", "--message", "Rolled back"], admin)
            #expect(resolved.status == 0, "\(resolved.output)")
            try await waitUntil("the conflict on the resolved incident", timeout: .seconds(30), every: .milliseconds(200)) {
                try await Self.round(collector, .failed)
                return try decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)")).conflict != nil
            }
            for _ in 0..<4 { try await Self.round(collector, .failed) }
            try await Self.evaluatedSince(Date(), collector, "login")
            let closed = try decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)"))
            #expect(closed.status == .resolved && closed.resolvedBy == "ops" && closed.awaitingRecovery)
            #expect(closed.conflict?.hasPrefix("resolved by ops while ") == true, "\(closed.conflict ?? "nil")")
            #expect(try await Self.openIncidents(collector).isEmpty, "a person's resolution is not overwritten by a new incident")
            let verdict = try decode(StatusResponse.self, try await get(collector, "/v1/status")).components.first { $0.component == "login" }
            #expect(verdict?.conflict == closed.conflict, "the status API shows the conflict too")
            let shown = try await Self.sonde(["status", "--exit-zero"], reader)
            #expect(shown.output.contains("CONFLICT login: resolved by ops while"), "\(shown.output)")
            try await waitUntil("incident.resolved from ops at the receiver") {
                try Self.events(receiver).contains { $0["type"] as? String == "incident.resolved" && $0["author"] as? String == "ops" }
            }
            // PagerDuty resolves its alert on the person's resolution.
            try await waitUntil("a PagerDuty resolve for the incident") {
                try Self.events(pagerDuty).contains {
                    $0["event_action"] as? String == "resolve" && $0["dedup_key"] as? String == incident.id
                        && (($0["payload"] as? [String: Any])?["custom_details"] as? [String: Any])?["author"] as? String == "ops"
                }
            }
            // Closed for good: no more updates.
            let late = try await Self.postJSON(collector, "/v1/incidents/\(incident.id)/updates", #"{"message":"one more thing"}"#)
            #expect(late.status == 409, "\(late.bodyText)")

            // It recovers, then fails again: a new incident opens.
            try await waitUntil("the resolution no longer waits for recovery", timeout: .seconds(60), every: .milliseconds(200)) {
                try await Self.round(collector, .ok)
                return try !decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)")).awaitingRecovery
            }
            #expect(try decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)")).conflict == nil)
            var reopened: Incident?
            try await waitUntil("a new incident for the returning fault", timeout: .seconds(30), every: .milliseconds(200)) {
                try await Self.round(collector, .failed)
                reopened = try await Self.openIncidents(collector).first { $0.component == "login" }
                return reopened != nil
            }
            #expect(reopened?.id != incident.id)
            #expect(reopened?.updates.first?.author == "sonde")
        }
        // Every delivery is signed as usual.
        for request in receiver.acknowledgedRequests {
            #expect(WebhookSignature.verify(header: request.signature, body: request.body, secret: "k"))
        }
    }

    @Test func aPersonOpensAnIncidentSondeCannotSee() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.server.stop() }
        receiver.set(.up)
        let config = testConfig(dir: dir, agents: Self.agents, webhooks: [WebhookTarget(name: "ops-hook", url: receiver.url, secret: "k")])
        try await withCollector(config) { collector in
            let admin = ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.admin]
            let reader = ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.read]
            let arguments = [
                "incidents", "create", "--component", "billing", "--title", "Invoices are late", "--message",
                "Invoice e-mails are delayed by about an hour; we are looking into it.", "--severity", "degraded_performance", "--region", "eu",
            ]
            let refused = try await Self.sonde(arguments, reader)
            #expect(refused.status == 2 && refused.output.contains("403"), "\(refused.output)")
            let created = try await Self.sonde(arguments, admin)
            #expect(created.status == 0, "\(created.output)")
            let incident = try #require(try await Self.openIncidents(collector).first { $0.component == "billing" })
            #expect(incident.openedBy == "ops" && incident.title == "Invoices are late" && incident.regions == ["eu"] && incident.scope == .region)
            #expect(incident.severity == .degradedPerformance && incident.updates.first?.author == "ops")
            try await waitUntil("incident.opened from ops at the receiver") {
                try Self.events(receiver).contains { $0["type"] as? String == "incident.opened" && $0["author"] as? String == "ops" }
            }
            // It sets billing's status until ops moves it on, so `sonde status` exits as for a
            // degraded component (1), as the page shows it.
            let status = try await Self.sonde(["status"], reader)
            #expect(status.status == 1, "\(status.output)")
            // A second one for the same component is refused: update the open one instead.
            let twice = try await Self.sonde(arguments, admin)
            #expect(twice.status == 2 && twice.output.contains(incident.id), "\(twice.output)")
            // Bad input names the field.
            let noComponent = try await Self.postJSON(collector, "/v1/incidents", #"{"message":"x"}"#)
            #expect(noComponent.status == 400 && noComponent.bodyText.contains("component"), "\(noComponent.bodyText)")
            let badSeverity = try await Self.postJSON(collector, "/v1/incidents", #"{"component":"x","message":"x","severity":"meh"}"#)
            #expect(badSeverity.status == 400 && badSeverity.bodyText.contains("severity:"), "\(badSeverity.bodyText)")
            let badName = try await Self.postJSON(collector, "/v1/incidents", #"{"component":"a b","message":"x"}"#)
            #expect(badName.status == 400 && badName.bodyText.contains("component:"), "\(badName.bodyText)")
            // U+FFFF is not text (and not an XML character): it would make the Atom feed unreadable.
            let nonCharacter = try await Self.postJSON(collector, "/v1/incidents", #"{"component":"x","message":"a\uffffb"}"#)
            #expect(nonCharacter.status == 400 && nonCharacter.bodyText.contains("noncharacters"), "\(nonCharacter.bodyText)")
            // A right-to-left override would reverse what a feed reader shows around it; the marks
            // right-to-left writing needs (U+200F) are fine.
            let override = try await Self.postJSON(collector, "/v1/incidents", #"{"component":"x","message":"fixed \u202egnitaeh si ti"}"#)
            #expect(override.status == 400 && override.bodyText.contains("bidirectional"), "\(override.bodyText)")

            // Sonde measures nothing wrong with billing; only people move it.
            try await waitUntil("billing measured operational", timeout: .seconds(30), every: .milliseconds(200)) {
                for agent in Self.agents {
                    _ = try await agent.push(agent.batch([agent.result(probe: "invoices", component: "billing", startedAt: Date())]), to: collector)
                }
                let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
                return status.components.first { $0.component == "billing" }?.status == .operational
            }
            try await Self.evaluatedSince(Date(), collector, "billing")
            #expect(try decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)")).status == .investigating)
            // The person's declared impact is what readers of the page and its feeds see, as on
            // Statuspage, though every probe of billing passes.
            let declared = try await Self.pageStatus(collector, "billing")
            #expect(declared.indicator == "minor" && declared.component == "degraded_performance", "\(declared)")
            let monitoring = try await Self.sonde(["incidents", "update", incident.id, "--status", "monitoring", "--message", "Queue drained"], admin)
            #expect(monitoring.status == 0, "\(monitoring.output)")
            let watched = try await Self.pageStatus(collector, "billing")
            #expect(watched.indicator == "none" && watched.component == "operational", "monitoring: the measured status again: \(watched)")
            let listed = try await Self.sonde(["incidents"], admin)
            #expect(listed.output.contains("monitoring (ops): Queue drained"), "\(listed.output)")
            let done = try await Self.sonde(["incidents", "update", incident.id, "--status", "resolved", "--message", "All invoices sent"], admin)
            #expect(done.status == 0, "\(done.output)")
            let final = try decode(Incident.self, try await get(collector, "/v1/incidents/\(incident.id)"))
            #expect(final.status == .resolved && final.resolvedBy == "ops" && !final.awaitingRecovery && final.conflict == nil)
        }
    }

    @Test func aPersonsResolutionStandsAcrossARestart() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let config = testConfig(dir: dir, agents: Self.agents)
        let id: String = try await withCollector(config) { collector in
            var opened: Incident?
            try await waitUntil("an incident on login", timeout: .seconds(30), every: .milliseconds(200)) {
                try await Self.round(collector, .failed)
                opened = try await Self.openIncidents(collector).first { $0.component == "login" }
                return opened != nil
            }
            let id = try #require(opened).id
            let resolved = try await Self.postJSON(collector, "/v1/incidents/\(id)/updates", #"{"status":"resolved","message":"Fixed"}"#)
            #expect(resolved.status == 200, "\(resolved.bodyText)")
            return id
        }
        try await withCollector(config) { collector in
            try await waitUntil("the conflict after the restart", timeout: .seconds(30), every: .milliseconds(200)) {
                try await Self.round(collector, .failed)
                return try decode(Incident.self, try await get(collector, "/v1/incidents/\(id)")).conflict != nil
            }
            for _ in 0..<4 { try await Self.round(collector, .failed) }
            try await Self.evaluatedSince(Date(), collector, "login")
            #expect(try await Self.openIncidents(collector).isEmpty, "the stored resolution still stands after a restart")
            #expect(try decode(Incident.self, try await get(collector, "/v1/incidents/\(id)")).awaitingRecovery)
        }
    }

    // MARK: Helpers

    /// One result per agent for login, now.
    static func round(_ collector: RunningCollector, _ outcome: Outcome) async throws {
        for agent in agents {
            let response = try await agent.push(agent.batch([agent.result(outcome: outcome, startedAt: Date(), code: outcome == .failed ? "http_500" : nil)]), to: collector)
            #expect(response.status == 200, "\(response.bodyText)")
        }
    }

    /// Waits until an evaluation after `time` produced `component`'s verdict (so what was pushed
    /// before `time` has been judged).
    static func evaluatedSince(_ time: Date, _ collector: RunningCollector, _ component: String) async throws {
        try await waitUntil("an evaluation of \(component) after the pushes") {
            let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
            return (status.components.first { $0.component == component }?.updatedAt ?? .distantPast) > time
        }
    }

    /// summary.json's page indicator and one component's status in it (nil when not listed).
    static func pageStatus(_ collector: RunningCollector, _ component: String) async throws -> (indicator: String?, component: String?) {
        let summary = try await get(collector, "/api/v2/summary.json", token: TestTokens.read)
        let json = try #require(try JSONSerialization.jsonObject(with: summary.body) as? [String: Any])
        let indicator = (json["status"] as? [String: Any])?["indicator"] as? String
        let listed = (json["components"] as? [[String: Any]])?.first { $0["name"] as? String == component }
        return (indicator, listed?["status"] as? String)
    }

    static func openIncidents(_ collector: RunningCollector) async throws -> [Incident] {
        try decode(IncidentsResponse.self, try await get(collector, "/v1/incidents?status=open")).incidents
    }

    static func events(_ receiver: WebhookReceiver) throws -> [[String: Any]] {
        receiver.acknowledgedRequests.compactMap { try? JSONSerialization.jsonObject(with: $0.body) as? [String: Any] }
    }

    static func postJSON(_ collector: RunningCollector, _ path: String, _ body: String, token: String = TestTokens.admin) async throws -> HTTPResponse {
        try await CurlHTTPClient.shared.perform(
            HTTPRequest(
                method: "POST", url: collector.baseURL + path,
                headers: TestTokens.headers(token) + [HTTPHeader("Content-Type", "application/json")], body: Data(body.utf8), timeout: .seconds(15)))
    }

    static func sonde(_ arguments: [String], _ environment: [String: String]) async throws -> (status: Int32, output: String) {
        try await CLIExitStatusTests.run("sonde", arguments, environment)
    }
}
