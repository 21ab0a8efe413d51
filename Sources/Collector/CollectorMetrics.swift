import Foundation
import SondeCore
import Synchronization

/// The collector's own counters and each (agent, probe)'s latest result, for `GET /metrics`.
public final class CollectorMetrics: Sendable {
    struct Counters {
        var batchesAccepted = 0
        var batchesDuplicate = 0
        var batchesRejected = 0
        var results = 0
        /// Delivery attempts by (target name, result): a name is the config's own, credential-free
        /// delivery key, so one dead target shows while another works.
        var webhookAttempts: [WebhookKey: Int] = [:]
        /// The last SIGHUP reload: applied (or none tried) or refused, and when the config last loaded.
        var lastReloadOK = true
        var lastReloadSuccess = Date().timeIntervalSince1970
        /// Refusals by (where, reason code); reason codes are this program's own, a fixed set.
        var refusals: [RefusalKey: Int] = [:]
    }

    /// Where a request was refused.
    enum Surface: String, Sendable {
        /// `POST /v1/results` (agents).
        case ingest
        /// The token-protected API, the status page and `/metrics`.
        case api
    }

    struct RefusalKey: Hashable, Comparable {
        var surface: String
        var reason: String
        static func < (a: RefusalKey, b: RefusalKey) -> Bool { (a.surface, a.reason) < (b.surface, b.reason) }
    }

    struct WebhookKey: Hashable, Comparable {
        var target: String
        var result: String
        static func < (a: WebhookKey, b: WebhookKey) -> Bool { (a.target, a.result) < (b.target, b.result) }
    }

    struct ProbeKey: Hashable {
        var agent: String
        var probe: String
    }

    /// An (agent, probe)'s newest result, when it arrived, and the probe's interval as seen from
    /// the spacing of its last two regular runs (nil until there are two). Retries (`retry`) come
    /// faster than the interval: they neither set it nor move the regular run it counts from.
    struct LatestRun {
        var result: ProbeResult
        var receivedAt: Date
        var interval: TimeInterval?
        var regularStartedAt: Date? = nil

        /// A series goes stale (and leaves /metrics) after three of its intervals without a run,
        /// at least 30 s; 10 minutes while its interval is unknown. A probe removed from an agent
        /// thus disappears rather than repeating its last value for ever.
        var staleAfter: TimeInterval { interval.map { max(3 * $0, 30) } ?? 600 }
    }

    private let counters = Mutex(Counters())
    /// Each (agent, probe)'s label set as shown and when it last changed; kept while its series
    /// is fresh and `labelChangeInterval` after a change (pausing a probe resets no allowance).
    private let labelSets = Mutex([ProbeKey: (labels: [String: String]?, changedAt: Date)]())
    /// An (agent, probe)'s labels change at most once in this time: a `labels:` edit shows within
    /// it, but an agent sending new label values on every run made a new Prometheus series per
    /// run (about 1,800 a second at the caps; red team, fifth pass).
    static let labelChangeInterval: TimeInterval = 600
    private let connectionCounts = Mutex<ConnectionCap.Counts?>(nil)
    /// The server's connection counts, once it is built.
    var connections: ConnectionCap.Counts? {
        get { connectionCounts.withLock { $0 } }
        set { connectionCounts.withLock { $0 = newValue } }
    }
    private let latest = Mutex([ProbeKey: LatestRun]())

    public init() {}

    func batchAccepted(results: Int) { counters.withLock { $0.batchesAccepted += 1; $0.results += results } }
    func batchDuplicate() { counters.withLock { $0.batchesDuplicate += 1 } }
    func batchRejected() { counters.withLock { $0.batchesRejected += 1 } }
    func webhookDelivered(target: String) { webhookAttempt(target, "delivered") }
    func webhookFailed(target: String) { webhookAttempt(target, "failed") }
    func webhookDeadLettered(target: String) { webhookAttempt(target, "dead_lettered") }
    private func webhookAttempt(_ target: String, _ result: String) {
        counters.withLock { counters in
            // Every result of a target appears together, from 0, so rate() of each is defined.
            for each in ["delivered", "failed", "dead_lettered"] { counters.webhookAttempts[WebhookKey(target: target, result: each), default: 0] += 0 }
            counters.webhookAttempts[WebhookKey(target: target, result: result), default: 0] += 1
        }
    }
    func recordReload(ok: Bool) {
        counters.withLock { c in
            c.lastReloadOK = ok
            if ok { c.lastReloadSuccess = Date().timeIntervalSince1970 }
        }
    }
    func refused(_ surface: Surface, reason: String) {
        counters.withLock { $0.refusals[RefusalKey(surface: surface.rawValue, reason: reason), default: 0] += 1 }
    }

