import FoundationEssentials
import SondeCore
import Synchronization

/// The agent's own counters for its optional `/metrics` (`metrics.listen`). Only built when that
/// is configured: the scheduler and uploader hold it as an optional, so an agent without metrics
/// pays one nil check per run and per push. With it, one uncontended lock per run and per push.
public final class AgentMetrics: Sendable {
    /// Upper bounds of the start-lateness buckets, in seconds.
    public static let latenessBuckets: [Double] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]

    private struct Counts {
        var runs: [Outcome: UInt64] = [:]
        var retries: UInt64 = 0
        var pushesOK: UInt64 = 0
        var pushesFailed: UInt64 = 0
        var promptPushRequests: UInt64 = 0
        var confirmationRequests: UInt64 = 0
        /// Per bucket (not cumulative), the last one for anything above the largest bound.
        var lateness = [UInt64](repeating: 0, count: AgentMetrics.latenessBuckets.count + 1)
        var latenessSum: Double = 0
        /// The last SIGHUP reload: applied or refused, and when one last succeeded (start counts).
        var lastReloadOK = true
        var lastReloadSuccess = Date().timeIntervalSince1970
    }
    private let counts = Mutex(Counts())

    public init() {}

    /// A reload applied (`ok`) or refused: Prometheus's and blackbox_exporter's
    /// `config_last_reload_successful` pair, for the usual "a config push broke" alert.
    public func recordReload(ok: Bool) {
        counts.withLock { c in
            c.lastReloadOK = ok
            if ok { c.lastReloadSuccess = Date().timeIntervalSince1970 }
        }
    }

    /// One finished run: its outcome, how long after its (jittered) slot or planned retry it
    /// started, and whether it was a retry (`retry_interval`).
    public func recordRun(_ outcome: Outcome, lateness late: Duration, retry: Bool = false) {
        let seconds = max(0, late.seconds)
        let index = Self.latenessBuckets.firstIndex { seconds <= $0 } ?? Self.latenessBuckets.count
        counts.withLock { c in
            c.runs[outcome, default: 0] += 1
            if retry { c.retries += 1 }
            c.lateness[index] += 1
            c.latenessSum += seconds
        }
    }

    /// One push attempt: acknowledged by the collector, or not (refused, failed, timed out).
    public func recordPush(ok: Bool) {
        counts.withLock { c in
            if ok { c.pushesOK += 1 } else { c.pushesFailed += 1 }
        }
    }

    /// One collector answer asking for prompt pushes (`PushAck.fastFlushSeconds`).
    public func recordPromptPushRequest() {
        counts.withLock { $0.promptPushRequests += 1 }
    }

    /// One collector answer asking to confirm components (`PushAck.confirmComponents`).
    public func recordConfirmationRequest() {
        counts.withLock { $0.confirmationRequests += 1 }
    }

    /// The exposition text: these counters, the spool's figures and the process series.
    public func render(spool: SpoolStatus, process: ProcessStats = .current()) -> String {
        let c = counts.withLock { $0 }
        var out = PrometheusText()
        out.reserve(4096)
        out.declare("sonde_agent_runs_total", type: "counter", help: "Probe runs finished since the agent started, by outcome.")
        for outcome in Outcome.allCases { out.sample("sonde_agent_runs_total", [("outcome", outcome.rawValue)], Double(c.runs[outcome] ?? 0)) }
        out.declare("sonde_agent_config_last_reload_successful", type: "gauge", help: "1 when the last SIGHUP reload was applied (or none was tried), 0 when it was refused.")
        out.sample("sonde_agent_config_last_reload_successful", [], c.lastReloadOK ? 1 : 0)
        out.declare("sonde_agent_config_last_reload_success_timestamp_seconds", type: "gauge", help: "When the config was last loaded successfully (start or reload), Unix seconds.")
        out.sample("sonde_agent_config_last_reload_success_timestamp_seconds", [], c.lastReloadSuccess.rounded(.down))
        out.declare(
            "sonde_agent_retries_total", type: "counter",
            help: "Of those runs, retries: extra runs between a probe's slots after a failed or slow run (retry_interval).")
        out.sample("sonde_agent_retries_total", [], Double(c.retries))
        var cumulative: UInt64 = 0
        var buckets: [(le: Double, count: UInt64)] = []
        for (bound, count) in zip(Self.latenessBuckets, c.lateness) {
            cumulative += count
            buckets.append((bound, cumulative))
        }
        out.histogram(
            "sonde_agent_run_start_lateness_seconds", help: "How long after its scheduled (jittered) slot each probe run started.",
            buckets: buckets, sum: (c.latenessSum * 1_000_000).rounded() / 1_000_000, count: cumulative + c.lateness[Self.latenessBuckets.count])
        out.declare("sonde_agent_pushes_total", type: "counter", help: "Push attempts to the collector, by result (failed: refused, error or time-out).")
        out.sample("sonde_agent_pushes_total", [("result", "ok")], Double(c.pushesOK))
        out.sample("sonde_agent_pushes_total", [("result", "failed")], Double(c.pushesFailed))
        out.declare(
            "sonde_agent_prompt_push_requests_total", type: "counter",
            help: "Collector answers that asked for prompt pushes (fast_flush_for_s) while it decided something.")
        out.sample("sonde_agent_prompt_push_requests_total", [], Double(c.promptPushRequests))
        out.declare(
            "sonde_agent_confirmation_requests_total", type: "counter",
            help: "Collector answers that asked to confirm components (confirm_components): their probes then run at the retry pace.")
        out.sample("sonde_agent_confirmation_requests_total", [], Double(c.confirmationRequests))
        out.declare("sonde_agent_spool_results", type: "gauge", help: "Results in the spool not yet acknowledged by the collector.")
        out.sample("sonde_agent_spool_results", [], Double(spool.unsentResults))
        out.declare("sonde_agent_spool_bytes", type: "gauge", help: "Bytes of the spool's live records (what spool.max_bytes bounds).")
        out.sample("sonde_agent_spool_bytes", [], Double(spool.liveBytes))
        out.declare("sonde_agent_spool_journal_bytes", type: "gauge", help: "Size of the spool's journal file, records compaction has not removed yet included.")
        out.sample("sonde_agent_spool_journal_bytes", [], Double(spool.journalBytes))
        out.declare("sonde_agent_spool_memory_results", type: "gauge", help: "Results held in memory only because the spool's disk fails.")
        out.sample("sonde_agent_spool_memory_results", [], Double(spool.memoryResults))
        out.declare("sonde_agent_results_dropped_total", type: "counter", help: "Results dropped because the spool (or, while its disk fails, its memory queue) was full.")
        out.sample("sonde_agent_results_dropped_total", [], Double(spool.droppedResults))
        out.declare("sonde_agent_results_rejected_total", type: "counter", help: "Results the collector refused on their own, kept in spool/rejected/ (since start).")
        out.sample("sonde_agent_results_rejected_total", [], Double(spool.rejectedResults))
        out.processAndBuild(process)
        return out.text
    }
}
