import Correlation
import Foundation
import SondeCore

/// `GET /metrics`: per-probe series with blackbox_exporter's names (from each (agent, probe)'s
/// latest result), agent and component state, the collector's own counters, and the standard
/// `process_*` and build-info series.
///
/// Series never outlive what they describe: a silent or revoked agent's probe series disappear
/// (its `sonde_agent_up` says 0), as do those of a probe that stopped reporting (see
/// ``CollectorMetrics/LatestRun/staleAfter``). Prometheus then marks them stale, so a stopped agent
/// is never shown as succeeding.
enum MetricsRenderer {
    /// The runs whose series are shown: not a revoked agent's, and not a silent agent's unless
    /// the run arrived after the evaluation that called it silent (an agent's first push after
    /// a pause, or after start-up, shows at once rather than at the next evaluation).
    static func visibleRuns(_ runs: [CollectorMetrics.LatestRun], agents: [AgentHealth], agentsAt: Date) -> [ProbeResult] {
        let states = Dictionary(agents.map { ($0.agent, $0.state) }, uniquingKeysWith: { $1 })
        return runs.filter { run in
            switch states[run.result.agent] {
            case .revoked: false
            case .silent: run.receivedAt > agentsAt
            case .ok, .localFault, nil: true
            }
        }.map(\.result)
    }

    static func render(
        runs: [CollectorMetrics.LatestRun], agents: [AgentHealth], agentsAt: Date, counters: CollectorMetrics.Counters, verdicts: [ComponentVerdict],
        openIncidents: Int, deadLetters: Int, pushBytesInFlight: Int = 0, connections: ConnectionCap.Counts? = nil, process: ProcessStats = .current()
    ) -> String {
        var out = PrometheusText()
        let latest = visibleRuns(runs, agents: agents, agentsAt: agentsAt)
        // Up: reporting by the latest evaluation, or silent by it but heard from since.
        let heardFrom = Set(latest.map(\.agent))
        let reporting = Set(agents.filter { $0.state == .ok || $0.state == .localFault || ($0.state == .silent && heardFrom.contains($0.agent)) }.map(\.agent))
        out.reserve(latest.count * 1024)
        // Each series' label set is escaped once and reused by every metric of that series.
        let labels = latest.map { r in PrometheusText.labels(seriesLabels(r)) }
        out.declare("probe_success", type: "gauge", help: "Whether the latest run of the probe succeeded (ok or degraded).")
        for (r, l) in zip(latest, labels) { out.sample("probe_success", rendered: l, r.outcome == .failed ? 0 : 1) }
        out.declare("probe_degraded", type: "gauge", help: "Whether the latest run succeeded but slower than the probe's degraded_after.")
        for (r, l) in zip(latest, labels) { out.sample("probe_degraded", rendered: l, r.outcome == .degraded ? 1 : 0) }
        out.declare("probe_duration_seconds", type: "gauge", help: "Duration of the latest run of the probe.")
        for (r, l) in zip(latest, labels) { out.sample("probe_duration_seconds", rendered: l, PrometheusText.seconds(ms: r.durationMs)) }
        out.declare("probe_last_run_timestamp_seconds", type: "gauge", help: "When the latest run of the probe started (Unix time, agent clock).")
        for (r, l) in zip(latest, labels) {
            out.sample("probe_last_run_timestamp_seconds", rendered: l, (r.startedAt.timeIntervalSince1970 * 1000).rounded() / 1000)
        }
        out.declare(
            "probe_http_duration_seconds", type: "gauge",
            help: "Time per HTTP phase in the latest run, summed over its steps (blackbox_exporter's phase names).")
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
            // blackbox_exporter's phase names: Sonde's dns is `resolve`, its ttfb `processing`.
            for (phase, ms) in [("resolve", sums.dns), ("connect", sums.connect), ("tls", sums.tls), ("processing", sums.ttfb), ("transfer", sums.transfer)] {
                out.sample("probe_http_duration_seconds", rendered: open + ",phase=\"\(phase)\"}", PrometheusText.seconds(ms: ms))
            }
        }
        out.declare("probe_dns_lookup_time_seconds", type: "gauge", help: "Time spent resolving names in the latest run, summed over its steps (blackbox_exporter's name).")
        for (r, l) in zip(latest, labels) {
            out.sample("probe_dns_lookup_time_seconds", rendered: l, PrometheusText.seconds(ms: r.steps.reduce(0) { $0 + $1.timings.dns }))
        }
        out.declare("probe_http_ssl", type: "gauge", help: "1 when the last HTTP step of the latest run used TLS (https), else 0; HTTP probes only.")
        for (r, l) in zip(latest, labels) {
            if let step = r.steps.last(where: { $0.url.hasPrefix("http://") || $0.url.hasPrefix("https://") }) {
                out.sample("probe_http_ssl", rendered: l, step.url.hasPrefix("https://") ? 1 : 0)
            }
        }
        out.declare("probe_http_status_code", type: "gauge", help: "HTTP status of the last step with a response in the latest run.")
        // 0 when an HTTP probe got no response at all (refused, time-out), as blackbox_exporter
        // does, so `probe_http_status_code != 200` also catches the hardest failure.
        for (r, l) in zip(latest, labels) {
            if let status = r.steps.last(where: { $0.status != nil })?.status {
                out.sample("probe_http_status_code", rendered: l, Double(status))
            } else if r.steps.contains(where: { $0.url.hasPrefix("http://") || $0.url.hasPrefix("https://") }) {
                out.sample("probe_http_status_code", rendered: l, 0)
            }
        }
        out.declare("probe_ssl_earliest_cert_expiry", type: "gauge", help: "Unix time at which the first certificate of the latest run's TLS chains expires.")
        for (r, l) in zip(latest, labels) {
            if let earliest = r.steps.compactMap(\.certNotAfter).min() {
                out.sample("probe_ssl_earliest_cert_expiry", rendered: l, earliest.timeIntervalSince1970.rounded(.down))
            }
        }

