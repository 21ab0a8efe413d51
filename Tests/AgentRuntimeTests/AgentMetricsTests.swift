import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

/// The agent's own `/metrics` (`metrics.listen`), over real HTTP.
@Suite("Agent metrics")
struct AgentMetricsTests {
    let logs = CapturedLogs()

    /// A server on 127.0.0.1 and a free port, running until the body returns.
    func withServer(
        spool: Spool, metrics: AgentMetrics = AgentMetrics(), requestTimeout: Duration = .seconds(5),
        _ body: (AgentMetricsServer) async throws -> Void
    ) async throws {
        let server = try AgentMetricsServer(
            listen: MetricsListenAddress(host: "127.0.0.1", port: 0), metrics: metrics, spool: spool, logger: logs.logger(),
            requestTimeout: requestTimeout)
        let task = Task { try await server.run() }
        defer { task.cancel() }
        try await body(server)
        task.cancel()
        _ = try? await task.value
    }

    func scrape(_ port: Int, path: String = "/metrics", method: String = "GET") async throws -> HTTPResponse {
        try await CurlHTTPClient(threads: 2).perform(HTTPRequest(method: method, url: "http://127.0.0.1:\(port)\(path)", timeout: .seconds(10)))
    }

    @Test("serves runs by outcome, start lateness, pushes and the spool's depth in Prometheus text that promtool accepts")
    func servesMetrics() async throws {
        let dir = try TemporaryDirectory("agent-metrics")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...3 { try spool.append(sampleResult("p\(i)")) }
        let metrics = AgentMetrics()
        metrics.recordRun(.ok, lateness: .microseconds(800))
        metrics.recordRun(.ok, lateness: .milliseconds(3))
        metrics.recordRun(.failed, lateness: .seconds(7))
        metrics.recordRun(.degraded, lateness: .zero)
        metrics.recordRun(.ok, lateness: .zero, retry: true)
        metrics.recordPush(ok: true)
        metrics.recordPush(ok: false)
        metrics.recordPush(ok: false)
        try await withServer(spool: spool, metrics: metrics) { server in
            let response = try await scrape(server.port)
            #expect(response.status == 200)
            #expect(response.headers.value(for: "Content-Type") == "text/plain; version=0.0.4; charset=utf-8")
            let text = response.bodyText
            for line in [
                #"sonde_agent_runs_total{outcome="ok"} 3"#, #"sonde_agent_runs_total{outcome="degraded"} 1"#,
                #"sonde_agent_runs_total{outcome="failed"} 1"#, "sonde_agent_retries_total 1",
                #"sonde_agent_run_start_lateness_seconds_bucket{le="0.001"} 3"#,
                #"sonde_agent_run_start_lateness_seconds_bucket{le="0.005"} 4"#,
                #"sonde_agent_run_start_lateness_seconds_bucket{le="5"} 4"#,
                #"sonde_agent_run_start_lateness_seconds_bucket{le="+Inf"} 5"#,
                "sonde_agent_run_start_lateness_seconds_sum 7.0038", "sonde_agent_run_start_lateness_seconds_count 5",
                #"sonde_agent_pushes_total{result="ok"} 1"#, #"sonde_agent_pushes_total{result="failed"} 2"#,
                "sonde_agent_spool_results 3", "sonde_agent_results_dropped_total 0", "process_cpu_seconds_total ",
                "sonde_build_info{",
            ] {
                #expect(text.contains(line + (line.hasSuffix(" ") || line.hasSuffix("{") ? "" : "\n")), "missing: \(line)")
            }
            let bytes = spool.status.liveBytes
            #expect(bytes > 0 && text.contains("sonde_agent_spool_bytes \(bytes)\n"))

            // promtool (Prometheus's own checker, from the prometheus package) accepts the text.
            let promtool = try requireProgram("promtool", package: "prometheus")
            let file = dir.path + "/metrics.txt"
            try text.write(toFile: file, atomically: true, encoding: .utf8)
            let check = try ChildProcess("/bin/sh", ["-c", "\"$0\" check metrics < \"$1\"", promtool, file])
            #expect(try await check.waitForExit() == 0, "promtool check metrics: \(check.allOutput)")

            // HEAD answers the headers only; anything but /metrics is 404; other methods 405.
            let head = try await scrape(server.port, method: "HEAD")
            #expect(head.status == 200 && head.body.isEmpty)
            #expect(try await scrape(server.port, path: "/").status == 404)
            #expect(try await scrape(server.port, method: "POST").status == 405)
        }
    }

