@testable import Collector
import CollectorStore
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@Suite("Ingest")
struct IngestTests {
    /// Every kind of bad push gets its own 4xx JSON error and stores nothing; a replay is
    /// acknowledged as a duplicate and stored once; the collector stays healthy.
    @Test func refusesBadPushesAndStoresNothing() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let good = TestAgent(id: "eu-1", region: "eu")
        let revoked = TestAgent(id: "eu-2", region: "eu")
        let other = TestAgent(id: "us-1", region: "us")
        var config = testConfig(dir: dir, agents: [good, revoked, other])
        config.maxBodyBytes = 64 * 1024
        config.maxResultsPerBatch = 50
        try await withCollector(config) { collector in
            #expect(try await collector.store.revokeAgent(id: revoked.id))

            func expectError(_ response: HTTPResponse, _ status: Int, _ code: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
                #expect(response.status == status, "\(response.bodyText)", sourceLocation: sourceLocation)
                let body = try SondeJSON.decode(APIErrorBody.self, from: response.body)
                #expect(body.error.code == code, sourceLocation: sourceLocation)
                #expect(!body.error.message.isEmpty, sourceLocation: sourceLocation)
            }

            let body = try SondeJSON.encode(good.batch([good.result()]))
            // Unknown, revoked and wrongly signed look the same to the sender (no agent-id
            // enumeration): one 401 `unauthorized`, one message; the reason is in the metrics.
            var answers: [String] = []
            var bytes: Set<Data> = []
            func expectUnauthorized(_ response: HTTPResponse, sourceLocation: SourceLocation = #_sourceLocation) throws {
                try expectError(response, 401, "unauthorized", sourceLocation: sourceLocation)
                let body = try SondeJSON.decode(APIErrorBody.self, from: response.body)
                answers.append(body.error.code + ": " + body.error.message)
                bytes.insert(response.body)
            }
            // Signed by another key.
            try expectUnauthorized(try await good.push(body, to: collector, signer: AgentSigningKey()))
            // Signature of different bytes (body changed after signing).
            var tampered = body
            tampered[tampered.count - 2] ^= 0x01
            try expectUnauthorized(try await good.push(tampered, to: collector, signature: try good.key.signatureHeader(for: body)))
            // Not base64 at all.
            try expectUnauthorized(try await good.push(body, to: collector, signature: "%%%"))
            // Unknown agent.
            let stranger = TestAgent(id: "nobody", region: "eu")
            try expectUnauthorized(try await stranger.push(stranger.batch([stranger.result()]), to: collector))
            // Revoked agent.
            try expectUnauthorized(try await revoked.push(revoked.batch([revoked.result()]), to: collector))
            // An empty body: the same 401 for an enrolled id as for an unknown one (a 400 for the
            // enrolled id alone would tell which ids exist).
            try expectUnauthorized(try await good.push(Data(), to: collector, signature: try good.key.signatureHeader(for: body)))
            try expectUnauthorized(try await stranger.push(Data(), to: collector))
            #expect(Set(answers).count == 1, "\(answers)")
            #expect(bytes.count == 1, "the same bytes every time (keys in one order): \(bytes.map { String(decoding: $0, as: UTF8.self) })")
            #expect(!answers[0].contains("nobody") && !answers[0].contains(revoked.id) && answers[0].contains("revoked"), "\(answers[0])")
            let metrics = try await get(collector, "/metrics", token: TestTokens.read).bodyText
            for (reason, count) in [("bad_signature", 4), ("unknown_agent", 2), ("agent_revoked", 1)] {
                #expect(metrics.contains("sonde_refusals_total{surface=\"ingest\",reason=\"\(reason)\"} \(count)"), "\(reason)")
            }
            // sent_at 10 minutes in the past; the message says by how much.
            let skewed = try await good.push(good.batch([good.result()], sentAt: Date().addingTimeInterval(-600)), to: collector)
            try expectError(skewed, 400, "clock_skew")
            #expect(skewed.bodyText.contains("600 s behind"))
            // A result that starts 10 years after its batch was sent: refused, the result named.
            let future = good.result(startedAt: Date().addingTimeInterval(10 * 365 * 86400))
            let fromTheFuture = try await good.push(good.batch([good.result(), future]), to: collector)
            try expectError(fromTheFuture, 400, "result_clock_skew")
            #expect(fromTheFuture.bodyText.contains("results[1]") && fromTheFuture.bodyText.contains(future.id))
            // Malformed JSON, properly signed.
            try expectError(try await good.push(Data("{\"agent\":\"eu-1\",".utf8), to: collector), 400, "malformed_body")
            // Wrong types: the decoder's path is in the message.
            let wrongTypes = try await good.push(
                Data(#"{"agent":"eu-1","batch_id":"b1","sent_at":"\#(RFC3339.string(from: Date()))","results":[{"id":1}]}"#.utf8), to: collector)
            try expectError(wrongTypes, 400, "malformed_body")
            #expect(wrongTypes.bodyText.contains("results[0]"))
            // A compressed body: said as such (it read "malformed_body … byte 0x1f").
            let plain = try SondeJSON.encode(good.batch([good.result()]))
            let gzipped = try await CurlHTTPClient.shared.perform(
                HTTPRequest(
                    method: "POST", url: collector.baseURL + PushProtocol.path,
                    headers: [
                        HTTPHeader("Content-Type", "application/json"), HTTPHeader("Content-Encoding", "gzip"),
                        HTTPHeader(PushProtocol.agentHeader, good.id), HTTPHeader(PushProtocol.signatureHeader, try good.key.signatureHeader(for: plain)),
                    ],
                    body: plain, timeout: .seconds(10)))
            try expectError(gzipped, 415, "unsupported_media_type")
            #expect(try decode(APIErrorBody.self, gzipped).error.message.contains("Content-Encoding is \"gzip\""), "\(gzipped.bodyText)")
            // Oversized body.
            let huge = Data(repeating: UInt8(ascii: " "), count: 70 * 1024)
            try expectError(try await good.push(huge, to: collector), 413, "body_too_large")
            // Too many results.
            try expectError(try await good.push(good.batch((0..<51).map { _ in good.result() }), to: collector), 413, "too_many_results")
            // Empty batch.
            try expectError(try await good.push(good.batch([]), to: collector), 400, "empty_batch")
            // Body agent differs from the header agent (signed by the header agent's key).
            let otherBody = try SondeJSON.encode(other.batch([other.result()]))
            try expectError(try await good.push(otherBody, to: collector), 400, "agent_mismatch")
            // A result of another agent inside this agent's batch.
            try expectError(try await good.push(good.batch([good.result(), other.result()]), to: collector), 400, "agent_mismatch")

            #expect(try await collector.store.resultCount() == 0)
            #expect(try await collector.store.batches(since: nil, after: nil, limit: 100).isEmpty)

            // Healthy afterwards: a good batch is accepted; its replay is a duplicate, stored once.
            #expect(try await get(collector, "/healthz").status == 200)
            let batch = good.batch([good.result(), good.result(probe: "upload", component: "files")])
            let first = try await good.push(batch, to: collector)
            #expect(first.status == 200, "\(first.bodyText)")
            #expect(try decode(PushAck.self, first) == PushAck(batchID: batch.batchID, accepted: 2, duplicate: false))
            let replay = try await good.push(batch, to: collector)
            #expect(replay.status == 200)
            #expect(try decode(PushAck.self, replay) == PushAck(batchID: batch.batchID, accepted: 0, duplicate: true))
            #expect(try await collector.store.resultCount() == 2)
            #expect(try await collector.store.batches(since: nil, after: nil, limit: 100).count == 1)
            #expect(try await collector.store.agent(id: good.id)?.lastSeen != nil)
        }
    }

    /// One enrolled agent cannot make its pushes cost more than their results (red team, third
    /// pass): padding beside the results, megabyte ids, huge results and byte floods are refused,
    /// each with its own code, and nothing of them is stored.
    @Test func oneAgentCannotPadOrSwellItsPushes() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.maxBodyBytes = 1 << 20
        try await withCollector(config) { collector in
            func code(_ response: HTTPResponse) throws -> String {
                try SondeJSON.decode(APIErrorBody.self, from: response.body).error.code
            }
            // 100 KiB of whitespace before the closing brace: valid JSON, one small result.
            var padded = try SondeJSON.encode(agent.batch([agent.result()]))
            padded.insert(contentsOf: Data(repeating: UInt8(ascii: " "), count: 100 << 10), at: padded.count - 1)
            let paddedAnswer = try await agent.push(padded, to: collector)
            #expect(paddedAnswer.status == 400, "\(paddedAnswer.bodyText)")
            #expect(try code(paddedAnswer) == "padded_body")
            // A result id and a batch id of 200 bytes.
            var longID = agent.result()
            longID.id = String(repeating: "x", count: 200)
            let idAnswer = try await agent.push(agent.batch([longID]), to: collector)
            #expect(idAnswer.status == 400 && idAnswer.bodyText.contains("results[0].id"), "\(idAnswer.bodyText)")
            let batchAnswer = try await agent.push(agent.batch([agent.result()], batchID: String(repeating: "b", count: 200)), to: collector)
            #expect(batchAnswer.status == 400 && batchAnswer.bodyText.contains("batch_id"), "\(batchAnswer.bodyText)")
            // One result of 20 steps with 15 KB URLs: over 256 KiB of JSON.
            var huge = agent.result()
            huge.steps = (0..<20).map { StepResult(name: "s\($0)", method: "GET", url: "https://x/" + String(repeating: "a", count: 15_000), ok: true, timings: .zero) }
            let hugeAnswer = try await agent.push(agent.batch([huge]), to: collector)
            #expect(hugeAnswer.status == 413, "\(hugeAnswer.bodyText)")
            #expect(try code(hugeAnswer) == "result_too_large")
            // 257 steps.
            var many = agent.result()
            many.steps = (0..<257).map { StepResult(name: "s\($0)", method: "GET", url: "https://x/", ok: true, timings: .zero) }
            let manyAnswer = try await agent.push(agent.batch([many]), to: collector)
            #expect(manyAnswer.status == 400 && manyAnswer.bodyText.contains("at most 256 steps"), "\(manyAnswer.bodyText)")
            #expect(try await collector.store.resultCount() == 0)
        }

        // Bytes per minute: with 64 KiB a minute (a burst of two 32 KiB bodies), pushes of 30 results
        // soon get 429 naming the limit, with Retry-After; what came before is stored.
        let dir2 = try TemporaryDirectory()
        defer { dir2.remove() }
        var limited = testConfig(dir: dir2, agents: [agent])
        limited.maxBodyBytes = 32 << 10
        limited.limits.pushBytesPerMinute = Double(64 << 10)
        try await withCollector(limited) { collector in
            var stored = 0
            var refused: HTTPResponse?
            for _ in 0..<10 where refused == nil {
                let results = (0..<30).map { _ in agent.result() }
                let answer = try await agent.push(agent.batch(results), to: collector)
                if answer.status == 200 { stored += results.count } else { refused = answer }
            }
            let answer = try #require(refused, "ten pushes of 30 results passed a 64 KiB-a-minute limit")
            #expect(answer.status == 429 && answer.bodyText.contains("limits.push_bytes_per_minute"), "\(answer.bodyText)")
            #expect(answer.headers.value(for: "Retry-After") != nil)
            #expect(stored > 0)
            #expect(try await collector.store.resultCount() == stored)
        }
    }

