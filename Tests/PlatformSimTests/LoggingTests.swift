import CurlHTTP
import Foundation
import Logging
import SondeTestSupport
import Testing

@testable import PlatformSim

@Suite("Logging")
struct LoggingTests {
    @Test func oneDebugLinePerRequestWithRegionMethodPathStatus() async throws {
        let logs = CapturedLogs()
        let logger = logs.logger("test.sim", level: .trace)
        let sim = try await PlatformSimulator.start(.init(regions: ["eu", "us"]), logger: logger)
        defer { Task { try? await sim.shutdown() } }
        try sim.addFault(Fault(.error(status: 502), regions: ["us"]))
        _ = try await CurlHTTPClient.shared.perform(HTTPRequest(url: sim.baseURL(for: "eu") + "/healthz"))
        _ = try await CurlHTTPClient.shared.perform(HTTPRequest(url: sim.baseURL(for: "us") + "/v1/models?limit=1"))
        try await waitUntil("two request lines", timeout: .seconds(2)) {
            logs.messages(containing: "request").filter { $0.message == "request" }.count == 2
        }
        let lines = logs.all.filter { $0.message == "request" }
        #expect(lines.allSatisfy { $0.level == .debug })
        #expect(lines[0].metadata["sim.region"] == "eu")
        #expect(lines[0].metadata["http.method"] == "GET")
        #expect(lines[0].metadata["http.path"] == "/healthz")
        #expect(lines[0].metadata["http.status"] == "200")
        #expect(lines[1].metadata["sim.region"] == "us")
        #expect(lines[1].metadata["http.path"] == "/v1/models")
        #expect(lines[1].metadata["http.status"] == "502")
        #expect(lines[1].metadata["sim.faults"] == "f-1")
    }
}
