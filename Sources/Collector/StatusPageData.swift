import CollectorAPI
import CollectorStore
import Correlation
import Foundation
import SondeCore

/// What a component shows on the pages: the engine's verdict where it has one, else whether the
/// component is just starting (no result yet) or has gone quiet.
enum PageStatus: Sendable, Hashable {
    case component(ComponentStatus)
    /// No result yet: never "No data", never counted towards uptime.
    case starting

    var words: String {
        switch self {
        case .component(let status): StatusPage.words(status)
        case .starting: "Starting"
        }
    }

    var colour: String {
        switch self {
        case .component(let status): StatusPage.colour(status)
        case .starting: "#8fa3b8"
        }
    }

    /// The status for Statuspage's vocabulary; nil while there is nothing to say (no data, starting).
    var statuspage: ComponentStatus? {
        if case .component(let status) = self, status != .unknown { return status }
        return nil
    }
}

/// One component on the pages.
struct PageComponent: Sendable {
    var name: String
    var status: PageStatus
    /// Since when `status` holds (the engine's verdict time), when known.
    var since: Date?
    /// The engine's verdict (internal view: regions, evidence).
    var verdict: ComponentVerdict?
    /// Daily results over the page's 90 days, by UTC day number.
    var days: [Int64: UptimeDay]
    /// Probes that check it (shown publicly only with `status_page.show_probes`).
    var probes: [String]
    /// Declared or reported by `min_component_agents` agents (``ComponentVerdict/known``). Only
    /// the internal view lists others, and they never colour the overall status.
    var known = true

    /// Passing runs over all runs in the 90 days, each agent's runs of a day weighed as
    /// ``UptimeDay/combine(_:)`` does; nil without a run.
    var uptime: Double? {
        let counted = days.values.reduce(0) { $0 + $1.counted }
        guard counted > 0 else { return nil }
        return days.values.reduce(0) { $0 + $1.passed } / counted
    }
}

/// An incident as the pages read it from storage: decoded leniently (statuses and fields other
/// versions of the engine or people add, such as `identified` or an update's `author`, are kept
/// as they come), so the page shows whatever entries the timeline has.
struct PageIncident: Decodable, Sendable {
    struct Update: Decodable, Sendable {
        var time: Date
        var status: String
        var message: String
        /// Who wrote it: a person's token name, or `sonde` (or nothing, in older records) for the
        /// collector's own entries.
        var author: String?

        /// The author the engine writes on its own entries.
        static let automatic = "sonde"

        /// A person's name, nil for the collector's own entries.
        var person: String? { author.flatMap { $0 == Self.automatic || $0.isEmpty ? nil : $0 } }
    }
    var id: String
    var component: String
    var status: String
    var scope: String?
    var severity: ComponentStatus?
    var title: String?
    var regions: [String]?
    var agents: [String]?
    var components: [String]?
    var openedAt: Date
    var updatedAt: Date
    var resolvedAt: Date?
    var evidence: Evidence?
    var updates: [Update]?
    /// A person's status standing against what is measured (internal view only).
    var conflict: String?

    enum CodingKeys: String, CodingKey {
        case id, component, status, scope, severity, title, regions, agents, components, conflict
        case openedAt = "opened_at"
        case updatedAt = "updated_at"
        case resolvedAt = "resolved_at"
        case evidence, updates
    }

    var isOpen: Bool { status != "resolved" }
    var timeline: [Update] { (updates ?? []).sorted { $0.time > $1.time } }
    /// Every component it affects, its own first.
    var affected: [String] { [component] + (components ?? []).filter { $0 != component } + (evidence?.affected ?? []).filter { $0 != component } }

    /// A heading for people: the title a person gave it, else what and where.
    var heading: String {
        if let title, !title.isEmpty { return title }
        let what = severity.map { StatusPage.words($0) } ?? "Problem"
        let where_ = (regions ?? []).isEmpty ? "" : " in " + (regions ?? []).joined(separator: ", ")
        return "\(what) of \(component)\(where_)"
    }

    static func statusWords(_ status: String) -> String {
        switch status {
        case "investigating": "Investigating"
        case "identified": "Identified"
        case "monitoring": "Monitoring"
        case "resolved": "Resolved"
        default: status.prefix(1).uppercased() + status.dropFirst().replacingOccurrences(of: "_", with: " ")
        }
    }
}

/// Everything the pages show, gathered once per request.
struct PageSnapshot: Sendable {
    var settings: StatusPageSettings
    var now: Date
    var components: [PageComponent]
    /// Newest first; open and resolved.
    var incidents: [PageIncident]
    // The internal view's extras.
    var agents: [AgentRecord]
    var health: [AgentHealth]
    var timeline: [TimelineBucket]

