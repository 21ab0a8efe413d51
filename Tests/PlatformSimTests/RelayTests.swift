import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

@testable import PlatformSim

@Suite("TCP relay")
struct RelayTests {
    @Test func relayPassesTrafficCutsAndRestores() async throws {
        let h = try await SimHarness.start(regions: ["eu"])
        defer { Task { try? await h.shutdown() } }
        let relay = try await TCPRelay.start(targetHost: "127.0.0.1", targetPort: try #require(h.sim.port(for: "eu")))
        defer { Task { await relay.stop() } }
        let health = HTTPRequest(url: relay.url + "/healthz", timeout: .seconds(3), connectTimeout: .seconds(1))
        #expect(try await CurlHTTPClient.shared.perform(health).status == 200)

        // A big body both ways proves bytes pass intact in both directions.
        let token = try await h.login()
        let content = randomBytes(2 << 20, seed: 3)
        let (body, contentType) = multipart(fields: [("purpose", nil, Data("batch".utf8)), ("file", "x.bin", content)])
        let upload = try await CurlHTTPClient.shared.perform(
            HTTPRequest(method: "POST", url: relay.url + "/v1/files", headers: [HTTPHeader("Authorization", "Bearer \(token)"), HTTPHeader("Content-Type", contentType)], body: body))
        let id = try #require(try upload.json()["id"] as? String)
        let download = try await CurlHTTPClient.shared.perform(
            HTTPRequest(url: relay.url + "/v1/files/\(id)/content", headers: [HTTPHeader("Authorization", "Bearer \(token)")]))
        #expect(download.body == content)

        // A connection open across the cut is closed by it.
        let open = try RawSocket(port: relay.listenPort)
        defer { open.close() }
        try await waitUntil("the relay to see the connection", timeout: .seconds(2)) { relay.openConnections >= 2 }
        await relay.cut()
        #expect(relay.isCut)
        try await waitUntil("the open connection to close", timeout: .seconds(2)) { open.peerClosed() }
        #expect(throws: SocketConnectError.self) { _ = try RawSocket(port: relay.listenPort) }
        await #expect {
            _ = try await CurlHTTPClient.shared.perform(health)
        } throws: { ($0 as? HTTPTransferError)?.kind == .connect }

        try await relay.restore()
        #expect(try await CurlHTTPClient.shared.perform(health).status == 200)
    }

    @Test func relayExecutableObeysSIGUSR1AndSIGUSR2() async throws {
        let h = try await SimHarness.start(regions: ["eu"])
        defer { Task { try? await h.shutdown() } }
        let target = "127.0.0.1:\(try #require(h.sim.port(for: "eu")))"
        let relay = try ChildProcess("sonde-sim", ["relay", "--listen", "127.0.0.1:0", "--to", target])
        defer { relay.signal(SIGKILL) }
        let line = try await relay.waitForLine(timeout: .seconds(20)) { $0.hasPrefix("relay ") }
        let url = String(line.dropFirst("relay ".count))
        let portText = try #require(url.split(separator: ":").last)
        let port = try #require(Int(portText))
        let health = HTTPRequest(url: url + "/healthz", timeout: .seconds(3), connectTimeout: .seconds(1))
        #expect(try await CurlHTTPClient.shared.perform(health).status == 200)

        relay.signal(SIGUSR1)
        try await waitUntil("connects to be refused", timeout: .seconds(5)) {
            do { try RawSocket(port: port).close(); return false } catch { return true }
        }
        relay.signal(SIGUSR2)
        try await waitUntil("the relay to pass traffic again", timeout: .seconds(5)) {
            (try? await CurlHTTPClient.shared.perform(health))?.status == 200
        }
        relay.signal(SIGTERM)
        #expect(try await relay.waitForExit(timeout: .seconds(10)) == 0)
    }

