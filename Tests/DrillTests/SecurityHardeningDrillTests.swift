import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// The red team's findings against a real collector process: a read token crashing it with an
/// out-of-range number (F12).
@Suite(.serialized) struct SecurityHardeningDrillTests {
    /// `since=1e300` and friends are refused with 400 `bad_query` (they trapped converting to
    /// integer milliseconds); the collector still answers afterwards.
    @Test func outOfRangeQueryNumbersAreRefusedNotFatal() async throws {
        let folder = try TemporaryDirectory("sonde-drill-sec")
        defer { folder.remove() }
        let agent = DrillAgent(id: "eu-1", region: "eu")
        try await withDrillCollector(in: folder, agents: [agent]) { collector in
            let queries = [
                ("/v1/results?since=1e300", DrillTokens.read), ("/v1/results?until=1e300", DrillTokens.read),
                ("/v1/results?since=99999999999999999999s", DrillTokens.read), ("/v1/results?since=inf", DrillTokens.read),
                ("/v1/results?until=nan", DrillTokens.read), ("/v1/results?since=1e20d", DrillTokens.read),
                ("/v1/batches?since=1e300", DrillTokens.admin), ("/v1/incidents?limit=1e300", DrillTokens.read),
                ("/v1/results?limit=99999999999999999999", DrillTokens.read),
            ]
            for (path, token) in queries {
                let response = try await CurlHTTPClient.shared.perform(collector.request(path, token: token))
                #expect(response.status == 400 && response.bodyText.contains("bad_query"), "\(path): \(response.status) \(response.bodyText)")
                #expect(try await CurlHTTPClient.shared.perform(collector.request("/healthz", token: nil)).status == 200, "after \(path)")
            }
            #expect(collector.child.isRunning)
            // In range still works.
            #expect(try await CurlHTTPClient.shared.perform(collector.request("/v1/results?since=36500d", token: DrillTokens.read)).status == 200)
        }
    }

    /// Runs `body` against a collector process started in `folder`, stopped afterwards whatever happens.
    private func withDrillCollector(
        in folder: TemporaryDirectory, agents: [DrillAgent], extra: [String] = [], _ body: (CollectorUnderTest) async throws -> Void
    ) async throws {
        let collector = try await CollectorUnderTest.start(in: folder, agents: agents, extra: extra)
        try await withTeardown { teardown in
            teardown.add { await collector.child.stop() }
            try await body(collector)
        }
    }
}
