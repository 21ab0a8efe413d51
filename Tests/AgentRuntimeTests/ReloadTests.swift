import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

/// SIGHUP to the real `sonde-agent run`: a new probe, a changed variable and a removed probe take
/// effect without a restart and without dropping a result; a broken config is refused with its
/// problem logged and the running probes keep going.
@Suite("SIGHUP reload", .serialized)
struct ReloadTests {
    @Test func sighupReloadsProbesAndVariablesAndRefusesABrokenConfig() async throws {
        let target = try LoopbackHTTPServer { request in .json(200, #"{"path":"\#(request.path)"}"#) }
        defer { target.stop() }
        let dir = try TemporaryDirectory("agent-reload")
        defer { dir.remove() }
        let key = AgentSigningKey()
        try key.write(to: dir.file("agent.key"))
        let receiver = try PushReceiver(publicKey: key.publicKey)
        defer { receiver.stop() }
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        func probe(_ name: String, path: String) -> String {
            """
            name: \(name)
            component: api
            interval: 200ms
            timeout: 2s
            steps:
              - name: get
                request: {method: GET, url: "${target}\(path)"}
                assert: {status: 200}
            """
        }
        func config(variant: String, agent: String = "{id: reload-1, region: eu}") -> String {
            """
            agent: \(agent)
            collector: {url: \(receiver.url), key: agent.key, batch_size: 5, timeout: 2s, flush_interval: 50ms, backoff: {base: 20ms, cap: 100ms}}
            spool: {path: spool}
            probes: [probes]
            variables: {target: \(target.baseURL), variant: \(variant)}
            scheduling: {shutdown_grace: 2s}
            """
        }
        try probe("first", path: "/first/${variant}").write(toFile: dir.file("probes/first.yaml"), atomically: true, encoding: .utf8)
        try config(variant: "a").write(toFile: dir.file("agent.yaml"), atomically: true, encoding: .utf8)
        let agent = try ChildProcess("sonde-agent", ["run", "--config", dir.file("agent.yaml")])
        defer { agent.signal(SIGKILL) }
        func urls(of probe: String) -> [String] { receiver.snapshot.results.filter { $0.probe == probe }.compactMap { $0.steps.first?.url } }

        try await waitUntil("first's results with variant a", timeout: .seconds(20)) { urls(of: "first").contains { $0.hasSuffix("/first/a") } }

        // Add a probe, change a variable, then SIGHUP.
        try probe("second", path: "/second").write(toFile: dir.file("probes/second.yaml"), atomically: true, encoding: .utf8)
        try config(variant: "b").write(toFile: dir.file("agent.yaml"), atomically: true, encoding: .utf8)
        agent.signal(SIGHUP)
        try await waitUntil("second's results and first with variant b", timeout: .seconds(20)) {
            if !agent.isRunning { throw TestFailure("SIGHUP stopped the agent:\n\(agent.allOutput)") }
            return !urls(of: "second").isEmpty && urls(of: "first").contains { $0.hasSuffix("/first/b") }
        }

        // A broken probe: refused as a whole, logged, and the running set goes on.
        try "name: broken\ncomponent: api\ninterval: often\nsteps: []\n".write(toFile: dir.file("probes/broken.yaml"), atomically: true, encoding: .utf8)
        agent.signal(SIGHUP)
        try await agent.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("reload refused") && $0.contains("broken.yaml") }
        let seen = receiver.snapshot.results.count
        try await waitUntil("results after the refused reload", timeout: .seconds(20)) { receiver.snapshot.results.count > seen + 4 }
        #expect(agent.isRunning)
        #expect(!receiver.snapshot.results.contains { $0.probe == "broken" })

        // Remove a probe: it stops; the other goes on.
        try FileManager.default.removeItem(atPath: dir.file("probes/broken.yaml"))
        try FileManager.default.removeItem(atPath: dir.file("probes/second.yaml"))
        agent.signal(SIGHUP)
        try await agent.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("reload applied") && $0.contains("probes.count=1") }
        let secondCount = urls(of: "second").count
        let firstCount = urls(of: "first").count
        try await waitUntil("first keeps running", timeout: .seconds(20)) { urls(of: "first").count > firstCount + 4 }
        #expect(urls(of: "second").count <= secondCount + 1, "a removed probe stops after at most its run in flight")

        // The agent's id and region change only on restart: a reload that renames it warns, and
        // results keep the running id and region (the ones the pushes are signed as).
        try config(variant: "b", agent: "{id: reload-9, region: us}").write(toFile: dir.file("agent.yaml"), atomically: true, encoding: .utf8)
        agent.signal(SIGHUP)
        try await agent.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("changes only on restart") && $0.contains("agent.id") }
        let beforeRename = receiver.snapshot.results.count
        try await waitUntil("results after the rename", timeout: .seconds(20)) { receiver.snapshot.results.count > beforeRename + 4 }
        let renamed = receiver.snapshot.results.dropFirst(beforeRename)
        #expect(renamed.allSatisfy { $0.agent == "reload-1" && $0.region == "eu" }, "\(Set(renamed.map { "\($0.agent)/\($0.region)" }))")

        // Graceful stop: everything produced was delivered, once, in order (no result dropped by the reloads).
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit(timeout: .seconds(20)) == 0)
        let spool = try Spool(directory: dir.file("spool"), logger: CapturedLogs().logger())
        defer { spool.close() }
        let produced = spool.status.lastSeq
        #expect(spool.status.unsentResults == 0)
        #expect(receiver.snapshot.results.map { $0.seq ?? 0 } == Array(1...produced), "seq contiguous: no result dropped across reloads")
    }
}
