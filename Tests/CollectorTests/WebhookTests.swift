import Collector
import CollectorAPI
import CollectorStore
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// A webhook receiver that can be down (503 or dropped connections) or up, and remembers which
/// events it acknowledged.
final class WebhookReceiver: Sendable {
    enum Mode: Sendable { case unavailable, drop, up }
    final class State: Sendable {
        let mode = Mutex(Mode.unavailable)
        let acknowledged = Mutex<[(id: String, body: Data, signature: String)]>([])
    }
    private let state = State()
    let server: LoopbackHTTPServer

    init() throws {
        let state = self.state
        server = try LoopbackHTTPServer { request in
            switch state.mode.withLock({ $0 }) {
            case .unavailable: return .json(503, #"{"error":"down for maintenance"}"#)
            case .drop: return .drop
            case .up:
                state.acknowledged.withLock {
                    $0.append((request.header("Sonde-Event-Id") ?? "", request.body, request.header("Sonde-Signature") ?? ""))
                }
                return .json(200, "{}")
            }
        }
    }

    func set(_ newMode: Mode) { state.mode.withLock { $0 = newMode } }
    var acknowledgedIDs: [String] { state.acknowledged.withLock { $0.map(\.id) } }
    var acknowledgedRequests: [(id: String, body: Data, signature: String)] { state.acknowledged.withLock { $0 } }
    var url: String { server.baseURL + "/hooks/sonde" }
    /// The acknowledged events' JSON bodies.
    var events: [[String: Any]] {
        acknowledgedRequests.compactMap { try? JSONSerialization.jsonObject(with: $0.body) as? [String: Any] }
    }
    func stop() { server.stop() }
}

@Suite("Webhooks")
struct WebhookTests {
    /// The receiver is down across a collector restart on the same database; once it is back,
    /// every event arrives exactly once, in order, with a signature that verifies.
    @Test func deliversEveryEventExactlyOnceAcrossRestarts() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.server.stop() }
        let secret = "s3cret-\(UUID().uuidString)"
        let config = testConfig(dir: dir, agents: [], webhooks: [WebhookTarget(name: "ops", url: receiver.url, secret: secret)])

        func queueTestAlert(_ collector: RunningCollector) async throws -> String {
            let response = try await post(collector, "/v1/alerts/test")
            #expect(response.status == 202, "\(response.bodyText)")
            return try decode(AlertTestResponse.self, response).eventID
        }

