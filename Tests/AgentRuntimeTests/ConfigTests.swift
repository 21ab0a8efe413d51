import CurlHTTP
import Foundation
import Logging
import ProbeEngine
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

@Suite("Config")
struct ConfigTests {
    @Test("every key is read into one typed value; relative paths follow the file; env and flags win")
    func fullConfig() throws {
        let dir = try TemporaryDirectory("config")
        defer { dir.remove() }
        try "s3cret\n".write(toFile: dir.file("token"), atomically: true, encoding: .utf8)
        let file = dir.file("agent.yaml")
        try """
            agent: {id: eu-1, region: eu}
            collector: {url: http://127.0.0.1:18300, key: keys/agent.key, batch_size: 50, timeout: 2.5s, flush_interval: 200ms, backoff: {base: 100ms, cap: 5s}, unauthorized_retry: 1m}
            spool: {path: spool, max_bytes: 16MiB}
            probes: [probes, /etc/sonde/extra.yaml]
            control_probes: [reach-reference]
            variables: {base_url: http://127.0.0.1:18400}
            secrets: {sim_password: env:SONDE_TEST_PASSWORD, api_token: file:token}
            proxy: http://127.0.0.1:3128
            scheduling: {jitter: 0.2, shutdown_grace: 3s}
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let config = try AgentConfig.load(
            file: file, overrides: ConfigOverrides(region: "us", variables: ["extra": "1"]),
            environment: ["SONDE_TEST_PASSWORD": "pw", "SONDE_AGENT_ID": "env-id"])
        #expect(config.agentID == "env-id")
        #expect(config.region == "us")
        #expect(config.collector.url == "http://127.0.0.1:18300")
        #expect(config.collector.keyPath == dir.path + "/keys/agent.key")
        #expect(config.collector.batchSize == 50)
        #expect(config.collector.timeout == .milliseconds(2500))
        #expect(config.collector.flushInterval == .milliseconds(200))
        #expect(config.collector.backoffBase == .milliseconds(100))
        #expect(config.collector.backoffCap == .seconds(5))
        #expect(config.collector.unauthorizedRetry == .seconds(60))
        #expect(config.spool.path == dir.path + "/spool")
        #expect(config.spool.maxBytes == 16 << 20)
        #expect(config.probePaths == [dir.path + "/probes", "/etc/sonde/extra.yaml"])
        #expect(config.controlProbes == ["reach-reference"])
        #expect(config.variables == ["base_url": "http://127.0.0.1:18400", "extra": "1"])
        #expect(config.secretValues == ["sim_password": "pw", "api_token": "s3cret"])
        #expect(config.runContext.secretNames == ["sim_password", "api_token"])
        #expect(config.runContext.variables["api_token"] == "s3cret")
        #expect(config.proxy == "http://127.0.0.1:3128")
        #expect(config.scheduling.jitter == 0.2)
        #expect(config.scheduling.shutdownGrace == .seconds(3))
    }

    @Test("limits.body_memory: a size of at least 1MiB, 256MiB by default, set on the agent's HTTP client when it is built")
    func bodyMemoryLimit() throws {
        let dir = try TemporaryDirectory("config")
        defer { dir.remove() }
        let file = dir.file("agent.yaml")
        func load(_ limits: String) throws -> (AgentConfig, [String]) {
            try """
                agent: {id: eu-1}
                collector: {url: http://127.0.0.1:1, key: agent.key}
                spool: {path: spool}
                \(limits)
                probes: [probes]
                """.write(toFile: file, atomically: true, encoding: .utf8)
            let (config, diagnostics) = AgentConfig.loadCollecting(file: file, environment: [:])
            return (config, diagnostics.map(\.description))
        }
        #expect(try load("").0.limits.bodyMemory == 256 << 20)
        let (config, problems) = try load("limits: {body_memory: 64MiB}")
        #expect(problems.isEmpty, "\(problems)")
        #expect(config.limits.bodyMemory == 64 << 20)
        let small = try load("limits: {body_memory: 512KiB}").1
        #expect(small == ["\(file):4:23: limits.body_memory: expected a size of at least 1MiB such as 256MiB, got \"512KiB\""], "\(small)")
        #expect(try load("limits: {body_memory: lots}").1.first?.contains("limits.body_memory: expected a size of at least 1MiB") == true)
        let typo = try load("limits: {body_memroy: 64MiB}").1
        #expect(typo == ["\(file):4:10: limits.body_memroy: unknown key 'body_memroy'; did you mean 'body_memory'?"], "\(typo)")
        // limits.check_memory: the JSON trees checks hold together, at least 64MiB.
        #expect(try load("").0.limits.checkMemory == 256 << 20)
        #expect(try load("limits: {check_memory: 128MiB}").0.limits.checkMemory == 128 << 20)
        let tight = try load("limits: {check_memory: 32MiB}").1
        #expect(tight == ["\(file):4:24: limits.check_memory: expected a size of at least 64MiB such as 256MiB, got \"32MiB\""], "\(tight)")

        try AgentSigningKey().write(to: dir.file("agent.key"))
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        try """
            name: reach
            component: api
            interval: 1m
            timeout: 5s
            steps: [{name: get, request: {url: "http://127.0.0.1:1/"}}]
            """.write(toFile: dir.file("probes/reach.yaml"), atomically: true, encoding: .utf8)
        let client = CurlHTTPClient(threads: 4)
        #expect(client.bodyMemory.limit == 256 << 20)
        let services = try buildAgent(config: config, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }, client: client)
        defer { services.spool.close() }
        #expect(client.bodyMemory.limit == 64 << 20)
    }

    @Test("problems come with file:line:column and field; unknown keys reported; secrets named, never shown")
    func errorsLocated() throws {
        let dir = try TemporaryDirectory("config")
        defer { dir.remove() }
        let file = dir.file("agent.yaml")
        try """
            agent:
              id: eu-1
              regoin: eu
            collector:
              url: http://127.0.0.1:1
              timeout: soon
            secrets:
              sim_password: env:SONDE_TEST_UNSET_SECRET
              token: hunter2
            spool: {max_bytes: lots}
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let (_, diagnostics) = AgentConfig.loadCollecting(file: file, environment: [:])
        let lines = diagnostics.map(\.description)
        #expect(lines.contains("\(file):3:3: agent.regoin: unknown key 'regoin'; did you mean 'region'?"))
        #expect(lines.contains { $0.hasPrefix("\(file):6:12: collector.timeout: expected a duration") && $0.contains("\"soon\"") })
        #expect(lines.contains("\(file):8:17: secrets.sim_password: secret \"sim_password\": environment variable SONDE_TEST_UNSET_SECRET is not set (or empty)"))
        #expect(lines.contains { $0.hasPrefix("\(file):9:10: secrets.token: expected env:NAME or file:PATH") })
        #expect(lines.contains { $0.hasPrefix("\(file):10:20: spool.max_bytes:") })
        #expect(!lines.joined().contains("hunter2"), "a secret pasted into the file is never echoed")
        #expect(diagnostics.count == 5)
    }

    @Test("scheduling.interval overrides every probe's own interval, and scales its retry interval alike")
    func intervalOverride() throws {
        let dir = try TemporaryDirectory("config")
        defer { dir.remove() }
        let probes = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../probes/sim").standardized.path
        let file = dir.file("agent.yaml")
        try """
            probes: [\(probes)]
            variables: {base_url: http://127.0.0.1:1}
            scheduling: {interval: 2s}
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let config = try AgentConfig.load(file: file, overrides: ConfigOverrides(), environment: [:])
        #expect(config.scheduling.interval == .seconds(2))
        let loaded = try config.loadProbes()
        #expect(loaded.probes.count >= 4)
        #expect(loaded.probes.allSatisfy { $0.interval == .seconds(2) })
        // The sim's probes leave retry_interval at its default (a quarter): still a quarter.
        #expect(loaded.probes.allSatisfy { $0.retryInterval == .milliseconds(500) }, "\(loaded.probes.map(\.retryInterval))")
        // An explicit share is kept, retries off stay off, and 100 ms is the floor.
        var probe = ProbeDefinition(name: "p", component: "c", interval: .seconds(60), retryInterval: .seconds(30), timeout: .seconds(5), sourceFile: "p.yaml")
        probe.override(interval: .seconds(2))
        #expect(probe.retryInterval == .seconds(1))
        var off = ProbeDefinition(name: "p", component: "c", interval: .seconds(60), retryInterval: .seconds(60), timeout: .seconds(5), sourceFile: "p.yaml")
        off.override(interval: .seconds(2))
        #expect(off.retryInterval == .seconds(2))
        var fast = ProbeDefinition(name: "p", component: "c", interval: .seconds(60), timeout: .seconds(5), sourceFile: "p.yaml")
        fast.override(interval: .milliseconds(200))
        #expect(fast.retryInterval == .milliseconds(100))

        try "scheduling: {interval: 0s}\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(throws: (any Error).self) { try AgentConfig.load(file: file, overrides: ConfigOverrides(), environment: [:]) }
    }

    @Test("broken YAML is reported at its line")
    func yamlSyntax() throws {
        let dir = try TemporaryDirectory("config")
        defer { dir.remove() }
        let file = dir.file("agent.yaml")
        try "agent: {id: eu-1\ncollector: [\n".write(toFile: file, atomically: true, encoding: .utf8)
        #expect {
            try AgentConfig.load(file: file)
        } throws: { error in
            guard let error = error as? ConfigError, let first = error.diagnostics.first else { return false }
            return first.file == file && first.line != nil && first.message.hasPrefix("invalid YAML")
        }
    }

    @Test("a missing config file is one clear problem, not a cascade")
    func missingFile() {
        let (_, diagnostics) = AgentConfig.loadCollecting(file: "/nonexistent/agent.yaml", environment: [:], requireCollector: true)
        #expect(diagnostics.map(\.description) == ["/nonexistent/agent.yaml: the config file does not exist"])
    }

    @Test("run needs collector.url")
    func collectorRequired() throws {
        let (_, diagnostics) = AgentConfig.loadCollecting(file: nil, environment: [:], requireCollector: true)
        #expect(diagnostics.map(\.field) == ["collector.url"])
        let (config, none) = AgentConfig.loadCollecting(file: nil, environment: ["SONDE_COLLECTOR_URL": "http://c:1"], requireCollector: true)
        #expect(none.isEmpty)
        #expect(config.collector.url == "http://c:1")
    }

    @Test("durations and sizes")
    func valueForms() {
        #expect(ConfigValues.duration("500ms") == .milliseconds(500))
        #expect(ConfigValues.duration("10s") == .seconds(10))
        #expect(ConfigValues.duration("1.5m") == .seconds(90))
        #expect(ConfigValues.duration("2h") == .seconds(7200))
        #expect(ConfigValues.duration("3") == .seconds(3))
        #expect(ConfigValues.duration("soon") == nil)
        #expect(ConfigValues.duration("-1s") == nil)
        #expect(ConfigValues.byteSize("256MiB") == 256 << 20)
        #expect(ConfigValues.byteSize("10MB") == 10_000_000)
        #expect(ConfigValues.byteSize("4096") == 4096)
        #expect(ConfigValues.byteSize("lots") == nil)
    }
}
