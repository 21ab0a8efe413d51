import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// `PushBatchDecoder` against Foundation's JSONDecoder (`SondeJSON`), the decoder it replaces on
/// the ingest path.
@Suite struct PushBatchDecoderTests {
    static let alphabet = Array("abcXYZ09-_ é✓😀\"\\/\n\t\u{1}\u{7F}")

    static func text(_ rng: inout SplitMix64, _ maxLength: Int = 12) -> String {
        String((0..<Int.random(in: 0...maxLength, using: &rng)).map { _ in alphabet.randomElement(using: &rng)! })
    }

    static func number(_ rng: inout SplitMix64) -> Double {
        switch Int.random(in: 0..<4, using: &rng) {
        case 0: Double(Int.random(in: 0...100_000, using: &rng))
        case 1: Double.random(in: 0...10, using: &rng)
        case 2: Double.random(in: 0...1e9, using: &rng)
        default: Double(Int.random(in: 0...1000, using: &rng)) / 1000
        }
    }

    static func probeError(_ rng: inout SplitMix64) -> ProbeError? {
        Bool.random(using: &rng)
            ? nil
            : ProbeError(
                kind: ErrorKind.allCases.randomElement(using: &rng)!, step: text(&rng), message: text(&rng, 40),
                code: Bool.random(using: &rng) ? text(&rng) : nil)
    }

    /// A random valid result: every optional present or absent, odd strings, odd numbers.
    static func result(_ rng: inout SplitMix64, agent: String) -> ProbeResult {
        let steps = (0..<Int.random(in: 0...3, using: &rng)).map { _ in
            StepResult(
                name: text(&rng), method: "GET", url: "https://x.example/" + text(&rng), status: Bool.random(using: &rng) ? Int.random(in: 100...599, using: &rng) : nil,
                ok: Bool.random(using: &rng),
                timings: PhaseTimings(
                    dns: number(&rng), connect: number(&rng), tls: number(&rng), ttfb: number(&rng), transfer: number(&rng), total: number(&rng)),
                attempts: Bool.random(using: &rng) ? Int.random(in: 1...50, using: &rng) : nil, error: probeError(&rng),
                component: Bool.random(using: &rng) ? text(&rng) : nil,
                certNotAfter: Bool.random(using: &rng) ? Date(timeIntervalSince1970: Double(Int.random(in: 1_600_000_000_000...1_900_000_000_000, using: &rng)) / 1000) : nil,
                certDaysLeft: Bool.random(using: &rng) ? number(&rng) : nil,
                degraded: Bool.random(using: &rng) ? text(&rng, 40) : nil)
        }
        let labels: [String: String]? = Bool.random(using: &rng)
            ? nil : Dictionary((0..<Int.random(in: 0...3, using: &rng)).map { _ in (text(&rng), text(&rng)) }, uniquingKeysWith: { first, _ in first })
        return ProbeResult(
            id: UUID().uuidString.lowercased(), probe: text(&rng), component: text(&rng), agent: agent, region: text(&rng),
            startedAt: Date(timeIntervalSince1970: Double(Int.random(in: 1_600_000_000_000...1_900_000_000_000, using: &rng)) / 1000),
            durationMs: number(&rng), outcome: Outcome.allCases.randomElement(using: &rng)!, error: probeError(&rng), steps: steps,
            control: Bool.random(using: &rng) ? Bool.random(using: &rng) : nil, seq: Bool.random(using: &rng) ? UInt64.random(in: 0...UInt64.max, using: &rng) : nil,
            labels: labels, degraded: Bool.random(using: &rng) ? text(&rng, 40) : nil)
    }

    /// Where this decoder may refuse what Foundation accepts: Foundation checks only what it
    /// decodes (it accepts a trailing comma, a malformed number or invalid UTF-8 inside a member it
    /// skips, or a duplicate key's ignored value), converts BOM/UTF-16 bodies, and reads `2e2` as
    /// an Int. Type, missing-field and value errors must agree.
    static let wellFormednessKinds: Set<JSONDecodingError.Kind> = [
        .syntax, .invalidUTF8, .controlCharacter, .invalidEscape, .notAnInteger, .notUTF8JSON, .duplicateKey,
    ]

