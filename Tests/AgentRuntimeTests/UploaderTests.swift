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

    func rejectedFiles(_ dir: TemporaryDirectory) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: dir.file("rejected")).sorted()
    }

    @Test("413: a batch over the collector's size limit is halved until each part fits; every result delivered once, in order, nothing set aside")
    func tooLargeBatchIsSplit() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...40 { try spool.append(sampleResult("p\(i)", padding: 300)) }
        let one = try SondeJSON.encode(sampleResult("p1", padding: 300)).count
        // Room for about 6 results per push: the batch of 40 is halved three times.
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .tooLarge(maxBytes: one * 6 + 200))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url, batchSize: 40), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "the spool to drain") { spool.status.unsentResults == 0 }

        let done = receiver.snapshot
        #expect(!done.tooLargeBodies.isEmpty, "the collector did refuse the big pushes")
        #expect(done.results.map(\.seq) == Array(1...40).map(UInt64.init), "every result once, in order")
        #expect(done.badSignatures == 0)
        #expect(done.storedBatches.allSatisfy { $0.contains(".") }, "only parts (X.1, X.2.1, …) were stored")
        #expect(try rejectedFiles(dir).isEmpty)
        #expect(spool.status.rejectedResults == 0)
        #expect(logs.messages(at: .error, containing: "refused").isEmpty)
    }

    @Test("413 for one result alone: only that result goes to spool/rejected/, with an error line and a count; the rest is delivered in order")
    func oversizedSingleResultSetAside() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...9 { try spool.append(sampleResult("p\(i)", padding: i == 4 ? 20_000 : 10)) }
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .tooLarge(maxBytes: 8_000))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url, batchSize: 9), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "the spool to drain") { spool.status.unsentResults == 0 }

        #expect(receiver.snapshot.results.map(\.seq) == [1, 2, 3, 5, 6, 7, 8, 9])
        let files = try rejectedFiles(dir)
        #expect(files.count == 1)
        let saved = try String(contentsOfFile: dir.file("rejected/\(try #require(files.first))"), encoding: .utf8)
        #expect(saved.contains("body_too_large"))
        #expect(saved.contains(#""probe" : "p4""#) || saved.contains(#""probe":"p4""#))
        #expect(spool.status.rejectedResults == 1)
        let errors = logs.messages(at: .error, containing: "refused a single result")
        #expect(errors.count == 1)
        #expect(errors.first?.metadata["http.status"] == "413")
        #expect(errors.first?.metadata["results.set_aside"] == "1")
    }

    @Test("422 for one bad result: the batch is split until the bad result is alone; only it is set aside")
    func badResultIsolated() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for name in ["p1", "bad", "p3", "p4", "p5"] { try spool.append(sampleResult(name)) }
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .refuseProbe("bad", status: 422))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url, batchSize: 5), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "the spool to drain") { spool.status.unsentResults == 0 }

        #expect(receiver.snapshot.results.map(\.seq) == [1, 3, 4, 5])
        let files = try rejectedFiles(dir)
        #expect(files.count == 1)
        let saved = try String(contentsOfFile: dir.file("rejected/\(try #require(files.first))"), encoding: .utf8)
        #expect(saved.contains("duration_ms must not be negative"))
        #expect(logs.messages(at: .error, containing: "refused a single result").count == 1)
    }

    @Test("a restart in the middle of a split resends the same part ids: nothing stored twice")
    func splitSurvivesRestart() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        var spool: Spool? = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...8 { try spool!.append(sampleResult("p\(i)", padding: 300)) }
        let one = try SondeJSON.encode(sampleResult("p1", padding: 300)).count
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .tooLarge(maxBytes: one * 2 + 200))
        defer { receiver.stop() }
        // The collector goes down right after storing the first part.
        receiver.setOutage(afterStored: 1)
        let first = Uploader(settings: settings(receiver.url, batchSize: 8), spool: spool!, key: key, logger: logs.logger())
        try await runUploader(first, until: "the outage after the first part") { logs.messages(containing: "push failed").count >= 1 }
        #expect(receiver.snapshot.storedBatches.count == 1)
        receiver.setOutage(afterStored: nil)
        spool?.close()
        spool = nil
        let reopened = try Spool(directory: dir.path, logger: logs.logger())
        defer { reopened.close() }
        #expect(reopened.status.unsentResults == 8, "the batch is acknowledged only once every part is delivered")
        let second = Uploader(settings: settings(receiver.url, batchSize: 8), spool: reopened, key: key, logger: logs.logger())
        try await runUploader(second, until: "the spool to drain") { reopened.status.unsentResults == 0 }
        let done = receiver.snapshot
        #expect(done.duplicates >= 1, "the part stored before the restart was answered as a duplicate")
        #expect(done.results.map(\.seq) == Array(1...8).map(UInt64.init))
    }

    // MARK: - Answers that are not the collector's (red team, fifth pass)

    @Test("a 200 that is not this batch's acknowledgement (a captive portal's page, an ack of another batch) deletes nothing; the batch goes once the collector answers")
    func aForeign200IsNotAnAcknowledgement() async throws {
        for mode in [PushReceiver.Mode.foreign(status: 200, body: "<html>Please log in to the Wi-Fi</html>"), .wrongAck] {
            let dir = try TemporaryDirectory("uploader")
            defer { dir.remove() }
            let spool = try Spool(directory: dir.path, logger: logs.logger())
            for i in 1...3 { try spool.append(sampleResult("p\(i)")) }
            let receiver = try PushReceiver(publicKey: key.publicKey, mode: mode)
            defer { receiver.stop() }
            let uploader = Uploader(settings: settings(receiver.url), spool: spool, key: key, logger: logs.logger())
            let task = Task { try await uploader.run() }
            defer { task.cancel() }
            try await waitUntil("3 answered pushes") { receiver.snapshot.requests >= 3 }
            #expect(spool.status.unsentResults == 3, "\(mode): nothing is acknowledged")
            receiver.setMode(.accept)
            try await waitUntil("the spool to drain") { spool.status.unsentResults == 0 }
            #expect(receiver.snapshot.results.map(\.probe) == ["p1", "p2", "p3"])
            task.cancel()
            _ = try? await task.value
        }
        #expect(logs.messages(containing: "push failed").contains { ($0.metadata["error.message"] ?? "").contains("without the collector's acknowledgement") })
    }

    @Test("a 400 page from something that is not the collector (a load balancer) sets nothing aside; a 503 with Retry-After: 0 is resent after the backoff, not at once")
    func foreignRefusalsAndZeroRetryAfter() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        for i in 1...4 { try spool.append(sampleResult("p\(i)")) }
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .foreign(status: 400, body: "<html>The plain HTTP request was sent to HTTPS port</html>"))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url), spool: spool, key: key, logger: logs.logger())
        let task = Task { try await uploader.run() }
        defer { task.cancel() }
        try await waitUntil("3 answered pushes") { receiver.snapshot.requests >= 3 }
        #expect(spool.status.unsentResults == 4)
        #expect(spool.status.rejectedResults == 0, "nothing set aside")
        // Retry-After: 0 and a date long past: the backoff (20–80 ms here) still spaces the pushes.
        for retryAfter in ["0", "Sun, 06 Nov 1994 08:49:37 GMT"] {
            receiver.setMode(.foreign(status: 503, body: "busy", retryAfter: retryAfter))
            let before = receiver.snapshot.requests
            try await Task.sleep(for: .seconds(1))
            let pushes = receiver.snapshot.requests - before
            #expect(pushes <= 60, "\(pushes) pushes in a second with Retry-After \(retryAfter)")
        }
        receiver.setMode(.accept)
        try await waitUntil("the spool to drain") { spool.status.unsentResults == 0 }
        #expect(receiver.snapshot.results.count == 4)
        task.cancel()
        _ = try? await task.value
    }

    @Test("the collector's error message is logged and kept at most 300 characters, however long it sent it")
    func longErrorMessagesAreCut() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        try spool.append(sampleResult("p1"))
        let message = String(repeating: "A", count: 1_000_000)
        let receiver = try PushReceiver(
            publicKey: key.publicKey, mode: .foreign(status: 503, body: #"{"error":{"code":"bad","message":"\#(message)"}}"#))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "a failed push logged") { !logs.messages(containing: "push failed").isEmpty }
        let logged = try #require(logs.messages(containing: "push failed").first?.metadata["error.message"])
        #expect(logged.count <= 320, "\(logged.count) characters")
    }

    @Test("429 with Retry-After in seconds: the uploader waits that long, not its (shorter) backoff")
    func retryAfterSeconds() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        try spool.append(sampleResult())
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .throttle(retryAfter: "1", times: 2))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "the spool to drain") { spool.status.unsentResults == 0 }
        let arrivals = receiver.snapshot.arrivals
        #expect(arrivals.count == 3)
        for (earlier, later) in zip(arrivals, arrivals.dropFirst()) {
            #expect(later - earlier >= .milliseconds(950), "waited Retry-After (1 s), not the 20–80 ms backoff")
        }
        #expect(logs.messages(containing: "push failed").first?.metadata["retry.after_header"] == "true")
    }

    @Test("429 with Retry-After as an HTTP-date: the uploader waits until then")
    func retryAfterDate() async throws {
        let dir = try TemporaryDirectory("uploader")
        defer { dir.remove() }
        let spool = try Spool(directory: dir.path, logger: logs.logger())
        try spool.append(sampleResult())
        // Two seconds ahead, in whole seconds: at least one second from now.
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
        let when = formatter.string(from: Date().addingTimeInterval(2))
        let receiver = try PushReceiver(publicKey: key.publicKey, mode: .throttle(retryAfter: when, times: 1))
        defer { receiver.stop() }
        let uploader = Uploader(settings: settings(receiver.url), spool: spool, key: key, logger: logs.logger())
        try await runUploader(uploader, until: "the spool to drain") { spool.status.unsentResults == 0 }
        let arrivals = receiver.snapshot.arrivals
        #expect(arrivals.count == 2)
        #expect(arrivals[1] - arrivals[0] >= .milliseconds(950))
    }

    @Test("Retry-After values: seconds, IMF-fixdate, past dates, junk")
    func retryAfterParsing() {
        let now = Date(timeIntervalSince1970: 784_111_777)  // Sun, 06 Nov 1994 08:49:37 GMT
        #expect(RetryAfter.parse("120", now: now) == .seconds(120))
        #expect(RetryAfter.parse(" 0 ", now: now) == .zero)
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:50:07 GMT", now: now) == .seconds(30))
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 08:00:00 GMT", now: now) == .zero, "a date in the past: retry now")
        #expect(RetryAfter.parse("99999999999999999999", now: now)! >= .seconds(3600), "huge values saturate (the uploader caps them)")
        #expect(RetryAfter.parse("-5", now: now) == nil)
        #expect(RetryAfter.parse("soon", now: now) == nil)
        #expect(RetryAfter.parse("Sun, 06 Nov 1994 25:00:00 GMT", now: now) == nil)
        #expect(RetryAfter.parse("", now: now) == nil)
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
