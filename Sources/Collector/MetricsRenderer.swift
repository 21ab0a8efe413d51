import Correlation
import Foundation
import SondeCore

/// `GET /metrics`: per-probe series with blackbox_exporter's names (from each (agent, probe)'s
/// latest result) and the collector's own series.
enum MetricsRenderer {
    static func render(
        latest: [ProbeResult], counters: CollectorMetrics.Counters, verdicts: [ComponentVerdict], openIncidents: Int, deadLetters: Int
    ) -> String {
        var out = PrometheusText()
        out.reserve(latest.count * 1024)
        // Each series' label set is escaped once and reused by every metric of that series.
        let labels = latest.map { r in PrometheusText.labels([("probe", r.probe), ("component", r.component), ("agent", r.agent), ("region", r.region)]) }
        out.declare("probe_success", type: "gauge", help: "Whether the latest run of the probe succeeded (ok or degraded).")
        for (r, l) in zip(latest, labels) { out.sample("probe_success", rendered: l, r.outcome == .failed ? 0 : 1) }
        out.declare("probe_duration_seconds", type: "gauge", help: "Duration of the latest run of the probe.")
        for (r, l) in zip(latest, labels) { out.sample("probe_duration_seconds", rendered: l, r.durationMs / 1000) }
        out.declare("probe_http_duration_seconds", type: "gauge", help: "Time per HTTP phase in the latest run, summed over its steps.")
        for (r, l) in zip(latest, labels) {
            var sums = (dns: 0.0, connect: 0.0, tls: 0.0, ttfb: 0.0, transfer: 0.0)
            for step in r.steps {
                let t = step.timings
                sums.dns += t.dns
                sums.connect += t.connect
                sums.tls += t.tls
                sums.ttfb += t.ttfb
                sums.transfer += t.transfer
            }
            let open = l.dropLast()  // `{…}` without the closing brace, to add the phase label
            for (phase, ms) in [("dns", sums.dns), ("connect", sums.connect), ("tls", sums.tls), ("ttfb", sums.ttfb), ("transfer", sums.transfer)] {
                out.sample("probe_http_duration_seconds", rendered: open + ",phase=\"\(phase)\"}", ms / 1000)
            }
        }
        out.declare("probe_http_status_code", type: "gauge", help: "HTTP status of the last step with a response in the latest run.")
        for (r, l) in zip(latest, labels) {
            if let status = r.steps.last(where: { $0.status != nil })?.status { out.sample("probe_http_status_code", rendered: l, Double(status)) }
        }
        out.declare("sonde_component_status", type: "gauge", help: "1 for the component's current status, 0 for the others.")
        for verdict in verdicts {
            for status in ComponentStatus.allCases {
                out.sample("sonde_component_status", [("component", verdict.component), ("status", status.rawValue)], verdict.status == status ? 1 : 0)
            }
        }
        out.declare("sonde_incidents_open", type: "gauge", help: "Open incidents.")
        out.sample("sonde_incidents_open", [], Double(openIncidents))
        out.declare("sonde_ingest_batches_total", type: "counter", help: "Pushed batches by result.")
        out.sample("sonde_ingest_batches_total", [("result", "accepted")], Double(counters.batchesAccepted))
        out.sample("sonde_ingest_batches_total", [("result", "duplicate")], Double(counters.batchesDuplicate))
        out.sample("sonde_ingest_batches_total", [("result", "rejected")], Double(counters.batchesRejected))
        out.declare("sonde_ingest_results_total", type: "counter", help: "Results stored.")
        out.sample("sonde_ingest_results_total", [], Double(counters.results))
        out.declare("sonde_webhook_deliveries_total", type: "counter", help: "Webhook delivery attempts by result.")
        out.sample("sonde_webhook_deliveries_total", [("result", "delivered")], Double(counters.webhookDelivered))
        out.sample("sonde_webhook_deliveries_total", [("result", "failed")], Double(counters.webhookFailed))
        out.sample("sonde_webhook_deliveries_total", [("result", "dead_lettered")], Double(counters.webhookDeadLettered))
        out.declare("sonde_webhook_dead_letters", type: "gauge", help: "Deliveries in the dead-letter table (sonde alert dead-letters).")
        out.sample("sonde_webhook_dead_letters", [], Double(deadLetters))
        out.declare("sonde_refusals_total", type: "counter", help: "Refused requests by surface (ingest, api) and reason code.")
        for (key, count) in counters.refusals.sorted(by: { $0.key < $1.key }) {
            out.sample("sonde_refusals_total", [("surface", key.surface), ("reason", key.reason)], Double(count))
        }
        return out.text
    }
}
