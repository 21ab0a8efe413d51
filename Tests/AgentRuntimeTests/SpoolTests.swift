import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

func sampleResult(_ name: String = "login", agent: String = "eu-1", padding: Int = 0) -> ProbeResult {
    ProbeResult(
        probe: name, component: "login", agent: agent, region: "eu", startedAt: Date(), durationMs: 12.5, outcome: .ok,
        steps: [StepResult(name: "get" + String(repeating: "x", count: padding), method: "GET", url: "http://127.0.0.1/x", status: 200, ok: true, timings: .zero)])
}

@Suite("Spool")
struct SpoolTests {
    let logs = CapturedLogs()

    @Test("appended results get seq 1, 2, 3…; a batch keeps its id and results across a restart; acked batches go")
    func appendBatchAckRestart() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        var spool: Spool? = try Spool(directory: dir.path, logger: logs.logger())
        var ids: [String] = []
        for i in 1...5 {
            let stored = try spool!.append(sampleResult("p\(i)"))
            #expect(stored.seq == UInt64(i))
            ids.append(stored.id)
        }
        let batch = try #require(try spool!.nextBatch(maxResults: 3))
        #expect(batch.results.map(\.seq) == [1, 2, 3])
        #expect(batch.results.map(\.id) == Array(ids.prefix(3)))

        // Restart before the ack: the same batch (same id, same results) comes back first.
        spool!.close()
        spool = nil
        spool = try Spool(directory: dir.path, logger: logs.logger())
        let again = try #require(try spool!.nextBatch(maxResults: 3))
        #expect(again == batch)
        #expect(spool!.status.pendingResults == 2)

        try spool!.acknowledge(batch.id)
        let second = try #require(try spool!.nextBatch(maxResults: 10))
        #expect(second.id != batch.id)
        #expect(second.results.map(\.seq) == [4, 5])
        try spool!.acknowledge(second.id)
        #expect(try spool!.nextBatch(maxResults: 10) == nil)

