@testable import Collector
import CollectorAPI
import CollectorStore
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// The red team's findings about what one enrolled agent can make others see: free text in
/// codes and names (F5, F8), control characters (F1), unbounded labels (F10, F11), labels that
/// evict the honest ones from an incident's alerts (F9).
@Suite("Security hardening", .serialized)
struct SecurityHardeningTests {
    /// Every text field of a result keeps `ResultText`'s rule at ingest: a push breaking it is
    /// refused with 400 `bad_field`, naming the result and the field; nothing is stored.
    @Test func agentTextIsBoundedAtIngest() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            let esc = "\u{1B}[2J\u{1B}]0;pwned\u{07}"
            let cases: [(field: String, change: (inout ProbeResult) -> Void)] = [
                ("error.code", { $0.error?.code = "DATA BREACH - reset passwords at evil.example/reset" }),
                ("error.code", { $0.error?.code = String(repeating: "a", count: 65) }),
                ("error.code", { $0.error?.code = "http_status\(esc)" }),
                ("error.message", { $0.error?.message = "All good \(esc)" }),
                ("error.message", { $0.error?.message = "line\rover" }),
                ("error.step", { $0.error?.step = "s1\u{1B}[31m" }),
                ("steps[0].name", { $0.steps[0].name = "login\u{9B}2J" }),
                ("component", { $0.component = "payments - card data was leaked, call 555-0100" }),
                ("component", { $0.component = String(repeating: "c", count: 65) }),
                ("probe", { $0.probe = "login check" }),
                ("steps[0].component", { $0.steps[0].component = "files, batch and payments" }),
                ("labels.team", { $0.labels = ["team": String(repeating: "x", count: 257)] }),
                ("labels.team", { $0.labels = ["team": "a\u{1B}b"] }),
                ("labels", { $0.labels = ["cost-center": "x"] }),
                ("labels", { $0.labels = ["__name__": "x"] }),
                ("labels", { $0.labels = ["probe": "spoof"] }),
                // Every label within bounds, together too many bytes for every series of the probe (N4).
                ("labels", { $0.labels = Dictionary(uniqueKeysWithValues: (0..<5).map { ("l\($0)", String(repeating: "v", count: 250)) }) }),
                // Numbers an agent cannot have measured (red team F15: 1e308 ms made the collector trap).
                ("duration_ms", { $0.durationMs = 1e308 }),
                ("duration_ms", { $0.durationMs = -1e308 }),
                ("steps[0].timings.ttfb", { $0.steps[0].timings.ttfb = 1e300 }),
                ("steps[0].status", { $0.steps[0].status = Int.max }),
                ("steps[0].attempts", { $0.steps[0].attempts = Int.max }),
                ("steps[0].cert_days_left", { $0.steps[0].certDaysLeft = 1e308 }),
                // Sizes (a 5 MB message would make a real incident's webhooks too large to deliver).
                ("error.message", { $0.error?.message = String(repeating: "m", count: 5_000_000) }),
                ("steps[0].url", { $0.steps[0].url = "https://x/" + String(repeating: "u", count: 20_000) }),
            ]
            for (field, change) in cases {
                var bad = agent.result(outcome: .failed, code: "server_error")
                change(&bad)
                let response = try await agent.push(agent.batch([agent.result(), bad]), to: collector)
                let body = try? decode(APIErrorBody.self, response)
                #expect(response.status == 400 && body?.error.code == "bad_field", "\(field): \(response.status) \(response.bodyText)")
                #expect(body?.error.message.hasPrefix("results[1].\(field) ") == true, "\(field): \(response.bodyText)")
                #expect(!response.bodyText.contains("\u{1B}") && !response.bodyText.contains("\\u001b"), "the refusal does not echo the escape")
            }
            #expect(try await collector.store.resultCount() == 0)

