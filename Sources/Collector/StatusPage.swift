import CollectorAPI
import CollectorStore
import Correlation
import Foundation
import SondeCore

/// `GET /`: a server-rendered status page (no JavaScript). Every piece of data goes through
/// `escape` — component names, errors and incident messages come from agents and probes.
enum StatusPage {
    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.count)
        for c in text {
            switch c {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(c)
            }
        }
        return out
    }

    /// Statuspage's words for people.
    static func words(_ status: ComponentStatus) -> String {
        switch status {
        case .operational: "Operational"
        case .degradedPerformance: "Degraded Performance"
        case .partialOutage: "Partial Outage"
        case .majorOutage: "Major Outage"
        case .underMaintenance: "Under Maintenance"
        case .unknown: "No Data"
        }
    }

    /// Statuspage's colours.
    static func colour(_ status: ComponentStatus) -> String {
        switch status {
        case .operational: "#2fcc66"
        case .degradedPerformance: "#f1c40f"
        case .partialOutage: "#e67e22"
        case .majorOutage: "#e74c3c"
        case .underMaintenance: "#3498db"
        case .unknown: "#b0b6bd"
        }
    }

    /// The colour of one hour of a component: the worst incident that overlapped it, as the
    /// correlation engine judged it. Raw failures do not colour it: a local fault (one agent's
    /// network) fails runs without being the platform's problem. No runs and no incident: unknown.
    static func hourStatus(hourStart: Date, bucket: TimelineBucket?, incidents: [Incident], now: Date) -> ComponentStatus {
        let hourEnd = hourStart.addingTimeInterval(3600)
        var worst: ComponentStatus?
        for incident in incidents where incident.openedAt < hourEnd && (incident.resolvedAt ?? now) >= hourStart {
            worst = max(worst ?? incident.severity, incident.severity)
        }
        if let worst { return worst }
        return (bucket?.total ?? 0) > 0 ? .operational : .unknown
    }

    /// Who reads the page: `public` (status_page.public, no token) never sees agent names, their
    /// health, the engine's incident messages (they name agents) or links to the API.
    enum Audience: Sendable {
        case `public`, operators
    }

    /// `incidents`: those of the last 24 hours (open or resolved), for the timeline.
    static func render(
        status: StatusResponse, health: [AgentHealth], agents: [AgentRecord], timeline: [TimelineBucket], incidents: [Incident], now: Date,
        audience: Audience = .operators
    ) -> String {
        let operators = audience == .operators
        let regions = Array(Set(status.components.flatMap { $0.regions.keys } + (operators ? agents.map(\.region) : []))).sorted()
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <meta http-equiv="refresh" content="15"><title>Sonde status</title>
            <style>
            body{font-family:system-ui,-apple-system,sans-serif;margin:2rem auto;max-width:72rem;padding:0 1rem;color:#1f2328}
            h1{font-size:1.6rem}h2{font-size:1.2rem;margin-top:2rem}
            table{border-collapse:collapse;width:100%}th,td{padding:.4rem .6rem;border-bottom:1px solid #e5e7eb;text-align:left;vertical-align:top}
            .pill{display:inline-block;padding:.1rem .5rem;border-radius:1rem;color:#fff;font-size:.85rem;white-space:nowrap}
            .banner{padding:1rem;border-radius:.5rem;color:#fff;font-weight:600}
            .bars{display:flex;gap:2px}.bar{width:10px;height:24px;border-radius:2px}
            .muted{color:#6b7280;font-size:.85rem}.incident{border-left:4px solid #e67e22;padding:.3rem 1rem;margin:1rem 0}
            </style></head><body>
            <h1>Sonde status</h1>

            """
        let overall = status.overall
        let headline = overall == .operational ? "All systems operational" : overall == .unknown ? "No data yet" : words(overall)
        html += "<div class=\"banner\" style=\"background:\(colour(overall))\">\(escape(headline))</div>\n"
        html += "<p class=\"muted\">Updated \(escape(RFC3339.string(from: now)))</p>\n"

        // Components × regions.
        html += "<h2>Components</h2>\n<table><tr><th>Component</th><th>Status</th>"
        for region in regions { html += "<th>\(escape(region))</th>" }
        html += "<th>Evidence</th></tr>\n"
        for verdict in status.components {
            html += "<tr id=\"component-\(escape(verdict.component))\"><td>\(escape(verdict.component))</td><td>\(pill(verdict.status))"
            if let scope = verdict.scope { html += " <span class=\"muted\">\(escape(scope.rawValue))</span>" }
            html += "</td>"
            for region in regions { html += "<td>\(verdict.regions[region].map(pill) ?? "<span class=\"muted\">–</span>")</td>" }
            let evidence = verdict.evidence
            var notes: [String] = []
            if evidence.failingAgentCount > 0 { notes.append("\(evidence.failingAgentCount)/\(evidence.reportingAgents) agents failing") }
            if !evidence.errorCodes.isEmpty { notes.append(evidence.errorCodes.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: ", ")) }
            if let p50 = evidence.latencyP50Ms { notes.append("p50 \(Int(p50)) ms") }
            if let p95 = evidence.latencyP95Ms { notes.append("p95 \(Int(p95)) ms") }
            if operators && !evidence.localAgents.isEmpty { notes.append("local: \(evidence.localAgents.joined(separator: ", "))") }
            html += "<td class=\"muted\">\(escape(notes.joined(separator: " · ")))</td></tr>\n"
        }
        if status.components.isEmpty { html += "<tr><td colspan=\"\(regions.count + 3)\" class=\"muted\">No results yet.</td></tr>\n" }
        html += "</table>\n"

        // Open incidents with their updates.
        html += "<h2>Open incidents</h2>\n"
        if status.openIncidents.isEmpty { html += "<p class=\"muted\">None.</p>\n" }
        for incident in status.openIncidents {
            html += "<div class=\"incident\" id=\"incident-\(escape(incident.id))\"><strong>\(escape(incident.component))</strong> \(pill(incident.severity)) "
            html += "<span class=\"muted\">\(escape(incident.status.rawValue)) · \(escape(incident.scope.rawValue))"
            if !incident.regions.isEmpty { html += " · \(escape(incident.regions.joined(separator: ", ")))" }
            html += " · opened \(escape(RFC3339.string(from: incident.openedAt)))</span><ul>"
            for update in incident.updates.reversed() {
                html += "<li><span class=\"muted\">\(escape(RFC3339.string(from: update.time)))</span> <em>\(escape(update.status.rawValue))</em>"
                html += operators ? " — \(escape(update.message))</li>" : "</li>"
            }
            html += "</ul></div>\n"
        }

        // Last 24 hours per component.
        html += "<h2>Last 24 hours</h2>\n<table>"
        let firstHour = (now.epochMs / 3_600_000) - 23
        let byComponent = Dictionary(grouping: timeline, by: \.component)
        let incidentsByComponent = Dictionary(grouping: incidents, by: \.component)
        // Components with a verdict or an incident: a control probe's pseudo-component has neither.
        for component in Set(status.components.map(\.component)).union(incidentsByComponent.keys).sorted() {
            let hours = Dictionary((byComponent[component] ?? []).map { ($0.hourStart.epochMs / 3_600_000, $0) }, uniquingKeysWith: { $1 })
            html += "<tr><td>\(escape(component))</td><td><div class=\"bars\">"
            for hour in firstHour...(firstHour + 23) {
                let bucket = hours[hour]
                let hourStart = Date(epochMs: hour * 3_600_000)
                let shown = hourStatus(hourStart: hourStart, bucket: bucket, incidents: incidentsByComponent[component] ?? [], now: now)
                var title = "\(RFC3339.string(from: hourStart)): " + (bucket.map { "\($0.total) runs, \($0.failed) failed, \($0.degraded) degraded" } ?? "no data")
                if shown != .operational && shown != .unknown { title += "; incident: \(words(shown))" }
                html += "<div class=\"bar\" style=\"background:\(colour(shown))\" title=\"\(escape(title))\"></div>"
            }
            html += "</div></td></tr>\n"
        }
        html += "</table>\n"

        guard operators else { return html + "</body></html>\n" }

        // Agents.
        let healthByAgent = Dictionary(health.map { ($0.agent, $0) }, uniquingKeysWith: { $1 })
        html += "<h2>Agents</h2>\n<table><tr><th>Agent</th><th>Region</th><th>Health</th><th>Last seen</th><th>Why</th></tr>\n"
        for agent in agents {
            let h = healthByAgent[agent.id]
            let state = agent.revoked ? "revoked" : h?.state.rawValue ?? "unknown"
            let stateColour =
                switch state {
                case "ok": colour(.operational)
                case "local_fault": colour(.partialOutage)
                case "silent": colour(.degradedPerformance)
                default: colour(.unknown)
                }
            html += "<tr id=\"agent-\(escape(agent.id))\"><td>\(escape(agent.id))</td><td>\(escape(agent.region))</td>"
            html += "<td><span class=\"pill\" style=\"background:\(stateColour)\">\(escape(state))</span></td>"
            html += "<td class=\"muted\">\(escape(agent.lastSeen.map(RFC3339.string(from:)) ?? "never"))</td><td class=\"muted\">\(escape(h?.reason ?? ""))</td></tr>\n"
        }
        html += "</table>\n<p class=\"muted\">API: <a href=\"/v1/status\">/v1/status</a> · <a href=\"/metrics\">/metrics</a></p>\n</body></html>\n"
        return html
    }

    static func pill(_ status: ComponentStatus) -> String {
        "<span class=\"pill\" style=\"background:\(colour(status))\">\(escape(words(status)))</span>"
    }
}
