import Foundation
import SondeCore
import Testing

@testable import Correlation

/// The scenarios of issue 10 on a simulated fleet (3 regions × 2 agents, probes every 2 s, pushes
/// and evaluations every second), each over several seeds: the right final verdict, no false
/// local fault, no incident from local faults, no flaps, the first alert's scope right,
/// detection within 2 intervals + 1 s, resolution within 3 intervals of the fault clearing.
@Suite struct PartialFailureScenarioTests {
    static let seeds: [UInt64] = [1, 2, 3, 4, 5, 6]
    static let regions = ["eu": 2, "us": 2, "ap": 2]

    func warmFleet(loginJourneys: Set<String> = [], clockSkew: [String: Double] = [:]) -> FleetSimulation {
        var fleet = FleetSimulation(regions: Self.regions)
        fleet.loginJourneys = loginJourneys
        fleet.clockSkew = clockSkew
        fleet.step(seconds: 40)
        return fleet
    }

    /// What happened to one component's incidents while a fault was on and after it cleared.
    struct Trial {
        var during: [AlertEvent]
        var after: [AlertEvent]
        var faultStart: Date
        var clearedAt: Date

        var all: [AlertEvent] { during + after }
        func opened(_ component: String? = nil) -> [AlertEvent] {
            all.filter { $0.type == .incidentOpened && (component == nil || $0.component == component) }
        }
        var localFaults: [AlertEvent] { all.filter { $0.type == .agentLocalFault } }
        /// Recovery while the fault is on, or a relapse after it cleared, or a second incident.
        func flaps(_ component: String) -> [String] {
            var flaps: [String] = []
            for e in during where e.component == component && (e.status == "monitoring" || e.status == "resolved") {
                flaps.append("\(e.status ?? "") while the fault was on: \(e.summary)")
            }
            var recovering = false
            for e in after where e.component == component {
                if e.status == "monitoring" || e.status == "resolved" { recovering = true }
                if recovering && e.status == "investigating" { flaps.append("relapse after the fault cleared: \(e.summary)") }
            }
            if opened(component).count > 1 { flaps.append("\(opened(component).count) incidents opened") }
            return flaps
        }
        func detection(_ component: String) -> Double? {
            opened(component).first.map { $0.occurredAt.timeIntervalSince(faultStart) }
        }
        func resolution(_ component: String) -> Double? {
            after.first { $0.type == .incidentResolved && $0.component == component }.map { $0.occurredAt.timeIntervalSince(clearedAt) }
        }
    }

    func trial(_ fleet: inout FleetSimulation, faults: [String: FleetSimulation.Fault], on: Int = 90, off: Int = 60) -> Trial {
        let start = fleet.now
        fleet.faults = faults
        let during = fleet.step(seconds: on)
        fleet.faults = [:]
        let cleared = fleet.now
        let after = fleet.step(seconds: off)
        return Trial(during: during, after: after, faultStart: start, clearedAt: cleared)
    }

    func describe(_ events: [AlertEvent]) -> String {
        events.map { "\($0.type.rawValue) \($0.status ?? "") \($0.summary)" }.joined(separator: "\n")
    }

    // MARK: - Random errors

