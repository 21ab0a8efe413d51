import Foundation
import Synchronization
import Testing

@testable import Collector

/// The public pages are made once per few seconds however many anonymous readers ask at once
/// (red team, second pass, N7: 8 parallel `GET /` kept every thread rendering, and `/healthz`,
/// ingest and evaluation stalled).
@Suite struct RecentValuesTests {
    final class Count: Sendable { let made = Mutex(0) }

    @Test func manyReadersAtOnceShareOneMakingAndAPersonsWriteIsSeenAtOnce() async throws {
        let values = RecentValues<Int>(maxAge: .seconds(60))
        let count = Count()
        @Sendable func make() async throws -> Int {
            let n = count.made.withLock { $0 += 1; return $0 }
            try await Task.sleep(for: .milliseconds(200))
            return n
        }
        let results = try await withThrowingTaskGroup(of: Int.self) { group in
            for _ in 0..<50 { group.addTask { try await values.value("/", make: make) } }
            return try await group.reduce(into: [Int]()) { $0.append($1) }
        }
        #expect(results.count == 50 && Set(results) == [1], "one making for 50 readers: \(Set(results))")
        #expect(try await values.value("/", make: make) == 1, "kept for maxAge")
        await values.forget()
        #expect(try await values.value("/", make: make) == 2, "made again after forget()")
        #expect(count.made.withLock { $0 } == 2)
    }

    @Test func aFailedMakingIsNotKept() async throws {
        struct Broken: Error {}
        let values = RecentValues<Int>(maxAge: .seconds(60))
        await #expect(throws: Broken.self) { try await values.value("k") { throw Broken() } }
        #expect(try await values.value("k") { 7 } == 7)
    }
}
