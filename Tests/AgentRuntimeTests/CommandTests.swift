import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

/// The real `sonde-agent` executable, started as a child process (built by `swift build --build-tests`).
@Suite("sonde-agent commands")
struct CommandTests {
    @Test("keygen writes the private key with mode 0600 and PATH.pub, prints the enrol command, refuses to overwrite without --force")
    func keygen() async throws {
        let dir = try TemporaryDirectory("keygen")
        defer { dir.remove() }
        let path = dir.file("agent.key")
        let first = try ChildProcess("sonde-agent", ["keygen", "--out", path, "--id", "eu-1", "--region", "eu"])
        #expect(try await first.waitForExit() == 0)
        var info = stat()
        #expect(stat(path, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)
        let key = try AgentSigningKey.load(from: path)
        let pub = try String(contentsOfFile: path + ".pub", encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(pub == key.publicKey.base64)
        try await first.waitForLine { $0 == "  sonde-collector agents add --config <collector.yaml> --id eu-1 --region eu --public-key \(pub)" }

        let again = try ChildProcess("sonde-agent", ["keygen", "--out", path])
        #expect(try await again.waitForExit() == 1)
        #expect(again.allOutput.contains("--force"))
        #expect(try AgentSigningKey.load(from: path).publicKey == key.publicKey, "the key is untouched")

        let forced = try ChildProcess("sonde-agent", ["keygen", "--out", path, "--force"])
        #expect(try await forced.waitForExit() == 0)
        #expect(try AgentSigningKey.load(from: path).publicKey != key.publicKey)
    }

    @Test("keygen never follows a symlink: refuses one at PATH (even dangling) without --force, replaces the link itself with --force")
    func keygenNeverFollowsSymlinks() async throws {
        let dir = try TemporaryDirectory("keygen-symlink")
        defer { dir.remove() }
        let outside = try TemporaryDirectory("keygen-outside")
        defer { outside.remove() }
        let victim = outside.file("victim.txt")
        try "keep me\n".write(toFile: victim, atomically: true, encoding: .utf8)
        let path = dir.file("agent.key")
        #expect(symlink(victim, path) == 0)
        #expect(symlink(outside.file("victim.pub"), path + ".pub") == 0)

        let refused = try ChildProcess("sonde-agent", ["keygen", "--out", path])
        #expect(try await refused.waitForExit() == 1)
        #expect(refused.allOutput.contains("--force"))
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep me\n")

        let dangling = dir.file("dangling.key")
        #expect(symlink(outside.file("created-through-link"), dangling) == 0)
        let refusedDangling = try ChildProcess("sonde-agent", ["keygen", "--out", dangling])
        #expect(try await refusedDangling.waitForExit() == 1)
        #expect(access(outside.file("created-through-link"), F_OK) != 0, "nothing created through a dangling link")

        let forced = try ChildProcess("sonde-agent", ["keygen", "--out", path, "--force"])
        #expect(try await forced.waitForExit() == 0)
        #expect(try String(contentsOfFile: victim, encoding: .utf8) == "keep me\n", "the link's target is untouched")
        #expect(access(outside.file("victim.pub"), F_OK) != 0, "the .pub link's target was not created")
        var info = stat()
        #expect(lstat(path, &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFREG, "the symlink itself was replaced by a regular file")
        #expect(info.st_mode & 0o777 == 0o600)
        #expect(lstat(path + ".pub", &info) == 0)
        #expect(info.st_mode & S_IFMT == S_IFREG)
        _ = try AgentSigningKey.load(from: path)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.contains(".tmp-") }
        #expect(leftovers.isEmpty)
    }

    @Test("run with an invalid config exits 2 and says why, with file:line: field")
    func runRefusesInvalidConfig() async throws {
        let dir = try TemporaryDirectory("run-invalid")
        defer { dir.remove() }
        let file = dir.file("agent.yaml")
        try "agent: {id: eu-1}\ncollector: {url: http://127.0.0.1:1, batch_size: many}\n".write(toFile: file, atomically: true, encoding: .utf8)
        let agent = try ChildProcess("sonde-agent", ["run", "--config", file])
        #expect(try await agent.waitForExit() == 2)
        let output = agent.allOutput
        #expect(output.contains("\(file):2:"))
        #expect(output.contains("collector.batch_size: expected a whole number"))
        #expect(output.contains("refusing to start"))
    }

