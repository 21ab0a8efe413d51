import Collector
import CollectorAPI
import CollectorStore
import Correlation
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@Suite("API and CLI")
struct APITests {
    /// Runs the real `sonde` executable against the collector.
    func sonde(_ collector: RunningCollector, _ arguments: [String]) async throws -> (status: Int32, stdout: String, output: String) {
        let process = try ChildProcess("sonde", arguments, environment: ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.admin])
        let status = try await process.waitForExit(timeout: .seconds(30))
        // Let the pipes drain (bounded): output can trail the exit slightly.
        try? await waitUntil("sonde output", timeout: .seconds(2)) { !process.allOutput.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
        return (status, process.stdoutLines.joined(separator: "\n"), process.allOutput)
    }

    @Test func cliStatusAgentsAndVerify() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        try await withCollector(testConfig(dir: dir, agents: [eu, us])) { collector in
            for agent in [eu, us] {
                for i in 0..<3 {
                    let response = try await agent.push(agent.batch([agent.result(startedAt: Date().addingTimeInterval(Double(i - 3)))]), to: collector)
                    #expect(response.status == 200)
                }
            }
            // Both agents' runs evaluated (under load the first evaluation may hold one region only).
            try await waitUntil("a verdict for login from both regions") {
                let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
                return status.components.contains { $0.component == "login" && $0.status == .operational && $0.regions.count == 2 }
            }

            let status = try await sonde(collector, ["status", "--json"])
            #expect(status.status == 0, "\(status.output)")
            let parsed = try SondeJSON.decode(StatusResponse.self, from: Data(status.stdout.utf8))
            #expect(parsed.components.first { $0.component == "login" }?.regions == ["eu": .operational, "us": .operational])

            let table = try await sonde(collector, ["status"])
            #expect(table.status == 0, "\(table.output)")
            #expect(table.stdout.contains("login"))
            #expect(table.stdout.contains("operational"))
            #expect(!table.stdout.contains("\u{1B}["), "no ANSI colours when stdout is not a terminal")

            let agents = try await sonde(collector, ["agents"])
            #expect(agents.status == 0, "\(agents.output)")
            #expect(agents.stdout.contains("eu-1") && agents.stdout.contains("us-1"))

            let results = try await sonde(collector, ["results", "--agent", "us-1", "--since", "10m", "--json"])
            #expect(results.status == 0, "\(results.output)")
            #expect(try SondeJSON.decode(ResultsResponse.self, from: Data(results.stdout.utf8)).results.count == 3)

            let verify = try await sonde(collector, ["verify"])
            #expect(verify.status == 0, "\(verify.output)")
            #expect(verify.stdout.contains("6 batches checked: 6 verified, 0 failed"))

            // Tamper with one stored body: verify must notice and exit 1.
            let sqlite = try #require(collector.store as? SQLiteCollectorStore)
            try await sqlite.executeForTesting(
                "UPDATE batches SET body = CAST(replace(CAST(body AS TEXT), 'platform.example', 'platform.evil') AS BLOB) WHERE rowid = (SELECT MIN(rowid) FROM batches)"
            )
            let tampered = try await sonde(collector, ["verify"])
            #expect(tampered.status == 1, "\(tampered.output)")
            #expect(tampered.stdout.contains("MISMATCH"))
            #expect(tampered.stdout.contains("5 verified, 1 failed"))
        }
    }

    @Test func cliSaysWhenTheCollectorIsUnreachable() async throws {
        // A port that was free a moment ago: nothing listens there.
        let server = try LoopbackHTTPServer { _ in .drop }
        let url = server.baseURL
        server.stop()
        let process = try ChildProcess("sonde", ["status", "--collector", url])
        let status = try await process.waitForExit(timeout: .seconds(30))
        try? await waitUntil("stderr", timeout: .seconds(2)) { !process.stderrLines.isEmpty }
        #expect(status == 2)
        #expect(process.allOutput.contains("cannot reach the collector at \(url)"))
    }

    @Test func metricsAndStatusPage() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.components = ["files"]  // one agent: only a declared component shows in sonde_component_status
        try await withCollector(config) { collector in
            // A component name that is markup never gets in (400 bad_field, ResultText); the page
            // escapes whatever text it shows anyway (SecurityTests: a person's incident text).
            let hostile = "<script>alert('x')</script>"
            let refused = try await agent.push(agent.batch([agent.result(probe: "login", component: hostile)]), to: collector)
            #expect(refused.status == 400 && refused.bodyText.contains("results[0].component"), "\(refused.bodyText)")
            let response = try await agent.push(agent.batch([agent.result(probe: "login", component: "login"), agent.result(probe: "upload", component: "files", outcome: .failed)]), to: collector)
            #expect(response.status == 200)

            let metrics = try await get(collector, "/metrics")
            #expect(metrics.status == 200)
            #expect(metrics.headers.value(for: "Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
            let text = metrics.bodyText
            #expect(text.contains(#"probe_success{probe="upload",component="files",agent="eu-1",region="eu"} 0"#))
            #expect(text.contains(#"probe_duration_seconds{probe="upload",component="files",agent="eu-1",region="eu"} 0.12"#))
            #expect(text.contains(#"probe_http_duration_seconds{probe="upload",component="files",agent="eu-1",region="eu",phase="processing"} 0.1"#))
            #expect(text.contains(#"sonde_ingest_batches_total{result="accepted"} 1"#))
            #expect(text.contains("sonde_ingest_results_total 2"))
            #expect(text.contains("sonde_incidents_open 0"))
            #expect(text.contains("# TYPE probe_success gauge"))

            try await waitUntil("a verdict for files") {
                try decode(StatusResponse.self, try await get(collector, "/v1/status")).components.contains { $0.component == "files" }
            }
            #expect(try await get(collector, "/metrics").bodyText.contains(#"sonde_component_status{component="files",status="#))

            let page = try await get(collector, "/internal")
            #expect(page.status == 200)
            #expect(page.headers.value(for: "Content-Type")?.hasPrefix("text/html") == true)
            let html = page.bodyText
            #expect(html.contains("<!DOCTYPE html>"))
            #expect(html.contains("Sonde status"))
            #expect(html.contains("files"))
            #expect(html.contains("eu-1"))
            #expect(!html.contains(hostile) && !html.contains("alert("))
            #expect(html.components(separatedBy: "<script").count == 2, "no JavaScript on the page but the inline time script")
        }
    }

    /// Failing results from agents in two regions: a platform incident opens, the verdict says so
    /// and the `incident.opened` webhook arrives, signed.
    @Test func platformOutageOpensIncidentAndWebhook() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.server.stop() }
        receiver.set(.up)
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"), TestAgent(id: "us-1", region: "us"), TestAgent(id: "us-2", region: "us")]
        let config = testConfig(dir: dir, agents: agents, webhooks: [WebhookTarget(name: "ops", url: receiver.url, secret: "k", events: ["incident.opened"])])
        try await withCollector(config) { collector in
            var started = Date().addingTimeInterval(-60)
            // One failing run per agent each round, until the incident's webhook arrives (bounded by the wait).
            try await waitUntil("incident.opened webhook", timeout: .seconds(20), every: .milliseconds(150)) {
                started = started.addingTimeInterval(1)
                for agent in agents {
                    let response = try await agent.push(
                        agent.batch([agent.result(probe: "upload", component: "files", outcome: .failed, startedAt: started, code: "file_expired")]), to: collector)
                    #expect(response.status == 200)
                }
                return receiver.acknowledgedRequests.contains { request in
                    (try? JSONSerialization.jsonObject(with: request.body) as? [String: Any])?["type"] as? String == "incident.opened"
                }
            }
            // The first evaluations may see only one region's failures yet; keep the rounds coming
            // until the verdict and the incident cover both regions (incident.updated, not sent here).
            var status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
            try await waitUntil("a platform-wide incident", timeout: .seconds(20), every: .milliseconds(150)) {
                started = started.addingTimeInterval(1)
                for agent in agents {
                    let response = try await agent.push(
                        agent.batch([agent.result(probe: "upload", component: "files", outcome: .failed, startedAt: started, code: "file_expired")]), to: collector)
                    #expect(response.status == 200)
                }
                status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
                return status.openIncidents.first?.scope == .platform
            }
            let files = try #require(status.components.first { $0.component == "files" })
            #expect(files.status == .majorOutage)
            #expect(files.scope == .platform)
            #expect(files.regions == ["eu": .majorOutage, "us": .majorOutage])
            #expect(files.evidence.errorCodes["file_expired"] != nil)
            let incident = try #require(status.openIncidents.first)
            #expect(incident.component == "files")
            #expect(incident.regions == ["eu", "us"])

            let request = try #require(receiver.acknowledgedRequests.first)
            #expect(WebhookSignature.verify(header: request.signature, body: request.body, secret: "k"))
            let event = try SondeJSON.decode(AlertEvent.self, from: request.body)
            #expect(event.type == .incidentOpened)
            #expect(event.incident?.id == incident.id)
            #expect(!event.regions.isEmpty && Set(event.regions).isSubset(of: ["eu", "us"]))
            let object = try #require(try JSONSerialization.jsonObject(with: request.body) as? [String: Any])
            #expect((object["link"] as? String)?.hasSuffix("/incidents/\(incident.id)") == true)

            // The incident is stored and served.
            let stored = try await get(collector, "/v1/incidents/\(incident.id)")
            #expect(stored.status == 200)
            #expect(try decode(Incident.self, stored).component == "files")
            #expect(try decode(IncidentsResponse.self, try await get(collector, "/v1/incidents?status=open")).incidents.count == 1)
            #expect(try await get(collector, "/v1/incidents/nope").status == 404)
        }
        // Only incident.opened was asked for: nothing else went to this target.
        #expect(receiver.acknowledgedRequests.count == 1)
    }
}
