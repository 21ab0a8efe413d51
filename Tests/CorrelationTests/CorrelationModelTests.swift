import Foundation
import SondeCore
import Testing

@testable import Correlation

@Suite struct CorrelationModelTests {
    @Test func configDecodesPartialSnakeCaseWithDefaults() throws {
        let json = Data(#"{"confirm_failures": 3, "flaky_ratio": 0.3}"#.utf8)
        let config = try SondeJSON.decode(CorrelationConfig.self, from: json)
        #expect(config.confirmFailures == 3)
        #expect(config.flakyRatio == 0.3)
        #expect(config.openAfter == 2)
        #expect(config.resolveAfter == 3)
        #expect(config.windowRuns == 20)
    }

    @Test func wireTypesUseSnakeCaseKeys() throws {
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        let verdict = ComponentVerdict(
            component: "files", status: .partialOutage, scope: .region, regions: ["eu": .majorOutage, "us": .operational],
            evidence: Evidence(failingAgents: ["eu-1"], failingAgentCount: 1, latencyP50Ms: 12), since: now, updatedAt: now)
        let text = String(decoding: try SondeJSON.encode(verdict), as: UTF8.self)
        #expect(text.contains("\"partial_outage\""))
        #expect(text.contains("\"failing_agents\""))
        #expect(text.contains("\"latency_p50_ms\""))
        #expect(text.contains("\"updated_at\""))
        let back = try SondeJSON.decode(ComponentVerdict.self, from: try SondeJSON.encode(verdict))
        #expect(back == verdict)

        let health = AgentHealth(agent: "a", region: "eu", state: .localFault, since: now, lastSeen: now)
        let healthText = String(decoding: try SondeJSON.encode(health), as: UTF8.self)
        #expect(healthText.contains("\"local_fault\""))
        #expect(healthText.contains("\"last_seen\""))
    }
}
