import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

/// The issue's acceptance test: the real `sonde-agent run`, a real probe every 200 ms against a
/// real HTTP target, a real receiver that verifies signatures and deduplicates batch ids like the
/// collector, and SIGKILL three times. Every result produced must be delivered exactly once, in
/// order: unique ids, seq 1…N with no gap and no duplicate.
@Suite("SIGKILL and restart")
struct KillRestartTests {
    /// A temp folder with a key, a fast probe and a config pointing at `receiver`.
    struct Setup {
        let dir: TemporaryDirectory
        let key: AgentSigningKey
        let config: String
        var spool: String { dir.file("spool") }

        init() throws {
            dir = try TemporaryDirectory("agent-kill")
            key = AgentSigningKey()
            try key.write(to: dir.file("agent.key"))
            try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
            try """
                name: fast
                component: api
                interval: 200ms
                timeout: 2s
                steps:
                  - name: ping
                    request:
                      method: GET
                      url: ${target}/ping
                    assert:
                      status: 200
                """.write(toFile: dir.file("probes/fast.yaml"), atomically: true, encoding: .utf8)
            config = dir.file("agent.yaml")
        }

        func writeConfig(receiverURL: String, targetURL: String) throws {
            try """
                agent: {id: kill-1, region: eu}
                collector: {url: \(receiverURL), key: agent.key, batch_size: 3, timeout: 2s, flush_interval: 50ms, backoff: {base: 20ms, cap: 100ms}}
                spool: {path: spool}
                probes: [probes]
                variables: {target: \(targetURL)}
                scheduling: {shutdown_grace: 2s}
                """.write(toFile: config, atomically: true, encoding: .utf8)
        }
    }

    func start(_ setup: Setup) throws -> ChildProcess {
        try ChildProcess("sonde-agent", ["run", "--config", setup.config, "--log-level", "debug"])
    }

    /// Waits until this process has spooled `count` more results (its own log lines say so).
    func waitForSpooled(_ agent: ChildProcess, _ count: Int) async throws {
        try await waitUntil("\(count) results spooled by \(agent.pid)", timeout: .seconds(20)) {
            if !agent.isRunning { throw TestFailure("agent exited early:\n\(agent.allOutput)") }
            return agent.stderrLines.filter { $0.contains("result spooled") }.count >= count
        }
    }

    @Test("SIGKILL ×3 while the collector is down or mid-delivery: every result delivered exactly once, in order")
    func killAndRestart() async throws {
        let target = try LoopbackHTTPServer { _ in .json(200, #"{"status":"ok"}"#) }
        defer { target.stop() }
        let setup = try Setup()
        defer { setup.dir.remove() }
        let receiver = try PushReceiver(publicKey: setup.key.publicKey, mode: .fail(503))
        defer { receiver.stop() }
        try setup.writeConfig(receiverURL: receiver.url, targetURL: target.baseURL)

        // Round 1: collector answering 503; results pile up, a batch is made and resent.
        var agent = try start(setup)
        try await waitForSpooled(agent, 5)
        try await waitUntil("a refused push") { !receiver.snapshot.receivedBatches.isEmpty }
        agent.signal(SIGKILL)
        #expect(try await agent.waitForExit() == SIGKILL)
        let refusedBatch = receiver.snapshot.receivedBatches.last!

        // Round 2: the collector accepts; the backlog goes out, the refused batch first (same id).
        // Killed while delivering, so a batch may be stored but not acknowledged.
        receiver.setMode(.accept)
        agent = try start(setup)
        try await waitUntil("the old batch delivered") { receiver.snapshot.storedBatches.count >= 2 }
        #expect(receiver.snapshot.storedBatches.first == refusedBatch, "the batch made before the kill is resent with its id")
        try await waitForSpooled(agent, 3)
        agent.signal(SIGKILL)
        #expect(try await agent.waitForExit() == SIGKILL)

        // Round 3: down again, killed with a backlog.
        receiver.setMode(.fail(503))
        agent = try start(setup)
        try await waitForSpooled(agent, 4)
        agent.signal(SIGKILL)
        #expect(try await agent.waitForExit() == SIGKILL)

        // Round 4: down, killed right after start (mid-replay or mid-first-run).
        agent = try start(setup)
        try await agent.waitForLine(stderr: true) { $0.contains("scheduler started") }
        agent.signal(SIGKILL)
        #expect(try await agent.waitForExit() == SIGKILL)

        // Final: collector accepts; a graceful stop pushes what is left.
        receiver.setMode(.accept)
        agent = try start(setup)
        try await waitForSpooled(agent, 3)
        let before = receiver.snapshot.results.count
        try await waitUntil("new deliveries") { receiver.snapshot.results.count > before + 2 }
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit() == 0)

        let spool = try Spool(directory: setup.spool, logger: CapturedLogs().logger())
        defer { spool.close() }
        let produced = spool.status.lastSeq
        #expect(spool.status.unsentResults == 0, "the graceful stop delivered the rest")
        let delivered = receiver.snapshot
        #expect(delivered.badSignatures == 0)
        #expect(delivered.results.map { $0.seq ?? 0 } == Array(1...produced), "seq contiguous from 1, no gap, no duplicate, in order")
        #expect(Set(delivered.results.map(\.id)).count == delivered.results.count, "unique result ids")
        #expect(delivered.results.allSatisfy { $0.agent == "kill-1" && $0.region == "eu" && $0.probe == "fast" })
        #expect(produced >= 15)
    }
}