    /// An agent that lost its batch record to a power loss sends its results again in a new
    /// batch (same agent and seq, new batch id): acknowledged whole, but each result is stored,
    /// counted in `sonde_ingest_results_total` and handed to the correlation engine once; the
    /// batch's new result still counts.
    @Test func resentResultsCountOnce() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            var sent: [ProbeResult] = []
            for seq in UInt64(1)...3 {
                var result = agent.result(outcome: seq == 2 ? .failed : .ok, startedAt: Date().addingTimeInterval(Double(seq) - 10))
                result.seq = seq
                sent.append(result)
            }
            let first = agent.batch(sent)
            let firstAck = try decode(PushAck.self, try await agent.push(first, to: collector))
            #expect(firstAck == PushAck(batchID: first.batchID, accepted: 3, duplicate: false))
            #expect(try await Self.resultsTotal(collector) == 3)
            #expect(await collector.built.hub.ingested == 3)

            var fourth = agent.result(startedAt: Date().addingTimeInterval(-5))
            fourth.seq = 4
            let again = agent.batch(Array(sent.suffix(2)) + [fourth])
            #expect(again.batchID != first.batchID)
            let againAck = try decode(PushAck.self, try await agent.push(again, to: collector))
            #expect(againAck == PushAck(batchID: again.batchID, accepted: 3, duplicate: false))
            #expect(try await Self.resultsTotal(collector) == 4)
            #expect(await collector.built.hub.ingested == 4)
            #expect(try await collector.store.resultCount() == 4)

