import ArgumentParser
import CollectorStore
import Correlation
import Foundation
import Logging
import SondeCore

/// Where the ingest path spends its time, stage by stage, single-threaded, in process: the
/// signature check, JSON decoding, per-result re-encoding, the SQLite transaction and the
/// correlation engine's ingest. (perf sampling is unreliable on this VM; this is the profile.)
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
        let clock = ContinuousClock()
        var rows: [(String, Double)] = []
        func stage(_ name: String, _ body: () throws -> Void) rethrows {
            let elapsed = try clock.measure(body)
            rows.append((name, elapsed.seconds * 1e6 / n))
        }
        try stage("Ed25519 verify (per batch, ÷ results)") { for (body, signature) in bodies { guard publicKey.verify(signatureHeader: signature, body: body) else { throw BenchFailure("bad signature") } } }
        var decoded: [PushBatch] = []
        try stage("JSON decode PushBatch (SondeJSON)") { decoded = try bodies.map { try SondeJSON.decode(PushBatch.self, from: $0.0) } }
        try stage("JSON re-encode each result (SondeJSON)") {
            let encoder = SondeJSON.encoder()
            for batch in decoded { for result in batch.results { _ = try encoder.encode(result) } }
        }
        let folder = NSTemporaryDirectory() + "sonde-bench-stages-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let store = try SQLiteCollectorStore(path: folder + "/collector.db", logger: Logger(label: "sonde-bench"))
        try await store.migrate()
        try await store.upsertAgent(AgentRecord(id: "stage-1", region: "eu", publicKey: publicKey.base64))
        let start = clock.now
        for (batch, (body, signature)) in zip(decoded, bodies) {
            _ = try await store.ingest(
                batch: BatchRecord(batchID: batch.batchID, agent: batch.agent, receivedAt: Date(), body: body, signature: signature), results: batch.results)
        }
        rows.append(("SQLiteCollectorStore.ingest (one transaction per batch)", (clock.now - start).seconds * 1e6 / n))
        var engine = CorrelationEngine(config: CorrelationConfig(), agents: [AgentInfo(id: "stage-1", region: "eu")])
        stage("CorrelationEngine.ingest") { for batch in decoded { engine.ingest(batch.results, receivedAt: Date()) } }
        var table = MarkdownTable(header: ["build", "stage", "µs per result"])
        for (name, micros) in rows { table.rows.append([label, name, format(micros, 2)]) }
        table.rows.append([label, "**sum**", format(rows.map(\.1).reduce(0, +), 2)])
        let text = """
            Single-threaded, in process, \(batches) batches × \(results) results of the benchmark workload.

            \(table.text)
            Reproduce: `.build/release/sonde-bench ingest-stages --batches \(batches) --results \(results)`

            """
        print(text)
        try writeFragment(text, to: out)
    }
}
