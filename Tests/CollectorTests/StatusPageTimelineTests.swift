import CollectorAPI
import CollectorStore
import Correlation
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import Collector

/// The status page's 24-hour timeline says what the correlation engine decided, not what raw
/// results looked like: one agent's broken network fails its runs without being an outage.
@Suite struct StatusPageTimelineTests {
    let now = Date(timeIntervalSince1970: 1_800_000_000 + 1800)  // half past an hour
    var thisHour: Date { Date(epochMs: (now.epochMs / 3_600_000) * 3_600_000) }

    func incident(_ component: String, severity: ComponentStatus, opened: Date, resolved: Date?) -> PageIncident {
        PageIncident(
            id: "\(component).\(opened.epochMs)", component: component, status: resolved == nil ? "investigating" : "resolved",
            scope: "platform", severity: severity, regions: ["eu", "us"], agents: [], openedAt: opened, updatedAt: resolved ?? opened,
            resolvedAt: resolved, evidence: Evidence(), updates: [])
    }

    @Test func hoursTakeTheWorstOverlappingIncidentAndIgnoreRawFailures() {
        let twoHoursAgo = thisHour.addingTimeInterval(-2 * 3600)
        // Half of this hour's files runs failed (a local fault), but no incident: operational.
        let localFailures = TimelineBucket(component: "files", hourStart: thisHour, total: 100, failed: 50, degraded: 0)
        #expect(StatusPage.hourStatus(hourStart: thisHour, bucket: localFailures, incidents: [], now: now) == .operational)
        // No runs, no incident: unknown.
        #expect(StatusPage.hourStatus(hourStart: twoHoursAgo, bucket: nil, incidents: [], now: now) == .unknown)
        // An incident from 2 h ago (10 min in) to 1 h ago (5 min in) colours those two hours only.
        let past = incident(
            "api", severity: .partialOutage, opened: twoHoursAgo.addingTimeInterval(600), resolved: twoHoursAgo.addingTimeInterval(3900))
        let quiet = TimelineBucket(component: "api", hourStart: twoHoursAgo, total: 100, failed: 0, degraded: 0)
        #expect(StatusPage.hourStatus(hourStart: twoHoursAgo, bucket: quiet, incidents: [past], now: now) == .partialOutage)
        #expect(StatusPage.hourStatus(hourStart: twoHoursAgo.addingTimeInterval(3600), bucket: nil, incidents: [past], now: now) == .partialOutage)
        #expect(StatusPage.hourStatus(hourStart: thisHour, bucket: quiet, incidents: [past], now: now) == .operational)
        // An open incident colours up to now; the worst of two overlapping ones wins.
        let open = incident("api", severity: .majorOutage, opened: thisHour.addingTimeInterval(60), resolved: nil)
        #expect(StatusPage.hourStatus(hourStart: thisHour, bucket: quiet, incidents: [past, open], now: now) == .majorOutage)
    }

    @Test func internalPageShowsIncidentColoursAndNoRowForAControlProbe() {
        let verdicts = ["api", "files"].map { ComponentVerdict(component: $0, status: .operational, since: now, updatedAt: now) }
        let components = verdicts.map { PageComponent(name: $0.component, status: .component($0.status), since: now, verdict: $0, days: [:], probes: []) }
        let timeline = [
            TimelineBucket(component: "files", hourStart: thisHour, total: 10, failed: 10, degraded: 0),
            TimelineBucket(component: "network", hourStart: thisHour, total: 10, failed: 10, degraded: 0),
        ]
        let past = incident("api", severity: .majorOutage, opened: thisHour.addingTimeInterval(-3000), resolved: thisHour.addingTimeInterval(-2000))
        let page = PageSnapshot(
            settings: StatusPageSettings(), now: now, components: components, incidents: [past], agents: [], health: [], timeline: timeline)
        let html = StatusPage.render(page, audience: .operators)
        let section = html.components(separatedBy: "Last 24 hours").last?.components(separatedBy: "</table>").first ?? ""
        let rows = section.components(separatedBy: "<td data-label=\"Component\">").dropFirst().map { String($0.prefix { $0 != "<" }) }
        #expect(rows == ["api", "files"], "a control probe's pseudo-component gets no timeline row")
        let filesRow = section.components(separatedBy: ">files</td>").last?.components(separatedBy: "</tr>").first ?? ""
        #expect(!filesRow.contains(StatusPage.colour(.majorOutage)) && filesRow.contains(StatusPage.colour(.operational)))
        let apiRow = section.components(separatedBy: ">api</td>").last?.components(separatedBy: "</tr>").first ?? ""
        #expect(apiRow.contains(StatusPage.colour(.majorOutage)))
    }

    /// The operators' page reads the hours before the previous one once every few minutes and
    /// the last two on each load: the same buckets as one read of all 24, a new run in the
    /// current hour shows at once, and a late run in an old hour once those hours are read again.
    @Test func theTimelineKeepsClosedHoursAndRereadsTheLastTwo() async throws {
        let store = InMemoryCollectorStore()
        let agent = TestAgent(id: "timeline-eu-1", region: "eu")
        func keep(_ hoursBack: [Int], outcome: Outcome = .ok) async throws {
            let results = hoursBack.map { back in
                agent.result(probe: "files", component: "files", outcome: outcome, startedAt: thisHour.addingTimeInterval(Double(-back) * 3600 + 61))
            }
            _ = try await store.ingest(batch: BatchRecord(batchID: UUID().uuidString, agent: agent.id, receivedAt: now, body: Data(), signature: ""), results: results)
        }
        // One run an hour for 30 hours: the page shows the newest 24.
        try await keep(Array(0..<30))
        let closed = RecentValues<[TimelineBucket]>(maxAge: .seconds(300))
        let recent = RecentValues<[TimelineBucket]>(maxAge: .zero)
        let first = try await CollectorAPI.timeline(now: now, closedHours: closed, recentHours: recent, store: store)
        let whole = try await store.timeline(since: thisHour.addingTimeInterval(-23 * 3600), until: .distantFuture)
        #expect(first == whole && first.count == 24, "\(first.count) buckets")
        // A failure now shows at once; a late one five hours back waits for the closed hours' next read.
        try await keep([0, 5], outcome: .failed)
        let next = try await CollectorAPI.timeline(now: now, closedHours: closed, recentHours: recent, store: store)
        #expect(next.first { $0.hourStart == thisHour }?.failed == 1)
        #expect(next.first { $0.hourStart == thisHour.addingTimeInterval(-5 * 3600) }?.failed == 0)
        let reread = try await CollectorAPI.timeline(now: now, closedHours: RecentValues(maxAge: .zero), recentHours: recent, store: store)
        #expect(reread.first { $0.hourStart == thisHour.addingTimeInterval(-5 * 3600) }?.failed == 1)
    }
}