        // seq survives a restart even when everything was delivered.
        spool!.close()
        spool = try Spool(directory: dir.path, logger: logs.logger())
        #expect(spool!.status.unsentResults == 0)
        #expect(try spool!.append(sampleResult()).seq == 6)
    }

    @Test("a spool folder that cannot be made is refused in the system's words (Not a directory), not as a Foundation error dump")
    func unusablePath() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try "not a folder".write(toFile: dir.file("file"), atomically: true, encoding: .utf8)
        do {
            _ = try Spool(directory: dir.file("file") + "/spool", logger: logs.logger())
            Issue.record("a spool under a regular file was accepted")
        } catch {
            let text = "\(error)"
            #expect(text.contains("cannot create the folder: Not a directory; check spool.path"), "\(text)")
            #expect(!text.contains("CocoaError"), "\(text)")
        }
    }

    @Test("a torn last frame (SIGKILL mid-append) is cut off on open; earlier results survive, seq continues")
    func tornTail() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        do {
            let spool = try Spool(directory: dir.path, logger: logs.logger())
            for _ in 1...3 { try spool.append(sampleResult()) }
            spool.close()
        }
        let journal = dir.file("journal")
        let whole = try Data(contentsOf: URL(fileURLWithPath: journal))
        // Half of a well-formed frame at the end, as a killed write leaves it.
        let frame = Spool.frame(Data("R".utf8) + Data(repeating: 0, count: 8) + (try SondeJSON.encode(sampleResult())))
        try (whole + frame.prefix(frame.count / 2)).write(to: URL(fileURLWithPath: journal))

        let spool = try Spool(directory: dir.path, logger: logs.logger())
        #expect(spool.status.pendingResults == 3)
        #expect(spool.status.lastSeq == 3)
        #expect(spool.status.journalBytes == Int64(whole.count))
        #expect(!logs.messages(at: .warning, containing: "torn").isEmpty)
        #expect(try spool.append(sampleResult()).seq == 4)
        let batch = try #require(try spool.nextBatch(maxResults: 10))
        #expect(batch.results.map(\.seq) == [1, 2, 3, 4])
        spool.close()

        // A whole-length frame whose bytes are wrong (CRC mismatch) is cut off too.
        var bytes = try Data(contentsOf: URL(fileURLWithPath: journal))
        let goodLength = bytes.count
        var bad = frame
        bad[bad.count - 2] ^= 0xFF
        bytes.append(bad)
        try bytes.write(to: URL(fileURLWithPath: journal))
        let reopened = try Spool(directory: dir.path, logger: logs.logger())
        #expect(reopened.status.journalBytes == Int64(goodLength))
        #expect(reopened.status.lastSeq == 4)
        #expect(try reopened.nextBatch(maxResults: 10) == batch)
    }

    @Test("a full spool drops the oldest unsent results, counts them and says so in the log")
    func fullSpoolDropsOldest() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        let one = Int64(try SondeJSON.encode(sampleResult(padding: 200)).count + 17)
        let spool = try Spool(directory: dir.path, maxBytes: Int(one * 5 + one / 2), logger: logs.logger())
        for _ in 1...12 { try spool.append(sampleResult(padding: 200)) }
        let status = spool.status
        #expect(status.pendingResults == 5)
        #expect(status.droppedResults == 7)
        #expect(status.liveBytes <= Int64(spool.maxBytes))
        let warnings = logs.messages(at: .warning, containing: "spool full")
        #expect(warnings.count == 7)
        #expect(warnings.last?.metadata["spool.dropped_total"] == "7")
        let batch = try #require(try spool.nextBatch(maxResults: 100))
        #expect(batch.results.map(\.seq) == [8, 9, 10, 11, 12])
        spool.close()

        let reopened = try Spool(directory: dir.path, maxBytes: spool.maxBytes, logger: logs.logger())
        #expect(reopened.status.droppedResults == 7)
        #expect(try reopened.nextBatch(maxResults: 100) == batch)
    }

    @Test("compaction keeps the journal small over many deliveries and keeps seq")
    func compactionBoundsJournal() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, maxBytes: 256 << 10, logger: logs.logger())
        for _ in 1...200 {
            for _ in 1...3 { try spool.append(sampleResult(padding: 100)) }
            let batch = try #require(try spool.nextBatch(maxResults: 2))
            try spool.acknowledge(batch.id)
        }
        // 600 results of ~450 bytes (~280 KB) went through; compaction keeps the dead records
        // below the live ones (plus one frame).
        #expect(spool.status.journalBytes <= spool.status.liveBytes * 2 + 4096)
        let unsent = spool.status.unsentResults
        #expect(unsent == 200)
        spool.close()
        let reopened = try Spool(directory: dir.path, maxBytes: 256 << 10, logger: logs.logger())
        #expect(reopened.status.lastSeq == 600)
        #expect(reopened.status.unsentResults == unsent)
        let batch = try #require(try reopened.nextBatch(maxResults: 1000))
        #expect(batch.results.map(\.seq) == Array(401...600))
    }

    @Test("a batch takes recent results from memory and older ones from the journal, the same bytes either way; the memory is bounded and freed on delivery")
    func recentResultsFromMemory() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        // ~2 MB of results: far more than RecentResults keeps.
        for _ in 1...3000 { try spool.append(sampleResult(padding: 600)) }
        let held = spool.recentResults
        #expect(held.bytes <= Spool.RecentResults.maxBytes)
        #expect(held.count > 100 && held.count < 3000)
        let batch = try #require(try spool.nextBatch(maxResults: 5000))
        #expect(batch.results.map(\.seq) == Array(1...3000).map(UInt64.init))
        spool.close()
        // The same batch from a reopened spool comes wholly from the journal: byte for byte the same.
        let reopened = try Spool(directory: dir.path, logger: logs.logger())
        #expect(reopened.recentResults.count == 0)
        let fromDisk = try #require(try reopened.nextBatch(maxResults: 5000))
        #expect(fromDisk.id == batch.id)
        #expect(fromDisk.rawResults == batch.rawResults)
        // Delivered results leave the memory at once.
        for _ in 1...5 { try reopened.append(sampleResult()) }
        #expect(reopened.recentResults.count == 5)
        try reopened.acknowledge(fromDisk.id)
        let next = try #require(try reopened.nextBatch(maxResults: 10))
        #expect(next.results.map(\.seq) == Array(3001...3005).map(UInt64.init))
        try reopened.acknowledge(next.id)
        #expect(reopened.recentResults.count == 0)
        #expect(reopened.recentResults.bytes == 0)
    }

    @Test("a result set aside is kept in rejected/ with the reason and counted")
    func setAsideKeepsTheResult() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for _ in 1...3 { try spool.append(sampleResult()) }
        let batch = try #require(try spool.nextBatch(maxResults: 2))
        let part = SpoolBatch(id: batch.id + ".1", rawResults: [batch.rawResults[0]])
        try spool.setAside(part, reason: "HTTP 422: bad_result: steps[0].timings missing")
        let saved = try String(contentsOfFile: dir.file("rejected/\(part.id).json"), encoding: .utf8)
        #expect(saved.contains("steps[0].timings missing"))
        #expect(saved.contains(batch.results[0].id))
        #expect(spool.status.rejectedResults == 1)
        try spool.acknowledge(batch.id)
        #expect(try spool.nextBatch(maxResults: 2)?.results.map(\.seq) == [3])
    }

    @Test("rejected/ stays within a quarter of max_bytes: the oldest files go, and a result too large for it is kept as a summary")
    func rejectedHasAQuota() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, maxBytes: 256 << 10, logger: logs.logger())
        #expect(spool.rejectedQuota == 64 << 10)
        func folderBytes() throws -> Int {
            try FileManager.default.contentsOfDirectory(atPath: dir.file("rejected")).reduce(0) { total, name in
                total + (try Data(contentsOf: URL(fileURLWithPath: dir.file("rejected/" + name))).count)
            }
        }
        var large = sampleResult()
        large.error = ProbeError(kind: .assertion, step: "get", message: String(repeating: "m", count: 9_000))
        for n in 0..<20 {
            try spool.setAside(SpoolBatch(id: "b\(n).1", results: [large]), reason: "HTTP 422: refused")
            #expect(try folderBytes() <= spool.rejectedQuota)
        }
        #expect(FileManager.default.fileExists(atPath: dir.file("rejected/b19.1.json")), "the newest is kept")
        #expect(!FileManager.default.fileExists(atPath: dir.file("rejected/b0.1.json")), "the oldest went")
        var huge = sampleResult()
        huge.error = ProbeError(kind: .assertion, step: "get", message: String(repeating: "h", count: 100_000))
        try spool.setAside(SpoolBatch(id: "huge.1", results: [huge]), reason: "HTTP 413: body_too_large")
        let saved = try String(contentsOfFile: dir.file("rejected/huge.1.json"), encoding: .utf8)
        #expect(saved.contains("kept without its results") && saved.contains(huge.id) && !saved.contains(String(repeating: "h", count: 100)))
        #expect(spool.status.rejectedResults == 21)
    }

    @Test("rejected/ files left by an earlier run count toward the quota: the folder is read once, the oldest of them go first")
    func rejectedQuotaCountsEarlierFiles() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, maxBytes: 256 << 10, logger: logs.logger())
        // 60 KiB from before the start, in two files (the older one first).
        try FileManager.default.createDirectory(atPath: dir.file("rejected"), withIntermediateDirectories: true)
        for (name, age) in [("old.1.json", 20.0), ("older.1.json", 30.0)] {
            try Data(repeating: 0x20, count: 30 << 10).write(to: URL(fileURLWithPath: dir.file("rejected/" + name)))
            var times = [timespec(tv_sec: time(nil) - Int(age), tv_nsec: 0), timespec(tv_sec: time(nil) - Int(age), tv_nsec: 0)]
            utimensat(AT_FDCWD, dir.file("rejected/" + name), &times, 0)
        }
        var result = sampleResult()
        result.error = ProbeError(kind: .assertion, step: "get", message: String(repeating: "m", count: 6_000))
        try spool.setAside(SpoolBatch(id: "new.1", results: [result]), reason: "HTTP 422: refused")
        #expect(!FileManager.default.fileExists(atPath: dir.file("rejected/older.1.json")), "the oldest went to make room")
        #expect(FileManager.default.fileExists(atPath: dir.file("rejected/old.1.json")))
        #expect(FileManager.default.fileExists(atPath: dir.file("rejected/new.1.json")))
    }

    @Test("two processes cannot share a spool")
    func exclusive() throws {
        let dir = try TemporaryDirectory("spool")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        #expect(throws: SpoolError.self) { try Spool(directory: dir.path, logger: logs.logger()) }
        spool.close()
        _ = try Spool(directory: dir.path, logger: logs.logger())
    }
}