    @Test("run --log-level debug never prints a secret's value: the services described at start and stop name their config, not its contents")
    func debugLogsKeepSecrets() async throws {
        let dir = try TemporaryDirectory("run-debug")
        defer { dir.remove() }
        let keygen = try ChildProcess("sonde-agent", ["keygen", "--out", dir.file("agent.key")])
        #expect(try await keygen.waitForExit() == 0)
        try writeProbes(in: dir)
        let secret = "S3cr3t&pw=+%-value"
        let file = dir.file("agent.yaml")
        try """
            agent: {id: eu-1, region: eu}
            collector: {url: http://127.0.0.1:1, key: agent.key}
            spool: {path: spool}
            probes: [probes]
            variables: {target: "http://127.0.0.1:1"}
            secrets: {pw: "env:SONDE_TEST_DEBUG_SECRET"}
            proxy: "http://user:\(secret)@127.0.0.1:1"
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let agent = try ChildProcess("sonde-agent", ["run", "--config", file, "--log-level", "debug"], environment: ["SONDE_TEST_DEBUG_SECRET": secret])
        _ = try await agent.waitForLine(timeout: .seconds(20), stderr: true) { $0.contains("Starting service") && $0.contains("ConfigReloader") }
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit(timeout: .seconds(20)) == 0)
        let output = agent.allOutput
        #expect(output.contains("Service finished"), "the lifecycle's debug lines were printed")
        #expect(!output.contains(secret) && !output.contains("S3cr3t"), "\(output)")
    }

    /// Every run of such a probe would fail as `script` and count against the platform: a new
    /// agent deployed without its EnvironmentFile opened a public incident (first-use review).
    @Test("run refuses to start when a probe's ${env:NAME} (no default) is unset, naming the probe and the variable; a default is enough")
    func runRefusesUnsetProbeEnvironment() async throws {
        let dir = try TemporaryDirectory("run-env")
        defer { dir.remove() }
        let keygen = try ChildProcess("sonde-agent", ["keygen", "--out", dir.file("agent.key")])
        #expect(try await keygen.waitForExit() == 0)
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        func probe(_ password: String) throws {
            try """
                name: login
                component: login
                interval: 30s
                timeout: 5s
                steps:
                  - name: login
                    request: {method: POST, url: "http://127.0.0.1:1/login", form: {user: probe, password: "\(password)"}}
                """.write(toFile: dir.file("probes/login.yaml"), atomically: true, encoding: .utf8)
        }
        try probe("${env:SONDE_TEST_SURELY_UNSET_PW}")
        let file = dir.file("agent.yaml")
        try "agent: {id: eu-1, region: eu}\ncollector: {url: http://127.0.0.1:1, key: agent.key}\nspool: {path: spool}\nprobes: [probes]\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let refused = try ChildProcess("sonde-agent", ["run", "--config", file])
        #expect(try await refused.waitForExit() == 2)
        #expect(refused.allOutput.contains("probe login: environment variable SONDE_TEST_SURELY_UNSET_PW (${env:SONDE_TEST_SURELY_UNSET_PW}) is not set for the agent"), "\(refused.allOutput)")
        #expect(refused.allOutput.contains("refusing to start"))

        try probe("${env:SONDE_TEST_SURELY_UNSET_PW:-fallback}")
        let started = try ChildProcess("sonde-agent", ["run", "--config", file])
        _ = try await started.waitForLine(timeout: .seconds(20), stderr: true) { $0.contains("agent starting") }
        started.signal(SIGTERM)
        #expect(try await started.waitForExit(timeout: .seconds(20)) == 0)
    }

    @Test("run without a key exits 2 and names the keygen command")
    func runRefusesMissingKey() async throws {
        let dir = try TemporaryDirectory("run-nokey")
        defer { dir.remove() }
        let file = dir.file("agent.yaml")
        try "agent: {id: eu-1}\ncollector: {url: http://127.0.0.1:1, key: agent.key}\nspool: {path: spool}\nprobes: [probes]\n"
            .write(toFile: file, atomically: true, encoding: .utf8)
        let agent = try ChildProcess("sonde-agent", ["run", "--config", file])
        #expect(try await agent.waitForExit() == 2)
        #expect(agent.allOutput.contains("collector.key: key file \(dir.path)/agent.key"))
        #expect(agent.allOutput.contains("sonde-agent keygen --out"))
    }

    @Test("validate lists every config problem as file:line:column: field: message and exits 1")
    func validateReportsProblems() async throws {
        let dir = try TemporaryDirectory("validate")
        defer { dir.remove() }
        let file = dir.file("agent.yaml")
        try "agent:\n  id: eu-1\n  zone: eu\nscheduling: {jitter: 2}\n".write(toFile: file, atomically: true, encoding: .utf8)
        let validate = try ChildProcess("sonde-agent", ["validate", "--config", file])
        #expect(try await validate.waitForExit() == 1)
        #expect(validate.stdoutLines.contains("\(file):3:3: agent.zone: unknown key 'zone'; expected one of: id, region"))
        #expect(validate.stdoutLines.contains { $0.hasPrefix("\(file):4:22: scheduling.jitter: expected a fraction") })
        #expect(validate.stdoutLines.contains { $0.contains("probes: no probe scripts given") })
    }

    /// Two probes against a real HTTP server: one passes, one fails its status assertion.
    func writeProbes(in dir: TemporaryDirectory) throws {
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        for (name, path, control) in [("health", "/ok", false), ("broken", "/missing", true)] {
            try """
                name: \(name)
                component: api
                interval: 30s
                timeout: 5s
                control: \(control)
                steps:
                  - name: get
                    request:
                      method: GET
                      url: ${target}\(path)
                    assert:
                      status: 200
                """.write(toFile: dir.file("probes/\(name).yaml"), atomically: true, encoding: .utf8)
        }
    }

    @Test("once --format json prints one SPEC result per line and exits 1 when a probe failed")
    func onceJSON() async throws {
        let dir = try TemporaryDirectory("once")
        defer { dir.remove() }
        let target = try LoopbackHTTPServer { request in request.path == "/ok" ? .json(200, "{}") : .json(404, #"{"error":"nope"}"#) }
        defer { target.stop() }
        try writeProbes(in: dir)
        let once = try ChildProcess(
            "sonde-agent", ["once", "--probes", dir.file("probes"), "--var", "target=\(target.baseURL)", "--id", "lab-1", "--format", "json"])
        #expect(try await once.waitForExit() == 1)
        let validate = try ChildProcess("sonde-agent", ["validate", "--probes", dir.file("probes"), "--var", "target=http://127.0.0.1:1"])
        #expect(try await validate.waitForExit() == 0)
        #expect(validate.stdoutLines == ["ok: 2 probes"])
        let lines = once.stdoutLines
        #expect(lines.count == 2)
        let results = try lines.map { try SondeJSON.decode(ProbeResult.self, from: Data($0.utf8)) }
        #expect(results.map(\.probe) == ["broken", "health"])
        for (line, result) in zip(lines, results) {
            let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
            for key in ["id", "probe", "component", "agent", "region", "started_at", "duration_ms", "outcome", "steps"] {
                #expect(object[key] != nil, "\(key) in \(line)")
            }
            #expect(result.agent == "lab-1")
            #expect(result.region == "local")
            #expect(result.steps.first?.url == "\(target.baseURL)\(result.probe == "health" ? "/ok" : "/missing")")
        }
        #expect(results[1].outcome == .ok)
        #expect(results[1].error == nil)
        #expect(results[1].steps.first?.status == 200)
        #expect(results[0].outcome == .failed)
        #expect(results[0].error?.kind == .httpStatus || results[0].error?.kind == .assertion)
        #expect(results[0].control == true)
    }

    @Test("validate warns about an ${env:NAME} that is not set where it runs, and still passes")
    func validateWarnsAboutUnsetEnvironment() async throws {
        let dir = try TemporaryDirectory("validate-env")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        try """
            name: login
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "https://example.com/", headers: {X-Key: "${env:SONDE_TEST_SURELY_UNSET_KEY}"}}
            """.write(toFile: dir.file("probes/login.yaml"), atomically: true, encoding: .utf8)
        let validate = try ChildProcess("sonde-agent", ["validate", "--probes", dir.file("probes")])
        #expect(try await validate.waitForExit() == 0)
        #expect(validate.stdoutLines.contains { $0.contains("SONDE_TEST_SURELY_UNSET_KEY") && $0.contains("is not set here") && $0.contains("in login") }, "\(validate.stdoutLines)")
        #expect(validate.stdoutLines.last == "ok: 1 probes")
    }

    @Test("once prints the scripts' warnings (insecure: true) on stderr, as validate does, and still runs them")
    func onceWarns() async throws {
        let dir = try TemporaryDirectory("once")
        defer { dir.remove() }
        let target = try LoopbackHTTPServer { _ in .json(200, "{}") }
        defer { target.stop() }
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        try """
            name: lab
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "${target}/", tls: {insecure: true}}
            """.write(toFile: dir.file("probes/lab.yaml"), atomically: true, encoding: .utf8)
        let once = try ChildProcess("sonde-agent", ["once", "--probes", dir.file("probes"), "--var", "target=\(target.baseURL)", "--format", "json"])
        #expect(try await once.waitForExit() == 0)
        #expect(once.stderrLines.contains { $0.contains("lab.yaml:7:") && $0.contains("insecure: true accepts any certificate") }, "\(once.stderrLines)")
        #expect(once.stdoutLines.count == 1)
    }

    @Test("--log-format json: every log line on stderr is one JSON object with ts, level, logger, msg and the metadata")
    func jsonLogs() async throws {
        let dir = try TemporaryDirectory("once")
        defer { dir.remove() }
        let target = try LoopbackHTTPServer { _ in .json(503, #"{"error": "down \"now\""}"#) }
        defer { target.stop() }
        try writeProbes(in: dir)
        let once = try ChildProcess(
            "sonde-agent", ["once", "--probes", dir.file("probes"), "--var", "target=\(target.baseURL)", "--log-format", "json", "--log-level", "debug"])
        #expect(try await once.waitForExit() == 1)
        let lines = once.stderrLines.filter { !$0.isEmpty }
        #expect(lines.count >= 2, "a debug line per step and per run: \(lines)")
        for line in lines {
            let object = try #require(try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "not JSON: \(line)")
            #expect(object["logger"] as? String == "sonde.agent" && object["level"] as? String == "debug" && object["ts"] is String, "\(line)")
        }
        let finished = lines.compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }.filter { $0["msg"] as? String == "probe run finished" }
        #expect(finished.count == 2 && finished.allSatisfy { $0["outcome"] as? String == "failed" && $0["probe.name"] is String }, "\(lines)")
    }

    @Test("once --format table shows probe, component, outcome, duration, status and error; exit 0 when all pass")
    func onceTable() async throws {
        let dir = try TemporaryDirectory("once")
        defer { dir.remove() }
        let target = try LoopbackHTTPServer { _ in .json(200, "{}") }
        defer { target.stop() }
        try writeProbes(in: dir)
        let once = try ChildProcess("sonde-agent", ["once", "--probes", dir.file("probes"), "--var", "target=\(target.baseURL)"])
        #expect(try await once.waitForExit() == 0)
        let lines = once.stdoutLines
        #expect(lines.first?.split(separator: " ", omittingEmptySubsequences: true) == ["PROBE", "COMPONENT", "OUTCOME", "DURATION", "STATUS", "ERROR"])
        #expect(lines.contains { $0.hasPrefix("health ") && $0.contains(" ok ") && $0.contains(" 200 ") })
        #expect(lines.last == "2 probes: 2 ok, 0 degraded, 0 failed")
    }

    /// The end of a message is often where the fix is (first-use review: "… is not set on this
    /// agent" was cut off): the table cuts at 80 characters, and the whole error follows it.
    @Test("once --format table gives an error cut in the table whole below it")
    func onceTableLongErrors() {
        let message = "environment variable MYAPP_PASSWORD (from ${env:MYAPP_PASSWORD}) is not set on this agent"
        let result = ProbeResult(
            probe: "journey", component: "api", agent: "a", region: "r", startedAt: Date(), durationMs: 1, outcome: .failed,
            error: ProbeError(kind: .script, step: "login", message: message), steps: [])
        let text = ResultTable.render([result])
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains { $0.hasPrefix("journey ") && $0.hasSuffix("…") }, "\(text)")
        #expect(lines.contains("  journey: script at login: \(message)"), "\(text)")
        #expect(lines.last == "1 probes: 0 ok, 0 degraded, 1 failed")
    }

    @Test("once with no probes at all exits 2 and says what to pass")
    func onceWithoutProbes() async throws {
        let dir = try TemporaryDirectory("once")
        defer { dir.remove() }
        let once = try ChildProcess("sonde-agent", ["once", "--probes", dir.path])
        #expect(try await once.waitForExit() == 2)
        #expect(once.allOutput.contains(dir.path))
    }
}

@Suite("sonde-agent help")
struct HelpTests {
    @Test("--help lists the four commands")
    func help() async throws {
        let help = try ChildProcess("sonde-agent", ["--help"])
        #expect(try await help.waitForExit() == 0)
        let text = help.stdoutLines.joined(separator: "\n")
        for command in ["run", "once", "validate", "keygen"] {
            #expect(help.stdoutLines.contains { $0.trimmingCharacters(in: .whitespaces).hasPrefix(command + " ") }, "\(command) in:\n\(text)")
        }
    }

    @Test("the agent links FoundationEssentials only (neither Foundation nor ICU: ~14 MiB of RSS), libcurl and PCRE2")
    func agentDoesNotLoadFoundation() async throws {
        let ldd = try ChildProcess("/usr/bin/ldd", [Products.path("sonde-agent")])
        #expect(try await ldd.waitForExit() == 0, "\(ldd.allOutput)")
        let libraries = ldd.stdoutLines.compactMap { $0.trimmingCharacters(in: .whitespaces).split(separator: " ").first.map(String.init) }
        #expect(libraries.contains { $0.hasPrefix("libcurl") }, "ldd listed: \(libraries)")
        // Probe regexes run on PCRE2 (with limits and a deadline), not on Swift's Regex.
        #expect(libraries.contains { $0.hasPrefix("libpcre2-8") }, "ldd listed: \(libraries)")
        let heavy = libraries.filter { $0.hasPrefix("libFoundation.so") || $0.hasPrefix("libFoundationInternationalization") || $0.contains("ICU") || $0.hasPrefix("libicu") }
        #expect(heavy.isEmpty, "sonde-agent loads \(heavy): something on the agent side imports Foundation instead of FoundationEssentials")
    }
}
