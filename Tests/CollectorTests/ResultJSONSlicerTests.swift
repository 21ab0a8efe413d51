import Foundation
import SondeCore
import Testing

@testable import CollectorStore

@Suite struct ResultJSONSlicerTests {
    @Test func slicesEachResultAsSent() throws {
        let body = Data(#" { "agent" : "a", "results" : [ {"id":"1","x":"]}\"{"} , {"id":"2","n":[1,{"y":2}]} ] , "batch_id":"b" } "#.utf8)
        let slices = try #require(ResultJSONSlicer.slices(of: body, expectedCount: 2))
        #expect(slices.map { String(decoding: $0, as: UTF8.self) } == [#"{"id":"1","x":"]}\"{"}"#, #"{"id":"2","n":[1,{"y":2}]}"#])
    }

    @Test func givesUpWhenNotSure() {
        // Wrong count, a second "results", an escaped key, truncation, not an object.
        #expect(ResultJSONSlicer.slices(of: Data(#"{"results":[{}]}"#.utf8), expectedCount: 2) == nil)
        #expect(ResultJSONSlicer.slices(of: Data(#"{"results":[{}],"results":[{}]}"#.utf8), expectedCount: 1) == nil)
        #expect(ResultJSONSlicer.slices(of: Data(#"{"res\u0075lts":[{}]}"#.utf8), expectedCount: 1) == nil)
        #expect(ResultJSONSlicer.slices(of: Data(#"{"results":[{"a":"#.utf8), expectedCount: 1) == nil)
        #expect(ResultJSONSlicer.slices(of: Data(#"[{"results":[{}]}]"#.utf8), expectedCount: 1) == nil)
    }

    @Test func storedJSONDecodesToTheResults() throws {
        let results = (0..<3).map { n in
            ProbeResult(
                probe: "p\(n)", component: "api", agent: "a", region: "eu", startedAt: Date(timeIntervalSince1970: 1_800_000_000 + Double(n)),
                durationMs: 12.5, outcome: .ok, steps: [])
        }
        let body = try SondeJSON.encode(PushBatch(agent: "a", batchID: "b", sentAt: Date(), results: results))
        let slices = try #require(ResultJSONSlicer.slices(of: body, expectedCount: 3))
        #expect(try slices.map { try SondeJSON.decode(ProbeResult.self, from: $0) } == results)
    }
}
