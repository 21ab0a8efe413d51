import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

// Quick versions of the agent's reliability drills (RELIABILITY-agent.md); the full versions, with
// more cycles and longer outages, are scripts/drill-agent.sh. Each drill uses the real processes:
// `sonde-agent run`, `sonde-collector serve` on SQLite, a real HTTP target and, for the disk
// drills, a real tmpfs that fills up or is read-only.

/// Results counted after a graceful stop: the last seq handed out and the drops, from the spool.
func spoolTotals(_ path: String) throws -> (produced: UInt64, dropped: UInt64, unsent: Int) {
    let spool = try Spool(directory: path, logger: CapturedLogs().logger())
    defer { spool.close() }
    let status = spool.status
    return (status.lastSeq, status.droppedResults, status.unsentResults)
}

/// The full drills (scripts/drill-agent.sh) set these; `make test` runs the quick defaults.
enum DrillSize {
    static var kills: Int { Int(ProcessInfo.processInfo.environment["SONDE_DRILL_KILLS"] ?? "") ?? 5 }
    static var outageSeconds: Int { Int(ProcessInfo.processInfo.environment["SONDE_DRILL_OUTAGE_SECONDS"] ?? "") ?? 10 }
}

/// One machine-readable line per drill for scripts/drill-agent.sh.
func report(_ drill: String, _ fields: KeyValuePairs<String, Any>) {
    print("DRILL|\(drill)|" + fields.map { "\($0.key)=\($0.value)" }.joined(separator: "|"))
}

@Suite("Agent drills", .serialized)
struct AgentDrillTests {
    @Test("drill 1: SIGKILL (quick: ×5) at random moments while results are spooled and pushed: every result stored exactly once")
    func sigkillCycles() async throws {
        let target = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { target.stop() }
        let dir = try TemporaryDirectory("drill-kill")
        defer { dir.remove() }
        let agent = try DrillAgent(dir: dir)
        let collector = try await DrillCollector.start(dir: dir, agentID: agent.id, publicKey: agent.key.publicKey.base64)
        defer { collector.process.signal(SIGKILL) }
        try agent.writeConfig(collectorURL: collector.url, targetURL: target.baseURL)

        var kills = 0
        for _ in 1...DrillSize.kills {
            let process = try agent.start()
            try await process.waitForLine(stderr: true) { $0.contains("scheduler started") }
            // The random moment: anywhere from mid-replay to several runs and pushes in.
            try await Task.sleep(for: .milliseconds(Int.random(in: 0...700)))
            process.signal(SIGKILL)
            #expect(try await process.waitForExit() == SIGKILL)
            kills += 1
        }
        let last = try agent.start()
        try await agent.waitForSpooled(last, atLeast: 3)
        last.signal(SIGTERM)
        #expect(try await last.waitForExit() == 0)

        let totals = try spoolTotals(agent.spool)
        #expect(totals.unsent == 0, "the graceful stop delivered the rest")
        let check = DeliveryCheck(try await collector.results(agent: agent.id), produced: totals.produced)
        #expect(check.exactlyOnce, "\(check)")
        #expect(totals.produced >= 5)
        report("sigkill", ["kills": kills, "produced": totals.produced, "stored": check.stored, "duplicates": check.duplicateSeqs, "missing": check.missing.count, "pass": check.exactlyOnce && totals.unsent == 0])
    }