    @Test(arguments: [0.1, 0.3, 0.6], seeds)
    func randomErrorsEverywhereAreOnePlatformIncident(fraction: Double, seed: UInt64) throws {
        var fleet = warmFleet()
        let result = trial(&fleet, faults: ["random": FleetSimulation.randomly(fraction, seed: seed, components: ["api"])])
        let log = describe(result.all)
        #expect(result.localFaults.isEmpty, "\(log)")
        #expect(result.opened().count == 1, "\(log)")
        let opened = try #require(result.opened("api").first, "\(log)")
        #expect(opened.scope == .platform, "\(log)")
        #expect(result.flaps("api").isEmpty, "\(result.flaps("api"))\n\(log)")
        let last = try #require(result.during.last { $0.component == "api" }?.incident)
        #expect(last.scope == .platform)
        #expect(last.severity >= .partialOutage, "\(log)")
        if fraction >= 0.3 {
            // A random fault is confirmed when an agent's runs are (flaky_ratio over flaky_window,
            // or confirm_failures in a row): at 30 % that takes several intervals (printed below).
            let detection = try #require(result.detection("api"))
            #expect(detection <= 20, "detected after \(detection) s\n\(log)")
        }
        let resolution = try #require(result.resolution("api"), "\(log)")
        print("random \(fraction) everywhere, seed \(seed): detection \(result.detection("api") ?? -1) s, resolution \(resolution) s")
        // Recovery needs M pooled passing runs (see `recovery_confidence`) and 1.5 × the fault's
        // longest lull: at 30 % with 6 agents M is 20 runs (about 3.3 intervals); at 10 %, 66.
        // Measured here: 4–10 s at 30 %, 11–34 s at 10 %; 4 s at 60 %.
        #expect(resolution <= [0.1: 40, 0.3: 6 * fleet.interval, 0.6: 3 * fleet.interval + 1][fraction]!, "\(log)")
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    /// A warm fleet that runs as real agents do (a failed run retried at the retry pace, pushes
    /// and evaluations every 0.1 s, four files requests per run), so thin faults' first alerts
    /// come as in the real scenarios.
    static func fleetAsAgentsRun() -> FleetSimulation {
        var fleet = FleetSimulation(regions: regions)
        fleet.promptControl = true
        fleet.retryInterval = 0.5
        fleet.tick = 0.1
        fleet.requestsPerRun = ["files": 4]
        fleet.step(seconds: 40)
        return fleet
    }

    /// A thin fault everywhere as real agents show it: a failed run retried at the retry pace,
    /// the other regions asked to confirm, pushes and evaluations every 0.1 s (the scenarios'
    /// `flush_interval`), 4 requests a run. The first region to count as failing is not announced
    /// alone while another region has just failed a run too. When one fresh passing run in each
    /// other region settled region scope, 4 of these 40 trials paged with scope `region` (7 of
    /// 120 on this fleet, and 1 of 5 trials of the real `errors-10-everywhere`).
    @Test func aThinFaultEverywhereIsAnnouncedAsPlatformFromTheFirstAlert() throws {
        var regionFirst: [String] = []
        for seed in UInt64(1)...40 {
            var fleet = Self.fleetAsAgentsRun()
            let start = fleet.now
            fleet.faults = ["random": FleetSimulation.randomly(0.1, seed: seed, components: ["files"])]
            var opened: AlertEvent?
            for _ in 0..<400 where opened == nil { opened = fleet.step(ticks: 1).first { $0.type == .incidentOpened } }
            let first = try #require(opened, "seed \(seed): no incident in 40 s")
            #expect(first.occurredAt.timeIntervalSince(start) <= 10, "seed \(seed)")
            if first.scope != .platform { regionFirst.append("seed \(seed): \(first.summary)") }
        }
        #expect(regionFirst.isEmpty, "\(regionFirst)")
    }

    /// After an incident resolved, agents' windows hold few runs, and a 10 % fault in their
    /// region (a third of the runs fail) can give one agent 5 failures in a row while its peer
    /// passes 5. The two-proportion z-test called that local (z = 3.16 ≥ 3.09), on every one of
    /// these four seeds (6 of 300 such simulated trials); Fisher's exact test puts its chance at
    /// 1/252 and waits (2 of 300 still are: the test runs on every evaluation).
    @Test(arguments: [(UInt64(14), 0), (41, 0), (50, 1), (135, 1)])
    func aThinRegionalFaultAfterARecoveryMakesNoAgentLocal(seed: UInt64, round: Int) throws {
        var fleet = Self.fleetAsAgentsRun()
        fleet.faults = ["random": FleetSimulation.randomly(0.3, seed: seed + 1000, components: ["files"])]
        fleet.step(seconds: 20)
        fleet.faults = [:]
        fleet.step(seconds: 40)
        for r in 0...round {
            fleet.faults = ["random": FleetSimulation.randomly(0.1, seed: seed * 7 + UInt64(r), regions: ["eu"], components: ["files"])]
            let events = fleet.step(seconds: 30)
            #expect(!events.contains { $0.type == .agentLocalFault }, "round \(r): \(describe(events))")
            fleet.faults = [:]
            fleet.step(seconds: 40)
        }
    }

    /// A region counts failing from its agents' pooled runs, so two agents' single failures could
    /// make it count while neither was listed: incidents opened as "regions ap, eu, us; agents
    /// ap-2, us-1" (the verdict review's D8; 15 such alerts in these 60 trials before the
    /// fix). Every region an incident names now lists its agents with a failed run.
    @Test func everyRegionAnIncidentNamesListsItsFailingAgents() throws {
        var unlisted: [String] = []
        for seed in UInt64(1)...30 {
            for fraction in [0.05, 0.1] {
                var fleet = Self.fleetAsAgentsRun()
                fleet.faults = ["random": FleetSimulation.randomly(fraction, seed: seed, components: ["files"])]
                for _ in 0..<300 {
                    for event in fleet.step(ticks: 1) where event.type == .incidentOpened || event.type == .incidentUpdated {
                        let incident = try #require(event.incident)
                        for region in incident.regions where !incident.agents.contains(where: { $0.hasPrefix(region + "-") }) {
                            unlisted.append("seed \(seed), \(fraction): \(event.type) regions \(incident.regions), agents \(incident.agents)")
                        }
                    }
                }
            }
        }
        #expect(unlisted.isEmpty, "\(unlisted.count): \(unlisted.prefix(5))")
    }

    @Test(arguments: [0.3, 0.6], seeds)
    func randomErrorsInOneRegionAreARegionIncident(fraction: Double, seed: UInt64) throws {
        var fleet = warmFleet()
        let result = trial(
            &fleet, faults: ["random": FleetSimulation.randomly(fraction, seed: seed, regions: ["eu"], components: ["files"])])
        let log = describe(result.all)
        #expect(result.localFaults.isEmpty, "\(log)")
        let opened = try #require(result.opened("files").first, "\(log)")
        #expect(result.opened().count == 1, "\(log)")
        #expect(opened.scope == .region, "\(log)")
        #expect(opened.regions == ["eu"], "\(log)")
        #expect(result.flaps("files").isEmpty, "\(result.flaps("files"))\n\(log)")
        #expect(result.all.allSatisfy { $0.scope != .platform }, "\(log)")
        #expect(result.resolution("files") != nil, "\(log)")
    }

    /// A lull in a random fault is not its end, for the verdict either: while its incident is
    /// investigating, the component never reads operational, nor narrower than the incident's
    /// membership (regions the incident still names beside a verdict that leaves them out).
    /// Without the hold 19 of these 24 trials showed less, some for a minute at a time. (The
    /// membership itself may drop a region whose lull outlasts 1.5 × the longest so far, and the
    /// verdict follows it: a fault that moved must leave the verdict; see
    /// `aFaultThatMovedAwayLeavesTheScopeAsSoonAsItsRegionsRunsPass`.)
    @Test(arguments: [0.1, 0.3], seeds)
    func aLullInARandomFaultKeepsTheVerdict(fraction: Double, seed: UInt64) throws {
        for regions: Set<String>? in [["eu"], nil] {
            var fleet = warmFleet()
            fleet.faults = ["random": FleetSimulation.randomly(fraction, seed: seed, regions: regions, components: ["files"])]
            var events: [AlertEvent] = []
            var shownLess: [String] = []
            for second in 0..<240 {
                events += fleet.step()
                guard let open = fleet.engine.openIncidents.first(where: { $0.component == "files" }), open.status == .investigating,
                    let verdict = fleet.verdicts["files"]
                else { continue }
                let shownRegions = Set(verdict.regions.filter { $0.value != .operational }.keys)
                let narrower = open.regions.count >= fleet.engine.config.minPlatformRegions && verdict.scope != .platform
                if verdict.status == .operational || narrower || !shownRegions.isSuperset(of: open.regions) {
                    shownLess.append(
                        "\(second) s: \(verdict.status.rawValue) \(verdict.scope?.rawValue ?? "-") \(shownRegions.sorted()) beside \(open.regions)")
                }
            }
            let log = describe(events)
            try #require(events.contains { $0.type == .incidentOpened && $0.component == "files" }, "\(log)")
            #expect(shownLess.isEmpty, "\(regions ?? ["everywhere"]): while investigating \(shownLess)\n\(log)")
        }
    }

    /// A random fault whose first failures come together (5 in a row on each eu series, then one
    /// run in 5) is not a hard fault: 6 failed runs pooled inside the spans could be a burst, so
    /// recovery reads the window's rate, and the incident does not resolve on the burst's end and
    /// open again at the next failure (a flap seen twice in 64 trials of `errors-10-eu` when 5
    /// such runs read as hard).
    @Test func aBurstAtARandomFaultsStartIsNotAHardFault() throws {
        var fleet = warmFleet()
        let burst = FleetSimulation.failing(regions: ["eu"], components: ["files"], when: { (20...24).contains($0) || $0 % 5 == 2 })
        let result = trial(&fleet, faults: ["burst": burst], on: 60, off: 60)
        let log = describe(result.all)
        #expect(result.opened("files").count == 1, "\(log)")
        #expect(result.flaps("files").isEmpty, "\(result.flaps("files"))\n\(log)")
        #expect(fleet.engine.config.hardFaultRuns == 10)
    }

    @Test(arguments: [0.3, 0.6, 1.0], seeds)
    func randomErrorsOnOneAgentAreNeverAnIncident(fraction: Double, seed: UInt64) throws {
        var fleet = warmFleet()
        let result = trial(
            &fleet, faults: ["bad host": FleetSimulation.randomly(fraction, seed: seed, agents: ["us-1"], components: ["api", "files"])])
        let log = describe(result.all)
        #expect(result.opened().isEmpty, "\(log)")
        #expect(result.localFaults.allSatisfy { $0.agent == "us-1" }, "\(log)")
        if fraction >= 0.6 { #expect(result.localFaults.count == 1, "\(log)") }
    }

    /// A steady random fault everywhere keeps one incident whose membership only grows: no
    /// region or agent leaves while its rate is unchanged, and what joins is announced together,
    /// never within `membership_update_gap` of the last announcement (found by the on-call
    /// review: 13 updates in 60 s, eu dropped and added back three times, 4–5 in the first 2 s).
    @Test(arguments: seeds)
    func aSteadyRandomFaultsMembershipDoesNotFlap(seed: UInt64) throws {
        var fleet = warmFleet()
        fleet.faults = ["10 %": FleetSimulation.randomly(0.1, seed: seed, components: ["files"])]
        let events = fleet.step(seconds: 150).filter { $0.component == "files" }
        let log = describe(events)
        #expect(events.filter { $0.type == .incidentOpened }.count == 1, "\(log)")
        #expect(!events.contains { $0.summary.hasPrefix("changed:") && $0.summary.contains("\u{2212}") }, "a member left: \(log)")
        let announced = events.filter { $0.type == .incidentOpened || $0.summary.hasPrefix("changed:") || $0.summary.hasPrefix("spread:") || $0.summary.hasPrefix("worse:") }
        for (earlier, later) in zip(announced, announced.dropFirst()) where later.summary.hasPrefix("changed:") {
            #expect(later.occurredAt.timeIntervalSince(earlier.occurredAt) >= 10, "\(log)")
        }
        // At most one announcement per agent that joins (each first fails at its own random time).
        #expect(announced.count <= 6, "\(log)")
    }

    /// A steady random fault in one region stays one open incident for half an hour, never
    /// `monitoring` or resolved while it is on, and resolves once it clears. A region of two
    /// agents makes one run a second; its windows hold 20 runs a series, and recovery read the
    /// fault's rate from the few runs left before the newest failure (0.25 and more at 10 %), so
    /// 24–40 passes in a row "recovered" it: before the incident's own record of its fault, these
    /// trials resolved and opened again 1–5 times each (the verdict review saw it as D4).
    @Test(arguments: [0.1, 0.2], [UInt64(1), 2, 3])
    func aSteadyRegionalRandomFaultStaysOneIncidentForHalfAnHour(fraction: Double, seed: UInt64) throws {
        var fleet = warmFleet()
        let result = trial(
            &fleet, faults: ["random": FleetSimulation.randomly(fraction, seed: seed, regions: ["eu"], components: ["files"])],
            on: 1800, off: 300)
        let log = describe(result.all.filter { $0.component == "files" })
        #expect(result.opened("files").count == 1, "\(log)")
        #expect(result.flaps("files").isEmpty, "\(result.flaps("files"))\n\(log)")
        // The price: after half an hour of a 10 % fault its record asks for about 115 passing runs
        // (the 0.999 confidence split over its ~180 clean stretches), two minutes in this region.
        let resolution = try #require(result.resolution("files"), "\(log)")
        #expect(resolution <= 240, "\(log)")
        print("steady \(fraction) in eu, seed \(seed): resolved \(resolution) s after it cleared")
    }

    /// One compromised agent that reports a component through 150 probes of its own, all
    /// passing, cannot outvote its region's peers: a real outage they both see is a region
    /// incident, and neither is called local (found by the red team, F2: 95 s of an eu outage
    /// hidden, and the honest agents paged as local faults).
    @Test func oneAgentWithManyPassingProbesCannotOutvoteItsPeers() throws {
        var fleet = FleetSimulation(regions: ["eu": 3, "us": 2, "ap": 2])
        fleet.step(seconds: 40)
        fleet.faults = ["eu outage": FleetSimulation.failing(agents: ["eu-1", "eu-2"], components: ["files"])]
        var events: [AlertEvent] = []
        for _ in 0..<40 {
            fleet.ingestMadeUpPassingRuns(from: "eu-3", region: "eu", component: "files")
            events += fleet.step()
        }
        let log = describe(events)
        #expect(!events.contains { $0.type == .agentLocalFault }, "\(log)")
        let opened = try #require(events.first { $0.type == .incidentOpened && $0.component == "files" }, "\(log)")
        #expect(opened.scope == .region && opened.regions == ["eu"], "\(log)")
    }

    /// A hard outage in one region and an agent elsewhere whose network drops 30 % of its
    /// connections: the incident stays the region's; the flaky host's resets are not a second
    /// region (found by the on-call review, F10: "Jobs is failing platform-wide").
    @Test(arguments: seeds)
    func aFlakyHostElsewhereDoesNotWidenARegionalOutage(seed: UInt64) throws {
        var fleet = warmFleet()
        fleet.faults["flaky network"] = FleetSimulation.flakyNetwork(of: "eu-1", 0.3, seed: seed)
        fleet.step(seconds: 20)
        fleet.faults["us batch"] = FleetSimulation.failing(regions: ["us"], components: ["batch"])
        let events = fleet.step(seconds: 60)
        let log = describe(events)
        let batch = events.filter { $0.component == "batch" }
        #expect(batch.filter { $0.type == .incidentOpened }.count == 1, "\(log)")
        #expect(batch.allSatisfy { $0.scope == .region && !$0.regions.contains("eu") }, "\(log)")
        #expect(fleet.verdicts["batch"]?.scope == .region, "\(log)")
    }

    /// An outage in three regions that recovers region by region is recorded, once resolved, as
    /// the three-region outage it was, not as the last region to recover (found by the on-call
    /// review, F11: the history said "Major Outage of login in us").
    @Test func aResolvedIncidentKeepsEveryRegionItTouched() throws {
        var fleet = warmFleet()
        fleet.faults = ["everywhere": FleetSimulation.failing(components: ["login"])]
        fleet.step(seconds: 20)
        fleet.faults = ["us": FleetSimulation.failing(regions: ["us"], components: ["login"])]
        let during = fleet.step(seconds: 20)
        fleet.faults = [:]
        let after = fleet.step(seconds: 30)
        let log = describe(fleet.events)
        #expect(during.contains { $0.summary.hasPrefix("changed:") && $0.regions == ["us"] }, "the open incident follows the fault: \(log)")
        let resolved = try #require(after.first { $0.type == .incidentResolved && $0.component == "login" }, "\(log)")
        #expect(resolved.incident?.regions == ["ap", "eu", "us"], "\(log)")
        #expect(resolved.regions == ["ap", "eu", "us"])
        let agents = Set(resolved.incident.map(\.agents) ?? [])
        #expect(agents.isSuperset(of: ["eu-1", "ap-1", "us-1"]), "\(agents)")
    }

    /// A component one agent made up is never listed as affected by a real incident (the public
    /// page, feed and webhooks showed "affects files, batch, payments - card data was leaked"):
    /// only known components, declared or reported by `min_component_agents`, are (red team F8).
    @Test func aComponentOneAgentMadeUpIsNotListedAsAffected() throws {
        var fleet = warmFleet(loginJourneys: ["batch"])
        fleet.faults = ["login": FleetSimulation.failing(components: ["login"])]
        let made = "payments - card data was leaked, call 555-0100"
        for second in 0..<20 {
            let evil = ProbeResult(
                id: "evil-\(second)", probe: "up-1", component: made, agent: "eu-1", region: "eu",
                startedAt: fleet.now.addingTimeInterval(-0.5), durationMs: 5, outcome: .failed,
                error: ProbeError(kind: .httpStatus, step: "login", message: "HTTP 401"),
                steps: [StepResult(name: "login", method: "POST", url: "u", ok: false, timings: .zero, component: "login")])
            fleet.engine.ingest([evil], receivedAt: fleet.now)
            fleet.step()
        }
        let login = try #require(fleet.verdicts["login"])
        #expect(login.evidence.affected == ["batch"], "\(login.evidence.affected)")
        #expect(fleet.engine.openIncidents.first { $0.component == "login" }?.evidence.affected == ["batch"])
    }

    /// A component one agent made up does not colour a real one either: a failing step of
    /// "evilcause" in its files journey put files at major outage, "affected by evilcause", on the
    /// public page while every other agent's files runs passed (red team, fifth pass).
    @Test func aComponentOneAgentMadeUpDoesNotShowARealOneAsAffected() throws {
        var fleet = warmFleet()
        for second in 0..<20 {
            let evil = ProbeResult(
                id: "evil-\(second)", probe: "journey", component: "files", agent: "us-1", region: "us",
                startedAt: fleet.now.addingTimeInterval(-0.5), durationMs: 5, outcome: .failed,
                error: ProbeError(kind: .httpStatus, step: "cause", message: "HTTP 500", code: "hacked_by_eve"),
                steps: [StepResult(name: "cause", method: "GET", url: "u", ok: false, timings: .zero, component: "evilcause")])
            fleet.engine.ingest([evil], receivedAt: fleet.now)
            fleet.step()
        }
        let verdicts = Dictionary(uniqueKeysWithValues: fleet.engine.verdicts.map { ($0.component, $0) })
        let cause = try #require(verdicts["evilcause"])
        #expect(!cause.known)
        let files = try #require(verdicts["files"])
        #expect(files.status == .operational, "files: \(files.status), affected by \(files.evidence.affectedBy)")
        #expect(files.evidence.affectedBy.isEmpty)
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    /// An agent already failing on its own (its host pointed at a dead backend: connection
    /// refused on everything but its control) when a real outage begins is not absorbed into it:
    /// its local fault does not "clear" while it still fails, and once the outage ends its
    /// failures do not hold the incident open (found by the new-user walk-through: the incident
    /// of a 30 s outage stayed open 11 minutes as "1 of 2 agents in eu", with a false
    /// `agent.recovered` for the broken agent).
    @Test(arguments: [(["eu": 2, "us": 2, "ap": 2], 2.0), (["eu": 2, "us": 1], 10.0)])
    func aKnownLocalFaultDoesNotHoldARealOutageOpen(regions: [String: Int], interval: Double) throws {
        var fleet = FleetSimulation(regions: regions, interval: interval)
        fleet.step(seconds: Int(20 * interval))
        let refused = ProbeError(kind: .connect, step: "request", message: "connection refused")
        let broken = FleetSimulation.failing(agents: ["eu-2"], error: refused)
        fleet.faults = ["eu-2 broken": broken]
        let before = fleet.step(seconds: Int(15 * interval))
        #expect(before.filter { $0.type == .agentLocalFault }.map(\.agent) == ["eu-2"], "\(describe(before))")
        #expect(!before.contains { $0.type == .incidentOpened }, "\(describe(before))")
        // A real outage of everything, 3 intervals, then gone; eu-2 stays broken throughout.
        fleet.faults["outage"] = FleetSimulation.failing()
        let during = fleet.step(seconds: Int(3 * interval))
        fleet.faults["outage"] = nil
        let after = fleet.step(seconds: Int(30 * interval))
        let log = describe(during + after)
        #expect(during.contains { $0.type == .incidentOpened && $0.component == "api" }, "\(log)")
        #expect(!(during + after).contains { $0.type == .agentRecovered && $0.agent == "eu-2" }, "eu-2 never recovered:\n\(log)")
        // Every incident resolves as it would without the broken agent: a 3-interval outage is
        // too short to read as hard, so its recovery asks for many clean runs (6 intervals at
        // 2 s, 8.4 at 10 s, measured without eu-2's fault); 12 is that with room to spare.
        let cleared = fleet.now.addingTimeInterval(-30 * interval)
        for component in FleetSimulation.components {
            let resolved = after.first { $0.type == .incidentResolved && $0.component == component }
            #expect(resolved.map { $0.occurredAt.timeIntervalSince(cleared) <= 12 * interval } == true, "\(component) resolved after \(resolved.map { $0.occurredAt.timeIntervalSince(cleared) } ?? -1) s")
        }
        #expect(fleet.engine.openIncidents.isEmpty, "\(fleet.engine.openIncidents.map { "\($0.component) \($0.status) \($0.regions)" })\n\(log)")
        #expect(fleet.health("eu-2")?.state == .localFault)
    }

    /// A new agent whose network is broken from its first run (a closed port where the platform
    /// should be), alone in its region and before its control probe (every 30 s) has run, does
    /// not spread another region's open incident to the platform, nor make it worse (found by
    /// the CLI walk-through, F2: "spread: partial outage platform-wide (2/2 agents failing,
    /// connect, server_error)" 5 s after the agent started, never narrowed).
    @Test(arguments: [["eu": 2, "us": 1], ["eu": 2, "us": 2, "ap": 1]], [1.0, 0.3])
    func aNewAgentWithABrokenNetworkDoesNotSpreadAnIncident(regions: [String: Int], fraction: Double) throws {
        let newcomer = regions.keys.sorted().last! + "-\(regions[regions.keys.sorted().last!]!)"
        var fleet = FleetSimulation(regions: regions, interval: 2)
        fleet.controlEvery = 15
        fleet.stopped = [newcomer]
        fleet.step(seconds: 40)
        fleet.faults = ["eu files": FleetSimulation.randomly(fraction, seed: 3, regions: ["eu"], components: ["files"])]
        let before = fleet.step(seconds: 90)
        let incident = try #require(fleet.engine.openIncidents.first { $0.component == "files" }, "\(describe(before)) \(fleet.verdicts["files"].map { "\($0.status) \($0.evidence.failingAgents)" } ?? "")")
        #expect(incident.scope == .region && incident.regions == ["eu"], "\(describe(before))")
        let refused = ProbeError(kind: .connect, step: "request", message: "connection refused")
        fleet.faults["broken newcomer"] = FleetSimulation.failing(agents: [newcomer], control: true, error: refused)
        fleet.stopped = []
        let after = fleet.step(seconds: 60)
        let log = describe(after)
        #expect(!after.contains { $0.scope == .platform }, "\(log)")
        #expect(!after.contains { $0.type == .incidentOpened }, "\(log)")
        let files = try #require(fleet.engine.openIncidents.first { $0.component == "files" })
        #expect(files.scope == .region && files.regions == ["eu"] && !files.agents.contains(newcomer), "\(files.scope) \(files.regions) \(files.agents)")
        #expect(fleet.health(newcomer)?.state == .localFault, "\(log)")
    }

    /// The other side of the lone agent's wait: a real outage of the one region a lone agent
    /// watches (its failure is its own code, nobody shares it) opens that region's incident once
    /// its control has passed a run begun after the failure: within 2 intervals + 1 s when the
    /// agent runs its control at once on a failure, by the control's next slot when it does not.
    @Test(arguments: [true, false])
    func aLoneAgentsRegionOutageOpensOnceItsControlPasses(promptControl: Bool) throws {
        var fleet = FleetSimulation(regions: ["eu": 1, "us": 1, "ap": 1], interval: 2)
        fleet.controlEvery = 15
        fleet.promptControl = promptControl
        fleet.step(seconds: 40)
        let start = fleet.now
        fleet.faults = ["us files": FleetSimulation.failing(regions: ["us"], components: ["files"])]
        let events = fleet.step(seconds: 60)
        let log = describe(events)
        let opened = try #require(events.first { $0.type == .incidentOpened }, "\(log)")
        #expect(opened.component == "files" && opened.scope == .region && opened.regions == ["us"], "\(log)")
        let detection = opened.occurredAt.timeIntervalSince(start)
        #expect(detection <= (promptControl ? 5 : 33), "opened after \(detection) s\n\(log)")
        #expect(!events.contains { $0.type == .agentLocalFault }, "\(log)")
    }

    /// A region's incident counts that region's agents: "2 of 2 agents" in eu reads as all of
    /// eu, where "2 of 6" read as two bad hosts (found by the on-call review, F3).
    @Test func aRegionsIncidentCountsThatRegionsAgents() throws {
        var fleet = warmFleet()
        fleet.faults = ["eu": FleetSimulation.failing(regions: ["eu"], components: ["files"])]
        let events = fleet.step(seconds: 20)
        let opened = try #require(events.first { $0.type == .incidentOpened }, "\(describe(events))")
        #expect(opened.scope == .region && opened.summary.contains("in eu (2/2 agents failing"), "\(opened.summary)")
        #expect(opened.message?.contains("for users in eu (2 of 2 agents") == true, "\(opened.message ?? "-")")
        #expect(opened.evidence?.reportingAgents == 6 && opened.evidence?.regionReportingAgents == 2)
    }

    /// An agent of a region stopped during its confirmed outage (a routine restart) does not turn
    /// the incident into "seen by one agent only so far" (found by the on-call review, F7).
    @Test func aConfirmedIncidentStaysConfirmedWhenOneOfItsAgentsStops() throws {
        var fleet = warmFleet()
        fleet.faults = ["eu": FleetSimulation.failing(regions: ["eu"], components: ["files"])]
        fleet.step(seconds: 15)
        fleet.stopped.insert("eu-2")
        let events = fleet.step(seconds: 40)
        let log = describe(events)
        #expect(fleet.verdicts["files"]?.evidence.singleAgent == false, "\(log)")
        #expect(!events.contains { $0.summary.contains("single agent") || ($0.message ?? "").contains("one agent only") }, "\(log)")
        #expect(fleet.engine.openIncidents.first { $0.component == "files" } != nil)
    }

    /// An agent's absurd duration (1e308 ms) is kept within bounds: the latency figures and the
    /// incident's text ("p95 … ms") used to trap on it, every evaluation and every restart
    /// (found by the red team, F15).
    @Test func anAbsurdDurationFromAnAgentIsBounded() throws {
        var fleet = warmFleet()
        for (i, ms) in [1e308, -1e308, 1e308].enumerated() {
            let poisoned = ProbeResult(
                id: "poison-\(i)", probe: "poison", component: "api", agent: "eu-1", region: "eu",
                startedAt: fleet.now.addingTimeInterval(-0.5), durationMs: ms, outcome: .ok, steps: [])
            fleet.engine.ingest([poisoned], receivedAt: fleet.now)
        }
        fleet.faults = ["slow": FleetSimulation.slow(components: ["api"])]
        let events = fleet.step(seconds: 20)
        let api = try #require(fleet.verdicts["api"])
        #expect(api.status == .degradedPerformance, "\(describe(events))")
        #expect((api.evidence.latencyP95Ms ?? 0) <= 1e9)
        #expect(events.contains { $0.type == .incidentOpened && $0.summary.contains("p95") }, "\(describe(events))")
    }

    /// A flaky network on one host (30 % of its connections dropped: every probe, its control
    /// too, fails now and then) is one local-fault episode for as long as it lasts, not an alert
    /// and a recovery for every lucky stretch (found by the on-call review: 9 of each in 50 s).
    @Test(arguments: seeds)
    func aFlakyNetworkOnOneHostIsOneLocalFaultEpisode(seed: UInt64) throws {
        var fleet = warmFleet()
        fleet.faults["flaky network"] = FleetSimulation.flakyNetwork(of: "eu-1", 0.3, seed: seed)
        let during = fleet.step(seconds: 90)
        fleet.faults = [:]
        let after = fleet.step(seconds: 90)
        let log = describe(during + after)
        #expect(during.filter { $0.type == .agentLocalFault }.map(\.agent) == ["eu-1"], "\(log)")
        #expect(!during.contains { $0.type == .agentRecovered }, "\(log)")
        #expect(after.filter { $0.type == .agentRecovered }.map(\.agent) == ["eu-1"], "\(log)")
        #expect(!(during + after).contains { $0.type == .incidentOpened }, "\(log)")
    }

    /// A host whose control alone fails now and then (2 runs in 7), its other probes passing, is
    /// one local-fault episode too: the healthy probes' passes from before the control's newest
    /// failure do not end it (they did, at once: an `agent.local_fault` and `agent.recovered`
    /// pair every 14 s, about 500 webhooks an hour; red team, 32nd session, F2).
    @Test func aControlThatFailsNowAndThenIsOneLocalFaultEpisode() throws {
        var fleet = warmFleet()
        let lost = ProbeError(kind: .connect, step: "request", message: "connection reset")
        fleet.faults["flapping control"] = { agent, _, probe, run in
            agent == "eu-1" && probe.control && run % 7 < 2 ? (.failed, lost) : nil
        }
        let during = fleet.step(seconds: 105)
        let log = describe(during)
        #expect(during.filter { $0.type == .agentLocalFault }.map(\.agent) == ["eu-1"], "\(log)")
        #expect(!during.contains { $0.type == .agentRecovered }, "\(log)")
        #expect(!during.contains { $0.type == .incidentOpened }, "\(log)")
    }

    /// One agent failing with the error code of a real outage elsewhere, its own region's peer
    /// passing, is not that outage's evidence for long: the two-proportion test against its
    /// peers applies inside an incident too, so it turns local, its region leaves the incident,
    /// and the incident resolves when the real fault ends though that agent still fails (red
    /// team, 32nd session, F1: one enrolled agent copying `file_expired` held a platform
    /// incident open alone for minutes, "1 of 2 agents" in us).
    @Test func oneAgentCopyingAnOutagesCodeDoesNotHoldItOpen() throws {
        var fleet = warmFleet()
        let expired = ProbeError(kind: .assertion, step: "download", message: "file expired", code: "file_expired")
        fleet.faults["eu outage"] = FleetSimulation.failing(regions: ["eu"], components: ["files"], error: expired)
        var events = fleet.step(seconds: 20)
        fleet.faults["us-1 copies it"] = FleetSimulation.failing(agents: ["us-1"], components: ["files"], error: expired)
        events += fleet.step(seconds: 40)
        fleet.faults["eu outage"] = nil
        let after = fleet.step(seconds: 60)
        let log = describe(events + after)
        #expect((events + after).filter { $0.type == .incidentOpened }.map(\.component) == ["files"], "\(log)")
        #expect((events + after).contains { $0.type == .agentLocalFault && $0.agent == "us-1" }, "\(log)")
        #expect(events.contains { $0.type == .incidentUpdated && $0.summary.contains("regions −us") }, "us leaves with us-1: \(log)")
        let resolved = after.first { $0.type == .incidentResolved && $0.component == "files" }
        #expect(resolved != nil, "the incident must end with eu's fault, whatever us-1 sends: \(log)")
    }

    /// A region outage that narrows to one of the region's agents, its peer passing, ends: the
    /// agent left failing is a local fault (it held the incident open for minutes, "1 of 2
    /// agents"; red team, 32nd session).
    @Test func aRegionOutageNarrowedToOneAgentEnds() throws {
        var fleet = warmFleet()
        fleet.faults["eu outage"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        var events = fleet.step(seconds: 20)
        #expect(events.filter { $0.type == .incidentOpened }.map(\.component) == ["files"], "\(describe(events))")
        fleet.faults["eu outage"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"])
        events += fleet.step(seconds: 60)
        let log = describe(events)
        #expect(events.contains { $0.type == .incidentResolved && $0.component == "files" }, "\(log)")
        #expect(events.contains { $0.type == .agentLocalFault && $0.agent == "eu-1" }, "\(log)")
        #expect(fleet.engine.openIncidents.isEmpty, "\(log)")
    }

    /// A fault that comes and goes (20 s on, 20 s off) is one problem: the incident after the
    /// first one's resolution waits for a clean stretch longer than the gap it came back after,
    /// so later cycles stay in it (the verdict review: five incidents and 32 webhooks in 3
    /// minutes, an open and a resolve every 40 s).
    @Test func aFaultThatComesAndGoesIsAtMostTwoIncidents() throws {
        final class Elapsed: @unchecked Sendable { var seconds = 0 }
        let elapsed = Elapsed()
        var fleet = warmFleet()
        fleet.faults["flapping"] = { _, _, probe, _ in
            guard !probe.control, probe.component == "files", elapsed.seconds % 40 < 20 else { return nil }
            return (.failed, ProbeError(kind: .httpStatus, step: "request", message: "HTTP 500", code: "server_error"))
        }
        var events: [AlertEvent] = []
        for second in 0..<200 {
            elapsed.seconds = second
            events += fleet.step()
        }
        let log = describe(events)
        let opened = events.filter { $0.type == .incidentOpened && $0.component == "files" }
        #expect(opened.count >= 1 && opened.count <= 2, "\(opened.count) incidents: \(log)")
        // Once it stops coming back, the incident ends after a clean stretch longer than its
        // gaps (1.5 × 20 s), not minutes later.
        elapsed.seconds = 20
        fleet.faults = [:]
        var after: [AlertEvent] = []
        for _ in 0..<60 { after += fleet.step() }
        #expect(after.contains { $0.type == .incidentResolved && $0.component == "files" }, "\(describe(after))")
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    /// A 20 s hard fault of files, 140 s without (its incident resolves), then 20 s of it again:
    /// the first incident as resolved, the second stretch's events, and when it cleared.
    func faultBackAfterAPause(_ fleet: inout FleetSimulation) throws -> (first: Incident, again: [AlertEvent], cleared: Date) {
        let hard = FleetSimulation.failing(components: ["files"])
        fleet.faults = ["first": hard]
        var events = fleet.step(seconds: 20)
        fleet.faults = [:]
        events += fleet.step(seconds: 140)
        #expect(events.filter { $0.type == .incidentResolved }.map(\.component) == ["files"], "\(describe(events))")
        let first = try #require(events.first { $0.type == .incidentResolved }?.incident, "\(describe(events))")
        fleet.faults = ["again": hard]
        let again = fleet.step(seconds: 20)
        fleet.faults = [:]
        return (first, again, fleet.now)
    }

    /// A fault back minutes after the last one resolved is held as a possible flap only in
    /// `monitoring`: the incident says it is recovering as soon as its runs do, and only its
    /// resolution waits out 1.5 × the gap the fault came back after. Before, it stayed
    /// `investigating` for 1.5 × that gap (4 minutes here) with every agent passing, and a
    /// collector restart, which forgets the last resolution, ended it at once (the verdict
    /// review, 34th session).
    @Test func aFaultBackMinutesLaterRecoversAtOnceAndResolvesAfterItsGap() throws {
        var fleet = warmFleet()
        let (_, again, cleared) = try faultBackAfterAPause(&fleet)
        var after: [AlertEvent] = []
        for _ in 0..<300 { after += fleet.step() }
        let log = describe(again + after)
        #expect(again.filter { $0.type == .incidentOpened }.count == 1, "\(log)")
        let monitoring = try #require(after.first { $0.type == .incidentUpdated && $0.status == "monitoring" }, "\(log)")
        #expect(monitoring.occurredAt.timeIntervalSince(cleared) <= 3 * fleet.interval + 1, "\(log)")
        #expect(monitoring.message?.contains("came back") == true, "\(monitoring.message ?? "")")
        let resolved = try #require(after.first { $0.type == .incidentResolved }, "\(log)")
        // The gap: from the first fault's end to the second's start, about 140 s.
        let held = resolved.occurredAt.timeIntervalSince(cleared)
        #expect(held >= 1.5 * 130 && held <= 1.5 * 150 + 3 * fleet.interval, "resolved \(held) s after the fault cleared\n\(log)")
        #expect(!after.contains { $0.summary.hasPrefix("relapse") }, "\(log)")
    }

    /// A restart remembers the flap: the incident held in `monitoring` because its fault came back
    /// after a pause still waits out 1.5 × that pause (the engine rebuilds its flap memory from
    /// the stored resolved incidents; before, the restart ended it at once).
    @Test func aRestartKeepsAnIncidentsFlapMemory() throws {
        var fleet = warmFleet()
        let (first, _, cleared) = try faultBackAfterAPause(&fleet)
        var after = fleet.step(seconds: 30)
        #expect(fleet.engine.openIncidents.first?.status == .monitoring, "\(describe(after))")
        fleet.restartCollector(from: fleet.storedDecisions, resolved: [first])
        for _ in 0..<270 { after += fleet.step() }
        let log = describe(after)
        let resolved = try #require(after.first { $0.type == .incidentResolved }, "\(log)")
        let held = resolved.occurredAt.timeIntervalSince(cleared)
        #expect(held >= 1.5 * 120 && held <= 1.5 * 150 + 3 * fleet.interval, "resolved \(held) s after the fault cleared\n\(log)")
    }

    /// An agent whose failures outlast the fault (a lying or broken eu-1, 60 s longer) is local
    /// until its episode ends, and the failures its window still holds once it stops are not
    /// evidence again meanwhile: the incident held for a flap resolves 1.5 × its gap after the
    /// fault's own newest failure, not after eu-1's (live with the review's hostile agent, the
    /// resolution came 2 minutes after the liar's last failure).
    @Test func anEpisodesFailuresStayItsOwnUntilItEnds() throws {
        var fleet = warmFleet()
        let (_, _, cleared) = try faultBackAfterAPause(&fleet)
        fleet.faults = ["eu-1 alone": FleetSimulation.failing(agents: ["eu-1"], components: ["files"])]
        var after = fleet.step(seconds: 60)
        fleet.faults = [:]
        for _ in 0..<240 { after += fleet.step() }
        let log = describe(after)
        #expect(after.contains { $0.type == .agentLocalFault && $0.agent == "eu-1" }, "\(log)")
        let resolved = try #require(after.first { $0.type == .incidentResolved }, "\(log)")
        let held = resolved.occurredAt.timeIntervalSince(cleared)
        // eu-1's failures count until it is found local (about 17 s); its 60 s do not (274 s before).
        #expect(held >= 1.5 * 130 && held <= 1.5 * 150 + 20 + 3 * fleet.interval, "resolved \(held) s after the fault cleared\n\(log)")
    }

    /// Agents leaving an incident within moments of each other are announced together: when a
    /// platform fault cleared everywhere but on one agent, four updates went out within 0.5 s,
    /// one per agent (the verdict review, 34th session).
    @Test func departuresJudgedTogetherAreOneUpdate() throws {
        var fleet = warmFleet()
        fleet.faults["outage"] = FleetSimulation.failing(components: ["files"])
        var events = fleet.step(seconds: 20)
        fleet.faults["outage"] = FleetSimulation.failing(agents: ["eu-1"], components: ["files"])
        events += fleet.step(seconds: 30)
        let log = describe(events)
        let departures = events.filter { $0.type == .incidentUpdated && $0.summary.hasPrefix("changed:") && $0.summary.contains("\u{2212}") }
        #expect(!departures.isEmpty, "\(log)")
        // Each departure update is at least the gathering time after the one before.
        let times = departures.map(\.occurredAt.timeIntervalSince1970)
        let closest = zip(times.dropFirst(), times).map { $0 - $1 }.min() ?? .infinity
        #expect(closest >= CorrelationEngine.departureGather, "\(departures.count) departure updates, \(closest) s apart at the closest\n\(log)")
    }

    /// An incident's failure code stays while any of its agents still reports it: with one of
    /// eu's two agents cut off, "changed: codes −server_error: … (1/1 agents failing,
    /// server_error)" said the code left and named it in one line (the verdict review, D9).
    @Test func aCodeStaysWhileAnAgentStillReportsIt() throws {
        var fleet = warmFleet()
        fleet.faults["eu outage"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        var events = fleet.step(seconds: 20)
        let cut = ProbeError(kind: .connect, step: "request", message: "connection refused")
        fleet.faults["eu-1 cut"] = FleetSimulation.failing(agents: ["eu-1"], control: true, error: cut)
        events += fleet.step(seconds: 40)
        let log = describe(events)
        #expect(events.contains { $0.type == .incidentOpened && $0.component == "files" }, "\(log)")
        #expect(!events.contains { $0.summary.contains("codes −server_error") }, "\(log)")
        #expect(fleet.engine.openIncidents.first?.evidence.errorCodes["server_error"] != nil, "\(log)")
    }

    // MARK: - Step components

    @Test(arguments: seeds)
    func loginDownEverywhereIsOneLoginIncidentAffectingItsJourneys(seed: UInt64) throws {
        var fleet = warmFleet(loginJourneys: ["files", "batch"])
        let rejected = ProbeError(kind: .httpStatus, step: "login", message: "HTTP 401", code: "login_rejected")
        let result = trial(&fleet, faults: ["login": FleetSimulation.failing(components: ["login"], error: rejected)])
        let log = describe(result.all)
        #expect(result.opened().map(\.component) == ["login"], "\(log)")
        #expect(result.localFaults.isEmpty, "\(log)")
        let opened = try #require(result.opened("login").first)
        #expect(opened.scope == .platform)
        #expect(opened.evidence?.affected == ["batch", "files"], "\(log)")
        #expect(opened.summary.contains("affects batch, files"), "\(opened.summary)")
        #expect(result.flaps("login").isEmpty, "\(result.flaps("login"))")
        print("login down everywhere, seed \(seed): detection \(result.detection("login") ?? -1) s, resolution \(result.resolution("login") ?? -1) s")
        #expect(result.resolution("login").map { $0 <= 3 * fleet.interval + 1 } == true, "\(log)")
    }

    /// While logins are rejected the journeys that log in first stop at that step: they have no
    /// failure of their own (files) or, once their window empties, no runs at all. Their verdicts
    /// show login's outage, marked `affected_by`, and get no incident; when login recovers, so do they
    /// (found by the first-use review: the page said "api Operational", "files No Data").
    @Test func journeysALoginOutageBreaksShowItsStatusWithoutAnIncidentOfTheirOwn() throws {
        var fleet = warmFleet(loginJourneys: ["files", "batch"])
        let rejected = ProbeError(kind: .httpStatus, step: "login", message: "HTTP 401", code: "login_rejected")
        fleet.faults = ["login": FleetSimulation.failing(components: ["login"], error: rejected)]
        let events = fleet.step(seconds: 30)
        #expect(events.filter { $0.type == .incidentOpened }.map(\.component) == ["login"], "\(describe(events))")
        let verdicts = Dictionary(uniqueKeysWithValues: fleet.engine.verdicts.map { ($0.component, $0) })
        let login = try #require(verdicts["login"])
        #expect(login.status == .majorOutage && login.evidence.affectedBy.isEmpty)
        for journey in ["files", "batch"] {
            let verdict = try #require(verdicts[journey])
            #expect(verdict.status == login.status && verdict.scope == login.scope, "\(journey): \(verdict.status) \(verdict.scope.map(\.rawValue) ?? "-")")
            #expect(verdict.evidence.affectedBy == ["login"], "\(journey)")
            #expect(verdict.incidentID == nil, "\(journey) has no incident of its own")
            #expect(verdict.regions.values.allSatisfy { $0 == .majorOutage }, "\(verdict.regions)")
            // Shown with its cause's status, not "no data" (the log said its regions "no longer
            // decide" it, as if its agents had gone silent; the verdict review, 34th session).
            #expect(verdict.unwatchedRegions.isEmpty, "\(journey): \(verdict.unwatchedRegions)")
        }
        #expect(verdicts["api"]?.evidence.affectedBy == [], "a component that does not log in is not affected")
        fleet.faults = [:]
        _ = fleet.step(seconds: 30)
        for verdict in fleet.engine.verdicts {
            #expect(verdict.status == .operational && verdict.evidence.affectedBy.isEmpty, "\(verdict.component) after recovery: \(verdict.status)")
        }
    }

    /// A login step over its own `degraded_after` in every journey makes login slow, not the
    /// journeys (found by the first-use review, F17: "Api is slow platform-wide" while login
    /// stayed operational).
    @Test func aSlowLoginStepIsLoginsSlownessNotTheJourneys() throws {
        var fleet = warmFleet(loginJourneys: ["files", "batch"])
        fleet.faults = ["slow login": FleetSimulation.slow(components: ["login"])]
        let events = fleet.step(seconds: 30)
        #expect(events.filter { $0.type == .incidentOpened }.map(\.component) == ["login"], "\(describe(events))")
        let verdicts = Dictionary(uniqueKeysWithValues: fleet.engine.verdicts.map { ($0.component, $0) })
        let login = try #require(verdicts["login"])
        #expect(login.status == .degradedPerformance && login.scope == .platform)
        #expect((login.evidence.latencyP95Ms ?? 0) >= 2500, "login's latency is its slow step's time")
        for journey in ["files", "batch"] {
            let verdict = try #require(verdicts[journey])
            #expect(verdict.status == .operational && verdict.incidentID == nil, "\(journey): \(verdict.status)")
            #expect((verdict.evidence.latencyP95Ms ?? 0) < 2500, "\(journey)'s latency leaves its login step out")
        }
        // The journey's own slowness (the run over the probe's degraded_after) is still its own.
        fleet.faults["slow files"] = FleetSimulation.slow(components: ["files"])
        _ = fleet.step(seconds: 30)
        #expect(fleet.verdicts["files"]?.status == .degradedPerformance)
        #expect(fleet.verdicts["batch"]?.status == .operational)
    }

    @Test func aSlowStepOfAnotherComponentIsThatComponentsSlowness() {
        let slowLogin = StepResult(name: "login", method: "POST", url: "u", ok: true, timings: .zero, component: "login", degraded: "slow")
        let login = StepResult(name: "login", method: "POST", url: "u", ok: true, timings: .zero, component: "login")
        let upload = StepResult(name: "upload", method: "POST", url: "u", ok: true, timings: .zero)
        let slowUpload = StepResult(name: "upload", method: "POST", url: "u", ok: true, timings: .zero, degraded: "slow")
        func run(_ steps: [StepResult], _ outcome: Outcome = .degraded, runSlow: Bool = false) -> [String: Outcome?] {
            let result = ProbeResult(
                id: "r", probe: "p", component: "files", agent: "a", region: "eu", startedAt: Date(), durationMs: 1, outcome: outcome,
                steps: steps, degraded: runSlow ? "slow run" : nil)
            return Dictionary(uniqueKeysWithValues: CorrelationEngine.observations(of: result).map { ($0.component, $0.outcome) })
        }
        #expect(run([slowLogin, upload]) == ["login": .degraded, "files": .ok])
        #expect(run([slowLogin, upload], runSlow: true) == ["login": .degraded, "files": .degraded])
        #expect(run([login, slowUpload]) == ["login": .ok, "files": .degraded])
        #expect(run([slowLogin, slowUpload]) == ["login": .degraded, "files": .degraded])
        // An agent that does not say why (older than the step marks): the probe's own component.
        #expect(run([login, upload]) == ["login": .ok, "files": .degraded])
        // A slow login before the journey's own failure is still login's slowness.
        #expect(run([slowLogin, StepResult(name: "upload", method: "POST", url: "u", ok: false, timings: .zero)], .failed)
            == ["login": .degraded, "files": .failed])
    }

    @Test func aJourneysOwnStepFailingIsItsOwnComponentsIncident() throws {
        var fleet = warmFleet(loginJourneys: ["files", "batch"])
        let result = trial(&fleet, faults: ["files": FleetSimulation.failing(components: ["files"])], on: 20, off: 30)
        #expect(result.opened().map(\.component) == ["files"])
        #expect(result.opened("files").first?.evidence?.affected == [])
    }

    // MARK: - Latency, stuck jobs

    @Test func latencyEverywhereIsPlatformDegradedAndInOneRegionRegional() throws {
        var fleet = warmFleet()
        let everywhere = trial(&fleet, faults: ["slow": FleetSimulation.slow(components: ["api"])], on: 30, off: 30)
        #expect(everywhere.opened().count == 1)
        #expect(everywhere.opened("api").first?.scope == .platform)
        #expect(everywhere.opened("api").first?.incident?.severity == .degradedPerformance)
        #expect(everywhere.flaps("api").isEmpty)
        let oneRegion = trial(&fleet, faults: ["slow": FleetSimulation.slow(components: ["api"], regions: ["us"])], on: 30, off: 30)
        let log = describe(oneRegion.all)
        #expect(oneRegion.opened().count == 1, "\(log)")
        #expect(oneRegion.opened("api").first?.scope == .region, "\(log)")
        #expect(oneRegion.opened("api").first?.regions == ["us"], "\(log)")
        #expect(oneRegion.localFaults.isEmpty)
    }

    /// Two agents of a region slow at once confirm each other: the region is degraded after one
    /// slow run of each, not after each agent's second (a probe interval later). One slow agent
    /// of two, or one slow run of one agent, is still nothing.
    @Test func slowRunsOfPeersAtOnceConfirmEachOther() throws {
        var fleet = warmFleet()
        fleet.faults["slow-us-1"] = FleetSimulation.slow(components: ["api"], agents: ["us-1"])
        fleet.step(seconds: 2)
        #expect(fleet.verdicts["api"]?.status == .operational)
        fleet.step(seconds: 4)
        // us-1 alone, slow twice in a row: its own problem, not the region's.
        #expect(fleet.verdicts["api"]?.status == .operational)
        fleet.faults = [:]
        fleet.step(seconds: 6)
        fleet.faults["slow-us"] = FleetSimulation.slow(components: ["api"], regions: ["us"])
        // Within one interval every us agent ran once, slow.
        fleet.step(seconds: 2)
        let api = try #require(fleet.verdicts["api"])
        #expect(api.status == .degradedPerformance)
        #expect(api.scope == .region)
        #expect(api.evidence.degradedAgents == 2)
    }

    @Test func stuckJobsEverywhereArePlatformFromTheFirstAlert() throws {
        var fleet = warmFleet()
        let stuck = ProbeError(kind: .stuck, step: "wait", message: "batch stayed in finalizing", code: "batch_stuck")
        let result = trial(&fleet, faults: ["stuck": FleetSimulation.failing(components: ["batch"], error: stuck)], on: 30, off: 30)
        let opened = try #require(result.opened("batch").first)
        #expect(opened.scope == .platform)
        #expect(try #require(result.detection("batch")) <= 2 * fleet.interval + 1)
        #expect(result.flaps("batch").isEmpty)
    }

    /// First-alert scope over every phase of the fault's start within an interval.
    @Test(arguments: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9])
    func aPlatformFaultIsFirstAnnouncedAsPlatform(phase: Int) throws {
        var fleet = FleetSimulation(regions: Self.regions)
        fleet.step(seconds: 40 + phase % 2)
        fleet.now = fleet.now.addingTimeInterval(Double(phase) / 10)
        let result = trial(&fleet, faults: ["api": FleetSimulation.failing(components: ["api"])], on: 20, off: 20)
        let opened = try #require(result.opened("api").first)
        #expect(opened.scope == .platform, "\(describe(result.all))")
        let first = try #require(fleet.firstFailureAt)
        #expect(opened.occurredAt.timeIntervalSince(first) <= 2 * fleet.interval + 1)
    }

    // MARK: - Moving faults, cuts, stops, clocks

    @Test(arguments: seeds)
    func aFaultMovingFromOneRegionToAnotherKeepsItsIncidentCurrent(seed: UInt64) throws {
        var fleet = warmFleet()
        fleet.faults = ["eu": FleetSimulation.randomly(0.6, seed: seed, regions: ["eu"], components: ["files"])]
        let first = fleet.step(seconds: 40)
        fleet.faults = ["us": FleetSimulation.randomly(0.6, seed: seed, regions: ["us"], components: ["files"])]
        let second = fleet.step(seconds: 60)
        let log = describe(first + second)
        #expect((first + second).filter { $0.type == .incidentOpened }.count <= 2, "\(log)")
        #expect((first + second).allSatisfy { $0.type != .agentLocalFault }, "\(log)")
        // Whatever announced it last names us as affected.
        let last = try #require((first + second).last { $0.component == "files" })
        #expect(last.regions.contains("us"), "\(log)")
        #expect(fleet.engine.openIncidents.first?.regions.contains("us") == true, "\(log)")
    }

    /// A hard fault that moves from eu to us: once eu's fresh runs pass, eu leaves the verdict's
    /// scope (its failures still in its windows say nothing about now), and stays out while the
    /// incident is open: the incident may have widened to platform while both regions failed
    /// (its scope only widens), but its membership is us alone, and the verdict holds that.
    @Test(arguments: seeds)
    func aFaultThatMovedAwayLeavesTheScopeAsSoonAsItsRegionsRunsPass(seed: UInt64) throws {
        var fleet = warmFleet()
        fleet.faults = ["eu": FleetSimulation.failing(regions: ["eu"], components: ["batch"])]
        fleet.step(seconds: 12)
        // For one interval both fail (a move is rarely instant): the incident goes platform-wide.
        fleet.faults["us"] = FleetSimulation.failing(regions: ["us"], components: ["batch"])
        fleet.step(seconds: Int(fleet.interval))
        fleet.faults["eu"] = nil
        for intervals in [3, 6, 9] {
            fleet.step(seconds: Int(3 * fleet.interval))
            let log = describe(fleet.events)
            let verdict = try #require(fleet.verdicts["batch"])
            #expect(verdict.scope == .region, "after \(intervals) intervals: \(verdict)\n\(log)")
            #expect(
                verdict.regions.filter { $0.value != .operational }.keys.sorted() == ["us"],
                "after \(intervals) intervals: \(verdict.regions)\n\(log)")
            #expect(verdict.evidence.failingRegions == ["us"], "\(verdict.evidence)\n\(log)")
            #expect(!verdict.evidence.failingAgents.contains { $0.hasPrefix("eu") }, "\(verdict.evidence)")
            #expect(fleet.engine.openIncidents.first { $0.component == "batch" }?.regions == ["us"], "\(log)")
        }
        #expect(fleet.events.allSatisfy { $0.type != .agentLocalFault }, "\(describe(fleet.events))")
        // The incident keeps the widest scope it reached, but the update for eu's departure says
        // where the problem is now (the SRE review's F2: "down platform-wide" over us alone).
        let incident = try #require(fleet.engine.openIncidents.first { $0.component == "batch" })
        if incident.scope == .platform {
            let departure = try #require(incident.updates.last { $0.message.hasPrefix("Update") }, "\(describe(fleet.events))")
            #expect(departure.message.contains("for users in us") && !departure.message.contains("platform-wide"), "\(departure.message)")
            #expect(departure.message.contains("smaller now"), "\(departure.message)")
        }
    }

    /// A hard fault in one region: the region-scope wait counts the other regions' runs that
    /// started after the first of the confirming failures as fresh. With `open_after: 1` (so
    /// that only the wait can hold it) the incident opens, at region scope, at the evaluation
    /// that turned the verdict bad: the other regions have run since that first failure.
    /// Counting only runs after the confirming (second) failure waited up to an interval longer.
    @Test(arguments: ["ap", "eu", "us"])
    func aRegionalFaultOpensOnceTheOtherRegionsRanAfterItsFirstConfirmingFailure(region: String) throws {
        var fleet = FleetSimulation(regions: Self.regions, config: CorrelationConfig(openAfter: 1))
        fleet.step(seconds: 40)
        fleet.faults = ["down": FleetSimulation.failing(regions: [region], components: ["batch"], when: { $0 >= 20 })]
        var badAt: Date?
        for _ in 0..<12 {
            fleet.step()
            if badAt == nil, let verdict = fleet.verdicts["batch"], verdict.status != .operational { badAt = fleet.now }
        }
        let log = describe(fleet.events)
        let opened = try #require(fleet.events.first { $0.type == .incidentOpened }, "\(log)")
        let bad = try #require(badAt)
        #expect(opened.scope == .region, "\(log)")
        #expect(opened.regions == [region], "\(log)")
        #expect(opened.occurredAt == bad, "verdict bad at \(bad), opened at \(opened.occurredAt)\n\(log)")
    }

    /// 30 % of requests failing everywhere, on journeys that make 4 requests to the component:
    /// most runs fail (76 %), yet it is a platform partial outage, never major; every request
    /// failing is major.
    @Test(arguments: seeds)
    func aRequestFailureRateBelowHalfIsAPartialOutageHoweverManyRunsFail(seed: UInt64) throws {
        var fleet = warmFleet()
        fleet.requestsPerRun = ["files": 4]
        fleet.step(seconds: 10)
        let result = trial(&fleet, faults: ["random": FleetSimulation.randomly(0.3, seed: seed, components: ["files"])], on: 30, off: 30)
        let log = describe(result.all)
        let opened = try #require(result.opened("files").first, "\(log)")
        #expect(opened.scope == .platform, "\(log)")
        #expect(result.all.allSatisfy { $0.component != "files" || $0.incident?.severity == .partialOutage }, "\(log)")
        #expect(result.localFaults.isEmpty, "\(log)")

        var hard = warmFleet()
        hard.requestsPerRun = ["files": 4]
        let down = trial(&hard, faults: ["down": FleetSimulation.failing(components: ["files"])], on: 10, off: 10)
        #expect(down.opened("files").first?.incident?.severity == .majorOutage, "\(describe(down.all))")
    }

    @Test(arguments: seeds)
    func aLocalCutDuringAPlatformOutageIsLocalAndTheIncidentStaysOne(seed: UInt64) throws {
        var fleet = warmFleet()
        fleet.faults["api"] = FleetSimulation.randomly(0.5, seed: seed, components: ["api"])
        fleet.step(seconds: 20)
        fleet.faults["cut"] = fleet.networkCut(of: "ap-2", from: fleet.now.timeIntervalSince(FleetSimulation.start))
        fleet.step(seconds: 40)
        fleet.faults = [:]
        fleet.step(seconds: 40)
        let log = describe(fleet.events)
        #expect(fleet.events.filter { $0.type == .incidentOpened }.map(\.component) == ["api"], "\(log)")
        #expect(fleet.events.filter { $0.type == .agentLocalFault }.map(\.agent) == ["ap-2"], "\(log)")
        #expect(fleet.engine.openIncidents.isEmpty, "\(log)")
    }

    /// An agent whose network comes back as the platform fault clears recovers with its peers:
    /// its passing runs after its newest failure count, also those made before its local-fault
    /// episode ends (`resolve_after` evaluations after its control passes), so the incident
    /// resolves within 3 intervals like one without a cut agent.
    @Test func aCutAgentBackAsTheFaultClearsDoesNotHoldTheResolution() throws {
        // Its control runs 1 s after its other probes, as a real agent's phases differ.
        var fleet = FleetSimulation(regions: Self.regions, controlLag: 1)
        fleet.step(seconds: 40)
        fleet.faults["api"] = FleetSimulation.failing(components: ["api"])
        fleet.step(seconds: 10)
        fleet.faults["cut"] = fleet.networkCut(of: "ap-2", from: fleet.now.timeIntervalSince(FleetSimulation.start))
        fleet.step(seconds: 20)
        let cleared = fleet.now
        fleet.faults = [:]
        let after = fleet.step(seconds: 30)
        let log = describe(fleet.events)
        #expect(fleet.events.filter { $0.type == .agentLocalFault }.map(\.agent) == ["ap-2"], "\(log)")
        let resolved = try #require(after.first { $0.type == .incidentResolved && $0.component == "api" }, "\(log)")
        print("cut agent back as the fault clears: resolved \(resolved.occurredAt.timeIntervalSince(cleared)) s after")
        #expect(resolved.occurredAt.timeIntervalSince(cleared) <= 3 * fleet.interval, "\(log)")
    }

    @Test func anAgentStoppedDuringRecoveryNeitherWidensNorHoldsTheIncident() throws {
        var fleet = warmFleet()
        fleet.faults["api"] = FleetSimulation.failing(regions: ["eu", "us"], components: ["api"])
        fleet.step(seconds: 20)
        fleet.faults = [:]
        fleet.stopped.insert("eu-1")
        let after = fleet.step(seconds: 240)
        let log = describe(fleet.events)
        #expect(fleet.engine.openIncidents.isEmpty, "\(log)")
        let resolved = try #require(after.first { $0.type == .incidentResolved }, "\(log)")
        #expect(resolved.occurredAt.timeIntervalSince(fleet.now.addingTimeInterval(-240)) <= 3 * fleet.interval + 1, "\(log)")
        // Nothing widens or reopens it; us recovering first while eu-1's last (failed) run is
        // still fresh may be announced as the membership shrinking ("changed: regions −us").
        let investigating = after.filter { ($0.type == .incidentUpdated || $0.type == .incidentOpened) && $0.status == "investigating" }
        #expect(investigating.allSatisfy { $0.type == .incidentUpdated && $0.summary.hasPrefix("changed: ") && !$0.summary.contains("+") }, "\(log)")
        #expect(after.filter { $0.type == .agentSilent }.map(\.agent) == ["eu-1"])
    }

    @Test func theLastAgentReportingStoppingNeverMakesAPlatformIncidentOfOne() throws {
        // The reported case: after recovery only one agent was left reporting, and the incident
        // escalated to "partial outage platform-wide (1/1 agents failing)".
        var fleet = FleetSimulation(regions: ["eu": 1, "us": 1, "ap": 1])
        fleet.step(seconds: 30)
        fleet.faults["api"] = FleetSimulation.failing(regions: ["eu"], components: ["api"])
        fleet.step(seconds: 20)
        fleet.faults = [:]
        fleet.step(seconds: 3)
        fleet.stopped.insert("us-1")
        fleet.faults["late"] = FleetSimulation.failing(agents: ["eu-1"], components: ["api"], when: { $0 % 7 == 0 })
        fleet.step(seconds: 240)
        #expect(fleet.events.allSatisfy { $0.scope != .platform }, "\(describe(fleet.events))")
        #expect(fleet.engine.openIncidents.allSatisfy { $0.scope == .region })
    }

    @Test(arguments: [240.0, -240.0])
    func anAgentWhoseClockIsFourMinutesOffCountsLikeAnyOther(skew: Double) throws {
        var fleet = warmFleet(clockSkew: ["eu-1": skew])
        let result = trial(&fleet, faults: ["api": FleetSimulation.failing(components: ["api"])], on: 30, off: 30)
        let log = describe(result.all)
        #expect(result.opened().count == 1, "\(log)")
        #expect(result.opened("api").first?.scope == .platform)
        #expect(result.localFaults.isEmpty, "\(log)")
        #expect(result.flaps("api").isEmpty, "\(log)")
        #expect(result.resolution("api").map { $0 <= 3 * fleet.interval + 1 } == true, "\(log)")
        #expect(fleet.health("eu-1")?.state == .ok)
    }

    /// An agent's clock offset is measured on its pushes (arrival − `sent_at`), so a healthy
    /// result that waited out the agent's flush_interval does not make its runs look later on the
    /// collector's time line (which would count a run that started before a fault as fresh
    /// evidence about it); without the push the offset still comes from each run's end.
    @Test(arguments: [0.0, 240.0, -240.0])
    func clockOffsetsAreMeasuredOnThePushNotOnHowLongResultsWaited(skew: Double) throws {
        let agent = AgentInfo(id: "us-1", region: "us")
        let t = Date(timeIntervalSince1970: 1_800_000_000)
        func run(_ n: Int) -> ProbeResult {
            // Agent clock: `skew` ahead; each run ends 0.1 s after it starts and waits 0.9 s to be pushed.
            ProbeResult(
                probe: "api-journey", component: "api", agent: agent.id, region: agent.region,
                startedAt: t.addingTimeInterval(Double(n) * 2 + skew), durationMs: 100, outcome: .ok, steps: [])
        }
        var measured = CorrelationEngine(config: CorrelationConfig(), agents: [agent])
        var unmeasured = measured
        for n in 0..<8 {
            let arrived = t.addingTimeInterval(Double(n) * 2 + 1)
            // Sent 2 ms before it arrived (agent clock), after the result's 0.9 s wait.
            let push = PushTiming(sentAt: arrived.addingTimeInterval(skew - 0.002), arrivedAt: arrived)
            measured.ingest([run(n)], receivedAt: arrived, push: push)
            unmeasured.ingest([run(n)], receivedAt: arrived)
        }
        #expect(abs(measured.agentOffset[0] - (0.002 - skew)) < 1e-6, "transport only: \(measured.agentOffset[0])")
        #expect(abs(unmeasured.agentOffset[0] - (0.9 - skew)) < 1e-6, "from the run's end: \(unmeasured.agentOffset[0])")
    }

    /// A recovered incident's runs stay out of the next verdicts even when an agent's measured
    /// clock offset moves after the incident went to `monitoring` (it is re-measured on every
    /// push). When the horizon was read with today's offset, the first incident's newest failure
    /// flipped back into the next fault's runs, the pass-fail mix read as a 70 % fault instead of
    /// a hard one, and the recovery waited for about 6 pooled passing runs instead of 2.
    @Test func aRelapseAfterTheOffsetMovedRecoversLikeAHardFault() throws {
        let agents = [AgentInfo(id: "eu-1", region: "eu"), AgentInfo(id: "eu-2", region: "eu")]
        // Without `flap_memory`: the second fault comes 12 s after the first one's resolution, and
        // would wait out 1.5 × that gap by design; this test is about the horizon alone.
        var engine = CorrelationEngine(config: CorrelationConfig(flapMemory: 0), agents: agents)
        let start = 1_800_000_000.0
        var events: [(at: Double, event: AlertEvent)] = []
        // Every agent runs every 2 s (eu-2 a second after eu-1) and pushes each result at its end,
        // 0.1 s later; the push takes `delay` (transport: the measured offset is its least value).
        func run(seconds: ClosedRange<Int>, delay: Double, failing: (Double) -> Bool) {
            for tick in seconds {
                for (n, agent) in agents.enumerated() where (tick - n) % 2 == 0 {
                    let started = start + Double(tick) + 0.037  // not on the second, as real runs
                    let fails = failing(started - start)
                    let result = ProbeResult(
                        id: "\(agent.id)/\(tick)", probe: "api-journey", component: "api", agent: agent.id, region: agent.region,
                        startedAt: Date(timeIntervalSince1970: started), durationMs: 100, outcome: fails ? .failed : .ok,
                        error: fails ? ProbeError(kind: .httpStatus, step: "request", message: "HTTP 503", code: "server_error") : nil, steps: [])
                    let sent = started + 0.1
                    let arrived = Date(timeIntervalSince1970: sent + delay)
                    engine.ingest([result], receivedAt: arrived, push: PushTiming(sentAt: Date(timeIntervalSince1970: sent), arrivedAt: arrived))
                    for event in engine.evaluate(now: arrived).events { events.append((arrived.timeIntervalSince1970 - start, event)) }
                }
            }
        }
        // The first fault, 10–24 s, with 5 ms pushes; it recovers and resolves.
        run(seconds: 0...32, delay: 0.005) { $0 >= 10 && $0 < 24 }
        let first = events.map(\.event)
        #expect(first.map(\.type) == [.incidentOpened, .incidentUpdated, .incidentResolved], "\(describe(first))")
        // The network slows: pushes take 80 ms from now on (the offset rises by 75 ms), and the
        // fault comes back at 36 s, hard again, until 52 s: the first fault's runs are still in
        // the windows (20 runs, 40 s).
        events = []
        run(seconds: 33...80, delay: 0.080) { $0 >= 36 && $0 < 52 }
        let second = events.map(\.event)
        #expect(second.map(\.type) == [.incidentOpened, .incidentUpdated, .incidentResolved], "\(describe(second))")
        let monitoring = try #require(events.first { $0.event.status == "monitoring" })
        // Runs at 52.037 (eu-1) and 53.037 (eu-2) are the first to pass; a hard fault needs 2 or 3
        // of them pooled, past 1.5 × its longest lull (1 s).
        #expect(monitoring.at < 54.5, "monitoring \(monitoring.at - 52) s after the fault cleared: \(monitoring.event.summary)")
    }

    @Test func aResultFromTenYearsInTheFutureIsIgnored() throws {
        var fleet = warmFleet()
        let future = ProbeResult(
            id: "future", probe: "api-journey", component: "api", agent: "eu-1", region: "eu",
            startedAt: fleet.now.addingTimeInterval(10 * 365 * 86400), durationMs: 10, outcome: .failed,
            error: ProbeError(kind: .httpStatus, step: "x", message: "HTTP 500"), steps: [])
        fleet.engine.ingest([future], receivedAt: fleet.now)
        let result = trial(&fleet, faults: ["api": FleetSimulation.failing(components: ["api"])], on: 20, off: 30)
        #expect(result.resolution("api") != nil, "\(describe(result.all))")
        #expect(fleet.engine.openIncidents.isEmpty)
    }

    @Test func aRestartWhileMonitoringResolvesWithoutARelapse() throws {
        var fleet = warmFleet()
        fleet.faults["api"] = FleetSimulation.failing(components: ["api"])
        fleet.step(seconds: 20)
        fleet.faults = [:]
        for _ in 0..<30 where fleet.engine.openIncidents.first?.status != .monitoring { fleet.step() }
        try #require(fleet.engine.openIncidents.first?.status == .monitoring)
        fleet.engine = fleet.rebuiltEngine()
        let after = fleet.step(seconds: 30)
        #expect(after.map(\.status) == ["resolved"], "\(describe(after))")
    }

    // MARK: - Region quorum (red team, second pass, N3)

    /// 3 agents per region, ap-1 and ap-2 stopped (as a cut or a crash would), then run until
    /// the engine calls them silent; `quorum` 0 turns the check off.
    func apLeftToOneAgent(quorum: Double = 3600) -> FleetSimulation {
        var config = CorrelationConfig()
        config.regionQuorumWindow = quorum
        var fleet = FleetSimulation(regions: ["eu": 3, "us": 3, "ap": 3], config: config)
        fleet.step(seconds: 40)
        fleet.stopped.formUnion(["ap-1", "ap-2"])
        fleet.step(seconds: 30)
        return fleet
    }

    @Test func oneAgentLeftOfThreeCannotOpenItsRegionsIncident() throws {
        var fleet = apLeftToOneAgent()
        #expect(fleet.health("ap-1")?.state == .silent && fleet.health("ap-2")?.state == .silent)
        fleet.faults["fake"] = FleetSimulation.failing(agents: ["ap-3"], components: ["files"])
        fleet.step(seconds: 60)
        let log = describe(fleet.events)
        #expect(fleet.events.allSatisfy { $0.type != .incidentOpened }, "\(log)")
        let files = try #require(fleet.verdicts["files"])
        #expect(files.status == .operational && files.unwatchedRegions == ["ap"], "\(files.status) \(files.unwatchedRegions)")
        #expect(files.regions["ap"] == nil)
        // Without the quorum, the same push opens and pages a region incident on ap-3 alone.
        var open = apLeftToOneAgent(quorum: 0)
        open.faults["fake"] = FleetSimulation.failing(agents: ["ap-3"], components: ["files"])
        open.step(seconds: 60)
        #expect(open.events.contains { $0.type == .incidentOpened && $0.component == "files" }, "\(describe(open.events))")
    }

    @Test func oneAgentLeftOfThreeCannotEndItsRegionsOutage() throws {
        func outageThenSilence(quorum: Double) -> FleetSimulation {
            var config = CorrelationConfig()
            config.regionQuorumWindow = quorum
            var fleet = FleetSimulation(regions: ["eu": 3, "us": 3, "ap": 3], config: config)
            fleet.step(seconds: 40)
            fleet.faults["ap"] = FleetSimulation.failing(agents: ["ap-1", "ap-2"], components: ["files"])
            fleet.faults["ap-3"] = FleetSimulation.failing(agents: ["ap-3"], components: ["files"])
            fleet.step(seconds: 20)
            // The honest two go quiet; the third now says all is well.
            fleet.stopped.formUnion(["ap-1", "ap-2"])
            fleet.faults["ap-3"] = nil
            fleet.step(seconds: 120)
            return fleet
        }
        let fleet = outageThenSilence(quorum: 3600)
        let log = describe(fleet.events)
        #expect(fleet.events.contains { $0.type == .incidentOpened && $0.component == "files" }, "\(log)")
        #expect(fleet.engine.openIncidents.contains { $0.component == "files" && $0.regions == ["ap"] }, "\(log)")
        #expect(fleet.verdicts["files"]?.unwatchedRegions == ["ap"])
        let hidden = outageThenSilence(quorum: 0)
        #expect(hidden.engine.openIncidents.isEmpty, "\(describe(hidden.events))")
    }

    @Test func halfOfARegionsAgentsStillDecideIt() throws {
        // 2 per region, one stopped: the other is half, and a real fault it sees still opens.
        var fleet = warmFleet()
        fleet.stopped.insert("eu-1")
        fleet.step(seconds: 30)
        fleet.faults["eu"] = FleetSimulation.failing(regions: ["eu"], components: ["files"])
        fleet.step(seconds: 30)
        let opened = try #require(fleet.events.first { $0.type == .incidentOpened }, "\(describe(fleet.events))")
        #expect(opened.component == "files" && opened.scope == .region)
        #expect(fleet.verdicts["files"]?.unwatchedRegions == [])
    }

    @Test func aRevokedAgentDoesNotCountAgainstItsRegion() throws {
        var fleet = apLeftToOneAgent()
        fleet.engine.setAgents(fleet.agents.map { AgentInfo(id: $0.id, region: $0.region, revoked: ["ap-1", "ap-2"].contains($0.id)) })
        fleet.faults["ap"] = FleetSimulation.failing(regions: ["ap"], components: ["files"])
        fleet.step(seconds: 60)
        #expect(fleet.events.contains { $0.type == .incidentOpened && $0.component == "files" }, "\(describe(fleet.events))")
    }

    // MARK: - No single source of truth (issue 12)

    func invented(_ agent: String, region: String, component: String, run: Int, at: Date) -> ProbeResult {
        ProbeResult(
            id: "\(agent)/invented/\(run)", probe: "invented", component: component, agent: agent, region: region, startedAt: at,
            durationMs: 10, outcome: .failed, error: ProbeError(kind: .httpStatus, step: "x", message: "HTTP 500"), steps: [])
    }

    @Test func oneAgentFailingAnInventedComponentOpensNothing() throws {
        var fleet = warmFleet()
        for run in 0..<30 {
            fleet.engine.ingest([invented("eu-1", region: "eu", component: "zz-fake", run: run, at: fleet.now)], receivedAt: fleet.now)
            fleet.step()
        }
        #expect(fleet.events.allSatisfy { $0.type != .incidentOpened }, "\(describe(fleet.events))")
        #expect(fleet.verdicts["zz-fake"]?.evidence.singleAgent == true)
    }

    @Test func aDeclaredComponentOpensOnOneAgentMarkedSingleAgent() throws {
        var fleet = warmFleet()
        fleet.engine.declaredComponents = ["payments"]
        for run in 0..<30 {
            fleet.engine.ingest([invented("eu-1", region: "eu", component: "payments", run: run, at: fleet.now)], receivedAt: fleet.now)
            fleet.step()
        }
        let opened = try #require(fleet.events.first { $0.type == .incidentOpened })
        #expect(opened.scope == .region)
        #expect(opened.evidence?.singleAgent == true)
        #expect(opened.summary.contains("single agent"))
    }

    @Test func platformScopeNeedsTwoRegions() throws {
        var fleet = FleetSimulation(regions: ["eu": 3])
        fleet.step(seconds: 30)
        fleet.faults["api"] = FleetSimulation.failing(components: ["api"])
        fleet.step(seconds: 20)
        #expect(fleet.engine.openIncidents.first?.scope == .region)
        var config = CorrelationConfig()
        config.minPlatformRegions = 1
        var lenient = FleetSimulation(regions: ["eu": 3], config: config)
        lenient.step(seconds: 30)
        lenient.faults["api"] = FleetSimulation.failing(components: ["api"])
        lenient.step(seconds: 20)
        #expect(lenient.engine.openIncidents.first?.scope == .platform)
    }
}

/// The evaluation's pure pieces, one by one.
@Suite struct CorrelationPhaseTests {
    @Test func thePeerTestCallsAnAgentLocalOnlyWellAbovePeers() {
        // The hypergeometric tail: Fisher's tea tasting (3 of 4 against 1 of 4) is 17/70; 5 of 5
        // against 0 of 5 is 1/252.
        #expect(abs(CorrelationEngine.fisherUpperTail(failed: 3, runs: 4, peerFailed: 1, peerRuns: 4) - 17.0 / 70) < 1e-9)
        #expect(abs(CorrelationEngine.fisherUpperTail(failed: 5, runs: 5, peerFailed: 0, peerRuns: 5) - 1.0 / 252) < 1e-12)
        #expect(abs(CorrelationEngine.fisherUpperTail(failed: 0, runs: 5, peerFailed: 3, peerRuns: 5) - 1) < 1e-12)
        // Hard failures against clean peers: local once it has enough of them.
        #expect(CorrelationEngine.exceedsPeers(failed: 6, runs: 20, peerFailed: 0, peerRuns: 40, minRuns: 5, confidence: 0.999))
        #expect(!CorrelationEngine.exceedsPeers(failed: 5, runs: 20, peerFailed: 0, peerRuns: 40, minRuns: 5, confidence: 0.999))
        #expect(CorrelationEngine.exceedsPeers(failed: 8, runs: 10, peerFailed: 0, peerRuns: 10, minRuns: 5, confidence: 0.999))
        // Five failures in a row against a peer's five passes, after a recovery emptied both
        // windows: rare for one agent, but common among many (the z-test called it local).
        #expect(!CorrelationEngine.exceedsPeers(failed: 5, runs: 5, peerFailed: 0, peerRuns: 5, minRuns: 5, confidence: 0.999))
        // The same rate as its peers is never local, nor a somewhat higher one.
        #expect(!CorrelationEngine.exceedsPeers(failed: 6, runs: 20, peerFailed: 12, peerRuns: 40, minRuns: 5, confidence: 0.999))
        #expect(!CorrelationEngine.exceedsPeers(failed: 10, runs: 20, peerFailed: 12, peerRuns: 40, minRuns: 5, confidence: 0.999))
        // Too few runs on either side says nothing.
        #expect(!CorrelationEngine.exceedsPeers(failed: 4, runs: 4, peerFailed: 0, peerRuns: 40, minRuns: 5, confidence: 0.999))
        #expect(!CorrelationEngine.exceedsPeers(failed: 10, runs: 10, peerFailed: 0, peerRuns: 4, minRuns: 5, confidence: 0.999))
    }

    @Test func cleanRunsNeededGrowAsTheFailureRateFalls() {
        #expect(CorrelationEngine.cleanRunsNeeded(failureRate: 1, confidence: 0.999) == 0)
        #expect(CorrelationEngine.cleanRunsNeeded(failureRate: 0, confidence: 0.999) == 0)
        #expect(CorrelationEngine.cleanRunsNeeded(failureRate: 0.5, confidence: 0.999) == 10)
        #expect(CorrelationEngine.cleanRunsNeeded(failureRate: 0.3, confidence: 0.999) == 20)
        #expect(CorrelationEngine.cleanRunsNeeded(failureRate: 0.1, confidence: 0.999) == 66)
    }

    @Test func aFailedStepOfAnotherComponentIsThatComponentsEvidence() {
        let ok = StepResult(name: "login", method: "POST", url: "u", ok: true, timings: .zero, component: "login")
        let bad = StepResult(name: "login", method: "POST", url: "u", ok: false, timings: .zero, component: "login")
        let upload = StepResult(name: "upload", method: "POST", url: "u", ok: false, timings: .zero)
        let error = ProbeError(kind: .httpStatus, step: "login", message: "HTTP 401")
        func run(_ outcome: Outcome, _ steps: [StepResult]) -> ProbeResult {
            ProbeResult(
                id: "r", probe: "p", component: "files", agent: "a", region: "eu", startedAt: Date(), durationMs: 1, outcome: outcome,
                error: outcome == .failed ? error : nil, steps: steps)
        }
        typealias O = CorrelationEngine.Observation
        #expect(
            CorrelationEngine.observations(of: run(.failed, [bad]))
                == [O(component: "login", outcome: .failed, error: error), O(component: "files", outcome: nil, error: nil)])
        #expect(
            CorrelationEngine.observations(of: run(.failed, [ok, upload]))
                == [O(component: "login", outcome: .ok, error: nil), O(component: "files", outcome: .failed, error: error, durationMs: 1)])
        #expect(
            CorrelationEngine.observations(of: run(.ok, [ok]))
                == [O(component: "login", outcome: .ok, error: nil), O(component: "files", outcome: .ok, error: nil, durationMs: 1)])
        #expect(CorrelationEngine.observations(of: run(.failed, [])) == [O(component: "files", outcome: .failed, error: error, durationMs: 1)])
    }

    @Test func aRunCountsTheStepsOfEachComponentItAttemptedUpToItsFirstFailure() {
        func step(_ name: String, ok: Bool = true, component: String? = nil) -> StepResult {
            StepResult(name: name, method: "GET", url: "u", ok: ok, timings: .zero, component: component)
        }
        let error = ProbeError(kind: .httpStatus, step: "download", message: "HTTP 500")
        let steps = [step("login", component: "login"), step("upload"), step("metadata"), step("download", ok: false), step("delete")]
        let run = ProbeResult(
            id: "r", probe: "p", component: "files", agent: "a", region: "eu", startedAt: Date(), durationMs: 1, outcome: .failed,
            error: error, steps: steps)
        typealias O = CorrelationEngine.Observation
        #expect(
            CorrelationEngine.observations(of: run)
                == [O(component: "login", outcome: .ok, error: nil, steps: 1), O(component: "files", outcome: .failed, error: error, steps: 3, durationMs: 1)])
        var passed = run
        passed.outcome = .ok
        passed.error = nil
        passed.steps = steps.map { var s = $0; s.ok = true; return s }
        #expect(CorrelationEngine.observations(of: passed).last == O(component: "files", outcome: .ok, error: nil, steps: 4, durationMs: 1))
    }

