@testable import Collector
import CollectorAPI
import CollectorStore
import Correlation
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// The collector's trust boundary: tokens and roles on every endpoint, TLS (server and mutual),
/// agent identity, limits, dead letters, escaping and durability, against a real server.
@Suite("Security", .serialized)
struct SecurityTests {
    /// Every endpoint: no token, a wrong token and a read token where admin is needed are refused
    /// (401/403, counted in metrics); the right token gets through. `/healthz` needs none.
    @Test func everyEndpointNeedsTheRightToken() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            #expect(try await agent.push(agent.batch([agent.result()]), to: collector).status == 200)
            // An event to re-drive: a dead letter made directly in storage.
            let event = OutboxEvent(id: "evt-1", type: "alert.test", occurredAt: Date(), payload: Data("{}".utf8))
            try await collector.store.commit(EvaluationCommit(events: [event], deliveries: [DeliveryKey(eventID: "evt-1", target: "ops")]))
            try await collector.store.markDead(eventID: "evt-1", target: "ops", attempts: 1, error: "HTTP 400", at: Date())

            struct Endpoint {
                var method: String
                var path: String
                var role: APIToken.Role
                var ok: Int
            }
            let endpoints = [
                Endpoint(method: "GET", path: "/", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/internal", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/api/v2/summary.json", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/metrics", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/v1/status", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/v1/results", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/v1/incidents", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/v1/incidents/nope", role: .read, ok: 404),
                Endpoint(method: "GET", path: "/v1/agents", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/v1/alerts/dead-letters", role: .read, ok: 200),
                Endpoint(method: "GET", path: "/v1/batches", role: .admin, ok: 200),
                Endpoint(method: "POST", path: "/v1/alerts/test", role: .admin, ok: 202),
                Endpoint(method: "POST", path: "/v1/alerts/dead-letters/evt-1/redrive", role: .admin, ok: 200),
            ]
            func call(_ endpoint: Endpoint, _ token: String?) async throws -> HTTPResponse {
                endpoint.method == "GET" ? try await get(collector, endpoint.path, token: token) : try await post(collector, endpoint.path, token: token)
            }
            var refusals = 0
            for endpoint in endpoints {
                let none = try await call(endpoint, nil)
                #expect(none.status == 401, "\(endpoint.path) without a token: \(none.status)")
                #expect(none.headers.value(for: "WWW-Authenticate")?.hasPrefix("Bearer") == true)
                #expect(try decode(APIErrorBody.self, none).error.code == "missing_token")
                let wrong = try await call(endpoint, "not-a-token-\(UUID().uuidString)")
                #expect(wrong.status == 401, "\(endpoint.path) with a wrong token: \(wrong.status)")
                #expect(try decode(APIErrorBody.self, wrong).error.code == "bad_token")
                refusals += 2
                if endpoint.role == .admin {
                    let read = try await call(endpoint, TestTokens.read)
                    #expect(read.status == 403, "\(endpoint.path) with a read token: \(read.status)")
                    #expect(try decode(APIErrorBody.self, read).error.code == "forbidden_role")
                    refusals += 1
                }
                let right = try await call(endpoint, endpoint.role == .admin ? TestTokens.admin : TestTokens.read)
                #expect(right.status == endpoint.ok, "\(endpoint.path) with the right token: \(right.status) \(right.bodyText.prefix(200))")
            }
            // A token in another scheme is no token.
            let basic = try await CurlHTTPClient.shared.perform(
                HTTPRequest(url: collector.baseURL + "/v1/status", headers: [HTTPHeader("Authorization", "Basic \(TestTokens.admin)")], timeout: .seconds(10)))
            #expect(basic.status == 401)
            // Public: health, for load balancers, saying nothing but ok.
            let health = try await get(collector, "/healthz", token: nil)
            #expect(health.status == 200)
            #expect(health.bodyText == #"{"status":"ok"}"#)
            // Ingest ignores tokens: a push needs the agent's signature, an admin token is not one.
            let unsigned = try await CurlHTTPClient.shared.perform(
                HTTPRequest(
                    method: "POST", url: collector.baseURL + PushProtocol.path,
                    headers: TestTokens.headers(TestTokens.admin) + [HTTPHeader("Content-Type", "application/json"), HTTPHeader(PushProtocol.agentHeader, agent.id)],
                    body: try SondeJSON.encode(agent.batch([agent.result()])), timeout: .seconds(10)))
            #expect(unsigned.status == 401)
            let metrics = try await get(collector, "/metrics", token: TestTokens.read).bodyText
            let counted = ["missing_token", "bad_token", "forbidden_role"].map { reason in
                Self.sample(metrics, "sonde_refusals_total{surface=\"api\",reason=\"\(reason)\"}") ?? 0
            }.reduce(0, +)
            #expect(Int(counted) == refusals + 1)
            #expect(Self.sample(metrics, #"sonde_refusals_total{surface="ingest",reason="bad_signature"}"#) == 1)
        }
    }

