import Foundation
import Logging
import ProbeEngine
import SondeCore
import Testing

/// Parses a probe from YAML text (failing the test with the diagnostics when it is invalid).
func makeProbe(_ yaml: String, variables: Set<String> = ["base_url"], file: String = "test.yaml") throws -> ProbeDefinition {
    let (probe, problems) = ProbeLoader.parse(yaml: yaml, file: file, variables: variables)
    guard let probe else {
        throw ProbeTestFailure("probe did not validate:\n" + problems.map(\.description).joined(separator: "\n"))
    }
    return probe
}

struct ProbeTestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}


extension ProbeResult {
    /// The result as agents push it.
    var jsonText: String { String(decoding: (try? SondeJSON.encode(self)) ?? Data(), as: UTF8.self) }
}

/// Every step's phases add up to its total (within rounding) and none is negative.
func expectHonestTimings(_ result: ProbeResult, sourceLocation: SourceLocation = #_sourceLocation) {
    for step in result.steps where !step.method.isEmpty {
        let t = step.timings
        let sum = t.dns + t.connect + t.tls + t.ttfb + t.transfer
        #expect(abs(sum - t.total) < 0.01, "step \(step.name): phases \(sum) ms vs total \(t.total) ms", sourceLocation: sourceLocation)
        #expect([t.dns, t.connect, t.tls, t.ttfb, t.transfer].allSatisfy { $0 >= 0 }, sourceLocation: sourceLocation)
        #expect(t.total > 0, "step \(step.name) has no total time", sourceLocation: sourceLocation)
    }
}
