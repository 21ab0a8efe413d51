import Foundation
import SondeCore

/// `GET /history.atom` (Atom, RFC 4287) and `GET /history.rss` (RSS 2.0, which aggregators that
/// expect Statuspage poll): incidents newest first, with their public timelines, for feed readers
/// and chat integrations that subscribe to status pages.
enum IncidentFeed {
    enum Format {
        case atom, rss
    }

    static func render(_ page: PageSnapshot, base: String, format: Format = .atom) -> String {
        let incidents = page.incidents.prefix(50)
        let updated = incidents.map(\.updatedAt).max() ?? page.now
        let title = StatusPage.escape(page.settings.title)
        let home = StatusPage.escape(base) + "/"
        var xml: String
        switch format {
        case .atom:
            xml = """
                <?xml version="1.0" encoding="utf-8"?>
                <feed xmlns="http://www.w3.org/2005/Atom">
                <id>\(StatusPage.escape(base))/history.atom</id>
                <title>\(title): incident history</title>
                <author><name>\(title)</name></author>
                <updated>\(RFC3339.string(from: updated))</updated>
                <link rel="self" href="\(StatusPage.escape(base))/history.atom"/>
                <link rel="alternate" href="\(home)"/>

                """
        case .rss:
            xml = """
                <?xml version="1.0" encoding="utf-8"?>
                <rss version="2.0" xmlns:atom="http://www.w3.org/2005/Atom">
                <channel>
                <title>\(title): incident history</title>
                <link>\(home)</link>
                <description>\(title): incident history</description>
                <atom:link href="\(StatusPage.escape(base))/history.rss" rel="self" type="application/rss+xml"/>
                <lastBuildDate>\(HTTPDate.string(from: updated))</lastBuildDate>

                """
        }
        for incident in incidents {
            var content = "<p><strong>\(PageIncident.statusWords(incident.status))</strong> · affects \(incident.affected.joined(separator: ", "))</p>"
            for update in incident.timeline {
                let message = StatusPage.publicMessage(update, incident: incident, agentIDs: page.agentIDs)
                content += "<p><small>\(StatusPage.utc(update.time))</small> <strong>\(PageIncident.statusWords(update.status))</strong> — "
                content += StatusPage.escape(message) + (update.person.map { " (\(StatusPage.escape($0)))" } ?? "") + "</p>"
            }
            let link = StatusPage.escape(base + "/incidents/" + StatusPage.pathSegment(incident.id))
            let heading = StatusPage.escape(incident.heading) + (incident.isOpen ? "" : " (resolved)")
            switch format {
            case .atom:
                xml += """
                    <entry>
                    <id>\(link)</id>
                    <title>\(heading)</title>
                    <published>\(RFC3339.string(from: incident.openedAt))</published>
                    <updated>\(RFC3339.string(from: incident.updatedAt))</updated>
                    <link rel="alternate" href="\(link)"/>
                    <content type="html">\(StatusPage.escape(content))</content>
                    </entry>

                    """
            case .rss:
                xml += """
                    <item>
                    <title>\(heading)</title>
                    <link>\(link)</link>
                    <guid isPermaLink="true">\(link)</guid>
                    <pubDate>\(HTTPDate.string(from: incident.openedAt))</pubDate>
                    <description>\(StatusPage.escape(content))</description>
                    </item>

                    """
            }
        }
        return xml + (format == .atom ? "</feed>\n" : "</channel>\n</rss>\n")
    }
}

/// An optional written as `null` when absent, as Statuspage's API does (synthesized Encodable
/// leaves a nil optional out).
struct Null<Value: Encodable>: Encodable {
    var value: Value?
    init(_ value: Value? = nil) { self.value = value }
    func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        if let value { try container.encode(value) } else { try container.encodeNil() }
    }
}

