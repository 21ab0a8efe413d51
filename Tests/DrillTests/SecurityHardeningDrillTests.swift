import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// The red team's findings against a real collector process: a read token crashing it with an
/// out-of-range number (F12), an unauthenticated client starving ingest with trickled bodies (F7).
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

    /// F7: 40 connections name an enrolled agent, sign junk, declare 8 MiB bodies and trickle a
    /// byte every 2 s (reconnecting when cut). Signed pushes of every agent, the named one
    /// included, keep getting 200 throughout: trickled bytes are all the budget charges, and the
    /// minimum body rate cuts the trickles.
    @Test func trickledUnauthenticatedBodiesDoNotBlockIngest() async throws {
        let folder = try TemporaryDirectory("sonde-drill-sec")
        defer { folder.remove() }
        let named = DrillAgent(id: "eu-1", region: "eu")
        let other = DrillAgent(id: "us-1", region: "us")
        try await withDrillCollector(in: folder, agents: [named, other], extra: ["max_body_bytes: 8388608"]) { collector in
            let port = collector.port
            let stop = Shared(false)
            let cut = Shared(0)
            let attack = Task.detached {
                let head = httpBytes(
                    headers: [("Content-Type", "application/json"), (PushProtocol.agentHeader, named.id), (PushProtocol.signatureHeader, "AAAA")],
                    body: Data(), contentLength: 8_388_608)
                func open() -> RawConnection? {
                    guard let connection = try? RawConnection(port: port, receiveTimeout: .seconds(1)) else { return nil }
                    connection.send(head)
                    return connection
                }
                var connections = (0..<40).compactMap { _ in open() }
                while !stop.value {
                    for index in connections.indices where !connections[index].send(Data(" ".utf8)) {
                        connections[index].close()
                        cut.withLock { $0 += 1 }
                        if let fresh = open() { connections[index] = fresh }
                    }
                    try? await Task.sleep(for: .seconds(2))
                }
                for connection in connections { connection.close() }
            }
            defer {
                stop.withLock { $0 = true }
                attack.cancel()
            }
            // Long enough for the trickles to pass the 5 s grace and be cut at least once.
            var answers: [String: [Int]] = [:]
            let clock = ContinuousClock()
            let end = clock.now + .seconds(16)
            while clock.now < end {
                for agent in [named, other] {
                    let (_, body, signature) = try agent.signedBatch(3)
                    let response = try await CurlHTTPClient.shared.perform(agent.pushRequest(baseURL: collector.baseURL, body: body, signature: signature))
                    answers[agent.id, default: []].append(response.status)
                }
                try await Task.sleep(for: .milliseconds(500))
            }
            stop.withLock { $0 = true }
            _ = await attack.value
            for (id, statuses) in answers {
                #expect(!statuses.isEmpty && statuses.allSatisfy { $0 == 200 }, "\(id): \(statuses)")
            }
            #expect(cut.value >= 40, "trickled connections cut by the minimum body rate: \(cut.value)")
        }
    }

}
