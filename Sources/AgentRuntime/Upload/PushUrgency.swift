import SondeCore

/// Which results can change a decision at the collector, so the uploader pushes them at once
/// instead of after its idle `flush_interval` pause: a run that was not `ok` (failed or
/// degraded: the collector evaluates at once on a push with one, and detection waits for it),
/// and the first `passingRunsAfterProblem` passing runs of a probe after such a run (they drive
/// recovery). Steady healthy results keep the batching.
///
/// Kept per probe name, only for probes in a problem or its recovery (a healthy agent holds
/// nothing here). A probe's first run after the agent starts counts as steady: there is no
/// previous run to compare with, and a fleet restart must not become one push per probe.
struct PushUrgency {
    /// The collector's `resolve_runs` (default 2): the passing runs in a row each agent needs
    /// before an incident resolves (`monitor_runs`, 1, before it reaches `monitoring`). The
    /// pooled passing runs recovery also needs (≈ 3 after a hard outage) come from every agent
    /// of the regions together, so an agent's own first 2 are what its recovery waits for.
    static let passingRunsAfterProblem = 2

    /// Passing runs since each probe's latest run that was not ok, while fewer than
    /// `passingRunsAfterProblem`.
    private var recovering: [String: Int] = [:]

    /// Notes `result` (in each probe's run order) and says whether it is to be pushed at once.
    mutating func isUrgent(_ result: ProbeResult) -> Bool {
        guard result.outcome == .ok else {
            recovering[result.probe] = 0
            return true
        }
        guard let passed = recovering[result.probe] else { return false }
        if passed + 1 >= Self.passingRunsAfterProblem {
            recovering[result.probe] = nil
        } else {
            recovering[result.probe] = passed + 1
        }
        return true
    }
}
