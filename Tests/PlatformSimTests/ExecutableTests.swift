import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

/// `sonde-sim` as a real process: printed addresses, fault subcommands, signals.
@Suite("sonde-sim executable")
struct ExecutableTests {
    /// Starts `sonde-sim` on ephemeral ports and returns region → base URL from its output.
    static func startSim(_ arguments: [String] = ["--regions", "eu,us"]) async throws -> (ChildProcess, [String: String]) {
        let process = try ChildProcess("sonde-sim", arguments)
        let regions = arguments.firstIndex(of: "--regions").map { arguments[$0 + 1].split(separator: ",").map(String.init) } ?? []
        try await process.waitForLine(timeout: .seconds(20)) { $0.hasPrefix("\(regions.last!) ") }
        var urls: [String: String] = [:]
        for line in process.stdoutLines {
            let parts = line.split(separator: " ")
            if parts.count == 2 { urls[String(parts[0])] = String(parts[1]) }
        }
        return (process, urls)
    }

    func fault(_ arguments: [String]) async throws -> (status: Int32, output: String) {
        let process = try ChildProcess("sonde-sim", ["fault"] + arguments)
        let status = try await process.waitForExit(timeout: .seconds(20))
        // Let the pipes drain: the last line is complete once the process is gone.
        try await waitUntil("output of sonde-sim fault", timeout: .seconds(2)) { !process.allOutput.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty }
        return (status, process.allOutput)
    }

    @Test func servesRegionsSetsListsClearsFaultsAndStopsOnSIGTERM() async throws {
        let (sim, urls) = try await Self.startSim(["--regions", "eu,us", "--batch-pace", "200ms"])
        #expect(sim.stdoutLines.count == 2)
        let eu = try #require(urls["eu"])
        let us = try #require(urls["us"])
        #expect(eu.hasPrefix("http://127.0.0.1:"))
        #expect(eu != us)
        let health = try await CurlHTTPClient.shared.perform(HTTPRequest(url: us + "/healthz"))
        #expect(health.bodyText.contains(#""region":"us""#))

        let set = try await fault(["set", "--type", "error", "--status", "503", "--component", "files", "--region", "eu", "--fraction", "1", "--sim", eu])
        #expect(set.status == 0, "\(set.output)")
        #expect(set.output.contains("set f-1  error 503  components=files  regions=eu"), "\(set.output)")

        let listed = try await fault(["list", "--sim", us, "--json"])
        #expect(listed.status == 0)
        let json = try JSONSerialization.jsonObject(with: Data(listed.output.utf8)) as? [String: Any]
        let faults = try #require(json?["faults"] as? [[String: Any]])
        #expect(faults.first?["id"] as? String == "f-1")
        let text = try await fault(["list", "--sim", eu])
        #expect(text.output.contains("f-1  error 503"))

        let cleared = try await fault(["clear", "--id", "f-1", "--sim", eu])
        #expect(cleared.status == 0)
        #expect(cleared.output.contains("cleared f-1"))
        #expect(try await fault(["list", "--sim", eu]).output.contains("no active faults"))

        sim.signal(SIGTERM)
        #expect(try await sim.waitForExit(timeout: .seconds(10)) == 0)
    }

    @Test func clearAllAndJSONOutput() async throws {
        let (sim, urls) = try await Self.startSim(["--regions", "eu,us"])
        defer { sim.signal(SIGKILL) }
        let eu = try #require(urls["eu"])
        let set = try await fault(["set", "--type", "latency", "--delay-ms", "50", "--component", "api,files", "--json", "--sim", eu])
        let json = try JSONSerialization.jsonObject(with: Data(set.output.utf8)) as? [String: Any]
        #expect(json?["delay_ms"] as? Int == 50)
        #expect(json?["components"] as? [String] == ["api", "files"])
        _ = try await fault(["set", "--type", "hang", "--user", "probe", "--sim", eu])
        let cleared = try await fault(["clear", "--all", "--sim", eu])
        #expect(cleared.output.contains("cleared 2 faults"), "\(cleared.output)")
        let bad = try await fault(["set", "--type", "meteor", "--sim", eu])
        #expect(bad.status != 0)
        #expect(bad.output.contains("--type: expected one of error, latency"), "\(bad.output)")
    }

    @Test func usersComeFromFlagsOrTheEnvironment() async throws {
        let fromEnv = try ChildProcess("sonde-sim", ["--regions", "eu"], environment: ["SONDE_SIM_PASSWORD": "from-env"])
        defer { fromEnv.signal(SIGKILL) }
        let flags = try ChildProcess("sonde-sim", ["--regions", "eu", "--user", "alice:a:b", "--user", "bob:b", "--token-ttl", "60"])
        defer { flags.signal(SIGKILL) }
        func login(_ process: ChildProcess, _ user: String, _ password: String) async throws -> HTTPResponse {
            let line = try await process.waitForLine(timeout: .seconds(20)) { $0.hasPrefix("eu ") }
            let url = String(line.dropFirst(3))
            return try await CurlHTTPClient.shared.perform(
                HTTPRequest(method: "POST", url: url + "/v1/auth/login", body: Data(#"{"username":"\#(user)","password":"\#(password)"}"#.utf8)))
        }
        #expect(try await login(fromEnv, "probe", "from-env").status == 200)
        #expect(try await login(fromEnv, "probe", "probe-password").status == 401)
        #expect(try await login(flags, "alice", "a:b").status == 200)
        let bob = try await login(flags, "bob", "b")
        #expect(bob.bodyText.contains(#""expires_in":60"#))
        #expect(try await login(flags, "probe", "probe-password").status == 401)
    }

    @Test func faultCommandExplainsAnUnreachableSim() async throws {
        // A port that was just free: nothing listens there.
        let listener = try LoopbackHTTPServer { _ in .drop }
        let url = listener.baseURL
        listener.stop()
        let result = try await fault(["list", "--sim", url])
        #expect(result.status != 0)
        #expect(result.output.contains("no sonde-sim answers at \(url): start one with `sonde-sim --regions"), "\(result.output)")
    }

    @Test func faultSetReportsTheSimsRefusal() async throws {
        let (sim, urls) = try await Self.startSim(["--regions", "eu"])
        defer { sim.signal(SIGKILL) }
        let result = try await fault(["set", "--type", "error", "--region", "mars", "--sim", try #require(urls["eu"])])
        #expect(result.status != 0)
        #expect(result.output.contains("regions: this sim serves eu, not \"mars\""), "\(result.output)")
    }

    @Test func takenPortFailsWithAClearMessage() async throws {
        let (first, urls) = try await Self.startSim(["--regions", "eu"])
        defer { first.signal(SIGKILL) }
        let port = try #require(urls["eu"].flatMap { $0.split(separator: ":").last }.map(String.init))
        let second = try ChildProcess("sonde-sim", ["--regions", "eu", "--port-base", port])
        let status = try await second.waitForExit(timeout: .seconds(20))
        #expect(status != 0)
        try await waitUntil("the error line", timeout: .seconds(2)) { second.allOutput.contains("is in use") }
        #expect(second.allOutput.contains("port \(port) for region eu is in use; pick another --port-base"))
    }
}
