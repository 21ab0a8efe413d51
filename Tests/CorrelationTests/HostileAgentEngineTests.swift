import Foundation
import SondeCore
import Testing

@testable import Correlation

/// What one enrolled agent can do to the engine with the words it chooses (red team, fourth pass).
@Suite struct HostileAgentEngineTests {
    /// eu-1 fails with a new made-up error code on every run while a real fault (`file_expired`)
    /// is on everywhere. Its codes never grow the engine's code table past its bound (each tick
    /// costs what is failing, not every code ever seen), never become incident members (no
    /// "changed: codes" update every membership gap) and never reach the people's text.
    @Test func madeUpErrorCodesNeitherGrowTheEngineNorChurnTheIncident() throws {
        var fleet = FleetSimulation()
        fleet.step(seconds: 30)
        let expired = ProbeError(kind: .httpStatus, step: "download", message: "File has expired", code: "file_expired")
        fleet.faults["files"] = { agent, _, probe, run in
            guard !probe.control else { return nil }
            if agent == "eu-1" {
                return (.failed, ProbeError(kind: .httpStatus, step: "download", message: "HTTP 500", code: "made-up-\(probe.name)-\(run)"))
            }
            return probe.component == "files" ? (.failed, expired) : nil
        }
        var largest = 0
        for _ in 0..<2_600 {
            fleet.step()
            largest = max(largest, fleet.engine.errorCodeNames.count)
        }
        // eu-1 made about 2 codes a second: over 5,000 in all.
        #expect(largest <= CorrelationEngine.errorCodesKept + 1, "largest code table: \(largest)")
        #expect(fleet.engine.errorCodesInUse > 0 && fleet.engine.errorCodesInUse < 100, "the clean-up ran and kept only codes in use: \(fleet.engine.errorCodesInUse)")
        let files = try #require(fleet.engine.openIncidents.first { $0.component == "files" })
        #expect(files.evidence.errorCodes["file_expired"] ?? 0 >= 2, "the real code is still counted: \(files.evidence.errorCodes)")
        let churn = fleet.events.filter { $0.type == .incidentUpdated && $0.summary.contains("codes") }
        #expect(churn.isEmpty, "\(churn.map(\.summary))")
        #expect(!files.updates.contains { $0.message.contains("made-up") }, "\(files.updates.map(\.message))")
    }

    /// A long incident keeps its opening entry, every person's entry and the newest automatic
    /// ones: its events (which carry the whole incident) stay bounded.
    @Test func automaticTimelineEntriesAreBounded() {
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var updates: [IncidentUpdate] = []
        for i in 0..<250 {
            let author = i % 50 == 7 ? "oncall" : IncidentUpdate.automatic
            updates.append(IncidentUpdate(
                time: start.addingTimeInterval(Double(i)), status: .investigating, scope: .platform, severity: .partialOutage,
                message: "entry \(i)", author: author))
        }
        let before = updates.filter { $0.author == IncidentUpdate.automatic }.map(\.message)
        CorrelationEngine.trimAutomaticUpdates(&updates)
        let automatic = updates.filter { $0.author == IncidentUpdate.automatic }.map(\.message)
        let kept = CorrelationEngine.automaticUpdatesKept
        #expect(automatic == [before[0]] + before.suffix(kept - 1), "the opening entry and the newest \(kept - 1)")
        #expect(updates.filter { $0.author == "oncall" }.count == 5, "people's entries stay")
        #expect(updates.map(\.time) == updates.map(\.time).sorted(), "in order")
    }
}
