import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

@testable import PlatformSim

@Suite("Batches")
struct BatchTests {
    static let input = Data(#"{"custom_id":"one","method":"POST","url":"/v1/chat/completions","body":{}}"#.utf8 + [10] + #"{"custom_id":"two"}"#.utf8 + [10])

    func createBatch(_ h: SimHarness, token: String, fileID: String) async throws -> [String: Any] {
        let response = try await h.request(
            "POST", "/v1/batches", token: token,
            json: #"{"input_file_id":"\#(fileID)","endpoint":"/v1/chat/completions","completion_window":"24h"}"#)
        guard response.status == 200 else { throw TestFailure("batch create: \(response.status) \(response.bodyText)") }
        return try response.json()
    }

    /// Polls the batch until `status` satisfies `done`; returns every status seen, in order.
    func poll(_ h: SimHarness, token: String, id: String, until done: @escaping (String) -> Bool) async throws -> (seen: [String], last: [String: Any]) {
        var seen: [String] = []
        var last: [String: Any] = [:]
        try await waitUntil("batch \(id) to settle", timeout: .seconds(10), every: .milliseconds(20)) {
            last = try await h.request("GET", "/v1/batches/\(id)", token: token).json()
            let status = last["status"] as? String ?? "?"
            if seen.last != status { seen.append(status) }
            return done(status)
        }
        return (seen, last)
    }

    @Test func batchRunsToCompletedWithAnOutputFile() async throws {
        let h = try await SimHarness.start(batchPace: .milliseconds(150))
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let fileID = try await h.uploadID(Self.input, token: token)
        let created = try await createBatch(h, token: token, fileID: fileID)
        let id = try #require(created["id"] as? String)
        #expect(id.hasPrefix("batch_"))
        #expect(created["object"] as? String == "batch")
        #expect(created["status"] as? String == "validating")
        #expect(created["input_file_id"] as? String == fileID)
        #expect(created["completion_window"] as? String == "24h")
        #expect(created["output_file_id"] is NSNull)
        #expect(created["in_progress_at"] is NSNull)
        #expect((created["request_counts"] as? [String: Any])?["total"] as? Int == 2)

        let (seen, last) = try await poll(h, token: token, id: id) { $0 == "completed" }
        #expect(seen.last == "completed")
        #expect(seen == ["validating", "in_progress", "finalizing", "completed"].filter(seen.contains), "states out of order: \(seen)")
        #expect(last["completed_at"] as? Int != nil)
        #expect(last["finalizing_at"] as? Int != nil)
        #expect((last["request_counts"] as? [String: Any])?["completed"] as? Int == 2)
        let outputID = try #require(last["output_file_id"] as? String)
        let output = try await h.request("GET", "/v1/files/\(outputID)/content", token: token)
        #expect(output.status == 200)
        let lines = output.bodyText.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.first?.contains(#""custom_id":"one""#) == true)
    }

    @Test func cancelMovesThroughCancellingToCancelled() async throws {
        let h = try await SimHarness.start(batchPace: .milliseconds(300))
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let fileID = try await h.uploadID(Self.input, token: token)
        let id = try #require(try await createBatch(h, token: token, fileID: fileID)["id"] as? String)
        let cancel = try await h.request("POST", "/v1/batches/\(id)/cancel", token: token)
        #expect(cancel.status == 200)
        #expect(try cancel.json()["status"] as? String == "cancelling")
        let (_, last) = try await poll(h, token: token, id: id) { $0 == "cancelled" }
        #expect(last["cancelled_at"] as? Int != nil)
        #expect(last["output_file_id"] is NSNull)
        let again = try await h.request("POST", "/v1/batches/\(id)/cancel", token: token)
        #expect(again.status == 400)
    }

    @Test func batchErrors() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let unknownInput = try await h.request("POST", "/v1/batches", token: token, json: #"{"input_file_id":"file-nope","endpoint":"/v1/chat/completions"}"#)
        #expect(unknownInput.status == 400)
        #expect(unknownInput.errorCode == "invalid_request")
        let malformed = try await h.request("POST", "/v1/batches", token: token, json: #"{"endpoint":1}"#)
        #expect(malformed.status == 400)
        let unknown = try await h.request("GET", "/v1/batches/batch_nope", token: token)
        #expect(unknown.status == 404)
        #expect(unknown.errorCode == "batch_not_found")
        #expect(try await h.request("POST", "/v1/batches/batch_nope/cancel", token: token).status == 404)
    }

    @Test func stuckBatchCompletesOnceTheFaultIsCleared() async throws {
        let h = try await SimHarness.start(batchPace: .milliseconds(100))
        defer { Task { try? await h.shutdown() } }
        try h.sim.addFault(Fault(.batchStuck(state: .finalizing), components: [.batch]))
        let token = try await h.login()
        let fileID = try await h.uploadID(Self.input, token: token)
        let id = try #require(try await createBatch(h, token: token, fileID: fileID)["id"] as? String)
        _ = try await poll(h, token: token, id: id) { $0 == "finalizing" }
        h.sim.clearFaults()
        let (_, last) = try await poll(h, token: token, id: id) { $0 == "completed" }
        #expect(last["output_file_id"] as? String != nil)
    }

    @Test func stuckBatchStaysWhileAnotherCompletes() async throws {
        let h = try await SimHarness.start(batchPace: .milliseconds(100))
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        // Only batches created in eu get stuck; the us one is the clock.
        try h.sim.addFault(Fault(.batchStuck(state: .finalizing), regions: ["eu"]))
        let fileID = try await h.uploadID(Self.input, token: token)
        let stuck = try #require(try await createBatch(h, token: token, fileID: fileID)["id"] as? String)
        let usResponse = try await h.request(
            "POST", "/v1/batches", region: "us", token: token, json: #"{"input_file_id":"\#(fileID)","endpoint":"/v1/chat/completions"}"#)
        let free = try #require(try usResponse.json()["id"] as? String)
        _ = try await poll(h, token: token, id: free) { $0 == "completed" }
        let (seen, _) = try await poll(h, token: token, id: stuck) { _ in true }
        #expect(seen == ["finalizing"])
        // And it keeps finalizing across many more reads.
        for _ in 0..<5 {
            #expect(try await h.request("GET", "/v1/batches/\(stuck)", token: token).json()["status"] as? String == "finalizing")
        }
    }
}
