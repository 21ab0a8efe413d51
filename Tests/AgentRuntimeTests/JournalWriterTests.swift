import CurlHTTP
import Foundation
import Logging
import ProbeEngine
import ServiceLifecycle
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

@testable import AgentRuntime

/// The real runner, noting when each run starts and the ttfb of its request.
final class TimedRunner: ProbeExecuting {
    let runner: ProbeRunner
    let starts = Mutex<[String: [ContinuousClock.Instant]]>([:])
    let ttfbs = Mutex<[Double]>([])

    init(runner: ProbeRunner) { self.runner = runner }
    var preferredTaskExecutor: (any TaskExecutor)? { runner.preferredTaskExecutor }
    func sleep(until deadline: ContinuousClock.Instant, wake: EarlyWake) async throws { try await runner.sleep(until: deadline, wake: wake) }

    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        let now = ContinuousClock.now
        starts.withLock { $0[probe.name, default: []].append(now) }
        let result = await runner.run(probe, context: context)
        if let step = result.steps.first { ttfbs.withLock { $0.append(step.timings.ttfb) } }
        return result
    }

    /// How late each run started against its probe's fixed grid of slots (`interval` apart),
    /// measured from the probe's first run.
    func lateness(interval: Duration) -> [Duration] {
        starts.withLock { starts in
            starts.values.flatMap { runs -> [Duration] in
                guard let first = runs.first else { return [] }
                return runs.enumerated().map { index, start in (start - first) - interval * index }
            }
        }
    }
}

@Suite("Journal writer: the disk never holds up probes", .serialized)
struct JournalWriterTests {
    let logs = CapturedLogs()
    let key = AgentSigningKey()

    func probes(_ count: Int, url: String, interval: String, in dir: TemporaryDirectory) throws -> [ProbeDefinition] {
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        var paths: [String] = []
        for i in 0..<count {
            let path = dir.file("probes/p\(i).yaml")
            try """
                name: p\(i)
                component: api
                interval: \(interval)
                timeout: 5s
                steps:
                  - name: get
                    request: {method: GET, url: "\(url)"}
                    assert: {status: 200}
                """.write(toFile: path, atomically: true, encoding: .utf8)
            paths.append(path)
        }
        return try ProbeLoader.load(paths: paths, variables: [])
    }

    struct Measured {
        var lateness: [Duration]
        var ttfbMedian: Double
        var delivered: Int
        var syncs: Int
        var timeInSync: Duration
    }

    /// The agent's pipeline (scheduler on the curl loop → journal writer → uploader → a real
    /// receiver) for about 120 runs, with every fsync of the spool taking `syncDelay`.
    func measure(syncDelay: Duration, target: String, receiver: PushReceiver) async throws -> Measured {
        let dir = try TemporaryDirectory("journal-slow")
        defer { dir.remove() }
        let disk = FaultyDisk(syncDelay: syncDelay)
        let spool = try Spool(directory: dir.file("spool"), files: disk, logger: logs.logger())
        defer { spool.close() }
        // A short window: the pushes are acknowledged within a second, and the slow disk must
        // still be used (the group commit's fsyncs then run while probes do).
        let journal = JournalWriter(spool: spool, window: .milliseconds(5))
        let runner = TimedRunner(runner: ProbeRunner(client: CurlHTTPClient(threads: 16), logger: logs.logger()))
        let interval = Duration.milliseconds(100)
        let scheduler = Scheduler(
            probes: try probes(4, url: target, interval: "100ms", in: dir), context: RunContext(agent: "eu-1", region: "eu"),
            executor: runner, jitter: 0, shutdownGrace: .seconds(2), logger: logs.logger()
        ) { result in journal.submit(result) }
        var config = AgentConfig(agentID: "eu-1", region: "eu")
        config.collector.url = receiver.url
        config.collector.batchSize = 5
        config.collector.flushInterval = .milliseconds(20)
        let uploader = Uploader(settings: .init(config: config), journal: journal, key: key, logger: logs.logger())
        let before = receiver.snapshot.results.count
        let group = ServiceGroup(services: [uploader, scheduler], gracefulShutdownSignals: [], logger: logs.logger())
        let task = Task { try await group.run() }
        // About 3 s of runs (4 probes every 100 ms), and the uploader's pushes meanwhile.
        try await waitUntil("120 probe runs and a delivery", timeout: .seconds(60)) {
            runner.ttfbs.withLock { $0.count } >= 120 && receiver.snapshot.results.count > before
        }
        await group.triggerGracefulShutdown()
        try await task.value
        let ttfbs = runner.ttfbs.withLock { $0 }.sorted()
        let faults = disk.snapshot
        return Measured(
            lateness: runner.lateness(interval: interval), ttfbMedian: ttfbs.isEmpty ? .infinity : ttfbs[ttfbs.count / 2],
            delivered: receiver.snapshot.results.count - before, syncs: faults.syncs, timeInSync: faults.timeInSync)
    }

