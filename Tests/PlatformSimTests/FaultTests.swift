import CurlHTTP
import Foundation
import NIOPosix
import SondeTestSupport
import Testing

@testable import PlatformSim

@Suite("Faults")
struct FaultTests {
    @Test func errorFaultHitsOnlyItsRegionAndComponent() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        try h.sim.addFault(Fault(.error(status: 503), components: [.files], regions: ["eu"]))
        let eu = try await h.request("GET", "/v1/files", region: "eu", token: token)
        #expect(eu.status == 503)
        #expect(eu.errorCode == "server_error")
        #expect(eu.bodyText.contains("elevated error rates"))
        #expect(try await h.request("GET", "/v1/files", region: "us", token: token).status == 200)
        #expect(try await h.request("GET", "/v1/models", region: "eu", token: token).status == 200)
        #expect(try await h.request("GET", "/healthz", region: "eu").status == 200)
        h.sim.clearFaults()
        #expect(try await h.request("GET", "/v1/files", region: "eu", token: token).status == 200)
    }

    @Test func userScopedFaultSparesOtherUsers() async throws {
        let h = try await SimHarness.start(users: ["alice": "a", "probe": "probe-password"])
        defer { Task { try? await h.shutdown() } }
        let alice = try await h.login(username: "alice", password: "a")
        let probe = try await h.login()
        try h.sim.addFault(Fault(.error(status: 502), users: ["alice"]))
        #expect(try await h.request("GET", "/v1/models", token: alice).status == 502)
        #expect(try await h.request("GET", "/v1/models", token: probe).status == 200)
    }

    @Test func fractionHitsAboutThatShareOfRequests() async throws {
        let h = try await SimHarness.start(seed: 42)
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let half = try h.sim.addFault(Fault(.error(status: 500), components: [.api], fraction: 0.5))
        var failed = 0
        for _ in 0..<200 where try await h.request("GET", "/v1/models", token: token).status == 500 { failed += 1 }
        #expect((60...140).contains(failed), "0.5 of 200 requests failed \(failed) times")

        h.sim.removeFault(id: half)
        try h.sim.addFault(Fault(.error(status: 500), components: [.api], fraction: 0))
        for _ in 0..<30 { #expect(try await h.request("GET", "/v1/models", token: token).status == 200) }
    }

    @Test func latencyDelaysTimeToFirstBytePrecisely() async throws {
        // Its own event loop, so other tests' traffic in this process cannot delay the timer.
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let h = SimHarness(sim: try await PlatformSimulator.start(.init(regions: ["eu", "us"]), eventLoopGroup: group))
        defer { Task { try? await h.shutdown(); try? await group.shutdownGracefully() } }
        let token = try await h.login()
        try h.sim.addFault(Fault(.latency(.milliseconds(200)), components: [.api], regions: ["eu"]))
        var samples: [Double] = []
        for _ in 0..<3 {
            let slow = try await h.request("GET", "/v1/models", region: "eu", token: token)
            #expect(slow.status == 200)
            samples.append(slow.timings.ttfb)
        }
        // Never early; and the best of three (scheduling noise on a loaded machine only adds) within 30 ms.
        #expect(samples.allSatisfy { $0 >= 200 }, "ttfb \(samples) ms for a 200 ms delay")
        #expect(samples.min()! <= 230, "ttfb \(samples) ms for a 200 ms delay")
        let fast = try await h.request("GET", "/v1/models", region: "us", token: token)
        #expect(fast.timings.ttfb < 100)
    }

    @Test func latencyAndErrorCombine() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        try h.sim.addFault(Fault(.latency(.milliseconds(150)), components: [.api]))
        try h.sim.addFault(Fault(.error(status: 503), components: [.api]))
        let response = try await h.request("GET", "/v1/models", token: token)
        #expect(response.status == 503)
        #expect(response.timings.ttfb >= 150)
    }

    @Test func hangKeepsTheClientWaitingAndTheServerHealthy() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        try h.sim.addFault(Fault(.hang, components: [.api], regions: ["eu"]))
        let started = ContinuousClock.now
        await #expect {
            _ = try await h.request("GET", "/v1/models", region: "eu", token: token, timeout: .milliseconds(600))
        } throws: { error in
            (error as? HTTPTransferError)?.kind == .timeout
        }
        #expect(ContinuousClock.now - started >= .milliseconds(550))
        // The server let go of the connection once the client closed it.
        try await waitUntil("the hung connection to be released", timeout: .seconds(5)) { h.sim.openConnections == 0 }
        // The rest of the platform answers meanwhile, even the same region on other components.
        #expect(try await h.request("GET", "/healthz", region: "eu").status == 200)
        #expect(try await h.request("GET", "/v1/files", region: "eu", token: token).status == 200)
        #expect(try await h.request("GET", "/v1/models", region: "us", token: token).status == 200)
    }

    @Test func shutdownClosesHangingConnections() async throws {
        let h = try await SimHarness.start()
        try h.sim.addFault(Fault(.hang))
        let socket = try RawSocket(port: try #require(h.sim.port(for: "eu")))
        defer { socket.close() }
        try socket.send("GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
        // Nothing comes back while the sim runs (a few polls, no answer)...
        var received = ""
        for _ in 0..<4 { received += socket.receiveAvailable() }
        #expect(received.isEmpty)
        // ...and the connection closes when the sim stops.
        try await h.shutdown()
        try await waitUntil("the hung connection to close", timeout: .seconds(5)) { socket.peerClosed() }
    }

    @Test func dropClosesTheConnectionWithoutAResponse() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        try h.sim.addFault(Fault(.drop, components: [.files], regions: ["us"]))
        await #expect {
            _ = try await h.request("GET", "/v1/files", region: "us", token: token)
        } throws: { error in
            (error as? HTTPTransferError)?.kind == .connectionLost
        }
        #expect(try await h.request("GET", "/v1/files", region: "eu", token: token).status == 200)

        let socket = try RawSocket(port: try #require(h.sim.port(for: "us")))
        defer { socket.close() }
        try socket.send("GET /v1/files HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \(token)\r\n\r\n")
        var bytes = ""
        try await waitUntil("the dropped connection to close", timeout: .seconds(5)) {
            bytes += socket.receiveAvailable()
            return socket.peerClosed()
        }
        #expect(bytes.isEmpty)
    }

    @Test func loginRejectRefusesValidCredentialsInItsRegion() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        try h.sim.addFault(Fault(.loginReject, regions: ["eu"]))
        let eu = try await h.request("POST", "/v1/auth/login", region: "eu", json: #"{"username":"probe","password":"probe-password"}"#)
        #expect(eu.status == 401)
        #expect(eu.errorCode == "invalid_credentials")
        _ = try await h.login(region: "us")
    }

    @Test func fileExpiredAnswersRightAfterUploadAndStaysExpired() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        try h.sim.addFault(Fault(.fileExpired, components: [.files]))
        let id = try await h.uploadID(Data("hello".utf8), token: token)
        let content = try await h.request("GET", "/v1/files/\(id)/content", token: token)
        #expect(content.status == 404)
        #expect(content.errorCode == "file_expired")
        #expect(content.bodyText.contains("File \(id) has expired"))
        h.sim.clearFaults()
        let metadata = try await h.request("GET", "/v1/files/\(id)", token: token)
        #expect(metadata.errorCode == "file_expired")
        // Files uploaded after the fault is gone are fine.
        let fresh = try await h.uploadID(Data("hello".utf8), token: token)
        #expect(try await h.request("GET", "/v1/files/\(fresh)/content", token: token).bodyText == "hello")
    }

    @Test func controlAPIAddsListsDeletesAndValidates() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let created = try await h.request(
            "POST", "/_sim/faults", region: "us",
            json: #"{"type":"error","status":503,"components":["files"],"regions":["eu"],"fraction":0.3,"users":["probe"]}"#)
        #expect(created.status == 201)
        let fault = try created.json()
        #expect(fault["id"] as? String == "f-1")
        #expect(fault["type"] as? String == "error")
        #expect(fault["status"] as? Int == 503)
        #expect(fault["fraction"] as? Double == 0.3)
        let latency = try await h.request("POST", "/_sim/faults", json: #"{"type":"latency","delay_ms":50}"#)
        #expect(try latency.json()["delay_ms"] as? Int == 50)

        let list = try await h.request("GET", "/_sim/faults", region: "eu")
        let faults = try #require(try list.json()["faults"] as? [[String: Any]])
        #expect(faults.compactMap { $0["id"] as? String } == ["f-1", "f-2"])
        #expect(h.sim.faults.count == 2)

        #expect(try await h.request("GET", "/_sim/faults/f-2").status == 200)
        #expect(try await h.request("DELETE", "/_sim/faults/f-1").status == 200)
        let again = try await h.request("DELETE", "/_sim/faults/f-1")
        #expect(again.status == 404)
        #expect(again.errorCode == "fault_not_found")
        let cleared = try await h.request("DELETE", "/_sim/faults")
        #expect(try cleared.json()["cleared"] as? Int == 1)
        #expect(h.sim.faults.isEmpty)

        let invalid: [(String, String)] = [
            (#"{"type":"meteor"}"#, "type"),
            (#"{"type":"error","regions":["mars"]}"#, "regions"),
            (#"{"type":"error","fraction":1.5}"#, "fraction"),
            (#"{"type":"latency"}"#, "delay_ms"),
            (#"{"type":"error","components":["billing"]}"#, "components"),
            (#"{"type":"batch_stuck","state":"completed"}"#, "state"),
            (#"{"type":"error","status":200}"#, "status"),
            ("not json", "JSON"),
        ]
        for (body, field) in invalid {
            let response = try await h.request("POST", "/_sim/faults", json: body)
            #expect(response.status == 400, "\(body)")
            #expect(response.errorCode == "invalid_fault")
            #expect(response.bodyText.contains(field), "\(body) → \(response.bodyText)")
        }
    }

    @Test func controlAPIAndHealthAreNeverFaulted() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        try h.sim.addFault(Fault(.drop))
        try h.sim.addFault(Fault(.latency(.seconds(5))))
        #expect(try await h.request("GET", "/healthz").status == 200)
        #expect(try await h.request("GET", "/_sim/faults").status == 200)
        #expect(try await h.request("DELETE", "/_sim/faults").status == 200)
    }

    @Test func libraryRejectsInvalidFaults() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        #expect(throws: FaultValidationError.self) { try h.sim.addFault(Fault(.hang, regions: ["ap"])) }
        #expect(throws: FaultValidationError.self) { try h.sim.addFault(Fault(.hang, fraction: -0.1)) }
        let id = try h.sim.addFault(Fault(.hang, regions: ["us"]))
        #expect(h.sim.faults.first?.id == id)
        #expect(h.sim.removeFault(id: id))
        #expect(!h.sim.removeFault(id: id))
    }

    @Test func faultJSONRoundTrips() throws {
        let fault = Fault(.batchStuck(state: .finalizing), components: [.batch, .files], regions: ["eu"], fraction: 0.25, users: ["probe"], id: "f-9")
        let decoded = try JSONDecoder().decode(Fault.self, from: try JSONEncoder().encode(fault))
        #expect(decoded == fault)
        #expect(fault.summary == "f-9  batch_stuck finalizing  components=batch,files  regions=eu  fraction=0.25  users=probe")
    }
}
