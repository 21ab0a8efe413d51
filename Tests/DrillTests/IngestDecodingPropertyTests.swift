import Collector
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import CollectorStore

/// Drill 5b: a property test on the ingest decoder, run for a fixed budget of generated inputs
/// (seeded, so a failure reproduces): valid push bodies mutated at random — bytes flipped,
/// truncated, spliced with JSON fragments, nested deeply, keys duplicated. For every input:
/// - `IngestDecoding.batch` either returns a batch that passes every check (agent, count, clock)
///   or throws an `APIError` with a 4xx status; it never crashes;
/// - when it accepts and the body can be sliced, each stored slice decodes to exactly the result
///   the columns were taken from (the slicer and the decoder agree).
@Suite struct IngestDecodingPropertyTests {
    @Test func decoderAcceptsOnlyValidBatchesAndAgreesWithTheSlicer() throws {
        let budget = Drill.scale(quick: 3_000, full: 100_000)
        let seed = UInt64(ProcessInfo.processInfo.environment["SONDE_PROPERTY_SEED"].flatMap { UInt64($0) } ?? 20_251_123)
        var rng = SplitMix64(seed: seed)
        let agent = DrillAgent(id: "eu-1", region: "eu")
        let now = Date()
        let templates = try (1...4).map { n in try SondeJSON.encode(PushBatch(agent: agent.id, batchID: "b-\(n)", sentAt: now, results: agent.results(n))) }
        var accepted = 0, refused = 0, sliced = 0
        var statuses: [Int: Int] = [:]
        for iteration in 0..<budget {
            var body = templates.randomElement(using: &rng)!
            let mutations = Int.random(in: 0...3, using: &rng)
            for _ in 0..<mutations { body = JSONBodyMutator.mutate(body, using: &rng) }
            do {
                let batch = try IngestDecoding.batch(from: body, agentID: agent.id, maxResults: 3, allowedSkew: 300, receivedAt: now)
                accepted += 1
                #expect(batch.agent == agent.id && !batch.batchID.isEmpty, "iteration \(iteration)")
                #expect((1...3).contains(batch.results.count) && batch.results.allSatisfy { $0.agent == agent.id }, "iteration \(iteration)")
                #expect(abs(batch.sentAt.timeIntervalSince(now)) <= 300, "iteration \(iteration)")
                if let slices = ResultJSONSlicer.slices(of: body, expectedCount: batch.results.count) {
                    sliced += 1
                    for (slice, result) in zip(slices, batch.results) {
                        let decoded = try? SondeJSON.decode(ProbeResult.self, from: slice)
                        #expect(decoded == result, "iteration \(iteration): slice \(String(decoding: slice, as: UTF8.self)) ≠ decoded result")
                    }
                }
            } catch {
                refused += 1
                statuses[Int(error.status.code), default: 0] += 1
                #expect((400..<500).contains(error.status.code), "iteration \(iteration): \(error)")
            }
        }
        Drill.report(
            "5b-property",
            """
            ### Drill 5b: property test on the ingest decoder — PASS when the test passes

            `IngestDecodingPropertyTests` (seed \(seed), `SONDE_PROPERTY_SEED` to change): \(budget) inputs made from valid signed-batch \
            bodies by 0–3 random mutations (byte flips, truncation, spliced JSON fragments, deep nesting, repeated keys). Every input \
            is either accepted as a batch that passes every check, with the stored per-result JSON slices decoding to exactly the \
            accepted results, or refused with a 4xx `APIError`.

            \(Drill.table([
                ("inputs", "\(budget)"),
                ("accepted (valid after mutation)", "\(accepted)"),
                ("of which sliced and cross-checked", "\(sliced)"),
                ("refused with 4xx", "\(refused) (\(statuses.sorted { $0.key < $1.key }.map { "\($0.key): \($0.value)" }.joined(separator: ", ")))"),
            ]))
            """)
        #expect(accepted > 0 && refused > 0, "the generator should produce both valid and invalid inputs")
    }
}