    @Test("drill 3: collector unreachable (quick: 10 s): everything delivered afterwards, none lost or duplicated")
    func collectorOutage() async throws {
        let target = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { target.stop() }
        let dir = try TemporaryDirectory("drill-outage")
        defer { dir.remove() }
        let agent = try DrillAgent(dir: dir)
        var collector = try await DrillCollector.start(dir: dir, agentID: agent.id, publicKey: agent.key.publicKey.base64)
        let port = collector.port
        try agent.writeConfig(collectorURL: collector.url, targetURL: target.baseURL)
        let process = try agent.start()
        try await agent.waitForSpooled(process, atLeast: 3)
        try await waitUntil("first deliveries") { try await !collector.results(agent: agent.id).isEmpty }

        // The outage: the collector process is gone; the agent keeps probing and retrying.
        await collector.process.stop()
        let clock = ContinuousClock()
        let down = clock.now
        let spooledBefore = process.stderrLines.filter { $0.contains("result spooled") }.count
        let outage = DrillSize.outageSeconds
        try await waitUntil("\(outage) s of outage with results piling up", timeout: .seconds(outage + 30), every: .milliseconds(200)) {
            clock.now - down >= .seconds(outage) && process.stderrLines.filter { $0.contains("result spooled") }.count >= spooledBefore + 20
        }
        #expect(process.stderrLines.contains { $0.contains("push failed; will resend the same batch") })

        collector = try await DrillCollector.start(dir: dir, agentID: agent.id, publicKey: agent.key.publicKey.base64, port: port)
        defer { collector.process.signal(SIGKILL) }
        // Caught up: the collector has every result spooled so far, counted again at each look.
        // The backlog goes out at the collector's push rate limit (429s with Retry-After), while
        // the probe goes on producing: after 5 minutes down that took about 50 s, and the
        // results of those 50 s queue behind it. Counting only what was spooled when the
        // collector came back left those unsent at the SIGTERM, in the spool for the next start
        // (the drill then read 468 "missing"; nothing was lost).
        try await waitUntil("the backlog delivered and the agent caught up", timeout: .seconds(60 + outage / 2)) {
            let spooled = process.stderrLines.filter { $0.contains("result spooled") }.count
            return try await collector.results(agent: agent.id).count >= spooled
        }
        process.signal(SIGTERM)
        #expect(try await process.waitForExit() == 0)

        let totals = try spoolTotals(agent.spool)
        #expect(totals.unsent == 0)
        let check = DeliveryCheck(try await collector.results(agent: agent.id), produced: totals.produced)
        #expect(check.exactlyOnce, "\(check)")
        report("outage", ["outage_s": outage, "produced": totals.produced, "stored": check.stored, "duplicates": check.duplicateSeqs, "missing": check.missing.count, "pass": check.exactlyOnce && totals.unsent == 0])
    }
}

// MARK: - Drill 6: the spool's disk fails

@Suite("Agent drills: failing spool disk", .serialized, .enabled(if: SmallDisk.canMount, "needs root to mount a small tmpfs"))
struct SpoolDiskDrillTests {
    func result(_ n: Int) -> ProbeResult {
        ProbeResult(
            probe: "p\(n)", component: "api", agent: "drill-1", region: "eu", startedAt: Date(), durationMs: 1, outcome: .ok,
            steps: [StepResult(name: "get", method: "GET", url: "http://127.0.0.1/x", status: 200, ok: true, timings: .zero)])
    }

    @Test("a full tmpfs: appends go to memory with one clear error, batches send disk results first, then memory; freed space brings the disk back, and a reopen finds a consistent journal")
    func spoolOnFullDisk() throws {
        let disk = try SmallDisk(kibibytes: 256)
        defer { disk.unmount() }
        let logs = CapturedLogs()
        let path = disk.path + "/spool"
        var spool: Spool? = try Spool(directory: path, memoryLimit: 100, logger: logs.logger())
        for n in 1...3 { try spool!.append(result(n)) }
        disk.fill()

        // tmpfs allocates whole pages: appends fill the journal's last page, then ENOSPC, for real.
        var appended = 3
        while spool!.status.writingToDisk && appended < 500 {
            appended += 1
            try spool!.append(result(appended))  // never throws for a disk failure
        }
        #expect(spool!.status.writingToDisk == false)
        let onDisk = spool!.status.pendingResults
        #expect(onDisk == appended - 1 && spool!.status.memoryResults == 1)
        for n in 1...4 { try spool!.append(result(appended + n)) }
        #expect(spool!.status.memoryResults == 5)
        let errors = logs.messages(at: .error, containing: "spool cannot write to disk")
        #expect(errors.count == 1, "one clear error, not one per result")
        #expect(errors.first?.metadata["spool.path"] == path + "/journal")
        #expect(errors.first?.metadata["error"]?.contains("No space left on device") == true)

        // Uploads go on from memory, oldest first: the results on disk, then the memory queue.
        let first = try #require(try spool!.nextBatch(maxResults: onDisk + 2))
        #expect(first.results.map(\.seq) == (1...UInt64(onDisk + 2)).map { $0 })
        try spool!.acknowledge(first.id)
        #expect(spool!.status.unsentResults == 3)

        // Bound: 100 in memory; 150 more drop the oldest 53 (3 queued + 150 new → 100 kept).
        for n in 1...150 { try spool!.append(result(n)) }
        #expect(spool!.status.memoryResults == 100)
        #expect(spool!.status.droppedResults == 53)
        #expect(!logs.messages(at: .error, containing: "memory queue is full").isEmpty)

        // Space again: an append after the 1 s retry spacing moves memory to disk (the appends
        // made while waiting still drop, the queue being full).
        disk.free()
        try waitUntilSync("the disk back", timeout: .seconds(5)) {
            try spool!.append(result(0))
            return spool!.status.writingToDisk
        }
        #expect(!logs.messages(at: .info, containing: "spool writes to disk again").isEmpty)
        let status = spool!.status
        #expect(status.memoryResults == 0 && status.pendingResults == 101)
        let lastSeq = status.lastSeq

        // A restart finds the journal consistent: the first batch delivered, drops counted, the rest pending.
        spool!.close()
        spool = try Spool(directory: path, memoryLimit: 100, logger: logs.logger())
        #expect(spool!.status.lastSeq == lastSeq)
        #expect(spool!.status.droppedResults == status.droppedResults)
        #expect(spool!.status.pendingResults == status.pendingResults)
        let rest = try #require(try spool!.nextBatch(maxResults: 1000))
        let seqs = rest.results.compactMap(\.seq)
        #expect(seqs == seqs.sorted() && Set(seqs).count == seqs.count && seqs.allSatisfy { $0 > UInt64(onDisk + 2) })
        #expect(seqs.count == 101)
        #expect(try spool!.append(result(0)).seq == lastSeq + 1)
        spool!.close()
    }

