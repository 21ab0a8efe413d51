import Foundation
import Logging
import ServiceLifecycle
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

@testable import AgentRuntime

/// A result of `probe` with `outcome` (a failed one carries an `http_status` error, as a run does).
func sampleResult(_ probe: String, outcome: Outcome) -> ProbeResult {
    var result = sampleResult(probe)
    result.outcome = outcome
    if outcome == .failed {
        result.steps[0].ok = false
        result.steps[0].status = 500
        result.error = ProbeError(kind: .httpStatus, step: "get", message: "expected status 200, got 500")
    }
    return result
}

@Suite("Urgent pushes: what can change a decision goes out at once", .serialized)
struct UrgentPushTests {
    let logs = CapturedLogs()
    let key = AgentSigningKey()
    /// Long enough that a result pushed within `atOnce` cannot have waited for it.
    static let flushInterval: Duration = .seconds(60)
    /// The deadline for a push "at once": a quarter of the flush interval, generous under load.
    static let atOnce: Duration = .seconds(15)
    /// How long a result that must wait for the flush interval is watched not to go out. Under
    /// load it can only stay unsent longer, so this cannot fail a correct uploader; an uploader
    /// that pushed it at once would have done so within milliseconds.
    static let stillWaiting: Duration = .seconds(1)

    /// An uploader (its own journal, `flush_interval` 60 s) running in a service group, pushing
    /// to a real loopback receiver.
    struct Running {
        let dir: TemporaryDirectory
        let receiver: PushReceiver
        let spool: Spool
        let journal: JournalWriter
        let group: ServiceGroup
        let task: Task<Void, any Error>

        /// Graceful shutdown (a no-op when it ended already), then everything removed.
        func stop() async throws {
            await group.triggerGracefulShutdown()
            try await task.value
            receiver.stop()
            spool.close()
            dir.remove()
        }
    }