    @Test func flakyRelayFailsAboutItsFractionWithGatewayErrorsAndRecovers() async throws {
        let h = try await SimHarness.start(regions: ["eu"])
        defer { Task { try? await h.shutdown() } }
        let relay = try await TCPRelay.start(targetHost: "127.0.0.1", targetPort: try #require(h.sim.port(for: "eu")), seed: 7)
        defer { Task { await relay.stop() } }
        let health = HTTPRequest(url: relay.url + "/healthz", timeout: .seconds(3), connectTimeout: .seconds(1))

        relay.setErrors(RelayErrors(fraction: 0.3, status: 502))
        var failed = 0
        let requests = 400
        for _ in 0..<requests {
            let response = try await CurlHTTPClient.shared.perform(health)
            if response.status == 502 {
                failed += 1
                // What a broken gateway answers: a JSON error body, and the connection closed.
                #expect(response.headers.value(for: "Content-Type") == "application/json")
                #expect(try response.json()["error"] != nil)
            } else {
                #expect(response.status == 200)
            }
        }
        // 400 draws at p = 0.3: the mean is 120, σ ≈ 9.2; ±4σ is a seeded bound, not luck.
        #expect((83...157).contains(failed), "\(failed) of \(requests) failed")

        // A request with a body in flight still reads the 502 (no reset).
        relay.setErrors(RelayErrors(fraction: 1, status: 503))
        let upload = try await CurlHTTPClient.shared.perform(
            HTTPRequest(method: "POST", url: relay.url + "/v1/files", body: randomBytes(256 << 10, seed: 1), timeout: .seconds(5)))
        #expect(upload.status == 503)

        // Closed unanswered: the client sees the connection end without a response.
        relay.setErrors(RelayErrors(fraction: 1, status: nil))
        await #expect {
            _ = try await CurlHTTPClient.shared.perform(health)
        } throws: { ($0 as? HTTPTransferError) != nil }

        relay.setErrors(nil)
        for _ in 0..<20 { #expect(try await CurlHTTPClient.shared.perform(health).status == 200) }
        #expect(throws: FaultValidationError.self) { try RelayErrors(fraction: 1.5).validate() }
        #expect(throws: FaultValidationError.self) { try RelayErrors(fraction: 0.5, status: 200).validate() }
    }

    @Test func relayExecutableTurnsFlakyOnSIGHUPAndHealthyOnSIGUSR2() async throws {
        let h = try await SimHarness.start(regions: ["eu"])
        defer { Task { try? await h.shutdown() } }
        let target = "127.0.0.1:\(try #require(h.sim.port(for: "eu")))"
        let relay = try ChildProcess("sonde-sim", ["relay", "--listen", "127.0.0.1:0", "--to", target, "--error-fraction", "1", "--error-status", "503"])
        defer { relay.signal(SIGKILL) }
        let url = String(try await relay.waitForLine(timeout: .seconds(20)) { $0.hasPrefix("relay ") }.dropFirst("relay ".count))
        let health = HTTPRequest(url: url + "/healthz", timeout: .seconds(3), connectTimeout: .seconds(1))
        #expect(try await CurlHTTPClient.shared.perform(health).status == 200)

        relay.signal(SIGHUP)
        try await waitUntil("the relay to answer 503", timeout: .seconds(5)) {
            (try? await CurlHTTPClient.shared.perform(health))?.status == 503
        }
        relay.signal(SIGUSR2)
        try await waitUntil("the relay to pass traffic again", timeout: .seconds(5)) {
            (try? await CurlHTTPClient.shared.perform(health))?.status == 200
        }
        relay.signal(SIGTERM)
        #expect(try await relay.waitForExit(timeout: .seconds(10)) == 0)

        let bad = try ChildProcess("sonde-sim", ["relay", "--to", target, "--error-fraction", "2"])
        #expect(try await bad.waitForExit() != 0)
        #expect(bad.allOutput.contains("--error-fraction"))
    }
}
