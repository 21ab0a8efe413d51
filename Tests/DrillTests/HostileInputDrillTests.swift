import CollectorStore
import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// Drill 5: hostile input against a real collector process over HTTPS with API tokens on (raw
/// bytes go through a socat TLS relay). Every request gets a 4xx or a closed connection (never a
/// 5xx, never a crash), nothing is stored, memory stays bounded, slow clients are cut off by the
/// server's read time-outs, and the collector still serves afterwards.
@Suite(.serialized) struct HostileInputDrillTests {
    /// A named generator of one hostile request (raw bytes on a fresh connection).
    struct Case {
        var name: String
        var halfClose = false
        var make: () throws -> Data
    }

    static let idleTimeout = 2
    static let requestTimeout = 3

    @Test func hostileRequestsGet4xxOrACloseAndStoreNothing() async throws {
        let rounds = Drill.scale(quick: 20, full: 100)
        let slowClients = Drill.scale(quick: 12, full: 60)
        let folder = try TemporaryDirectory("sonde-drill-hostile")
        defer { folder.remove() }
        let agent = DrillAgent(id: "eu-1", region: "eu")
        let revoked = DrillAgent(id: "eu-2", region: "eu")
        let other = DrillAgent(id: "us-1", region: "us")
        let maxBody = 256 * 1024
        let certificates = try TestCertificates(in: folder.file("tls"))
        let collector = try await CollectorUnderTest.start(
            in: folder, agents: [agent, revoked, other], certificates: certificates,
            extra: [
                "max_body_bytes: \(maxBody)", "max_results_per_batch: 200", "idle_timeout: \(Self.idleTimeout)s",
                "request_timeout: \(Self.requestTimeout)s",
            ])
        let revoke = try ChildProcess("sonde-collector", ["agents", "revoke", "--db", collector.databasePath, "--id", revoked.id])
        #expect(try await revoke.waitForExit() == 0)

        let relay = try await TLSRelay(toPort: collector.port, caFile: certificates.caCert)
        defer { Task { await relay.stop() } }
        let port = relay.port
        let cases = Self.cases(agent: agent, revoked: revoked, other: other, maxBody: maxBody)
        // Warm up (first requests allocate pools), then take the baseline.
        _ = try rawRequest(port: port, httpBytes(method: "GET", path: "/healthz", headers: [], body: Data(), contentLength: -1))
        let rssBefore = collector.rssMiB

        var outcomes: [String: [RawOutcome]] = [:]
        var total = 0
        for _ in 0..<rounds {
            for c in cases {
                let outcome = try rawRequest(port: port, try c.make(), halfClose: c.halfClose, timeout: .seconds(10))
                outcomes[c.name, default: []].append(outcome)
                total += 1
            }
        }
        let slow = try await Self.slowClients(port: port, count: slowClients)
        let rssAfter = collector.rssMiB

        // Still serving: health, then one good batch is accepted (the only rows ever stored).
        let health = try await CurlHTTPClient.shared.perform(collector.request("/healthz", token: nil))
        let storedBefore = try await collector.metric("sonde_ingest_results_total") ?? -1
        let (_, body, signature) = try agent.signedBatch(3)
        let good = try await CurlHTTPClient.shared.perform(
            agent.pushRequest(baseURL: collector.baseURL, body: body, signature: signature, caFile: collector.caFile))
        let alive = collector.child.isRunning
        await collector.child.stop()
        let store = try SQLiteCollectorStore(path: collector.databasePath, logger: Logger(label: "drill"))
        let rows = try await store.resultCount()
        let batches = try await store.batchIntegrity().count

        let all = outcomes.values.flatMap { $0 }
        let fourxx = all.filter { if case .status(let s) = $0 { return (400..<500).contains(s) } else { return false } }.count
        let fivexx = all.filter { if case .status(let s) = $0 { return s >= 500 } else { return false } }.count
        let closed = all.filter { $0 == .closed }.count
        let silent = all.filter { $0 == .silent }.count
        let accepted = all.filter { if case .status(let s) = $0 { return s < 400 } else { return false } }.count
        let rssGrowth = rssAfter - rssBefore
        let passed =
            fivexx == 0 && silent == 0 && accepted == 0 && storedBefore == 0 && rows == 3 && batches == 1 && health.status == 200
            && good.status == 200 && alive && slow.closedInTime == slow.count && rssGrowth < 64
        var perCase = "| request kind | sent | 4xx (statuses) | closed | 5xx | no answer |\n|---|---:|---|---:|---:|---:|\n"
        for c in cases {
            let list = outcomes[c.name] ?? []
            let statuses = Set(list.compactMap { if case .status(let s) = $0 { return s } else { return nil } }).sorted()
            perCase += "| \(c.name) | \(list.count) | \(statuses.map(String.init).joined(separator: ", ")) | \(list.filter { $0 == .closed }.count) | "
            perCase += "\(list.filter { if case .status(let s) = $0 { return s >= 500 } else { return false } }.count) | \(list.filter { $0 == .silent }.count) |\n"
        }
        perCase += "| slowloris: headers or body trickled 1 byte / 250 ms | \(slow.count) | – | \(slow.closedInTime) closed by the server (slowest after \(String(format: "%.1f", slow.slowest)) s) | 0 | \(slow.count - slow.closedInTime) |\n"
        Drill.report(
            "5-hostile",
            """
            ### Drill 5: hostile input (HTTPS, API tokens on) — \(passed ? "PASS" : "FAIL")

            \(total + slow.count) bad requests on fresh connections against a real collector process serving HTTPS \
            with API tokens (raw bytes through a socat TLS relay; `max_body_bytes: \(maxBody)`, `max_results_per_batch: 200`, `idle_timeout: \(Self.idleTimeout)s`, \
            `request_timeout: \(Self.requestTimeout)s`): \(cases.count) kinds × \(rounds) rounds, plus \(slow.count) slow \
            clients. Pass: each gets a 4xx or a closed connection, never a 5xx or silence; zero rows stored; RSS growth \
            under 64 MiB; the collector still answers `/healthz` and accepts a good batch afterwards.

            \(Drill.table([
                ("requests sent", "\(total + slow.count)"),
                ("answered 4xx", "\(fourxx)"),
                ("connection closed by the server", "\(closed + slow.closedInTime)"),
                ("answered 5xx", "\(fivexx)"),
                ("answered 2xx/3xx (should be 0)", "\(accepted)"),
                ("no answer within 10 s", "\(silent + slow.count - slow.closedInTime)"),
                ("results stored by them", "\(Int(storedBefore))"),
                ("collector RSS before / after", "\(String(format: "%.1f", rssBefore)) / \(String(format: "%.1f", rssAfter)) MiB"),
                ("still serving (healthz, good batch)", "\(health.status), \(good.status)"),
            ]))

            \(perCase)
            """)
        #expect(fivexx == 0, "5xx answers: \(outcomes.filter { $0.value.contains { if case .status(let s) = $0 { return s >= 500 } else { return false } } }.keys)")
        #expect(silent == 0, "unanswered: \(outcomes.filter { $0.value.contains(.silent) }.keys)")
        #expect(accepted == 0, "accepted: \(outcomes.filter { $0.value.contains { if case .status(let s) = $0 { return s < 400 } else { return false } } }.keys)")
        #expect(total + slow.count >= 500)
        #expect(storedBefore == 0)
        #expect(rows == 3 && batches == 1)
        #expect(health.status == 200 && good.status == 200 && alive)
        #expect(slow.closedInTime == slow.count, "slow clients still connected: \(slow.count - slow.closedInTime)")
        #expect(rssGrowth < 64, "RSS grew by \(rssGrowth) MiB")
    }