    /// A journey that logs in (1 ms) and then waits 2 s for a job: login's latency is its own
    /// step's, the journey's component gets the rest (found by the first-use review: every
    /// component of the journey read "p95 2021ms").
    @Test func aStepComponentsLatencyIsItsOwnStepsTime() {
        func step(_ name: String, ms: Double, component: String? = nil) -> StepResult {
            var timings = PhaseTimings.zero
            timings.total = ms
            return StepResult(name: name, method: "GET", url: "u", ok: true, timings: timings, component: component)
        }
        let run = ProbeResult(
            id: "r", probe: "p", component: "api", agent: "a", region: "eu", startedAt: Date(), durationMs: 2_010, outcome: .ok,
            steps: [step("login page", ms: 0.9, component: "login"), step("login", ms: 0.6, component: "login"), step("submit", ms: 8), step("wait", ms: 2_000)])
        let observed = CorrelationEngine.observations(of: run)
        #expect(observed.map(\.component) == ["login", "api"])
        #expect(abs(observed[0].durationMs - 1.5) < 1e-9 && abs(observed[1].durationMs - 2_008.5) < 1e-9, "\(observed)")
    }

    @Test func theWindowReadsThePerStepRateAfterTheFirstFailureAndTheProblemsSpan() {
        let cfg = CorrelationConfig()
        var window = SeriesWindow(agent: 0, probe: "p", component: 0, control: false)
        // ok ×3, fail(after 2 steps), ok(4 steps), fail(1 step), ok(4), fail(3), ok ×2
        let runs: [(Outcome, Int32)] = [(.ok, 4), (.ok, 4), (.ok, 4), (.failed, 2), (.ok, 4), (.failed, 1), (.ok, 4), (.failed, 3), (.ok, 4), (.ok, 4)]
        for (i, (outcome, steps)) in runs.enumerated() {
            window.insert(WindowRun(id: "\(i)", startedAt: Double(i), durationMs: 1, outcome: outcome, error: nil, steps: steps), config: cfg)
        }
        let s = window.summarize(config: cfg, errorCode: -1)
        // After the first failure (run 3): runs 4…9, 4+1+4+3+4+4 = 20 steps, 2 failed.
        #expect(s.rateSteps == 20)
        #expect(s.rateFailed == 2)
        // While the problem was on: between run 3 and run 7, 3 runs, 1 bad.
        #expect(s.spanRuns == 3)
        #expect(s.spanBad == 1)
    }

