import Foundation
import SondeCore
import Testing

@testable import Correlation

/// Scenario tests: 9 agents in 3 regions, probes every 2 s, evaluation every second.
@Suite struct CorrelationScenarioTests {
    /// A fleet that has been healthy for 30 s.
    func warmFleet(config: CorrelationConfig = CorrelationConfig(), regions: [String: Int] = ["eu": 3, "us": 3, "ap": 3])
        -> FleetSimulation
    {
        var fleet = FleetSimulation(regions: regions, config: config)
        fleet.step(seconds: 30)
        return fleet
    }

    func types(_ events: [AlertEvent]) -> [AlertEventType] { events.map(\.type) }

    @Test func allHealthyIsOperationalWithoutEvents() {
        var fleet = FleetSimulation()
        fleet.step(seconds: 60)
        #expect(fleet.events.isEmpty)
        let verdicts = fleet.verdicts
        #expect(verdicts.keys.sorted() == ["api", "batch", "files", "login"])
        for verdict in verdicts.values {
            #expect(verdict.status == .operational)
            #expect(verdict.scope == nil)
            #expect(verdict.regions == ["eu": .operational, "us": .operational, "ap": .operational])
            #expect(verdict.evidence.reportingAgents == 9)
            #expect(verdict.evidence.latencyP50Ms == 100)
        }
        #expect(fleet.engine.agentHealth.count == 9)
        #expect(fleet.engine.agentHealth.allSatisfy { $0.state == .ok })
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func oneAgentsNetworkCutIsALocalFaultWithoutIncident() {
        var fleet = warmFleet()
        fleet.faults["cut"] = FleetSimulation.failing(
            agents: ["eu-2"], control: true, error: ProbeError(kind: .connect, step: "request", message: "connection refused"))
        fleet.step(seconds: 30)
        #expect(types(fleet.events) == [.agentLocalFault])
        #expect(fleet.events.first?.agent == "eu-2")
        #expect(fleet.events.first?.scope == .agent)
        #expect(fleet.health("eu-2")?.state == .localFault)
        #expect(fleet.health("eu-2")?.reason == "control probe failing")
        #expect(fleet.engine.openIncidents.isEmpty)
        for verdict in fleet.verdicts.values {
            #expect(verdict.status == .operational)
            #expect(verdict.evidence.localAgents == ["eu-2"])
            #expect(verdict.evidence.reportingAgents == 8)
        }
        // The network comes back: one agent.recovered ends the episode's alert.
        let problem = fleet.events.first?.id
        fleet.faults = [:]
        fleet.step(seconds: 30)
        #expect(fleet.health("eu-2")?.state == .ok)
        #expect(types(fleet.events) == [.agentLocalFault, .agentRecovered])
        let recovered = fleet.events.last
        #expect(recovered?.resolves == problem && recovered?.resolvesType == .agentLocalFault && recovered?.agent == "eu-2")
        #expect(recovered?.summary.contains("local fault cleared after") == true, "\(recovered?.summary ?? "")")
    }

    @Test func failuresFromALocalFaultDoNotCountAfterTheAgentRecovers() throws {
        // Found in the demo: a cut agent's connect failures lingered in its windows after it
        // recovered and turned the next regional problem into a "platform" one with 0 agents failing.
        var fleet = warmFleet(regions: ["eu": 2, "us": 2])
        fleet.faults["cut"] = FleetSimulation.failing(
            agents: ["eu-1"], control: true, error: ProbeError(kind: .connect, step: "request", message: "connection refused"))
        fleet.step(seconds: 12)
        #expect(fleet.health("eu-1")?.state == .localFault)
        fleet.faults = [:]
        fleet.step(seconds: 8)
        #expect(fleet.health("eu-1")?.state == .ok)
        let expired = ProbeError(kind: .httpStatus, step: "download", message: "File has expired", code: "file_expired")
        fleet.faults["files-us"] = FleetSimulation.failing(regions: ["us"], components: ["files"], error: expired)
        fleet.step(seconds: 20)
        let opened = try #require(fleet.events.first { $0.type == .incidentOpened })
        #expect(opened.component == "files")
        #expect(opened.scope == .region)
        #expect(opened.regions == ["us"])
        #expect(fleet.verdicts["files"]?.regions["eu"] == .operational)
    }

    /// Runs a platform-wide outage of `component` until its incident has opened and, the fault
    /// gone, moved to `monitoring`: the moment the peers' windows still hold its failures.
    func outageUntilRecovering(_ fleet: inout FleetSimulation, component: String) throws {
        fleet.faults["outage"] = FleetSimulation.failing(components: [component])
        fleet.step(seconds: 20)
        try #require(fleet.events.contains { $0.type == .incidentOpened && $0.component == component })
        fleet.faults = [:]
        for _ in 0..<120 where fleet.engine.openIncidents.first?.status != .monitoring { fleet.step() }
        try #require(fleet.engine.openIncidents.first?.status == .monitoring)
    }

    @Test func aNetworkCutRightAfterAPlatformIncidentIsLocal() throws {
        // Found by the detection benchmark (agents running an api probe and a control probe): the
        // cut agent's api probe was confirmed failing before its control probe (later in each
        // interval) was, while its peer's window still held the failures of the incident just
        // recovering; that incident went back to investigating on one cut agent.
        // A 20-run flaky window (an operator's setting) keeps the incident's failures in the peers'
        // windows long after recovery, as phases and push delays did in the benchmark.
        var fleet = FleetSimulation(
            regions: ["eu": 2, "us": 2], components: ["api"], controlLag: 1.5, config: CorrelationConfig(flakyWindow: 20))
        fleet.step(seconds: 30)
        try outageUntilRecovering(&fleet, component: "api")
        let before = fleet.events.count
        fleet.faults["cut"] = FleetSimulation.failing(
            agents: ["eu-1"], control: true, error: ProbeError(kind: .connect, step: "request", message: "connection refused"))
        // Not even for one evaluation may the cut agent count against the platform.
        #expect(fleet.stepListingFailing("eu-1", on: "api", seconds: 20) == [])
        let after = Array(fleet.events[before...])
        #expect(Set(types(after)) == [.agentLocalFault, .incidentResolved])
        #expect(after.count == 2)
        #expect(fleet.health("eu-1")?.state == .localFault)
        #expect(fleet.engine.openIncidents.isEmpty)
        #expect(fleet.verdicts["api"]?.status == .operational)
    }

    @Test(arguments: [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 1.75])
    func aNetworkCutJustAfterAPlatformIncidentResolvedIsLocal(offset: Double) throws {
        // Found by the detection benchmark (2026-12-01): a short api outage (cleared as soon as
        // its incident opened), resolved, then eu-1's network cut. eu-1's api window still held the
        // outage's failures, so its first new failure made the series flaky at once, "failing
        // since" the outage's first failure; its peer's failures from that resolved incident then
        // made it look regional before its control probe (later in each interval) had failed, and
        // an eu incident opened for the one cut agent. Each cut phase within an interval is tried.
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2], components: ["api"], controlLag: 1.5)
        fleet.step(seconds: 30)
        fleet.faults["outage"] = FleetSimulation.failing(components: ["api"])
        for _ in 0..<60 where !fleet.events.contains(where: { $0.type == .incidentOpened }) { fleet.step() }
        fleet.faults = [:]
        for _ in 0..<60 where !fleet.events.contains(where: { $0.type == .incidentResolved }) { fleet.step() }
        try #require(fleet.engine.openIncidents.isEmpty, "the outage's incident resolves")
        let before = fleet.events.count
        fleet.faults["cut"] = fleet.networkCut(of: "eu-1", from: fleet.now.timeIntervalSince(FleetSimulation.start) + offset)
        #expect(fleet.stepListingFailing("eu-1", on: "api", seconds: 20) == [])
        let after = Array(fleet.events[before...])
        #expect(types(after) == [.agentLocalFault])
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func aNetworkCutIsNotARegionalFaultBeforeItsControlProbeRuns() throws {
        // Found by the end-to-end suite (1 s intervals, journeys that log in first): eu-1's
        // network was cut just after its control probe ran. Its next login, upload and batch runs
        // all failed at their login step, one failure in each of three login series: no series
        // was failing yet, so eu-1 was not held back, and the three failures read as eu's pooled
        // failures. An eu login incident opened, and resolved a second later when the control failed.
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2], components: ["login", "files", "batch"], interval: 1, controlLag: 0.95)
        fleet.loginJourneys = ["files", "batch"]
        fleet.step(seconds: 14)
        #expect(fleet.events.isEmpty)
        // eu-1 runs its probes at 14.0 and its control at 14.95: the cut is seen a second apart.
        fleet.faults["cut"] = fleet.networkCut(of: "eu-1", from: 13.99)
        #expect(fleet.stepListingFailing("eu-1", on: "login", seconds: 15) == [])
        #expect(types(fleet.events) == [.agentLocalFault])
        #expect(fleet.health("eu-1")?.reason == "control probe failing")
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func aLoneAgentsFailuresCountWhenItsPeerFailedRecently() throws {
        // eu-2 fails two runs, then passes; eu-1 alone then gets 503s. Its peer's recent failures
        // corroborate it (a random fault reaches each agent at its own pace): not held in doubt.
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2], components: ["login"], interval: 1, controlLag: 0.5)
        fleet.faults["blip"] = FleetSimulation.failing(agents: ["eu-2"], components: ["login"], when: { (10...11).contains($0) })
        fleet.step(seconds: 14)
        fleet.faults["eu-1"] = FleetSimulation.failing(agents: ["eu-1"], components: ["login"], when: { $0 >= 14 })
        let listed = fleet.stepListingFailing("eu-1", on: "login", seconds: 6)
        #expect(!listed.isEmpty, "eu-1's server errors count as evidence beside its peer's recent failures")
    }

    @Test func aLoneAgentsCutIsHeldBackUntilItsControlProbeDecides() throws {
        // sa-1 has no peers to compare with, and its api probe is confirmed failing before its
        // control probe is: its data waits (in doubt) instead of calling an sa outage meanwhile.
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2, "sa": 1], components: ["api"], controlLag: 1.5)
        fleet.step(seconds: 30)
        // Cut just after its control probe ran: the api probe fails first and is confirmed first.
        fleet.faults["cut"] = fleet.networkCut(of: "sa-1", from: 30.4)
        #expect(fleet.stepListingFailing("sa-1", on: "api", seconds: 20) == [])
        #expect(types(fleet.events) == [.agentLocalFault])
        #expect(fleet.health("sa-1")?.reason == "control probe failing")
        // The network comes back: its data counts again, and nothing was opened meanwhile.
        fleet.faults = [:]
        fleet.step(seconds: 20)
        #expect(fleet.health("sa-1")?.state == .ok)
        #expect(fleet.verdicts["api"]?.evidence.reportingAgents == 5)
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func aLocalFaultRightAfterAPlatformIncidentIsLocalByItsPeers() throws {
        // No control probe fails here (a full disk breaks only uploads): the peers decide, and
        // their failures from the incident just recovering must not make them look unreliable.
        var fleet = warmFleet(config: CorrelationConfig(flakyWindow: 20), regions: ["eu": 2, "us": 2])
        try outageUntilRecovering(&fleet, component: "files")
        let before = fleet.events.count
        fleet.faults["disk"] = FleetSimulation.failing(agents: ["us-1"], components: ["files"])
        fleet.step(seconds: 20)
        let after = Array(fleet.events[before...])
        #expect(Set(types(after)) == [.agentLocalFault, .incidentResolved])
        #expect(after.count == 2)
        #expect(fleet.health("us-1")?.localComponents == ["files"])
        #expect(fleet.engine.openIncidents.isEmpty)
        #expect(fleet.verdicts["files"]?.evidence.localAgents == ["us-1"])
    }

    @Test func anAgentFailingWithAnOpenPlatformIncidentIsNotALocalFault() throws {
        // Found in the demo: as batches recovered, one agent's slow batch probe still failed while
        // its region peer (whose run had not failed yet) passed: it was called a local fault.
        // While an incident covers its region, its failures are that incident's evidence.
        var fleet = warmFleet(regions: ["eu": 2, "us": 2, "ap": 2])
        fleet.faults["batch"] = FleetSimulation.failing(regions: ["eu", "ap"], components: ["batch"])
        fleet.step(seconds: 10)
        let opened = try #require(fleet.events.first { $0.type == .incidentOpened })
        #expect(opened.scope == .platform)
        // Now us-2 fails too, while us-1 still passes.
        fleet.faults["us-2"] = FleetSimulation.failing(agents: ["us-2"], components: ["batch"])
        fleet.step(seconds: 20)
        #expect(!fleet.events.contains { $0.type == .agentLocalFault })
        #expect(fleet.verdicts["batch"]?.evidence.failingAgents.contains("us-2") == true)
        #expect(fleet.health("us-2")?.state == .ok)
    }

    @Test func anOutageEarlyInTheWindowDoesNotComeBackOnceResolved() throws {
        // Found by the detection benchmark at 5 s intervals: an outage while the windows were still
        // short recovered (too few runs to call the survivors flaky), then relapsed (or re-opened)
        // with no new failure once enough passing runs had arrived to satisfy `min_runs`.
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2], interval: 5)
        // The second and third runs of every api probe fail: confirmed, with 4 runs in each window
        // when the outage ends.
        fleet.faults["api"] = FleetSimulation.failing(components: ["api"], when: { (1...2).contains($0) })
        fleet.step(seconds: 120)
        let statuses = fleet.events.compactMap(\.status)
        #expect(fleet.events.filter { $0.type == .incidentOpened }.count == 1)
        // Once recovering, it may only resolve: no relapse without a new failure.
        let recovering = try #require(statuses.firstIndex(of: "monitoring"))
        #expect(Array(statuses[recovering...]) == ["monitoring", "resolved"])
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func oneFailedRunOfEachOfTwoAgentsEarlyInTheWindowOpensNothing() {
        // Right after start-up the windows are short: a pooled failure ratio over a handful of
        // runs must not call an outage on one failure per agent.
        var fleet = FleetSimulation(regions: ["eu": 2, "us": 2])
        fleet.step(seconds: 8)
        fleet.faults["blip"] = FleetSimulation.failing(regions: ["us"], components: ["files"], when: { $0 == 4 })
        fleet.step(seconds: 30)
        #expect(fleet.events.isEmpty)
        #expect(fleet.verdicts["files"]?.status == .operational)
    }

    @Test func oneAgentFailingOnOneComponentWherePeersPassIsLocal() {
        var fleet = warmFleet()
        fleet.faults["disk"] = FleetSimulation.failing(agents: ["us-1"], components: ["files"])
        fleet.step(seconds: 30)
        #expect(types(fleet.events) == [.agentLocalFault])
        #expect(fleet.health("us-1")?.localComponents == ["files"])
        #expect(fleet.verdicts["files"]?.status == .operational)
        #expect(fleet.verdicts["files"]?.evidence.localAgents == ["us-1"])
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func oneRegionsFilesFailingOpensARegionIncident() throws {
        var fleet = warmFleet()
        let expired = ProbeError(kind: .assertion, step: "download", message: "File file-1 has expired", code: "file_expired")
        fleet.faults["files-eu"] = FleetSimulation.failing(regions: ["eu"], components: ["files"], error: expired)
        fleet.step(seconds: 20)
        #expect(types(fleet.events) == [.incidentOpened])
        let files = try #require(fleet.verdicts["files"])
        #expect(files.status == .partialOutage)
        #expect(files.scope == .region)
        #expect(files.regions == ["eu": .majorOutage, "us": .operational, "ap": .operational])
        #expect(files.evidence.failingAgents == ["eu-1", "eu-2", "eu-3"])
        #expect(files.evidence.failingRegions == ["eu"])
        #expect(files.evidence.errorCodes == ["file_expired": 3])
        #expect(files.evidence.sampleErrors == [expired])
        #expect(files.evidence.localAgents.isEmpty)
        let incident = try #require(fleet.engine.openIncidents.first)
        #expect(fleet.engine.openIncidents.count == 1)
        #expect(incident.component == "files")
        #expect(incident.scope == .region)
        #expect(incident.severity == .partialOutage)
        #expect(incident.status == .investigating)
        #expect(incident.regions == ["eu"])
        #expect(files.incidentID == incident.id)
        let opened = try #require(fleet.events.first)
        #expect(opened.id == "\(incident.id).1")
        #expect(opened.incident?.id == incident.id)
        #expect(opened.summary.contains("files: partial outage in eu"))
        #expect(opened.summary.contains("file_expired"))
        // The event travels as snake_case JSON and comes back equal.
        let json = try SondeJSON.encode(opened)
        let text = String(decoding: json, as: UTF8.self)
        for key in ["\"occurred_at\"", "\"event_seq\"", "\"opened_at\"", "\"failing_regions\"", "\"incident.opened\""] {
            #expect(text.contains(key))
        }
        #expect(try SondeJSON.decode(AlertEvent.self, from: json) == opened)
        #expect(fleet.verdicts["login"]?.status == .operational)
        // No agent is blamed: all three eu agents fail together.
        #expect(fleet.engine.agentHealth.allSatisfy { $0.state == .ok })
    }

    /// The collector evaluates on a push of passing runs only while they could change a decision:
    /// never for a healthy fleet, all through an incident (so `monitoring` and `resolved` follow
    /// the passing runs, not the next tick), and not again once it is resolved.
    @Test func passingRunsAreAwaitedOnlyWhileSomethingIsWrong() throws {
        var fleet = warmFleet()
        fleet.step(seconds: 30)
        #expect(!fleet.engine.awaitsPassingRuns)
        fleet.faults["files-eu"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        for _ in 0..<10 where fleet.verdicts["files"]?.status == .operational { fleet.step() }
        // A problem verdict not yet opened (the region-scope wait reads other regions' passing runs).
        try #require(fleet.verdicts["files"]?.status != .operational && fleet.engine.openIncidents.isEmpty)
        #expect(fleet.engine.awaitsPassingRuns)
        fleet.step(seconds: 20)
        try #require(fleet.engine.openIncidents.count == 1)
        #expect(fleet.engine.awaitsPassingRuns)
        fleet.faults = [:]
        for _ in 0..<120 where !fleet.engine.openIncidents.isEmpty {
            #expect(fleet.engine.awaitsPassingRuns)
            fleet.step()
        }
        try #require(fleet.engine.openIncidents.isEmpty)
        fleet.step()
        #expect(!fleet.engine.awaitsPassingRuns)
    }

    /// Agents are asked to push promptly (`PushAck.fastFlushSeconds`) only while a decision waits
    /// on their newest runs: a problem not yet opened (confirmation, the region-scope wait) and a
    /// recovery. Not for a healthy fleet, a steady incident or a local fault, whose pushes keep
    /// their batching however long these last.
    @Test func promptPushesAreAskedOnlyWhileADecisionIsMade() throws {
        var fleet = warmFleet()
        fleet.step(seconds: 30)
        #expect(!fleet.engine.wantsFreshRuns, "a healthy fleet")
        fleet.faults["files-eu"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        for _ in 0..<10 where fleet.verdicts["files"]?.status == .operational { fleet.step() }
        try #require(fleet.verdicts["files"]?.status != .operational && fleet.engine.openIncidents.isEmpty)
        #expect(fleet.engine.wantsFreshRuns, "a problem not yet opened")
        fleet.step(seconds: 20)
        try #require(fleet.engine.openIncidents.count == 1)
        #expect(!fleet.engine.wantsFreshRuns, "a steady incident")
        fleet.faults = [:]
        var asked = 0
        for _ in 0..<120 where !fleet.engine.openIncidents.isEmpty {
            fleet.step()
            if fleet.engine.wantsFreshRuns { asked += 1 }
        }
        try #require(fleet.engine.openIncidents.isEmpty)
        #expect(asked > 0, "the recovery")
        fleet.step()
        #expect(!fleet.engine.wantsFreshRuns, "resolved")

        fleet.faults["cut"] = FleetSimulation.failing(
            agents: ["eu-2"], control: true, error: ProbeError(kind: .connect, step: "request", message: "connection refused"))
        fleet.step(seconds: 30)
        try #require(fleet.health("eu-2")?.state == .localFault)
        #expect(!fleet.engine.wantsFreshRuns, "a local fault")
    }

    /// An agent in a local fault awaits its clean runs (its episode ends on them); a silent agent
    /// does not keep a healthy fleet's pushes evaluating.
    @Test func aLocalFaultAwaitsPassingRunsASilentAgentDoesNot() {
        var fleet = warmFleet()
        fleet.faults["cut"] = FleetSimulation.failing(
            agents: ["eu-2"], control: true, error: ProbeError(kind: .connect, step: "request", message: "connection refused"))
        fleet.step(seconds: 30)
        #expect(fleet.health("eu-2")?.state == .localFault)
        #expect(fleet.engine.awaitsPassingRuns)
        fleet.faults = [:]
        fleet.step(seconds: 30)
        #expect(fleet.health("eu-2")?.state == .ok)
        #expect(!fleet.engine.awaitsPassingRuns)
        fleet.stopped = ["us-3"]
        fleet.step(seconds: 60)
        #expect(fleet.health("us-3")?.state == .silent)
        #expect(!fleet.engine.awaitsPassingRuns)
    }

    /// A region whose only agent goes silent is a blind spot, not a healthy region and not a
    /// failing one: each component lists it as unwatched (shown as "no data"), never in its
    /// regions or failing regions, and nothing opens (the SRE review's F4). Back, it is watched.
    @Test func aRegionWhoseAgentsAllWentSilentIsUnwatchedNotHealthyOrFailing() throws {
        var fleet = warmFleet(regions: ["eu": 2, "us": 1])
        #expect(fleet.verdicts["files"]?.unwatchedRegions == [])
        fleet.stopped = ["us-1"]
        fleet.step(seconds: 60)
        #expect(fleet.health("us-1")?.state == .silent)
        for component in FleetSimulation.components {
            let verdict = try #require(fleet.verdicts[component])
            #expect(verdict.unwatchedRegions == ["us"], "\(component): \(verdict)")
            #expect(verdict.regions["us"] == nil && verdict.status == .operational && verdict.evidence.failingRegions.isEmpty, "\(verdict)")
        }
        #expect(fleet.engine.openIncidents.isEmpty)
        fleet.stopped = []
        fleet.step(seconds: 10)
        #expect(fleet.verdicts["files"]?.unwatchedRegions == [] && fleet.verdicts["files"]?.regions["us"] == .operational)
    }

    @Test func regionToPlatformEscalationUpdatesTheSameIncidentThenRecoveryResolvesIt() throws {
        var fleet = warmFleet()
        fleet.faults["files"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        fleet.step(seconds: 20)
        let regional = try #require(fleet.engine.openIncidents.first)
        #expect(regional.scope == .region)

        fleet.faults["files"] = FleetSimulation.failing(components: ["files"])
        fleet.step(seconds: 20)
        #expect(fleet.engine.openIncidents.count == 1)
        let platform = try #require(fleet.engine.openIncidents.first)
        #expect(platform.id == regional.id)
        #expect(platform.scope == .platform)
        #expect(platform.severity == .majorOutage)
        #expect(platform.regions == ["ap", "eu", "us"])
        #expect(fleet.verdicts["files"]?.status == .majorOutage)
        #expect(fleet.verdicts["files"]?.scope == .platform)
        // Membership updates ("changed: …") may come between; it spreads, then may get worse.
        let updates = fleet.events.filter { $0.type == .incidentUpdated && !$0.summary.hasPrefix("changed:") }
        #expect((1...2).contains(updates.count))
        #expect(updates.first?.scope == .platform)
        #expect(updates.first?.summary.hasPrefix("spread:") == true)
        #expect(updates.first?.incident?.id == regional.id)

        fleet.faults = [:]
        var sawMonitoring = false
        for _ in 0..<60 where !fleet.engine.openIncidents.isEmpty {
            fleet.step()
            if fleet.engine.openIncidents.first?.status == .monitoring { sawMonitoring = true }
        }
        #expect(sawMonitoring)
        #expect(fleet.engine.openIncidents.isEmpty)
        #expect(fleet.verdicts["files"]?.status == .operational)
        let incidentEvents = fleet.events.filter { $0.incident?.id == regional.id && !$0.summary.hasPrefix("changed:") }
        #expect(incidentEvents.first?.type == .incidentOpened)
        #expect(incidentEvents.last?.type == .incidentResolved)
        #expect(incidentEvents.suffix(2).map(\.status) == ["monitoring", "resolved"])
        #expect(incidentEvents.dropLast(2).allSatisfy { $0.status == "investigating" })
        #expect(Set(fleet.events.map(\.id)).count == fleet.events.count)
        let resolved = try #require(incidentEvents.last?.incident)
        #expect(resolved.resolvedAt != nil)
        #expect(resolved.updates.suffix(2).map(\.status) == [.monitoring, .resolved])
        // Quiet afterwards: no flapping.
        let before = fleet.events.count
        fleet.step(seconds: 30)
        #expect(fleet.events.count == before)
    }

    @Test func batchesStuckEverywhereOpenAPlatformIncident() throws {
        var fleet = warmFleet()
        fleet.faults["files"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        let stuck = ProbeError(kind: .stuck, step: "wait", message: "batch stayed in finalizing for 60 s", code: "batch_stuck")
        fleet.faults["batch"] = FleetSimulation.failing(components: ["batch"], error: stuck)
        fleet.step(seconds: 20)
        let incidents = Dictionary(uniqueKeysWithValues: fleet.engine.openIncidents.map { ($0.component, $0) })
        #expect(incidents.keys.sorted() == ["batch", "files"])
        #expect(incidents["batch"]?.scope == .platform)
        #expect(incidents["batch"]?.severity == .majorOutage)
        #expect(incidents["files"]?.scope == .region)
        #expect(fleet.verdicts["batch"]?.evidence.errorCodes == ["batch_stuck": 9])
        #expect(fleet.verdicts["batch"]?.evidence.failingAgentCount == 9)
        #expect(fleet.events.filter { $0.type == .incidentOpened }.count == 2)
        #expect(fleet.events.allSatisfy { $0.type != .agentLocalFault })
    }

    @Test func aSingleFailedRunOpensNothing() {
        var fleet = warmFleet()
        // Run 16 of every probe of every agent fails, once.
        fleet.faults["blip"] = FleetSimulation.failing(when: { $0 == 16 })
        fleet.step(seconds: 40)
        #expect(fleet.events.isEmpty)
        #expect(fleet.engine.openIncidents.isEmpty)
        #expect(fleet.verdicts.values.allSatisfy { $0.status == .operational })
    }

    @Test func thirtyPercentFailingEverywhereIsAPlatformPartialOutage() throws {
        var fleet = warmFleet()
        // 3 of every 10 consecutive runs fail, never two in a row.
        fleet.faults["flaky"] = FleetSimulation.failing(components: ["api"], when: { [0, 3, 6].contains($0 % 10) })
        fleet.step(seconds: 40)
        let api = try #require(fleet.verdicts["api"])
        #expect(api.status == .partialOutage)
        #expect(api.scope == .platform)
        print("30 % everywhere: \(api.evidence)")
        #expect(api.evidence.failureRatio == 0.3)
        #expect(api.evidence.failingAgentCount == 9)
        let incident = try #require(fleet.engine.openIncidents.first)
        #expect(incident.scope == .platform)
        #expect(incident.severity == .partialOutage)
        // One incident, kept current as agents join ("changed: …"), never recovering meanwhile.
        #expect(types(fleet.events.filter { !$0.summary.hasPrefix("changed:") }) == [.incidentOpened])
        #expect(fleet.events.allSatisfy { $0.status == "investigating" })
    }

    @Test func latencyOverThresholdEverywhereIsDegradedPerformance() throws {
        var fleet = warmFleet()
        fleet.faults["slow"] = FleetSimulation.slow(components: ["api"])
        fleet.step(seconds: 20)
        let api = try #require(fleet.verdicts["api"])
        #expect(api.status == .degradedPerformance)
        #expect(api.scope == .platform)
        #expect(api.evidence.degradedAgents == 9)
        #expect(api.evidence.latencyP95Ms == 2500)
        let incident = try #require(fleet.engine.openIncidents.first)
        #expect(incident.severity == .degradedPerformance)
        #expect(fleet.verdicts["files"]?.status == .operational)
    }

    @Test func anAgentThatStopsIsSilentOnceAndItsStaleFailuresDoNotCount() throws {
        var fleet = warmFleet()
        // us-2's files fail (locally), then it stops reporting altogether.
        fleet.faults["us-2"] = FleetSimulation.failing(agents: ["us-2"], components: ["files", "login"])
        fleet.step(seconds: 6)
        fleet.stopped.insert("us-2")
        fleet.step(seconds: 60)
        let silentEvents = fleet.events.filter { $0.type == .agentSilent }
        #expect(silentEvents.count == 1)
        #expect(silentEvents.first?.agent == "us-2")
        #expect(fleet.health("us-2")?.state == .silent)
        let lastSeen = try #require(fleet.health("us-2")?.lastSeen)
        #expect(silentEvents.first?.id == "agent.silent.us-2.\(Int64(lastSeen.timeIntervalSince1970 * 1000))")
        #expect(fleet.events.allSatisfy { $0.type == .agentSilent || $0.type == .agentLocalFault })
        #expect(fleet.engine.openIncidents.isEmpty)
        for verdict in fleet.verdicts.values {
            #expect(verdict.status == .operational)
            #expect(!verdict.evidence.failingAgents.contains("us-2"))
            #expect(!verdict.evidence.localAgents.contains("us-2"))
            #expect(verdict.evidence.reportingAgents == 8)
        }
    }

    @Test func anAgentThatStopsWhileHealthyIsSilentWithinItsThreshold() throws {
        var fleet = warmFleet()
        fleet.stopped.insert("ap-3")
        fleet.step(seconds: 9)
        #expect(fleet.events.isEmpty)  // silent_min is 10 s
        fleet.step(seconds: 3)
        #expect(types(fleet.events) == [.agentSilent])
        fleet.step(seconds: 60)
        #expect(types(fleet.events) == [.agentSilent])
        // It comes back: ok again, and agent.recovered names the silence it ends; a second
        // stop is a new episode with a new id.
        fleet.stopped = []
        fleet.step(seconds: 5)
        #expect(fleet.health("ap-3")?.state == .ok)
        #expect(types(fleet.events) == [.agentSilent, .agentRecovered])
        #expect(fleet.events.last?.resolves == fleet.events.first?.id && fleet.events.last?.resolvesType == .agentSilent)
        #expect(fleet.events.last?.id != fleet.events.first?.id)
        fleet.stopped.insert("ap-3")
        fleet.step(seconds: 15)
        #expect(types(fleet.events) == [.agentSilent, .agentRecovered, .agentSilent])
        #expect(Set(fleet.events.map(\.id)).count == 3)
    }

    @Test func controlFailingWhileEverythingFailsIsStillLocal() {
        // sa-1 is alone in its region: without its control probe, "everything fails in sa" would
        // be a regional outage; with it failing too, it is that agent's network.
        var fleet = warmFleet(regions: ["eu": 3, "us": 3, "sa": 1])
        fleet.faults["sa"] = FleetSimulation.failing(
            agents: ["sa-1"], control: true, error: ProbeError(kind: .timeout, step: "request", message: "timed out"))
        fleet.step(seconds: 30)
        #expect(types(fleet.events) == [.agentLocalFault])
        #expect(fleet.health("sa-1")?.state == .localFault)
        #expect(fleet.engine.openIncidents.isEmpty)
        #expect(fleet.verdicts.values.allSatisfy { $0.status == .operational })
    }

    @Test func aLoneAgentFailingWithItsControlPassingIsARegionalOutage() throws {
        var fleet = warmFleet(regions: ["eu": 3, "us": 3, "sa": 1])
        fleet.faults["sa"] = FleetSimulation.failing(agents: ["sa-1"], components: ["login"])
        fleet.step(seconds: 20)
        let login = try #require(fleet.verdicts["login"])
        #expect(login.status == .partialOutage)
        #expect(login.scope == .region)
        #expect(fleet.engine.openIncidents.first?.regions == ["sa"])
    }

    @Test func platformFaultOpensWithinTwoIntervalsPlusOneSecond() throws {
        var fleet = warmFleet()
        fleet.faults["api"] = FleetSimulation.failing(components: ["api"])
        var opened: AlertEvent?
        for _ in 0..<30 where opened == nil {
            opened = fleet.step().first { $0.type == .incidentOpened }
        }
        let event = try #require(opened)
        let first = try #require(fleet.firstFailureAt)
        let latency = event.occurredAt.timeIntervalSince(first)
        print("detection latency: \(latency) s after the first failing result (limit \(2 * fleet.interval + 1) s)")
        #expect(latency <= 2 * fleet.interval + 1)
        #expect(event.scope == .platform)
    }

    @Test func rebuildAfterRestartGivesTheSameVerdictsAndReemitsNothing() throws {
        var fleet = warmFleet()
        fleet.faults["files"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        fleet.faults["cut"] = FleetSimulation.failing(agents: ["us-3"], control: true)
        fleet.stopped.insert("ap-2")
        fleet.step(seconds: 30)
        #expect(Set(types(fleet.events)) == [.incidentOpened, .agentLocalFault, .agentSilent])
        let incident = try #require(fleet.engine.openIncidents.first)

        var rebuilt = fleet.rebuiltEngine()
        let output = rebuilt.evaluate(now: fleet.now)
        #expect(output.events.isEmpty)
        #expect(output.changedIncidents.isEmpty)
        for original in fleet.engine.verdicts {
            let again = try #require(output.verdicts.first { $0.component == original.component })
            #expect(again.status == original.status)
            #expect(again.scope == original.scope)
            #expect(again.regions == original.regions)
            #expect(again.evidence == original.evidence)
            #expect(again.incidentID == original.incidentID)
        }
        #expect(output.agents.map(\.state) == fleet.engine.agentHealth.map(\.state))
        #expect(output.agents.map(\.since) == fleet.engine.agentHealth.map(\.since))

        // The rebuilt engine carries on: more ticks of the same situation emit nothing new, and
        // the recovery continues the incident's event sequence.
        fleet.engine = rebuilt
        fleet.step(seconds: 10)
        #expect(Set(types(fleet.events)) == [.incidentOpened, .agentLocalFault, .agentSilent])
        fleet.faults = [:]
        fleet.step(seconds: 60)
        let resolved = try #require(fleet.events.last { $0.type == .incidentResolved })
        #expect(resolved.incident?.id == incident.id)
        #expect(Set(fleet.events.map(\.id)).count == fleet.events.count)
    }

    @Test func eventIdsAreUniqueAcrossAScenario() {
        var fleet = warmFleet()
        fleet.faults["files"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        fleet.step(seconds: 20)
        fleet.faults["files"] = FleetSimulation.failing(components: ["files"])
        fleet.step(seconds: 20)
        fleet.faults = [:]
        fleet.step(seconds: 40)
        fleet.faults["files"] = FleetSimulation.failing(regions: ["us"], components: ["files"])
        fleet.step(seconds: 20)
        #expect(fleet.events.filter { $0.type == .incidentOpened }.count == 2)
        #expect(Set(fleet.events.map(\.id)).count == fleet.events.count)
    }
}

@Suite struct CorrelationRestartTests {
    @Test func anAgentLastSeenBeforeARestartWithNothingSinceIsReportedSilentOnce() throws {
        let t0 = FleetSimulation.start
        let agents = [AgentInfo(id: "eu-1", region: "eu")]
        let stored = AgentHealth(agent: "eu-1", region: "eu", state: .ok, since: t0, lastSeen: t0)
        var engine = CorrelationEngine(config: CorrelationConfig(), agents: agents, agentStates: [stored])
        #expect(engine.evaluate(now: t0.addingTimeInterval(5)).events.isEmpty)
        let output = engine.evaluate(now: t0.addingTimeInterval(31))
        #expect(output.events.map(\.id) == ["agent.silent.eu-1.\(Int64(t0.timeIntervalSince1970 * 1000))"])
        #expect(engine.evaluate(now: t0.addingTimeInterval(60)).events.isEmpty)

        // Restarted again with that state stored: nothing new.
        var again = CorrelationEngine(config: CorrelationConfig(), agents: agents, agentStates: engine.agentHealth)
        #expect(again.evaluate(now: t0.addingTimeInterval(90)).events.isEmpty)
        #expect(again.agentHealth.first?.state == .silent)
    }

    @Test func revokedAgentsAreIgnored() throws {
        var fleet = FleetSimulation()
        fleet.step(seconds: 20)
        fleet.faults["cut"] = FleetSimulation.failing(agents: ["eu-1", "eu-2", "eu-3"], components: ["login"])
        var agents = fleet.agents
        for i in agents.indices where agents[i].region == "eu" { agents[i].revoked = true }
        fleet.engine.setAgents(agents)
        fleet.step(seconds: 20)
        #expect(fleet.events.isEmpty)
        #expect(fleet.verdicts["login"]?.status == .operational)
        #expect(fleet.verdicts["login"]?.evidence.reportingAgents == 6)
        #expect(fleet.health("eu-1")?.state == .revoked)
    }
}
