import Foundation
import SondeCore

/// Alerts for Alertmanager's API v2 (`POST /api/v2/alerts`, a JSON list), one per open incident,
/// as Prometheus sends its own: labels identify the alert, `startsAt` is when the incident
/// opened, and `endsAt` is either the resolution time or, while it is open, a time a few re-send
/// intervals ahead (Prometheus uses 4 × its resend delay). The dispatcher re-sends every open
/// incident's alert each `resend_interval`, so an alert stays firing while the incident is open
/// and ends by itself if the collector is gone for good, and a resolution ends it at once.
enum AlertmanagerAlerts {
    /// Alert labels Sonde sets itself; a probe label of the same name is written `label_<name>`.
    static let ownLabels: Set<String> = ["alertname", "incident", "component", "scope", "severity", "status", "regions", "agent", "source"]

    /// One alert from an outbox event (the event JSON with the incident inside it).
    static func alert(event object: [String: Any], type: String, occurredAt: Date, link: String, resendInterval: TimeInterval, now: Date) -> [String: Any] {
        var labels: [String: String]
        var ends: Date
        let probeLabels = object["labels"] as? [String: String] ?? [:]
        if let incident = object["incident"] as? [String: Any] {
            labels = incidentLabels(incident)
            let resolved = (incident["resolved_at"] as? String).flatMap(RFC3339.date(from:))
            ends = resolved ?? now.addingTimeInterval(4 * resendInterval)
        } else {
            // An agent's problem or a test alert: not re-sent, so they end by themselves unless
            // the agent's recovery ends its problem's alert first (same labels, `endsAt` now).
            labels = ["alertname": type == AlertEventType.test.rawValue ? "SondeTestAlert" : "SondeAgentProblem", "source": "sonde"]
            if let agent = object["agent"] as? String { labels["agent"] = agent }
            let recovered = type == AlertEventType.agentRecovered.rawValue
            let problemStatus = recovered ? (object["resolves_type"] as? String).map { String($0.dropFirst("agent.".count)) } : object["status"] as? String
            if let status = problemStatus { labels["status"] = status }
            if let component = object["component"] as? String { labels["component"] = component }
            ends = recovered ? occurredAt : occurredAt.addingTimeInterval(4 * resendInterval)
        }
        add(probeLabels, to: &labels)
        let startsAt = ((object["incident"] as? [String: Any])?["opened_at"] as? String).flatMap(RFC3339.date(from:)) ?? occurredAt
        if ends < startsAt { ends = startsAt }
        return [
            "labels": labels,
            "annotations": annotations(summary: object["summary"] as? String ?? type, object: object, link: link),
            "startsAt": RFC3339.string(from: startsAt), "endsAt": RFC3339.string(from: ends), "generatorURL": link,
        ]
    }

    /// The labels that identify an incident's alert: stable for its life except `scope`,
    /// `severity` and `regions`, which follow the incident (the dispatcher ends the old label
    /// set when they change).
    static func incidentLabels(_ incident: [String: Any]) -> [String: String] {
        var labels = ["alertname": "SondeIncident", "source": "sonde"]
        if let id = incident["id"] as? String { labels["incident"] = id }
        if let component = incident["component"] as? String { labels["component"] = component }
        if let scope = incident["scope"] as? String { labels["scope"] = scope }
        if let severity = incident["severity"] as? String {
            labels["severity"] = WebhookPayload.severity(severity)
            labels["status"] = severity
        }
        if let regions = incident["regions"] as? [String], !regions.isEmpty { labels["regions"] = regions.sorted().joined(separator: ",") }
        return labels
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
        if let incident = object["incident"] as? [String: Any] {
            if let regions = incident["regions"] as? [String], !regions.isEmpty { lines.append("Regions: \(regions.joined(separator: ", "))") }
            if let agents = incident["agents"] as? [String], !agents.isEmpty { lines.append("Agents: \(agents.joined(separator: ", "))") }
            if let evidence = incident["evidence"] as? [String: Any] {
                // The pooled ratio over each probe's last `flaky_window` runs, which still holds runs
                // from before a fault began: named for what it is, not read as the fault's rate.
                if let ratio = evidence["failure_ratio"] as? Double {
                    lines.append("Failed runs in the recent window (each probe's last runs, some from before it began): \(Int((ratio * 100).rounded())) %")
                }
                if let codes = evidence["error_codes"] as? [String: Int], !codes.isEmpty {
                    lines.append("Errors: " + codes.sorted { $0.key < $1.key }.map { "\($0.key) ×\($0.value)" }.joined(separator: ", "))
                }
            }
        }
        var annotations = ["summary": String(summary.prefix(1024)), "link": link]
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