    @Test func theWindowReadsTheIntervalFromRegularRunsNotFromRetries() {
        let cfg = CorrelationConfig()
        var window = SeriesWindow(agent: 0, probe: "p", component: 0, control: false)
        // A 60 s probe that failed and was retried every 15 s: 6 regular runs, 12 retries.
        var id = 0
        for slot in 0..<6 {
            let t = Double(slot) * 60
            window.insert(WindowRun(id: "\(id)", startedAt: t, durationMs: 1, outcome: slot == 2 ? .failed : .ok, error: nil), config: cfg)
            id += 1
            if slot >= 2 && slot < 5 {
                for k in 1...3 {
                    window.insert(WindowRun(id: "\(id)", startedAt: t + Double(k) * 15, durationMs: 1, outcome: .ok, error: nil, retry: true), config: cfg)
                    id += 1
                }
            }
        }
        #expect(window.summarize(config: cfg, errorCode: -1).interval == 60, "from the regular runs: the agent is not silent between them")
        // Retries only (an agent that sent nothing else): the spacing it has.
        var retries = SeriesWindow(agent: 0, probe: "p", component: 0, control: false)
        for k in 0..<4 {
            retries.insert(WindowRun(id: "\(k)", startedAt: Double(k) * 15, durationMs: 1, outcome: .ok, error: nil, retry: true), config: cfg)
        }
        #expect(retries.summarize(config: cfg, errorCode: -1).interval == 15)
    }

