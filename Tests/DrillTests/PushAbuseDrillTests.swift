import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// What a client without a key, or one enrolled agent alone, can make a real collector process
/// do through `POST /v1/results`: buffer bodies, echo what it sent, add components to the public
/// pages, rewrite history.
@Suite(.serialized) struct PushAbuseDrillTests {
    /// A push that names no agent, or signs nothing, is answered from its head: the collector
    /// never waits for (or buffers) the 8 MB body it declares. (An unknown id's body is read and
    /// dropped, like a bad signature's: `SecurityHardeningDrillTests`.)
    @Test func unauthenticatedPushesAreAnsweredBeforeTheirBody() async throws {
        let folder = try TemporaryDirectory("sonde-drill-abuse")
        defer { folder.remove() }
        let agent = DrillAgent(id: "eu-1", region: "eu")
        try await withDrillCollector(in: folder, agents: [agent], extra: ["request_timeout: 60s"]) { collector in
            let heads: [(String, [(String, String)])] = [
                ("no agent header", [("Content-Type", "application/json"), (PushProtocol.signatureHeader, "AAAA")]),
                ("an unknown agent, no signature", [("Content-Type", "application/json"), (PushProtocol.agentHeader, "stranger")]),
                ("an enrolled agent, no signature", [("Content-Type", "application/json"), (PushProtocol.agentHeader, agent.id)]),
            ]
            for (name, headers) in heads {
                let connection = try RawConnection(port: collector.port, receiveTimeout: .seconds(10))
                defer { connection.close() }
                connection.send(httpBytes(headers: headers, body: Data(repeating: 32, count: 1024), contentLength: 8_000_000))
                #expect(connection.readOutcome() == .status(401), "\(name)")
            }
            // A 60 KB agent id is refused without being echoed back.
            let long = String(repeating: "A", count: 60_000)
            let response = try await CurlHTTPClient.shared.perform(
                HTTPRequest(
                    method: "POST", url: collector.baseURL + PushProtocol.path,
                    headers: [HTTPHeader(PushProtocol.agentHeader, long), HTTPHeader(PushProtocol.signatureHeader, "AAAA")], body: Data("{}".utf8),
                    timeout: .seconds(10)))
            #expect(response.status == 401)
            #expect(response.body.count < 2048 && !response.bodyText.contains(String(repeating: "A", count: 300)), "\(response.body.count) bytes")
        }
    }

