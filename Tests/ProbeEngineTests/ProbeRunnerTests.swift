import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

@testable import ProbeEngine

/// The runner against real HTTP servers on 127.0.0.1 (LoopbackHTTPServer): exact delays, hangs,
/// dropped connections and bodies.
@Suite("Probe runner")
struct ProbeRunnerTests {
    let client = CurlHTTPClient(threads: 8)

    func run(_ probe: ProbeDefinition, _ server: LoopbackHTTPServer, variables: [String: String] = [:], secretNames: Set<String> = [], logger: Logger? = nil) async -> ProbeResult {
        let runner = ProbeRunner(client: client, logger: logger ?? Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        var all = variables
        all["base_url"] = server.baseURL
        return await runner.run(probe, context: RunContext(agent: "agent-1", region: "eu", variables: all, secretNames: secretNames))
    }

    @Test("a login-then-use journey passes: extraction, headers, JSON body, timings")
    func happyPath() async throws {
        let server = try LoopbackHTTPServer { request in
            switch (request.method, request.path) {
            case ("POST", "/login"):
                let body = String(decoding: request.body, as: UTF8.self)
                guard request.header("Content-Type") == "application/json", body == #"{"username":"probe","n":3,"ok":true}"# else {
                    return .json(400, #"{"error":"bad body \#(body)"}"#)
                }
                return .respond(status: 200, headers: [("Content-Type", "application/json"), ("X-Session", "s-77")], body: Data(#"{"access_token":"tok_abc","data":[{"id":"m1"}]}"#.utf8))
            case ("GET", "/me"):
                return request.header("Authorization") == "Bearer tok_abc" && request.header("X-Session") == "s-77"
                    ? .json(200, #"{"user":"probe","agent":"\#(request.header("X-Agent") ?? "")"}"#) : .json(401, "{}")
            default:
                return .json(404, "{}")
            }
        }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: journey
            component: login
            interval: 30s
            timeout: 5s
            steps:
              - name: login
                request:
                  method: POST
                  url: ${base_url}/login
                  json: { username: "${user:-probe}", n: 3, ok: true }
                assert:
                  status: 200
                  headers:
                    X-Session: s-77
                  json:
                    - $.data[0].id == m1
                    - path: $.access_token
                      matches: ^tok_
                extract:
                  token: { json: $.access_token }
                  session: { header: X-Session }
              - name: me
                request:
                  url: ${base_url}/me
                  headers:
                    Authorization: Bearer ${token}
                    X-Session: ${session}
                    X-Agent: ${agent.id}@${agent.region}
                assert:
                  body_contains: agent-1@eu
                  json:
                    - $.user == probe
            """)
        let result = await run(probe, server)
        #expect(result.outcome == .ok, "\(String(describing: result.error))")
        #expect(result.error == nil)
        #expect(result.steps.map(\.name) == ["login", "me"])
        #expect(result.steps.map(\.status) == [200, 200])
        #expect(result.steps[1].url == server.baseURL + "/me")
        #expect(result.probe == "journey" && result.component == "login" && result.agent == "agent-1" && result.region == "eu")
        #expect(result.durationMs >= result.steps.map(\.timings.total).reduce(0, +) - 1)
        expectHonestTimings(result)
    }

    @Test("body_not_contains and body_not_matches fail a body that holds what must not be there, and pass one that does not")
    func negatedBodyChecks() async throws {
        let server = try LoopbackHTTPServer { request in
            request.path == "/bad" ? .respond(status: 200, body: Data("all fine but error: disk  full".utf8)) : .respond(status: 200, body: Data("all fine".utf8))
        }
        defer { server.stop() }
        func probe(_ path: String, _ assert: String) throws -> ProbeDefinition {
            try makeProbe("""
                name: negated
                component: api
                interval: 30s
                timeout: 5s
                steps:
                  - name: get
                    request: {url: "${base_url}\(path)"}
                    assert: {\(assert)}
                """)
        }
        #expect(await run(try probe("/good", #"body_not_contains: error, body_not_matches: 'disk\s+full'"#), server).outcome == .ok)
        let contains = await run(try probe("/bad", "body_not_contains: [warning, error]"), server)
        #expect(contains.error?.kind == .assertion && contains.error?.message.hasPrefix("body contains 'error', expected it not to: all fine but error") == true, "\(String(describing: contains.error))")
        let matches = await run(try probe("/bad", #"body_not_matches: 'disk\s+full'"#), server)
        #expect(matches.error?.message.hasPrefix(#"body matches /disk\s+full/, expected it not to"#) == true, "\(String(describing: matches.error))")
    }

    /// One GET of `${base_url}/` with `assert: {json: conditions}`.
    static func jsonChecks(_ conditions: String) throws -> ProbeDefinition {
        try makeProbe("""
            name: checks
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "${base_url}/"}
                assert:
                  json: \(conditions)
            """)
    }

    @Test("JSON conditions compare numbers (<, <=, >, >=, and the mapping form's less_than … at_least); an array compares by its length")
    func numericConditions() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"queue_depth": 1200, "lag": "0.25", "items": [1, 2], "name": "x"}"#) }
        defer { server.stop() }
        let probe = Self.jsonChecks
        let passing = #"["$.queue_depth > 1000", "$.queue_depth <= 1200", "$.lag < 0.5", "$.items >= 2", {path: $.items, less_than: 3}, {path: $.lag, at_least: 0.25}]"#
        let ok = await run(try probe(passing), server)
        #expect(ok.outcome == .ok, "\(String(describing: ok.error))")
        let deep = await run(try probe(#"["$.queue_depth < 1000"]"#), server)
        #expect(deep.error?.message == "$.queue_depth is '1200', expected it to be < 1000", "\(String(describing: deep.error))")
        let text = await run(try probe(#"[{path: $.name, greater_than: 0}]"#), server)
        #expect(text.error?.kind == .assertion, "a value that is not a number fails: \(String(describing: text.error))")
        let missing = await run(try probe(#"["$.nothing >= 0"]"#), server)
        #expect(missing.error?.message == "$.nothing is missing, expected it to be >= 0", "\(String(describing: missing.error))")

        let (_, problems) = ProbeLoader.parse(yaml: """
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "${base_url}/"}
                assert: {json: ["$.n < many", {path: $.n, at_most: lots}]}
            """, file: "p.yaml", variables: ["base_url"])
        let messages = problems.map(\.description)
        #expect(messages.contains { $0.contains("< compares numbers, and 'many' is not one") }, "\(messages)")
        #expect(messages.contains { $0.contains("at_most: expected a number") }, "\(messages)")
    }

    @Test("conditions on wildcards and filters: one value passing is enough, != means none, exists means any; == on an array compares its length; a filter in the short form keeps its spaces")
    func multiValuedConditions() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"jobs": [{"id": "a", "state": "done"}, {"id": "b", "state": "failed"}], "slides": [1, 2]}"#) }
        defer { server.stop() }
        let probe = Self.jsonChecks
        let passing = #"["$.jobs[*].state == failed", "$.jobs[?(@.state == 'failed')].id == b", "$.jobs[*].id in [x, a]", "$..state matches ^fail", "$.slides == 2", "$.slides != 3", {path: "$.jobs[?(@.state == 'queued')]", exists: false}]"#
        let ok = await run(try probe(passing), server)
        #expect(ok.outcome == .ok, "\(String(describing: ok.error))")
        let none = await run(try probe(#"["$.jobs[*].state != failed"]"#), server)
        #expect(none.error?.message == "$.jobs[*].state selects ['done', 'failed'], expected none of them to equal 'failed'", "\(String(describing: none.error))")
        let any = await run(try probe(#"["$.jobs[*].state == queued"]"#), server)
        #expect(any.error?.message == "$.jobs[*].state selects ['done', 'failed'], expected one of them to equal 'queued'", "\(String(describing: any.error))")
        let empty = await run(try probe(#"["$.jobs[?(@.state == 'lost')] exists"]"#), server)
        #expect(empty.error?.message.contains("selects no value") == true, "\(String(describing: empty.error))")
    }

    @Test("a hanging server ends as timeout within the probe's timeout + 1 s, its wait counted as ttfb")
    func hang() async throws {
        let server = try LoopbackHTTPServer { _ in .hang }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: hang
            component: api
            interval: 30s
            timeout: 1s
            steps:
              - name: get
                request: { url: "${base_url}/slow" }
            """)
        let clock = ContinuousClock()
        let started = clock.now
        let result = await run(probe, server)
        let elapsed = clock.now - started
        #expect(result.outcome == .failed)
        #expect(result.error?.kind == .timeout)
        #expect(result.error?.step == "get")
        #expect(elapsed < .seconds(2), "took \(elapsed)")
        #expect(elapsed >= .milliseconds(900))
        #expect(result.steps.first?.status == nil)
        // The request was sent and no byte came back: the wait is ttfb, none of it transfer.
        let t = try #require(result.steps.first?.timings)
        #expect(t.transfer == 0 && t.ttfb > 0, "\(t)")
        expectHonestTimings(result)
    }

    @Test("a step timeout shorter than the probe's applies to that step")
    func stepTimeout() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, "{}", delay: .seconds(3)) }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: step-timeout
            component: api
            interval: 30s
            timeout: 10s
            steps:
              - name: get
                timeout: 300ms
                request: { url: "${base_url}/" }
            """)
        let result = await run(probe, server)
        #expect(result.error?.kind == .timeout)
        #expect(result.durationMs < 1500)
    }

    @Test("a dropped connection is a connect failure; a closed port too, its time in dns + connect, none in ttfb")
    func dropped() async throws {
        let server = try LoopbackHTTPServer { _ in .drop }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: drop
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: { url: "${base_url}/" }
            """)
        let result = await run(probe, server)
        #expect(result.error?.kind == .connect)

        let closed = try LoopbackHTTPServer { _ in .drop }
        let url = closed.baseURL
        closed.stop()
        let runner = ProbeRunner(client: client, logger: Logger(label: "t") { _ in SwiftLogNoOpLogHandler() })
        let refused = await runner.run(probe, context: RunContext(agent: "a", region: "eu", variables: ["base_url": url]))
        #expect(refused.error?.kind == .connect)
        // Nothing was sent: the time is the connection's (dns + connect), none of it ttfb.
        let t = try #require(refused.steps.first?.timings)
        #expect(t.ttfb == 0 && t.transfer == 0 && t.tls == 0, "\(t)")
        #expect(t.connect > 0, "\(t)")
        expectHonestTimings(refused)
    }

    @Test("an unexpected status is http_status, labelled by failure_codes, and later steps are skipped")
    func httpStatusAndFailureCodes() async throws {
        let server = try LoopbackHTTPServer { request in
            request.path.hasPrefix("/content")
                ? .json(404, #"{"error":{"code":"file_expired","message":"File file-1 has expired"}}"#)
                : .json(200, #"{"id":"file-1"}"#)
        }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: codes
            component: files
            interval: 30s
            timeout: 5s
            failure_codes:
              - code: server_error
                status: [500, 502, 503]
              - code: file_expired
                status: [404, 410]
                body_matches: "has expired"
            steps:
              - name: upload
                request: { url: "${base_url}/upload", method: POST, body: "x" }
                extract: { file_id: { json: $.id } }
              - name: download
                request: { url: "${base_url}/content/${file_id}" }
              - name: never
                request: { url: "${base_url}/never" }
              - name: cleanup
                always: true
                request: { url: "${base_url}/delete/${file_id}", method: DELETE }
            """)
        let result = await run(probe, server)
        #expect(result.outcome == .failed)
        #expect(result.error?.kind == .httpStatus)
        #expect(result.error?.code == "file_expired")
        #expect(result.error?.step == "download")
        #expect(result.error?.message.contains("answered 404") == true)
        #expect(result.error?.message.contains("has expired") == true)
        #expect(result.steps.map(\.name) == ["upload", "download", "cleanup"])
        #expect(result.steps.last?.ok == true)
        #expect(!server.requests.contains { $0.path == "/never" })
        #expect(server.requests.contains { $0.method == "DELETE" && $0.path == "/delete/file-1" })
    }

    @Test("a failing cleanup is recorded in its step but does not replace the first error")
    func cleanupFailure() async throws {
        let server = try LoopbackHTTPServer { request in
            request.path == "/ok" ? .json(200, #"{"id":"j1"}"#) : .json(500, #"{"error":"boom at \#(request.path)"}"#)
        }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: cleanup
            component: batch
            interval: 30s
            timeout: 5s
            steps:
              - name: create
                request: { url: "${base_url}/ok" }
                extract: { id: { json: $.id } }
              - name: check
                request: { url: "${base_url}/check" }
              - name: cancel
                always: true
                request: { url: "${base_url}/cancel/${id}", method: POST }
              - name: needs missing
                always: true
                request: { url: "${base_url}/x/${never_set:-fallback}/${id}" }
            """)
        let result = await run(probe, server)
        #expect(result.error?.step == "check")
        #expect(result.error?.code == nil)
        #expect(result.steps.map(\.name) == ["create", "check", "cancel", "needs missing"])
        #expect(result.steps[2].ok == false)
        #expect(result.steps[2].error?.kind == .httpStatus)
        #expect(result.steps[2].error?.message.contains("/cancel/j1") == true)
    }

    @Test("cleanups after a time-out share one grace: three hanging always steps end the run at timeout + grace, not + 3 graces")
    func cleanupGraceIsShared() async throws {
        let server = try LoopbackHTTPServer { _ in .hang }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: hanging-cleanups
            component: files
            interval: 30s
            timeout: 1s
            steps:
              - name: upload
                request: { url: "${base_url}/upload" }
              - name: cleanup-1
                always: true
                request: { url: "${base_url}/delete/1", method: DELETE }
              - name: cleanup-2
                always: true
                request: { url: "${base_url}/delete/2", method: DELETE }
              - name: cleanup-3
                always: true
                request: { url: "${base_url}/delete/3", method: DELETE }
            """)
        var runner = ProbeRunner(client: client, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        runner.cleanupGrace = .seconds(1)
        let clock = ContinuousClock()
        let started = clock.now
        let result = await runner.run(probe, context: RunContext(agent: "agent-1", region: "eu", variables: ["base_url": server.baseURL]))
        let elapsed = clock.now - started
        #expect(result.error?.kind == .timeout)
        #expect(result.error?.step == "upload")
        // Every cleanup was tried: the first gets the grace, the others what is left of it.
        #expect(result.steps.map(\.name) == ["upload", "cleanup-1", "cleanup-2", "cleanup-3"])
        #expect(result.steps.dropFirst().allSatisfy { $0.error?.kind == .timeout })
        // 1 s timeout + one 1 s grace (per-step graces would take 4 s).
        #expect(elapsed >= .milliseconds(1900) && elapsed < .milliseconds(2800), "took \(elapsed)")
    }

    @Test("an always step whose inputs were never extracted is skipped, not failed")
    func cleanupWithoutInputs() async throws {
        let server = try LoopbackHTTPServer { _ in .json(503, #"{"error":"down"}"#) }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: skip-cleanup
            component: files
            interval: 30s
            timeout: 5s
            steps:
              - name: upload
                request: { url: "${base_url}/upload", method: POST }
                extract: { file_id: { json: $.id } }
              - name: delete
                always: true
                request: { url: "${base_url}/files/${file_id}", method: DELETE }
            """)
        let result = await run(probe, server)
        #expect(result.error?.kind == .httpStatus)
        #expect(result.steps.map(\.name) == ["upload"])
        #expect(server.requests.count == 1)
    }

    @Test("assertions fail as assertion with the value found")
    func assertions() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"status":"red","items":[1,2]}"#, delay: .milliseconds(5)) }
        defer { server.stop() }
        let base = """
            name: assertions
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: { url: "${base_url}/" }
                assert:

            """
        let cases: [(String, String)] = [
            ("      json: [\"$.status == green\"]", "$.status is 'red', expected it to equal 'green'"),
            ("      json: [\"$.status in [green, amber]\"]", "be one of"),
            ("      json: [\"$.missing exists\"]", "$.missing is missing"),
            ("      body_contains: purple", "body does not contain 'purple'"),
            ("      body_matches: \"^<html\"", "does not match"),
            ("      headers: { Content-Type: text/html }", "header Content-Type is 'application/json'"),
            ("      status: 201", "answered 200, expected 201"),
            ("      latency_below: 1ms", "expected below 1ms"),
        ]
        for (assertion, says) in cases {
            let probe = try makeProbe(base + assertion)
            let result = await run(probe, server)
            #expect(result.outcome == .failed, "\(assertion)")
            #expect(result.error?.message.contains(says) == true, "\(assertion): \(result.error?.message ?? "no error")")
            #expect(result.error?.kind == (assertion.contains("status:") ? .httpStatus : .assertion))
        }
        let passing = try makeProbe(base + "      json: [\"$.items[1] == 2\", \"$.status != green\", {path: $.items, exists: true}]\n      status: [2xx]")
        #expect(await run(passing, server).outcome == .ok)

        // Every check runs: the message names each that failed, in order, the passing ones not.
        let several = try makeProbe(base + "      json: [\"$.status == green\", \"$.items[0] == 1\"]\n      body_contains: purple\n      headers: { Content-Type: text/html }")
        let all = await run(several, server)
        #expect(all.error?.kind == .assertion)
        let message = all.error?.message ?? ""
        #expect(message.hasPrefix("3 checks failed: $.status is 'red'"), "\(message)")
        #expect(message.contains("; body does not contain 'purple'") && message.contains("; header Content-Type is 'application/json'"), "\(message)")
        #expect(!message.contains("$.items[0]"), "\(message)")
        // More than three: the rest are counted.
        let five = try makeProbe(base + "      json: [\"$.status == a\", \"$.status == b\", \"$.status == c\", \"$.status == d\", \"$.status == e\"]")
        let counted = await run(five, server).error?.message ?? ""
        #expect(counted.hasPrefix("5 checks failed: ") && counted.hasSuffix("; and 2 more") && counted.contains("'c'") && !counted.contains("'d'"), "\(counted)")
    }

    @Test("an extraction that finds nothing is a script error naming the step and path")
    func extractionFindsNothing() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"data":[]}"#) }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: extract
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: list
                request: { url: "${base_url}/" }
                extract: { first: { json: "$.data[0].id" } }
              - name: use
                request: { url: "${base_url}/${first}" }
            """)
        let result = await run(probe, server)
        #expect(result.error?.kind == .script)
        #expect(result.error?.step == "list")
        #expect(result.error?.message.contains("step 'list'") == true)
        #expect(result.error?.message.contains("$.data[0].id found nothing") == true)
        #expect(server.requests.count == 1)
    }

    @Test("a slow run is degraded, with the delay visible in ttfb")
    func degraded() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, "{}", delay: .milliseconds(300)) }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: slow
            component: api
            interval: 30s
            timeout: 5s
            degraded_after: ${slow_after:-100ms}
            steps:
              - name: get
                request: { url: "${base_url}/" }
            """)
        let result = await run(probe, server)
        #expect(result.outcome == .degraded)
        #expect(result.error == nil)
        #expect(result.degraded?.hasPrefix("the run took 3") == true, "\(result.degraded ?? "-")")
        #expect(result.steps.allSatisfy { $0.degraded == nil })
        let ttfb = try #require(result.steps.first?.timings.ttfb)
        #expect(ttfb >= 300 && ttfb < 400, "ttfb \(ttfb)")
        // The same probe with a looser threshold from the agent's variables is ok.
        #expect(await run(probe, server, variables: ["slow_after": "2s"]).outcome == .ok)
    }

    @Test("a step's own degraded_after marks the run degraded")
    func stepDegraded() async throws {
        let server = try LoopbackHTTPServer { request in .json(200, "{}", delay: request.path == "/slow" ? .milliseconds(200) : .zero) }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: step-slow
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: fast
                request: { url: "${base_url}/fast" }
              - name: slow
                degraded_after: 100ms
                request: { url: "${base_url}/slow" }
            """)
        let result = await run(probe, server)
        #expect(result.outcome == .degraded)
        // The slow step says so (its slowness is its component's); the run as a whole was not over a limit.
        #expect(result.steps.map { $0.degraded != nil } == [false, true])
        #expect(result.steps[1].degraded?.hasPrefix("step 'slow' took 2") == true, "\(result.steps[1].degraded ?? "-")")
        #expect(result.steps[1].degraded?.hasSuffix("over degraded_after 100ms") == true)
        #expect(result.degraded == nil)
        #expect(result.degradedReason == result.steps[1].degraded)
    }

    @Test("a 200 ms server delay is reported as 200–210 ms of ttfb")
    func timingHonesty() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#, delay: .milliseconds(200)) }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: timing
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: { url: "${base_url}/" }
            """)
        // Never below the delay; the best of three within 10 ms of it (one run can lose a few ms
        // to scheduling on a loaded machine, on the server's side).
        var ttfbs: [Double] = []
        for _ in 0..<3 {
            let result = await run(probe, server)
            ttfbs.append(try #require(result.steps.first?.timings.ttfb))
            expectHonestTimings(result)
        }
        #expect(ttfbs.allSatisfy { $0 >= 200 }, "ttfb \(ttfbs)")
        #expect(ttfbs.min()! <= 210, "ttfb \(ttfbs)")
    }

    // MARK: - Polling

    func pollProbe(extra: String = "", maxWait: String = "10s", timeout: String = "20s") throws -> ProbeDefinition {
        try makeProbe("""
            name: poll
            component: batch
            interval: 30s
            timeout: \(timeout)
            steps:
              - name: wait
                request: { url: "${base_url}/job" }
                poll:
                  every: 50ms
                  until: $.status == completed
                  fail_when: $.status in [failed, expired, cancelled]
                  max_wait: \(maxWait)
                  state: $.status
            \(extra)
            """)
    }

    /// A job whose answers follow `replies` one request at a time, then stay on the last one:
    /// a state name, or `503`, `drop` (no answer) or `html` (a 200 page that is not JSON).
    func jobServer(_ replies: [String]) throws -> LoopbackHTTPServer {
        let seen = Mutex(0)
        return try LoopbackHTTPServer { _ in
            let n = seen.withLock { count -> Int in
                count += 1
                return count
            }
            switch replies[min(n - 1, replies.count - 1)] {
            case "503": return .json(503, #"{"error":"upstream unavailable"}"#)
            case "drop": return .drop
            case "html": return .respond(status: 200, headers: [("Content-Type", "text/html")], body: Data("<html>maintenance</html>".utf8))
            case let status: return .json(200, #"{"id":"job-1","status":"\#(status)"}"#)
            }
        }
    }

    @Test("tolerate_errors: failed attempts in a row up to the limit are polled through; one more fails the step, saying so")
    func pollToleratesErrors() async throws {
        let replies = ["in_progress", "503", "drop", "in_progress", "html", "completed"]
        let tolerant = try jobServer(replies)
        defer { tolerant.stop() }
        let passed = await run(try pollProbe(extra: "      tolerate_errors: 2"), tolerant)
        #expect(passed.outcome == .ok, "\(String(describing: passed.error))")
        #expect(passed.steps.first?.attempts == 6)
        #expect(passed.steps.first?.status == 200)

        let strict = try jobServer(replies)
        defer { strict.stop() }
        let failed = await run(try pollProbe(extra: "      tolerate_errors: 1"), strict)
        #expect(failed.outcome == .failed, "\(String(describing: failed.error))")
        #expect(failed.error?.message.hasSuffix("(2 failed attempts in a row; tolerate_errors: 1)") == true, "\(failed.error?.message ?? "")")
        #expect(failed.steps.first?.attempts == 3)

        // Without it (the default) the first failed attempt fails the step, as before.
        let plain = try jobServer(replies)
        defer { plain.stop() }
        let first = await run(try pollProbe(), plain)
        #expect(first.error?.kind == .httpStatus, "\(String(describing: first.error))")
        #expect(first.error?.message.contains("tolerate_errors") == false)
        #expect(first.steps.first?.attempts == 2)
    }

    @Test("tolerate_errors never tolerates fail_when")
    func pollToleratesNoFailWhen() async throws {
        let server = try jobServer(["503", "expired"])
        defer { server.stop() }
        let result = await run(try pollProbe(extra: "      tolerate_errors: 3"), server)
        #expect(result.error?.kind == .assertion)
        #expect(result.error?.message.contains("'expired'") == true, "\(result.error?.message ?? "")")
        #expect(result.steps.first?.attempts == 2)
    }

    @Test("a poll finishes when its condition holds and counts attempts")
    func pollCompletes() async throws {
        let server = try jobServer(["validating", "in_progress", "in_progress", "completed"])
        defer { server.stop() }
        let result = await run(try pollProbe(), server)
        #expect(result.outcome == .ok, "\(String(describing: result.error))")
        #expect(result.steps.first?.attempts == 4)
        #expect(result.steps.first?.status == 200)
    }

    @Test("a poll fails on a failure state with the state in the message")
    func pollFailWhen() async throws {
        let server = try jobServer(["in_progress", "expired"])
        defer { server.stop() }
        let result = await run(try pollProbe(), server)
        #expect(result.error?.kind == .assertion)
        #expect(result.error?.message.contains("'expired'") == true)
        #expect(result.steps.first?.attempts == 2)
    }

    @Test("a job stuck in one state fails as stuck, naming the state, well before max_wait")
    func pollStuck() async throws {
        let server = try jobServer(["validating", "finalizing"])
        defer { server.stop() }
        let extra = "      stuck_after:\n        finalizing: ${finalizing_limit:-60s}\n        default: 30s"
        let probe = try pollProbe(extra: extra, maxWait: "30s", timeout: "40s")
        let clock = ContinuousClock()
        let started = clock.now
        let result = await run(probe, server, variables: ["finalizing_limit": "400ms"])
        let elapsed = clock.now - started
        #expect(result.error?.kind == .stuck)
        let message = try #require(result.error?.message)
        #expect(message.hasPrefix("batch stuck in finalizing for "), "\(message)")
        #expect(message.hasSuffix("(limit 400ms)"), "\(message)")
        #expect(elapsed < .seconds(2), "took \(elapsed)")
        #expect(elapsed >= .milliseconds(400))
    }

    @Test("a poll that never finishes fails as timeout at max_wait")
    func pollMaxWait() async throws {
        let server = try jobServer(["in_progress"])
        defer { server.stop() }
        let clock = ContinuousClock()
        let started = clock.now
        let result = await run(try pollProbe(maxWait: "500ms"), server)
        let elapsed = clock.now - started
        #expect(result.error?.kind == .timeout)
        #expect(result.error?.message.contains("max_wait 500ms") == true)
        #expect(result.error?.message.contains("in_progress") == true)
        #expect(elapsed < .seconds(2))
        #expect((result.steps.first?.attempts ?? 0) >= 2)
    }

    @Test("the probe timeout also bounds a poll: the message says it was cut after N attempts, and validate warns")
    func pollProbeTimeout() async throws {
        let server = try jobServer(["in_progress"])
        defer { server.stop() }
        let clock = ContinuousClock()
        let started = clock.now
        let probe = try pollProbe(maxWait: "1m", timeout: "600ms")
        let result = await run(probe, server)
        #expect(result.error?.kind == .timeout)
        #expect(clock.now - started < .milliseconds(1600))
        // The message says the poll ran and was cut, with its attempts and the last state.
        let attempts = try #require(result.steps.first?.attempts)
        #expect(attempts >= 2 && attempts == server.requests.count, "\(attempts) vs \(server.requests.count)")
        let message = result.error?.message ?? ""
        #expect(message.hasPrefix("poll cut off by the probe timeout of 600ms after \(attempts) attempt(s) in "), "\(message)")
        #expect(message.hasSuffix("($.status was 'in_progress'), before its max_wait of 60s"), "\(message)")
        // validate warns that this max_wait can never apply.
        #expect(probe.warnings.map(\.description) == [
            "test.yaml:12:17: warning: steps[0].poll.max_wait: max_wait 60s is longer than the probe's timeout 600ms: the timeout cuts the poll first; raise timeout or lower max_wait",
        ])
    }

    // MARK: - Upload and compare

    @Test("a random multipart payload is compared with its download by size and SHA-256")
    func uploadCompare() async throws {
        let stored = Mutex(Data())
        let corrupt = Mutex(false)
        let server = try LoopbackHTTPServer { request in
            if request.method == "POST" {
                guard let file = Multipart.filePart(request) else { return .json(400, #"{"error":"no file"}"#) }
                stored.withLock { $0 = file }
                return .json(200, #"{"id":"file-1","bytes":\#(file.count)}"#)
            }
            var data = stored.withLock { $0 }
            if corrupt.withLock({ $0 }) { data[data.startIndex] ^= 0xFF }
            return .respond(status: 200, headers: [("Content-Type", "application/octet-stream")], body: data)
        }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: upload
            component: files
            interval: 30s
            timeout: 5s
            steps:
              - name: upload
                request:
                  method: POST
                  url: ${base_url}/files
                  multipart:
                    - { name: purpose, value: batch }
                    - { name: file, filename: "p-${run.id}.bin", random_bytes: 65536, save_as: payload }
                assert: { json: ["$.bytes == 65536"] }
              - name: download
                request: { url: "${base_url}/files/file-1/content" }
              - name: compare
                compare: { download: download, with: payload }
            """)
        let first = await run(probe, server)
        #expect(first.outcome == .ok, "\(String(describing: first.error))")
        let firstPayload = stored.withLock { $0 }
        #expect(firstPayload.count == 65536)
        #expect(await run(probe, server).outcome == .ok)
        #expect(stored.withLock { $0 } != firstPayload, "every run sends a fresh random payload")

        corrupt.withLock { $0 = true }
        let bad = await run(probe, server)
        #expect(bad.error?.kind == .assertion)
        #expect(bad.error?.step == "compare")
        #expect(bad.error?.message.contains("sha256") == true)
    }

    // MARK: - Secrets

    @Test("secrets from env, file and secret variables never reach results or logs")
    func secretsAreRedacted() async throws {
        let envSecret = "env-s3cret-\(UUID().uuidString.prefix(8))"
        let fileSecret = "file-s3cret-\(UUID().uuidString.prefix(8))"
        let varSecret = "var-s3cret-\(UUID().uuidString.prefix(8))"
        setenv("SONDE_TEST_SECRET", envSecret, 1)
        let folder = try TemporaryDirectory()
        defer { folder.remove() }
        try (fileSecret + "\n").write(toFile: folder.file("token"), atomically: true, encoding: .utf8)

        // The server echoes everything it got back in its error, the way careless APIs do.
        let server = try LoopbackHTTPServer { request in
            let echo = request.path + " " + request.headers.map { "\($0.name)=\($0.value)" }.joined(separator: ",") + " " + String(decoding: request.body, as: UTF8.self)
            let escaped = String(decoding: try! JSONEncoder().encode(echo), as: UTF8.self)
            return request.path.hasPrefix("/login") ? .json(200, #"{"token":"t"}"#) : .json(403, #"{"error":\#(escaped)}"#)
        }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: secrets
            component: login
            interval: 30s
            timeout: 5s
            steps:
              - name: login
                request:
                  method: POST
                  url: ${base_url}/login?key=${env:SONDE_TEST_SECRET}
                  json: { password: "${env:SONDE_TEST_SECRET}", api: "${api_key}" }
                  headers: { X-Token: "${file:\(folder.file("token"))}" }
              - name: use
                request:
                  url: ${base_url}/use/${file:\(folder.file("token"))}?k=${api_key}&e=${env:SONDE_TEST_SECRET}
                  headers: { Authorization: "Bearer ${env:SONDE_TEST_SECRET}" }
            """, variables: ["base_url", "api_key"])
        let logs = CapturedLogs()
        let logger = logs.logger("probe-engine-test", level: .trace)
        let result = await run(probe, server, variables: ["api_key": varSecret], secretNames: ["api_key"], logger: logger)
        #expect(result.outcome == .failed)
        // The secrets did reach the server…
        let sent = server.requests.map { $0.path + String(decoding: $0.body, as: UTF8.self) + $0.headers.map(\.value).joined() }.joined()
        #expect(sent.contains(envSecret) && sent.contains(fileSecret) && sent.contains(varSecret))
        // …but not the result or the logs.
        let json = result.jsonText
        let logText = logs.text
        #expect(!logText.isEmpty)
        for secret in [envSecret, fileSecret, varSecret] {
            #expect(!json.contains(secret), "\(secret) in result \(json)")
            #expect(!logText.contains(secret), "\(secret) in logs")
        }
        #expect(result.steps[1].url.contains("[redacted]"))
        #expect(result.error?.message.contains("[redacted]") == true)
        #expect(logText.contains("probe.name=secrets"))
        #expect(!logText.contains("error ") || !logText.hasPrefix("error"), "a probe failure is not an error-level log")
        #expect(logs.all.allSatisfy { $0.level == .debug })
    }

    @Test("a missing environment secret is a script error naming the variable")
    func missingEnvironment() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, "{}") }
        defer { server.stop() }
        let probe = try makeProbe("""
            name: env
            component: login
            interval: 30s
            timeout: 5s
            steps:
              - name: login
                request: { url: "${base_url}/", headers: { Authorization: "Bearer ${env:SONDE_TEST_UNSET_VARIABLE}" } }
            """)
        let result = await run(probe, server)
        #expect(result.error?.kind == .script)
        #expect(result.error?.message.contains("SONDE_TEST_UNSET_VARIABLE") == true)
        #expect(server.requests.isEmpty)
    }
}

/// Reads the file part of a multipart/form-data request (test-side parser).
enum Multipart {
    static func filePart(_ request: LoopbackHTTPServer.Request) -> Data? {
        guard let type = request.header("Content-Type"), let range = type.range(of: "boundary=") else { return nil }
        let boundary = Data(("--" + type[range.upperBound...]).utf8)
        let body = request.body
        var searchFrom = body.startIndex
        while let start = body.range(of: boundary, in: searchFrom..<body.endIndex) {
            guard let headEnd = body.range(of: Data("\r\n\r\n".utf8), in: start.upperBound..<body.endIndex),
                  let next = body.range(of: Data("\r\n".utf8) + boundary, in: headEnd.upperBound..<body.endIndex)
            else { return nil }
            let head = String(decoding: body[start.upperBound..<headEnd.lowerBound], as: UTF8.self)
            if head.contains("filename=") { return Data(body[headEnd.upperBound..<next.lowerBound]) }
            searchFrom = next.lowerBound + 2
        }
        return nil
    }
}
