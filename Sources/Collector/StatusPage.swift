import CollectorAPI
import CollectorStore
import Correlation
import Foundation
import SondeCore

/// The server-rendered status pages: `/` (public), `/internal` (operators) and
/// `/incidents/ID`. Every piece of data goes through `escape` — component names, errors and
/// incident messages come from agents, probes and people. The pages work without JavaScript; a
/// small inline script only turns times into the reader's own zone and keeps "12 min ago" fresh.
enum StatusPage {
    /// Who reads the page: `public` never sees agents, their health, the engine's evidence,
    /// probe names (unless `status_page.show_probes`) or links to the API.
    enum Audience: Sendable {
        case `public`, operators
    }

    /// Text people wrote (titles, messages): escaped, inside `<bdi>` so that a right-to-left
    /// override left open cannot reverse the page around it, with its line breaks kept (CSS).
    static func said(_ text: String) -> String { "<bdi>" + escape(text) + "</bdi>" }

    static func escape(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count)
        for scalar in text.unicodeScalars {
            switch scalar {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            // Not characters in XML 1.0 (or HTML): one of them in a stored message would make the
            // Atom feed unreadable for every subscriber, so they are left out wherever text is written.
            case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
            case _ where scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) || scalar.value == 0xFFFE || scalar.value == 0xFFFF: break
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out
    }

