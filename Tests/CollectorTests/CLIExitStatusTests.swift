import Collector
import CollectorAPI
import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// `sonde status` exits with the worst verdict's documented code (docs/collector.md), so scripts
/// can act on it; `--exit-zero` keeps dashboards' wrappers at 0. `agents add` refuses a database
/// that does not exist unless told `--create`.
@Suite(.serialized)
struct CLIExitStatusTests {
    @Test func statusExitsWithTheWorstVerdictsCode() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu"),
                      TestAgent(id: "us-1", region: "us"), TestAgent(id: "us-2", region: "us")]
        try await withCollector(testConfig(dir: dir, agents: agents)) { collector in
            let env = ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.read]
            // Healthy: exit 0.
            for agent in agents {
                for i in 0..<3 {
                    #expect(try await agent.push(agent.batch([agent.result(startedAt: Date().addingTimeInterval(Double(i - 3)))]), to: collector).status == 200)
                }
            }
            try await waitUntil("login operational") { try await Self.verdict(collector) == .operational }
            #expect(try await Self.sonde(["status"], env).status == 0)

            // Every agent failing hard everywhere: a major outage, exit 4 (held until the verdict
            // settles there, so the CLI reads the same verdict the test expects).
            try await waitUntil("a major-outage verdict", timeout: .seconds(30)) {
                for agent in agents {
                    _ = try await agent.push(agent.batch([agent.result(outcome: .failed, startedAt: Date(), code: "http_500")]), to: collector)
                }
                return try await Self.verdict(collector) == .majorOutage
            }
            let failing = try await Self.sonde(["status"], env)
            #expect(failing.status == 4, "\(failing.output)")
            let json = try await Self.sonde(["status", "--json"], env)
            #expect(json.status == failing.status, "--json exits as the table does")
            #expect(try await Self.sonde(["status", "--exit-zero"], env).status == 0)

            // No answer at all: exit 2, whatever --exit-zero says.
            let unreachable = try await Self.sonde(["status", "--exit-zero"], ["SONDE_COLLECTOR": "http://127.0.0.1:1", "NO_COLOR": "1"])
            #expect(unreachable.status == 2, "\(unreachable.output)")
        }
    }

    /// Found by the CLI walk-through: a declared component nothing reports is unknown (exit 1),
    /// not missing (a fleet whose agents never got through read as exit 0, F5); a component one
    /// agent reports and nobody declared opens nothing and does not set the exit status, and the
    /// table says so (it exited 4 on `extra`'s outage, F4).
    @Test func statusCountsDeclaredComponentsAndOnlyKnownOnes() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "us-1", region: "us")]
        var config = testConfig(dir: dir, agents: agents)
        config.components = ["login", "web"]
        try await withCollector(config) { collector in
            let env = ["SONDE_COLLECTOR": collector.baseURL, "NO_COLOR": "1", "SONDE_TOKEN": TestTokens.read]
            let empty = try await Self.sonde(["status"], env)
            #expect(empty.status == 1, "\(empty.output)")
            #expect(empty.output.contains("login") && empty.output.contains("web") && empty.output.contains("unknown"), "\(empty.output)")
            // The page's summary says so too: nothing measured is no data, not all well.
            let summary = String(decoding: try await get(collector, "/api/v2/summary.json").body, as: UTF8.self)
            #expect(summary.contains("No Data") && !summary.contains("All Systems Operational"), "\(summary)")
            for agent in agents {
                for i in 0..<3 {
                    let at = Date().addingTimeInterval(Double(i - 3))
                    let batch = agent.batch([
                        agent.result(startedAt: at), agent.result(probe: "web", component: "web", startedAt: at),
                        agent.result(probe: "extra", component: "extra", outcome: agent.id == "eu-1" ? .failed : .ok, startedAt: at, code: "http_500"),
                    ])
                    #expect(try await agent.push(batch, to: collector).status == 200)
                }
            }
            try await waitUntil("login and web operational, extra failing") {
                let components = try decode(StatusResponse.self, try await get(collector, "/v1/status")).components
                let status = Dictionary(uniqueKeysWithValues: components.map { ($0.component, $0.status) })
                return status["login"] == .operational && status["web"] == .operational && (status["extra"] ?? .operational) != .operational
            }
            let partial = try await Self.sonde(["status"], env)
            #expect(partial.status == 0, "\(partial.output)")
            #expect(partial.output.contains("not a known component"), "\(partial.output)")
        }
    }

    /// What a restart cannot fix exits 2 (the unit's RestartPreventExitStatus), with words that
    /// name it: an address this host does not have, a database folder that does not exist. A
    /// port another process holds exits 1: it may free itself (the previous collector still
    /// closing), so systemd tries again (found by the first-use review).
    @Test func serveExits2OnWhatARestartCannotFixAnd1OnATakenPort() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let holder = try LoopbackHTTPServer { _ in .json(200, "{}") }
        defer { holder.stop() }
        let port = try #require(Int(holder.baseURL.split(separator: ":").last ?? ""))
        try "listen: {host: 127.0.0.1, port: \(port), plain_http: true}\ndatabase: \(dir.file("c.db"))\n".write(toFile: dir.file("taken.yaml"), atomically: true, encoding: .utf8)
        let taken = try await Self.run("sonde-collector", ["serve", "--config", dir.file("taken.yaml")], [:])
        #expect(taken.status == 1, "\(taken.output)")
        #expect(taken.output.contains("listen: cannot listen on 127.0.0.1:\(port): Address already in use"), "\(taken.output)")
        #expect(!taken.output.contains("bind(descriptor"), "\(taken.output)")
        try "listen: {host: 192.0.2.1, port: 0, plain_http: true}\ndatabase: \(dir.file("d.db"))\n".write(toFile: dir.file("absent.yaml"), atomically: true, encoding: .utf8)
        let absent = try await Self.run("sonde-collector", ["serve", "--config", dir.file("absent.yaml")], [:])
        #expect(absent.status == 2, "an address this host does not have: \(absent.output)")
        #expect(absent.output.contains("listen: cannot listen on 192.0.2.1:0"), "\(absent.output)")
        try "listen: {host: 127.0.0.1, port: 0, plain_http: true}\ndatabase: \(dir.file("nope/x/c.db"))\n".write(toFile: dir.file("nodb.yaml"), atomically: true, encoding: .utf8)
        let noDatabase = try await Self.run("sonde-collector", ["serve", "--config", dir.file("nodb.yaml")], [:])
        #expect(noDatabase.status == 2, "\(noDatabase.output)")
        #expect(noDatabase.output.contains("No such file or directory"), "\(noDatabase.output)")
    }

    /// `validate` lists every problem of a config in one run, one prefixed line each, and exits 2.
    @Test func validateListsEveryProblemAndExits2() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try "listen: {plain_http: true, port: 70000}\nretention_days: -1\nevaluation_interval: 0s\n".write(
            toFile: dir.file("bad.yaml"), atomically: true, encoding: .utf8)
        let process = try ChildProcess("sonde-collector", ["validate", "--config", dir.file("bad.yaml")])
        #expect(try await process.waitForExit(timeout: .seconds(30)) == 2, "\(process.allOutput)")
        func lines() -> [Substring] { process.allOutput.split(separator: "\n").filter { $0.hasPrefix("sonde-collector: \(dir.file("bad.yaml")):") } }
        try? await waitUntil("three problems printed", timeout: .seconds(5)) { lines().count >= 3 }
        #expect(lines().count == 3, "\(process.allOutput)")
        for field in ["1:34: listen.port", "2:17: retention_days", "3:22: evaluation_interval"] {
            #expect(lines().contains { $0.contains(field) }, "\(field) in \(process.allOutput)")
        }
    }

    @Test func agentsAddRefusesADatabaseThatDoesNotExist() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let key = AgentSigningKey().publicKey.base64
        let typo = dir.file("collectr.db")
        let refused = try await Self.run("sonde-collector", ["agents", "add", "--db", typo, "--id", "eu-1", "--region", "eu", "--public-key", key], [:])
        #expect(refused.status == 1, "not the usage error's 64: \(refused.status)")
        #expect(refused.output.contains("no such database"), "\(refused.output)")
        #expect(!FileManager.default.fileExists(atPath: typo), "nothing may be created without --create")

        let created = try await Self.run(
            "sonde-collector", ["agents", "add", "--db", typo, "--create", "--id", "eu-1", "--region", "eu", "--public-key", key], [:])
        #expect(created.status == 0, "\(created.output)")
        #expect(created.output.contains("enrolled agent eu-1"))
        let listed = try await Self.run("sonde-collector", ["agents", "list", "--db", typo], [:])
        #expect(listed.status == 0 && listed.output.contains("eu-1"), "\(listed.output)")
    }

    /// A public key of small order (the identity point here) is never enrolled, by `agents add`
    /// or from the config's `agents:` list: a made-up signature verifies against it (red team,
    /// 32nd session, F3: anyone could push as that agent).
    @Test func aSmallOrderKeyIsNotEnrolled() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let weak = Data([0x01] + [UInt8](repeating: 0, count: 31)).base64EncodedString()
        let refused = try await Self.run(
            "sonde-collector", ["agents", "add", "--db", dir.file("c.db"), "--create", "--id", "ap-1", "--region", "ap", "--public-key", weak], [:])
        #expect(refused.status == 64, "\(refused.output)")  // EX_USAGE, as for any unusable key
        #expect(refused.output.contains("small order"), "\(refused.output)")
        do {
            _ = try CollectorConfig.parse(yaml: "listen: { plain_http: true }\nagents: [{ id: a, region: eu, public_key: \"\(weak)\" }]", file: "c.yaml")
            Issue.record("a small-order key must not load")
        } catch let error as ConfigError {
            #expect(error.field == "agents[0].public_key")
            #expect(error.description.contains("small order"), "\(error)")
        }
    }

    /// Agent ids and regions are names: no control sequences, bidirectional overrides, spaces or
    /// 5,000 characters, from `agents add` (whose error does not echo them) or the config (red
    /// team, 32nd session, F4: `agents add` and `agents list` printed an id's escape sequences raw).
    @Test func agentIDsAndRegionsAreNames() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let key = AgentSigningKey().publicKey.base64
        for (id, region) in [
            ("evil\u{1B}]0;pwned\u{07}", "eu"), ("eu-1\u{202E}1-ue", "eu"), (String(repeating: "a", count: 5000), "eu"), ("ok-1", ""),
            ("ok-1", "e u"), ("ok-1", "eu\u{9B}"),
        ] {
            let refused = try await Self.run(
                "sonde-collector", ["agents", "add", "--db", dir.file("c.db"), "--create", "--id", id, "--region", region, "--public-key", key], [:])
            #expect(refused.status == 64, "\(refused.output.debugDescription)")
            #expect(refused.output.contains("without spaces or control characters"), "\(refused.output.debugDescription)")
            #expect(!refused.output.unicodeScalars.contains { $0 == "\u{1B}" || $0 == "\u{202E}" || $0 == "\u{9B}" }, "\(refused.output.debugDescription)")
            do {
                _ = try CollectorConfig.parse(
                    yaml: "listen: { plain_http: true }\nagents: [{ id: \(jsonQuoted(id)), region: \(jsonQuoted(region)), public_key: \"\(key)\" }]", file: "c.yaml")
                Issue.record("\(id.debugDescription) in \(region.debugDescription) must not load")
            } catch let error as ConfigError {
                #expect(error.field == "agents[0].id" || error.field == "agents[0].region", "\(error)")
            }
        }
        let good = try await Self.run(
            "sonde-collector", ["agents", "add", "--db", dir.file("c.db"), "--create", "--id", "ap-1", "--region", "ap", "--public-key", key], [:])
        #expect(good.status == 0, "\(good.output)")
    }

    /// Revoking an agent revokes its key: `agents add` with the same key does not quietly lift
    /// the revocation (found by the new-user walk-through: it printed "updated agent us-1" and the
    /// agent's pushes were accepted again). A new key, or --unrevoke, brings it back, saying so.
    @Test func aRevokedAgentComesBackOnlyWithANewKeyOrUnrevoke() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let db = dir.file("c.db")
        let old = AgentSigningKey().publicKey.base64
        let new = AgentSigningKey().publicKey.base64
        func add(_ key: String, _ extra: [String] = []) async throws -> (status: Int32, output: String) {
            try await Self.run("sonde-collector", ["agents", "add", "--db", db, "--create", "--id", "us-1", "--region", "us", "--public-key", key] + extra, [:])
        }
        #expect(try await add(old).status == 0)
        #expect(try await Self.run("sonde-collector", ["agents", "revoke", "--db", db, "--id", "us-1"], [:]).status == 0)
        let refused = try await add(old)
        #expect(refused.status == 1, "\(refused.output)")
        #expect(refused.output.contains("was revoked with this key"), "\(refused.output)")
        var listed = try await Self.run("sonde-collector", ["agents", "list", "--db", db, "--json"], [:])
        #expect(listed.output.contains(#""revoked" : true"#) || listed.output.contains(#""revoked":true"#), "\(listed.output)")
        let rekeyed = try await add(new)
        #expect(rekeyed.status == 0 && rekeyed.output.contains("re-enabled with a new key"), "\(rekeyed.output)")
        #expect(try await Self.run("sonde-collector", ["agents", "revoke", "--db", db, "--id", "us-1"], [:]).status == 0)
        let unrevoked = try await add(new, ["--unrevoke"])
        #expect(unrevoked.status == 0 && unrevoked.output.contains("re-enabled (it was revoked)"), "\(unrevoked.output)")
        listed = try await Self.run("sonde-collector", ["agents", "list", "--db", db, "--json"], [:])
        #expect(listed.output.contains(#""revoked" : false"#) || listed.output.contains(#""revoked":false"#), "\(listed.output)")
    }

    /// With PostgreSQL the admin commands reach the same database as every collector: by URL
    /// (the password from PGPASSWORD, out of `ps`) or through the collector's own config file.
    /// A running collector takes the enrolment and the revocation on the next push.
    @Test func agentsCommandsWorkOnPostgreSQL() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let pg = try await PostgresServer.shared()
        let url = try pg.createDatabase()
        let withoutPassword = url.replacingOccurrences(of: "sonde:\(pg.password)@", with: "sonde@")
        #expect(withoutPassword != url)
        let agent = TestAgent(id: "eu-1", region: "eu")
        let key = agent.key.publicKey.base64

        let noPassword = try await Self.run(
            "sonde-collector", ["agents", "add", "--db", withoutPassword, "--id", "eu-1", "--region", "eu", "--public-key", key], ["PGPASSWORD": ""])
        #expect(noPassword.status != 0, "\(noPassword.output)")
        let added = try await Self.run(
            "sonde-collector", ["agents", "add", "--db", withoutPassword, "--id", "eu-1", "--region", "eu", "--public-key", key], ["PGPASSWORD": pg.password])
        #expect(added.status == 0, "\(added.output)")
        #expect(added.output.contains("enrolled agent eu-1"))

        var config = testConfig(dir: dir, agents: [])
        config.databasePath = url
        let configFile = dir.file("collector.yaml")
        try "database: \"\(url)\"\nlisten: {plain_http: true}\n".write(toFile: configFile, atomically: true, encoding: .utf8)
        try await withCollector(config) { collector in
            #expect(try await agent.push(agent.batch([agent.result()]), to: collector).status == 200, "enrolled by the command, not the config")
            try await waitUntil("eu-1 up on /metrics") { try await get(collector, "/metrics").bodyText.contains(#"sonde_agent_up{agent="eu-1",region="eu"} 1"#) }
            let revoked = try await Self.run("sonde-collector", ["agents", "revoke", "--config", configFile, "--id", "eu-1"], [:])
            #expect(revoked.status == 0, "\(revoked.output)")
            #expect(revoked.output.contains("revoked agent eu-1"))
            let refused = try await agent.push(agent.batch([agent.result()]), to: collector)
            #expect(refused.status == 401, "\(refused.bodyText)")
            #expect(refused.bodyText.contains("unauthorized"))
            // Retired on purpose: no sonde_agent_up series (a 0 would page SondeAgentDown forever).
            try await waitUntil("the revoked agent's sonde_agent_up gone") {
                !(try await get(collector, "/metrics").bodyText.contains(#"sonde_agent_up{agent="eu-1""#))
            }
        }
        let listed = try await Self.run("sonde-collector", ["agents", "list", "--config", configFile, "--json"], [:])
        #expect(listed.status == 0, "\(listed.output)")
        #expect(listed.output.contains(#""revoked" : true"#) || listed.output.contains(#""revoked":true"#), "\(listed.output)")
        let unknown = try await Self.run("sonde-collector", ["agents", "revoke", "--config", configFile, "--id", "nobody"], [:])
        #expect(unknown.status == 1)
        #expect(unknown.output.contains("agents list --config \(configFile)"), "\(unknown.output)")
        let both = try await Self.run("sonde-collector", ["agents", "list", "--config", configFile, "--db", url], [:])
        #expect(both.status != 0 && both.output.contains("either --db or --config"), "\(both.output)")
    }

    static func verdict(_ collector: RunningCollector) async throws -> ComponentStatus? {
        try decode(StatusResponse.self, try await get(collector, "/v1/status")).components.first { $0.component == "login" }?.status
    }

    static func sonde(_ arguments: [String], _ environment: [String: String]) async throws -> (status: Int32, output: String) {
        try await run("sonde", arguments, environment)
    }

    static func run(_ product: String, _ arguments: [String], _ environment: [String: String]) async throws -> (status: Int32, output: String) {
        let process = try ChildProcess(product, arguments, environment: environment)
        let status = try await process.waitForExit(timeout: .seconds(30))
        try? await waitUntil("\(product) output", timeout: .seconds(2)) { !process.allOutput.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
        return (status, process.allOutput)
    }
}