    /// Days shown as bars.
    static let days = 90

    /// The worst status shown (starting and no data aside); operational when nothing is wrong.
    var overall: ComponentStatus {
        let counted = components.filter(\.known)
        let shown = counted.compactMap(\.status.statuspage)
        // Nothing measured yet (every component starting) is no data, not "All Systems
        // Operational": a fleet whose agents never got through (CLI walk-through, F5).
        return shown.max()
            ?? (counted.isEmpty || counted.allSatisfy { $0.status == .starting } || counted.contains { $0.status == .component(.unknown) }
                ? .unknown : .operational)
    }

    var openIncidents: [PageIncident] { incidents.filter(\.isOpen) }

    /// Strings the public page must never show: agent ids (an agent's name may say where it
    /// runs and who hosts it).
    var agentIDs: [String] { agents.map(\.id) }
}

extension CollectorAPI {
    /// Reads what the pages need. `probes` only when they will be shown (the series table can be large).
    func pageSnapshot(now: Date = Date(), audience: StatusPage.Audience) async throws -> PageSnapshot {
        let verdicts = await hub.verdicts
        let openIncidents = await hub.openIncidents
        let firstDay = Date(epochMs: (UptimeDay.dayNumber(now) - Int64(PageSnapshot.days - 1)) * 86_400_000)
        let store = self.store
        let days = Dictionary(
            grouping: try await uptimeHistory.value("\(firstDay.epochMs)") { try await store.uptimeDays(since: firstDay) }, by: \.component)
        let latest = Dictionary(grouping: metrics.latestRuns(now: now), by: \.result.component)
        let decoder = SondeJSON.decoder()
        let incidents = try await store.incidents(.all, limit: 500).compactMap { try? decoder.decode(PageIncident.self, from: $0.json) }
        var probes: [String: Set<String>] = [:]
        if audience == .operators {
            for series in try await store.seriesNames() { probes[series.component, default: []].insert(series.probe) }
        } else if page.showProbes {
            probes = Self.publicProbes(
                latest.values.joined().map(\.result), revoked: Set(try await store.agents().filter(\.revoked).map(\.id)),
                minAgents: await hub.minComponentAgents)
        }
        let byName = Dictionary(verdicts.map { ($0.component, $0) }, uniquingKeysWith: { $1 })
        // Components with a verdict, or declared: a control probe's pseudo-component has neither.
        // The public pages show known ones only: one enrolled agent cannot add a row there.
        let listed = audience == .operators ? verdicts : verdicts.filter(\.known)
        let names = Set(listed.map(\.component)).union(declaredComponents).sorted()
        let components = names.map { name in
            let verdict = byName[name]
            let open = openIncidents.filter { $0.component == name }
            let status = Self.pageStatus(
                verdict: verdict?.status, incident: open.first?.severity, declared: Self.declaredImpact(open), latest: latest[name] ?? [],
                hasHistory: !(days[name] ?? []).isEmpty, now: now)
            return PageComponent(
                name: name, status: status, since: verdict?.since, verdict: verdict,
                days: Dictionary((days[name] ?? []).map { (UptimeDay.dayNumber($0.day), $0) }, uniquingKeysWith: { $1 }),
                probes: (probes[name] ?? []).sorted(), known: verdict?.known ?? true)
        }
        var snapshot = PageSnapshot(settings: page, now: now, components: components, incidents: incidents, agents: [], health: [], timeline: [])
        snapshot.agents = try await store.agents()
        if audience == .operators {
            snapshot.health = await hub.agentHealth
            snapshot.timeline = (try? await operatorsTimeline(now: now)) ?? []
        }
        return snapshot
    }

    /// The 24 whole hours the operators' page shows, the current one last. Read whole on every
    /// load, they took 2.6 s at 3 M results on PostgreSQL, and the page reloads every 15 s.
    func operatorsTimeline(now: Date) async throws -> [TimelineBucket] {
        try await Self.timeline(now: now, closedHours: timelineClosedHours, recentHours: timelineRecentHours, store: store)
    }

    /// The hours before the previous one from `closedHours`, the rest from `recentHours`, each
    /// read from `store` when not kept (keyed by the current hour: a new hour reads both anew).
    static func timeline(
        now: Date, closedHours: RecentValues<[TimelineBucket]>, recentHours: RecentValues<[TimelineBucket]>, store: any CollectorStorage
    ) async throws -> [TimelineBucket] {
        let hour = now.epochMs / 3_600_000
        let first = Date(epochMs: (hour - 23) * 3_600_000)
        let recent = Date(epochMs: (hour - 1) * 3_600_000)
        let closed = try await closedHours.value("\(hour)") { try await store.timeline(since: first, until: recent) }
        let open = try await recentHours.value("\(hour)") { try await store.timeline(since: recent, until: .distantFuture) }
        return (closed + open).sorted { ($0.component, $0.hourStart) < ($1.component, $1.hourStart) }
    }

