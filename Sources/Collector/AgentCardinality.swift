import CollectorStore
import Foundation
import SondeCore
import Synchronization

/// Per-agent caps on distinct probe and component names: every name becomes metric series,
/// status-page rows and possibly incidents, so one enrolled agent inventing names must hit a
/// wall, not the collector's memory. Known names are loaded from storage at start-up.
final class AgentCardinality: Sendable {
    private struct Names {
        var probes = Set<String>()
        var components = Set<String>()
    }
    private let limits: Limits
    private let names: Mutex<[String: Names]>

    init(limits: Limits, known: [SeriesNames]) {
        self.limits = limits
        var names: [String: Names] = [:]
        for series in known {
            names[series.agent, default: Names()].probes.insert(series.probe)
            names[series.agent, default: Names()].components.insert(series.component)
        }
        self.names = Mutex(names)
    }

    /// Admits the batch's names for `agent` (remembering new ones) or refuses it whole with 422,
    /// naming the limit to raise.
    func admit(_ results: [ProbeResult], agent: String) throws(APIError) {
        let limits = self.limits
        let refusal: APIError? = names.withLock { table in
            var entry = table[agent] ?? Names()
            // Names were checked by `IngestDecoding` (`ResultText`); here they are only counted.
            for result in results {
                entry.probes.insert(result.probe)
                entry.components.insert(result.component)
                // A step's own component is a component as much as the probe's (its verdict, its row).
                for case let component? in result.steps.map(\.component) { entry.components.insert(component) }
            }
            if entry.probes.count > limits.maxProbesPerAgent {
                return APIError(
                    .unprocessableContent, "too_many_probes",
                    "agent \"\(agent)\" would report \(entry.probes.count) distinct probes; at most \(limits.maxProbesPerAgent) are accepted (limits.max_probes_per_agent)")
            }
            if entry.components.count > limits.maxComponentsPerAgent {
                return APIError(
                    .unprocessableContent, "too_many_components",
                    "agent \"\(agent)\" would report \(entry.components.count) distinct components; at most \(limits.maxComponentsPerAgent) are accepted (limits.max_components_per_agent)")
            }
            table[agent] = entry
            return nil
        }
        if let refusal { throw refusal }
    }

    /// True when `text` holds a control character (a name or id a client sent).
    static func hasControlCharacters(_ text: String) -> Bool {
        text.unicodeScalars.contains { $0.properties.generalCategory == .control }
    }
}