    @Test("a scraper that sends nothing, or too much, is cut off within the request time-out; the next scrape is served")
    func hostileScrapersAreBounded() async throws {
        let dir = try TemporaryDirectory("agent-metrics-hostile")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        try await withServer(spool: spool, requestTimeout: .milliseconds(500)) { server in
            // Silent: connects and never sends a byte. The server closes it (EOF) after ~0.5 s.
            let silent = try connectLoopbackSocket(port: server.port, receiveTimeout: .seconds(10))
            defer { close(silent) }
            let clock = ContinuousClock()
            let start = clock.now
            var byte: UInt8 = 0
            #expect(read(silent, &byte, 1) == 0, "closed without an answer")
            let waited = clock.now - start
            #expect(waited >= .milliseconds(400) && waited < .seconds(5), "cut off after \(waited)")

            // Slow: one header byte at a time keeps it busy at most the same time in total.
            let slow = try connectLoopbackSocket(port: server.port, receiveTimeout: .seconds(10))
            defer { close(slow) }
            let slowStart = clock.now
            var closed = false
            for byte in Array("GET /metrics HTTP/1.1\r\nX-Slow: ".utf8) + Array(repeating: UInt8(ascii: "a"), count: 200) {
                var b = byte
                if send(slow, &b, 1, Int32(MSG_NOSIGNAL)) != 1 { closed = true; break }
                try await Task.sleep(for: .milliseconds(20))
                if clock.now - slowStart > .seconds(3) { break }
            }
            var answer = [UInt8](repeating: 0, count: 64)
            #expect(closed || read(slow, &answer, answer.count) <= 0, "a trickled request is not answered")
            #expect(clock.now - slowStart < .seconds(3), "the trickle was cut off after the time-out, not served for ever")

            // Oversized head: 431, connection closed.
            let big = try connectLoopbackSocket(port: server.port, receiveTimeout: .seconds(10))
            defer { close(big) }
            let request = Array("GET /metrics HTTP/1.1\r\nX-Big: \(String(repeating: "b", count: 20_000))\r\n\r\n".utf8)
            _ = request.withUnsafeBytes { send(big, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            var reply = [UInt8](repeating: 0, count: 256)
            let count = read(big, &reply, reply.count)
            #expect(count > 0 && String(decoding: reply[0..<max(count, 0)], as: UTF8.self).hasPrefix("HTTP/1.1 431 "))

            // And the server still answers.
            #expect(try await scrape(server.port).status == 200)
        }
    }

    @Test("connections that send nothing are dropped after a second: three of them delay a scrape by about 3 s, well inside a 10 s scrape time-out")
    func idleConnectionsAreDroppedQuickly() async throws {
        let dir = try TemporaryDirectory("agent-metrics-idle")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        try await withServer(spool: spool) { server in
            let idle = try (0..<3).map { _ in try connectLoopbackSocket(port: server.port, receiveTimeout: .seconds(10)) }
            defer { idle.forEach { close($0) } }
            let clock = ContinuousClock()
            let start = clock.now
            #expect(try await scrape(server.port).status == 200)
            let waited = clock.now - start
            #expect(waited < .seconds(6), "three idle connections at the default 5 s time-out each would take 15 s; took \(waited)")
            var byte: UInt8 = 0
            #expect(idle.allSatisfy { read($0, &byte, 1) == 0 }, "each idle connection was closed")
        }
    }

    @Test("metrics.listen: an IP address and port; host names, missing ports and unknown keys are refused with their line")
    func listenConfig() throws {
        #expect(MetricsListenAddress.parse("127.0.0.1:9465") == MetricsListenAddress(host: "127.0.0.1", port: 9465))
        #expect(MetricsListenAddress.parse("[::1]:9465") == MetricsListenAddress(host: "::1", port: 9465))
        #expect(MetricsListenAddress.parse("0.0.0.0:9465")?.description == "0.0.0.0:9465")
        for bad in ["localhost:9465", "9465", ":9465", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:70000", "::1:9465"] {
            #expect(MetricsListenAddress.parse(bad) == nil, "\(bad)")
        }
        let dir = try TemporaryDirectory("agent-metrics-config")
        defer { dir.remove() }
        let good = dir.path + "/good.yaml"
        try "metrics: {listen: 127.0.0.1:9465}\n".write(toFile: good, atomically: true, encoding: .utf8)
        #expect(try AgentConfig.load(file: good, environment: [:]).metrics?.listen == MetricsListenAddress(host: "127.0.0.1", port: 9465))
        let none = dir.path + "/none.yaml"
        try "agent: {id: a}\n".write(toFile: none, atomically: true, encoding: .utf8)
        #expect(try AgentConfig.load(file: none, environment: [:]).metrics == nil, "off by default")
        let bad = dir.path + "/bad.yaml"
        try "agent: {id: a}\nmetrics: {listen: localhost:9465, port: 1}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let problems = AgentConfig.loadCollecting(file: bad, environment: [:]).1.map(\.description)
        #expect(problems.contains { $0.contains(":2:") && $0.contains("metrics.listen") && $0.contains("IP address") }, "\(problems)")
        #expect(problems.contains { $0.contains("metrics.port") && $0.contains("unknown key") }, "\(problems)")
    }

    @Test("a running agent with metrics.listen counts its runs and pushes (real collector stand-in, real HTTP)")
    func runningAgentCounts() async throws {
        let dir = try TemporaryDirectory("agent-metrics-run")
        defer { dir.remove() }
        let key = AgentSigningKey()
        try key.write(to: dir.path + "/agent.key")
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .accept)
        defer { receiver.stop() }
        try FileManager.default.createDirectory(atPath: dir.path + "/probes", withIntermediateDirectories: true)
        try """
            name: reach
            component: api
            interval: 200ms
            timeout: 5s
            steps:
              - name: get
                request: {method: GET, url: "\(receiver.url)/nothing-here"}
                assert: {status: 404}
            """.write(toFile: dir.path + "/probes/reach.yaml", atomically: true, encoding: .utf8)
        let port = try freeLoopbackPort()
        try """
            agent: {id: eu-1, region: eu}
            collector: {url: \(receiver.url), key: \(dir.path)/agent.key, flush_interval: 50ms}
            spool: {path: \(dir.path)/spool}
            probes: [\(dir.path)/probes]
            metrics: {listen: 127.0.0.1:\(port)}
            """.write(toFile: dir.path + "/agent.yaml", atomically: true, encoding: .utf8)
        let config = try AgentConfig.load(file: dir.path + "/agent.yaml", environment: [:], requireCollector: true)
        let services = try buildAgent(config: config, logger: logs.logger())
        #expect(services.metricsServer?.port == port)
        let group = services.serviceGroup(logger: logs.logger(), handleSignals: false)
        let task = Task { try await group.run() }
        defer { task.cancel() }
        var text = ""
        try await waitUntil("3 runs and a push counted", timeout: .seconds(20)) {
            text = (try? await scrape(port).bodyText) ?? ""
            return (value(#"sonde_agent_runs_total{outcome="ok"}"#, in: text) ?? 0) >= 3 && (value(#"sonde_agent_pushes_total{result="ok"}"#, in: text) ?? 0) >= 1
        }
        #expect(value("sonde_agent_run_start_lateness_seconds_count", in: text).map { $0 >= 3 } == true)
        #expect(text.contains(#"sonde_agent_pushes_total{result="failed"} 0"#))

        // A refused reload shows as config_last_reload_successful 0 until one is applied.
        #expect(value("sonde_agent_config_last_reload_successful", in: text) == 1)
        let loadedAt = try #require(value("sonde_agent_config_last_reload_success_timestamp_seconds", in: text))
        var reloader = ConfigReloader(running: config, scheduler: services.scheduler, logger: logs.logger()) { () throws(ConfigError) in
            try AgentConfig.load(file: dir.path + "/agent.yaml", environment: [:], requireCollector: true)
        }
        reloader.metrics = services.metricsServer?.metrics
        try "name: [broken".write(toFile: dir.path + "/probes/bad.yaml", atomically: true, encoding: .utf8)
        #expect(!reloader.reload())
        #expect(value("sonde_agent_config_last_reload_successful", in: try await scrape(port).bodyText) == 0)
        try FileManager.default.removeItem(atPath: dir.path + "/probes/bad.yaml")
        #expect(reloader.reload())
        let after = try await scrape(port).bodyText
        #expect(value("sonde_agent_config_last_reload_successful", in: after) == 1)
        #expect((value("sonde_agent_config_last_reload_success_timestamp_seconds", in: after) ?? 0) >= loadedAt)
        await group.triggerGracefulShutdown()
        try await task.value
        services.spool.close()
    }

    /// The value of the sample `series` (name and labels as printed) in an exposition text.
    func value(_ series: String, in text: String) -> Double? {
        for line in text.split(separator: "\n") where line.hasPrefix(series + " ") { return Double(line.dropFirst(series.count + 1)) }
        return nil
    }
}
