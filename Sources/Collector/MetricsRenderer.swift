import Correlation
import Foundation
import SondeCore

/// `GET /metrics`: per-probe series with blackbox_exporter's names (from each (agent, probe)'s
/// latest result) and the collector's own series.
enum MetricsRenderer {
    static func render(latest: [ProbeResult], counters: CollectorMetrics.Counters, verdicts: [ComponentVerdict], openIncidents: Int) -> String {
        var out = PrometheusText()
        func labels(_ r: ProbeResult) -> [(String, String)] {
            var pairs = [("probe", r.probe), ("component", r.component), ("agent", r.agent), ("region", r.region)]
            // The probe's own labels, as Prometheus names; two that clean up alike keep the first.
            var taken = Set(pairs.map(\.0))
            for name in (r.labels ?? [:]).keys.sorted() {
                let clean = ProbeLabels.prometheusName(name)
                if taken.insert(clean).inserted { pairs.append((clean, r.labels![name]!)) }
            }
            return pairs
        }
        out.declare("probe_success", type: "gauge", help: "Whether the latest run of the probe succeeded (ok or degraded).")
        for r in latest { out.sample("probe_success", labels(r), r.outcome == .failed ? 0 : 1) }
        out.declare("probe_duration_seconds", type: "gauge", help: "Duration of the latest run of the probe.")
        for r in latest { out.sample("probe_duration_seconds", labels(r), r.durationMs / 1000) }
        out.declare("probe_http_duration_seconds", type: "gauge", help: "Time per HTTP phase in the latest run, summed over its steps.")
        for r in latest {
            for phase in PhaseTimings.phaseNames {
                let ms = r.steps.reduce(0.0) { sum, step in sum + (step.timings.phases.first { $0.name == phase }?.ms ?? 0) }
                out.sample("probe_http_duration_seconds", labels(r) + [("phase", phase)], ms / 1000)
            }
        }
        out.declare("probe_http_status_code", type: "gauge", help: "HTTP status of the last step with a response in the latest run.")
        for r in latest {
            if let status = r.steps.last(where: { $0.status != nil })?.status { out.sample("probe_http_status_code", labels(r), Double(status)) }
        }
        out.declare("probe_ssl_earliest_cert_expiry", type: "gauge", help: "Unix time at which the first certificate of the latest run's TLS chains expires.")
        for r in latest {
            if let earliest = r.steps.compactMap(\.certNotAfter).min() {
                out.sample("probe_ssl_earliest_cert_expiry", labels(r), earliest.timeIntervalSince1970.rounded(.down))
            }
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
        return out.text
    }
}
