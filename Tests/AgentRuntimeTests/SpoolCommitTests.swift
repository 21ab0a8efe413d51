import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

@Suite("Spool journal writer (group commit)")
struct SpoolCommitTests {
    let logs = CapturedLogs()

    @Test("a push the collector acknowledges costs no fsync: results and batch records are written without one, sync() fsyncs only what is not acknowledged yet")
    func acknowledgedResultsNeedNoFsync() throws {
        let dir = try TemporaryDirectory("spool-commit")
        defer { dir.remove() }
        let disk = FaultyDisk()
        let spool = try Spool(directory: dir.path, files: disk, logger: logs.logger())
        defer { spool.close() }
        try spool.append(sampleResult("a"), durable: false)
        #expect(disk.snapshot.syncs == 1, "the first result reserves seqs durably (one fsync per \(Spool.seqReservation) results)")
        try spool.append(sampleResult("b"), durable: false)
        let batch = try #require(try spool.nextBatch(maxResults: 10))
        #expect(batch.results.map(\.seq) == [1, 2])
        #expect(disk.snapshot.syncs == 1, "no fsync before the send")
        #expect(spool.hasUnsyncedResults, "sent, not yet acknowledged: the group commit would fsync it")
        try spool.acknowledge(batch.id)
        #expect(!spool.hasUnsyncedResults)
        spool.sync(resultsOnly: true)
        #expect(disk.snapshot.syncs == 1, "acknowledged: the collector has them, no fsync")
        // Not acknowledged (the collector is down): sync() makes the results and their batch record durable.
        try spool.append(sampleResult("c"), durable: false)
        let unanswered = try #require(try spool.nextBatch(maxResults: 10))
        #expect(unanswered.results.map(\.seq) == [3])
        spool.sync(resultsOnly: true)
        #expect(disk.snapshot.syncs == 2)
        #expect(!spool.hasUnsyncedResults)
        #expect(try spool.nextBatch(maxResults: 10)?.id == unanswered.id, "the same batch until it is acknowledged")
    }

    @Test("a power loss after an acknowledged push (its records never fsynced) loses nothing unsent and hands out no seq twice")
    func powerLossAfterAcknowledgedPush() throws {
        let dir = try TemporaryDirectory("spool-commit")
        defer { dir.remove() }
        let disk = FaultyDisk()
        let spool = try Spool(directory: dir.path, files: disk, logger: logs.logger())
        for name in ["a", "b", "c"] { try spool.append(sampleResult(name), durable: false) }
        let batch = try #require(try spool.nextBatch(maxResults: 10))
        try spool.acknowledge(batch.id)
        spool.sync(resultsOnly: true)  // the group commit: nothing to do
        // The power goes: nothing more reaches the disk, and what was not fsynced is gone.
        disk.set { $0.writeError = EIO }
        spool.close()
        let durable = disk.snapshot.durableSize
        #expect(truncate(dir.file("journal"), off_t(durable)) == 0)
        let reopened = try Spool(directory: dir.path, bootID: "after the power loss", logger: logs.logger())
        defer { reopened.close() }
        #expect(try reopened.nextBatch(maxResults: 10) == nil, "the collector has a, b and c: nothing to send again")
        let next = try reopened.append(sampleResult("e"))
        #expect(next.seq! > 3, "seq \(next.seq!) is above every seq the collector may have")
    }

    @Test("seqs stay contiguous across a clean close and across a kill (same boot); after an unclean stop and a reboot they skip the reservation")
    func seqAcrossRestarts() throws {
        let dir = try TemporaryDirectory("spool-commit")
        defer { dir.remove() }
        let journalURL = URL(fileURLWithPath: dir.file("journal"))
        var spool = try Spool(directory: dir.path, logger: logs.logger())
        try spool.append(sampleResult("a"))
        spool.close()
        spool = try Spool(directory: dir.path, bootID: "another boot", logger: logs.logger())
        #expect(try spool.append(sampleResult("b")).seq == 2, "clean close, then a reboot")
        // A kill: the journal as it was before the close record.
        var journal = try Data(contentsOf: journalURL)
        spool.close()
        try journal.write(to: journalURL)
        spool = try Spool(directory: dir.path, bootID: "another boot", logger: logs.logger())
        #expect(try spool.append(sampleResult("c")).seq == 3, "killed, same boot: the page cache kept every record")
        // A power loss: no close record, and the next start is in another boot.
        journal = try Data(contentsOf: journalURL)
        spool.close()
        try journal.write(to: journalURL)
        spool = try Spool(directory: dir.path, bootID: "a third boot", logger: logs.logger())
        defer { spool.close() }
        #expect(try spool.append(sampleResult("d")).seq == 2 + Spool.seqReservation, "above the reservation made with seq 2")
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