        var eventIDs: [String] = []
        // First run: the receiver answers 503; attempts pile up and are retried.
        try await withCollector(config) { collector in
            for _ in 0..<3 { eventIDs.append(try await queueTestAlert(collector)) }
            try await waitUntil("retries while the receiver is down") { receiver.server.requests.count >= 4 }
        }
        // Second run on the same database: connections dropped, then the receiver comes back.
        receiver.set(.drop)
        let seenBeforeSecondRun = receiver.server.requests.count
        try await withCollector(config) { collector in
            eventIDs.append(try await queueTestAlert(collector))
            try await waitUntil("retries after the restart") { receiver.server.requests.count >= seenBeforeSecondRun + 2 }
            receiver.set(.up)
            try await waitUntil("every event delivered", timeout: .seconds(20)) { Set(receiver.acknowledgedIDs) == Set(eventIDs) }
            // The receiver has its 200 a few ms before the collector records it: wait for the record.
            try await waitUntil("every delivery recorded as delivered") {
                try await collector.store.deliveries().allSatisfy { $0.status == .delivered }
            }
            let deliveries = try await collector.store.deliveries()
            #expect(deliveries.count == eventIDs.count)
            #expect(deliveries.allSatisfy { $0.status == .delivered })
            // Attempts are counted per target, failures (dropped connections) and deliveries apart.
            let metrics = try await get(collector, "/metrics").bodyText
            #expect(metrics.contains(#"sonde_webhook_deliveries_total{target="ops",result="delivered"} \#(eventIDs.count)"#), "\(metrics)")
            #expect(metrics.range(of: #"sonde_webhook_deliveries_total\{target="ops",result="failed"\} [1-9]"#, options: .regularExpression) != nil)
            #expect(metrics.contains(#"sonde_webhook_deliveries_total{target="ops",result="dead_lettered"} 0"#))
        }
        // Third run: nothing is sent again; a new event goes out after the old ones would have.
        try await withCollector(config) { collector in
            eventIDs.append(try await queueTestAlert(collector))
            try await waitUntil("the new event delivered") { receiver.acknowledgedIDs.contains(eventIDs.last!) }
        }
        #expect(receiver.acknowledgedIDs == eventIDs, "each event once, in event order")
        for request in receiver.acknowledgedRequests {
            #expect(WebhookSignature.verify(header: request.signature, body: request.body, secret: secret))
            #expect(!WebhookSignature.verify(header: request.signature, body: request.body, secret: "wrong"))
            let object = try #require(try JSONSerialization.jsonObject(with: request.body) as? [String: Any])
            #expect(object["type"] as? String == "alert.test")
            #expect(object["id"] as? String == request.id)
            #expect((object["link"] as? String)?.hasPrefix("http://") == true)
        }
    }

    /// A receiver that answers 429 with `Retry-After` (Slack, PagerDuty's rate limits) is not
    /// tried again before that pause ends, whatever the backoff says.
    @Test func aRateLimitedReceiversRetryAfterIsHonoured() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try LoopbackHTTPServer { _ in .respond(status: 429, headers: [("Retry-After", "40")], body: Data(#"{"status":"throttle"}"#.utf8)) }
        defer { receiver.stop() }
        var config = testConfig(dir: dir, agents: [], webhooks: [WebhookTarget(name: "ops", url: receiver.baseURL + "/hook", secret: "s")])
        config.webhookMaxAttempts = 1
        try await withCollector(config) { collector in
            let response = try await post(collector, "/v1/alerts/test")
            #expect(response.status == 202, "\(response.bodyText)")
            let asked = Date()
            try await waitUntil("the refusal recorded") {
                try await collector.store.deliveries().contains { $0.attempts == 1 && $0.status != .delivered }
            }
            let delivery = try #require(try await collector.store.deliveries().first)
            #expect(delivery.nextAttemptAt.timeIntervalSince(asked) >= 38, "next try in \(delivery.nextAttemptAt.timeIntervalSince(asked)) s")
            #expect(delivery.lastError == #"HTTP 429: {"status":"throttle"}"#, "the receiver's reason is kept")
            #expect(delivery.status != .dead, "a rate limit does not use up max_attempts (1 here)")
            #expect(receiver.requests.count == 1)
        }
    }

    /// A receiver that redirects (an http→https move) is told at once, not retried for an hour:
    /// the event is dead-lettered after one attempt with the redirect's target in its error, and
    /// later events go on (integrations review, 33rd session, F4).
    @Test func aRedirectingReceiverIsDeadLetteredWithWhereItPoints() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try LoopbackHTTPServer { _ in .respond(status: 307, headers: [("Location", "https://hooks.example/sonde")], body: Data()) }
        defer { receiver.stop() }
        let config = testConfig(dir: dir, agents: [], webhooks: [WebhookTarget(name: "ops", url: receiver.baseURL + "/hook", secret: "s")])
        try await withCollector(config) { collector in
            #expect(try await post(collector, "/v1/alerts/test").status == 202)
            try await waitUntil("the event dead-lettered") { try await collector.store.deliveries().first?.status == .dead }
            let delivery = try #require(try await collector.store.deliveries().first)
            #expect(delivery.attempts == 1)
            #expect(delivery.lastError?.contains("HTTP 307: the receiver redirects to https://hooks.example/sonde") == true, "\(delivery.lastError ?? "")")
            #expect(receiver.requests.count == 1, "the redirect is not followed")
        }
    }

    /// A delivery the receiver acknowledged but the store could not record is recorded again,
    /// with backoff, before anything else goes to that target: it is not sent again. The
    /// dispatcher read the same row, still due, and sent it at once: 1,626 copies of one event in
    /// 10 s with PostgreSQL read-only (HA review, 33rd session, F1). Here SQLite refuses the
    /// record (a trigger) for a while, then takes it.
    @Test func aDeliveryThatCannotBeRecordedIsNotSentAgain() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try LoopbackHTTPServer { _ in .json(200, "{}") }
        defer { receiver.stop() }
        var config = testConfig(dir: dir, agents: [], webhooks: [WebhookTarget(name: "ops", url: receiver.baseURL + "/hook", secret: "s")])
        config.webhookRetryBase = 0.1
        config.webhookRetryCap = 0.5
        try await withCollector(config) { collector in
            let sqlite = try #require(collector.store as? SQLiteCollectorStore)
            try await sqlite.executeForTesting(
                "CREATE TRIGGER refuse_records BEFORE UPDATE OF status ON deliveries BEGIN SELECT RAISE(ABORT, 'read-only for the test'); END")
            let response = try await post(collector, "/v1/alerts/test")
            #expect(response.status == 202, "\(response.bodyText)")
            try await waitUntil("the test alert delivered") { receiver.requests.count >= 1 }
            // Refused for 2 s: the record is tried again (about 6 times), the alert is not.
            try await Task.sleep(for: .seconds(2))
            #expect(receiver.requests.count == 1, "sent \(receiver.requests.count) times while its record was refused")
            try await sqlite.executeForTesting("DROP TRIGGER refuse_records")
            try await waitUntil("the delivery recorded") { try await collector.store.deliveries().first?.status == .delivered }
            #expect(receiver.requests.count == 1)
        }
    }

    /// With `webhook_retry.poll` at an hour the dispatcher moves only when woken, and still every
    /// event arrives once: a test alert, its retries at their due times while the receiver
    /// answers 503, and the incident an evaluation opens.
    @Test func deliversWhenWokenWithoutPolling() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.server.stop() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "us-1", region: "us")]
        var config = testConfig(dir: dir, agents: agents, webhooks: [WebhookTarget(name: "ops", url: receiver.url, secret: "s")])
        config.components = ["login"]
        config.webhookPollInterval = 3600
        func types() -> [String] {
            receiver.acknowledgedRequests.compactMap { ((try? JSONSerialization.jsonObject(with: $0.body)) as? [String: Any])?["type"] as? String }
        }
        try await withCollector(config) { collector in
            let response = try await post(collector, "/v1/alerts/test")
            #expect(response.status == 202, "\(response.bodyText)")
            let testID = try decode(AlertTestResponse.self, response).eventID
            try await waitUntil("the test alert retried while the receiver is down") { receiver.server.requests.count >= 3 }
            receiver.set(.up)
            try await waitUntil("the test alert delivered") { receiver.acknowledgedIDs.contains(testID) }
            try await waitUntil("the incident's event delivered", timeout: .seconds(60)) {
                for agent in agents {
                    _ = try await agent.push(agent.batch([agent.result(outcome: .failed, startedAt: Date(), code: "http_500")]), to: collector)
                }
                return types().contains("incident.opened")
            }
            let deliveries = try await collector.store.deliveries()
            try await waitUntil("every queued delivery delivered") {
                try await collector.store.deliveries().allSatisfy { $0.status == .delivered }
            }
            #expect(Set(receiver.acknowledgedIDs).count == receiver.acknowledgedIDs.count, "each event once")
            #expect(deliveries.count >= 2)
        }
    }

    @Test("a webhook target prints without its secret or its URL path (Slack's carries a token)")
    func targetDescriptionHidesCredentials() {
        let target = WebhookTarget(name: "ops", url: "https://hooks.slack.com/services/T000/B000/XXXXSECRET", secret: "hmac-key-123", format: .slack)
        let text = "\(target)"
        #expect(text == "WebhookTarget(name: ops, url: https://hooks.slack.com/…, format: slack, secret: <redacted>)")
        #expect(!"\([target])".contains("hmac-key-123"))
    }

    /// An unnamed target is named by its origin and a digest, never by its URL (whose user-info,
    /// path or query can be a credential); a queue kept under the URL by earlier versions moves
    /// to the new name and is delivered.
    @Test func anUnnamedTargetsNameShowsNoCredentialAndItsOldQueueIsDelivered() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.server.stop() }
        receiver.set(.up)
        let url = receiver.server.baseURL.replacingOccurrences(of: "http://", with: "http://bob:hunter2@") + "/hooks/T0/B0/XSECRETX?api_key=QKEYQ"
        let target = WebhookTarget(url: url, secret: "s")
        for text in [target.name, "\(target)"] {
            for secret in ["hunter2", "XSECRETX", "QKEYQ", "bob"] { #expect(!text.contains(secret), "\(text)") }
        }
        #expect(target.name.hasPrefix("http://127.0.0.1:") && target.legacyName == url)
        #expect(WebhookTarget(url: url + "&other=1", secret: "s").name != target.name, "two targets on one host keep apart")

        let agent = TestAgent(id: "eu-1", region: "eu")
        let event = OutboxEvent(id: "evt-legacy", type: "alert.test", occurredAt: Date(), payload: Data(#"{"type":"alert.test"}"#.utf8))
        try await withCollector(testConfig(dir: dir, agents: [agent])) { collector in
            try await collector.store.commit(EvaluationCommit(events: [event], deliveries: [DeliveryKey(eventID: event.id, target: url)]))
        }
        try await withCollector(testConfig(dir: dir, agents: [agent], webhooks: [target])) { collector in
            try await waitUntil("the delivery queued under the URL delivered") { receiver.acknowledgedIDs.contains(event.id) }
            #expect(try await collector.store.deliveries().map(\.target) == [target.name])
            let test = try await post(collector, "/v1/alerts/test")
            #expect(test.status == 202)
            for secret in ["hunter2", "XSECRETX", "QKEYQ"] { #expect(!test.bodyText.contains(secret), "\(test.bodyText)") }
        }
    }

    @Test func slackFormatAndSignature() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let receiver = try WebhookReceiver()
        defer { receiver.server.stop() }
        receiver.set(.up)
        let config = testConfig(dir: dir, agents: [], webhooks: [WebhookTarget(url: receiver.url, secret: "k", format: .slack)])
        try await withCollector(config) { collector in
            #expect(try await post(collector, "/v1/alerts/test").status == 202)
            try await waitUntil("the Slack message") { !receiver.acknowledgedIDs.isEmpty }
        }
        let request = try #require(receiver.acknowledgedRequests.first)
        let object = try #require(try JSONSerialization.jsonObject(with: request.body) as? [String: Any])
        #expect((object["text"] as? String)?.contains("alert.test") == true)
        #expect((object["blocks"] as? [Any])?.isEmpty == false)
        #expect(WebhookSignature.verify(header: request.signature, body: request.body, secret: "k"))
    }
}
