import ArgumentParser

/// `sonde-bench`: Sonde's benchmarks. Each subcommand measures one thing, runs it several times,
/// prints a line per run and writes a markdown fragment (`--out`) that `scripts/bench.sh`
/// assembles into BENCHMARKS.md. Benchmarks report numbers; they never fail on a slow result.
@main
struct SondeBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sonde-bench",
        abstract: "Sonde benchmarks (run against release builds; see BENCHMARKS.md).",
        subcommands: [IngestBenchmark.self, IngestStagesBenchmark.self, StoreIngestBenchmark.self, CorrelationBenchmark.self, PostgresBenchmark.self])
}
