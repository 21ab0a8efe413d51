import Foundation
import SondeCore
import Testing

/// The agent spools results with `encodedJSON()` (hand-written); the collector decodes them with
/// `SondeJSON.decoder()`. Both encoders must give documents that decode to the same values.
@Suite struct ProbeResultJSONTests {
    static let awkward = "quote \" backslash \\ slash / tab \t newline \n cr \r nul \u{0} bell \u{7} unit-sep \u{1F} del \u{7F} é 日本 🚀"

    static let samples: [ProbeResult] = [
        ProbeResult(
            id: "7c9e6679-7425-40de-944b-e07fc1f90ae7", probe: "login", component: "api", agent: "eu-1", region: "eu",
            startedAt: Date(timeIntervalSince1970: 1_795_000_000.123), durationMs: 12.345, outcome: .ok,
            steps: [StepResult(name: "get", method: "GET", url: "http://127.0.0.1:8080/a?b=c&d=/e", status: 200, ok: true,
                               timings: PhaseTimings(dns: 0.012, connect: 0.1, tls: 0, ttfb: 11.2, transfer: 0.033, total: 11.345))]),
        ProbeResult(
            id: awkward, probe: awkward, component: awkward, agent: awkward, region: awkward,
            startedAt: Date(timeIntervalSince1970: -1.5), durationMs: 0.1 + 0.2, outcome: .failed,
            error: ProbeError(kind: .httpStatus, step: awkward, message: awkward, code: awkward),
            steps: [
                StepResult(name: awkward, method: "POST", url: awkward, status: nil, ok: false,
                           timings: PhaseTimings(dns: 1e-7, connect: 123_456_789.5, tls: 1e20, ttfb: -0.0, transfer: .leastNonzeroMagnitude, total: 1.7976931348623157e308),
                           attempts: 7, error: ProbeError(kind: .timeout, step: "s", message: "m", code: nil)),
                StepResult(name: "", method: "", url: "", ok: true, timings: .zero),
            ],
            control: true, retry: true, seq: UInt64.max),
        ProbeResult(
            id: "x", probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(timeIntervalSince1970: 0),
            durationMs: 3, outcome: .degraded, steps: [], control: false, retry: false, seq: 0, degraded: awkward),
        // A step over its own degraded_after says so on the step.
        ProbeResult(
            id: "d", probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(timeIntervalSince1970: 0),
            durationMs: 3, outcome: .degraded,
            steps: [StepResult(name: "login", method: "POST", url: "u", status: 200, ok: true, timings: .zero, component: "login",
                               degraded: "step 'login' took 1309 ms, over degraded_after 1s")]),
        // Milliseconds with up to three decimals (curl's microseconds), and ones with more.
        ProbeResult(
            id: "m", probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(timeIntervalSince1970: -0.25),
            durationMs: 1234.5, outcome: .ok,
            steps: [StepResult(name: "s", method: "GET", url: "u", status: 200, ok: true,
                               timings: PhaseTimings(dns: 0.001, connect: 0.1 + 0.2, tls: 999_999_999.999, ttfb: -0.012, transfer: 0.0005, total: 12.34))]),
        // Integral numbers, negative ones included, are written digit by digit.
        ProbeResult(
            id: "n", probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(timeIntervalSince1970: 0),
            durationMs: -42, outcome: .ok,
            steps: [StepResult(name: "s", method: "GET", url: "u", status: -7, ok: true,
                               timings: PhaseTimings(dns: 999_999_999_999_999, connect: -999_999_999_999_999, tls: 10, ttfb: 0, transfer: 1, total: 1e15),
                               attempts: Int.max)],
            seq: UInt64(Int64.max)),
        // Labels and a TLS step's certificate expiry.
        ProbeResult(
            id: "l", probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(timeIntervalSince1970: 10),
            durationMs: 3, outcome: .ok,
            steps: [StepResult(name: "tls", method: "GET", url: "https://x/", status: 200, ok: true, timings: .zero,
                               certNotAfter: Date(timeIntervalSince1970: 1_850_000_000.25), certDaysLeft: -0.5)],
            labels: ["team": awkward, "tier": "1", "z": "", "a_b": "x"]),
    ]

