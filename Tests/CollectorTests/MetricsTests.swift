@testable import Collector
import CollectorAPI
import CurlHTTP
import Correlation
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// `/metrics` tells the truth about what it describes: blackbox_exporter's phase names, degraded
/// visible, a silent agent's probe series gone (and `sonde_agent_up` 0), component status with
/// region and scope, process and build-info series, shortest decimal values.
@Suite(.serialized)
struct MetricsTests {
    /// Journeys that stop at a failing login step: `/metrics`, `/v1/status` and the page show
    /// them in login's outage, affected by login, and only login has an incident (its page
    /// is the only one `SondeComponentOutage` sends: deploy/prometheus/sonde-rules.test.yml).
    @Test func journeysStoppedAtALoginStepShowLoginsOutageAsAffected() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "us-1", region: "us")]
        var config = testConfig(dir: dir, agents: agents)
        config.components = ["login", "files"]
        try await withCollector(config) { collector in
            func journey(_ agent: TestAgent, at: Date, loginOK: Bool) -> ProbeResult {
                var result = agent.result(probe: "files-journey", component: "files", outcome: loginOK ? .ok : .failed, startedAt: at)
                result.steps[0].component = "login"
                if loginOK {
                    result.steps.append(StepResult(name: "upload", method: "POST", url: "https://platform.example/files", status: 201, ok: true, timings: .zero))
                }
                return result
            }
            for i in 0..<12 {
                let at = Date().addingTimeInterval(Double(i - 12))
                for agent in agents {
                    #expect(try await agent.push(agent.batch([journey(agent, at: at, loginOK: i < 6)]), to: collector).status == 200)
                }
            }
            try await waitUntil("files shown affected by login on /metrics") {
                try await get(collector, "/metrics").bodyText.contains(#"sonde_component_affected_by{component="files",cause="login"} 1"#)
            }
            let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
            let verdicts = Dictionary(uniqueKeysWithValues: status.components.map { ($0.component, $0) })
            #expect(verdicts["login"]?.status == .majorOutage && verdicts["login"]?.incidentID != nil)
            #expect(verdicts["files"]?.status == .majorOutage && verdicts["files"]?.evidence.affectedBy == ["login"])
            #expect(verdicts["files"]?.incidentID == nil, "the incident is login's")
            let metrics = try await get(collector, "/metrics").bodyText
            #expect(metrics.contains(#"sonde_component_status{component="files",status="major_outage"} 1"#), "\(metrics)")
            #expect(metrics.contains(#"sonde_component_scope{component="files",scope="platform"} 1"#) && metrics.contains(#"sonde_component_scope{component="files",scope="region"} 0"#))
            #expect(!metrics.contains(#"sonde_component_affected_by{component="login""#))
            let page = try await get(collector, "/").bodyText
            #expect(page.contains("affected by login"), "the page says why files is down")
        }
    }

    @Test func seriesFollowTheAgentsAndSayWhatHappened() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        try await withCollector(fastSilenceConfig(dir: dir, agents: [eu, us])) { collector in
            for i in 0..<3 {
                let at = Date().addingTimeInterval(Double(i - 3))
                #expect(try await eu.push(eu.batch([eu.result(startedAt: at, durationMs: 3.452)]), to: collector).status == 200)
                #expect(try await us.push(us.batch([us.result(outcome: .degraded, startedAt: at)]), to: collector).status == 200)
            }
            try await waitUntil("both agents reporting") {
                let text = try await get(collector, "/metrics").bodyText
                return text.contains(#"sonde_agent_up{agent="eu-1",region="eu"} 1"#) && text.contains(#"sonde_agent_up{agent="us-1",region="us"} 1"#)
            }
            let text = try await get(collector, "/metrics").bodyText
            // HEAD as the pages answer it (a monitor's liveness check of the endpoint).
            let head = try await CurlHTTPClient.shared.perform(
                HTTPRequest(method: "HEAD", url: collector.baseURL + "/metrics", headers: TestTokens.headers(TestTokens.read), timeout: .seconds(10)))
            #expect(head.status == 200 && head.body.isEmpty, "\(head.status)")
            let eu1 = #"{probe="login",component="login",agent="eu-1",region="eu""#
            let us1 = #"{probe="login",component="login",agent="us-1",region="us""#
            #expect(text.contains("probe_success\(eu1)} 1"))
            #expect(text.contains("probe_degraded\(eu1)} 0"))
            #expect(text.contains("probe_success\(us1)} 1"), "degraded still succeeded")
            #expect(text.contains("probe_degraded\(us1)} 1"), "degraded is visible")
            #expect(text.contains("probe_duration_seconds\(eu1)} 0.003452"), "shortest decimal, not 0.0034519999999999998")
            for phase in ["resolve", "connect", "tls", "processing", "transfer"] {
                #expect(text.contains("probe_http_duration_seconds\(eu1),phase=\"\(phase)\"}"), "blackbox phase \(phase)")
            }
            #expect(!text.contains(#"phase="ttfb""#) && !text.contains(#"phase="dns""#))
            #expect(text.contains("probe_dns_lookup_time_seconds\(eu1)} 0.001"), "blackbox's DNS series")
            #expect(text.contains("probe_http_ssl\(eu1)} 1"), "its last HTTP step was https")
            #expect(text.contains("probe_last_run_timestamp_seconds\(eu1)} "))
            #expect(text.contains(#"sonde_build_info{version=""# ))
            for series in ["process_cpu_seconds_total ", "process_resident_memory_bytes ", "process_start_time_seconds ", "process_open_fds ", "process_max_fds "] {
                #expect(text.contains("\n" + series), "\(series)missing")
            }
            #expect(text.contains(#"sonde_component_status{component="login",status=""#) && text.contains(#"sonde_component_scope{component="login",scope=""#))
            #expect(text.contains("probe_http_status_code\(eu1)} 200"))

            // A run that got no response at all (refused): status code 0, as blackbox_exporter says.
            var refused = eu.result(probe: "edge", component: "edge", outcome: .failed)
            refused.steps[0].status = nil
            refused.error = ProbeError(kind: .connect, step: "login", message: "connection refused")
            #expect(try await eu.push(eu.batch([refused]), to: collector).status == 200)
            try await waitUntil("the refused run's status code") {
                try await get(collector, "/metrics").bodyText.contains(#"probe_http_status_code{probe="edge",component="edge",agent="eu-1",region="eu"} 0"#)
            }
            #expect(text.contains(#"sonde_component_region_status{component="login",region="eu",status="operational"} 1"#))

            // eu-1 keeps reporting, us-1 stops: its series go, and it is down.
            try await waitUntil("us-1 silent and its series gone", timeout: .seconds(30)) {
                _ = try await eu.push(eu.batch([eu.result(startedAt: Date())]), to: collector)
                let text = try await get(collector, "/metrics").bodyText
                return text.contains(#"sonde_agent_up{agent="us-1",region="us"} 0"#) && !text.contains("probe_success\(us1)")
            }
            let after = try await get(collector, "/metrics").bodyText
            #expect(after.contains("probe_success\(eu1)} 1"))
            #expect(after.contains(#"sonde_agent_up{agent="eu-1",region="eu"} 1"#))
            #expect(!after.contains("probe_degraded\(us1)"))
        }
    }

    /// An agent's first push after start-up (or after a silence) shows at once: the latest
    /// evaluation called it silent before that push arrived, so it no longer knows better.
    /// Runs that arrived before that evaluation stay hidden; a revoked agent's stay hidden always.
    @Test func aSilentAgentsRunShowsWhenNewerThanTheEvaluation() {
        let evaluatedAt = Date(timeIntervalSince1970: 1_000_000)
        let agents = ["silent-new", "silent-old", "revoked", "ok"].map { id in
            AgentHealth(
                agent: id, region: "eu", state: id.hasPrefix("silent") ? .silent : id == "revoked" ? .revoked : .ok, since: evaluatedAt)
        }
        func run(_ agent: String, receivedAt: TimeInterval) -> CollectorMetrics.LatestRun {
            CollectorMetrics.LatestRun(
                result: TestAgent(id: agent, region: "eu").result(), receivedAt: evaluatedAt.addingTimeInterval(receivedAt), interval: nil)
        }
        let runs = [
            run("silent-new", receivedAt: 0.2), run("silent-old", receivedAt: -5), run("revoked", receivedAt: 0.2), run("ok", receivedAt: -5),
            run("not-yet-known", receivedAt: -5),
        ]
        let shown = MetricsRenderer.visibleRuns(runs, agents: agents, agentsAt: evaluatedAt).map(\.agent)
        #expect(shown == ["silent-new", "ok", "not-yet-known"])
    }

    /// A probe's interval (how long its series stays in /metrics, and on the status page) comes
    /// from its regular runs: retries after a failure come 4 times as often and would make a
    /// 60 s probe look stale 45 s after its last retry.
    @Test func retriesDoNotShortenAProbesInterval() throws {
        let metrics = CollectorMetrics()
        let agent = TestAgent(id: "eu-1", region: "eu")
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        func run(_ at: TimeInterval, retry: Bool = false, outcome: Outcome = .ok) -> ProbeResult {
            var result = agent.result(outcome: outcome, startedAt: t0.addingTimeInterval(at))
            if retry { result.retry = true }
            return result
        }
        metrics.record([run(0), run(60, outcome: .failed), run(75, retry: true), run(90, retry: true), run(105, retry: true)], receivedAt: t0.addingTimeInterval(106))
        var latest = try #require(metrics.latestRuns(now: t0.addingTimeInterval(106)).first)
        #expect(latest.interval == 60)
        #expect(latest.staleAfter == 180)
        metrics.record([run(120)], receivedAt: t0.addingTimeInterval(121))
        latest = try #require(metrics.latestRuns(now: t0.addingTimeInterval(121)).first)
        #expect(latest.interval == 60)
        #expect(metrics.latestRuns(now: t0.addingTimeInterval(121 + 170)).count == 1, "not stale between regular runs")
    }

    /// A probe's labels change its Prometheus series at most once per `labelChangeInterval`: an
    /// agent sending new label values on every run made a new series per run, for ever (red team,
    /// fifth pass). A real `labels:` edit shows at once, the next one within the interval.
    @Test func labelValuesChangeTheSeriesAtMostOnceInTenMinutes() throws {
        let metrics = CollectorMetrics()
        let agent = TestAgent(id: "eu-1", region: "eu")
        let t0 = Date(timeIntervalSince1970: 1_000_000)
        func record(_ at: TimeInterval, build: String) {
            var result = agent.result(startedAt: t0.addingTimeInterval(at))
            result.labels = ["build": build]
            metrics.record([result], receivedAt: t0.addingTimeInterval(at + 0.1))
        }
        func shown(_ at: TimeInterval) -> String? { metrics.latestRuns(now: t0.addingTimeInterval(at + 0.2)).first?.result.labels?["build"] }
        record(0, build: "a")
        #expect(shown(0) == "a")
        record(10, build: "b")
        #expect(shown(10) == "b", "a first change shows at once")
        var seen: Set<String> = []
        for i in 1...50 {
            record(10 + Double(i), build: "churn-\(i)")
            seen.insert(shown(10 + Double(i)) ?? "-")
        }
        #expect(seen == ["b"], "\(seen)")
        // Paused past staleness and back: still within the interval of the last change.
        record(400, build: "c")
        #expect(shown(400) == "b")
        record(10 + CollectorMetrics.labelChangeInterval + 1, build: "d")
        #expect(shown(10 + CollectorMetrics.labelChangeInterval + 1) == "d")
        let text = MetricsRenderer.render(
            runs: metrics.latestRuns(now: t0.addingTimeInterval(612)), agents: [], agentsAt: t0, counters: metrics.snapshot, verdicts: [],
            openIncidents: 0, deadLetters: 0)
        #expect(text.contains("build=\"d\""))
        #expect(!text.contains("churn"))
    }

    /// One agent, no `components:`: a component that fails everywhere is not known, so it opens no
    /// incident and has no status series. The log says so, once while it lasts, with the fix.
    @Test func anUnknownComponentThatFailsIsNamedInTheLogOnce() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let logs = CapturedLogs()
        var config = testConfig(dir: dir, agents: [eu])
        config.components = []
        try await withCollector(config, logger: logs.logger("collector", level: .info)) { collector in
            try await waitUntil("the warning for web", timeout: .seconds(20)) {
                _ = try await eu.push(eu.batch([eu.result(probe: "web", component: "web", outcome: .failed)]), to: collector)
                return !logs.messages(at: .warning, containing: "opens no incident").isEmpty
            }
            // More failures and evaluations: still the one warning.
            let evaluated = await collector.built.hub.evaluations
            try await waitUntil("five more evaluations of failures", timeout: .seconds(20)) {
                _ = try await eu.push(eu.batch([eu.result(probe: "web", component: "web", outcome: .failed)]), to: collector)
                return await collector.built.hub.evaluations >= evaluated + 5
            }
            let warnings = logs.messages(at: .warning, containing: "opens no incident")
            #expect(warnings.count == 1, "\(warnings.map(\.message))")
            #expect(warnings.first?.metadata["component"] == "web")
            let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
            #expect(status.openIncidents.isEmpty)
        }
    }
}