    /// The probes the public page lists per component: those with a recent run from
    /// `min_component_agents` agents that are not revoked. Every series ever stored would list a
    /// name one agent made up ("https://evil.example/free-credits"), for good, even once it was
    /// revoked (red team, fifth pass).
    static func publicProbes(_ runs: [ProbeResult], revoked: Set<String>, minAgents: Int) -> [String: Set<String>] {
        var reporters: [String: [String: Set<String>]] = [:]
        for run in runs where !revoked.contains(run.agent) && run.control != true {
            reporters[run.component, default: [:]][run.probe, default: []].insert(run.agent)
        }
        return reporters.mapValues { byProbe in Set(byProbe.filter { $0.value.count >= max(1, minAgents) }.keys) }.filter { !$0.value.isEmpty }
    }

    /// The impact a person declared for a component: the worst severity of the open incidents a
    /// person opened that are still `investigating` or `identified`. As on Statuspage, the person's
    /// word sets the component's status until they move the incident on, also for a problem no probe
    /// sees (a component without probes, or one measured healthy).
    static func declaredImpact(_ incidents: [Incident]) -> ComponentStatus? {
        incidents.filter(\.declaresImpact)
            .map(\.severity).max()
    }

    /// The engine's verdict, except where it has none (`unknown`): a component whose latest run
    /// is within twice its probes' interval is not "No data" yet (an open incident's severity
    /// holds, else operational); one that never had a result is starting. A person's `declared`
    /// impact (``declaredImpact(_:)``) is the least it shows.
    static func pageStatus(
        verdict: ComponentStatus?, incident: ComponentStatus?, declared: ComponentStatus? = nil, latest: [CollectorMetrics.LatestRun],
        hasHistory: Bool, now: Date
    ) -> PageStatus {
        let measured = measuredStatus(verdict: verdict, incident: incident, latest: latest, hasHistory: hasHistory, now: now)
        guard let declared else { return measured }
        guard case .component(let status) = measured, status != .unknown else { return .component(declared) }
        return .component(max(status, declared))
    }

    private static func measuredStatus(
        verdict: ComponentStatus?, incident: ComponentStatus?, latest: [CollectorMetrics.LatestRun], hasHistory: Bool, now: Date
    ) -> PageStatus {
        if let verdict, verdict != .unknown { return .component(verdict) }
        let fresh = latest.contains { run in
            // An interval not known yet (one run so far): fresh while /metrics keeps the run.
            guard let interval = run.interval else { return true }
            return now.timeIntervalSince(run.receivedAt) <= 2 * interval
        }
        if fresh { return .component(incident ?? .operational) }
        if latest.isEmpty && !hasHistory { return .starting }
        return .component(.unknown)
    }
}

/// A value made at most once per `maxAge` per key, however many ask at once: callers that come
/// while it is being made wait for that one making (single flight) instead of starting their
/// own. The public pages are anonymous: 8 parallel `GET /` with a large fleet's state kept every
/// thread of the collector rendering, so `/healthz`, ingest and evaluation stalled (red team,
/// second pass, N7); the uptime history holds a row per component, day and agent (180,000 rows
/// for 100 agents and 20 components, about 0.7 s to read and weigh in a debug build).
/// At most `capacity` keys are kept (all are dropped when it is reached).
actor RecentValues<Value: Sendable> {
    private var kept: [String: (value: Value, madeAt: ContinuousClock.Instant)] = [:]
    private var making: [String: (generation: Int, task: Task<Value, any Error>)] = [:]
    /// Bumped by `forget()`: a making that began before it is neither kept nor shared after it.
    private var generation = 0
    let maxAge: Duration
    let capacity: Int

    init(maxAge: Duration, capacity: Int = 64) {
        self.maxAge = maxAge
        self.capacity = capacity
    }

    func value(_ key: String, make: @escaping @Sendable () async throws -> Value) async throws -> Value {
        if let entry = kept[key], ContinuousClock.now - entry.madeAt < maxAge { return entry.value }
        if let current = making[key], current.generation == generation { return try await current.task.value }
        let started = generation
        let task = Task { try await make() }
        making[key] = (started, task)
        defer { if making[key]?.generation == started { making[key] = nil } }
        let value = try await task.value
        guard generation == started else { return value }
        if kept.count >= capacity { kept.removeAll() }
        kept[key] = (value, .now)
        return value
    }

    /// Drops what is kept: a person's incident write shows on the next read, not 5 s later.
    func forget() {
        kept.removeAll()
        generation += 1
    }
}
