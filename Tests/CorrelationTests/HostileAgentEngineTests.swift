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

    /// An eu outage of files seen by eu-1, while eu-2 (lying, or not reached by the fault) passes,
    /// in a region of two agents. By default the peer test calls eu-1 local and eu reads
    /// operational: the outage is hidden by one agent (the verdict review, 34th session).
    /// `local_fault_peers: 2` makes that take two passing peers: eu-1's failures then open an eu
    /// incident, within detection's bound, and eu-1 gets no local fault. A third eu agent that
    /// passes with eu-2 still makes a lone failing agent local.
    @Test(arguments: [1, 2])
    func oneLyingPeerHidesARegionsOutageOnlyWhereOnePeerSuffices(peers: Int) throws {
        for eu in [2, 3] {
            var fleet = FleetSimulation(
                regions: ["eu": eu, "us": 2, "ap": 2], config: CorrelationConfig(localFaultPeers: peers))
            fleet.step(seconds: 40)
            let start = fleet.now
            fleet.faults["eu outage seen by eu-1"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"])
            let events = fleet.step(seconds: 40)
            let log = events.map { "\($0.type.rawValue) \($0.summary)" }.joined(separator: "\n")
            let local = events.contains { $0.type == .agentLocalFault && $0.agent == "eu-1" }
            let opened = events.first { $0.type == .incidentOpened && $0.component == "files" }
            if peers == 1 || eu == 3 {
                #expect(local && opened == nil, "\(eu) eu agents, local_fault_peers \(peers):\n\(log)")
            } else {
                #expect(!local, "\(log)")
                let incident = try #require(opened, "\(log)")
                #expect(incident.scope == .region && incident.regions == ["eu"], "\(log)")
                #expect(incident.occurredAt.timeIntervalSince(start) <= 2 * fleet.interval + 1, "\(log)")
            }
        }
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

    /// An agent alone in ap whose pushes, sent now, carry only runs 15 s old reads as catching
    /// up (a steady lag with its pushes' `sent_at` just as old would read as clock offset). That region is waited for only after the
    /// collector's own downtime: in normal operation it must not hold every other region's
    /// first alert for the 30 s such a wait may last.
    @Test func anAgentSendingOldRunsDelaysNoOtherRegionsFirstAlert() throws {
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2, "ap": 1], interval: 2)
        fleet.stopped.insert("ap-1")
        func lateRuns() -> [ProbeResult] {
            ["files", "control"].map { component in
                ProbeResult(
                    id: "late-\(component)-\(fleet.now.timeIntervalSince1970)", probe: component == "control" ? "control" : "files-journey",
                    component: component, agent: "ap-1", region: "ap", startedAt: fleet.now.addingTimeInterval(-15), durationMs: 50,
                    outcome: .ok, steps: [], control: component == "control" ? true : nil)
            }
        }
        for _ in 0..<40 {
            fleet.engine.ingest(lateRuns(), receivedAt: fleet.now, push: PushTiming(sentAt: fleet.now, arrivedAt: fleet.now))
            fleet.step()
        }
        fleet.faults["eu"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        var opened: AlertEvent?
        for _ in 0..<40 where opened == nil {
            fleet.engine.ingest(lateRuns(), receivedAt: fleet.now, push: PushTiming(sentAt: fleet.now, arrivedAt: fleet.now))
            opened = fleet.step().first { $0.type == .incidentOpened }
        }
        let event = try #require(opened)
        let latency = event.occurredAt.timeIntervalSince(try #require(fleet.firstFailureAt))
        #expect(latency <= 2 * fleet.interval + 1, "opened \(latency) s after the first failure")
        #expect(event.scope == .region && event.incident?.regions == ["eu"])
    }
}