    /// Bodies being read share `limits.max_push_bytes_in_flight`, charged for the bytes that
    /// arrived (a declared length costs nothing), and one agent id holds at most twice
    /// `max_body_bytes` of it. A sender without eu-1's key that has sent most of that under
    /// eu-1's id and stalls takes only the unproven share of eu-1 (and the unproven half of the
    /// budget): eu-1's own pushes, whose `Sonde-Agent-Claim` proves them before their body, go
    /// through (red team F7), as do us-1's; unproven pushes are told to come back (503 `busy`).
    /// Once the stalled bodies are cut (minimum body rate), every push goes through again.
    @Test func pushBodiesInFlightShareABudget() async throws {
        let folder = try TemporaryDirectory("sonde-drill-abuse")
        defer { folder.remove() }
        let agent = DrillAgent(id: "eu-1", region: "eu")
        let other = DrillAgent(id: "us-1", region: "us")
        try await withDrillCollector(
            in: folder, agents: [agent, other], extra: ["request_timeout: 60s", "max_body_bytes: 300000", "limits: { max_push_bytes_in_flight: 1000000 }"]
        ) { collector in
            // A valid push of about 200 KB of results (padding beside them is refused: `padded_body`).
            // `claim`: as the agent sends it, or made 10 minutes ago, or signed by another key.
            enum Claim { case valid, none, stale, otherKey }
            let resultsIn200KB = 200_000 / (try agent.signedBatch(100).1.count / 100) + 1
            func push(_ agent: DrillAgent, claim: Claim = .valid) throws -> RawOutcome {
                let (_, body, _) = try agent.signedBatch(resultsIn200KB)
                #expect(body.count >= 200_000 && body.count < 300_000)
                var headers = [
                    ("Content-Type", "application/json"), (PushProtocol.agentHeader, agent.id), (PushProtocol.signatureHeader, try agent.key.signatureHeader(for: body)),
                ]
                switch claim {
                case .valid: headers.append((PushProtocol.claimHeader, try agent.key.claimHeader(agent: agent.id)))
                case .none: break
                case .stale: headers.append((PushProtocol.claimHeader, try agent.key.claimHeader(agent: agent.id, now: Date().addingTimeInterval(-600))))
                case .otherKey: headers.append((PushProtocol.claimHeader, try AgentSigningKey().claimHeader(agent: agent.id)))
                }
                return try rawRequest(port: collector.port, httpBytes(headers: headers, body: body))
            }
            let junk: [(String, String)] = [("Content-Type", "application/json"), (PushProtocol.agentHeader, agent.id), (PushProtocol.signatureHeader, "AAAA")]

            // Declared 290 KB, 1 KB sent: only the 1 KB is held.
            let trickle = try RawConnection(port: collector.port, receiveTimeout: .seconds(30))
            trickle.send(httpBytes(headers: junk, body: Data(repeating: 32, count: 1024), contentLength: 290_000))
            try await waitUntil("the trickled push holding what it sent", timeout: .seconds(20)) {
                try await collector.metric("sonde_ingest_push_bytes_in_flight") == 1024
            }
            #expect(try push(agent) == .status(200))
            #expect(try push(agent, claim: .none) == .status(200), "an agent without claims (an older one) still pushes")
            trickle.close()

            // Two bodies of 250 KB sent and stalled under eu-1's id, unproven, hold 500 KB of the
            // unproven share of eu-1 (600 KB) and all of the unproven half (500 KB).
            let stalled = try (0..<2).map { _ in
                let connection = try RawConnection(port: collector.port, receiveTimeout: .seconds(30))
                connection.send(httpBytes(headers: junk, body: Data(repeating: 32, count: 250_000), contentLength: 290_000))
                return connection
            }
            try await waitUntil("the stalled pushes holding what they sent", timeout: .seconds(20)) {
                try await collector.metric("sonde_ingest_push_bytes_in_flight") == 500_000
            }
            #expect(try push(agent) == .status(200), "eu-1's own push is proven before its body: the stall does not hold it back")
            #expect(try push(other) == .status(200))
            for claim in [Claim.none, .stale, .otherKey] {
                #expect(try push(agent, claim: claim) == .status(503), "unproven (\(claim)): eu-1's unproven share is used up")
                #expect(try push(other, claim: claim) == .status(503), "unproven (\(claim)): the unproven half is used up")
            }
            // An id that was never enrolled is read and charged as an enrolled one without a valid
            // claim: the same `busy` here, so the answer does not tell which ids are enrolled.
            let ghost = DrillAgent(id: "ghost-1", region: "eu")
            #expect(try push(ghost) == .status(503), "an unknown id shares the unproven half, as an enrolled id does")
            // Stalled bodies are cut by the minimum rate (16 KiB/s after 5 s), well before request_timeout.
            let clock = ContinuousClock()
            let start = clock.now
            for connection in stalled { #expect(connection.readOutcome() == .closed) }
            #expect(clock.now - start < .seconds(45))
            try await waitUntil("the budget free again", timeout: .seconds(20)) { try await collector.metric("sonde_ingest_push_bytes_in_flight") == 0 }
            #expect(try push(agent) == .status(200))
            #expect(try push(agent, claim: .none) == .status(200))
            #expect(try push(ghost) == .status(401))
        }
    }

    /// A component nobody declared shows to operators but not on the public pages, in `overall`
    /// or in `sonde_component_status`: with `components:` declared, however many agents report
    /// it (red team, second pass, N1: two compromised agents made one a public major outage);
    /// without a list, once a second agent reports it, it is known and counts everywhere.
    @Test func oneAgentsMadeUpComponentStaysOffThePublicPages() async throws {
        let folder = try TemporaryDirectory("sonde-drill-abuse")
        defer { folder.remove() }
        let liar = DrillAgent(id: "eu-1", region: "eu")
        let honest = DrillAgent(id: "us-1", region: "us")
        try await withDrillCollector(in: folder, agents: [liar, honest], extra: ["components: [files]"]) { collector in
            func push(_ agent: DrillAgent, _ components: [String], failed: Bool) async throws {
                let (_, body, signature) = try agent.signedBatch(components.count, failed: failed, components: components)
                let response = try await CurlHTTPClient.shared.perform(agent.pushRequest(baseURL: collector.baseURL, body: body, signature: signature))
                #expect(response.status == 200, "\(response.bodyText)")
            }
            func text(_ path: String) async throws -> String { try await CurlHTTPClient.shared.perform(collector.request(path, token: DrillTokens.read)).bodyText }
            func status() async throws -> [String: Any] {
                try JSONSerialization.jsonObject(with: Data(try await text("/v1/status").utf8)) as? [String: Any] ?? [:]
            }
            func payments(_ status: [String: Any]) -> [String: Any]? {
                (status["components"] as? [[String: Any]])?.first { $0["component"] as? String == "Payments" }
            }
            try await waitUntil("Payments failing in the operators' view", timeout: .seconds(30)) {
                try await push(honest, ["files"], failed: false)
                try await push(liar, ["files", "Payments"], failed: true)
                guard let verdict = payments(try await status()) else { return false }
                return verdict["status"] as? String != "operational" && verdict["known"] as? Bool == false
            }
            #expect(try await status()["overall"] as? String != "major_outage")
            for path in ["/", "/api/v2/summary.json", "/api/v2/status.json"] {
                let page = try await text(path)
                #expect(!page.contains("Payments") && !page.contains("critical") && !page.contains("Major Outage"), "\(path)")
            }
            #expect(!(try await text("/metrics")).contains("sonde_component_status{component=\"Payments\""))

            // Two agents (say both compromised) fail it: still not on the list, so still unknown.
            for _ in 0..<5 {
                try await push(honest, ["Payments"], failed: true)
                try await push(liar, ["Payments"], failed: true)
            }
            try await waitUntil("both agents' Payments runs evaluated", timeout: .seconds(30)) {
                (payments(try await status())?["evidence"] as? [String: Any])?["failing_agent_count"] as? Int == 2
            }
            #expect(payments(try await status())?["known"] as? Bool == false)
            let page = try await text("/"), metrics = try await text("/metrics")
            #expect(!page.contains("Payments") && !metrics.contains("sonde_component_status{component=\"Payments\""))
        }
        // Without a declared list (a collector of its own), two agents make it known.
        let undeclared = try TemporaryDirectory("sonde-drill-abuse")
        defer { undeclared.remove() }
        try await withDrillCollector(in: undeclared, agents: [liar, honest]) { collector in
            func push(_ agent: DrillAgent) async throws {
                let (_, body, signature) = try agent.signedBatch(1, failed: true, components: ["Payments"])
                _ = try await CurlHTTPClient.shared.perform(agent.pushRequest(baseURL: collector.baseURL, body: body, signature: signature))
            }
            func text(_ path: String) async throws -> String { try await CurlHTTPClient.shared.perform(collector.request(path, token: DrillTokens.read)).bodyText }
            try await waitUntil("Payments known once a second agent reports it", timeout: .seconds(30)) {
                try await push(honest)
                try await push(liar)
                return (try await text("/metrics")).contains("sonde_component_status{component=\"Payments\"")
            }
            #expect((try await text("/")).contains("Payments"))
        }
    }

    /// Runs from more than a day before the agent's enrolment or past `retention_days`
    /// are refused, naming the result; components longer than 64 bytes and components named only by
    /// steps count against the agent's caps too.
    @Test func oldRunsLongNamesAndStepComponentsAreRefused() async throws {
        let folder = try TemporaryDirectory("sonde-drill-abuse")
        defer { folder.remove() }
        let agent = DrillAgent(id: "eu-1", region: "eu")
        try await withDrillCollector(in: folder, agents: [agent], extra: ["limits: { max_components_per_agent: 5 }"]) { collector in
            func push(_ results: [ProbeResult]) async throws -> HTTPResponse {
                let body = try SondeJSON.encode(PushBatch(agent: agent.id, batchID: UUID().uuidString, sentAt: Date(), results: results))
                return try await CurlHTTPClient.shared.perform(agent.pushRequest(baseURL: collector.baseURL, body: body, signature: try agent.key.signatureHeader(for: body)))
            }
            let old = try await push(agent.results(2, at: Date().addingTimeInterval(-2 * 86_400)))
            #expect(old.status == 400 && old.bodyText.contains("result_too_old") && old.bodyText.contains("results[0]"), "\(old.bodyText)")
            #expect(try await push(agent.results(2, at: Date().addingTimeInterval(-30))).status == 200)

            let long = try await push(agent.results(1, components: [String(repeating: "x", count: 65)]))
            #expect(long.status == 400 && long.bodyText.contains("bad_field") && long.bodyText.contains("results[0].component"), "\(long.bodyText)")

            var journey = agent.results(1, components: ["files"])[0]
            journey.steps = (0..<6).map { n in
                StepResult(name: "s\(n)", method: "GET", url: "https://platform.example/", ok: true, timings: PhaseTimings(total: 1), component: "step-component-\(n)")
            }
            let many = try await push([journey])
            #expect(many.status == 422 && many.bodyText.contains("too_many_components"), "\(many.bodyText)")
        }
    }

}