    @Test func majorOutageNeedsHalfTheAttemptedStepsFailing() {
        let cfg = CorrelationConfig()
        var k = RegionCounts()
        k.add(AgentComponent(reporting: true, state: .failing, latestFailed: true, runs: 10, failed: 8, allRuns: 10, allFailed: 8))
        k.add(AgentComponent(reporting: true, state: .failing, latestFailed: true, runs: 10, failed: 8, allRuns: 10, allFailed: 8))
        k.rateSteps = 30
        k.rateFailed = 9
        #expect(CorrelationEngine.regionStatus(k, cfg) == .partialOutage)
        k.rateFailed = 15
        #expect(CorrelationEngine.regionStatus(k, cfg) == .majorOutage)
        k.rateSteps = 0
        #expect(CorrelationEngine.regionStatus(k, cfg) == .majorOutage)
    }

    @Test func aRegionRecoversWhenEveryAgentPassesAndEnoughRunsPassedPooled() {
        var k = RegionCounts()
        // A hard fault (10 runs in its span, all bad) that has cleared: 1 passing run each.
        k.add(AgentComponent(reporting: true, state: .flaky, runs: 10, failed: 6, allRuns: 20, allFailed: 6, allBad: 6, cleanTail: 1, spanRuns: 5, spanBad: 5))
        k.add(AgentComponent(reporting: true, state: .flaky, runs: 10, failed: 6, allRuns: 20, allFailed: 6, allBad: 6, cleanTail: 2, spanRuns: 5, spanBad: 5))
        // A hard fault: p = 10.5 / 11 → M = 3 runs pooled: 1 + 2 passed.
        #expect(k.recovered(runs: 1, hardRuns: 5, confidence: 0.999))
        #expect(!k.recovered(runs: 2, hardRuns: 5, confidence: 0.999))
        #expect(k.past.flaky == 0 && k.past.allBad == 12)
        // Some runs passed while it was on: p from the window, 12 / 37 → M = 18: 3 prove nothing.
        var random = k
        random.spanRuns = 10
        random.spanBad = 7
        #expect(!random.recovered(runs: 1, hardRuns: 5, confidence: 0.999))
        // Still failing: never recovered.
        var failing = RegionCounts()
        failing.add(AgentComponent(reporting: true, state: .failing, latestFailed: true, runs: 10, failed: 10, allRuns: 10, allFailed: 10, allBad: 10, cleanTail: 0, spanRuns: 9, spanBad: 9))
        #expect(!failing.recovered(runs: 1, hardRuns: 5, confidence: 0.999))
    }

