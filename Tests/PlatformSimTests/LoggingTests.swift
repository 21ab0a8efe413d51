import CurlHTTP
import Foundation
import Logging
import SondeTestSupport
import Synchronization
import Testing

@testable import PlatformSim

/// Keeps log records in memory so tests can read them (no global bootstrap).
struct RecordingLogHandler: LogHandler {
    struct Record: Sendable {
        var level: Logger.Level
        var message: String
        var metadata: [String: String]
    }

    final class Store: Sendable {
        let records = Mutex<[Record]>([])
    }

    let store: Store
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace

    init(store: Store) { self.store = store }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var flat: [String: String] = [:]
        for (key, value) in metadata.merging(event.metadata ?? [:], uniquingKeysWith: { $1 }) { flat[key] = "\(value)" }
        store.records.withLock { $0.append(Record(level: event.level, message: "\(event.message)", metadata: flat)) }
    }
}

@Suite("Logging")
struct LoggingTests {
    @Test func oneDebugLinePerRequestWithRegionMethodPathStatus() async throws {
        let store = RecordingLogHandler.Store()
        let logger = Logger(label: "test.sim") { _ in RecordingLogHandler(store: store) }
        let sim = try await PlatformSimulator.start(.init(regions: ["eu", "us"]), logger: logger)
        defer { Task { try? await sim.shutdown() } }
        try sim.addFault(Fault(.error(status: 502), regions: ["us"]))
        _ = try await CurlHTTPClient.shared.perform(HTTPRequest(url: sim.baseURL(for: "eu") + "/healthz"))
        _ = try await CurlHTTPClient.shared.perform(HTTPRequest(url: sim.baseURL(for: "us") + "/v1/models?limit=1"))
        try await waitUntil("two request lines", timeout: .seconds(2)) {
            store.records.withLock { $0.filter { $0.message == "request" }.count == 2 }
        }
        let lines = store.records.withLock { $0.filter { $0.message == "request" } }
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