/// `GET /api/v2/summary.json` in the shape of Statuspage's public API, so status aggregators
/// read Sonde like any hosted page. Components without data (starting, no data) are left out:
/// Statuspage's vocabulary has no word for them.
struct StatuspageSummary: Encodable {
    struct Page: Encodable {
        var id: String
        var name: String
        var url: String
        var timeZone = "Etc/UTC"
        var updatedAt: Date
        enum CodingKeys: String, CodingKey {
            case id, name, url
            case timeZone = "time_zone"
            case updatedAt = "updated_at"
        }
    }
    struct Component: Encodable {
        var id: String
        var name: String
        var status: String
        var createdAt: Date
        var updatedAt: Date
        var position: Int
        var description = Null<String>()
        var showcase = true
        var startDate = Null<String>()
        var groupID = Null<String>()
        var pageID: String
        var group = false
        var onlyShowIfDegraded = false
        enum CodingKeys: String, CodingKey {
            case id, name, status, position, description, showcase, group
            case createdAt = "created_at"
            case updatedAt = "updated_at"
            case startDate = "start_date"
            case groupID = "group_id"
            case pageID = "page_id"
            case onlyShowIfDegraded = "only_show_if_degraded"
        }
    }
    struct IncidentUpdate: Encodable {
        var id: String
        var status: String
        var body: String
        var incidentID: String
        var createdAt: Date
        var updatedAt: Date
        var displayAt: Date
        enum CodingKeys: String, CodingKey {
            case id, status, body
            case incidentID = "incident_id"
            case createdAt = "created_at"
            case updatedAt = "updated_at"
            case displayAt = "display_at"
        }
    }
    struct Incident: Encodable {
        var id: String
        var name: String
        var status: String
        var impact: String
        var createdAt: Date
        var updatedAt: Date
        var startedAt: Date
        var monitoringAt: Null<Date>
        var resolvedAt: Null<Date>
        var shortlink: String
        var pageID: String
        var incidentUpdates: [IncidentUpdate]
        var components: [Component]
        enum CodingKeys: String, CodingKey {
            case id, name, status, impact, shortlink, components
            case createdAt = "created_at"
            case updatedAt = "updated_at"
            case startedAt = "started_at"
            case monitoringAt = "monitoring_at"
            case resolvedAt = "resolved_at"
            case pageID = "page_id"
            case incidentUpdates = "incident_updates"
        }
    }
    struct Status: Encodable {
        var indicator: String
        var description: String
    }

    var page: Page
    var components: [Component]
    var incidents: [Incident]
    var scheduledMaintenances: [Incident] = []
    var status: Status
    /// The 50 newest incidents, open or resolved, for `incidents.json` (not in the summary).
    var allIncidents: [Incident] = []

    enum CodingKeys: String, CodingKey {
        case page, components, incidents, status
        case scheduledMaintenances = "scheduled_maintenances"
    }

    static let pageID = "sonde"

    /// Statuspage's indicator and words for the worst component status.
    static func indicator(_ status: ComponentStatus) -> Status {
        switch status {
        case .operational: Status(indicator: "none", description: "All Systems Operational")
        // Nothing measured (no known component, or none reporting): the page says "No data";
        // "All Systems Operational" there hid a total outage seen by one agent (first-use review).
        case .unknown: Status(indicator: "none", description: "No Data")
        case .underMaintenance: Status(indicator: "maintenance", description: "Service Under Maintenance")
        case .degradedPerformance: Status(indicator: "minor", description: "Minor Service Outage")
        case .partialOutage: Status(indicator: "major", description: "Partial System Outage")
        case .majorOutage: Status(indicator: "critical", description: "Major Service Outage")
        }
    }

    static func impact(_ severity: ComponentStatus?) -> String {
        switch severity {
        case .degradedPerformance: "minor"
        case .partialOutage: "major"
        case .majorOutage: "critical"
        default: "none"
        }
    }