    // MARK: - The hostile requests

    static func cases(agent: DrillAgent, revoked: DrillAgent, other: DrillAgent, maxBody: Int) -> [Case] {
        let json = [("Content-Type", "application/json")]
        func signedHeaders(_ body: Data, by signer: DrillAgent = agent, as id: String? = nil) throws -> [(String, String)] {
            json + [(PushProtocol.agentHeader, id ?? signer.id), (PushProtocol.signatureHeader, try signer.key.signatureHeader(for: body))]
        }
        func signed(_ body: Data, by signer: DrillAgent = agent, as id: String? = nil) throws -> Data {
            httpBytes(headers: try signedHeaders(body, by: signer, as: id), body: body)
        }
        func text(_ s: String) -> Data { Data(s.utf8) }
        let now = RFC3339.string(from: Date())
        func envelope(_ results: String, agentID: String = agent.id, sentAt: String? = nil) -> Data {
            text(#"{"agent":"\#(agentID)","batch_id":"\#(UUID().uuidString)","sent_at":"\#(sentAt ?? RFC3339.string(from: Date()))","results":\#(results)}"#)
        }
        func validBody(_ n: Int = 3, sentAt: Date = Date()) throws -> Data { try agent.signedBatch(n, sentAt: sentAt).1 }
        func randomBytes(_ n: Int) -> Data { Data((0..<n).map { _ in UInt8.random(in: 0...255) }) }

        func api(_ method: String, _ path: String, token: String?) -> Data {
            httpBytes(method: method, path: path, headers: token.map { [("Authorization", "Bearer \($0)")] } ?? [], body: Data())
        }
        return [
            Case(name: "admin endpoints without a token, with a wrong one, with a read token") {
                [
                    api("GET", "/v1/batches", token: nil), api("POST", "/v1/alerts/test", token: "guess-\(UInt32.random(in: 0...UInt32.max))"),
                    api("GET", "/v1/batches", token: DrillTokens.read), api("POST", "/v1/alerts/dead-letters/x/redrive", token: DrillTokens.read),
                    api("GET", "/metrics", token: nil), api("GET", "/v1/results", token: ""),
                ].randomElement()!
            },
            Case(name: "truncated JSON (signed)") {
                let body = try validBody()
                return try signed(body.prefix(Int.random(in: 1..<body.count)))
            },
            Case(name: "truncated body (Content-Length larger than sent, then EOF)", halfClose: true) {
                let body = try validBody()
                return httpBytes(headers: try signedHeaders(body), body: body.prefix(body.count / 2), contentLength: body.count)
            },
            Case(name: "declared Content-Length of 100 MB") {
                httpBytes(headers: try signedHeaders(Data()), body: Data(repeating: 32, count: 1024), contentLength: 100_000_000)
            },
            Case(name: "body over max_body_bytes (chunked, no length)") {
                var bytes = text("POST \(PushProtocol.path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n")
                bytes += text("\(PushProtocol.agentHeader): \(agent.id)\r\n\(PushProtocol.signatureHeader): AAAA\r\nTransfer-Encoding: chunked\r\n\r\n")
                let chunk = Data(repeating: UInt8(ascii: " "), count: 64 * 1024)
                for _ in 0..<(maxBody / chunk.count + 2) { bytes += text(String(chunk.count, radix: 16) + "\r\n") + chunk + text("\r\n") }
                return bytes + text("0\r\n\r\n")
            },
            Case(name: "deeply nested arrays (signed, 100,000 levels)") {
                try signed(envelope(String(repeating: "[", count: 100_000) + String(repeating: "]", count: 100_000)))
            },
            Case(name: "deeply nested objects in a result (signed, 50,000 levels)") {
                try signed(envelope("[{\"id\":" + String(repeating: "{\"a\":", count: 50_000) + "1" + String(repeating: "}", count: 50_000) + "}]"))
            },
            Case(name: "wrong types (signed)") {
                let variants = [
                    envelope("\"not an array\""), envelope("[1,2,3]"), envelope("[{\"id\":1}]"),
                    text(#"{"agent":42,"batch_id":"b","sent_at":"\#(now)","results":[]}"#),
                    text(#"{"agent":"\#(agent.id)","batch_id":null,"sent_at":"\#(now)","results":[]}"#),
                    text(#"{"agent":"\#(agent.id)","batch_id":"b","sent_at":12345,"results":[]}"#),
                    text("null"), text("[]"), text("42"), text("\"string\""), text("{}"),
                ]
                return try signed(variants.randomElement()!)
            },
            Case(name: "wrong values in a result (signed: bad outcome, NaN, 1e999, bad time)") {
                var result = try JSONSerialization.jsonObject(with: SondeJSON.encode(agent.results(1)[0])) as! [String: Any]
                switch Int.random(in: 0..<4) {
                case 0: result["outcome"] = "maybe"
                case 1: result["started_at"] = "yesterday"
                case 2: result["error"] = ["kind": "gremlins", "step": "x", "message": "y"]
                default: result["steps"] = [["name": 1]]
                }
                var body = try JSONSerialization.data(withJSONObject: ["agent": agent.id, "batch_id": UUID().uuidString, "sent_at": now, "results": [result]])
                if Bool.random() { body = envelope(#"[{"duration_ms": 1e999}]"#) }
                return try signed(body)
            },
            Case(name: "invalid UTF-8 in JSON strings (signed)") {
                var body = try validBody()
                let quote = body.firstIndex(of: UInt8(ascii: "\""))!
                body.insert(contentsOf: [0xFF, 0xFE, 0xC3], at: quote + 1)
                return try signed(body)
            },
            Case(name: "invalid UTF-8 in the agent header") {
                let body = try validBody()
                var bytes = text("POST \(PushProtocol.path) HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\n")
                bytes += text("\(PushProtocol.agentHeader): ") + Data([0xFF, 0xC0, 0x80]) + text("\r\n\(PushProtocol.signatureHeader): \(try agent.key.signatureHeader(for: body))\r\n")
                return bytes + text("Content-Length: \(body.count)\r\n\r\n") + body
            },
            Case(name: "signature by another key") { try signed(try validBody(), by: DrillAgent(id: agent.id, region: "eu")) },
            Case(name: "signature of other bytes (body altered after signing)") {
                var body = try validBody()
                let signature = try agent.key.signatureHeader(for: body)
                body[body.count / 2] ^= 0x01
                return httpBytes(headers: json + [(PushProtocol.agentHeader, agent.id), (PushProtocol.signatureHeader, signature)], body: body)
            },
            Case(name: "signature not base64 / empty / random") {
                let body = try validBody()
                let signature = ["%%%not-base64%%%", "", randomBytes(64).base64EncodedString(), String(repeating: "A", count: 10_000)].randomElement()!
                return httpBytes(headers: json + [(PushProtocol.agentHeader, agent.id), (PushProtocol.signatureHeader, signature)], body: body)
            },
            Case(name: "missing signature") {
                httpBytes(headers: json + [(PushProtocol.agentHeader, agent.id)], body: try validBody())
            },
            Case(name: "missing agent header (and garbage body)") {
                httpBytes(headers: json, body: randomBytes(Int.random(in: 1...2048)))
            },
            Case(name: "unknown agent") {
                let stranger = DrillAgent(id: "stranger-\(Int.random(in: 0...999))", region: "eu")
                return try signed(try stranger.signedBatch(2).1, by: stranger)
            },
            Case(name: "revoked agent") { try signed(try revoked.signedBatch(2).1, by: revoked) },
            Case(name: "replayed old batch (validly signed, sent_at 1 h ago)") {
                try signed(try validBody(sentAt: Date().addingTimeInterval(-3600)))
            },
            Case(name: "sent_at 1 h in the future (signed)") { try signed(try validBody(sentAt: Date().addingTimeInterval(3600))) },
            Case(name: "another agent's batch under this agent's header (signed)") { try signed(try other.signedBatch(2).1, by: agent) },
            Case(name: "too many results (signed)") { try signed(try validBody(201)) },
            Case(name: "empty batch / empty body (signed)") { try signed(Bool.random() ? envelope("[]") : Data()) },
            Case(name: "wrong method on /v1/results (PUT, DELETE, PATCH)") {
                let body = try validBody()
                return httpBytes(method: ["PUT", "DELETE", "PATCH"].randomElement()!, headers: try signedHeaders(body), body: body)
            },
            Case(name: "wrong content type (validly signed batch)") {
                let body = try validBody()
                let type = ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", "application/xml"].randomElement()!
                return httpBytes(
                    headers: [("Content-Type", type), (PushProtocol.agentHeader, agent.id), (PushProtocol.signatureHeader, try agent.key.signatureHeader(for: body))],
                    body: body)
            },
            Case(name: "not HTTP at all (random bytes)", halfClose: true) { randomBytes(Int.random(in: 1...4096)) + text("\r\n\r\n") },
            Case(name: "malformed request line / header") {
                [
                    text("POST /v1/results HTTP/9.9\r\nHost: x\r\n\r\n"), text("POST  HTTP/1.1\r\n\r\n"),
                    text("POST /v1/results HTTP/1.1\r\nNo colon here\r\n\r\n"), text("POST /v1/results HTTP/1.1\r\nContent-Length: -5\r\n\r\n"),
                    text("POST /v1/results HTTP/1.1\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\n0123456789"),
                ].randomElement()!
            },
            Case(name: "huge header (200 KB)") {
                httpBytes(headers: json + [("X-Padding", String(repeating: "a", count: 200_000))], body: try validBody())
            },
        ]
    }

    // MARK: - Slow clients

    struct SlowResult {
        var count: Int
        var closedInTime: Int
        var slowest: Double
    }

    /// Opens `count` connections that trickle one byte every 250 ms — half in the headers, half in
    /// a declared body — and waits for the server to close each (bounded by the time-outs).
    static func slowClients(port: Int, count: Int) async throws -> SlowResult {
        var connections: [RawConnection] = []
        for i in 0..<count {
            let connection = try RawConnection(port: port, receiveTimeout: .milliseconds(1))
            if i % 2 == 0 {
                connection.send(Data("POST \(PushProtocol.path) HTTP/1.1\r\n".utf8))
            } else {
                connection.send(Data("POST \(PushProtocol.path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".utf8))
            }
            connections.append(connection)
        }
        let clock = ContinuousClock()
        let start = clock.now
        var closedAt: [Double?] = Array(repeating: nil, count: count)
        let limit = Double(max(idleTimeout, requestTimeout) * 3 + 5)
        while closedAt.contains(where: { $0 == nil }) && (clock.now - start) < .seconds(limit) {
            for (i, connection) in connections.enumerated() where closedAt[i] == nil {
                let alive = connection.send(Data(i % 2 == 0 ? "X".utf8 : " ".utf8))
                if !alive || connection.readOutcome() != .silent {
                    let elapsed = clock.now - start
                    closedAt[i] = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
                }
            }
            try await Task.sleep(for: .milliseconds(250))
        }
        for connection in connections { connection.close() }
        let times = closedAt.compactMap { $0 }
        return SlowResult(count: count, closedInTime: times.count, slowest: times.max() ?? .nan)
    }
}