    /// `limits.max_connections`: at the cap the collector stops accepting, so idle connections
    /// held by anyone cannot take it to the open-file limit (where NIO's accept loop spun a core
    /// and nobody was answered); a waiting request is answered as soon as one closes, and
    /// /metrics shows the counts.
    @Test func atTheConnectionLimitNewConnectionsWaitUntilOneCloses() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var config = testConfig(dir: dir, agents: [])
        config.limits.maxConnections = 4
        try await withCollector(config) { collector in
            let counts = try #require(collector.built.metrics.connections)
            #expect(counts.limit == 4)
            var idle: [Int32] = []
            defer { for fd in idle { close(fd) } }
            for _ in 0..<4 { idle.append(try connectLoopbackSocket(port: collector.port, receiveTimeout: .seconds(1))) }
            try await waitUntil("4 connections accepted", timeout: .seconds(5)) { counts.open.load(ordering: .relaxed) == 4 }
            final class Flag: Sendable { let set = Atomic<Bool>(false) }
            let answered = Flag()
            let waiting = Task {
                defer { answered.set.store(true, ordering: .relaxed) }
                return try await get(collector, "/healthz", token: nil)
            }
            // Not accepted while the 4 are open (the kernel holds it in the backlog).
            try await Task.sleep(for: .milliseconds(500))
            let answeredEarly = answered.set.load(ordering: .relaxed)
            let openWhileWaiting = counts.open.load(ordering: .relaxed)
            #expect(!answeredEarly)
            #expect(openWhileWaiting == 4)
            close(idle.removeLast())
            let response = try await waiting.value
            #expect(response.status == 200)
            let pauses = counts.pauses.load(ordering: .relaxed)
            #expect(pauses >= 1)
            for fd in idle { close(fd) }
            idle = []
            try await waitUntil("the idle connections closed", timeout: .seconds(5)) { counts.open.load(ordering: .relaxed) == 0 }
            let metrics = try await get(collector, "/metrics").bodyText
            #expect(metrics.contains("sonde_http_connections_limit 4"), "\(metrics.prefix(300))")
            #expect(metrics.contains("sonde_http_connections 1"))
            // Reached when the 4 idle ones were open, and again when the waiting one took the freed place.
            #expect(metrics.contains("sonde_http_connection_limit_reached_total 2"), "\(metrics.split(separator: "\n").filter { $0.contains("limit_reached") })")
        }
    }

    /// `status_page.public` and `metrics.public`: no token needed, and the public page shows no
    /// agent names, no engine messages and no links to the API.
    @Test func publicStatusPageHidesAgentsAndInternalLinks() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "secret-agent-eu-7", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.statusPagePublic = true
        config.metricsPublic = true
        config.components = ["files"]  // one agent: only a declared component shows publicly
        try await withCollector(config) { collector in
            #expect(try await agent.push(agent.batch([agent.result(component: "files", outcome: .failed)]), to: collector).status == 200)
            try await waitUntil("a verdict for files") {
                try decode(StatusResponse.self, try await get(collector, "/v1/status")).components.contains { $0.component == "files" }
            }
            let page = try await get(collector, "/", token: nil)
            #expect(page.status == 200)
            #expect(page.bodyText.contains("files"))
            #expect(!page.bodyText.contains(agent.id), "a public page never names agents")
            #expect(!page.bodyText.contains("/v1/"), "nor links to the API")
            #expect(try await get(collector, "/metrics", token: nil).status == 200)
            // The JSON API stays protected.
            #expect(try await get(collector, "/v1/status", token: nil).status == 401)
            // With a token the internal view has the agents.
            #expect(try await get(collector, "/internal", token: nil).status == 401)
            #expect(try await get(collector, "/internal", token: TestTokens.read).bodyText.contains(agent.id))
        }
    }

    /// With `metrics.public`, anonymous scrapes share one making a second (each reads storage, and
    /// nobody may keep the collector rendering); a read token's scrape is made for it.
    @Test func anonymousScrapesShareOneMakingASecond() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.metricsPublic = true
        try await withCollector(config) { collector in
            func ingested(_ text: String) -> String? {
                text.split(separator: "\n").first { $0.hasPrefix("sonde_ingest_results_total") }.map(String.init)
            }
            // A push between two anonymous scrapes within the second: the second shows what the
            // first did, a token's scrape shows the push. (Tried again if one try took too long.)
            var compared = false
            for attempt in 0..<5 where !compared {
                // A try after a slow one starts once anonymous scrapes show the last push (the
                // shared making it would reuse is then a fresh one).
                if attempt > 0 {
                    let fresh = ingested(try await get(collector, "/metrics", token: TestTokens.read).bodyText)
                    try await waitUntil("the shared making renewed") { ingested(try await get(collector, "/metrics", token: nil).bodyText) == fresh }
                }
                let start = ContinuousClock.now
                let first = try await get(collector, "/metrics", token: nil)
                #expect(first.status == 200)
                #expect(try await agent.push(agent.batch([agent.result()]), to: collector).status == 200)
                let tokened = try await get(collector, "/metrics", token: TestTokens.read).bodyText
                let second = try await get(collector, "/metrics", token: nil).bodyText
                // A token that is not one the collector knows is anonymous here: no error, no fresh making.
                let badToken = try await get(collector, "/metrics", token: "not-a-token")
                guard ContinuousClock.now - start < .milliseconds(900) else { continue }
                compared = true
                #expect(ingested(second) == ingested(first.bodyText), "anonymous scrapes within a second share one making")
                #expect(badToken.status == 200 && ingested(badToken.bodyText) == ingested(first.bodyText))
                #expect(ingested(tokened) != ingested(first.bodyText), "a token's scrape is fresh: \(ingested(tokened) ?? "none")")
            }
            #expect(compared, "no try fitted in the second")
            // A second later anonymous scrapes show the push too.
            let fresh = try #require(ingested(try await get(collector, "/metrics", token: TestTokens.read).bodyText))
            try await waitUntil("anonymous scrapes catch up") { ingested(try await get(collector, "/metrics", token: nil).bodyText) == fresh }
        }
    }

    /// HTTPS with certificates made now: the right CA completes the handshake, an unrelated CA
    /// does not; with `client_ca`, a client without a certificate is refused.
    /// An agent pushing to a collector whose certificate comes from a private CA, without
    /// `collector.ca_file`: its warning names the fix, as its 401 message does (first-use review).
    @Test func anAgentWithoutTheCollectorsCASaysWhatToSet() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let certs = try TestCertificates(in: dir.file("tls"))
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.plainHTTP = false
        config.tls = TLSFiles(cert: certs.serverCert, key: certs.serverKey)
        try await withCollector(config, caFile: certs.caCert) { collector in
            try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
            try "name: p\ncomponent: api\ninterval: 1s\ntimeout: 1s\nsteps:\n  - name: get\n    request: {url: \"http://127.0.0.1:1/\"}\n"
                .write(toFile: dir.file("probes/p.yaml"), atomically: true, encoding: .utf8)
            let keygen = try ChildProcess("sonde-agent", ["keygen", "--out", dir.file("agent.key")])
            #expect(try await keygen.waitForExit() == 0)
            try "agent: {id: eu-9, region: eu}\ncollector: {url: \"\(collector.baseURL)\", key: agent.key}\nspool: {path: spool}\nprobes: [probes]\n"
                .write(toFile: dir.file("agent.yaml"), atomically: true, encoding: .utf8)
            let running = try ChildProcess("sonde-agent", ["run", "--config", dir.file("agent.yaml")])
            defer { running.signal(SIGKILL) }
            let line = try await running.waitForLine(timeout: .seconds(30), stderr: true) { $0.contains("push failed") }
            #expect(line.contains("tls:") && line.contains("set collector.ca_file to that CA's PEM file"), "\(line)")
        }
    }

    @Test func httpsHandshakeWithTheRightCAOnly() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let certs = try TestCertificates(in: dir.file("tls"))
        var config = testConfig(dir: dir, agents: [])
        config.plainHTTP = false
        config.tls = TLSFiles(cert: certs.serverCert, key: certs.serverKey)
        try await withCollector(config, caFile: certs.caCert) { collector in
            #expect(collector.baseURL.hasPrefix("https://"))
            let good = try await get(collector, "/v1/status")
            #expect(good.status == 200)
            await #expect(throws: HTTPTransferError.self) {
                try await CurlHTTPClient.shared.perform(HTTPRequest(url: collector.baseURL + "/healthz", timeout: .seconds(10), caFile: certs.otherCACert))
            }
            do {
                _ = try await CurlHTTPClient.shared.perform(HTTPRequest(url: collector.baseURL + "/healthz", timeout: .seconds(10), caFile: certs.otherCACert))
            } catch let error as HTTPTransferError {
                #expect(error.kind == .tls, "\(error)")
            }
            // Plain HTTP to the TLS port gets nothing useful.
            let plain = try? await CurlHTTPClient.shared.perform(HTTPRequest(url: "http://127.0.0.1:\(collector.port)/healthz", timeout: .seconds(5)))
            #expect(plain == nil || plain?.status != 200)
        }

        // Mutual TLS: the CA of the client certificates is required.
        config.tls = TLSFiles(cert: certs.serverCert, key: certs.serverKey, clientCA: certs.caCert)
        try await withCollector(config, caFile: certs.caCert) { collector in
            await #expect(throws: HTTPTransferError.self) {
                let response = try await CurlHTTPClient.shared.perform(HTTPRequest(url: collector.baseURL + "/healthz", timeout: .seconds(10), caFile: certs.caCert))
                // TLS 1.3 can report the refusal only at the first read; anything but a 200 is a refusal.
                if response.status == 200 { return }
                throw HTTPTransferError(kind: .tls, curlCode: 0, message: "refused with \(response.status)")
            }
            var request = HTTPRequest(url: collector.baseURL + "/healthz", timeout: .seconds(10), caFile: certs.caCert)
            request.clientCertificate = (certs.clientCert, certs.clientKey)
            let response = try await CurlHTTPClient.shared.perform(request)
            #expect(response.status == 200)
        }
    }

    /// An agent whose clock is behind by up to the accepted skew (300 s) must still verify the
    /// collector's certificate: a certificate valid only from the moment it was made is "not yet
    /// valid" to it, every push fails, and the agent looks silent (the scenario clock-4min-behind).
    /// The test certificates are backdated as public CAs do; `openssl verify -attime` judges them
    /// at the behind clock's time.
    @Test func testCertificatesVerifyOnAClockFiveMinutesBehind() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let certs = try TestCertificates(in: dir.file("tls"))
        let behind = Int(Date().timeIntervalSince1970) - Int(PushProtocol.defaultAllowedSkew)
        for cert in [certs.serverCert, certs.clientCert] {
            let process = Process()
            process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
            process.arguments = ["verify", "-CAfile", certs.caCert, "-attime", "\(behind)", cert]
            let output = Pipe()
            process.standardOutput = output
            process.standardError = output
            try process.run()
            let said = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
            process.waitUntilExit()
            #expect(process.terminationStatus == 0, "\(cert): \(said)")
        }
    }

    /// A real `sonde-collector serve`: SIGHUP swaps in a rotated certificate for new handshakes,
    /// on the same listener, and the process lives on; the `sonde` CLI verifies with --ca-file
    /// and sends its token from a file.
    @Test func sighupReloadsTheCertificate() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let certs = try TestCertificates(in: dir.file("tls"))
        let tokenFile = dir.file("token")
        try Data((TestTokens.read + "\n").utf8).write(to: URL(fileURLWithPath: tokenFile))
        let configPath = dir.file("collector.yaml")
        let digest = tokenDigestHex(TestTokens.read)
        try Data(
            """
            listen: { host: 127.0.0.1, port: 0, tls: { cert: \(certs.serverCert), key: \(certs.serverKey) } }
            database: collector.db
            tokens: [{ name: grafana, role: read, sha256: \(digest) }]
            """.utf8
        ).write(to: URL(fileURLWithPath: configPath))
        let child = try ChildProcess("sonde-collector", ["serve", "--config", configPath])
        defer { Task { await child.stop() } }
        let line = try await child.waitForLine(timeout: .seconds(60), stderr: true) { $0.contains("Collector listening") }
        #expect(line.contains("http.scheme=https"))
        let port = try #require(line.range(of: #"http\.port=(\d+)"#, options: .regularExpression).flatMap { Int(line[$0].dropFirst("http.port=".count)) })
        let url = "https://localhost:\(port)/healthz"
        func handshake(_ ca: String) async -> Bool {
            (try? await CurlHTTPClient.shared.perform(HTTPRequest(url: url, timeout: .seconds(5), caFile: ca)).status) == 200
        }
        #expect(await handshake(certs.caCert))
        #expect(!(await handshake(certs.otherCACert)))

        let cli = try ChildProcess(
            "sonde", ["status", "--json", "--collector", "https://localhost:\(port)", "--ca-file", certs.caCert, "--token-file", tokenFile], environment: ["SONDE_TOKEN": ""])
        #expect(try await cli.waitForExit(timeout: .seconds(30)) == 0, "\(cli.allOutput)")
        // A token file others can read is said (the file above is 0644), not refused.
        try? await waitUntil("stderr", timeout: .seconds(2)) { !cli.stderrLines.isEmpty }
        #expect(cli.stderrLines.contains { $0.contains("can be read by other users") && $0.contains("chmod 600") }, "\(cli.allOutput)")
        chmod(tokenFile, 0o600)
        let private600 = try ChildProcess(
            "sonde", ["status", "--json", "--collector", "https://localhost:\(port)", "--ca-file", certs.caCert, "--token-file", tokenFile], environment: ["SONDE_TOKEN": ""])
        #expect(try await private600.waitForExit(timeout: .seconds(30)) == 0, "\(private600.allOutput)")
        #expect(!private600.allOutput.contains("can be read by other users"), "\(private600.allOutput)")
        let untrusted = try ChildProcess("sonde", ["status", "--collector", "https://localhost:\(port)", "--token-file", tokenFile])
        #expect(try await untrusted.waitForExit(timeout: .seconds(30)) == 2)
        try? await waitUntil("stderr", timeout: .seconds(2)) { !untrusted.stderrLines.isEmpty }
        #expect(untrusted.allOutput.contains("--ca-file"))

        try certs.rotateServerToOtherCA()
        child.signal(SIGHUP)
        try await waitUntil("the rotated certificate to be served", timeout: .seconds(20)) { await handshake(certs.otherCACert) }
        #expect(!(await handshake(certs.caCert)))
        #expect(child.isRunning, "SIGHUP must not stop the collector")
        _ = try await child.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("TLS certificate reloaded") }

        // A broken file on reload keeps the current certificate.
        try Data("not a certificate".utf8).write(to: URL(fileURLWithPath: certs.serverCert))
        child.signal(SIGHUP)
        _ = try await child.waitForLine(timeout: .seconds(10), stderr: true) { $0.contains("TLS reload failed") }
        #expect(await handshake(certs.otherCACert))
        #expect(child.isRunning)
    }

    /// Neither TLS nor `plain_http: true`: the collector refuses to start and says what to set;
    /// `plain_http` starts with a warning.
    @Test func refusesToStartWithoutASayOnTransport() async throws {
        #expect(throws: ConfigError.self) { try CollectorConfig.parse(yaml: "listen: { port: 0 }", file: "c.yaml") }
        do { _ = try CollectorConfig.parse(yaml: "database: x.db", file: "c.yaml") } catch let error as ConfigError {
            #expect(error.field == "listen")
            #expect(error.message.contains("plain_http"))
        }
        let config = try CollectorConfig.parse(
            yaml: "listen: { port: 0, plain_http: true }\ntokens: [{ name: ops, role: admin, sha256: \(String(repeating: "ab", count: 32)) }]", file: "c.yaml")
        #expect(config.plainHTTP && config.tokens.count == 1 && config.tokens[0].role == .admin)
        #expect(throws: ConfigError.self) { try CollectorConfig.parse(yaml: "listen: { plain_http: true }\ntokens: [{ name: a, role: admin, sha256: s3cret }]", file: "c.yaml") }

        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        try Data("listen: { host: 127.0.0.1, port: 0 }\ndatabase: c.db\n".utf8).write(to: URL(fileURLWithPath: dir.file("c.yaml")))
        let refused = try ChildProcess("sonde-collector", ["serve", "--config", dir.file("c.yaml")])
        #expect(try await refused.waitForExit(timeout: .seconds(30)) == 2)
        try? await waitUntil("stderr", timeout: .seconds(2)) { !refused.stderrLines.isEmpty }
        #expect(refused.allOutput.contains("listen.plain_http: true"))
        #expect(!FileManager.default.fileExists(atPath: dir.file("c.db")), "nothing is created before the config is accepted")

        try Data("listen: { host: 127.0.0.1, port: 0, plain_http: true }\ndatabase: c.db\n".utf8).write(to: URL(fileURLWithPath: dir.file("c.yaml")))
        let plain = try ChildProcess("sonde-collector", ["serve", "--config", dir.file("c.yaml")])
        _ = try await plain.waitForLine(timeout: .seconds(60), stderr: true) { $0.contains("Collector listening") }
        #expect(plain.allOutput.contains("Serving plain HTTP"))
        // The database and its WAL are owner-only.
        for file in ["c.db", "c.db-wal", "c.db-shm"] where FileManager.default.fileExists(atPath: dir.file(file)) {
            let mode = try #require(try FileManager.default.attributesOfItem(atPath: dir.file(file))[.posixPermissions] as? Int)
            #expect(mode & 0o077 == 0, "\(file) is \(String(mode, radix: 8))")
        }
        #expect(FileManager.default.fileExists(atPath: dir.file("c.db-wal")))
        await plain.stop()
    }

    /// A fake or broken agent: another region, another agent's id, a key enrolled twice, a
    /// cardinality flood and a push flood are refused (naming the field or the limit) or bounded.
    @Test func fakeAgentAttemptsAreRefused() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let eu = TestAgent(id: "eu-1", region: "eu")
        let us = TestAgent(id: "us-1", region: "us")
        var config = testConfig(dir: dir, agents: [eu, us])
        config.limits.maxComponentsPerAgent = 5
        config.limits.maxProbesPerAgent = 8
        try await withCollector(config) { collector in
            // Another region.
            let region = try await eu.push(
                try SondeJSON.encode(eu.batch([ProbeResult(probe: "p", component: "c", agent: "eu-1", region: "zz-region", startedAt: Date(), durationMs: 1, outcome: .ok, steps: [])])),
                to: collector)
            #expect(region.status == 422)
            #expect(try decode(APIErrorBody.self, region).error.code == "region_mismatch")
            #expect(region.bodyText.contains("results[0].region"))
            // Another agent's id, inside a batch this agent signed.
            let other = try await eu.push(try SondeJSON.encode(eu.batch([us.result()])), to: collector)
            #expect((400..<500).contains(other.status))
            #expect(other.bodyText.contains("results[0].agent"))
            // Another agent's id in the header, signed with this agent's key.
            let spoof = try await eu.push(try SondeJSON.encode(us.batch([us.result()])), to: collector, headerAgent: us.id)
            #expect(spoof.status == 401)
            #expect(try await collector.store.resultCount() == 0)

            // One key, one agent: not under a second id, not even after revoking the first.
            await #expect(throws: DuplicateKeyError.self) {
                try await collector.store.upsertAgent(AgentRecord(id: "eu-twin", region: "eu", publicKey: eu.key.publicKey.base64))
            }
            #expect(try await collector.store.revokeAgent(id: eu.id))
            await #expect(throws: DuplicateKeyError.self) {
                try await collector.store.upsertAgent(AgentRecord(id: "eu-twin", region: "us", publicKey: eu.key.publicKey.base64))
            }
            // Revoked: the same 401 as an unknown agent (the reason only in the log and metrics).
            #expect(try await eu.push(eu.batch([eu.result()]), to: collector).status == 401)

            // Cardinality: us-1 may report 5 components; a sixth new one refuses the batch whole.
            let five = (0..<5).map { us.result(probe: "p\($0)", component: "c\($0)") }
            #expect(try await us.push(us.batch(five), to: collector).status == 200)
            let flood = try await us.push(us.batch((5..<50).map { us.result(probe: "p0", component: "c\($0)") }), to: collector)
            #expect(flood.status == 422)
            #expect(try decode(APIErrorBody.self, flood).error.code == "too_many_components")
            #expect(flood.bodyText.contains("limits.max_components_per_agent"))
            let probes = try await us.push(us.batch((0..<9).map { us.result(probe: "q\($0)", component: "c0") }), to: collector)
            #expect(try decode(APIErrorBody.self, probes).error.code == "too_many_probes")
            // Known names still pass.
            #expect(try await us.push(us.batch([us.result(probe: "p1", component: "c1")]), to: collector).status == 200)
            #expect(try await collector.store.resultCount() == 6)
            let metrics = try await get(collector, "/metrics").bodyText
            #expect(Self.sample(metrics, #"sonde_refusals_total{surface="ingest",reason="too_many_components"}"#) == 1)
            #expect(Self.sample(metrics, #"sonde_refusals_total{surface="ingest",reason="region_mismatch"}"#) == 1)
            #expect(Self.sample(metrics, #"sonde_refusals_total{surface="ingest",reason="agent_revoked"}"#) == 1)
        }
        // A config that lists one key twice does not load.
        let key = eu.key.publicKey.base64
        do {
            _ = try CollectorConfig.parse(
                yaml: "listen: { plain_http: true }\nagents: [{ id: a, region: eu, public_key: \"\(key)\" }, { id: b, region: us, public_key: \"\(key)\" }]", file: "c.yaml")
            Issue.record("a key listed twice must not load")
        } catch let error as ConfigError {
            #expect(error.field == "agents[1].public_key")
        }
    }

    /// Pushes past `limits.pushes_per_minute` get 429 with Retry-After; so do test alerts past
    /// `limits.test_alerts_per_minute`.
    @Test func rateLimitsAnswer429WithRetryAfter() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.limits.pushesPerMinute = 6
        config.limits.pushBurst = 3
        config.limits.testAlertsPerMinute = 2
        try await withCollector(config) { collector in
            var statuses: [Int] = []
            var retryAfter: String?
            for _ in 0..<5 {
                let response = try await agent.push(agent.batch([agent.result()]), to: collector)
                statuses.append(response.status)
                if response.status == 429 { retryAfter = response.headers.value(for: "Retry-After") }
            }
            #expect(statuses.prefix(3) == [200, 200, 200])
            #expect(statuses.suffix(2) == [429, 429])
            let seconds = try #require(retryAfter.flatMap(Int.init))
            #expect((1...10).contains(seconds))

            #expect(try await post(collector, "/v1/alerts/test").status == 202)
            #expect(try await post(collector, "/v1/alerts/test").status == 202)
            let third = try await post(collector, "/v1/alerts/test")
            #expect(third.status == 429)
            #expect(third.headers.value(for: "Retry-After").flatMap(Int.init) != nil)
            let metrics = try await get(collector, "/metrics").bodyText
            #expect(Self.sample(metrics, #"sonde_refusals_total{surface="ingest",reason="rate_limited"}"#) == 2)
            #expect(Self.sample(metrics, #"sonde_refusals_total{surface="api",reason="rate_limited"}"#) == 1)
        }
    }

    /// At the caps (agents × probes × components), `/metrics` and the status page stay bounded:
    /// a flood beyond them adds nothing, and /metrics renders in under a second.
    @Test func metricsStayBoundedAtTheCaps() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = (0..<10).map { TestAgent(id: "agent-\($0)", region: ["eu", "us"][$0 % 2]) }
        var config = testConfig(dir: dir, agents: agents)
        config.limits.maxProbesPerAgent = 200
        config.limits.maxComponentsPerAgent = 50
        try await withCollector(config) { collector in
            for agent in agents {
                let full = (0..<200).map { agent.result(probe: "probe-\($0)", component: "component-\($0 % 50)", outcome: $0 % 7 == 0 ? .failed : .ok) }
                #expect(try await agent.push(agent.batch(full), to: collector).status == 200)
                let more = try await agent.push(agent.batch((200..<400).map { agent.result(probe: "probe-\($0)", component: "component-\($0)") }), to: collector)
                #expect(more.status == 422)
            }
            let start = ContinuousClock.now
            let metrics = try await get(collector, "/metrics")
            let elapsed = start.duration(to: .now)
            #expect(metrics.status == 200)
            #expect(elapsed < .seconds(1), "/metrics took \(elapsed) at the caps")
            let series = metrics.bodyText.split(separator: "\n").filter { $0.hasPrefix("probe_success{") }.count
            #expect(series == 10 * 200)
            let page = try await get(collector, "/")
            #expect(page.status == 200)
            #expect(page.body.count < 4 << 20, "status page \(page.body.count) bytes")
        }
    }

    /// A target that refuses one event with a 400 and a target that refuses everything: the
    /// refused events go to the dead-letter table at once, later events still reach the first
    /// target and every event reaches a healthy one; `sonde alert dead-letters` and /metrics show
    /// them, and a re-drive delivers.
    @Test func jammedWebhookTargetDeadLettersAndLaterEventsArrive() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let first = SharedList<String>([])
        let picky = SharedList<String>([])
        let healthy = SharedList<String>([])
        let pickyServer = try LoopbackHTTPServer { request in
            let id = request.header("Sonde-Event-Id") ?? ""
            if first.value.isEmpty { first.append(id) }
            let refused = first.value.first == id && !picky.value.contains("redrive-ok")
            if refused { return .json(400, #"{"error":"invalid_blocks"}"#) }
            picky.append(id)
            return .json(200, "{}")
        }
        defer { pickyServer.stop() }
        let jammed = try LoopbackHTTPServer { _ in .json(400, #"{"error":"no"}"#) }
        defer { jammed.stop() }
        let healthyServer = try LoopbackHTTPServer { request in
            healthy.append(request.header("Sonde-Event-Id") ?? "")
            return .json(200, "{}")
        }
        defer { healthyServer.stop() }
        let config = testConfig(
            dir: dir, agents: [],
            webhooks: [
                WebhookTarget(name: "picky", url: pickyServer.baseURL + "/hook", secret: "a"),
                WebhookTarget(name: "jammed", url: jammed.baseURL + "/hook", secret: "b"),
                WebhookTarget(name: "healthy", url: healthyServer.baseURL + "/hook", secret: "c"),
            ])
        try await withCollector(config) { collector in
            var ids: [String] = []
            for _ in 0..<3 {
                let response = try await post(collector, "/v1/alerts/test")
                #expect(response.status == 202)
                ids.append(try decode(AlertTestResponse.self, response).eventID)
            }
            try await waitUntil("every event at the healthy target and the later ones at the picky one", timeout: .seconds(20)) {
                Set(healthy.value) == Set(ids) && Set(picky.value) == Set(ids.dropFirst())
            }
            try await waitUntil("four dead letters", timeout: .seconds(20)) { try await collector.store.deadLetterCount() == 4 }
            let letters = try decode(DeadLettersResponse.self, try await get(collector, "/v1/alerts/dead-letters", token: TestTokens.read)).deadLetters
            #expect(Set(letters.map(\.target)) == ["picky", "jammed"])
            #expect(letters.allSatisfy { $0.attempts == 1 && $0.lastError.contains("HTTP 400") })
            #expect(try await get(collector, "/metrics").bodyText.contains("sonde_webhook_dead_letters 4"))

            let list = try ChildProcess(
                "sonde", ["alert", "dead-letters", "--collector", collector.baseURL], environment: ["SONDE_TOKEN": TestTokens.read, "NO_COLOR": "1"])
            #expect(try await list.waitForExit(timeout: .seconds(30)) == 0, "\(list.allOutput)")
            try? await waitUntil("output", timeout: .seconds(2)) { list.stdoutLines.count >= 5 }
            #expect(list.stdoutLines.filter { $0.contains(ids[0]) }.count == 2)

            // Re-drive the picky target's dead letter once it accepts: it is delivered.
            picky.append("redrive-ok")
            let readOnly = try ChildProcess(
                "sonde", ["alert", "redrive", ids[0], "--target", "picky", "--collector", collector.baseURL], environment: ["SONDE_TOKEN": TestTokens.read])
            #expect(try await readOnly.waitForExit(timeout: .seconds(30)) == 2, "re-driving needs an admin token")
            let redrive = try ChildProcess(
                "sonde", ["alert", "redrive", ids[0], "--target", "picky", "--collector", collector.baseURL], environment: ["SONDE_TOKEN": TestTokens.admin])
            #expect(try await redrive.waitForExit(timeout: .seconds(30)) == 0, "\(redrive.allOutput)")
            try await waitUntil("the re-driven event at the picky target", timeout: .seconds(20)) { picky.value.contains(ids[0]) }
            #expect(try await collector.store.deadLetterCount() == 3)
        }
    }

    /// After `max_attempts` failures (here 3, against a 503), an event is dead-lettered too.
    @Test func outOfAttemptsGoesToDeadLetters() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let down = try LoopbackHTTPServer { _ in .json(503, "{}") }
        defer { down.stop() }
        var config = testConfig(dir: dir, agents: [], webhooks: [WebhookTarget(name: "down", url: down.baseURL + "/hook", secret: "x")])
        config.webhookMaxAttempts = 3
        try await withCollector(config) { collector in
            #expect(try await post(collector, "/v1/alerts/test").status == 202)
            try await waitUntil("a dead letter", timeout: .seconds(20)) { try await collector.store.deadLetterCount() == 1 }
            let letter = try #require(try await collector.store.deadLetters(limit: 10).first)
            #expect(letter.attempts == 3)
            #expect(letter.lastError.contains("max_attempts"))
            #expect(down.requests.count == 3)
        }
    }

    /// A person's update reaches Slack with its author and text, escaped like every other string:
    /// an admin's message cannot ping a channel or forge a link either.
    @Test func slackShowsAPersonsUpdateEscaped() throws {
        let payload = try SondeJSON.encode(
            AlertEvent(
                id: "e2", type: .incidentUpdated, occurredAt: Date(), component: "login", status: "identified", summary: "login: identified (alice): x",
                author: "alice", message: "Rolling back <!channel> <https://phish.example|here>"))
        let body = WebhookPayload.slack(OutboxEvent(id: "e2", type: "incident.updated", occurredAt: Date(), payload: payload), linkBase: "https://status.example")
        let text = String(decoding: body, as: UTF8.self)
        #expect(text.contains("*Update from alice:* Rolling back &lt;!channel&gt; &lt;https://phish.example|here&gt;"), "\(text)")
        #expect(!text.contains("<!channel>") && !text.contains("<https://phish"))
    }

    /// Slack refuses a section over 3,000 characters, and PagerDuty an event over 512 KB: a long
    /// person's update or a long timeline is cut to fit (never inside an escaped entity), so the
    /// event is delivered instead of dead-lettered (red team, fourth pass).
    @Test func longUpdatesFitSlackAndPagerDutyLimits() throws {
        let long = String(repeating: "a&b ", count: 2_000)
        let payload = try SondeJSON.encode(
            AlertEvent(
                id: "e3", type: .incidentUpdated, occurredAt: Date(), component: "login", status: "identified",
                agents: (0..<200).map { "agent-\($0)" }, summary: "login: identified (alice): x", author: "alice", message: long))
        let body = WebhookPayload.slack(OutboxEvent(id: "e3", type: "incident.updated", occurredAt: Date(), payload: payload), linkBase: "https://status.example")
        let message = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        let sections = (message["blocks"] as? [[String: Any]] ?? []).compactMap { ($0["text"] as? [String: Any])?["text"] as? String }
        #expect(sections.count == 2)
        for text in sections {
            #expect(text.count <= WebhookPayload.slackSectionCharacters, "\(text.count) characters")
        }
        let facts = try #require(sections.last)
        #expect(facts.hasSuffix("…") && facts.contains("*Update from alice:* a&amp;b"))
        #expect(!facts.dropLast().hasSuffix("&") && !facts.dropLast().hasSuffix("&amp"), "not cut inside an entity")

        // An incident with a long timeline of long entries: PagerDuty gets the newest entries only.
        let start = Date(timeIntervalSince1970: 1_800_000_000)
        var incident: [String: Any] = ["id": "inc-1", "severity": "major_outage"]
        incident["updates"] = (0..<300).map { i in
            ["time": RFC3339.string(from: start.addingTimeInterval(Double(i))), "message": "entry \(i) " + String(repeating: "x", count: 60_000)] as [String: Any]
        }
        let event: [String: Any] = ["summary": "login down", "component": "login", "incident": incident, "message": long]
        let eventBody = try JSONSerialization.data(withJSONObject: event)
        #expect(eventBody.count > 15_000_000)
        let paged = WebhookPayload.pagerDuty(
            OutboxEvent(id: "e4", type: "incident.updated", occurredAt: start, payload: eventBody), routingKey: "R", linkBase: "https://status.example")
        #expect(paged.count < 512 * 1024, "\(paged.count) bytes")
        let sent = try #require(try JSONSerialization.jsonObject(with: paged) as? [String: Any])
        let details = try #require((sent["payload"] as? [String: Any])?["custom_details"] as? [String: Any])
        let kept = try #require(details["incident"] as? [String: Any])
        #expect(kept["updates_omitted"] as? Int == 300)
        #expect((kept["updates"] as? [Any])?.isEmpty == true)
        // A short timeline keeps its newest entries.
        incident["updates"] = (0..<30).map { ["message": "entry \($0)"] as [String: Any] }
        let small = WebhookPayload.pagerDuty(
            OutboxEvent(id: "e5", type: "incident.updated", occurredAt: start, payload: try JSONSerialization.data(withJSONObject: ["incident": incident])),
            routingKey: "R", linkBase: "https://status.example")
        let smallDetails = try #require(((try JSONSerialization.jsonObject(with: small) as? [String: Any])?["payload"] as? [String: Any])?["custom_details"] as? [String: Any])
        let smallUpdates = try #require((smallDetails["incident"] as? [String: Any])?["updates"] as? [[String: Any]])
        #expect(smallUpdates.map { $0["message"] as? String } == (20..<30).map { "entry \($0)" })
    }

    /// A component name built to inject a link, a mention and a mrkdwn break into Slack: every
    /// agent-reported string is escaped, the link's anchor percent-encoded.
    @Test func slackMessagesEscapeHostileNames() throws {
        let hostile = "files|<https://phish.example/login|Click to re-authenticate> <!channel> & more\u{0007}"
        let payload = try SondeJSON.encode(
            AlertEvent(id: "e1", type: .incidentOpened, occurredAt: Date(), component: hostile, agents: [hostile], summary: "major outage of \(hostile)"))
        let body = WebhookPayload.slack(OutboxEvent(id: "e1", type: "incident.opened", occurredAt: Date(), payload: payload), linkBase: "https://status.example")
        let message = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
        var texts = [message["text"] as? String ?? ""]
        for block in message["blocks"] as? [[String: Any]] ?? [] {
            if let text = (block["text"] as? [String: Any])?["text"] as? String { texts.append(text) }
            for element in block["elements"] as? [[String: Any]] ?? [] { texts.append(element["text"] as? String ?? "") }
        }
        #expect(texts.count == 4)
        for text in texts {
            #expect(!text.contains("<https://phish"), "\(text)")
            #expect(!text.contains("<!channel>"), "\(text)")
            #expect(!text.contains("\u{0007}"))
        }
        #expect(texts[1].contains("&lt;https://phish.example/login|Click to re-authenticate&gt;"))
        #expect(texts[1].contains("&amp; more"))
        // The only link is ours, and its anchor cannot close it.
        let context = texts[3]
        let links = context.components(separatedBy: "<").dropFirst()
        #expect(links.count == 1)
        let link = try #require(links.first?.split(separator: "|").first)
        #expect(link.hasPrefix("https://status.example/#component-files%7C%3Chttps"))
        #expect(!link.contains(" ") && !link.contains(">"))
        // The JSON format escapes by encoding: the hostile name round-trips as data.
        let json = WebhookPayload.json(OutboxEvent(id: "e1", type: "incident.opened", occurredAt: Date(), payload: payload), linkBase: "https://status.example")
        let decoded = try SondeJSON.decode(AlertEvent.self, from: json)
        #expect(decoded.component == hostile)
    }

    /// The database on a real, tiny file system: while it is full, pushes get 503 and `/healthz`
    /// answers 503 (for the load balancer); once there is room again, 200.
    @Test(.enabled(if: SmallDisk.canMount, "needs root to mount a small tmpfs"))
    func healthzAnswers503OnAFullDisk() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let disk = try SmallDisk(kibibytes: 16384)
        defer { disk.unmount() }
        let agent = TestAgent(id: "eu-1", region: "eu")
        var config = testConfig(dir: dir, agents: [agent])
        config.databasePath = disk.path + "/collector.db"
        try await withCollector(config) { collector in
            #expect(try await get(collector, "/healthz", token: nil).status == 200)
            #expect(try await agent.push(agent.batch([agent.result()]), to: collector).status == 200)
            disk.fill()
            let big = (0..<400).map { agent.result(probe: "p\($0 % 100)", component: "c\($0 % 20)", startedAt: Date().addingTimeInterval(Double(-$0))) }
            let refused = try await agent.push(agent.batch(big), to: collector)
            #expect(refused.status == 503, "\(refused.bodyText)")
            let health = try await get(collector, "/healthz", token: nil)
            #expect(health.status == 503)
            #expect(try decode(APIErrorBody.self, health).error.code == "storage_unavailable")
            #expect(!health.bodyText.contains(disk.path), "the answer names no path")
            // Room again (a real amount: SQLite needs space to checkpoint its WAL into the file).
            disk.free()
            try await waitUntil("/healthz back to 200", timeout: .seconds(30)) { try await get(collector, "/healthz", token: nil).status == 200 }
            #expect(try await agent.push(agent.batch(big), to: collector).status == 200)
        }
    }

    /// Storage refusing pushes (here a full disk; a stalled or locked database alike) is the
    /// collector's downtime, not the agents': none of them is judged silent while their pushes
    /// are refused, as after a restart (found by the HA review, F1: a 25 s table lock paged
    /// `agent.silent` and `agent.recovered` for every agent).
    @Test(.enabled(if: SmallDisk.canMount, "needs root to mount a small tmpfs"))
    func refusedPushesMakeNoAgentSilent() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let disk = try SmallDisk(kibibytes: 16384)
        defer { disk.unmount() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "us-1", region: "us")]
        var config = testConfig(dir: dir, agents: agents)
        config.databasePath = disk.path + "/collector.db"
        config.correlation.silentMin = 1
        config.correlation.silentAfter = 1
        try await withCollector(config) { collector in
            try await reportHealthy(agents, to: collector)
            disk.fill()
            let big = (0..<400).map { agents[0].result(probe: "p\($0 % 100)", component: "c\($0 % 20)", startedAt: Date().addingTimeInterval(Double(-$0))) }
            let refused = try await agents[0].push(agents[0].batch(big), to: collector)
            #expect(refused.status == 503, "\(refused.bodyText)")
            // Well past the 1 s silence threshold, pushes still refused.
            let until = ContinuousClock.now + .seconds(4)
            while ContinuousClock.now < until {
                _ = try await agents[1].push(agents[1].batch(big.map { var r = $0; r.agent = "us-1"; r.region = "us"; return r }), to: collector)
                try await Task.sleep(for: .milliseconds(500))
            }
            let silent = try decode(AgentsResponse.self, try await get(collector, "/v1/agents")).agents.filter { $0.state == .silent }.map(\.id)
            #expect(silent.isEmpty, "silent: \(silent)")
            disk.free()
        }
    }

    static func sample(_ text: String, _ series: String) -> Double? {
        text.split(separator: "\n").first { $0.hasPrefix(series + " ") }.flatMap { Double($0.split(separator: " ").last ?? "") }
    }
}

/// A list shared with a server's handler thread.
final class SharedList<Value: Sendable>: Sendable {
    private let mutex: Mutex<[Value]>
    init(_ value: [Value]) { mutex = Mutex(value) }
    var value: [Value] { mutex.withLock { $0 } }
    func append(_ element: Value) { mutex.withLock { $0.append(element) } }
}