    @Test("a slow disk (200 ms per fsync) does not make probe runs start late or change their ttfb")
    func slowDiskDoesNotDelayProbes() async throws {
        let target = try LoopbackHTTPServer { _ in .json(200, #"{"status":"ok"}"#) }
        defer { target.stop() }
        let receiver = try PushReceiver(publicKey: key.publicKey)
        defer { receiver.stop() }

        let fast = try await measure(syncDelay: .zero, target: target.baseURL, receiver: receiver)
        let slow = try await measure(syncDelay: .milliseconds(200), target: target.baseURL, receiver: receiver)
        // The disk really was slow and busy: the group commits took seconds of fsync.
        #expect(slow.timeInSync >= .seconds(1), "fsyncs took \(slow.timeInSync) in total")
        #expect(slow.delivered > 0 && fast.delivered > 0)
        let fastLate = fast.lateness.max() ?? .zero
        let slowLate = slow.lateness.max() ?? .zero
        #expect(fast.lateness.count >= 80 && slow.lateness.count >= 80, "runs: \(fast.lateness.count) / \(slow.lateness.count)")
        #expect(slowLate < .milliseconds(50), "worst start lateness with a slow disk \(slowLate) (fast disk: \(fastLate))")
        #expect(slow.ttfbMedian < fast.ttfbMedian + 5, "median ttfb \(slow.ttfbMedian) ms with a slow disk vs \(fast.ttfbMedian) ms")
    }

    @Test("results that arrive together are written in one write and read back whole, in order, after a restart; when a seq reservation is due they go one by one")
    func groupedAppends() throws {
        let dir = try TemporaryDirectory("journal-group")
        defer { dir.remove() }
        let disk = FaultyDisk()
        let spool = try Spool(directory: dir.file("spool"), files: disk, logger: logs.logger())
        // The first result reserves seqs (a record of its own): a group then fits the reservation.
        let first = spool.appendAll([sampleResult("first"), sampleResult("second")])
        #expect(first.compactMap { try? $0.get().seq } == [1, 2])
        let before = disk.snapshot.writes
        let outcomes = spool.appendAll((1...5).map { sampleResult("g\($0)") })
        #expect(disk.snapshot.writes == before + 1, "one write for the group")
        #expect(outcomes.compactMap { try? $0.get().seq } == [3, 4, 5, 6, 7])
        spool.close()
        let reopened = try Spool(directory: dir.file("spool"), logger: logs.logger())
        defer { reopened.close() }
        let batch = try reopened.nextBatch(maxResults: 10)
        #expect(batch?.results.map(\.probe) == ["first", "second", "g1", "g2", "g3", "g4", "g5"])
        #expect(batch?.results.map(\.seq) == [1, 2, 3, 4, 5, 6, 7])
    }

    @Test("a disk that fails writes (ENOSPC): results wait in memory up to memory_limit, are delivered from there, and go back to disk once it works")
    func failingDiskGoesToMemory() async throws {
        let dir = try TemporaryDirectory("journal-faulty")
        defer { dir.remove() }
        let disk = FaultyDisk()
        let spool = try Spool(directory: dir.file("spool"), memoryLimit: 5, files: disk, logger: logs.logger())
        let journal = JournalWriter(spool: spool, window: .milliseconds(5))
        try await journal.commit(sampleResult("on-disk"))
        disk.set { $0.writeError = ENOSPC }
        for i in 1...8 { journal.submit(sampleResult("m\(i)")) }
        await journal.flush()
        var status = spool.status
        #expect(!status.writingToDisk)
        #expect(status.memoryResults == 5, "bounded by memory_limit")
        #expect(status.droppedResults == 3, "the oldest beyond the bound are dropped and counted")
        #expect(logs.messages(at: .error, containing: "spool cannot write to disk").count == 1)

        // Delivered from memory while the disk fails: the journal's result first, then the queue.
        let receiver = try PushReceiver(publicKey: key.publicKey)
        defer { receiver.stop() }
        var config = AgentConfig(agentID: "eu-1", region: "eu")
        config.collector.url = receiver.url
        config.collector.flushInterval = .milliseconds(20)
        let uploader = Uploader(settings: .init(config: config), journal: journal, key: key, logger: logs.logger())
        let task = Task { try await uploader.run() }
        defer { task.cancel() }
        try await waitUntil("delivery from memory") { spool.status.unsentResults == 0 }
        #expect(receiver.snapshot.results.map(\.probe) == ["on-disk", "m4", "m5", "m6", "m7", "m8"])

        // The disk heals: the next append (a second after the last try) goes to disk again.
        disk.set { $0.writeError = nil }
        try await Task.sleep(for: .milliseconds(1100))
        try await journal.commit(sampleResult("after"))
        status = spool.status
        #expect(status.writingToDisk)
        #expect(status.lastSeq == 10)
        try await waitUntil("delivery from disk") { receiver.snapshot.results.count == 7 }
        #expect(logs.messages(at: .info, containing: "spool writes to disk again").count == 1)
        task.cancel()
        _ = try? await task.value
        spool.close()
        let reopened = try Spool(directory: dir.file("spool"), logger: logs.logger())
        defer { reopened.close() }
        #expect(reopened.status.lastSeq == 10, "seqs used in memory are never handed out again")
        #expect(reopened.status.unsentResults == 0)
    }

    @Test("a failing fsync (EIO) also moves the spool to memory; nothing written before it is lost")
    func failingFsyncGoesToMemory() async throws {
        let dir = try TemporaryDirectory("journal-faulty")
        defer { dir.remove() }
        let disk = FaultyDisk()
        let spool = try Spool(directory: dir.file("spool"), files: disk, logger: logs.logger())
        defer { spool.close() }
        let journal = JournalWriter(spool: spool, window: .milliseconds(5))
        disk.set { $0.syncError = EIO }
        try await journal.commit(sampleResult("a"))
        try await journal.commit(sampleResult("b"))
        #expect(!spool.status.writingToDisk)
        #expect(spool.status.unsentResults == 2)
        let batch = try await journal.perform { spool throws(SpoolError) in try spool.nextBatch(maxResults: 10) }
        #expect(batch?.results.map(\.probe) == ["a", "b"])
    }

    @Test("a healthy push cycle does no fsync: results and the batch record are written, the collector acknowledges, the group commit finds nothing to fsync; an unacknowledged batch is fsynced after the window")
    func healthyPushCycleDoesNoFsync() async throws {
        let dir = try TemporaryDirectory("journal-syncs")
        defer { dir.remove() }
        let disk = FaultyDisk()
        let spool = try Spool(directory: dir.file("spool"), files: disk, logger: logs.logger())
        defer { spool.close() }
        let window = Duration.seconds(1)
        let journal = JournalWriter(spool: spool, window: window)
        try await journal.commit(sampleResult("first"))  // reserves seqs (one fsync per 1024 results) and waits for its group commit
        for cycle in 0..<2 {
            let before = disk.snapshot.syncs
            for i in 0..<3 { journal.submit(sampleResult("c\(cycle)-\(i)")) }
            let batch = try #require(try await journal.perform { spool throws(SpoolError) in try spool.nextBatch(maxResults: 10) })
            #expect(batch.count == (cycle == 0 ? 4 : 3))
            try await journal.perform { spool throws(SpoolError) in try spool.acknowledge(batch.id) }
            // Past the window: the group commit had its chance (a check that nothing happens).
            try await Task.sleep(for: window + .milliseconds(500))
            #expect(disk.snapshot.syncs == before, "push cycle \(cycle): no fsync")
        }
        // The collector does not answer: the sent batch is fsynced once the window is over.
        let before = disk.snapshot.syncs
        journal.submit(sampleResult("unanswered"))
        let unanswered = try #require(try await journal.perform { spool throws(SpoolError) in try spool.nextBatch(maxResults: 10) })
        #expect(unanswered.results.map(\.probe) == ["unanswered"])
        // The count goes up inside the fsync, the spool's synced mark just after it: wait for both.
        try await waitUntil("the group commit's fsync") { disk.snapshot.syncs > before && !spool.hasUnsyncedResults }
        #expect(disk.snapshot.syncs == before + 1)
    }

    @Test("with nothing to send the uploader waits for the next result, not for each flush_interval: the journal thread sleeps until a result comes, which is then pushed")
    func idleUploaderSleeps() async throws {
        func journalThreadSwitches() -> Int {
            let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
            return tasks.reduce(0) { total, task in
                let comm = (try? String(contentsOfFile: "/proc/self/task/\(task)/comm", encoding: .utf8)) ?? ""
                guard comm == "sonde.journal\n", let status = try? String(contentsOfFile: "/proc/self/task/\(task)/status", encoding: .utf8) else { return total }
                let switches = status.split(separator: "\n").filter { $0.hasPrefix("voluntary_ctxt_switches") }
                return total + switches.compactMap { Int($0.split(separator: "\t").last ?? "") }.reduce(0, +)
            }
        }
        let dir = try TemporaryDirectory("journal-idle")
        defer { dir.remove() }
        let receiver = try PushReceiver(publicKey: key.publicKey)
        defer { receiver.stop() }
        let spool = try Spool(directory: dir.file("spool"), logger: logs.logger())
        defer { spool.close() }
        let journal = JournalWriter(spool: spool)
        var config = AgentConfig(agentID: "eu-1", region: "eu")
        config.collector.url = receiver.url
        config.collector.flushInterval = .milliseconds(20)
        let uploader = Uploader(settings: .init(config: config), journal: journal, key: key, logger: logs.logger())
        let group = ServiceGroup(services: [uploader], gracefulShutdownSignals: [], logger: logs.logger())
        let task = Task { try await group.run() }
        let before = receiver.snapshot.results.count
        journal.submit(sampleResult("first"))
        try await waitUntil("the first push") { receiver.snapshot.results.count == before + 1 }
        // Nothing to send for a second: looking every 20 ms would be 50 wake-ups.
        let switches = journalThreadSwitches()
        try await Task.sleep(for: .seconds(1))
        let idle = journalThreadSwitches() - switches
        #expect(idle <= 3, "the journal thread woke \(idle) times in 1 s with nothing to send")
        journal.submit(sampleResult("second"))
        try await waitUntil("the second push") { receiver.snapshot.results.count == before + 2 }
        await group.triggerGracefulShutdown()
        try await task.value
    }

    @Test("steady results submitted on the curl loop wait for a shared hand-off, at most until the loop would leave them held past holdLimit; urgent ones, those from other threads and all while prompt pushes are asked go at once")
    func steadyResultsShareHandOffs() async throws {
        let dir = try TemporaryDirectory("journal-hold")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.file("spool"), logger: logs.logger())
        defer { spool.close() }
        // A long group-commit window: its fsync would wake the thread and take held results.
        let journal = JournalWriter(spool: spool, window: .seconds(60))
        let client = CurlHTTPClient(threads: 2)
        journal.holdSteadyResults(on: client)
        let clock = ContinuousClock()
        func written() -> Int { spool.status.unsentResults }

        // Not on the loop thread: never held (nothing would hand it over). Also starts the thread.
        journal.submit(sampleResult("other", outcome: .ok))
        #expect(!journal.holding)
        try await waitUntil("the first result written") { written() == 1 }

        // On the loop, kept busy by 50 ms sleeps: the steady result is held, then handed over
        // once the loop's next look would be past holdLimit, while the loop is still busy.
        let (heldAtFirst, seenAfter, busyFor) = try await withTaskExecutorPreference(client.taskExecutor) {
            () async throws -> (Bool, Duration?, Duration) in
            let start = clock.now
            journal.submit(sampleResult("steady", outcome: .ok))
            let held = journal.holding
            var seen: Duration?
            for _ in 0..<60 where seen == nil {
                try await client.sleep(until: clock.now + .milliseconds(50))
                if written() == 2 { seen = clock.now - start }
            }
            return (held, seen, clock.now - start)
        }
        #expect(heldAtFirst, "a steady result submitted on the loop is held")
        #expect(seenAfter != nil, "the held result was not handed over while the loop stayed busy for \(busyFor)")

        // Urgent: a failed run, then the first passing runs after it (PushUrgency): never held.
        let urgentHeld = await withTaskExecutorPreference(client.taskExecutor) { () async -> [Bool] in
            var held: [Bool] = []
            for outcome in [Outcome.failed, .ok, .ok] {
                journal.submit(sampleResult("steady", outcome: outcome))
                held.append(journal.holding)
            }
            return held
        }
        #expect(urgentHeld == [false, false, false])
        try await waitUntil("the urgent results written") { written() == 5 }

        // While the collector asks for prompt pushes nothing is held, and turning that on hands
        // over what is held at once (not holdLimit later, although the loop stays busy).
        let (before, handedOverAfter, whilePrompt) = try await withTaskExecutorPreference(client.taskExecutor) {
            () async throws -> (Bool, Duration?, Bool) in
            journal.submit(sampleResult("steady", outcome: .ok))
            let before = journal.holding
            let start = clock.now
            journal.setPromptHandOff(true)
            var seen: Duration?
            for _ in 0..<100 where seen == nil {
                try await client.sleep(until: clock.now + .milliseconds(10))
                if written() == 6 { seen = clock.now - start }
            }
            journal.submit(sampleResult("steady", outcome: .ok))
            return (before, seen, journal.holding)
        }
        journal.setPromptHandOff(false)
        #expect(before)
        #expect(handedOverAfter.map { $0 < JournalWriter.holdLimit } == true, "handed over after \(String(describing: handedOverAfter))")
        #expect(!whilePrompt)
        try await waitUntil("every result written") { written() == 7 }
    }

    @Test("the journal thread runs the tasks that prefer it; its timers end a sleep at the deadline, on wakeSleepers, at once when asked, or on cancellation")
    func journalThreadExecutorAndTimers() async throws {
        let dir = try TemporaryDirectory("journal-executor")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.file("spool"), logger: logs.logger())
        defer { spool.close() }
        let journal = JournalWriter(spool: spool)
        let clock = ContinuousClock()
        func threadName() -> String {
            ((try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        }
        let start = clock.now
        let names = try await withTaskExecutorPreference(journal.taskExecutor) {
            await Task.yield()
            let before = threadName()
            try await journal.sleep(until: start + .milliseconds(50))
            return [before, threadName()]
        }
        #expect(names == ["sonde.journal", "sonde.journal"])
        #expect(clock.now - start >= .milliseconds(50), "not before its deadline")

        // `unless` true: no wait, although the deadline is an hour away.
        let quick = clock.now
        try await journal.sleep(until: clock.now + .seconds(3600)) { true }
        #expect(clock.now - quick < .seconds(60))

        // wakeSleepers ends a sleep in progress (it is asked until the sleep has started).
        let ended = Mutex(false)
        let sleeper = Task {
            try await journal.sleep(until: clock.now + .seconds(3600))
            ended.withLock { $0 = true }
        }
        try await waitUntil("wakeSleepers to end the sleep") {
            journal.wakeSleepers()
            return ended.withLock { $0 }
        }
        try await sleeper.value

        let cancelled = Task { try await journal.sleep(until: clock.now + .seconds(3600)) }
        cancelled.cancel()
        await #expect(throws: CancellationError.self) { try await cancelled.value }
    }
}
