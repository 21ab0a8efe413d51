import Foundation
import SondeCore
import Testing

@testable import Correlation

@Suite struct CorrelationScaleTests {
    /// 10,000 agents × 20 probes (19 on 5 components + a control probe) with two runs each in the
    /// window, a regional outage and 100 local faults. Prints the evaluation time; asserts only
    /// on the verdicts (timings depend on the machine and the build).
    @Test func tenThousandAgentsTimesTwentyProbesEvaluationTime() throws {
        let regions = ["eu", "us", "ap"]
        let components = ["api", "batch", "files", "login", "models"]
        let agents = (0..<10_000).map { AgentInfo(id: String(format: "agent-%05d", $0), region: regions[$0 % 3]) }
        var engine = CorrelationEngine(config: CorrelationConfig(), agents: agents)
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        let error = ProbeError(kind: .httpStatus, step: "upload", message: "HTTP 502", code: "server_error")
        var ingestSeconds = 0.0
        for round in 0..<2 {
            let at = start.addingTimeInterval(Double(round) * 10)
            var batch: [ProbeResult] = []
            batch.reserveCapacity(agents.count * 20)
            for (n, agent) in agents.enumerated() {
                for p in 0..<20 {
                    let control = p == 19
                    let component = control ? "control" : components[p % components.count]
                    let regional = agent.region == "eu" && component == "files"
                    let local = n % 100 == 7 && (control || component == "login")
                    let failed = regional || local
                    batch.append(
                        ProbeResult(
                            id: "\(n)/\(p)/\(round)", probe: "p\(p)", component: component, agent: agent.id, region: agent.region,
                            startedAt: at, durationMs: Double(50 + (n * 7 + p) % 200), outcome: failed ? .failed : .ok,
                            error: failed ? error : nil, steps: [], control: control ? true : nil))
                }
            }
            let clock = ContinuousClock()
            let elapsed = clock.measure { engine.ingest(batch, receivedAt: at.addingTimeInterval(1)) }
            ingestSeconds += Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds)
        }
        let now = start.addingTimeInterval(12)
        let clock = ContinuousClock()
        var times: [Double] = []
        var output: CorrelationOutput?
        for _ in 0..<5 {
            let elapsed = clock.measure { output = engine.evaluate(now: now) }
            times.append((Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18) * 1000)
        }
        times.sort()
        print(
            "CorrelationEngine 10000 agents x 20 probes: evaluate() min \(String(format: "%.1f", times[0])) ms, median \(String(format: "%.1f", times[2])) ms, max \(String(format: "%.1f", times[4])) ms; ingest of 400000 results \(String(format: "%.2f", ingestSeconds)) s"
        )
        let result = try #require(output)
        let files = try #require(result.verdicts.first { $0.component == "files" })
        #expect(files.status == .partialOutage)
        #expect(files.scope == .region)
        #expect(files.evidence.reportingAgents == 9_900)
        let failingEU = agents.indices.filter { $0 % 3 == 0 && $0 % 100 != 7 }.count
        #expect(files.evidence.failingAgentCount == failingEU)
        #expect(files.evidence.failingAgents.count == 50)
        #expect(files.evidence.latencyP50Ms != nil)
        #expect(result.agents.filter { $0.state == .localFault }.count == 100)
        let login = try #require(result.verdicts.first { $0.component == "login" })
        #expect(login.status == .operational)
    }
}