            // What the agent itself produces passes: codes like its failure_codes', identifiers
            // with the allowed punctuation, labels within the loader's bounds, lines in messages.
            var good = agent.result(probe: "sim/login:v2.1", component: "files-eu_2.a", outcome: .failed, code: "file_expired")
            good.error?.message = "HTTP 500\nbody: {\"error\":\"expired\"}\twith a tab"
            good.labels = ["team": "storage", "severity_route": "pager", "tier": String(repeating: "1", count: 256)]
            for code in ["http_status", "server_error", "file_expired", "NXDOMAIN", "x.y:z-1", String(repeating: "c", count: 64)] {
                good.error?.code = code
                good.id = UUID().uuidString
                let response = try await agent.push(agent.batch([good]), to: collector)
                #expect(response.status == 200, "\(code): \(response.bodyText)")
            }
        }
    }

    /// One agent cannot add results faster than `limits.results_per_minute`, whatever its batch
    /// sizes: past it a 429 with Retry-After, nothing of that batch stored (red team F4: 10,000-
    /// result batches within the push rate grew the database by 12 MB/s); other agents unaffected.
    @Test func oneAgentsResultVolumeIsBounded() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let flooder = TestAgent(id: "eu-1", region: "eu")
        let other = TestAgent(id: "us-1", region: "us")
        var config = testConfig(dir: dir, agents: [flooder, other])
        config.limits.resultsPerMinute = 100
        config.maxResultsPerBatch = 100  // the burst is at least one whole batch
        try await withCollector(config) { collector in
            func results(_ agent: TestAgent, _ n: Int) -> [ProbeResult] {
                (0..<n).map { i in agent.result(startedAt: Date().addingTimeInterval(-Double(i) / 10)) }
            }
            #expect(try await flooder.push(flooder.batch(results(flooder, 80)), to: collector).status == 200)
            let refused = try await flooder.push(flooder.batch(results(flooder, 80)), to: collector)
            #expect(refused.status == 429 && refused.bodyText.contains("results_per_minute"), "\(refused.status) \(refused.bodyText)")
            let wait = Int(refused.headers.value(for: "Retry-After") ?? "") ?? 0
            #expect(wait >= 30 && wait <= 60, "60 of 100 a minute are due: \(wait) s")
            #expect(try await collector.store.resultCount() == 80)
            #expect(try await other.push(other.batch(results(other, 80)), to: collector).status == 200, "another agent has its own allowance")
        }
    }

    /// One agent failing with 32 labels of its own, and `team=nobody`, does not strip or alter
    /// the honest agents' `team`/`severity_route` on the incident's webhooks (F9).
    @Test func oneAgentCannotEvictOrAlterAnIncidentsLabels() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.stop() }
        receiver.set(.up)
        let honest = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"), TestAgent(id: "us-1", region: "us")]
        let liar = TestAgent(id: "eu-3", region: "eu")
        var config = testConfig(dir: dir, agents: honest + [liar], webhooks: [WebhookTarget(name: "hook", url: receiver.url, format: .json)])
        config.components = ["files"]
        let honestLabels = ["team": "storage", "severity_route": "pager"]
        var liarLabels = Dictionary(uniqueKeysWithValues: (0..<31).map { (String(format: "a%02d", $0), "x") })
        liarLabels["team"] = "nobody"
        try await withCollector(config) { collector in
            func incidentEvents() -> [[String: Any]] { receiver.events.filter { ($0["type"] as? String)?.hasPrefix("incident.") == true } }
            try await waitUntil("an incident event after the liar joined", timeout: .seconds(60)) {
                var bad = liar.result(probe: "files-check", component: "files", outcome: .failed, startedAt: Date(), code: "file_expired")
                bad.labels = liarLabels
                let accepted = try await liar.push(liar.batch([bad]), to: collector).status
                #expect(accepted == 200)
                for agent in honest {
                    var run = agent.result(probe: "files-check", component: "files", outcome: .failed, startedAt: Date(), code: "file_expired")
                    run.labels = honestLabels
                    let status = try await agent.push(agent.batch([run]), to: collector).status
                    #expect(status == 200)
                }
                return !incidentEvents().isEmpty
            }
            for event in incidentEvents() {
                #expect(event["labels"] as? [String: String] == honestLabels, "\(event["type"] ?? "?"): \(event["labels"] ?? "none")")
            }
        }
    }

    /// Of two agents, one alone adds no label name (a `route` a null receiver could match) and
    /// turns a value it disagrees on into a visible conflict, matching neither route.
    @Test func oneOfTwoAgentsAddsNoLabel() {
        let metrics = CollectorMetrics()
        let honest = TestAgent(id: "eu-1", region: "eu"), liar = TestAgent(id: "us-1", region: "us")
        var run = honest.result(probe: "files-check", component: "files", outcome: .failed, code: "file_expired")
        run.labels = ["team": "storage", "tier": "1"]
        var bad = liar.result(probe: "files-check", component: "files", outcome: .failed, code: "file_expired")
        bad.labels = ["team": "nobody", "tier": "1", "route": "blackhole"]
        metrics.record([run, bad])
        #expect(metrics.probeLabels(component: "files", now: Date()) == ["team": "nobody,storage", "tier": "1"])
        // One agent alone: its labels are the component's.
        let alone = CollectorMetrics()
        alone.record([run])
        #expect(alone.probeLabels(component: "files", now: Date()) == ["team": "storage", "tier": "1"])
    }

    /// `sonde results` shows control characters in stored text as `cat -v` does (a result stored
    /// before ingest refused them): no ESC reaches the terminal, the rest of the row stays.
    @Test func cliShowsControlCharactersVisibly() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            var result = agent.result(outcome: .failed, code: "http_status")
            result.error?.message = "\u{1B}[2J\u{1B}[HAll good \u{1B}[8mHIDDEN\u{1B}[0m\u{9B}31m"
            result.error?.step = "s1\u{1B}]0;pwned-title\u{07}"
            let batch = agent.batch([result])
            let body = try SondeJSON.encode(batch)
            _ = try await collector.store.ingest(
                batch: BatchRecord(batchID: batch.batchID, agent: agent.id, receivedAt: Date(), body: body, signature: try agent.key.signatureHeader(for: body)),
                results: batch.results)
            let output = try await CLIExitStatusTests.sonde(
                ["results", "--limit", "5"], ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.read])
            #expect(output.status == 0, "\(output.output)")
            #expect(!output.output.contains("\u{1B}") && !output.output.contains("\u{07}") && !output.output.contains("\u{9B}"), "\(output.output)")
            #expect(output.output.contains("at s1^[]0;pwned-title^G: ^[[2J^[[HAll good ^[[8mHIDDEN^[[0mM-^[31m"), "\(output.output)")
        }
    }

    /// Browser-facing headers (integrations review, 33rd session, F7): no sniffing anywhere;
    /// the internal page is never framed nor sent with a referrer; an error (a 401 for the
    /// internal page) is never cached, not `public, max-age=10`; the public page stays
    /// frameable and cacheable.
    @Test func pagesCarryBrowserSecurityHeaders() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var config = testConfig(dir: dir, agents: [])
        config.statusPagePublic = true
        try await withCollector(config) { collector in
            func header(_ response: HTTPResponse, _ name: String) -> String? { response.headers.value(for: name) }
            let refused = try await get(collector, "/internal", token: nil)
            #expect(refused.status == 401)
            #expect(header(refused, "Cache-Control") == "no-store")
            #expect(header(refused, "X-Content-Type-Options") == "nosniff")
            let operators = try await get(collector, "/internal", token: TestTokens.read)
            #expect(operators.status == 200)
            #expect(header(operators, "X-Frame-Options") == "DENY")
            #expect(header(operators, "Content-Security-Policy") == "frame-ancestors 'none'")
            #expect(header(operators, "Referrer-Policy") == "no-referrer")
            #expect(header(operators, "Cache-Control") == "private, no-cache")
            let page = try await get(collector, "/", token: nil)
            #expect(page.status == 200)
            #expect(header(page, "X-Content-Type-Options") == "nosniff")
            #expect(header(page, "X-Frame-Options") == nil)
            #expect(header(page, "Cache-Control") == "public, max-age=10")
        }
    }
}
