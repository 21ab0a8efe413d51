import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport

// The pieces every drill uses: a real `sonde-collector serve` on SQLite, a real `sonde-agent run`
// with a fast probe against a real HTTP target, and the check that every result the agent produced
// is stored exactly once.

/// A real collector process on its own SQLite file, with one enrolled agent.
struct DrillCollector {
    let process: ChildProcess
    let port: Int
    var url: String { "http://127.0.0.1:\(port)" }

    /// Starts `sonde-collector serve`; `port` 0 picks a free one (restart on the known port to
    /// keep the agent's URL).
    /// The read token the drills' collectors accept (for `/v1/results`).
    static let readToken = "agent-drill-read-token"

    static func start(dir: TemporaryDirectory, agentID: String, publicKey: String, port: Int = 0) async throws -> DrillCollector {
        let config = dir.file("collector.yaml")
        try """
            listen: {host: 127.0.0.1, port: \(port), plain_http: true}
            tokens: [{name: drill, role: read, sha256: \(tokenDigestHex(Self.readToken))}]
            database: \(dir.file("collector.db"))
            agents:
              - {id: \(agentID), region: eu, public_key: \(publicKey)}
            """.write(toFile: config, atomically: true, encoding: .utf8)
        let process = try ChildProcess("sonde-collector", ["serve", "--config", config])
        try await waitUntil("the collector to listen", timeout: .seconds(30)) {
            if !process.isRunning { throw TestFailure("sonde-collector exited:\n\(process.allOutput)") }
            return (process.stdoutLines + process.stderrLines).contains { $0.contains("Collector listening") }
        }
        let line = (process.stdoutLines + process.stderrLines).first { $0.contains("Collector listening") } ?? ""
        guard let range = line.range(of: #"http.port=\d+"#, options: .regularExpression),
            let bound = Int(line[range].dropFirst("http.port=".count))
        else { throw TestFailure("no port in the collector's log line: \(line)") }
        return DrillCollector(process: process, port: bound)
    }

    /// Every stored result of `agent`, all pages.
    func results(agent: String) async throws -> [ProbeResult] {
        struct Page: Decodable {
            var results: [ProbeResult]
            var next_cursor: String?
        }
        var all: [ProbeResult] = []
        var cursor: String?
        for _ in 0..<1000 {
            var url = "\(self.url)/v1/results?agent=\(agent)&limit=1000"
            if let cursor { url += "&cursor=\(cursor.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? cursor)" }
            let response = try await CurlHTTPClient.shared.perform(
                HTTPRequest(url: url, headers: [HTTPHeader("Authorization", "Bearer \(Self.readToken)")], timeout: .seconds(10)))
            guard response.status == 200 else { throw TestFailure("GET \(url): HTTP \(response.status) \(response.bodyText)") }
            let page = try SondeJSON.decode(Page.self, from: response.body)
            all += page.results
            guard let next = page.next_cursor else { break }
            cursor = next
        }
        return all
    }
}

/// An agent's folder: key, a fast probe, a config.
struct DrillAgent {
    let dir: TemporaryDirectory
    let id = "drill-1"
    let key: AgentSigningKey
    let spool: String
    var config: String { dir.file("agent.yaml") }

    init(dir: TemporaryDirectory, spool: String? = nil, interval: String = "100ms") throws {
        self.dir = dir
        self.spool = spool ?? dir.file("spool")
        key = AgentSigningKey()
        try key.write(to: dir.file("agent.key"))
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        try """
            name: fast
            component: api
            interval: \(interval)
            timeout: 2s
            steps:
              - name: ping
                request: {method: GET, url: "${target}/ping"}
                assert: {status: 200}
            """.write(toFile: dir.file("probes/fast.yaml"), atomically: true, encoding: .utf8)
    }

    func writeConfig(collectorURL: String, targetURL: String, memoryLimit: Int = 10_000) throws {
        try """
            agent: {id: \(id), region: eu}
            collector: {url: \(collectorURL), key: agent.key, batch_size: 5, timeout: 2s, flush_interval: 50ms, backoff: {base: 50ms, cap: 300ms}}
            spool: {path: \(spool), memory_limit: \(memoryLimit)}
            probes: [probes]
            variables: {target: \(targetURL)}
            scheduling: {jitter: 0, shutdown_grace: 2s}
            """.write(toFile: config, atomically: true, encoding: .utf8)
    }

    func start() throws -> ChildProcess {
        try ChildProcess("sonde-agent", ["run", "--config", config, "--log-level", "debug"])
    }

    /// Waits until this process has logged `count` spooled results (on disk or in memory).
    func waitForSpooled(_ agent: ChildProcess, atLeast count: Int, timeout: Duration = .seconds(20)) async throws {
        try await waitUntil("\(count) results spooled by \(agent.pid)", timeout: timeout) {
            if !agent.isRunning { throw TestFailure("agent exited early:\n\(agent.allOutput.suffix(3000))") }
            return agent.stderrLines.filter { $0.contains("result spooled") }.count >= count
        }
    }
}

/// What "stored exactly once" means for one agent's results at the collector.
struct DeliveryCheck: CustomStringConvertible {
    var stored: Int
    var uniqueIDs: Int
    var seqs: [UInt64]
    var duplicateSeqs: Int
    var missing: [UInt64]

    init(_ results: [ProbeResult], produced: UInt64, dropped: Set<UInt64> = []) {
        stored = results.count
        uniqueIDs = Set(results.map(\.id)).count
        seqs = results.compactMap(\.seq).sorted()
        duplicateSeqs = seqs.count - Set(seqs).count
        let have = Set(seqs)
        missing = produced == 0 ? [] : (1...produced).filter { !have.contains($0) && !dropped.contains($0) }
    }

    /// Every seq 1…produced stored once (except those reported dropped), no duplicates.
    var exactlyOnce: Bool { uniqueIDs == stored && duplicateSeqs == 0 && missing.isEmpty }

    var description: String {
        "stored \(stored), unique ids \(uniqueIDs), duplicate seqs \(duplicateSeqs), missing \(missing.count) \(missing.prefix(10))"
    }
}