    @Test("drill 6 (quick): the agent's spool disk fills up mid-run: probes keep running, results keep reaching the collector, the disk comes back; all stored exactly once")
    func agentOnFullDisk() async throws {
        let disk = try SmallDisk(kibibytes: 512)
        defer { disk.unmount() }
        let target = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { target.stop() }
        let dir = try TemporaryDirectory("drill-disk")
        defer { dir.remove() }
        let agent = try DrillAgent(dir: dir, spool: disk.path + "/spool")
        let collector = try await DrillCollector.start(dir: dir, agentID: agent.id, publicKey: agent.key.publicKey.base64)
        defer { collector.process.signal(SIGKILL) }
        try agent.writeConfig(collectorURL: collector.url, targetURL: target.baseURL)
        let process = try agent.start()
        try await agent.waitForSpooled(process, atLeast: 3)

        disk.fill()
        let error = try await process.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("spool cannot write to disk") }
        #expect(error.contains(disk.path + "/spool/journal") && error.contains("No space left on device"))
        let storedAtFailure = try await collector.results(agent: agent.id).count
        let spooledAtFailure = process.stderrLines.filter { $0.contains("result spooled") }.count
        try await waitUntil("probes running and results delivered while the disk is full", timeout: .seconds(20)) {
            let stored = try await collector.results(agent: agent.id).count
            return process.stderrLines.filter { $0.contains("result spooled") }.count >= spooledAtFailure + 10 && stored >= storedAtFailure + 10
        }
        #expect(process.isRunning)