        // A revoked agent was retired on purpose: no series, as a target removed from Prometheus's
        // service discovery has none, so `sonde_agent_up == 0` alerts only on agents gone silent.
        out.declare("sonde_agent_up", type: "gauge", help: "1 while the agent reports (ok or local_fault), 0 when silent; revoked agents have no series.")
        for agent in agents.sorted(by: { $0.agent < $1.agent }) where agent.state != .revoked {
            out.sample("sonde_agent_up", [("agent", agent.agent), ("region", agent.region)], reporting.contains(agent.agent) ? 1 : 0)
        }
        out.declare("sonde_agent_local_fault", type: "gauge", help: "1 while the agent's failures are its own (host or network), else 0.")
        for agent in agents.sorted(by: { $0.agent < $1.agent }) where agent.state != .revoked {
            out.sample("sonde_agent_local_fault", [("agent", agent.agent), ("region", agent.region)], agent.state == .localFault ? 1 : 0)
        }
        // State sets with one fixed label set per component and state (as kube-state-metrics'
        // `kube_pod_status_phase`): the scope is a series of its own, so a rule on the status
        // keeps its `for:` while an outage spreads from a region to the platform (the SRE
        // review's F5: with `scope` among the status's labels the series changed and a naive
        // `for: 3m` never fired).
        out.declare(
            "sonde_component_status", type: "gauge",
            help: "1 for the component's current status, 0 for the others. Known components only (declared, or reported by min_component_agents agents).")
        for verdict in verdicts where verdict.known {
            for status in ComponentStatus.allCases {
                out.sample("sonde_component_status", [("component", verdict.component), ("status", status.rawValue)], verdict.status == status ? 1 : 0)
            }
        }
        out.declare(
            "sonde_component_scope", type: "gauge",
            help: "1 for where the component's problem lives (agent, region, platform; none when operational), 0 for the others.")
        for verdict in verdicts where verdict.known {
            let current = verdict.scope?.rawValue ?? "none"
            for scope in ["none"] + ProblemScope.allCases.map(\.rawValue) {
                out.sample("sonde_component_scope", [("component", verdict.component), ("scope", scope)], scope == current ? 1 : 0)
            }
        }
        out.declare(
            "sonde_component_affected_by", type: "gauge",
            help: "1 while the component shows another's problem: its journeys fail at that component's step (cause), and the incident is the cause's.")
        for verdict in verdicts where verdict.known {
            for cause in verdict.evidence.affectedBy {
                out.sample("sonde_component_affected_by", [("component", verdict.component), ("cause", cause)], 1)
            }
        }
        out.declare(
            "sonde_component_region_status", type: "gauge",
            help: "1 for the component's current status in the region, 0 for the others; unknown while none of the region's agents that ran its probes reports.")
        for verdict in verdicts where verdict.known {
            // A region nothing watches now stays, as unknown: a blind spot is not a healthy region.
            let regions = verdict.regions.merging(verdict.unwatchedRegions.map { ($0, .unknown) }) { measured, _ in measured }
            for region in regions.keys.sorted() {
                for status in ComponentStatus.allCases {
                    out.sample(
                        "sonde_component_region_status", [("component", verdict.component), ("region", region), ("status", status.rawValue)],
                        regions[region] == status ? 1 : 0)
                }
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
        out.declare(
            "sonde_ingest_push_bytes_in_flight", type: "gauge",
            help: "Push body bytes received and held now, of pushes not yet answered (limits.max_push_bytes_in_flight bounds it).")
        out.sample("sonde_ingest_push_bytes_in_flight", [], Double(pushBytesInFlight))
        if let connections {
            out.declare("sonde_http_connections", type: "gauge", help: "Client connections open now (limits.max_connections bounds them).")
            out.sample("sonde_http_connections", [], Double(connections.open.load(ordering: .relaxed)))
            out.declare("sonde_http_connections_limit", type: "gauge", help: "limits.max_connections: past it new connections wait until one closes.")
            out.sample("sonde_http_connections_limit", [], Double(connections.limit))
            out.declare("sonde_http_connection_limit_reached_total", type: "counter", help: "Times the connection limit was reached and accepting paused.")
            out.sample("sonde_http_connection_limit_reached_total", [], Double(connections.pauses.load(ordering: .relaxed)))
        }
        out.declare("sonde_webhook_deliveries_total", type: "counter", help: "Webhook delivery attempts by target (its name) and result, since start.")
        for (key, count) in counters.webhookAttempts.sorted(by: { $0.key < $1.key }) {
            out.sample("sonde_webhook_deliveries_total", [("target", key.target), ("result", key.result)], Double(count))
        }
        out.declare("sonde_webhook_dead_letters", type: "gauge", help: "Deliveries in the dead-letter table (sonde alert dead-letters).")
        out.sample("sonde_webhook_dead_letters", [], Double(deadLetters))
        out.declare("sonde_config_last_reload_successful", type: "gauge", help: "1 when the last SIGHUP reload was applied (or none was tried), 0 when it was refused.")
        out.sample("sonde_config_last_reload_successful", [], counters.lastReloadOK ? 1 : 0)
        out.declare("sonde_config_last_reload_success_timestamp_seconds", type: "gauge", help: "When the config was last loaded successfully (start or reload), Unix seconds.")
        out.sample("sonde_config_last_reload_success_timestamp_seconds", [], counters.lastReloadSuccess.rounded(.down))
        out.declare("sonde_refusals_total", type: "counter", help: "Refused requests by surface (ingest, api) and reason code.")
        for (key, count) in counters.refusals.sorted(by: { $0.key < $1.key }) {
            out.sample("sonde_refusals_total", [("surface", key.surface), ("reason", key.reason)], Double(count))
        }

        out.processAndBuild(process)
        return out.text
    }

    /// A probe series' labels: probe, component, agent, region, then the probe's own labels as
    /// Prometheus names (two that clean up alike keep the first).
    static func seriesLabels(_ r: ProbeResult) -> [(String, String)] {
        var pairs = [("probe", r.probe), ("component", r.component), ("agent", r.agent), ("region", r.region)]
        var taken = Set(pairs.map(\.0))
        for (name, value) in (r.labels ?? [:]).sorted(by: { $0.key < $1.key }) {
            let clean = ProbeLabels.prometheusName(name)
            if taken.insert(clean).inserted { pairs.append((clean, value)) }
        }
        return pairs
    }
}
