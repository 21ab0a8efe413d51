@testable import Collector
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// When pushes wake the evaluator: with the clock tick a minute away, only pushes can evaluate.
@Suite struct EvaluationTriggerTests {
    /// A healthy fleet's passing pushes cost no evaluation; failures open an incident; passing
    /// runs then carry it to `resolved` at once, without waiting for the next tick.
    @Test func passingRunsDriveRecoveryOnlyWhileSomethingIsWrong() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [
            TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"), TestAgent(id: "us-1", region: "us"),
            TestAgent(id: "us-2", region: "us"),
        ]
        var config = testConfig(dir: dir, agents: agents)
        config.evaluationInterval = 60
        try await withCollector(config) { collector in
            let hub = collector.built.hub
            func round(_ outcome: Outcome) async throws {
                for agent in agents {
                    let response = try await agent.push(
                        agent.batch([agent.result(probe: "upload", component: "files", outcome: outcome, startedAt: Date())]), to: collector)
                    #expect(response.status == 200)
                }
            }
            for _ in 0..<5 { try await round(.ok) }
            #expect(await hub.evaluations == 0)

            try await waitUntil("an incident from failing pushes", timeout: .seconds(20), every: .milliseconds(200)) {
                try await round(.failed)
                return await !hub.openIncidents.isEmpty
            }
            try await waitUntil("the incident resolved by passing pushes alone", timeout: .seconds(20), every: .milliseconds(200)) {
                try await round(.ok)
                return await hub.openIncidents.isEmpty
            }
            // Recovered: healthy pushes wake the evaluator no more (an evaluation woken by the
            // pushes that resolved it may still be under way, so count wake-ups, not evaluations).
            let fires = collector.built.trigger.fires
            for _ in 0..<5 { try await round(.ok) }
            #expect(collector.built.trigger.fires == fires)
        }
    }
}

/// The evaluator's and the webhook dispatcher's wake-up: a wait ended by `fire()` leaves nothing
/// behind (its timer, cancelled, once woke the next wait at once, and so on for good: a collector
/// that had seen one failed result evaluated ~25,000 times a second).
@Suite struct WakeSignalTests {
    @Test func aWaitEndedByFireLeavesNoWakeUpBehind() async {
        let signal = WakeSignal()
        await signal.waiting { wait in
            for _ in 0..<3 {
                signal.fire()
                await wait(.seconds(60))  // returns at once: a fire came first
                let start = ContinuousClock.now
                await wait(.milliseconds(300))  // nothing fires: waits out its own limit
                #expect(ContinuousClock.now - start >= .milliseconds(250))
            }
        }
    }

    @Test func aCollectorThatSawAFailureEvaluatesAtItsTick() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.evaluationInterval = 60
        try await withCollector(config) { collector in
            let hub = collector.built.hub
            let response = try await agent.push(
                agent.batch([agent.result(probe: "upload", component: "files", outcome: .failed, startedAt: Date())]), to: collector)
            #expect(response.status == 200)
            try await waitUntil("the failure evaluated", timeout: .seconds(10), every: .milliseconds(50)) { await hub.evaluations >= 1 }
            // A second failure wakes the evaluator once more; with the tick 60 s away, nothing
            // else may evaluate meanwhile (the spinning evaluator ran thousands by then).
            let before = await hub.evaluations
            let again = try await agent.push(
                agent.batch([agent.result(probe: "upload", component: "files", outcome: .failed, startedAt: Date())]), to: collector)
            #expect(again.status == 200)
            try await waitUntil("the second failure evaluated", timeout: .seconds(10), every: .milliseconds(50)) { await hub.evaluations > before }
            #expect(await hub.evaluations - before <= 2)
        }
    }
}
