import Foundation
import SondeCore

/// Alerts for Alertmanager's API v2 (`POST /api/v2/alerts`, a JSON list), as Prometheus sends its
/// own: labels identify an alert and stay as they are for its life; what changes while it lasts
/// (scope, regions, status, the summary) goes in annotations. `startsAt` is when the incident
/// opened, and `endsAt` is either the resolution time or, while it is open, a time a few re-send
/// intervals ahead (Prometheus uses 4 × its resend delay). The dispatcher re-sends every open
/// incident's alerts each `resend_interval`, so they stay firing while the incident is open and
/// end by themselves if the collector is gone for good, and a resolution ends them at once.
///
/// An incident has one alert per severity it has reached (`severity` is the one label that
/// differs), each firing until the incident resolves, as a Prometheus rule pair `warning` /
/// `critical` does while the worse threshold is crossed: an outage that grows never sends a
/// "resolved" for its lesser alert (the SRE review's F1), and Alertmanager's usual inhibit rule
/// (`critical` mutes `warning` with equal `incident`) keeps one notification per receiver.
enum AlertmanagerAlerts {
    /// Alert labels Sonde sets itself; a probe label of the same name is written `label_<name>`.
    static let ownLabels: Set<String> = ["alertname", "incident", "component", "scope", "severity", "status", "regions", "agent", "source"]

    /// The alerts of an outbox event (the event JSON with the incident inside it): one per
    /// severity the incident has reached, or one for an agent's problem or a test.
    static func alerts(event object: [String: Any], type: String, occurredAt: Date, link: String, resendInterval: TimeInterval, now: Date) -> [[String: Any]] {
        let probeLabels = object["labels"] as? [String: String] ?? [:]
        // An incident's alerts say what its timeline says last, whether sent for an event or
        // re-sent: the summary no longer switches between the event's one-liner and the
        // timeline's sentence from one send to the next (the SRE review's F6).
        let latest = ((object["incident"] as? [String: Any])?["updates"] as? [[String: Any]])?.last?["message"] as? String
        let annotations = annotations(summary: latest ?? object["summary"] as? String ?? type, object: object, link: link)
        guard let incident = object["incident"] as? [String: Any] else {
            // An agent's problem (re-sent every resend_interval while it lasts, as an incident's
            // alerts are) or a test alert (not re-sent: it ends by itself); the agent's recovery
            // ends its problem's alert at once (same labels, `endsAt` now).
            var labels = ["alertname": type == AlertEventType.test.rawValue ? "SondeTestAlert" : "SondeAgentProblem", "source": "sonde"]
            if let agent = object["agent"] as? String { labels["agent"] = agent }
            let recovered = type == AlertEventType.agentRecovered.rawValue
            let problemStatus = recovered ? (object["resolves_type"] as? String).map { String($0.dropFirst("agent.".count)) } : object["status"] as? String
            if let status = problemStatus { labels["status"] = status }
            if let component = object["component"] as? String { labels["component"] = component }
            add(probeLabels, to: &labels)
            let ends = recovered ? occurredAt : max(occurredAt, now).addingTimeInterval(4 * resendInterval)
            return [alert(labels: labels, annotations: annotations, startsAt: occurredAt, endsAt: ends, link: link)]
        }
        var identity = incidentLabels(incident)
        add(probeLabels, to: &identity)
        let startsAt = (incident["opened_at"] as? String).flatMap(RFC3339.date(from:)) ?? occurredAt
        let ends = (incident["resolved_at"] as? String).flatMap(RFC3339.date(from:)) ?? now.addingTimeInterval(4 * resendInterval)
        return severities(incident).map { severity in
            var labels = identity
            labels["severity"] = severity
            return alert(labels: labels, annotations: annotations, startsAt: startsAt, endsAt: ends, link: link)
        }
    }