    @Test func rollupNeedsTwoBadRegionsForPlatform() {
        let cfg = CorrelationConfig()
        var bad = RegionCounts()
        bad.add(AgentComponent(reporting: true, state: .failing, latestFailed: true, runs: 10, failed: 10, allRuns: 10, allFailed: 10))
        var good = RegionCounts()
        good.add(AgentComponent(reporting: true, runs: 10, allRuns: 10))
        let names = ["ap", "eu", "us"]
        var blip = good
        blip.failed = 1
        let one = CorrelationEngine.rollup([bad, blip, good][...], regionNames: names, cfg)
        #expect(one.status == .partialOutage)
        #expect(one.scope == .region)
        #expect(one.badRegions == ["ap"])
        let two = CorrelationEngine.rollup([bad, bad, good][...], regionNames: names, cfg)
        #expect(two.scope == .platform)
        // A region whose agents failed twice recently, though not confirmed, is affected too.
        var random = good
        random.failed = 2
        let spreading = CorrelationEngine.rollup([bad, random, good][...], regionNames: names, cfg)
        #expect(spreading.scope == .platform)
        #expect(spreading.affectedRegions == ["ap", "eu"])
        #expect(spreading.regionStatus["eu"] == .operational)
        let alone = CorrelationEngine.rollup([bad][...], regionNames: ["ap"], cfg)
        #expect(alone.scope == .region)
        #expect(CorrelationEngine.rollup([RegionCounts()][...], regionNames: ["ap"], cfg).status == .unknown)
    }

