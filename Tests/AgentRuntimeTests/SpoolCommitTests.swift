import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

@Suite("Spool journal writer (group commit)")
struct SpoolCommitTests {
    let logs = CapturedLogs()

    @Test("results written without fsync are made durable by sync() or by the next batch record's fsync, which covers them")
    func unsyncedResultsAreCoveredByTheBatchRecord() throws {
        let dir = try TemporaryDirectory("spool-commit")
        defer { dir.remove() }
        let disk = FaultyDisk()
        let spool = try Spool(directory: dir.path, files: disk, logger: logs.logger())
        defer { spool.close() }
        try spool.append(sampleResult("a"), durable: false)
        try spool.append(sampleResult("b"), durable: false)
        #expect(disk.snapshot.syncs == 0, "written, not yet durable")
        let batch = try #require(try spool.nextBatch(maxResults: 10))
        #expect(batch.results.map(\.seq) == [1, 2])
        #expect(disk.snapshot.syncs == 1, "one fsync (the batch record's) for the results and the record")
        spool.sync()
        #expect(disk.snapshot.syncs == 1, "nothing left to sync")
        try spool.acknowledge(batch.id)
        #expect(disk.snapshot.syncs == 1, "an acknowledgement waits for the next fsync")
        try spool.append(sampleResult("c"), durable: false)
        spool.sync()
        #expect(disk.snapshot.syncs == 2)
        #expect(try spool.nextBatch(maxResults: 10)?.results.map(\.seq) == [3])
    }

    @Test("many concurrent commits share fsyncs, and every result is durable and batched in seq order")
    func concurrentCommits() async throws {
        let dir = try TemporaryDirectory("spool-commit")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        let committer = JournalWriter(spool: spool)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 { group.addTask { try await committer.commit(sampleResult("p\(i)")) } }
            try await group.waitForAll()
        }
        let batch = try #require(try spool.nextBatch(maxResults: 1000))
        #expect(batch.results.compactMap(\.seq) == Array(1...200))
        spool.close()
        let reopened = try Spool(directory: dir.path, logger: logs.logger())
        #expect(reopened.status.lastSeq == 200)
        reopened.close()
    }

    @Test("the journal thread ends when its writer goes away, after writing what was queued")
    func commitThreadEndsWithItsCommitter() async throws {
        func commitThreads() -> Int {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.filter { task in
                let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
                return comm == "sonde.journal\n"
            }.count
        }
        let dir = try TemporaryDirectory("spool-commit")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        defer { spool.close() }
        let before = commitThreads()
        var writer: JournalWriter? = JournalWriter(spool: spool, window: .milliseconds(5))
        try await writer?.commit(sampleResult("a"))
        #expect(commitThreads() == before + 1)
        writer?.submit(sampleResult("b"))
        writer = nil
        try await waitUntil("the journal thread to end") { commitThreads() == before }
        #expect(try spool.nextBatch(maxResults: 10)?.results.count == 2, "the result queued before the writer went away is written")
    }
}
