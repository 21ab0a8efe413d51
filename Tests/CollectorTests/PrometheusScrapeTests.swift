import Collector
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// A real Prometheus (Debian's `prometheus`) scrapes a real collector; the series are read back
/// through Prometheus's HTTP API, as a dashboard or an alert rule would: they parse, carry the
/// expected labels, and a stopped agent's probe series go stale instead of repeating success.
@Suite(.serialized)
struct PrometheusScrapeTests {
    @Test func prometheusScrapesAndSeesAStoppedAgentGoStale() async throws {
        let prometheusBinary = "/usr/bin/prometheus"
        guard FileManager.default.isExecutableFile(atPath: prometheusBinary) else {
            throw TestFailure("prometheus is not installed: `apt-get install prometheus` (scripts/install-deps.sh installs it)")
        }
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        try await withCollector(fastSilenceConfig(dir: dir, agents: [eu, us])) { collector in
            let port = try freeLoopbackPort()
            try """
                global: {scrape_interval: 1s, evaluation_interval: 1s}
                scrape_configs:
                  - job_name: sonde
                    authorization: {credentials: \(TestTokens.read)}
                    static_configs: [{targets: ["127.0.0.1:\(collector.port)"]}]
                """.write(toFile: dir.file("prometheus.yml"), atomically: true, encoding: .utf8)
            let prometheus = try ChildProcess(
                prometheusBinary,
                ["--config.file=\(dir.file("prometheus.yml"))", "--storage.tsdb.path=\(dir.file("tsdb"))",
                 "--web.listen-address=127.0.0.1:\(port)", "--log.level=warn"])
            defer { prometheus.signal(SIGKILL) }
            let api = "http://127.0.0.1:\(port)/api/v1/query"

            func query(_ expression: String) async throws -> [[String: Any]] {
                var allowed = CharacterSet.alphanumerics
                allowed.insert(charactersIn: "-._~")
                let url = "\(api)?query=\(expression.addingPercentEncoding(withAllowedCharacters: allowed) ?? expression)"
                // Not listening yet (starting) reads as no result, so the waits below keep polling.
                guard let response = try? await CurlHTTPClient.shared.perform(HTTPRequest(url: url, timeout: .seconds(10))),
                      response.status == 200, let json = try JSONSerialization.jsonObject(with: Data(response.body)) as? [String: Any],
                      json["status"] as? String == "success", let data = json["data"] as? [String: Any]
                else { return [] }
                return data["result"] as? [[String: Any]] ?? []
            }
            func value(_ sample: [String: Any]) -> String? { (sample["value"] as? [Any])?.last as? String }

            // Both agents push every 500 ms until Prometheus has scraped their series.
            try await waitUntil("Prometheus to scrape both agents' probe_success", timeout: .seconds(60)) {
                for agent in [eu, us] { _ = try await agent.push(agent.batch([agent.result(startedAt: Date())]), to: collector) }
                return try await query("probe_success").count == 2
            }
            #expect(try await query(#"up{job="sonde"}"#).first.flatMap(value) == "1", "the scrape itself succeeds")
            let phases = try await query(#"probe_http_duration_seconds{agent="eu-1"}"#).compactMap { ($0["metric"] as? [String: String])?["phase"] }
            #expect(Set(phases) == ["resolve", "connect", "tls", "processing", "transfer"])
            #expect(try await query("sonde_build_info").count == 1)
            #expect(try await query("process_resident_memory_bytes").first.flatMap(value).flatMap(Double.init) ?? 0 > 1_000_000)

            // us-1 stops. Its probe_success must go (stale), not stay 1; sonde_agent_up says 0.
            try await waitUntil("us-1's probe_success to go stale in Prometheus", timeout: .seconds(60)) {
                _ = try await eu.push(eu.batch([eu.result(startedAt: Date())]), to: collector)
                let success = try await query("probe_success")
                let up = try await query(#"sonde_agent_up{agent="us-1"}"#)
                return success.count == 1 && up.first.flatMap(value) == "0"
            }
            let remaining = try await query("probe_success").compactMap { ($0["metric"] as? [String: String])?["agent"] }
            #expect(remaining == ["eu-1"])
        }
    }
}
