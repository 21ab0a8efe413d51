import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// A value a server sends in one step and a later step uses (red team, 34th session): a 4 MB
/// `next` put into a URL held every probe's transfers for 2 s while the request was built and
/// scanned for credentials; a 1 s heartbeat missed 12 of 27 slots.
extension AgentIsolationTests {
    static let largeValueBody = "{\"next\": \"" + String(repeating: "A", count: 4_000_000) + "\"}"

    func writeLargeValueProbes(_ dir: TemporaryDirectory, base: String, interval: String) throws {
        for (name, use) in [
            ("in-url", "{url: \"\(base)/echo?q=${next}\"}"),
            ("in-body", "{method: POST, url: \"\(base)/echo\", json: {a: \"${next}\", b: \"${next}\", c: \"${next}\"}}"),
        ] {
            try writeProbe(dir, name, """
                name: \(name)
                component: api
                interval: \(interval)
                timeout: 10s
                steps:
                  - name: get
                    request: {url: "\(base)/big"}
                    extract: {next: {json: $.next}}
                  - name: use
                    request: \(use)
                """)
        }
    }

    @Test("a 4 MB extracted value: in a URL the step fails as script at once; in a JSON body it is sent; a 1 s heartbeat keeps its schedule")
    func largeExtractedValues() async throws {
        let dir = try TemporaryDirectory("isolation")
        defer { dir.remove() }
        let beats = Mutex<[ContinuousClock.Instant]>([])
        let echoed = Mutex<[Int]>([])
        let target = try LoopbackHTTPServer { request in
            switch request.path {
            case "/beat":
                beats.withLock { $0.append(.now) }
                return .json(200, "{}")
            case "/big": return .json(200, Self.largeValueBody)
            default:
                echoed.withLock { $0.append(request.body.count) }
                return .json(200, "{}")
            }
        }
        defer { target.stop() }

        // `once`: what each probe's result says.
        try writeLargeValueProbes(dir, base: target.baseURL, interval: "30s")
        let once = try ChildProcess("sonde-agent", ["once", "--probes", dir.file("probes"), "--format", "json"])
        #expect(try await once.waitForExit(timeout: .seconds(60)) == 1, "\(once.allOutput.suffix(2000))")
        let results = try once.stdoutLines.map { try SondeJSON.decode(ProbeResult.self, from: Data($0.utf8)) }
        let inURL = try #require(results.first { $0.probe == "in-url" })
        #expect(inURL.error?.kind == .script && inURL.error?.step == "use", "\(inURL.error.map { "\($0)" } ?? "no error")")
        #expect(inURL.error?.message.contains("the URL is 4000") == true && inURL.error?.message.contains("over 65536") == true)
        let inBody = try #require(results.first { $0.probe == "in-body" })
        #expect(inBody.outcome == .ok, "\(inBody.error.map { "\($0)" } ?? "")")
        #expect(echoed.withLock { $0.contains { $0 > 12_000_000 } }, "the JSON body carried the value three times")

        // `run`: both every 2 s beside a 1 s heartbeat.
        try FileManager.default.removeItem(atPath: dir.file("probes"))
        try writeHeartbeat(dir, url: "\(target.baseURL)/beat")
        try writeLargeValueProbes(dir, base: target.baseURL, interval: "2s")
        let agent = try await startAgent(dir, id: "iso-large")
        defer { agent.signal(SIGKILL) }
        let sent = echoed.withLock { $0.count }
        try await waitUntil("the large values to be used", timeout: .seconds(20)) { echoed.withLock { $0.count } >= sent + 2 }
        try await expectHeartbeatsOnSchedule(beats, while: "4 MB values were templated")
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit(timeout: .seconds(10)) == 0, "\(agent.allOutput.suffix(2000))")
    }
}
