import ArgumentParser
import CollectorStore
import Foundation
import Logging
import SondeCore

/// The storage layer alone: `SQLiteCollectorStore.ingest` from concurrent tasks, no HTTP, no
/// signature check, no JSON decoding. Separates the database's cost from the server's.
struct StoreIngestBenchmark: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ingest-store", abstract: "Batches straight into SQLiteCollectorStore (no HTTP), for profiling.")

    @Option(help: "Concurrent writers.") var writers = 8
    @Option(help: "Batches per run.") var batches = 1600
    @Option(help: "Results per batch.") var results = 100
    @Option(help: "Runs (medians reported).") var runs = 3
    @Option(help: "Label for this build in the table.") var label = "release"
    @Option(help: "Write a markdown fragment here.") var out: String?

    func run() async throws {
        var rates: [Double] = []
        for r in 1...runs {
            let rate = try await measure()
            rates.append(rate)
            print("  ingest-store run \(r): \(grouped(rate)) results/s")
        }
        var table = MarkdownTable(header: ["build", "writers", "results/s (median)", "min…max"])
        table.rows.append([label, "\(writers)", grouped(Stats.median(rates)), "\(grouped(rates.min()!))…\(grouped(rates.max()!))"])
        let text = """
            `SQLiteCollectorStore.ingest(batch:results:)` called directly by \(writers) concurrent tasks: \(batches) batches × \
            \(results) results per run, decoded results handed in (as the HTTP handler does after verifying). Medians of \(runs) runs.

            \(table.text)
            Reproduce: `.build/release/sonde-bench ingest-store --writers \(writers) --batches \(batches) --results \(results) --runs \(runs)`

            """
        print(text)
        try writeFragment(text, to: out)
    }

    func measure() async throws -> Double {
        let folder = NSTemporaryDirectory() + "sonde-bench-store-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: folder) }
        let store = try SQLiteCollectorStore(path: folder + "/collector.db", logger: Logger(label: "sonde-bench"))
        try await store.migrate()
        var work: [[(BatchRecord, [ProbeResult])]] = []
        for w in 0..<writers {
            let agent = String(format: "bench-%03d", w)
            let key = AgentSigningKey()
            try await store.upsertAgent(AgentRecord(id: agent, region: "eu", publicKey: key.publicKey.base64))
            work.append(
                try (0..<max(1, batches / writers)).map { n in
                    let (body, signature) = try Workload.signedBatch(agent: agent, region: "eu", key: key, results: results, sequence: n)
                    let batch = try SondeJSON.decode(PushBatch.self, from: body)
                    return (BatchRecord(batchID: batch.batchID, agent: agent, receivedAt: Date(), body: body, signature: signature), batch.results)
                })
        }
        let clock = ContinuousClock()
        let start = clock.now
        let stored = try await withThrowingTaskGroup(of: Int.self) { group in
            for batches in work {
                group.addTask {
                    var count = 0
                    for (record, results) in batches {
                        if case .stored(let new) = try await store.ingest(batch: record, results: results) { count += new.count }
                    }
                    return count
                }
            }
            return try await group.reduce(0, +)
        }
        return Double(stored) / (clock.now - start).seconds
    }
}
