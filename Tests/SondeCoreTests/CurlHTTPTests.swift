import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@Suite struct CurlHTTPTests {
    let client = CurlHTTPClient(threads: 8)

    @Test func phasesAddUpAndServerDelayShowsInTTFB() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#, delay: .milliseconds(200)) }
        defer { server.stop() }
        let response = try await client.perform(HTTPRequest(url: server.baseURL + "/slow"))
        #expect(response.status == 200)
        #expect(response.bodyText == #"{"ok":true}"#)
        #expect(response.headers.value(for: "content-type") == "application/json")
        let t = response.timings
        #expect(t.ttfb >= 200 && t.ttfb < 260, "ttfb \(t.ttfb)")
        #expect(abs(t.dns + t.connect + t.tls + t.ttfb + t.transfer - t.total) < 0.001)
    }

    @Test func sendsMethodHeadersAndBodyExactly() async throws {
        let server = try LoopbackHTTPServer { request in
            .respond(status: 201, body: request.body)
        }
        defer { server.stop() }
        let payload = Data((0..<300_000).map { UInt8($0 % 251) })
        let response = try await client.perform(HTTPRequest(
            method: "PUT", url: server.baseURL + "/echo", headers: [HTTPHeader("X-Test", "1")], body: payload))
        #expect(response.status == 201)
        #expect(response.body == payload)
        let seen = try #require(server.requests.first)
        #expect(seen.method == "PUT")
        #expect(seen.header("x-test") == "1")
    }

    @Test func hangingServerTimesOutOnTime() async throws {
        let server = try LoopbackHTTPServer { _ in .hang }
        defer { server.stop() }
        let start = ContinuousClock.now
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL, timeout: .milliseconds(500)))
        }
        let elapsed = ContinuousClock.now - start
        #expect(error?.kind == .timeout)
        #expect(error?.errorKind == .timeout)
        #expect(elapsed < .seconds(2))
    }

    @Test func droppedConnectionAndRefusedPortAreConnectionErrors() async throws {
        let server = try LoopbackHTTPServer { _ in .drop }
        defer { server.stop() }
        let dropped = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL))
        }
        #expect(dropped?.kind == .connectionLost)
        let port = server.port
        server.stop()
        let refused = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: "http://127.0.0.1:\(port)/"))
        }
        #expect(refused?.kind == .connect)
    }

    @Test func oversizedResponseIsRefused() async throws {
        let server = try LoopbackHTTPServer { _ in .respond(status: 200, body: Data(count: 100_000)) }
        defer { server.stop() }
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL, maxResponseBytes: 10_000))
        }
        #expect(error?.kind == .responseTooLarge)
    }

    @Test func cancellingTheTaskAbortsTheTransfer() async throws {
        let server = try LoopbackHTTPServer { _ in .hang }
        defer { server.stop() }
        let task = Task { try await client.perform(HTTPRequest(url: server.baseURL, timeout: .seconds(30))) }
        try await waitUntil("the request to arrive") { !server.requests.isEmpty }
        let start = ContinuousClock.now
        task.cancel()
        let result = await task.result
        #expect(ContinuousClock.now - start < .seconds(3))
        guard case .failure(let error as HTTPTransferError) = result else {
            Issue.record("expected a cancelled transfer, got \(result)")
            return
        }
        #expect(error.kind == .cancelled)
    }
}
