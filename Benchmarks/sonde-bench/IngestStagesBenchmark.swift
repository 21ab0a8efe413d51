import ArgumentParser
import CollectorStore
import Correlation
import Foundation
import Logging
import SondeCore

/// Where the ingest path spends its time, stage by stage, single-threaded, in process: the
/// signature check, JSON decoding (and Foundation's decoder for reference), the SQLite transaction
/// (per batch, and grouped as the collector's IngestWriter does) and the correlation engine's ingest. (perf sampling is unreliable on this VM; this is the profile.)
struct IngestStagesBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "ingest-stages", abstract: "Per-stage cost of the ingest path (µs per result).")

    @Option(help: "Batches.") var batches = 200
    @Option(help: "Results per batch.") var results = 100
    @Option(help: "Write a markdown fragment here.") var out: String?
    @Option(help: "Label for this build in the table.") var label = "release"

    func run() async throws {
        let key = AgentSigningKey()
        let publicKey = key.publicKey
        let bodies = try (0..<batches).map { try Workload.signedBatch(agent: "stage-1", region: "eu", key: key, results: results, sequence: $0) }
        let n = Double(batches * results)
        // (stage, µs per result, on the ingest path?): reference rows are shown but not summed.
        // CPU time of the process, not wall time: the machine is shared, and the store's writes run
        // on GRDB's writer thread (so a thread clock would miss them).
        func cpuSeconds() -> Double {
            var time = timespec()
            clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &time)
            return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
        }
        var rows: [(String, Double, Bool)] = []
        func stage(_ name: String, onPath: Bool = true, _ body: () throws -> Void) rethrows {
            let start = cpuSeconds()
            try body()
            rows.append((name, (cpuSeconds() - start) * 1e6 / n, onPath))
        }
        try stage("Ed25519 verify (per batch, ÷ results)") { for (body, signature) in bodies { guard publicKey.verify(signatureHeader: signature, body: body) else { throw BenchFailure("bad signature") } } }
        try stage("JSON decode PushBatch (Foundation JSONDecoder, reference)", onPath: false) {
            for (body, _) in bodies { _ = try SondeJSON.decode(PushBatch.self, from: body) }
        }
        var decoded: [PushBatchDecoder.Decoded] = []
        try stage("JSON decode PushBatch (PushBatchDecoder)") { decoded = try bodies.map { try PushBatchDecoder.decode($0.0) } }
        let folder = NSTemporaryDirectory() + "sonde-bench-stages-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        func pending(_ index: Int, prefix: String) -> PendingBatch {
            let (body, signature) = bodies[index]
            let batch = decoded[index].batch
            return PendingBatch(
                batch: BatchRecord(batchID: prefix + batch.batchID, agent: batch.agent, receivedAt: Date(), body: body, signature: signature),
                results: batch.results, resultRanges: decoded[index].resultRanges)
        }
        for grouped in [false, true] {
            let store = try SQLiteCollectorStore(path: folder + "/collector-\(grouped).db", logger: Logger(label: "sonde-bench"))
            try await store.migrate()
            try await store.upsertAgent(AgentRecord(id: "stage-1", region: "eu", publicKey: publicKey.base64))
            let start = cpuSeconds()
            if grouped {
                for chunk in stride(from: 0, to: bodies.count, by: 64) {
                    for outcome in try await store.ingest(group: (chunk..<min(chunk + 64, bodies.count)).map { pending($0, prefix: "") }) { _ = try outcome.get() }
                }
                rows.append(("SQLiteCollectorStore.ingest(group:) (64 batches per transaction, as IngestWriter)", (cpuSeconds() - start) * 1e6 / n, false))
            } else {
                for index in bodies.indices { _ = try await store.ingest(group: [pending(index, prefix: "")])[0].get() }
                rows.append(("SQLiteCollectorStore.ingest (one transaction per batch)", (cpuSeconds() - start) * 1e6 / n, true))
            }
        }
        var engine = CorrelationEngine(config: CorrelationConfig(), agents: [AgentInfo(id: "stage-1", region: "eu")])
        stage("CorrelationEngine.ingest") { for batch in decoded { engine.ingest(batch.batch.results, receivedAt: Date()) } }
        var table = MarkdownTable(header: ["build", "stage", "CPU µs per result"])
        for (name, micros, _) in rows { table.rows.append([label, name, format(micros, 2)]) }
        table.rows.append([label, "**sum of the ingest path** (reference rows excluded)", format(rows.filter(\.2).map(\.1).reduce(0, +), 2)])
        let text = """
            Single-threaded, in process, \(batches) batches × \(results) results of the benchmark workload; process CPU time per result.

            \(table.text)
            Reproduce: `.build/release/sonde-bench ingest-stages --batches \(batches) --results \(results)`

            """
        print(text)
        try writeFragment(text, to: out)
    }
}
