import Foundation
import SondeCore
import Testing

@testable import Correlation

/// What the engine asks agents to confirm (`confirmationRequests`, the push answer's
/// `confirm_components`), on a simulated fleet of 3 regions × 3 agents, probes every 2 s.
@Suite struct ConfirmationRequestTests {
    func warmFleet(config: CorrelationConfig = CorrelationConfig()) -> FleetSimulation {
        var fleet = FleetSimulation(config: config)
        fleet.step(seconds: 30)
        return fleet
    }

    @Test func aHealthyFleetIsAskedNothing() {
        let fleet = warmFleet()
        #expect(fleet.engine.confirmationRequests.isEmpty)
        #expect(fleet.engine.confirmationRequests.components(forRegion: "eu") == nil)
    }

    /// One failed run of one agent: its region's peers are asked to confirm that component (and
    /// asked to push promptly), no other region and no other component.
    @Test func oneFailureAsksItsRegionToConfirmThatComponent() throws {
        var fleet = warmFleet()
        fleet.faults["once"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"], when: { $0 == 16 })
        for _ in 0..<10 where fleet.engine.confirmationRequests.isEmpty { fleet.step() }
        let requests = fleet.engine.confirmationRequests
        #expect(requests.components(forRegion: "eu") == ["files"])
        #expect(requests.components(forRegion: "us") == nil)
        #expect(requests.components(forRegion: "ap") == nil)
        #expect(fleet.engine.wantsFreshRuns, "peers' confirming runs are wanted at once")
        // Two intervals after that run the request ends, with nothing opened.
        fleet.step(seconds: 8)
        #expect(fleet.engine.confirmationRequests.isEmpty)
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    /// One agent alone in its region dropping a failure into its runs every few seconds, hidden
    /// among many passing ones so that it is never called local, asks its peers to confirm for
    /// at most `loneConfirmationLimit`, not for as long as it keeps it up (red team F13: the
    /// region's honest agents ran at 4 × their pace for good).
    @Test func oneAgentAloneStopsAskingItsPeersAfterTheLimit() throws {
        var fleet = warmFleet()
        fleet.faults["lone"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"], when: { $0 % 2 == 0 })
        var askedAt: [Double] = []
        for second in 0..<120 {
            fleet.ingestMadeUpPassingRuns(from: "eu-1", region: "eu", component: "files")
            fleet.step()
            if fleet.engine.confirmationRequests.components(forRegion: "eu")?.contains("files") == true { askedAt.append(Double(second)) }
        }
        #expect(fleet.engine.agentHealth.first { $0.agent == "eu-1" }?.state != .localFault, "the flood keeps its rate below the local test")
        #expect(!askedAt.isEmpty && askedAt.first! < 10, "asked at first: \(askedAt.prefix(5))")
        #expect(askedAt.allSatisfy { $0 <= askedAt.first! + CorrelationEngine.loneConfirmationLimit + 2 }, "still asked at \(askedAt.suffix(3))")
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    /// A break does not give the budget back: an agent that pauses 6 s after every 64 s of asking
    /// gets `loneConfirmationLimit` s per `loneConfirmationWindow`, not 60 s per minute (red team,
    /// second pass, N5).
    @Test func aBreakDoesNotGiveALoneAgentsBudgetBack() throws {
        var fleet = warmFleet()
        fleet.faults["lone"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"], when: { $0 % 2 == 0 })
        var askedAt: [Double] = []
        for second in 0..<300 {
            let pausing = second % 70 >= 64
            if pausing { fleet.faults["lone"] = nil } else {
                fleet.faults["lone"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"], when: { $0 % 2 == 0 })
                fleet.ingestMadeUpPassingRuns(from: "eu-1", region: "eu", component: "files")
            }
            fleet.step()
            if fleet.engine.confirmationRequests.components(forRegion: "eu")?.contains("files") == true { askedAt.append(Double(second)) }
        }
        #expect(!askedAt.isEmpty, "asked at first")
        // Asks are a second apart: at most the budget (and a tick or two) in the 300 s.
        #expect(Double(askedAt.count) <= CorrelationEngine.loneConfirmationLimit + 4, "asked in \(askedAt.count) evaluations: \(askedAt)")
        #expect(askedAt.allSatisfy { $0 < 80 }, "asked again after the break: \(askedAt.filter { $0 >= 80 })")
    }

    /// A peer's failure gives a lone agent's budget back: those asks were not its own problem. A
    /// random fault's failures reach one agent at a time, and back-to-back episodes of a 10 %
    /// fault in eu had spent the region's budget, so detection took up to 7.8 s instead of 4.7 s.
    @Test func aPeersFailureGivesTheBudgetBack() throws {
        var fleet = warmFleet()
        let lone = FleetSimulation.failing(agents: ["eu-1"], components: ["files"], when: { $0 % 2 == 0 })
        var askedAt: [Double] = []
        for second in 0..<130 {
            fleet.faults["lone"] = lone
            // One failed run of eu-2's at second 50: a peer failing too, once (no incident).
            fleet.faults["peer"] = (50..<52).contains(second) ? FleetSimulation.failing(agents: ["eu-2"], components: ["files"]) : nil
            fleet.ingestMadeUpPassingRuns(from: "eu-1", region: "eu", component: "files")
            fleet.step()
            if fleet.engine.confirmationRequests.components(forRegion: "eu")?.contains("files") == true { askedAt.append(Double(second)) }
        }
        #expect(fleet.engine.openIncidents.isEmpty, "\(fleet.events.map(\.summary))")
        // Asked from the start, and for about another limit after the peer's failure at 50.
        #expect(askedAt.first.map { $0 < 10 } == true, "\(askedAt.prefix(5))")
        #expect(askedAt.contains { $0 >= 100 }, "the budget came back at 50: last asked at \(askedAt.last ?? -1)")
        #expect(askedAt.allSatisfy { $0 <= 52 + CorrelationEngine.loneConfirmationLimit + 4 }, "still asked at \(askedAt.suffix(3))")
    }

    /// Failures in two regions (`min_platform_regions`) may be platform-wide: every region is asked.
    @Test func failuresInTwoRegionsAskEveryRegion() {
        var fleet = warmFleet()
        fleet.faults["two"] = FleetSimulation.failing(agents: ["eu-1", "us-1"], components: ["files"], when: { $0 == 16 })
        for _ in 0..<10 where fleet.engine.confirmationRequests.components(forRegion: "ap") == nil { fleet.step() }
        #expect(fleet.engine.confirmationRequests.components(forRegion: "ap") == ["files"])
        #expect(fleet.engine.confirmationRequests.everywhere == ["files"])
    }

    /// Two agents of one region failing: not one host's problem, so every region is asked, and the
    /// other regions' runs tell a regional fault from the start of a platform-wide one (the first
    /// region to see a thin platform-wide fault otherwise ran at 4 × the others' pace and opened
    /// its incident first, at region scope).
    @Test func twoAgentsOfOneRegionFailingAskEveryRegion() {
        var fleet = warmFleet()
        fleet.faults["two"] = FleetSimulation.failing(agents: ["eu-1", "eu-2"], components: ["files"], when: { $0 == 16 })
        for _ in 0..<10 where fleet.engine.confirmationRequests.components(forRegion: "ap") == nil { fleet.step() }
        #expect(fleet.engine.confirmationRequests.everywhere == ["files"])
        #expect(fleet.engine.confirmationRequests.components(forRegion: "us") == ["files"])
    }

    /// One region's agents failing together, rarely enough that no incident opens (one run in six
    /// each, a run apart), ask the other regions for at most `loneConfirmationLimit` s in
    /// `loneConfirmationWindow`; their own region keeps confirming each time (two hosts agreeing
    /// are the region's evidence, not one agent's flood).
    @Test func oneRegionsFailuresAskEveryRegionForAtMostTheBudget() {
        var fleet = warmFleet()
        fleet.faults["eu-1"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"], when: { $0 % 6 == 0 })
        fleet.faults["eu-2"] = FleetSimulation.failing(agents: ["eu-2"], components: ["files"], when: { $0 % 6 == 1 })
        var everywhereAt: [Double] = []
        var euAt: [Double] = []
        for second in 0..<400 {
            fleet.step()
            if fleet.engine.confirmationRequests.components(forRegion: "us")?.contains("files") == true { everywhereAt.append(Double(second)) }
            if fleet.engine.confirmationRequests.components(forRegion: "eu")?.contains("files") == true { euAt.append(Double(second)) }
        }
        #expect(fleet.engine.openIncidents.isEmpty, "\(fleet.events.map(\.summary))")
        #expect(everywhereAt.first.map { $0 < 30 } == true, "asked everywhere at first: \(everywhereAt.prefix(5))")
        // Asks are a second apart, spent in episodes of a few seconds: at most the budget in all.
        #expect(Double(everywhereAt.count) <= CorrelationEngine.loneConfirmationLimit + 4, "asked everywhere in \(everywhereAt.count) evaluations")
        #expect(euAt.contains { $0 > everywhereAt.last! + 30 }, "eu itself keeps confirming: asked everywhere \(everywhereAt.count) times, last at \(everywhereAt.last!); eu last at \(euAt.last ?? -1), \(euAt.count) times")
    }

    /// An open region incident keeps its region confirming, without prompt pushes, until it resolves.
    @Test func anOpenIncidentKeepsItsRegionsConfirmingUntilResolved() throws {
        var fleet = warmFleet()
        fleet.faults["files-eu"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        fleet.step(seconds: 20)
        let incident = try #require(fleet.engine.openIncidents.first)
        #expect(incident.scope == .region)
        #expect(fleet.engine.confirmationRequests.byRegion == ["eu": ["files"]])
        #expect(fleet.engine.confirmationRequests.everywhere.isEmpty)
        #expect(!fleet.engine.wantsFreshRuns, "a steady incident keeps batching")
        fleet.faults = [:]
        for _ in 0..<120 where !fleet.engine.openIncidents.isEmpty { fleet.step() }
        try #require(fleet.engine.openIncidents.isEmpty)
        fleet.step(seconds: 5)
        #expect(fleet.engine.confirmationRequests.isEmpty)
    }

    /// A cut agent (its control fails) is its own problem: nobody is asked to confirm it.
    @Test func aLocalFaultAsksNothing() {
        var fleet = warmFleet()
        fleet.faults["cut"] = FleetSimulation.failing(
            agents: ["eu-2"], control: true, error: ProbeError(kind: .connect, step: "request", message: "connection refused"))
        var asked = 0
        for _ in 0..<30 {
            fleet.step()
            if !fleet.engine.confirmationRequests.isEmpty { asked += 1 }
        }
        #expect(fleet.health("eu-2")?.state == .localFault)
        #expect(asked == 0)
    }

    @Test func confirmationRunsOffAsksNothing() {
        var fleet = warmFleet(config: CorrelationConfig(confirmationRuns: false))
        fleet.faults["files-eu"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        var asked = 0
        for _ in 0..<20 {
            fleet.step()
            if !fleet.engine.confirmationRequests.isEmpty { asked += 1 }
        }
        #expect(fleet.engine.openIncidents.count == 1)
        #expect(asked == 0)
    }

    @Test func theConfigKeyIsRead() throws {
        let config = try SondeJSON.decode(CorrelationConfig.self, from: Data(#"{"confirmation_runs": false}"#.utf8))
        #expect(!config.confirmationRuns)
        #expect(CorrelationConfig().confirmationRuns)
    }
}
