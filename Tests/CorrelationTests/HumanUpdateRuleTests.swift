import Foundation
import SondeCore
import Testing

@testable import Correlation

/// The engine's rules for people's updates (CorrelationEngine+HumanUpdates): they share the
/// timeline and the event stream, a person's status holds until the measurements change after
/// it, a person's resolution closes for good (the conflict shown, a returning fault opens a new
/// incident), and an incident Sonde never measured moves only by people.
struct HumanUpdateRuleTests {
    static var fault: FleetSimulation.Fault { FleetSimulation.failing(components: ["files"]) }

    /// A fleet whose `files` fails everywhere until Sonde opens an incident.
    func fleetWithIncident() throws -> (FleetSimulation, Incident) {
        var fleet = FleetSimulation()
        fleet.step(seconds: 30)
        fleet.faults["files"] = Self.fault
        for _ in 0..<30 where fleet.engine.openIncidents.isEmpty { fleet.step() }
        return (fleet, try #require(fleet.engine.openIncidents.first))
    }

    func update(_ fleet: inout FleetSimulation, _ id: String, _ status: IncidentStatus?, _ message: String, by author: String = "alice") throws -> Incident {
        try fleet.engine.applyHumanUpdate(HumanIncidentUpdate(incidentID: id, status: status, message: message, author: author), now: fleet.now)
    }

    @Test func aPersonsIdentifiedHoldsWhileTheFaultLastsAndRecoveryMovesItOn() throws {
        var (fleet, incident) = try fleetWithIncident()
        #expect(incident.updates.first?.author == "sonde")
        #expect(incident.updates.first?.message.hasPrefix("Files is down platform-wide (") == true, "\(incident.updates.first?.message ?? "")")
        _ = try update(&fleet, incident.id, .identified, "Storage node out of disk; adding capacity")
        let emitted = fleet.step()
        let event = try #require(emitted.first { $0.author == "alice" })
        #expect(event.type == .incidentUpdated && event.status == "identified" && event.message == "Storage node out of disk; adding capacity")
        #expect(event.id == "\(incident.id).\(incident.eventSeq + 1)", "people's events continue the incident's sequence")
        fleet.step(seconds: 20)
        #expect(fleet.engine.openIncidents.first?.status == .identified)
        #expect(fleet.engine.openIncidents.first?.updates.map(\.author).contains("alice") == true)

        fleet.faults = [:]
        var statuses: [IncidentStatus] = []
        for _ in 0..<240 {
            fleet.step()
            if let status = fleet.engine.openIncidents.first?.status, statuses.last != status { statuses.append(status) }
            if fleet.engine.openIncidents.isEmpty { break }
        }
        #expect(statuses.first == .identified)
        #expect(statuses.contains(.monitoring), "measured recovery moves it to monitoring: \(statuses)")
        #expect(fleet.engine.openIncidents.isEmpty, "and then resolves it")
        #expect(fleet.events.last?.type == .incidentResolved && fleet.events.last?.author == "sonde")
    }

    @Test func aPersonsResolutionClosesForGoodAndAReturningFaultOpensANewIncident() throws {
        var (fleet, incident) = try fleetWithIncident()
        fleet.step(seconds: 4)
        let resolved = try update(&fleet, incident.id, .resolved, "Fixed, we think")
        #expect(resolved.status == .resolved && resolved.resolvedBy == "alice" && resolved.awaitingRecovery)
        #expect(resolved.conflict?.hasPrefix("resolved by alice while ") == true, "\(resolved.conflict ?? "nil")")
        #expect(fleet.engine.openIncidents.isEmpty)
        let emitted = fleet.step()
        #expect(emitted.contains { $0.type == .incidentResolved && $0.author == "alice" && $0.message == "Fixed, we think" })
        // The fault goes on: nothing reopens, the verdict shows the conflict.
        let during = fleet.step(seconds: 30)
        #expect(!during.contains { $0.type == .incidentOpened })
        #expect(fleet.engine.openIncidents.isEmpty)
        #expect(fleet.verdicts["files"]?.conflict?.hasPrefix("resolved by alice while 9 of 9 agents still fail") == true, "\(fleet.verdicts["files"]?.conflict ?? "nil")")
        #expect(throws: HumanUpdateError.closed(id: incident.id)) { try update(&fleet, incident.id, .investigating, "reopen?") }
        // A restart keeps the resolution standing.
        var rebuilt = CorrelationEngine(
            config: CorrelationConfig(), agents: fleet.agents, openIncidents: [], agentStates: fleet.engine.agentHealth,
            resolved: [try #require(fleet.engine.heldIncident(id: incident.id))])
        for (at, results) in Dictionary(grouping: fleet.pushed.suffix(400), by: \.receivedAt).sorted(by: { $0.key < $1.key }) {
            rebuilt.ingest(results.map(\.result), receivedAt: at)
        }
        #expect(!rebuilt.evaluate(now: fleet.now).events.contains { $0.type == .incidentOpened })
        #expect(rebuilt.openIncidents.isEmpty)

        // It recovers (the conflict ends), then the fault returns: a new incident.
        fleet.faults = [:]
        for _ in 0..<240 where fleet.engine.heldIncident(id: incident.id) != nil { fleet.step() }
        #expect(fleet.engine.heldIncident(id: incident.id) == nil, "measured healthy: the resolution no longer waits")
        fleet.step(seconds: 10)
        fleet.faults["files"] = Self.fault
        for _ in 0..<30 where fleet.engine.openIncidents.isEmpty { fleet.step() }
        let next = try #require(fleet.engine.openIncidents.first)
        #expect(next.id != incident.id && next.component == "files" && next.openedBy == "sonde")
    }

    /// The reviewer's case: an incident in ap, whose agents then stop; eu and us pass. The
    /// verdict still shows the open incident's severity (the hold), but nothing is measured
    /// failing, so a person's resolution is no conflict ("while 0 of 6 agents still fail").
    /// A files incident in ap, whose agents then stop for 40 s while eu and us pass.
    func fleetWithAnIncidentInASilentRegion() throws -> (FleetSimulation, Incident) {
        var fleet = FleetSimulation()
        fleet.step(seconds: 30)
        fleet.faults["files"] = FleetSimulation.failing(regions: ["ap"], components: ["files"])
        for _ in 0..<30 where fleet.engine.openIncidents.isEmpty { fleet.step() }
        let incident = try #require(fleet.engine.openIncidents.first)
        #expect(incident.regions == ["ap"])
        fleet.stopped = Set(fleet.agents.filter { $0.region == "ap" }.map(\.id))
        fleet.step(seconds: 40)
        #expect(fleet.engine.openIncidents.first?.id == incident.id, "silent agents do not end it")
        #expect(fleet.engine.openIncidents.first?.status == .investigating, "no fresh agent in ap: nothing says it recovered")
        return (fleet, incident)
    }

    /// A person's resolution keeps every region and agent the incident listed while open, as
    /// Sonde's does (found by the new-user walk-through: an incident that had spanned eu and us
    /// with 3 agents read "Major Outage of api in eu", eu-2 alone, once resolved by hand).
    @Test func aPersonsResolutionKeepsEveryRegionAndAgentTheIncidentListed() throws {
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2])
        fleet.step(seconds: 30)
        fleet.faults["files"] = Self.fault
        for _ in 0..<30 where fleet.engine.openIncidents.isEmpty { fleet.step() }
        let incident = try #require(fleet.engine.openIncidents.first)
        fleet.step(seconds: 10)
        // The fault narrows to eu before the person resolves it (to one agent, eu-1's failures
        // would be its own, and the incident would end without the person).
        fleet.faults["files"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        fleet.step(seconds: 20)
        let wide = Set(try #require(fleet.engine.openIncidents.first).regions)
        let resolved = try update(&fleet, incident.id, .resolved, "Resolved by hand")
        #expect(Set(resolved.regions) == ["eu", "us"], "\(resolved.regions) (open, it listed \(wide))")
        #expect(Set(resolved.agents).isSuperset(of: ["eu-1", "eu-2", "us-1", "us-2"]), "\(resolved.agents)")
    }

    @Test func aResolutionWhileNothingIsMeasuredFailingIsNoConflict() throws {
        var (fleet, incident) = try fleetWithAnIncidentInASilentRegion()
        let resolved = try update(&fleet, incident.id, .resolved, "ap decommissioned")
        #expect(resolved.conflict == nil && !resolved.awaitingRecovery, "\(resolved.conflict ?? "nil")")
    }

    /// The reviewer's case again, with no person: ap's agents stop (silent: the region may be
    /// the outage itself, so the incident stays open), then are revoked, as agents are retired.
    /// Nothing can measure ap any more: the incident ends, saying why.
    @Test func anIncidentNoAgentCanMeasureAnyMoreEnds() throws {
        var (fleet, _) = try fleetWithAnIncidentInASilentRegion()
        fleet.engine.setAgents(fleet.agents.map { AgentInfo(id: $0.id, region: $0.region, revoked: $0.region == "ap") })
        let events = fleet.step(seconds: 2)
        let resolved = try #require(events.first { $0.type == .incidentResolved }, "\(events.map(\.summary))")
        #expect(resolved.summary == "files: resolved, no agent measures ap any more", "\(resolved.summary)")
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func aPersonsMonitoringIsNotUndoneWhileTheFaultGoesOn() throws {
        var (fleet, incident) = try fleetWithIncident()
        let monitoring = try update(&fleet, incident.id, .monitoring, "Fix deployed; watching")
        #expect(monitoring.conflict?.hasPrefix("monitoring by alice while") == true, "\(monitoring.conflict ?? "nil")")
        fleet.step(seconds: 20)
        let held = try #require(fleet.engine.openIncidents.first)
        #expect(held.status == .monitoring, "no relapse while the fault has not been measured healthy since the person spoke")
        #expect(held.conflict?.hasPrefix("monitoring by alice while") == true)
        // Measured healthy: monitoring ends the way people wait for, resolved by Sonde.
        fleet.faults = [:]
        for _ in 0..<240 where !fleet.engine.openIncidents.isEmpty { fleet.step() }
        #expect(fleet.engine.openIncidents.isEmpty)
        let last = try #require(fleet.events.last { $0.incident?.id == incident.id })
        #expect(last.type == .incidentResolved && last.author == "sonde" && last.incident?.conflict == nil)
    }

    /// An intermittent fault's passing moments are not "healthy, then back": a person's
    /// `monitoring` stands until the engine measures a recovery (the runs its own `monitoring`
    /// needs), so no "The problem is back" is sent while the fault comes and goes.
    @Test func aPersonsMonitoringIsNotUndoneByAnIntermittentFault() throws {
        var (fleet, incident) = try fleetWithIncident()
        _ = try update(&fleet, incident.id, .monitoring, "Fix deployed; watching")
        fleet.faults["files"] = FleetSimulation.failing(components: ["files"], when: { $0 % 3 == 0 })
        fleet.step(seconds: 60)
        fleet.faults = [:]
        for _ in 0..<240 where !fleet.engine.openIncidents.isEmpty { fleet.step() }
        let mine = fleet.events.filter { $0.incident?.id == incident.id }
        #expect(!mine.contains { $0.status == "investigating" && $0.author == "sonde" && $0.type == .incidentUpdated },
            "\(mine.map { "\($0.type.rawValue) \($0.status ?? "-") \($0.message ?? "")" })")
        #expect(mine.last?.type == .incidentResolved)
    }

    @Test func anIncidentSondeNeverMeasuredMovesOnlyByPeople() throws {
        var fleet = FleetSimulation()
        fleet.step(seconds: 30)
        let billing = try fleet.engine.openHumanIncident(
            HumanNewIncident(component: "billing", title: "Invoices late", message: "Invoices are delayed", severity: .degradedPerformance, author: "bob"),
            now: fleet.now)
        #expect(billing.scope == .platform && billing.openedBy == "bob" && billing.updates.first?.author == "bob")
        let files = try fleet.engine.openHumanIncident(
            HumanNewIncident(component: "files", message: "Users report slow downloads", regions: ["eu", "eu"], author: "bob"), now: fleet.now)
        #expect(files.scope == .region && files.regions == ["eu"])
        let emitted = fleet.step()
        #expect(emitted.filter { $0.type == .incidentOpened }.map(\.author) == ["bob", "bob"])
        // Sonde measures files healthy: the person's incident stays as they left it.
        fleet.step(seconds: 60)
        #expect(fleet.engine.openIncidents.map(\.status) == [.investigating, .investigating])
        #expect(throws: HumanUpdateError.alreadyOpen(component: "files", id: files.id)) {
            try fleet.engine.openHumanIncident(HumanNewIncident(component: "files", message: "again", author: "bob"), now: fleet.now)
        }
        #expect(throws: HumanUpdateError.notFound(id: "nope")) { try update(&fleet, "nope", nil, "x") }
        #expect(throws: HumanUpdateError.invalid(field: "message", reason: "is required and must not be empty")) {
            try update(&fleet, files.id, nil, "  \n ")
        }
        #expect(throws: (any Error).self) { try update(&fleet, files.id, nil, String(repeating: "x", count: HumanUpdateLimits.messageCharacters + 1)) }
        #expect(throws: (any Error).self) { try update(&fleet, files.id, nil, "bell\u{07}") }
        #expect(throws: (any Error).self) {
            try fleet.engine.openHumanIncident(HumanNewIncident(component: "x y", message: "m", author: "bob"), now: fleet.now)
        }
        #expect(throws: (any Error).self) {
            try fleet.engine.openHumanIncident(HumanNewIncident(component: "x", message: "m", status: .resolved, author: "bob"), now: fleet.now)
        }
        for n in 1..<HumanUpdateLimits.updatesPerIncident { _ = try update(&fleet, billing.id, nil, "note \(n)") }
        #expect(throws: HumanUpdateError.timelineFull(id: billing.id)) { try update(&fleet, billing.id, .identified, "one too many") }
        let note = try update(&fleet, files.id, nil, "Still looking")
        #expect(note.status == .investigating && note.updates.last?.author == "alice")
        _ = try update(&fleet, files.id, .resolved, "Was a CDN issue")
        fleet.step(seconds: 10)
        #expect(fleet.engine.openIncidents.map(\.component) == ["billing"])
        #expect(fleet.engine.heldIncident(id: files.id) == nil, "resolved while healthy: nothing waits")
    }

    @Test func incidentsStoredBeforePeopleCouldWriteStillDecode() throws {
        let old = """
            {"id":"files.1","component":"files","status":"monitoring","scope":"region","severity":"partial_outage","regions":["eu"],
             "agents":["eu-1"],"opened_at":"2026-01-01T00:00:00Z","updated_at":"2026-01-01T00:05:00Z",
             "evidence":{"failing_agents":[],"failing_agent_count":0,"failing_regions":[],"reporting_agents":3,"degraded_agents":0,
                         "failure_ratio":0,"sample_errors":[],"error_codes":{},"local_agents":[]},
             "event_seq":2,"updates":[{"time":"2026-01-01T00:00:00Z","status":"investigating","scope":"region",
                                       "severity":"partial_outage","message":"files: partial outage in eu"}]}
            """
        let incident = try SondeJSON.decode(Incident.self, from: Data(old.utf8))
        #expect(incident.openedBy == "sonde" && incident.resolvedBy == nil && incident.conflict == nil && !incident.awaitingRecovery)
        #expect(incident.updates.first?.author == "sonde")
        let again = try SondeJSON.decode(Incident.self, from: try SondeJSON.encode(incident))
        #expect(again == incident)
    }

    @Test func automaticTextReadsLikeAPersonWroteIt() {
        let midnight: Int = 1_800_000_000 - 1_800_000_000 % 86_400
        let since = Date(timeIntervalSince1970: Double(midnight + 14 * 3600 + 2 * 60))
        let failing = Evidence(failingAgentCount: 2, failingRegions: ["us-east"], reportingAgents: 2, errorCodes: ["upload_failed": 2])
        #expect(
            CorrelationEngine.headline(component: "uploads", status: .majorOutage, scope: .region, evidence: failing, since: since)
                == "Uploads is down for users in us-east (2 of 2 agents, upload_failed, since 14:02 UTC).")
        let slow = Evidence(failingRegions: ["eu", "us"], reportingAgents: 6, degradedAgents: 4, latencyP95Ms: 2_300)
        #expect(
            CorrelationEngine.headline(component: "login", status: .degradedPerformance, scope: .platform, evidence: slow, since: since)
                == "Login is slow platform-wide (4 of 6 agents, p95 2.3 s, since 14:02 UTC).")
        // A code only one agent reports is a word that agent chose: the headline (which the
        // public page shows) leaves it out; the operators' summary keeps it.
        let lone = Evidence(failingAgentCount: 3, failingRegions: ["eu"], reportingAgents: 3, errorCodes: ["file_expired": 2, "we_were_hacked": 1])
        #expect(
            CorrelationEngine.headline(component: "files", status: .partialOutage, scope: .region, evidence: lone, since: since)
                == "Files is failing for users in eu (3 of 3 agents, file_expired, since 14:02 UTC).")
        #expect(CorrelationEngine.describe(component: "files", status: .partialOutage, scope: .region, evidence: lone).contains("we_were_hacked"))
    }

    /// A refused port fails every run before an answer; the latencies are of the latest passing
    /// runs, from before the outage, so "p95 0 ms" beside "major outage" would mislead the on-call.
    @Test func summariesNameLatencyOnlyWhenItTellsSomething() {
        let refused = Evidence(failingAgents: ["eu-1"], failingAgentCount: 1, failingRegions: ["eu"], reportingAgents: 1, latencyP50Ms: 0, latencyP95Ms: 0.4, errorCodes: ["connect": 1])
        #expect(CorrelationEngine.describe(component: "api", status: .majorOutage, scope: .region, evidence: refused) == "api: major outage in eu (1/1 agents failing, connect)")
        var slowFailing = refused
        slowFailing.latencyP95Ms = 4_200
        #expect(!CorrelationEngine.describe(component: "api", status: .partialOutage, scope: .region, evidence: slowFailing).contains("p95"), "the passing runs' time is not the failures'")
        #expect(!CorrelationEngine.headline(component: "api", status: .partialOutage, scope: .region, evidence: slowFailing, since: Date()).contains("p95"))
        let slow = Evidence(failingRegions: ["eu"], reportingAgents: 2, degradedAgents: 2, latencyP95Ms: 640)
        #expect(CorrelationEngine.describe(component: "api", status: .degradedPerformance, scope: .region, evidence: slow) == "api: degraded performance in eu (2/2 agents slow, p95 640 ms)")
    }
}