            // Nothing new at all: stored as a batch, counted as nothing.
            let onlyOld = agent.batch(sent)
            let onlyOldResponse = try await agent.push(onlyOld, to: collector)
            #expect(onlyOldResponse.status == 200)
            #expect(try await Self.resultsTotal(collector) == 4)
            #expect(await collector.built.hub.ingested == 4)
        }
    }

    /// A push's answer asks the agent to push promptly (`fast_flush_for_s`) while the engine
    /// decides something that agents' newest runs speed up: here a problem in eu whose region
    /// scope waits for us's fresh runs. A healthy fleet's answers do not ask.
    @Test func answersAskForPromptPushesWhileADecisionWaitsOnFreshRuns() async throws {
        // A healthy history, a run every 10 s: the region-scope wait lasts one interval (10 s).
        try await withWarmFleet(every: 10) { collector, start, acks in
            let (eu1, eu2, us1) = (Self.eu1, Self.eu2, Self.us1)
            #expect(acks.allSatisfy { $0.fastFlushSeconds == nil })
            let evaluated = await collector.built.hub.evaluations
            try await waitUntil("an evaluation of the healthy fleet", timeout: .seconds(20)) { await collector.built.hub.evaluations > evaluated + 1 }
            let healthy = try decode(PushAck.self, try await us1.push(us1.batch([us1.result(startedAt: start.addingTimeInterval(99))]), to: collector))
            #expect(healthy.fastFlushSeconds == nil, "a healthy fleet's pushes keep their batching")

            for agent in [eu1, eu2] {
                let failures = [agent.result(outcome: .failed, startedAt: Date().addingTimeInterval(-1)), agent.result(outcome: .failed)]
                _ = try await agent.push(agent.batch(failures), to: collector)
            }
            try await waitUntil("the engine deciding on eu's problem", timeout: .seconds(20)) {
                collector.built.hub.wantsFreshRuns.load(ordering: .relaxed)
            }
            // A run of us that started before the fault: not the fresh run the wait needs, so it goes on.
            let ack = try decode(PushAck.self, try await us1.push(us1.batch([us1.result(startedAt: Date().addingTimeInterval(-5))]), to: collector))
            #expect(ack.fastFlushSeconds == PushProtocol.fastFlushSeconds)
            #expect(await collector.built.hub.openIncidents.isEmpty, "still deciding")
        }
    }

    /// One agent's failed run: its region's other agents are asked, in their push answers, to
    /// confirm that component (`confirm_components`); another region's agents are not.
    @Test func answersAskTheFailingAgentsRegionToConfirmItsComponent() async throws {
        try await withWarmFleet(every: 2) { collector, _, acks in
            let (eu1, eu2, us1) = (Self.eu1, Self.eu2, Self.us1)
            #expect(acks.allSatisfy { $0.confirmComponents == nil }, "a healthy fleet is asked nothing")
            _ = try await eu1.push(eu1.batch([eu1.result(outcome: .failed)]), to: collector)
            try await waitUntil("the engine asking eu to confirm login", timeout: .seconds(20)) {
                collector.built.hub.confirmations.withLock { $0.components(forRegion: "eu") } == ["login"]
            }
            let eu = try decode(PushAck.self, try await eu2.push(eu2.batch([eu2.result()]), to: collector))
            #expect(eu.confirmComponents == ["login"])
            #expect(eu.fastFlushSeconds == PushProtocol.fastFlushSeconds, "and to push the confirming runs promptly")
            let us = try decode(PushAck.self, try await us1.push(us1.batch([us1.result()]), to: collector))
            #expect(us.confirmComponents == nil)
        }
    }

    static let eu1 = TestAgent(id: "eu-1", region: "eu")
    static let eu2 = TestAgent(id: "eu-2", region: "eu")
    static let us1 = TestAgent(id: "us-1", region: "us")

    /// A collector with agents eu-1, eu-2 and us-1, each having pushed 10 passing runs `every` s
    /// apart from `start` (10 intervals ago); `body` gets the collector, `start` and the answers.
    private func withWarmFleet(every spacing: Double, _ body: (RunningCollector, Date, [PushAck]) async throws -> Void) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [Self.eu1, Self.eu2, Self.us1]
        try await withCollector(testConfig(dir: dir, agents: agents)) { collector in
            let start = Date().addingTimeInterval(-10 * spacing)
            var acks: [PushAck] = []
            for agent in agents {
                let runs = (0..<10).map { agent.result(startedAt: start.addingTimeInterval(Double($0) * spacing)) }
                acks.append(try decode(PushAck.self, try await agent.push(agent.batch(runs), to: collector)))
            }
            try await body(collector, start, acks)
        }
    }

    /// `sonde_ingest_results_total` as `/metrics` shows it.
    private static func resultsTotal(_ collector: RunningCollector) async throws -> Int? {
        let text = try await get(collector, "/metrics").bodyText
        let line = text.split(separator: "\n").first { $0.hasPrefix("sonde_ingest_results_total ") }
        return line.flatMap { $0.split(separator: " ").last }.flatMap { Double($0) }.map { Int($0) }
    }

    @Test func unknownRoutesAndMethodsAnswerJSON() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try await withCollector(testConfig(dir: dir, agents: [])) { collector in
            let missing = try await get(collector, "/v2/nothing")
            #expect(missing.status == 404)
            #expect(try SondeJSON.decode(APIErrorBody.self, from: missing.body).error.code == "not_found")
            let wrongMethod = try await post(collector, "/v1/status")
            #expect(wrongMethod.status == 405)
            #expect(try SondeJSON.decode(APIErrorBody.self, from: wrongMethod.body).error.code == "method_not_allowed")
            let badLimit = try await get(collector, "/v1/results?limit=5000")
            #expect(badLimit.status == 400)
            #expect(badLimit.bodyText.contains("limit"))
        }
    }
}