    @Test func agreesWithFoundationOnRandomValidAndMutatedBodies() throws {
        let seed = UInt64(ProcessInfo.processInfo.environment["SONDE_PROPERTY_SEED"].flatMap { UInt64($0) } ?? 20_261_123)
        var rng = SplitMix64(seed: seed)
        var counts: [String: Int] = [:]
        for iteration in 0..<4_000 {
            let results = (0..<Int.random(in: 0...4, using: &rng)).map { _ in Self.result(&rng, agent: "eu-1") }
            let batch = PushBatch(agent: "eu-1", batchID: Self.text(&rng), sentAt: Date(timeIntervalSince1970: 1_800_000_000.5), results: results)
            let valid = try SondeJSON.encode(batch)
            // Valid: equal values, and each range holds exactly its result.
            let decoded = try PushBatchDecoder.decode(valid)
            #expect(decoded.batch == batch, "seed \(seed) iteration \(iteration)")
            #expect(decoded.resultRanges.count == results.count)
            for (range, result) in zip(decoded.resultRanges, results) {
                #expect(try PushBatchDecoder.result(from: valid.subdata(in: range)) == result)
            }
            // Mutated: both accept with equal values, or both refuse (see `wellFormednessKinds`).
            var body = valid
            for _ in 0..<Int.random(in: 1...3, using: &rng) { body = JSONBodyMutator.mutate(body, maxDepth: 1000, using: &rng) }
            let foundation = try? SondeJSON.decode(PushBatch.self, from: body)
            do {
                let mine = try PushBatchDecoder.decode(body)
                #expect(mine.batch == foundation, "seed \(seed) iteration \(iteration): \(String(decoding: body, as: UTF8.self))")
                counts["both accept", default: 0] += 1
            } catch {
                if foundation == nil {
                    counts["both refuse", default: 0] += 1
                } else {
                    #expect(
                        Self.wellFormednessKinds.contains(error.kind),
                        "seed \(seed) iteration \(iteration): refused (\(error)) what Foundation decodes: \(String(decoding: body, as: UTF8.self))")
                    counts["refused, Foundation lenient (\(error.kind))", default: 0] += 1
                }
            }
        }
        #expect(counts["both accept", default: 0] > 100 && counts["both refuse", default: 0] > 100, "\(counts)")
    }

    @Test func errorsNameTheFieldPath() throws {
        func refusal(_ json: String) -> JSONDecodingError? {
            do {
                _ = try PushBatchDecoder.decode(Data(json.utf8))
                return nil
            } catch { return error }
        }
        let head = #""agent":"a","batch_id":"b","sent_at":"2026-01-02T03:04:05.678Z""#
        let wrongType = try #require(refusal(#"{\#(head),"results":[{"id":1}]}"#))
        #expect(wrongType.kind == .wrongType && wrongType.path == "results[0].id" && wrongType.message.contains("expected a string"))
        let missing = try #require(refusal(#"{\#(head),"results":[{"id":"x"}]}"#))
        #expect(missing.kind == .missingField && missing.path == "results[0].probe")
        let missingTop = try #require(refusal(#"{"agent":"a","batch_id":"b","results":[]}"#))
        #expect(missingTop.path == "sent_at" && missingTop.description.contains("is required"))
        let badDate = try #require(refusal(#"{"agent":"a","batch_id":"b","sent_at":"yesterday","results":[]}"#))
        #expect(badDate.kind == .invalidValue && badDate.path == "sent_at" && badDate.message.contains("RFC 3339"))
        let nullValue = try #require(refusal(#"{"agent":null,"batch_id":"b","sent_at":"2026-01-02T03:04:05Z","results":[]}"#))
        #expect(nullValue.kind == .nullValue && nullValue.path == "agent")
        let truncated = try #require(refusal(#"{"agent":"eu-1","#))
        #expect(truncated.kind == .syntax)
        let deep = try #require(refusal("{\"x\":" + String(repeating: "[", count: 600) + String(repeating: "]", count: 600) + "}"))
        #expect(deep.kind == .tooDeep)
    }

    @Test func stringsNumbersAndKeysFollowJSON() throws {
        func batch(_ resultFields: String, head: String = "") throws -> PushBatch {
            try PushBatchDecoder.decode(
                Data(
                    #"{\#(head)"agent":"a","batch_id":"b","sent_at":"2026-01-02T03:04:05.678Z","results":[{"id":"i","probe":"p","component":"c","agent":"a","region":"r","started_at":"2026-01-02T03:04:05Z","outcome":"ok","steps":[],\#(resultFields)}]}"#
                        .utf8)
            ).batch
        }
        // Escapes, surrogate pairs, escaped keys.
        let escaped = try batch(#""duration_ms":1,"\u0073eq":7,"x":{"y":[1,"\ud83d\ude00",null]}"#)
        #expect(escaped.results[0].seq == 7)
        // A key given twice is refused, escaped or not, in a result or the batch: Foundation
        // keeps the first, other readers the last (red team, 32nd session).
        for (fields, head) in [(#""duration_ms":1,"\u0073eq":7,"seq":8"#, ""), (#""duration_ms":1,"outcome":"failed""#, ""), (#""duration_ms":1"#, #""agent":"first","#)] {
            let refused = #expect(throws: JSONDecodingError.self, "\(fields) \(head)") { try batch(fields, head: head) }
            #expect(refused?.kind == .duplicateKey, "\(String(describing: refused))")
        }
        let text = try batch(#""duration_ms":1e2,"error":{"kind":"dns","step":"\u00e9\/\"\\\n","message":"\ud83d\ude00"}"#)
        #expect(text.results[0].durationMs == 100 && text.results[0].error?.step == "é/\"\\\n" && text.results[0].error?.message == "😀")
        #expect(try batch(#""duration_ms":-0.0015,"seq":18446744073709551615"#).results[0].seq == UInt64.max)
        #expect(try batch(#""duration_ms":123456789.123456789e-3"#).results[0].durationMs == 123456.789123456789)
        // What this decoder refuses.
        for bad in [
            #""duration_ms":01"#, #""duration_ms":1."#, #""duration_ms":.5"#, #""duration_ms":1e999"#, #""duration_ms":NaN"#,
            #""duration_ms":1,"seq":2e2"#, #""duration_ms":1,"seq":-1"#, #""duration_ms":1,"seq":18446744073709551616"#,
            #""duration_ms":1,"x":"\ud800""#, #""duration_ms":1,"x":"\q""#, #""duration_ms":1,}"#, #""duration_ms":"1""#,
        ] {
            #expect(throws: JSONDecodingError.self, "\(bad)") { try batch(bad) }
        }
        #expect(throws: JSONDecodingError.self) { try PushBatchDecoder.decode(Data([0xEF, 0xBB, 0xBF] + Array("{}".utf8))) }
        #expect(throws: JSONDecodingError.self) { try PushBatchDecoder.decode(Data(Array(#"{"agent":""#.utf8) + [0xC0, 0xAF] + Array(#""}"#.utf8))) }
    }
}
