import Foundation
import SondeCore
import Synchronization

/// The collector's own counters and each (agent, probe)'s latest result, for `GET /metrics`.
public final class CollectorMetrics: Sendable {
    struct Counters {
        var batchesAccepted = 0
        var batchesDuplicate = 0
        var batchesRejected = 0
        var results = 0
        var webhookDelivered = 0
        var webhookFailed = 0
        var webhookDeadLettered = 0
        /// Refusals by (where, reason code); reason codes are this program's own, a fixed set.
        var refusals: [RefusalKey: Int] = [:]
    }

    /// Where a request was refused.
    enum Surface: String, Sendable {
        /// `POST /v1/results` (agents).
        case ingest
        /// The token-protected API, the status page and `/metrics`.
        case api
    }

    struct RefusalKey: Hashable, Comparable {
        var surface: String
        var reason: String
        static func < (a: RefusalKey, b: RefusalKey) -> Bool { (a.surface, a.reason) < (b.surface, b.reason) }
    }

    struct ProbeKey: Hashable {
        var agent: String
        var probe: String
    }

    private let counters = Mutex(Counters())
    private let latest = Mutex([ProbeKey: ProbeResult]())

    public init() {}

    func batchAccepted(results: Int) { counters.withLock { $0.batchesAccepted += 1; $0.results += results } }
    func batchDuplicate() { counters.withLock { $0.batchesDuplicate += 1 } }
    func batchRejected() { counters.withLock { $0.batchesRejected += 1 } }
    func webhookDelivered() { counters.withLock { $0.webhookDelivered += 1 } }
    func webhookFailed() { counters.withLock { $0.webhookFailed += 1 } }
    func webhookDeadLettered() { counters.withLock { $0.webhookDeadLettered += 1 } }
    func refused(_ surface: Surface, reason: String) {
        counters.withLock { $0.refusals[RefusalKey(surface: surface.rawValue, reason: reason), default: 0] += 1 }
    }

    /// Keeps the newest result per (agent, probe).
    func record(_ results: [ProbeResult]) {
        latest.withLock { latest in
            for result in results {
                let key = ProbeKey(agent: result.agent, probe: result.probe)
                if let current = latest[key], current.startedAt > result.startedAt { continue }
                latest[key] = result
            }
        }
    }

    var latestResults: [ProbeResult] {
        latest.withLock { Array($0.values) }.sorted { ($0.probe, $0.agent) < ($1.probe, $1.agent) }
    }

    var snapshot: Counters { counters.withLock { $0 } }
}

/// Prometheus text exposition format 0.0.4, written by hand.
struct PrometheusText {
    private(set) var text = ""
    private var declared = Set<String>()

    mutating func declare(_ name: String, type: String, help: String) {
        guard declared.insert(name).inserted else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    mutating func reserve(_ bytes: Int) { text.reserveCapacity(bytes) }

    mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        sample(name, rendered: labels.isEmpty ? "" : Self.labels(labels), value)
    }

    /// A sample whose label set is already rendered (`{a="b",…}` or empty).
    mutating func sample(_ name: String, rendered labels: String, _ value: Double) {
        text += name
        text += labels
        text += " "
        text += Self.format(value)
        text += "\n"
    }

    static func labels(_ labels: [(String, String)]) -> String {
        "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
    }

    static func escape(_ value: String) -> String {
        // Most values need nothing: scan the bytes before building a new string.
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else { return value }
        return value.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"").replacingOccurrences(of: "\n", with: "\\n")
    }

    static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }
}
