import CollectorAPI
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
