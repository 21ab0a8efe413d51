import CollectorAPI
import Correlation
import Foundation
import SondeCore
import SondeScenarios
import SondeTestSupport
import Testing

/// The demo's scenarios with every part real: sim, collector, agents and their networks as
/// processes, faults set with `sonde-sim fault`, verdicts read from the API, webhooks received.
@Suite("End to end", .serialized)
struct ScenarioTests {
    @Test("one agent's network cut is a local fault: agent.local_fault, no incident, peers fine")
    func localFault() async throws {
        try await SondeSystem.with(regions: ["eu", "us"], agents: ["eu-1", "eu-2", "us-1", "us-2"]) { system in
            try await system.waitUntilHealthy()

            system.cutNetwork(of: "eu-1")
            let event = try await system.waitForEvent(.agentLocalFault, agent: "eu-1")
            #expect(event.agent == "eu-1")
            let agents = try await system.agentsView()
            #expect(agents.first { $0.id == "eu-1" }?.state == .localFault)
            #expect(agents.first { $0.id == "eu-2" }?.state == .ok)
            // A few more evaluations with eu-1 still cut: still no incident, components operational.
            try await waitUntil("more results from the others", timeout: .seconds(30)) {
                try await system.status().components.allSatisfy { $0.status == .operational }
            }
            #expect(system.events(.incidentOpened).isEmpty)
            #expect(try await system.status().openIncidents.isEmpty)

            system.restoreNetwork(of: "eu-1")
            try await waitUntil("eu-1 ok again", timeout: .seconds(60)) {
                try await system.agentsView().first { $0.id == "eu-1" }?.state == .ok
            }
            #expect(system.events(.incidentOpened).isEmpty)
        }
    }

    @Test("one region's uploads expiring opens a regional incident; spreading to every region updates the same incident to platform; recovery resolves it")
    func regionalEscalatesToPlatform() async throws {
        try await SondeSystem.with(regions: ["eu", "us"], agents: ["eu-1", "eu-2", "us-1", "us-2"]) { system in
            try await system.waitUntilHealthy()

            try await system.fault(["--type", "file_expired", "--component", "files", "--region", "us"])
            let opened = try await system.waitForEvent(.incidentOpened, component: "files")
            #expect(opened.scope == .region)
            #expect(opened.regions == ["us"])
            let verdict = try #require(try await system.verdict("files"))
            #expect(verdict.status == .partialOutage)
            #expect(verdict.regions["eu"] == .operational)
            #expect(verdict.evidence.errorCodes["file_expired", default: 0] > 0)

            try await system.fault(["--type", "file_expired", "--component", "files"])
            var escalated: AlertEvent?
            try await waitUntil("the files incident to become platform-wide", timeout: .seconds(60)) {
                escalated = system.events(.incidentUpdated, component: "files").first { $0.scope == .platform }
                return escalated != nil
            }
            #expect(escalated?.incident?.id == opened.incident?.id)
            #expect(system.events(.incidentOpened, component: "files").count == 1)

            try await system.clearFaults()
            let resolved = try await system.waitForEvent(.incidentResolved, component: "files", timeout: .seconds(90))
            #expect(resolved.incident?.id == opened.incident?.id)
            // Journeys that upload through files (batch) recover on their own runs, a little later.
            try await waitUntil("every incident resolved", timeout: .seconds(90)) { try await system.status().openIncidents.isEmpty }
        }
    }

    @Test("with 2 s intervals a platform-wide fault reaches the webhook receiver as incident.opened within 10 s")
    func platformFaultDetectionTime() async throws {
        try await SondeSystem.with(regions: ["eu", "us", "ap"], agents: ["eu-1", "eu-2", "us-1", "us-2", "ap-1", "ap-2"], interval: "2s") { system in
            try await system.waitUntilHealthy()

            let injected = ContinuousClock.now
            try await system.fault(["--type", "error", "--status", "503", "--component", "api"])
            let opened = try await system.waitForEvent(.incidentOpened, component: "api", timeout: .seconds(30))
            let detection = ContinuousClock.now - injected
            print("detection: fault injected → incident.opened received in \(detection) (2 s probe intervals), scope \(opened.scope?.rawValue ?? "-") \(opened.regions)")
            #expect(detection < .seconds(10))
            // Regions report at their own phase: the incident may open on the first region's evidence
            // and then widen; either way it is one incident that ends platform-wide, major.
            try await waitUntil("the api verdict to be a platform-wide major outage", timeout: .seconds(30)) {
                let verdict = try await system.verdict("api")
                return verdict?.status == .majorOutage && verdict?.scope == .platform
            }
            let incidents = try await system.status().openIncidents.filter { $0.component == "api" }
            #expect(incidents.count == 1)
            #expect(incidents.first?.id == opened.incident?.id)
            #expect(incidents.first?.scope == .platform)
            #expect(system.events(.incidentOpened, component: "api").count == 1)
        }
    }

    @Test("batches stuck in finalizing everywhere open a platform incident with stuck evidence; slow responses everywhere are degraded_performance")
    func stuckBatchesAndSlowResponses() async throws {
        try await SondeSystem.with(regions: ["eu", "us"], agents: ["eu-1", "eu-2", "us-1", "us-2"]) { system in
            try await system.waitUntilHealthy()

            try await system.fault(["--type", "batch_stuck", "--state", "finalizing", "--component", "batch"])
            let opened = try await system.waitForEvent(.incidentOpened, component: "batch")
            try await waitUntil("the batch verdict to be platform-wide", timeout: .seconds(30)) {
                try await system.verdict("batch")?.scope == .platform
            }
            let verdict = try #require(try await system.verdict("batch"))
            #expect(verdict.evidence.sampleErrors.contains { $0.kind == .stuck && $0.message.contains("finalizing") })
            #expect(try await system.status().openIncidents.filter { $0.component == "batch" }.map(\.id) == [opened.incident?.id])

            try await system.fault(["--type", "latency", "--delay-ms", "1200", "--component", "api"])
            try await waitUntil("api degraded_performance", timeout: .seconds(60)) {
                try await system.verdict("api")?.status == .degradedPerformance
            }
        }
    }

    @Test("an agent that stops reporting is agent.silent, never an incident")
    func silentAgent() async throws {
        try await SondeSystem.with(
            regions: ["eu", "us"], agents: ["eu-1", "eu-2", "us-1", "us-2"], correlation: "{silent_min: 3}") { system in
            try await system.waitUntilHealthy()

            // Let the collector learn us-2's rhythm (its probe interval) before it goes quiet.
            try await waitUntil("a few rounds of us-2's results", timeout: .seconds(30)) {
                try await system.results(agent: "us-2").filter { $0.probe == "sim-latency" }.count >= 4
            }
            system.agents["us-2"]!.process.signal(SIGKILL)
            let killed = ContinuousClock.now
            let silent = try await system.waitForEvent(.agentSilent, agent: "us-2")
            print("silence: agent SIGKILLed → agent.silent received in \(ContinuousClock.now - killed) (1 s probe intervals): \(silent.summary)")
            #expect(silent.agent == "us-2")
            #expect(try await system.agentsView().first { $0.id == "us-2" }?.state == .silent)
            #expect(system.events(.incidentOpened).isEmpty)
            #expect(try await system.status().components.allSatisfy { $0.status == .operational })
        }
    }
}