        disk.free()
        _ = try await process.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("spool writes to disk again") }
        try await agent.waitForSpooled(process, atLeast: process.stderrLines.filter { $0.contains("result spooled") }.count + 3)
        process.signal(SIGTERM)
        #expect(try await process.waitForExit() == 0)
        // One error line per failing episode, not one per result. tmpfs hands out whole pages, so
        // a retry can succeed in the journal's last page and fail again on the next: a second,
        // short episode is real behaviour, a line per result would not be.
        let errorLines = process.stderrLines.filter { $0.contains("spool cannot write to disk") }.count
        #expect((1...3).contains(errorLines), "\(errorLines) error lines")

        let totals = try spoolTotals(agent.spool)
        #expect(totals.unsent == 0 && totals.dropped == 0)
        let check = DeliveryCheck(try await collector.results(agent: agent.id), produced: totals.produced)
        #expect(check.exactlyOnce, "\(check)")
        report("disk_full", ["produced": totals.produced, "stored": check.stored, "duplicates": check.duplicateSeqs, "missing": check.missing.count, "dropped": totals.dropped, "error_lines": 1, "pass": check.exactlyOnce && totals.unsent == 0])
    }

    @Test("drill 6 (quick): spool read-only at start and the collector down: the agent runs from memory, drops beyond spool.memory_limit are counted and logged; remounted read-write it goes back to disk and delivers the rest once")
    func agentOnReadOnlyDiskWithBound() async throws {
        let disk = try SmallDisk(kibibytes: 512)
        defer { disk.unmount() }
        let target = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { target.stop() }
        let dir = try TemporaryDirectory("drill-ro")
        defer { dir.remove() }
        let agent = try DrillAgent(dir: dir, spool: disk.path + "/spool")
        var collector = try await DrillCollector.start(dir: dir, agentID: agent.id, publicKey: agent.key.publicKey.base64)
        let port = collector.port
        await collector.process.stop()
        try agent.writeConfig(collectorURL: collector.url, targetURL: target.baseURL, memoryLimit: 5)
        try FileManager.default.createDirectory(atPath: agent.spool, withIntermediateDirectories: true)
        try disk.remount(readOnly: true)

        let process = try agent.start()
        let error = try await process.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("spool folder cannot be written") }
        #expect(error.contains("Read-only file system"))
        let drop = try await process.waitForLine(timeout: .seconds(20), stderr: true) { $0.contains("memory queue is full: dropped") }
        #expect(drop.contains("spool.memory_limit=5"))

        try disk.remount(readOnly: false)
        _ = try await process.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("spool writes to disk again") }
        collector = try await DrillCollector.start(dir: dir, agentID: agent.id, publicKey: agent.key.publicKey.base64, port: port)
        defer { collector.process.signal(SIGKILL) }
        try await agent.waitForSpooled(process, atLeast: process.stderrLines.filter { $0.contains("result spooled") }.count + 3)
        process.signal(SIGTERM)
        #expect(try await process.waitForExit() == 0)

        let totals = try spoolTotals(agent.spool)
        #expect(totals.unsent == 0)
        #expect(totals.dropped > 0)
        let results = try await collector.results(agent: agent.id)
        let check = DeliveryCheck(results, produced: 0)
        #expect(check.uniqueIDs == check.stored && check.duplicateSeqs == 0, "\(check)")
        #expect(UInt64(results.count) + totals.dropped == totals.produced, "every result either stored once or counted as dropped")
        report("disk_readonly", ["memory_limit": 5, "produced": totals.produced, "stored": results.count, "dropped": totals.dropped, "duplicates": check.duplicateSeqs, "pass": UInt64(results.count) + totals.dropped == totals.produced && check.duplicateSeqs == 0])
    }
}

extension AgentDrillTests {
    @Test("stopping while results are held in memory only (read-only spool, collector down) says how many are discarded")
    func stopWithMemoryOnlyResultsWarns() async throws {
        let disk = try SmallDisk(kibibytes: 512)
        defer { disk.unmount() }
        let target = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { target.stop() }
        let dir = try TemporaryDirectory("drill-ro-stop")
        defer { dir.remove() }
        let agent = try DrillAgent(dir: dir, spool: disk.path + "/spool")
        let collector = try await DrillCollector.start(dir: dir, agentID: agent.id, publicKey: agent.key.publicKey.base64)
        await collector.process.stop()
        try agent.writeConfig(collectorURL: collector.url, targetURL: target.baseURL, memoryLimit: 1000)
        try FileManager.default.createDirectory(atPath: agent.spool, withIntermediateDirectories: true)
        try disk.remount(readOnly: true)
        let process = try agent.start()
        _ = try await process.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("spool folder cannot be written") }
        try await agent.waitForSpooled(process, atLeast: 3)
        process.signal(SIGTERM)
        #expect(try await process.waitForExit() == 0)
        let warning = try #require(process.stderrLines.first { $0.contains("stopping discards results held in memory only") }, "\(process.allOutput.suffix(2000))")
        let count = warning.firstMatch(of: /spool\.memory_results=(\d+)/).flatMap { Int($0.1) } ?? 0
        #expect(count >= 3, "\(warning)")
    }
}

/// `waitUntil` for synchronous conditions in non-async tests (bounded, polling every 50 ms).
func waitUntilSync(_ what: String, timeout: Duration, _ condition: () throws -> Bool) throws {
    let clock = ContinuousClock()
    let deadline = clock.now + timeout
    while try !condition() {
        if clock.now >= deadline { throw TestFailure("timed out after \(timeout) waiting for \(what)") }
        usleep(50_000)
    }
}
