import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Testing

@testable import AgentRuntime

@Suite("Uploader")
struct UploaderTests {
    let logs = CapturedLogs()
    let key = AgentSigningKey()

    func settings(_ url: String, batchSize: Int = 100) -> Uploader.Settings {
        var config = AgentConfig(agentID: "eu-1", region: "eu")
        config.collector.url = url
        config.collector.batchSize = batchSize
        config.collector.timeout = .seconds(5)
        config.collector.flushInterval = .milliseconds(20)
        config.collector.backoffBase = .milliseconds(20)
        config.collector.backoffCap = .milliseconds(80)
        config.collector.unauthorizedRetry = .milliseconds(30)
        return Uploader.Settings(config: config)
    }

    /// Runs the uploader until `condition` holds, then cancels it.
    func runUploader(_ uploader: Uploader, until what: String, _ condition: @escaping () async throws -> Bool) async throws {
        let task = Task { try await uploader.run() }
        defer { task.cancel() }
        try await waitUntil(what, timeout: .seconds(20), condition)
        task.cancel()
        _ = try? await task.value
    }

    @Test("while the collector answers 503 the same batch is resent with backoff; then delivered once, signed, in order")
    func backoffThenDelivery() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...7 { try spool.append(sampleResult("p\(i)")) }
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .fail(503))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url, batchSize: 3), spool: spool, key: key, logger: logs.logger())

        let task = Task { try await uploader.run() }
        defer { task.cancel() }
        try await waitUntil("4 refused pushes") { logs.messages(containing: "push failed").count >= 4 }
        let refused = receiver.snapshot
        #expect(Set(refused.receivedBatches).count == 1, "every retry carries the same batch id")
        #expect(refused.results.isEmpty)
        #expect(refused.sentAts.last! >= refused.sentAts.first!)
        #expect(logs.messages(at: .warning, containing: "push failed").count == 1, "one warning per minute of outage, not one per attempt")
        #expect(logs.messages(at: .debug, containing: "push failed").count >= 3)

        receiver.setMode(.accept)
        try await waitUntil("the spool to drain") { spool.status.unsentResults == 0 }
        #expect(logs.messages(at: .info, containing: "collector reachable again").count == 1)
        task.cancel()
        _ = try? await task.value

        let done = receiver.snapshot
        #expect(done.badSignatures == 0)
        #expect(done.results.map(\.seq) == Array(1...7).map(UInt64.init))
        #expect(done.storedBatches.count == 3)
        #expect(done.storedBatches.first == refused.receivedBatches.first, "the refused batch went out first")
    }

    @Test("a batch the collector refuses as malformed (422) moves to spool/rejected/ and the queue goes on")
    func rejectedBatchMovedAside() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...4 { try spool.append(sampleResult("p\(i)")) }
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .refuse(batchID: nil, status: 422))
        defer { receiver.stop() }
        // Refuse only the first batch: learn its id from the spool before starting.
        let first = try #require(try spool.nextBatch(maxResults: 2))
        receiver.setMode(.refuse(batchID: first.id, status: 422))
        let uploader = Uploader(settings: settings(receiver.url, batchSize: 2), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "the spool to drain") { spool.status.unsentResults == 0 }

        let saved = try String(contentsOfFile: dir.file("rejected/\(first.id).json"), encoding: .utf8)
        #expect(saved.contains("duration_ms must not be negative"))
        #expect(receiver.snapshot.results.map(\.seq) == [3, 4])
        let errors = logs.messages(at: .error, containing: "refused the batch")
        #expect(errors.count == 1)
        #expect(errors.first?.metadata["error.message"]?.contains("duration_ms must not be negative") == true)
        #expect(errors.first?.metadata["batch.id"] == first.id)
    }

    @Test("401 (agent unknown or revoked): results stay in the spool, one clear error with the fix, slow retries")
    func unauthorizedKeepsData() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...3 { try spool.append(sampleResult("p\(i)")) }
        // A receiver that knows another key: every signature fails, as for an unenrolled agent.
        let receiver = try PushReceiver(publicKey: AgentSigningKey().publicKey)
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "several refused pushes") { receiver.snapshot.badSignatures >= 4 }

        #expect(spool.status.unsentResults == 3)
        #expect(receiver.snapshot.results.isEmpty)
        let errors = logs.messages(at: .error, containing: "enrol the key")
        #expect(errors.count == 1, "logged once per minute, not once per retry")
        #expect(errors.first?.message.contains(key.publicKey.base64) == true)
    }

    @Test("400 clock_skew is the host's clock, not the batch: data kept, error with the fix, then delivered")
    func clockSkewKeepsData() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...3 { try spool.append(sampleResult("p\(i)")) }
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .clockSkew)
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url), spool: spool, key: key, logger: logs.logger())
        let task = Task { try await uploader.run() }
        defer { task.cancel() }
        try await waitUntil("refused pushes") { receiver.snapshot.receivedBatches.count >= 3 }
        #expect(spool.status.unsentResults == 3)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir.file("rejected")).isEmpty)
        #expect(logs.messages(at: .error, containing: "NTP").count == 1)
        receiver.setMode(.accept)
        try await waitUntil("delivery") { spool.status.unsentResults == 0 }
        #expect(receiver.snapshot.results.map(\.seq) == [1, 2, 3])
    }

    @Test("connection refused is retried like a 5xx, and nothing is lost")
    func connectionRefused() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        try spool.append(sampleResult())
        // A port that was just free: nothing listens there.
        let closed = try LoopbackHTTPServer { _ in .drop }
        let url = closed.baseURL
        closed.stop()
        let uploader = Uploader(settings: settings(url), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "3 failed attempts") {
            logs.messages(containing: "push failed").count >= 3
        }
        #expect(spool.status.unsentResults == 1)
        #expect(logs.messages(at: .warning, containing: "push failed").first?.metadata["error.message"]?.hasPrefix("connect") == true)
    }

    @Test("backoff is full jitter under a cap")
    func backoffShape() {
        for attempt in 1...20 {
            let delay = Uploader.backoff(attempt: attempt, base: .seconds(1), cap: .seconds(60))
            #expect(delay >= .zero)
            #expect(delay <= .seconds(min(60, 1 << min(attempt - 1, 10))))
        }
        let late = (0..<50).map { _ in Uploader.backoff(attempt: 30, base: .seconds(1), cap: .seconds(60)) }
        #expect(late.contains { $0 > .seconds(30) }, "the cap, not the base, bounds late attempts")
        #expect(late.contains { $0 < .seconds(30) }, "full jitter spreads over [0, cap]")
    }
}