    private static func alert(labels: [String: String], annotations: [String: String], startsAt: Date, endsAt: Date, link: String) -> [String: Any] {
        [
            "labels": labels, "annotations": annotations, "startsAt": RFC3339.string(from: startsAt),
            "endsAt": RFC3339.string(from: max(startsAt, endsAt)), "generatorURL": link,
        ]
    }

    /// The labels that identify an incident's alerts, the same for its whole life: which incident
    /// of which component. Its severities are in ``severities(_:)``.
    static func incidentLabels(_ incident: [String: Any]) -> [String: String] {
        var labels = ["alertname": "SondeIncident", "source": "sonde"]
        if let id = incident["id"] as? String { labels["incident"] = id }
        if let component = incident["component"] as? String { labels["component"] = component }
        return labels
    }

    /// Every alert severity (`critical`, `error`, `warning`, `info`) the incident has had, from
    /// its updates and its current severity, worst first: read from the incident itself, so a
    /// restarted collector re-sends the same alerts.
    static func severities(_ incident: [String: Any]) -> [String] {
        var statuses = (incident["updates"] as? [[String: Any]] ?? []).compactMap { $0["severity"] as? String }
        if let current = incident["severity"] as? String { statuses.append(current) }
        let order = ["critical", "error", "warning", "info"]
        let reached = Set(statuses.map { WebhookPayload.severity($0) })
        return order.filter { reached.contains($0) }.ifEmpty(["info"])
    }

    static func add(_ probeLabels: [String: String], to labels: inout [String: String]) {
        for (name, value) in probeLabels.sorted(by: { $0.key < $1.key }) {
            var clean = ProbeLabels.prometheusName(name)
            if ownLabels.contains(clean) { clean = "label_" + clean }
            if labels[clean] == nil { labels[clean] = value }
        }
    }

    static func annotations(summary: String, object: [String: Any], link: String) -> [String: String] {
        var lines: [String] = []
        var current: [String: String] = [:]
        if let incident = object["incident"] as? [String: Any] {
            // What the incident is now (labels never change; these do).
            if let scope = incident["scope"] as? String { current["scope"] = scope }
            if let status = incident["severity"] as? String { current["status"] = status }
            if let regions = incident["regions"] as? [String] { current["regions"] = regions.sorted().joined(separator: ",") }
            if let regions = incident["regions"] as? [String], !regions.isEmpty { lines.append("Regions: \(regions.joined(separator: ", "))") }
            if let agents = incident["agents"] as? [String], !agents.isEmpty { lines.append("Agents: \(agents.joined(separator: ", "))") }
            if let evidence = incident["evidence"] as? [String: Any] {
                // How many agents fail now, not the pooled ratio of each probe's last runs: that
                // still holds runs from before the fault and read "30 %" under a total outage
                // (the SRE review's F6).
                if let failing = evidence["failing_agent_count"] as? Int, let reporting = evidence["reporting_agents"] as? Int, reporting > 0 {
                    lines.append("Agents failing: \(failing) of \(reporting)")
                }
                if let codes = evidence["error_codes"] as? [String: Int], !codes.isEmpty {
                    lines.append("Errors: " + codes.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
                }
            }
        }
        var annotations = current.merging(["summary": String(summary.prefix(1024)), "link": link]) { $1 }
        if !lines.isEmpty { annotations["description"] = lines.joined(separator: "\n") }
        return annotations
    }

    /// The request body: a JSON list of alerts.
    static func body(_ alerts: [[String: Any]]) -> Data {
        (try? JSONSerialization.data(withJSONObject: alerts, options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data("[]".utf8)
    }

    /// `url` as given, or with `/api/v2/alerts` added when it names only Alertmanager's address.
    static func endpoint(_ url: String) -> String {
        let trimmed = url.hasSuffix("/") ? String(url.dropLast()) : url
        let afterScheme = trimmed.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        return afterScheme.count <= 3 ? trimmed + "/api/v2/alerts" : trimmed
    }
}

extension Array {
    fileprivate func ifEmpty(_ fallback: [Element]) -> [Element] { isEmpty ? fallback : self }
}
