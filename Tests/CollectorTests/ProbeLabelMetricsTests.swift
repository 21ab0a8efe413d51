import Collector
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// A probe's labels and its certificates' expiry, pushed by an agent, in `/metrics` as
/// blackbox_exporter users expect them.
@Suite("Probe labels and certificate expiry in /metrics")
struct ProbeLabelMetricsTests {
    @Test("labels become Prometheus labels (bad names refused at ingest, our own names first); probe_ssl_earliest_cert_expiry is the chain's earliest notAfter")
    func labelsAndExpiry() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            var result = agent.result(probe: "edge", component: "api")
            // Names Prometheus would reject, or that clash with ours, are refused at ingest
            // (ResultText, the probe loader's rule), naming the field.
            for (name, value) in [("cost-center", "x"), ("probe", "spoof"), ("9x", "n"), ("__name__", "n")] {
                result.labels = ["team": "storage", name: value]
                let refused = try await agent.push(agent.batch([result]), to: collector)
                #expect(refused.status == 400 && refused.bodyText.contains("results[0].labels"), "\(name): \(refused.bodyText)")
            }
            // A quote in a value is escaped in the exposition.
            result.labels = ["team": "storage", "tier": "1", "cost_center": "x\"y"]
            result.steps[0].certNotAfter = Date(timeIntervalSince1970: 1_900_000_000)
            var second = result.steps[0]
            second.name = "api"
            second.certNotAfter = Date(timeIntervalSince1970: 1_850_000_000.5)
            result.steps.append(second)
            let plain = agent.result(probe: "plain", component: "api")
            let response = try await agent.push(agent.batch([result, plain]), to: collector)
            #expect(response.status == 200, "\(response.bodyText)")

            // Probe series appear once the engine has seen the agent report (its first evaluation).
            try await waitUntil("the agent's probe series") { try await get(collector, "/metrics").bodyText.contains(#"probe_success{probe="plain""#) }
            let text = try await get(collector, "/metrics").bodyText
            let labels = #"probe="edge",component="api",agent="eu-1",region="eu",cost_center="x\"y",team="storage",tier="1""#
            #expect(text.contains("probe_success{\(labels)} 1"), "\(text)")
            #expect(text.contains("# TYPE probe_ssl_earliest_cert_expiry gauge"))
            #expect(text.contains("probe_ssl_earliest_cert_expiry{\(labels)} 1850000000"), "\(text)")
            // A probe without TLS steps has no expiry series; one without labels has only ours.
            #expect(!text.contains(#"probe_ssl_earliest_cert_expiry{probe="plain""#))
            #expect(text.contains(#"probe_success{probe="plain",component="api",agent="eu-1",region="eu"} 1"#))
        }
    }
}