    /// Keeps the newest result per (agent, probe), received at `receivedAt`, with its labels
    /// changed at most once per `labelChangeInterval` (the earlier set stays until then).
    func record(_ results: [ProbeResult], receivedAt: Date = Date()) {
        latest.withLock { latest in
            for var result in results {
                let key = ProbeKey(agent: result.agent, probe: result.probe)
                let current = latest[key]
                if let current, current.result.startedAt >= result.startedAt { continue }
                labelSets.withLock { sets in
                    guard let shown = sets[key] else {
                        sets[key] = (result.labels, .distantPast)  // a first set is no change
                        return
                    }
                    guard result.labels != shown.labels else { return }
                    if receivedAt.timeIntervalSince(shown.changedAt) < Self.labelChangeInterval {
                        result.labels = shown.labels
                    } else {
                        sets[key] = (result.labels, receivedAt)
                    }
                }
                var interval = current?.interval
                var regularStartedAt = current?.regularStartedAt
                if result.retry != true {
                    if let regularStartedAt { interval = result.startedAt.timeIntervalSince(regularStartedAt) }
                    regularStartedAt = result.startedAt
                }
                latest[key] = LatestRun(result: result, receivedAt: receivedAt, interval: interval, regularStartedAt: regularStartedAt)
            }
        }
    }

    /// Stored results read back at a start (or a take-over), each as received when it ended.
    func record(recent: [ProbeResult]) {
        for result in recent { record([result], receivedAt: result.startedAt.addingTimeInterval(result.durationMs / 1000)) }
    }

    /// The latest runs that are not stale at `now`, sorted by probe and agent; stale ones are
    /// forgotten.
    func latestRuns(now: Date) -> [LatestRun] {
        latest.withLock { latest in
            latest = latest.filter { now.timeIntervalSince($0.value.receivedAt) <= $0.value.staleAfter }
            labelSets.withLock { sets in
                sets = sets.filter { latest[$0.key] != nil || now.timeIntervalSince($0.value.changedAt) < Self.labelChangeInterval }
            }
            return Array(latest.values)
        }.sorted { ($0.result.probe, $0.result.agent) < ($1.result.probe, $1.result.agent) }
    }

    var snapshot: Counters { counters.withLock { $0 } }

    /// Most labels an alert carries from its component's probes (each probe has at most 32).
    static let maxAlertLabels = 32

    /// The `labels` of a component's probes (their latest runs, every agent), for its alerts.
    /// Each agent counts once per label, and a label goes on the alerts only when more than half
    /// of the agents reporting the component carry it: one agent among several can neither add
    /// names, push the honest ones out of the `maxAlertLabels`, nor change a value routes match
    /// on (F9); one of two can add no name (a `route: blackhole` of its own), only make a value a
    /// visible conflict. A name's value is the one most agents give; values tied for most are
    /// sorted and joined with `,`. Labels carried by more agents come first, then by name.
    func probeLabels(component: String, now: Date) -> [String: String] {
        var agents = Set<String>()
        var carriers: [String: [String: Set<String>]] = [:]
        // A journey's labels go with the incidents of its steps' components too: a login
        // incident opened from the login step of `team: storage`'s upload journey is routed as
        // that journey's would be.
        for run in latestRuns(now: now) where run.result.component == component || run.result.steps.contains(where: { $0.component == component }) {
            agents.insert(run.result.agent)
            for (name, value) in run.result.labels ?? [:] { carriers[name, default: [:]][value, default: []].insert(run.result.agent) }
        }
        var kept: [(name: String, value: String, agents: Int)] = []
        for (name, values) in carriers {
            let carrying = values.values.reduce(into: Set<String>()) { $0.formUnion($1) }.count
            guard carrying * 2 > agents.count else { continue }
            let most = values.values.map(\.count).max() ?? 0
            kept.append((name, values.filter { $0.value.count == most }.keys.sorted().joined(separator: ","), most))
        }
        kept.sort { $0.agents != $1.agents ? $0.agents > $1.agents : $0.name < $1.name }
        return Dictionary(uniqueKeysWithValues: kept.prefix(Self.maxAlertLabels).map { ($0.name, $0.value) })
    }
}
