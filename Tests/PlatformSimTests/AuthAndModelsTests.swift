import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

@testable import PlatformSim

@Suite("Auth, models, health, routing")
struct AuthAndModelsTests {
    @Test func loginReturnsBearerTokenThatOpensModels() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let login = try await h.request("POST", "/v1/auth/login", json: #"{"username":"probe","password":"probe-password"}"#)
        #expect(login.status == 200)
        let body = try login.json()
        let token = try #require(body["access_token"] as? String)
        #expect(token.hasPrefix("tok_"))
        #expect(body["token_type"] as? String == "bearer")
        #expect(body["expires_in"] as? Int == 3600)

        // A token from one region works in another: the platform's state is shared.
        let models = try await h.request("GET", "/v1/models", region: "us", token: token)
        #expect(models.status == 200)
        let data = try #require(try models.json()["data"] as? [[String: Any]])
        #expect(data.compactMap { $0["id"] as? String } == ["sim-small", "sim-large"])
        #expect(data.allSatisfy { $0["owned_by"] as? String == "sonde-sim" && $0["object"] as? String == "model" })
        let one = try await h.request("GET", "/v1/models/sim-large", token: token)
        #expect(one.status == 200)
        let missing = try await h.request("GET", "/v1/models/gpt-9", token: token)
        #expect(missing.status == 404)
        #expect(missing.errorCode == "model_not_found")
    }

    @Test func responsesCarryRealisticHeaders() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let first = try await h.request("GET", "/healthz")
        let second = try await h.request("GET", "/healthz")
        #expect(first.headers.value(for: "Content-Type") == "application/json")
        #expect(first.headers.value(for: "Content-Length") == String(first.body.count))
        let id = try #require(first.headers.value(for: "x-request-id"))
        #expect(id.hasPrefix("req_"))
        #expect(id != second.headers.value(for: "x-request-id"))
    }

    @Test func wrongCredentialsAnswerInvalidCredentials() async throws {
        let h = try await SimHarness.start(users: ["alice": "secret", "bob": "hunter2"])
        defer { Task { try? await h.shutdown() } }
        for (user, password) in [("alice", "wrong"), ("nobody", "secret"), ("probe", "probe-password")] {
            let response = try await h.request("POST", "/v1/auth/login", json: #"{"username":"\#(user)","password":"\#(password)"}"#)
            #expect(response.status == 401)
            #expect(response.errorCode == "invalid_credentials")
            let message = try #require((try response.json()["error"] as? [String: Any])?["message"] as? String)
            #expect(message == "Invalid username or password")
        }
        _ = try await h.login(username: "bob", password: "hunter2")
        let malformed = try await h.request("POST", "/v1/auth/login", json: #"{"user":"alice"}"#)
        #expect(malformed.status == 400)
        #expect(malformed.errorCode == "invalid_request")
        let wrongMethod = try await h.request("GET", "/v1/auth/login")
        #expect(wrongMethod.status == 405)
    }

    @Test func endpointsNeedAValidToken() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        for path in ["/v1/models", "/v1/files", "/v1/batches/batch_x"] {
            let none = try await h.request("GET", path)
            #expect(none.status == 401, "\(path)")
            #expect(none.errorCode == "invalid_token")
            let bogus = try await h.request("GET", path, token: "tok_nonsense")
            #expect(bogus.status == 401)
            #expect(bogus.errorCode == "invalid_token")
        }
    }

    @Test func tokensExpireAfterTheirTTL() async throws {
        let h = try await SimHarness.start(tokenTTL: .milliseconds(400))
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        #expect(try await h.request("GET", "/v1/models", token: token).status == 200)
        var last: HTTPResponse?
        try await waitUntil("the token to expire", timeout: .seconds(5)) {
            last = try await h.request("GET", "/v1/models", token: token)
            return last?.status == 401
        }
        #expect(last?.errorCode == "token_expired")
        // A fresh login works again.
        #expect(try await h.request("GET", "/v1/models", token: try await h.login()).status == 200)
    }

    @Test func healthzNamesTheRegionAndUnknownPathsAre404() async throws {
        let h = try await SimHarness.start(regions: ["eu", "us", "ap"])
        defer { Task { try? await h.shutdown() } }
        for region in ["eu", "us", "ap"] {
            let health = try await h.request("GET", "/healthz", region: region)
            #expect(health.status == 200)
            #expect(try health.json()["status"] as? String == "ok")
            #expect(try health.json()["region"] as? String == region)
        }
        let unknown = try await h.request("GET", "/v2/whatever")
        #expect(unknown.status == 404)
        #expect(unknown.errorCode == "not_found")
        let token = try await h.login()
        let unknownUnderV1 = try await h.request("GET", "/v1/files/file-1/other", token: token)
        #expect(unknownUnderV1.status == 404)
        let notAllowed = try await h.request("PUT", "/v1/models", token: token)
        #expect(notAllowed.status == 405)
        #expect(notAllowed.errorCode == "method_not_allowed")
    }

    @Test func keepAliveConnectionsServeSeveralRequests() async throws {
        // Two requests over one raw socket: the second answer arrives on the same connection.
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let socket = try RawSocket(port: try #require(h.sim.port(for: "eu")))
        defer { socket.close() }
        try socket.send("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        var text = ""
        try await waitUntil("two responses", timeout: .seconds(5)) {
            text += socket.receiveAvailable()
            return text.components(separatedBy: "HTTP/1.1 200 OK").count == 3
        }
    }

    @Test func startFailsClearlyWhenAPortIsTaken() async throws {
        let first = try await PlatformSimulator.start(.init(regions: ["eu"]))
        defer { Task { try? await first.shutdown() } }
        let taken = try #require(first.port(for: "eu"))
        await #expect(throws: PlatformSimError.portInUse(port: taken, region: "eu")) {
            _ = try await PlatformSimulator.start(.init(regions: ["eu"], portBase: taken))
        }
        #expect(PlatformSimError.portInUse(port: 18400, region: "eu").description == "port 18400 for region eu is in use; pick another --port-base")
        await #expect(throws: PlatformSimError.self) { _ = try await PlatformSimulator.start(.init(regions: ["eu", "eu"])) }
    }
}