    @Test(arguments: samples) func handWrittenJSONDecodesToTheSameResult(_ result: ProbeResult) throws {
        let fast = try result.encodedJSON()
        let reference = try SondeJSON.encode(result)
        let fromFast = try SondeJSON.decode(ProbeResult.self, from: fast)
        let fromReference = try SondeJSON.decode(ProbeResult.self, from: reference)
        #expect(fromFast == fromReference)
        // The same keys and values, key by key, not just the same Swift value.
        let fastObject = try #require(JSONSerialization.jsonObject(with: fast) as? NSDictionary)
        let referenceObject = try #require(JSONSerialization.jsonObject(with: reference) as? NSDictionary)
        #expect(fastObject == referenceObject, "\(String(decoding: fast, as: UTF8.self))\nvs\n\(String(decoding: reference, as: UTF8.self))")
    }

    @Test("the spool's flat records and the push body, written by hand, read back as JSONEncoder's")
    func recordsAndPushBodyDecodeLikeJSONEncoders() throws {
        let fields = ["id": Self.awkward, "why": "dropped: spool full", "first": "1", "": "", "é": "/"]
        let fast = SondeJSON.encode(strings: fields)
        #expect(try JSONDecoder().decode([String: String].self, from: fast) == fields)
        let results = try Self.samples.map { try $0.encodedJSON() }
        let sentAt = Date(timeIntervalSince1970: 1_795_000_000.5)
        let body = PushBatch.body(agent: Self.awkward, batchID: "b-1", sentAt: sentAt, rawResults: results)
        let expected = PushBatch(agent: Self.awkward, batchID: "b-1", sentAt: sentAt, results: Self.samples)
        #expect(try SondeJSON.decode(PushBatch.self, from: body) == expected)
        #expect(try PushBatchDecoder.decode(body).batch == expected, "the collector's decoder reads it too")
    }

    @Test("milliseconds are written in their shortest decimal form")
    func millisecondsAreShortest() throws {
        let result = Self.samples.first { $0.id == "m" }!
        let text = String(decoding: try result.encodedJSON(), as: UTF8.self)
        for expected in ["\"dns\":0.001,", "\"tls\":999999999.999,", "\"ttfb\":-0.012,", "\"total\":12.34}", "\"duration_ms\":1234.5,",
                         "\"started_at\":\"1969-12-31T23:59:59.750Z\"", "\"connect\":0.30000000000000004,", "\"transfer\":0.0005,"] {
            #expect(text.contains(expected), "\(expected) in \(text)")
        }
    }

    /// A phase is a difference of curl's microsecond instants: rounded back, a result reads
    /// `0.299`, not `0.29900000000000004` (first-use review).
    @Test func phasesAtMicrosecondsHaveNoFloatTails() throws {
        let timings = PhaseTimings(dns: 0.012, connect: 0.311 - 0.012, tls: 4.166 - 0.311, ttfb: 0.0, transfer: 0.043 + 1e-13, total: 4.209).atMicroseconds
        let result = ProbeResult(
            id: "t", probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(timeIntervalSince1970: 0), durationMs: 5, outcome: .ok,
            steps: [StepResult(name: "s", method: "GET", url: "u", status: 200, ok: true, timings: timings)])
        let text = String(decoding: try result.encodedJSON(), as: UTF8.self)
        #expect(text.contains(#""timings":{"dns":0.012,"connect":0.299,"tls":3.855,"ttfb":0,"transfer":0.043,"total":4.209}"#), "\(text)")
    }

    @Test func nonFiniteNumbersFailLikeJSONEncoder() {
        let result = ProbeResult(
            probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(), durationMs: .nan, outcome: .ok, steps: [])
        #expect(throws: (any Error).self) { try result.encodedJSON() }
    }
}
