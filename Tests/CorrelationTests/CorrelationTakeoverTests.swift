import Correlation
import Foundation
import SondeCore
import Testing

/// A standby that followed every result into its own engine (evaluating for its own API, so its
/// incidents and agent states are its own) takes over by adopting the stored decisions instead
/// of rebuilding: it then stands where a rebuilt engine would.
@Suite struct CorrelationTakeoverTests {
    /// The standby: every pushed result, as received, evaluated every `every` seconds.
    static func standby(of fleet: FleetSimulation, every: Int) -> CorrelationEngine {
        var engine = CorrelationEngine(config: CorrelationConfig(), agents: fleet.agents)
        var next = FleetSimulation.start
        for (receivedAt, results) in Dictionary(grouping: fleet.pushed, by: \.receivedAt).sorted(by: { $0.key < $1.key }) {
            engine.ingest(results.map(\.result), receivedAt: receivedAt)
            if receivedAt >= next {
                // A little after the leader's evaluations: its incidents get other ids.
                _ = engine.evaluate(now: receivedAt.addingTimeInterval(0.25))
                next = receivedAt.addingTimeInterval(Double(every))
            }
        }
        return engine
    }

    @Test func adoptingTheStoredDecisionsStandsLikeARebuildAndReemitsNothing() throws {
        var fleet = FleetSimulation()
        fleet.step(seconds: 30)
        fleet.faults["files"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        fleet.faults["cut"] = FleetSimulation.failing(agents: ["us-3"], control: true)
        fleet.stopped.insert("ap-2")
        fleet.step(seconds: 30)
        let incident = try #require(fleet.engine.openIncidents.first)

        var standby = Self.standby(of: fleet, every: 3)
        // Its own view differs: its incident was opened at another moment, so under another id.
        #expect(standby.openIncidents.map(\.id) != [incident.id])
        standby.adoptStoredDecisions(openIncidents: fleet.engine.openIncidents, agentStates: fleet.engine.agentHealth, resolvedByPeople: [])
        var rebuilt = fleet.rebuiltEngine()
        let adopted = standby.evaluate(now: fleet.now)
        let reference = rebuilt.evaluate(now: fleet.now)
        #expect(adopted.events.isEmpty)
        #expect(adopted.changedIncidents.isEmpty)
        #expect(standby.openIncidents.map(\.id) == [incident.id])
        for expected in reference.verdicts {
            let verdict = try #require(adopted.verdicts.first { $0.component == expected.component })
            #expect(verdict.status == expected.status, "\(expected.component)")
            #expect(verdict.scope == expected.scope, "\(expected.component)")
            #expect(verdict.incidentID == expected.incidentID, "\(expected.component)")
        }
        #expect(adopted.agents.map(\.state) == reference.agents.map(\.state))
        #expect(adopted.agents.map(\.since) == reference.agents.map(\.since))

        // It carries on as the leader: the same situation emits nothing new, and the recovery
        // resolves the stored incident under its id.
        let before = fleet.events.count
        fleet.engine = standby
        fleet.step(seconds: 10)
        #expect(fleet.events.count == before)
        fleet.faults = [:]
        fleet.step(seconds: 60)
        let resolved = try #require(fleet.events.last { $0.type == .incidentResolved })
        #expect(resolved.incident?.id == incident.id)
        #expect(fleet.events.filter { $0.type == .incidentOpened }.count == 1)
        #expect(Set(fleet.events.map(\.id)).count == fleet.events.count)
    }
}
