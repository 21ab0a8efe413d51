import Collector
import CollectorAPI
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// No single agent can page anyone with a lie, through the real collector: failures for a
/// component nobody else reports and the config does not declare open nothing; a declared one may
/// open an incident on one agent's word, but it is marked as resting on a single agent and is
/// never platform-wide.
@Suite(.serialized)
struct SingleSourceTests {
    @Test func oneAgentAloneCannotOpenAnIncidentForAnInventedComponent() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"),
                      TestAgent(id: "us-1", region: "us"), TestAgent(id: "us-2", region: "us")]
        let liar = agents[0]
        var config = testConfig(dir: dir, agents: agents)
        config.components = ["checkout"]
        try await withCollector(config) { collector in
            // Everyone reports login fine; the liar alone reports failures of two components:
            // one made up, one declared.
            for round in 0..<12 {
                let at = Date().addingTimeInterval(Double(round - 12))
                for agent in agents { _ = try await agent.push(agent.batch([agent.result(startedAt: at)]), to: collector) }
                let lies = [liar.result(probe: "made-up", component: "invented", outcome: .failed, startedAt: at, code: "http_500"),
                            liar.result(probe: "shop", component: "checkout", outcome: .failed, startedAt: at, code: "http_500")]
                #expect(try await liar.push(liar.batch(lies), to: collector).status == 200)
            }
            // The declared component opens its incident on the liar's data; by then the invented
            // one, fed the same runs, would have opened too if one agent could make it.
            try await waitUntil("an incident on the declared component", timeout: .seconds(30)) {
                try decode(IncidentsResponse.self, try await get(collector, "/v1/incidents")).incidents.contains { $0.component == "checkout" }
            }
            let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
            let incidents = try decode(IncidentsResponse.self, try await get(collector, "/v1/incidents")).incidents
            #expect(!incidents.contains { $0.component == "invented" }, "an undeclared component one agent made up opens nothing")
            #expect(incidents.allSatisfy { $0.scope != .platform }, "one agent in one region is never platform-wide")
            let checkout = try #require(status.components.first { $0.component == "checkout" })
            #expect(checkout.evidence.singleAgent == true, "the verdict says it rests on one agent")
            #expect(checkout.scope != .platform)
        }
    }
}
