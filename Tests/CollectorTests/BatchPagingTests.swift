import CollectorAPI
import CollectorStore
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import Collector

/// `GET /v1/batches` reads the store a few batches at a time (and ends a page early at
/// `batchPageBytes`), so its pages and cursors must come out whole: every stored batch once, in
/// order, across pages of any size.
@Suite struct BatchPagingTests {
    @Test func pagesReadInPiecesListEveryBatchOnceInOrder() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            var pushed: [String] = []
            for i in 0..<21 {
                let id = String(format: "batch-%03d", i)
                let response = try await agent.push(agent.batch([agent.result()], batchID: id), to: collector)
                #expect(response.status == 200, "\(response.bodyText)")
                pushed.append(id)
            }
            for limit in [1, 7, 8, 9, 20, 21, 1000] {
                var listed: [String] = []
                var cursor: String?
                var pages = 0
                repeat {
                    let query = "/v1/batches?limit=\(limit)" + (cursor.map { "&cursor=\($0)" } ?? "")
                    let response = try await get(collector, query)
                    #expect(response.status == 200, "\(response.bodyText)")
                    let page = try SondeJSON.decode(BatchesResponse.self, from: response.body)
                    #expect(page.batches.count <= limit)
                    listed += page.batches.map(\.batchID)
                    cursor = page.nextCursor
                    pages += 1
                } while cursor != nil && pages < 100
                #expect(listed.sorted() == pushed, "limit \(limit): \(listed)")
                #expect(Set(listed).count == listed.count, "limit \(limit): a batch listed twice")
                #expect(pages == (pushed.count + limit - 1) / limit || pages == (pushed.count + limit - 1) / limit + 1, "limit \(limit): \(pages) pages")
            }
        }
    }
}

/// `GET /v1/results` reads the store 100 results at a time and ends a page once it holds
/// `resultPageBytes` of stored JSON: a page of 1000 results of up to 256 KiB each would otherwise
/// load 256 MB per request. Paging on from `next_cursor` still lists every result once.
@Suite struct ResultPagingTests {
    @Test(arguments: ["sqlite", "postgres"]) func largeResultsEndAPageEarlyAndEveryResultIsListedOnce(kind: String) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        if kind == "postgres" { config.databasePath = try await PostgresServer.shared().createDatabase() }
        try await withCollector(config) { collector in
            let base = Date().addingTimeInterval(-3600)
            // 30 small results, then 220 newer ones of ≈ 200 KB (44 MB), as a long spool would store.
            let filler = String(repeating: "x", count: 200_000)
            var stored: [String] = []
            for chunk in 0..<25 {
                let results = (0..<10).map { i in
                    var result = agent.result(outcome: .failed, startedAt: base.addingTimeInterval(Double(chunk * 10 + i)))
                    if chunk >= 3 { result.error = ProbeError(kind: .httpStatus, step: "get", message: filler) }
                    return result
                }
                stored += results.map(\.id)
                _ = try await collector.store.ingest(
                    batch: BatchRecord(batchID: "b\(chunk)", agent: agent.id, receivedAt: Date(), body: Data(), signature: ""), results: results)
            }
            let first = try SondeJSON.decode(ResultsResponse.self, from: try await get(collector, "/v1/results?limit=1000").body)
            // 32 MiB of ≈ 200 KB results is 168 of them: the page ends there, not at 250.
            #expect(first.results.count >= 160 && first.results.count <= 170, "\(first.results.count) results on the first page")
            #expect(first.nextCursor != nil)
            for limit in [1000, 150, 99] {
                var listed: [String] = []
                var cursor: String?
                var pages = 0
                repeat {
                    let response = try await get(collector, "/v1/results?limit=\(limit)" + (cursor.map { "&cursor=\($0)" } ?? ""))
                    #expect(response.status == 200, "\(response.bodyText)")
                    let page = try SondeJSON.decode(ResultsResponse.self, from: response.body)
                    #expect(page.results.count <= limit)
                    listed += page.results.map(\.id)
                    cursor = page.nextCursor
                    pages += 1
                } while cursor != nil && pages < 100
                #expect(listed.sorted() == stored.sorted(), "limit \(limit): \(listed.count) listed of \(stored.count)")
                #expect(Set(listed).count == listed.count, "limit \(limit): a result listed twice")
            }
        }
    }
}
