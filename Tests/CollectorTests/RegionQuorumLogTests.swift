@testable import Collector
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// A region that stops deciding a component (region quorum, docs/collector.md) is said in the
/// collector's log once, and again when it decides once more: meanwhile nothing opens or resolves
/// there, and an operator reading `no data` on the page should find why.
@Suite("Region quorum in the log")
struct RegionQuorumLogTests {
    @Test func aRegionLosingAndRegainingItsQuorumIsLoggedOnceEach() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = ["eu-1", "eu-2", "eu-3"].map { TestAgent(id: $0, region: "eu") }
        let us = ["us-1", "us-2"].map { TestAgent(id: $0, region: "us") }
        let config = fastSilenceConfig(dir: dir, agents: eu + us)
        let logs = CapturedLogs()
        let warning = "A region no longer decides a component"
        let again = "A region no longer lacks data for a component"
        try await withCollector(config, logger: logs.logger()) { collector in
            // Runs a second apart from everyone: each agent's interval is known (1 s, silent after 2 s).
            func push(_ agents: [TestAgent]) async throws {
                for agent in agents {
                    let runs = (0..<3).map { agent.result(startedAt: Date().addingTimeInterval(Double($0 - 2))) }
                    #expect(try await agent.push(agent.batch(runs), to: collector).status == 200)
                }
            }
            try await push(eu + us)
            try await waitUntil("login watched in eu and us") {
                let verdict = await collector.built.hub.verdicts.first { $0.component == "login" }
                return verdict.map { $0.known && $0.regions.keys.sorted() == ["eu", "us"] } ?? false
            }
            #expect(logs.messages(containing: warning).isEmpty)

            // eu-2 and eu-3 stop: eu-1 alone (1 of 3) no longer decides eu.
            try await waitUntil("the warning", timeout: .seconds(30)) {
                try await push([eu[0]] + us)
                return !logs.messages(at: .warning, containing: warning).isEmpty
            }
            let lost = logs.messages(at: .warning, containing: warning)
            #expect(lost.count == 1 && lost.first?.metadata == ["component": "login", "regions": "eu"], "\(lost.map(\.metadata))")
            let unwatched = await collector.built.hub.verdicts.first { $0.component == "login" }?.unwatchedRegions
            #expect(unwatched == ["eu"])

            // More evaluations while it lasts: said once.
            let evaluations = await collector.built.hub.evaluations
            try await waitUntil("10 more evaluations") {
                try await push([eu[0]] + us)
                return await collector.built.hub.evaluations >= evaluations + 10
            }
            #expect(logs.messages(containing: warning).count == 1)

            // They report again: eu decides again, said once.
            try await waitUntil("eu decides again", timeout: .seconds(30)) {
                try await push(eu + us)
                return !logs.messages(containing: again).isEmpty
            }
            let back = logs.messages(containing: again)
            #expect(back.count == 1 && back.first?.level == .notice && back.first?.metadata["regions"] == "eu")
            #expect(logs.messages(containing: warning).count == 1)
        }
    }
}
