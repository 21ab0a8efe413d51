import Foundation
import SondeTestSupport
import Testing

/// The shipped Prometheus alert rules load and behave as their unit tests say (promtool, from
/// Debian's `prometheus`), and every series they use is one the collector exports.
struct AlertRulesTests {
    @Test func shippedRulesPassPromtool() async throws {
        let promtool = try requireProgram("promtool", package: "prometheus")
        let check = try await run([promtool, "check", "rules", "deploy/prometheus/sonde-rules.yml"])
        #expect(check.status == 0, "\(check.output)")
        let tests = try await run([promtool, "test", "rules", "deploy/prometheus/sonde-rules.test.yml"])
        #expect(tests.status == 0, "\(tests.output)")
        #expect(tests.output.contains("SUCCESS"))
    }

    @Test func rulesUseOnlySeriesTheCollectorExports() throws {
        let rules = try String(contentsOfFile: "\(packageRoot)/deploy/prometheus/sonde-rules.yml", encoding: .utf8)
        let exported = try String(contentsOfFile: "\(packageRoot)/docs/collector.md", encoding: .utf8)
        let names = Set(rules.matches(of: /\b(sonde_[a-z_]+|probe_[a-z_]+)\b/).map { String($0.1) })
        #expect(!names.isEmpty)
        for name in names { #expect(exported.contains("`\(name)"), "\(name) is used by a rule but not documented as exported") }
    }
}