    /// An incident id as one path segment.
    static func pathSegment(_ text: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~")
        return Data(text.utf8).map { byte in
            let scalar = Unicode.Scalar(byte)
            return byte < 0x80 && allowed.contains(scalar) ? String(Character(scalar)) : String(format: "%%%02X", byte)
        }.joined()
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

    /// A day's bar colour from its share of passing runs (documented in docs/collector.md).
    static func dayStatus(_ day: UptimeDay?) -> ComponentStatus {
        guard let day, day.total > 0 else { return .unknown }
        switch day.uptime {
        case 0.999...: return .operational
        case 0.99..<0.999: return .degradedPerformance
        case 0.95..<0.99: return .partialOutage
        default: return .majorOutage
        }
    }

    /// The colour of one hour of a component: the worst incident that overlapped it, as the
    /// correlation engine judged it. Raw failures do not colour it: a local fault (one agent's
    /// network) fails runs without being the platform's problem. No runs and no incident: unknown.
    static func hourStatus(hourStart: Date, bucket: TimelineBucket?, incidents: [PageIncident], now: Date) -> ComponentStatus {
        let hourEnd = hourStart.addingTimeInterval(3600)
        var worst: ComponentStatus?
        for incident in incidents where incident.openedAt < hourEnd && (incident.resolvedAt ?? now) >= hourStart {
            let severity = incident.severity ?? .degradedPerformance
            worst = max(worst ?? severity, severity)
        }
        if let worst { return worst }
        return (bucket?.total ?? 0) > 0 ? .operational : .unknown
    }

    /// "99.95 %": two decimals, never rounded up to 100 while a run failed.
    static func percent(_ ratio: Double) -> String {
        let hundredths = (ratio * 10_000).rounded(.down) / 100
        return String(format: "%.2f %%", hundredths)
    }

    // MARK: - Times

    /// "just now", "12 min ago", "3 h ago", "5 d ago" (the inline script keeps it current).
    static func relative(_ date: Date, now: Date) -> String {
        let seconds = now.timeIntervalSince(date)
        let magnitude = abs(seconds)
        if magnitude < 60 { return "just now" }
        let text =
            magnitude < 3600 ? "\(Int((magnitude / 60).rounded())) min" : magnitude < 86400 ? "\(Int((magnitude / 3600).rounded())) h" : "\(Int((magnitude / 86400).rounded())) d"
        return seconds >= 0 ? "\(text) ago" : "in \(text)"
    }

    /// "2 h 5 min", for how long an incident lasted.
    static func duration(_ seconds: TimeInterval) -> String {
        let minutes = max(1, Int((seconds / 60).rounded()))
        if minutes < 60 { return "\(minutes) min" }
        let hours = minutes / 60
        if hours < 48 { return minutes % 60 == 0 ? "\(hours) h" : "\(hours) h \(minutes % 60) min" }
        return "\(hours / 24) d \(hours % 24) h"
    }

    /// "2026-12-01 14:02 UTC": the fallback the script replaces with the reader's zone.
    static func utc(_ date: Date) -> String {
        let text = RFC3339.string(from: date)
        return String(text.prefix(10)) + " " + String(text.dropFirst(11).prefix(5)) + " UTC"
    }

    /// A time shown relative, the absolute time on hover.
    static func ago(_ date: Date, now: Date) -> String {
        "<time class=\"rel\" datetime=\"\(RFC3339.string(from: date))\" title=\"\(utc(date))\">\(relative(date, now: now))</time>"
    }

    /// A time shown absolute (in the reader's zone once the script ran), relative on hover.
    static func at(_ date: Date, now: Date) -> String {
        "<time class=\"abs\" datetime=\"\(RFC3339.string(from: date))\" title=\"\(relative(date, now: now))\">\(utc(date))</time>"
    }

    // MARK: - Page parts

    static let style = """
        *{box-sizing:border-box}
        body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1f2328;background:#f6f8fa;overflow-wrap:anywhere;line-height:1.45}
        bdi{white-space:pre-line;unicode-bidi:isolate}
        main{max-width:60rem;margin:0 auto;padding:1rem}
        header{display:flex;align-items:center;gap:.75rem;flex-wrap:wrap;margin:.5rem 0 1rem}
        header a{color:inherit;text-decoration:none;display:flex;align-items:center;gap:.75rem;min-width:0}
        header img{max-height:2.5rem;max-width:10rem}
        h1{font-size:1.5rem;margin:0}h2{font-size:1.15rem;margin:1.5rem 0 .5rem}h3{font-size:1rem;margin:0}
        a{color:#0969da}
        .banner{padding:1rem;border-radius:.5rem;color:#fff;font-weight:600;font-size:1.1rem}
        .card{background:#fff;border:1px solid #d0d7de;border-radius:.5rem;padding:.25rem 1rem;margin:.75rem 0}
        .item{padding:.75rem 0;border-top:1px solid #eaeef2}.item:first-child{border-top:0}
        .row{display:flex;justify-content:space-between;align-items:baseline;gap:.25rem .75rem;flex-wrap:wrap}
        .pill{display:inline-block;padding:.05rem .55rem;border-radius:1rem;color:#fff;font-size:.8rem;white-space:nowrap;font-weight:600}
        .muted{color:#57606a;font-size:.85rem}
        .bars{display:flex;gap:1px;height:1.75rem;margin:.4rem 0 .2rem}
        .bars span{flex:1 1 0;min-width:0;border-radius:1px}
        .axis{display:flex;justify-content:space-between;gap:.5rem;color:#57606a;font-size:.75rem}
        .axis .short{display:none}
        .incident{border-left:4px solid #e67e22;padding-left:.75rem}
        .timeline{list-style:none;padding:0;margin:.5rem 0}.timeline li{padding:.5rem 0;border-top:1px solid #eaeef2}
        table{border-collapse:collapse;width:100%}th,td{padding:.4rem .5rem;border-bottom:1px solid #eaeef2;text-align:left;vertical-align:top}
        .hours{display:flex;gap:1px}.hours span{flex:1 1 0;min-width:0;height:1.25rem;border-radius:1px}
        footer{margin:2rem 0 1rem;color:#57606a;font-size:.85rem}
        @media (max-width:640px){
        .bars span:nth-child(-n+60){display:none}.axis .long{display:none}.axis .short{display:inline}
        table.stack,table.stack tbody,table.stack tr,table.stack td{display:block;width:100%}
        table.stack tr:first-child{display:none}table.stack tr{border-bottom:1px solid #d0d7de;padding:.4rem 0}
        table.stack td{border:0;padding:.15rem 0}table.stack td[data-label]::before{content:attr(data-label) ": ";font-weight:600;color:#57606a}
        }
        """

    /// Fills `<time>` elements in the reader's time zone and keeps relative times current.
    static let script = """
        (function(){function rel(s){var a=Math.abs(s),t;if(a<60)return"just now";t=a<3600?Math.round(a/60)+" min":a<86400?Math.round(a/3600)+" h":Math.round(a/86400)+" d";return s>=0?t+" ago":"in "+t}
        function run(){var n=Date.now();document.querySelectorAll("time[datetime]").forEach(function(e){var d=new Date(e.getAttribute("datetime"));if(isNaN(d))return;
        var abs=d.toLocaleString([],{dateStyle:"medium",timeStyle:"short"});if(e.className=="rel"){e.textContent=rel((n-d)/1000);e.title=abs}else{e.textContent=abs;e.title=rel((n-d)/1000)}})}
        run();setInterval(run,30000)})();
        """

    static func head(title: String, refresh: Int, settings: StatusPageSettings) -> String {
        var html = """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <meta http-equiv="refresh" content="\(refresh)"><title>\(escape(title))</title>
            <link rel="alternate" type="application/atom+xml" title="\(escape(settings.title)): incidents" href="/history.atom">
            <style>\(style)</style></head><body><main>
            <header>
            """
        var brand = ""
        if let logo = settings.logo { brand += "<img src=\"\(escape(logo))\" alt=\"\">" }
        brand += "<h1>\(escape(settings.title))</h1>"
        html += settings.link.map { "<a href=\"\(escape($0))\">\(brand)</a>" } ?? brand
        return html + "</header>\n"
    }

    static func foot(_ audience: Audience) -> String {
        var html = "<footer>Subscribe: <a href=\"/history.atom\">incident feed (Atom)</a> · <a href=\"/history.rss\">RSS</a> · <a href=\"/api/v2/summary.json\">summary.json</a>"
        if audience == .operators { html += " · API: <a href=\"/v1/status\">/v1/status</a> · <a href=\"/metrics\">/metrics</a> · <a href=\"/\">public page</a>" }
        return html + "</footer>\n</main><script>\(script)</script></body></html>\n"
    }

    static func pill(_ status: ComponentStatus) -> String { pill(words(status), colour(status)) }

    static func pill(_ text: String, _ colour: String) -> String {
        "<span class=\"pill\" style=\"background:\(colour)\">\(escape(text))</span>"
    }

    static func incidentColour(_ incident: PageIncident) -> String {
        incident.isOpen ? colour(incident.severity ?? .degradedPerformance) : colour(.operational)
    }

    /// What the public reads of a timeline entry: a person's words as written; the collector's own
    /// text only when it names no agent and no address, else a plain sentence for its status.
    static func publicMessage(_ update: PageIncident.Update, incident: PageIncident, agentIDs: [String]) -> String {
        let message = update.message
        if update.person != nil { return message }
        let leaks =
            message.contains("://") || agentIDs.contains { !$0.isEmpty && message.contains($0) } || (incident.agents ?? []).contains { message.contains($0) }
            || namesAHost(message)
        if !leaks && !message.isEmpty { return message }
        switch update.status {
        case "investigating": return "We are investigating a problem with \(incident.component)."
        case "identified": return "The cause of the problem with \(incident.component) has been identified."
        case "monitoring": return "\(incident.component) is recovering; we are monitoring it."
        case "resolved": return "This incident has been resolved."
        default: return "\(PageIncident.statusWords(update.status)): \(incident.component)."
        }
    }

    /// Whether a text names something like a host or an address: a word that starts with a letter
    /// and has a dot followed by a letter (`db-prod.internal`), or four dotted numbers
    /// (`10.0.3.7`), with or without a `:port`. The engine's text quotes the agents' error codes,
    /// which any enrolled agent chooses (red team, third pass: `db-prod.internal:5432` reached the
    /// public headline); a component or code with a dot in it falls back to the plain sentence too.
    static func namesAHost(_ text: String) -> Bool {
        let words = text.split { !($0.isLetter || $0.isNumber || $0 == "." || $0 == "-" || $0 == "_" || $0 == ":") }
        for word in words {
            let host = word.split(separator: ":", maxSplits: 1).first.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: ".")) } ?? ""
            let labels = host.split(separator: ".", omittingEmptySubsequences: false)
            guard labels.count >= 2, !labels.contains(where: \.isEmpty) else { continue }
            if labels.count == 4, labels.allSatisfy({ $0.allSatisfy(\.isNumber) }) { return true }
            if host.first?.isLetter == true, labels.dropFirst().contains(where: { $0.first?.isLetter == true }) { return true }
        }
        return false
    }

    // MARK: - The main page

    static func render(_ page: PageSnapshot, audience: Audience) -> String {
        let operators = audience == .operators
        let now = page.now
        var html = head(title: operators ? "\(page.settings.title) (internal)" : page.settings.title, refresh: operators ? 15 : 60, settings: page.settings)

        let overall = page.overall
        let open = page.openIncidents
        var headline =
            overall == .operational ? "All Systems Operational" : overall == .unknown ? (page.components.isEmpty ? "No data yet" : "No data") : words(overall)
        var bannerColour = colour(overall)
        // Measurements look fine but people still have an incident open: say so, not "all operational".
        if overall == .operational, !open.isEmpty {
            let recovering = open.allSatisfy { $0.status == "monitoring" }
            headline = "\(open.count) active incident\(open.count == 1 ? "" : "s")" + (recovering ? ", recovering" : "")
            bannerColour = recovering ? colour(.underMaintenance) : colour(open.compactMap(\.severity).max() ?? .degradedPerformance)
        }
        html += "<div class=\"banner\" style=\"background:\(bannerColour)\">\(escape(headline))</div>\n"
        html += "<p class=\"muted\">Updated \(ago(now, now: now))\(operators ? " · internal view" : "")</p>\n"

        // Active incidents first: what people came for.
        if !open.isEmpty {
            html += "<h2>Active incidents</h2>\n"
            for incident in open { html += incidentSummary(incident, page: page, audience: audience) }
        }

        // Components with 90 days of uptime.
        html += "<h2>Components</h2>\n<div class=\"card\">\n"
        if page.components.isEmpty {
            // Results may have arrived for components that are not known yet (declared, or
            // reported by min_component_agents agents): operators see those on /internal.
            html += "<p class=\"muted\">No components to show yet\(operators ? " (components not yet known are listed under Regions and evidence)" : "").</p>\n"
        }
        let today = UptimeDay.dayNumber(now)
        for component in page.components {
            html += "<div class=\"item\" id=\"component-\(escape(component.name))\"><div class=\"row\"><h3>\(escape(component.name))</h3>"
            html += "<span>\(pill(component.status.words, component.status.colour))"
            if let since = component.since, component.status.statuspage != nil && component.status != .component(.operational) {
                html += " <span class=\"muted\">since \(ago(since, now: now))</span>"
            }
            if let causes = component.verdict?.evidence.affectedBy, !causes.isEmpty, component.status != .component(.operational) {
                html += " <span class=\"muted\">affected by \(escape(causes.joined(separator: ", ")))</span>"
            }
            html += "</span></div>\n"
            if operators || page.settings.showProbes, !component.probes.isEmpty {
                html += "<div class=\"muted\">Probes: \(escape(component.probes.joined(separator: ", ")))</div>\n"
            }
            html += "<div class=\"bars\" role=\"img\" aria-label=\"\(escape(component.name)): uptime per day over \(PageSnapshot.days) days\">"
            for day in (today - Int64(PageSnapshot.days) + 1)...today {
                let record = component.days[day]
                let date = String(RFC3339.string(from: Date(epochMs: day * 86_400_000)).prefix(10))
                // Uptime weighs each agent (`UptimeDay.combine`), so it is not always passed / runs.
                let title = record.map { "\(date): \(percent($0.uptime)) uptime over \($0.total) runs" + ($0.failed > 0 ? ", \($0.failed) failed" : "") } ?? "\(date): no data"
                html += "<span style=\"background:\(record == nil ? "#e5e7eb" : colour(dayStatus(record)))\" title=\"\(escape(title))\"></span>"
            }
            html += "</div><div class=\"axis\"><span><span class=\"long\">\(PageSnapshot.days) days ago</span><span class=\"short\">30 days ago</span></span>"
            html += "<span>\(component.uptime.map { "\(percent($0)) uptime" } ?? (component.status == .starting ? "starting" : "no data"))</span><span>Today</span></div></div>\n"
        }
        html += "</div>\n"

        if operators { html += internalDetails(page) }

        // History: resolved incidents of the last 90 days.
        let cutoff = now.addingTimeInterval(-Double(PageSnapshot.days) * 86400)
        let past = page.incidents.filter { !$0.isOpen && ($0.resolvedAt ?? now) >= cutoff }
        html += "<h2>Incident history</h2>\n<div class=\"card\">\n"
        if past.isEmpty { html += "<p class=\"muted\">No incidents in the last \(PageSnapshot.days) days.</p>\n" }
        for incident in past.prefix(50) {
            let lasted = (incident.resolvedAt ?? now).timeIntervalSince(incident.openedAt)
            html += "<div class=\"item\" id=\"incident-\(escape(incident.id))\"><div class=\"row\"><a href=\"\(incidentLink(incident, audience))\">\(said(incident.heading))</a>"
            html += "<span class=\"muted\">\(at(incident.openedAt, now: now)) · lasted \(duration(lasted))</span></div></div>\n"
        }
        html += "</div>\n"
        return html + foot(audience)
    }

    static func incidentLink(_ incident: PageIncident, _ audience: Audience) -> String {
        (audience == .operators ? "/internal/incidents/" : "/incidents/") + pathSegment(incident.id)
    }

    /// An active incident on the main page: heading, status, latest entry.
    static func incidentSummary(_ incident: PageIncident, page: PageSnapshot, audience: Audience) -> String {
        let now = page.now
        var html = "<div class=\"card incident\" id=\"incident-\(escape(incident.id))\" style=\"border-left-color:\(incidentColour(incident))\"><div class=\"item\">"
        html += "<div class=\"row\"><h3><a href=\"\(incidentLink(incident, audience))\">\(said(incident.heading))</a></h3>"
        html += pill(PageIncident.statusWords(incident.status), incidentColour(incident)) + "</div>\n"
        if let latest = incident.timeline.first {
            let message = audience == .operators ? latest.message : publicMessage(latest, incident: incident, agentIDs: page.agentIDs)
            html += "<p>\(said(message))\(latest.person.map { " <span class=\"muted\">— \(escape($0))</span>" } ?? "")</p>\n"
        }
        html += "<div class=\"muted\">Started \(ago(incident.openedAt, now: now)) · affects \(escape(incident.affected.joined(separator: ", ")))"
        if let regions = incident.regions, !regions.isEmpty { html += " in \(escape(regions.joined(separator: ", ")))" }
        return html + "</div></div></div>\n"
    }

    /// Operators only: components × regions with evidence, the last 24 hours, agents.
    static func internalDetails(_ page: PageSnapshot) -> String {
        let now = page.now
        let verdicts = page.components.compactMap(\.verdict)
        let regions = Array(Set(verdicts.flatMap { $0.regions.keys } + page.agents.map(\.region))).sorted()
        var html = ""
        // A person's status the measurements disagree with: shown here, never silently overwritten.
        let conflicts = page.incidents.filter { !($0.conflict ?? "").isEmpty }
        if !conflicts.isEmpty {
            html += "<h2>Conflicts</h2>\n<div class=\"card\">"
            for incident in conflicts {
                html += "<div class=\"item\"><a href=\"\(incidentLink(incident, .operators))\">\(said(incident.heading))</a>: \(escape(incident.conflict ?? ""))</div>"
            }
            html += "</div>\n"
        }
        html += "<h2>Regions and evidence</h2>\n<div class=\"card\"><table class=\"stack\"><tr><th>Component</th><th>Engine</th>"
        for region in regions { html += "<th>\(escape(region))</th>" }
        html += "<th>Evidence</th></tr>\n"
        for verdict in verdicts {
            html += "<tr><td data-label=\"Component\">\(escape(verdict.component))</td><td data-label=\"Engine\">\(pill(verdict.status))"
            if let scope = verdict.scope { html += " <span class=\"muted\">\(escape(scope.rawValue))</span>" }
            html += "</td>"
            for region in regions { html += "<td data-label=\"\(escape(region))\">\(verdict.regions[region].map(pill) ?? "<span class=\"muted\">–</span>")</td>" }
            html += "<td data-label=\"Evidence\" class=\"muted\">\(escape(evidenceNotes(verdict.evidence)))</td></tr>\n"
        }
        html += "</table></div>\n"

        // Last 24 hours per component, coloured by incidents.
        html += "<h2>Last 24 hours</h2>\n<div class=\"card\"><table class=\"stack\"><tr><th>Component</th><th>Hours</th></tr>\n"
        let firstHour = (now.epochMs / 3_600_000) - 23
        let byComponent = Dictionary(grouping: page.timeline, by: \.component)
        let incidentsByComponent = Dictionary(grouping: page.incidents, by: \.component)
        for component in page.components.map(\.name) {
            let hours = Dictionary((byComponent[component] ?? []).map { ($0.hourStart.epochMs / 3_600_000, $0) }, uniquingKeysWith: { $1 })
            html += "<tr><td data-label=\"Component\">\(escape(component))</td><td><div class=\"hours\">"
            for hour in firstHour...(firstHour + 23) {
                let bucket = hours[hour]
                let hourStart = Date(epochMs: hour * 3_600_000)
                let shown = hourStatus(hourStart: hourStart, bucket: bucket, incidents: incidentsByComponent[component] ?? [], now: now)
                var title = "\(utc(hourStart)): " + (bucket.map { "\($0.total) runs, \($0.failed) failed, \($0.degraded) degraded" } ?? "no data")
                if shown != .operational && shown != .unknown { title += "; incident: \(words(shown))" }
                html += "<span style=\"background:\(colour(shown))\" title=\"\(escape(title))\"></span>"
            }
            html += "</div></td></tr>\n"
        }
        html += "</table></div>\n"

        // Agents.
        let healthByAgent = Dictionary(page.health.map { ($0.agent, $0) }, uniquingKeysWith: { $1 })
        html += "<h2>Agents</h2>\n<div class=\"card\"><table class=\"stack\"><tr><th>Agent</th><th>Region</th><th>Health</th><th>Last seen</th><th>Why</th></tr>\n"
        for agent in page.agents {
            let h = healthByAgent[agent.id]
            let state = agent.revoked ? "revoked" : h?.state.rawValue ?? "unknown"
            let stateColour =
                switch state {
                case "ok": colour(.operational)
                case "local_fault": colour(.partialOutage)
                case "silent": colour(.degradedPerformance)
                default: colour(.unknown)
                }
            html += "<tr id=\"agent-\(escape(agent.id))\"><td data-label=\"Agent\">\(escape(agent.id))</td><td data-label=\"Region\">\(escape(agent.region))</td>"
            html += "<td data-label=\"Health\">\(pill(state, stateColour))</td>"
            html += "<td data-label=\"Last seen\" class=\"muted\">\(agent.lastSeen.map { ago($0, now: now) } ?? "never")</td>"
            html += "<td data-label=\"Why\" class=\"muted\">\(escape(h?.reason ?? ""))</td></tr>\n"
        }
        return html + "</table></div>\n"
    }

    static func evidenceNotes(_ evidence: Evidence) -> String {
        var notes: [String] = []
        if !evidence.affectedBy.isEmpty { notes.append("affected by \(evidence.affectedBy.joined(separator: ", "))") }
        if evidence.failingAgentCount > 0 { notes.append("\(evidence.failingAgentCount)/\(evidence.reportingAgents) agents failing") }
        if !evidence.failingAgents.isEmpty { notes.append("failing: \(evidence.failingAgents.joined(separator: ", "))") }
        if !evidence.errorCodes.isEmpty { notes.append(evidence.errorCodes.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: ", ")) }
        if let p50 = evidence.latencyP50Ms { notes.append("p50 \(fixedDecimals(p50, 0)) ms") }
        if let p95 = evidence.latencyP95Ms { notes.append("p95 \(fixedDecimals(p95, 0)) ms") }
        if !evidence.localAgents.isEmpty { notes.append("local: \(evidence.localAgents.joined(separator: ", "))") }
        if evidence.singleAgent { notes.append("single agent") }
        return notes.joined(separator: " · ")
    }

    // MARK: - One incident

    static func renderIncident(_ incident: PageIncident, page: PageSnapshot, audience: Audience) -> String {
        let operators = audience == .operators
        let now = page.now
        var html = head(title: "\(incident.heading) · \(page.settings.title)", refresh: operators ? 15 : 60, settings: page.settings)
        html += "<p><a href=\"\(operators ? "/internal" : "/")\">← Current status</a></p>\n"
        html += "<div class=\"card incident\" style=\"border-left-color:\(incidentColour(incident))\"><div class=\"item\">"
        html += "<div class=\"row\"><h2 style=\"margin:0\">\(said(incident.heading))</h2>\(pill(PageIncident.statusWords(incident.status), incidentColour(incident)))</div>\n"
        if let severity = incident.severity { html += "<p>Impact: \(pill(severity))</p>\n" }
        html += "<p>Affected components: \(escape(incident.affected.joined(separator: ", ")))"
        if let regions = incident.regions, !regions.isEmpty { html += "<br>Regions: \(escape(regions.joined(separator: ", ")))" }
        html += "</p>\n<p class=\"muted\">Started \(at(incident.openedAt, now: now))"
        if let resolved = incident.resolvedAt {
            html += " · resolved \(at(resolved, now: now)) · lasted \(duration(resolved.timeIntervalSince(incident.openedAt)))"
        } else {
            html += " · ongoing for \(duration(now.timeIntervalSince(incident.openedAt)))"
        }
        html += "</p></div></div>\n<h2>Updates</h2>\n<div class=\"card\"><ol class=\"timeline\">\n"
        let timeline = incident.timeline
        if timeline.isEmpty { html += "<li class=\"muted\">No updates yet.</li>\n" }
        for update in timeline {
            let message = operators ? update.message : publicMessage(update, incident: incident, agentIDs: page.agentIDs)
            html += "<li><div class=\"row\"><strong>\(escape(PageIncident.statusWords(update.status)))</strong><span class=\"muted\">\(at(update.time, now: now))</span></div>"
            html += "<div>\(said(message))</div>"
            html += "<div class=\"muted\">\(update.person.map { "by \(escape($0))" } ?? (operators ? "automatic" : ""))</div></li>\n"
        }
        html += "</ol></div>\n"
        if operators {
            html += "<h2>Evidence</h2>\n<div class=\"card\"><div class=\"item\">"
            if let conflict = incident.conflict, !conflict.isEmpty { html += "<p><strong>Conflict:</strong> \(escape(conflict))</p>" }
            html += "<p>Scope: \(escape(incident.scope ?? "–")) · agents: \(escape((incident.agents ?? []).joined(separator: ", ")))</p>"
            if let evidence = incident.evidence {
                html += "<p class=\"muted\">\(escape(evidenceNotes(evidence)))</p>"
                for error in evidence.sampleErrors {
                    html += "<p class=\"muted\">\(escape(error.kind.rawValue)) at \(escape(error.step)): \(escape(error.message))</p>"
                }
            }
            html += "<p class=\"muted\">JSON: <a href=\"/v1/incidents/\(pathSegment(incident.id))\">/v1/incidents/\(escape(incident.id))</a></p></div></div>\n"
        }
        return html + foot(audience)
    }
}