    /// `history`: also the 50 newest incidents, open or resolved (`allIncidents`).
    init(_ snapshot: PageSnapshot, base: String, history: Bool = false) {
        let now = snapshot.now
        var components: [Component] = []
        for component in snapshot.components {
            guard let status = component.status.statuspage else { continue }
            let first = component.days.keys.min().map { Date(epochMs: $0 * 86_400_000) } ?? now
            components.append(
                Component(
                    id: component.name, name: component.name, status: status.rawValue, createdAt: first, updatedAt: component.since ?? first,
                    position: components.count + 1, pageID: Self.pageID))
        }
        let byName = Dictionary(components.map { ($0.id, $0) }, uniquingKeysWith: { $1 })
        // The page's last change, as Statuspage dates it (not the time of the request): the same
        // page reads the same, so a poller's `If-None-Match` gets 304 until something changes.
        let changed = (components.map(\.updatedAt) + snapshot.incidents.map(\.updatedAt)).max()
        page = Page(id: Self.pageID, name: snapshot.settings.title, url: base, updatedAt: changed ?? now)
        self.components = components
        incidents = snapshot.openIncidents.map { Self.incident($0, snapshot: snapshot, components: byName, base: base) }
        // Only `incidents.json` shows them: a summary poll does not map 50 timelines for nothing.
        if history { allIncidents = snapshot.incidents.prefix(50).map { Self.incident($0, snapshot: snapshot, components: byName, base: base) } }
        status = Self.indicator(snapshot.overall)
    }

    static func incident(_ incident: PageIncident, snapshot: PageSnapshot, components byName: [String: Component], base: String) -> Incident {
        let updates = incident.timeline.enumerated().map { index, update in
            IncidentUpdate(
                id: "\(incident.id).\(incident.timeline.count - index)", status: update.status,
                body: StatusPage.publicMessage(update, incident: incident, agentIDs: snapshot.agentIDs), incidentID: incident.id,
                createdAt: update.time, updatedAt: update.time, displayAt: update.time)
        }
        return Incident(
            id: incident.id, name: incident.heading, status: incident.status, impact: Self.impact(incident.severity), createdAt: incident.openedAt,
            updatedAt: incident.updatedAt, startedAt: incident.openedAt,
            monitoringAt: Null(incident.timeline.first { $0.status == "monitoring" }?.time), resolvedAt: Null(incident.resolvedAt),
            shortlink: base + "/incidents/" + StatusPage.pathSegment(incident.id), pageID: Self.pageID, incidentUpdates: updates,
            components: incident.affected.compactMap { byName[$0] })
    }

    /// The other public endpoints of Statuspage's API v2 that status aggregators and client
    /// libraries call, each the page and one part of the summary (the SRE review's F8).
    enum Part: Sendable {
        case components, incidents, unresolvedIncidents, scheduledMaintenances
    }

    func part(_ part: Part) -> StatuspagePart {
        switch part {
        case .components: StatuspagePart(page: page, components: components)
        case .incidents: StatuspagePart(page: page, incidents: allIncidents)
        case .unresolvedIncidents: StatuspagePart(page: page, incidents: incidents)
        // Sonde schedules no maintenance: the lists are empty, as on a page that has none.
        case .scheduledMaintenances: StatuspagePart(page: page, scheduledMaintenances: [])
        }
    }
}

/// `components.json`, `incidents.json`, `incidents/unresolved.json`, `scheduled-maintenances.json`
/// (and its `upcoming`/`active`): the page and one list, as Statuspage answers them.
struct StatuspagePart: Encodable {
    var page: StatuspageSummary.Page
    var components: [StatuspageSummary.Component]?
    var incidents: [StatuspageSummary.Incident]?
    var scheduledMaintenances: [StatuspageSummary.Incident]?

    enum CodingKeys: String, CodingKey {
        case page, components, incidents
        case scheduledMaintenances = "scheduled_maintenances"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(page, forKey: .page)
        try c.encodeIfPresent(components, forKey: .components)
        try c.encodeIfPresent(incidents, forKey: .incidents)
        try c.encodeIfPresent(scheduledMaintenances, forKey: .scheduledMaintenances)
    }
}

/// `GET /api/v2/status.json`: Statuspage's smallest answer, the page and its overall status.
struct StatuspageStatus: Encodable {
    var page: StatuspageSummary.Page
    var status: StatuspageSummary.Status

    init(_ summary: StatuspageSummary) {
        page = summary.page
        status = summary.status
    }
}
