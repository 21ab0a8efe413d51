import CollectorStore
import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// Drill 2: SIGKILL a real `sonde-collector serve` under ingest load, again and again. Every
/// batch that was acknowledged must be in the database after the restarts, complete (its stored
/// result rows match its result count), and no batch may be half-stored.
@Suite(.serialized) struct KillDrillTests {
    struct Sent: Sendable {
        var agent: String
        var results: Int
        var body: Data
        var signature: String
    }

    @Test func sigkillUnderIngestLosesNoAcknowledgedBatch() async throws {
        let kills = Drill.scale(quick: 3, full: 20)
        let folder = try TemporaryDirectory("sonde-drill-kill")
        defer { folder.remove() }
        let agents = (0..<4).map { DrillAgent(id: "kill-\($0)", region: ["eu", "us"][$0 % 2]) }
        let acked = Shared<[String: Sent]>([:])
        let attempted = Shared(0)
        let client = CurlHTTPClient(threads: agents.count)

        for kill in 1...kills {
            let collector = try await CollectorUnderTest.start(in: folder, agents: agents)
            let target = acked.withLock { $0.count } + Int.random(in: 5...30)
            let stop = Shared(false)
            let load = Task {
                await withTaskGroup(of: Void.self) { group in
                    for agent in agents {
                        group.addTask {
                            while !stop.value {
                                let count = Int.random(in: 1...50)
                                guard let (id, body, signature) = try? agent.signedBatch(count) else { continue }
                                attempted.withLock { $0 += 1 }
                                let request = agent.pushRequest(baseURL: collector.baseURL, body: body, signature: signature, timeout: .seconds(5))
                                guard let response = try? await client.perform(request), response.status == 200,
                                    let ack = try? SondeJSON.decode(PushAck.self, from: response.body), ack.accepted == count
                                else { continue }
                                acked.withLock { $0[id] = Sent(agent: agent.id, results: count, body: body, signature: signature) }
                            }
                        }
                    }
                }
            }
            try await waitUntil("\(target) acknowledged batches before kill \(kill)", timeout: .seconds(60), every: .milliseconds(5)) {
                acked.withLock { $0.count } >= target
            }
            collector.child.signal(SIGKILL)
            let status = try await collector.child.waitForExit(timeout: .seconds(10))
            #expect(collector.child.process.terminationReason == .uncaughtSignal && status == SIGKILL)
            stop.withLock { $0 = true }
            await load.value
        }

        // Restart once more: everything acknowledged is there, whole; nothing is half-stored.
        let collector = try await CollectorUnderTest.start(in: folder, agents: agents)
        let store = try SQLiteCollectorStore(path: collector.databasePath, logger: Logger(label: "drill"))
        let stored = try await store.batchIntegrity()
        let sent = acked.value
        let missing = sent.keys.filter { stored[$0] == nil }
        let wrongCount = sent.filter { id, batch in stored[id].map { $0.declared != batch.results || $0.stored != batch.results } ?? false }
        let halfStored = stored.filter { $0.value.declared != $0.value.stored }
        let unackedButStored = stored.keys.filter { sent[$0] == nil }.count

        // Resending is safe: every acknowledged batch is now a duplicate.
        var duplicates = 0
        for (_, batch) in sent.sorted(by: { $0.key < $1.key }).prefix(200) {
            let agent = agents.first { $0.id == batch.agent }!
            let response = try await client.perform(agent.pushRequest(baseURL: collector.baseURL, body: batch.body, signature: batch.signature))
            if response.status == 200, (try? SondeJSON.decode(PushAck.self, from: response.body))?.duplicate == true { duplicates += 1 }
        }
        await collector.child.stop()

        let passed = missing.isEmpty && wrongCount.isEmpty && halfStored.isEmpty && duplicates == min(200, sent.count)
        Drill.report(
            "2-kill",
            """
            ### Drill 2: SIGKILL under ingest load — \(passed ? "PASS" : "FAIL")

            A real `sonde-collector serve` (SQLite, WAL, `synchronous=NORMAL`) is killed with SIGKILL \(kills) times while \
            \(agents.count) senders push signed batches of 1–50 results; after each kill it restarts on the same database. \
            Then: every acknowledged batch must be stored with all its result rows, no stored batch may have fewer (or \
            more) result rows than its result count, and resending acknowledged batches must answer `duplicate: true`.

            \(Drill.table([
                ("kills (SIGKILL)", "\(kills)"),
                ("pushes attempted", "\(attempted.value)"),
                ("batches acknowledged", "\(sent.count)"),
                ("results acknowledged", "\(sent.values.map(\.results).reduce(0, +))"),
                ("acknowledged batches present after restart", "\(sent.count - missing.count)"),
                ("acknowledged batches missing", "\(missing.count)"),
                ("acknowledged batches with a wrong result count", "\(wrongCount.count)"),
                ("stored batches half-stored (rows ≠ count)", "\(halfStored.count)"),
                ("stored but never acknowledged (in flight at a kill; complete)", "\(unackedButStored)"),
                ("acknowledged batches resent → duplicate", "\(duplicates) of \(min(200, sent.count))"),
            ]))
            """)
        #expect(missing.isEmpty, "acknowledged batches missing after SIGKILL: \(missing.prefix(5))")
        #expect(wrongCount.isEmpty, "acknowledged batches stored with the wrong result count: \(wrongCount.keys.prefix(5))")
        #expect(halfStored.isEmpty, "half-stored batches: \(halfStored.prefix(5))")
        #expect(duplicates == min(200, sent.count))
        #expect(sent.count >= kills * 5)
    }
}
