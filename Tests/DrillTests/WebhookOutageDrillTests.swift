import CollectorStore
import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// Drill 4: the webhook receiver answers 500s, time-outs and dropped connections for a while
/// (10 s quick, 5 min full) while events keep being queued. Afterwards every event must have been
/// delivered (answered 2xx) exactly once, in order.
@Suite(.serialized) struct WebhookOutageDrillTests {
    struct Delivery: Sendable {
        var eventID: String
        var reply: String
    }

    @Test func receiverOutageDeliversEveryEventExactlyOnce() async throws {
        let outage: Duration = Drill.scale(quick: .seconds(10), full: .seconds(300))
        let eventCount = Drill.scale(quick: 10, full: 60)
        let folder = try TemporaryDirectory("sonde-drill-webhook")
        defer { folder.remove() }

        let clock = ContinuousClock()
        let outageEnd = Shared<ContinuousClock.Instant>(clock.now + .seconds(3600))
        let seen = Shared<[Delivery]>([])
        let receiver = try LoopbackHTTPServer { request in
            let id = request.header("Sonde-Event-Id") ?? "?"
            let reply: LoopbackHTTPServer.Reply
            let name: String
            if clock.now < outageEnd.value {
                switch seen.withLock({ $0.count }) % 3 {
                case 0: (reply, name) = (.json(500, #"{"error":"down"}"#), "500")
                // Longer than the collector's 500 ms attempt time-out: the collector gives up first.
                case 1: (reply, name) = (.json(503, "{}", delay: .milliseconds(1500)), "timeout")
                default: (reply, name) = (.drop, "dropped")
                }
            } else {
                (reply, name) = (.json(200, "{}"), "200")
            }
            seen.withLock { $0.append(Delivery(eventID: id, reply: name)) }
            return reply
        }
        defer { receiver.stop() }

        let collector = try await CollectorUnderTest.start(
            in: folder, agents: [],
            extra: [
                "webhooks: [{ name: drill, url: \"\(receiver.baseURL)/hook\", secret: drill-secret }]",
                // An outage of 5 minutes at 1 s retries is ~300 attempts: keep them all (no dead letters),
                // and let the drill queue its test alerts faster than the default 6 a minute.
                "webhook_retry: { base: 100ms, cap: 1s, timeout: 500ms, poll: 50ms, max_attempts: 100000, max_age: 1h }",
                "limits: { test_alerts_per_minute: 1000 }",
            ])
        let start = clock.now
        outageEnd.withLock { $0 = start + outage }
        var queued: [String] = []
        for i in 0..<eventCount {
            // Spread the events over the outage.
            try await Task.sleep(until: start + outage * (Double(i) / Double(eventCount)), clock: clock)
            queued.append(try await Self.queueTestAlert(collector))
        }
        // A marker after the outage: deliveries go in order per target, so once the marker is
        // delivered nothing before it is pending (and so nothing can be sent again).
        try await Task.sleep(until: start + outage, clock: clock)
        let marker = try await Self.queueTestAlert(collector)
        try await waitUntil("the marker event to be delivered", timeout: .seconds(120)) {
            seen.withLock { $0.contains { $0.eventID == marker && $0.reply == "200" } }
        }
        // The collector marks a delivery only after the 2xx: wait for that before stopping it.
        let store = try SQLiteCollectorStore(path: collector.databasePath, logger: Logger(label: "drill"))
        try await waitUntil("every delivery to be marked delivered", timeout: .seconds(30)) {
            try await store.deliveries().allSatisfy { $0.status == .delivered }
        }
        await collector.child.stop()
        let deliveries = try await store.deliveries()

        let log = seen.withLock { $0 }
        let all = queued + [marker]
        let okCounts = Dictionary(grouping: log.filter { $0.reply == "200" }, by: \.eventID).mapValues(\.count)
        let exactlyOnce = all.filter { okCounts[$0] == 1 }.count
        let twice = all.filter { (okCounts[$0] ?? 0) > 1 }.count
        let never = all.filter { okCounts[$0] == nil }.count
        let okOrder = log.filter { $0.reply == "200" }.map(\.eventID)
        let inOrder = okOrder == all
        let undelivered = deliveries.filter { $0.status != .delivered }.count
        let maxAttempts = deliveries.map(\.attempts).max() ?? 0
        let passed = exactlyOnce == all.count && inOrder && undelivered == 0
        func count(_ reply: String) -> Int { log.filter { $0.reply == reply }.count }
        Drill.report(
            "4-webhook",
            """
            ### Drill 4: webhook receiver down (500s, time-outs, dropped connections) — \(passed ? "PASS" : "FAIL")

            A real collector with one webhook target; for \(Int(outage.components.seconds)) s the receiver answers in turn \
            500, a 503 after 1.5 s (the collector's attempt time-out is 500 ms) and a dropped connection; \(eventCount) \
            `alert.test` events are queued during that time, then a marker event after it. Retry: base 100 ms, cap 1 s. \
            Pass: every event answered 2xx exactly once, in queue order, all deliveries `delivered` in the database.

            \(Drill.table([
                ("outage", "\(Int(outage.components.seconds)) s"),
                ("events queued", "\(all.count)"),
                ("requests received", "\(log.count)"),
                ("answered 500", "\(count("500"))"),
                ("answered late (time-out)", "\(count("timeout"))"),
                ("dropped connections", "\(count("dropped"))"),
                ("answered 2xx", "\(count("200"))"),
                ("events delivered exactly once", "\(exactlyOnce)"),
                ("events delivered more than once", "\(twice)"),
                ("events never delivered", "\(never)"),
                ("delivered in queue order", inOrder ? "yes" : "no"),
                ("most attempts for one event", "\(maxAttempts)"),
            ]))
            """)
        #expect(exactlyOnce == all.count, "delivered twice: \(twice), never: \(never)")
        #expect(inOrder)
        #expect(undelivered == 0)
        #expect(count("500") + count("timeout") + count("dropped") >= 3, "the outage was not exercised")
    }

    static func queueTestAlert(_ collector: CollectorUnderTest) async throws -> String {
        let response = try await CurlHTTPClient.shared.perform(collector.request("/v1/alerts/test", method: "POST"))
        guard response.status == 202, let object = try JSONSerialization.jsonObject(with: response.body) as? [String: Any],
            let id = object["event_id"] as? String
        else { throw TestFailure("POST /v1/alerts/test answered \(response.status): \(String(decoding: response.body, as: UTF8.self))") }
        return id
    }
}
