// The memory floor of any agent on Sonde's stack, for the cost benchmark's memory columns: the
// benchmark's GETs over libcurl (fresh connection each), paced by Swift concurrency, as a
// ServiceLifecycle service behind ArgumentParser, logging through swift-log, each result encoded
// by FoundationEssentials' JSONEncoder with a Date. No Sonde code at all: what Sonde's agent
// uses beyond this is its own. Prints {"gets", "failed", "hwm_kib"}.
import ArgumentParser
import MemoryFloorSupport
import FoundationEssentials
import Logging
import ServiceLifecycle

struct RunRecord: Codable {
    var probe: String
    var startedAt: Date
    var durationMs: Double
    var ok: Bool
}

struct GetLoop: Service {
    let url: String
    let count: Int
    let rate: Double
    let logger: Logger

    func run() async throws {
        let encoder = JSONEncoder()
        let clock = ContinuousClock()
        let start = clock.now
        var failed = 0
        var bytes = 0
        for i in 0..<count {
            try await Task.sleep(until: start + .milliseconds(Int64(Double(i) * 1000 / rate)), clock: clock)
            let began = clock.now
            let ok = floorGet(url)
            if !ok { failed += 1 }
            let elapsed = began.duration(to: clock.now)
            let result = RunRecord(probe: "get", startedAt: Date(), durationMs: Double(elapsed.components.seconds) * 1000 + Double(elapsed.components.attoseconds) / 1e15, ok: ok)
            bytes += try encoder.encode(result).count
            if i % 500 == 0 { logger.debug("progress", metadata: ["runs": "\(i)", "bytes": "\(bytes)"]) }
        }
        print("{\"gets\": \(count), \"failed\": \(failed), \"hwm_kib\": \(peakRSSKiB())}")
    }
}

@main
struct MemoryFloor: AsyncParsableCommand {
    @Argument(help: "The URL to GET.") var url: String
    @Argument(help: "How many GETs.") var count: Int
    @Argument(help: "GETs per second.") var rate: Double

    func run() async throws {
        floorCurlSetUp()
        let logger = Logger(label: "sonde-memory-floor")
        let loop = GetLoop(url: url, count: count, rate: rate, logger: logger)
        let group = ServiceGroup(configuration: .init(
            services: [.init(service: loop, successTerminationBehavior: .gracefullyShutdownGroup)], logger: logger))
        try await group.run()
    }
}