    func start(mode: PushReceiver.Mode = .accept, metrics: AgentMetrics? = nil) throws -> Running {
        let dir = try TemporaryDirectory("urgent-push")
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: mode)
        let spool = try Spool(directory: dir.file("spool"), logger: logs.logger())
        let journal = JournalWriter(spool: spool)
        var config = AgentConfig(agentID: "eu-1", region: "eu")
        config.collector.url = receiver.url
        config.collector.flushInterval = Self.flushInterval
        config.collector.timeout = .seconds(5)
        var uploader = Uploader(settings: .init(config: config), journal: journal, key: key, logger: logs.logger())
        uploader.metrics = metrics
        let group = ServiceGroup(services: [uploader], gracefulShutdownSignals: [], logger: logs.logger())
        return Running(dir: dir, receiver: receiver, spool: spool, journal: journal, group: group, task: Task { try await group.run() })
    }

    /// Waits until the uploader is idle, waiting for the next result (not between a push and
    /// its next look at the spool, which would take a result submitted now at once).
    func waitUntilIdle(_ running: Running) async throws {
        try await waitUntil("the uploader idle", timeout: Self.atOnce) { running.journal.waiting.forResult == 1 }
    }

    /// Submits a result that must wait for `flush_interval`, and waits until the uploader is in
    /// that pause.
    func submitSteady(_ result: ProbeResult, _ running: Running) async throws {
        try await waitUntilIdle(running)
        running.journal.submit(result)
        try await waitUntil("the uploader in its flush pause", timeout: Self.atOnce) { running.journal.waiting.forUrgentResult == 1 }
    }

    /// Watches for `stillWaiting` that the receiver gets no new request.
    func expectNoPush(_ running: Running, _ what: String) async throws {
        let before = running.receiver.snapshot.requests
        let clock = ContinuousClock()
        let end = clock.now + Self.stillWaiting
        while clock.now < end, running.receiver.snapshot.requests == before { try await Task.sleep(for: .milliseconds(20)) }
        #expect(running.receiver.snapshot.requests == before, "\(what) was pushed before flush_interval")
    }

    @Test("which results are urgent: not ok, and a probe's first 2 passing runs after that, per probe")
    func urgencyRule() {
        var urgency = PushUrgency()
        func urgent(_ probe: String, _ outcome: Outcome) -> Bool { urgency.isUrgent(sampleResult(probe, outcome: outcome)) }
        #expect(!urgent("a", .ok), "steady healthy")
        #expect(!urgent("a", .ok))
        #expect(urgent("a", .failed))
        #expect(!urgent("b", .ok), "another probe's problem makes nothing of b urgent")
        #expect(urgent("a", .failed))
        #expect(urgent("a", .ok), "first passing run after a failure")
        #expect(urgent("a", .degraded), "degraded is not ok")
        #expect(urgent("a", .ok), "counting starts again after any run that was not ok")
        #expect(urgent("a", .ok))
        #expect(!urgent("a", .ok), "steady again after \(PushUrgency.passingRunsAfterProblem) passing runs")
        #expect(!urgent("b", .ok))
    }

    @Test("flush_interval 60 s: a failed run's result is pushed at once, carrying the healthy result that was waiting; alone, that one waits")
    func failurePushedAtOnce() async throws {
        let running = try start()
        try await submitSteady(sampleResult("steady", outcome: .ok), running)
        try await expectNoPush(running, "a steady healthy result")
        #expect(running.spool.status.unsentResults == 1)

        let clock = ContinuousClock()
        let submitted = clock.now
        running.journal.submit(sampleResult("api", outcome: .failed))
        try await waitUntil("the failed result at the collector", timeout: Self.atOnce) { running.receiver.snapshot.results.count == 2 }
        let took = clock.now - submitted
        let s = running.receiver.snapshot
        #expect(s.storedBatches.count == 1, "one push carried both")
        #expect(s.results.map(\.probe) == ["steady", "api"])
        #expect(s.results.map(\.outcome) == [.ok, .failed])
        #expect(took < Self.flushInterval)
        try await running.stop()
    }

    @Test("the first 2 passing runs after a failure are pushed at once, each; the 3rd waits for flush_interval (and goes out at graceful shutdown)")
    func recoveryPushedAtOnce() async throws {
        let running = try start()
        running.journal.submit(sampleResult("api", outcome: .failed))
        try await waitUntil("the failure at the collector", timeout: Self.atOnce) { running.receiver.snapshot.results.count == 1 }
        for n in 1...PushUrgency.passingRunsAfterProblem {
            running.journal.submit(sampleResult("api", outcome: .ok))
            try await waitUntil("passing run \(n) at the collector", timeout: Self.atOnce) { running.receiver.snapshot.results.count == 1 + n }
        }
        #expect(running.receiver.snapshot.storedBatches.count == 1 + PushUrgency.passingRunsAfterProblem, "one push each")

        try await submitSteady(sampleResult("api", outcome: .ok), running)
        try await expectNoPush(running, "the 3rd passing run (steady again)")
        #expect(running.spool.status.unsentResults == 1)

        // Graceful shutdown ends the pause and pushes what is left.
        try await running.stop()
        let s = running.receiver.snapshot
        #expect(s.results.map(\.outcome) == [.failed] + Array(repeating: .ok, count: PushUrgency.passingRunsAfterProblem + 1))
    }

    @Test("while the collector's answers ask for prompt pushes, steady healthy results go out after 200 ms, not flush_interval; without that, they wait")
    func collectorAsksForPromptPushes() async throws {
        let metrics = AgentMetrics()
        let running = try start(metrics: metrics)
        try await submitSteady(sampleResult("steady", outcome: .ok), running)
        try await expectNoPush(running, "a steady healthy result before the collector asks")

        // The failure goes out at once (with the waiting result); its answer asks for prompt pushes.
        running.receiver.setFastFlush(seconds: PushProtocol.fastFlushSeconds)
        running.journal.submit(sampleResult("api", outcome: .failed))
        try await waitUntil("the failure at the collector", timeout: Self.atOnce) { running.receiver.snapshot.results.count == 2 }
        // Steady results now (another probe, so not a recovery run): each goes out promptly.
        let clock = ContinuousClock()
        for n in 1...3 {
            try await waitUntilIdle(running)
            let submitted = clock.now
            running.journal.submit(sampleResult("steady", outcome: .ok))
            try await waitUntil("steady result \(n) at the collector", timeout: Self.atOnce) { running.receiver.snapshot.results.count == 2 + n }
            let took = clock.now - submitted
            #expect(took >= PushProtocol.fastFlushInterval, "it waited for the prompt pause, so results that come together share a push")
            #expect(took < Self.atOnce)
        }
        try await running.stop()
        #expect(running.receiver.snapshot.results.map(\.outcome) == [.ok, .failed, .ok, .ok, .ok])
        // Every answer asked (the failure's and the 3 steady pushes'; a last push at shutdown, if any, too).
        let text = metrics.render(spool: running.spool.status)
        let requests = text.split(separator: "\n").first { $0.hasPrefix("sonde_agent_prompt_push_requests_total ") }
        #expect(requests.flatMap { Int($0.split(separator: " ").last ?? "") }.map { $0 >= 4 } == true, "\(requests ?? "no series")")
    }

    @Test("a collector outage: failures arriving during the retry wait do not cut it short; graceful shutdown still does")
    func outageKeepsTheRetryWait() async throws {
        // Retry-After: 60 on every push: the uploader's wait between attempts is 60 s.
        let running = try start(mode: .throttle(retryAfter: "60", times: 1000))
        running.journal.submit(sampleResult("api", outcome: .failed))
        try await waitUntil("the first (refused) push", timeout: Self.atOnce) { running.receiver.snapshot.requests == 1 }
        for _ in 0..<5 { running.journal.submit(sampleResult("api", outcome: .failed)) }
        await running.journal.flush()
        try await expectNoPush(running, "a retry during the Retry-After wait")
        #expect(running.spool.status.unsentResults == 6)

        let clock = ContinuousClock()
        let shutdown = clock.now
        await running.group.triggerGracefulShutdown()
        try await running.task.value
        #expect(clock.now - shutdown < Self.atOnce, "graceful shutdown ended the 60 s wait")
        #expect(running.spool.status.unsentResults == 6, "nothing lost: the refused results stay in the spool")
        try await running.stop()
    }

    @Test("the real sonde-agent with flush_interval 60 s: healthy runs wait; its first failed run and the first passing run after it reach the collector at once; SIGTERM pushes the rest")
    func agentPushesChangesAtOnce() async throws {
        let status = Mutex(200)
        let target = try LoopbackHTTPServer { _ in .json(status.withLock { $0 }, "{}") }
        defer { target.stop() }
        let dir = try TemporaryDirectory("urgent-agent")
        defer { dir.remove() }
        try key.write(to: dir.file("agent.key"))
        let receiver = try PushReceiver(publicKey: key.publicKey)
        defer { receiver.stop() }
        try """
            name: api
            component: api
            interval: 500ms
            timeout: 2s
            steps:
              - name: get
                request: {method: GET, url: "\(target.baseURL)/health"}
                assert: {status: 200}
            """.write(toFile: dir.file("api.yaml"), atomically: true, encoding: .utf8)
        try """
            agent: {id: urgent-1, region: eu}
            collector: {url: \(receiver.url), key: agent.key, flush_interval: 60s}
            spool: {path: spool}
            probes: [api.yaml]
            """.write(toFile: dir.file("agent.yaml"), atomically: true, encoding: .utf8)
        let agent = try ChildProcess("sonde-agent", ["run", "--config", dir.file("agent.yaml")])
        defer { agent.signal(SIGKILL) }
        func outcomes() -> [Outcome] { receiver.snapshot.results.map(\.outcome) }

        try await waitUntil("3 healthy runs", timeout: Self.atOnce) { target.requests.count >= 3 }
        #expect(receiver.snapshot.requests == 0, "healthy results wait for flush_interval")

        status.withLock { $0 = 500 }
        try await waitUntil("the first failed run at the collector", timeout: Self.atOnce) { outcomes().contains(.failed) }
        #expect(outcomes().prefix { $0 == .ok }.count >= 2, "the healthy results waiting went out with it")

        status.withLock { $0 = 200 }
        try await waitUntil("the first passing run after the failures at the collector", timeout: Self.atOnce) {
            outcomes().drop { $0 == .ok }.contains(.ok)
        }

        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit(timeout: .seconds(20)) == 0)
        let spool = try Spool(directory: dir.file("spool"), logger: logs.logger())
        defer { spool.close() }
        #expect(spool.status.unsentResults == 0, "graceful stop pushed what was left")
        #expect(receiver.snapshot.results.count == Int(spool.status.lastSeq))
        // Every push proves its agent before its body (`Sonde-Agent-Claim`, red team F7).
        #expect(receiver.snapshot.requests > 0 && receiver.snapshot.unprovenPushes == 0, "\(receiver.snapshot.unprovenPushes) unproven pushes")
    }

    @Test("the real sonde-agent: a collector answer naming a component runs that component's hourly probe at once and at its retry pace, marked as retries; others stay asleep")
    func agentConfirmsWhatTheCollectorAsks() async throws {
        let target = try LoopbackHTTPServer { _ in .json(200, "{}") }
        defer { target.stop() }
        let dir = try TemporaryDirectory("confirm-agent")
        defer { dir.remove() }
        try key.write(to: dir.file("agent.key"))
        let receiver = try PushReceiver(publicKey: key.publicKey)
        defer { receiver.stop() }
        for (name, component, interval) in [("api", "api", "500ms"), ("files", "files", "1h"), ("batch", "batch", "1h")] {
            try """
                name: \(name)
                component: \(component)
                interval: \(interval)
                retry_interval: 200ms
                timeout: 2s
                steps:
                  - name: get
                    request: {method: GET, url: "\(target.baseURL)/\(name)"}
                    assert: {status: 200}
                """.write(toFile: dir.file("\(name).yaml"), atomically: true, encoding: .utf8)
        }
        for name in ["files", "batch"] { try #require(Scheduler.offsetFraction(agent: "confirm-1", probe: name) > 0.01, "not due in the test") }
        try """
            agent: {id: confirm-1, region: eu}
            collector: {url: \(receiver.url), key: agent.key}
            spool: {path: spool}
            probes: [api.yaml, files.yaml, batch.yaml]
            """.write(toFile: dir.file("agent.yaml"), atomically: true, encoding: .utf8)
        let agent = try ChildProcess("sonde-agent", ["run", "--config", dir.file("agent.yaml")])
        defer { agent.signal(SIGKILL) }
        func results(_ probe: String) -> [ProbeResult] { receiver.snapshot.results.filter { $0.probe == probe } }

        try await waitUntil("the api probe's results at the collector", timeout: .seconds(20)) { results("api").count >= 2 }
        #expect(results("files").isEmpty && results("batch").isEmpty, "hourly probes not due yet")
        receiver.setConfirm(["files"])
        try await waitUntil("3 confirming runs of files at the collector", timeout: .seconds(20)) { results("files").count >= 3 }
        #expect(results("files").allSatisfy { $0.retry == true })
        #expect(results("batch").isEmpty, "batch was not asked")
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit(timeout: .seconds(20)) == 0)
    }
}