    @Test func aRegionScopeWaitsForTheOtherRegionsFreshRuns() {
        // The first bad run started at 99.5 (collector time line); the verdict turned bad at 100.
        var fresh = RegionCounts()
        fresh.add(AgentComponent(reporting: true, runs: 10, allRuns: 10, lastReceived: 105, newestStartedAt: 103))
        var stale = RegionCounts()
        stale.add(AgentComponent(reporting: true, runs: 10, allRuns: 10, lastReceived: 99, newestStartedAt: 98))
        // Received after the verdict turned bad, but started before the fault showed: a healthy
        // run held back by the agent's flush_interval says nothing about the fault.
        var late = RegionCounts()
        late.add(AgentComponent(reporting: true, runs: 10, allRuns: 10, lastReceived: 100.8, newestStartedAt: 99.2))
        // Started after the first bad run, received before the verdict: fresh.
        var early = RegionCounts()
        early.add(AgentComponent(reporting: true, runs: 10, allRuns: 10, lastReceived: 99.9, newestStartedAt: 99.7))
        var failedOnce = RegionCounts()
        failedOnce.add(AgentComponent(reporting: true, latestFailed: true, runs: 10, allRuns: 10, lastReceived: 105, newestStartedAt: 103))
        let names = ["eu", "us"]
        func settled(_ other: RegionCounts, at t: Double) -> Bool {
            CorrelationEngine.regionScopeSettled(
                [RegionCounts(), other][...], badRegions: ["eu"], regionNames: names, badSince: 100, faultSeenAt: 99.5, t: t, wait: 2)
        }
        #expect(settled(fresh, at: 101))
        #expect(!settled(stale, at: 101))
        #expect(!settled(late, at: 101))
        #expect(settled(late, at: 102), "the wait is bounded")
        #expect(settled(early, at: 100.1))
        #expect(!settled(failedOnce, at: 101))
        #expect(settled(failedOnce, at: 102))
        // A latency fault reaching the other region shows there as one slow run first.
        var slowOnce = RegionCounts()
        slowOnce.add(AgentComponent(reporting: true, latestSlow: true, runs: 10, allRuns: 10, lastReceived: 105, newestStartedAt: 103))
        #expect(!settled(slowOnce, at: 101))
        #expect(settled(slowOnce, at: 102))
        // Nobody reports in us yet, but its agents are catching up (their spools after a
        // downtime): waited for up to `awaitedWait`, then the region scope may go out.
        func settledAwaiting(_ other: RegionCounts, at t: Double) -> Bool {
            CorrelationEngine.regionScopeSettled(
                [RegionCounts(), other][...], badRegions: ["eu"], regionNames: names, badSince: 100, faultSeenAt: 99.5, t: t, wait: 2,
                awaited: [false, true][...], awaitedWait: 30)
        }
        #expect(!settledAwaiting(RegionCounts(), at: 110))
        #expect(settledAwaiting(RegionCounts(), at: 130))
        #expect(settledAwaiting(fresh, at: 101), "one agent there is current: it answers for the region")
        #expect(settled(RegionCounts(), at: 100.1), "a region nobody watches is not waited for")
        // A failed run in us since about when the fault showed, its latest run passing: no proof
        // that the fault is eu's alone. Waited for one more `wait` (us may count as affected
        // meanwhile), then eu alone may go out.
        func settledStirring(_ other: RegionCounts, at t: Double) -> Bool {
            CorrelationEngine.regionScopeSettled(
                [RegionCounts(), other][...], badRegions: ["eu"], regionNames: names, badSince: 100, faultSeenAt: 99.5, t: t, wait: 2,
                stirring: [true, true])
        }
        #expect(!settledStirring(fresh, at: 101))
        #expect(!settledStirring(fresh, at: 103))
        #expect(settledStirring(fresh, at: 104), "the longer wait is bounded too")
        #expect(settled(fresh, at: 101), "a region with no failure since the fault showed settles at once")
    }
}
