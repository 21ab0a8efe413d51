import Foundation
import SondeCore

/// Which components the collector asks agents to confirm now, per region (the push answer's
/// `confirm_components`): agents then run every probe that exercises such a component at its
/// retry pace, as if it had failed itself. One agent's failure is confirmed or refuted by its
/// region's peers within seconds instead of their next intervals (a fault that fails a tenth of
/// requests gives each peer a failure only every few intervals), and an incident's end is seen
/// from as many runs as its start.
public struct ConfirmationRequests: Sendable, Hashable {
    /// Components every region is asked to confirm (a problem that may be platform-wide).
    public var everywhere: Set<String> = []
    /// Components asked in one region only, by region name.
    public var byRegion: [String: Set<String>] = [:]

    public init(everywhere: Set<String> = [], byRegion: [String: Set<String>] = [:]) {
        self.everywhere = everywhere
        self.byRegion = byRegion
    }

    public var isEmpty: Bool { everywhere.isEmpty && byRegion.isEmpty }

    /// What an agent of `region` is asked to confirm, sorted; nil when nothing.
    public func components(forRegion region: String) -> [String]? {
        if isEmpty { return nil }  // every push asks: a healthy fleet's answers cost nothing here
        let asked = everywhere.union(byRegion[region] ?? [])
        return asked.isEmpty ? nil : asked.sorted()
    }
}

/// The seconds spent asking agents to confirm within a budget window (`spend`): for one
/// (agent × component) alone in its region asking its peers, or for one component asking every
/// region on one region's evidence.
struct ConfirmationBudget: Sendable {
    /// When the window began (its first ask after the previous window ran out).
    var windowStart: Double
    /// Its latest ask.
    var last: Double
    /// Seconds spent asking in the window: the time between consecutive asks, and each break's cost.
    var spent: Double
}

extension CorrelationEngine {
    /// How long one agent alone in its region with fresh failures may ask its peers to confirm
    /// them within `loneConfirmationWindow` (seconds, breaks not counted).
    static let loneConfirmationLimit = 60.0
    /// The window of that budget: a break does not give it back (red team, second pass, N5: a
    /// 6 s pause every 64 s kept the peers at 4 × their pace with a budget per streak).
    static let loneConfirmationWindow = 600.0

    /// The confirmation phase (after verdicts and incidents): per component,
    /// - an open incident: its regions (every region at scope `platform`), so its end is read
    ///   from runs at the retry pace, and the lull guard from the short gaps they leave;
    /// - a problem verdict not yet opened (confirmation, the region-scope wait), for at most
    ///   `fastFlushOpeningLimit` s: every region;
    /// - a failed or slow run within two of its probe's intervals, from an agent that counts and
    ///   is not local (in doubt included: its peers are the ones to settle the doubt): that
    ///   agent's region, or every region once `min_platform_regions` regions show such runs, or
    ///   once two agents of one region do. Those are no longer one host's problem, and whether
    ///   they are the region's or the platform's is for the other regions' runs to tell: asked
    ///   only there, the first region to see a thin platform-wide fault ran at 4 × the others'
    ///   pace and reached its incident first, announced at region scope (issue 10, first-alert
    ///   scope). Such asks come from one region's evidence for at most `loneConfirmationLimit` s
    ///   in `loneConfirmationWindow` per component, each episode counted as at least 5 s
    ///   (`spread` keeps the budget): a thin fault in one region that never opens an incident
    ///   must not keep the whole fleet at 4 × its pace.
    /// Nothing with `confirmation_runs: false`. One agent alone in its region with such runs asks
    /// for at most `loneConfirmationLimit` s in `loneConfirmationWindow` (`lone` keeps the
    /// budget): its peers have confirmed nothing meanwhile, so it is its own problem, and one
    /// agent dropping a failure into every push must not keep its region's agents at 4 × their
    /// pace for good (found by the red team, F13 and N5); once a peer there has fresh failures
    /// too, the budgets of that region's witnesses are whole again. Returns whether any request comes from
    /// fresh evidence rather than an incident (those also ask for prompt pushes).
    static func confirmationRequests(
        tracks: [ComponentTrack], frame: EvaluationFrame, componentNames: [String], regionNames: [String], agentRegion: [Int32],
        lone: inout [Int: ConfirmationBudget], spread: inout [Int: ConfirmationBudget], _ cfg: CorrelationConfig
    ) -> (requests: ConfirmationRequests, fromEvidence: Bool) {
        // Budgets whose window has passed are forgotten (bounded maps).
        lone = lone.filter { frame.t - $0.value.windowStart <= loneConfirmationWindow }
        spread = spread.filter { frame.t - $0.value.windowStart <= loneConfirmationWindow }
        var out = ConfirmationRequests()
        guard cfg.confirmationRuns else { return (out, false) }
        let componentCount = componentNames.count
        var fromEvidence = false
        var regionsWithEvidence = [Bool](repeating: false, count: regionNames.count)
        for c in 0..<componentCount {
            let name = componentNames[c]
            if let incident = tracks[c].incident, incident.status != .resolved {
                if incident.scope == .platform {
                    out.everywhere.insert(name)
                } else {
                    for region in incident.regions { out.byRegion[region, default: []].insert(name) }
                }
                continue
            }
            if let since = tracks[c].badSince, frame.t - since <= fastFlushOpeningLimit {
                out.everywhere.insert(name)
                fromEvidence = true
                continue
            }
            var witnesses = [[Int]](repeating: [], count: regionNames.count)
            for a in agentRegion.indices where frame.agentCounts(a) {  // a wholly local agent's cells are all `local`
                let x = frame.grid[a * componentCount + c]
                guard x.reporting, !x.local, x.newestBadAt > -Double.infinity else { continue }
                let recent = 2 * (x.interval > 0 ? x.interval : cfg.silentAfter)
                guard frame.t - x.newestBadAt <= recent else { continue }
                witnesses[Int(agentRegion[a])].append(a)
            }
            var regions = 0
            var corroborated = false
            for r in regionsWithEvidence.indices {
                regionsWithEvidence[r] = false
                guard !witnesses[r].isEmpty else { continue }
                if witnesses[r].count == 1 {
                    guard Self.spend(&lone[witnesses[r][0] * componentCount + c], t: frame.t) else { continue }
                } else {
                    corroborated = true
                    // A peer fails there too: those asks were not one agent's own problem, so
                    // their time comes back. A random fault's failures come to one agent at a
                    // time, and its region's budget must not run out across its streaks (a 10 %
                    // fault in eu detected in up to 7.8 s, not 4.7 s, once back-to-back episodes
                    // had spent it). One agent alone still gets its 60 s in 10 minutes (N5).
                    for a in witnesses[r] { lone[a * componentCount + c] = nil }
                }
                regionsWithEvidence[r] = true
                regions += 1
            }
            guard regions > 0 else { continue }
            fromEvidence = true
            // A spread ask keeps the other regions at their retry pace for two intervals, so each
            // episode costs at least the 5 s a break is counted from.
            if regions >= cfg.minPlatformRegions || (corroborated && Self.spend(&spread[c], t: frame.t, breakCost: 5)) {
                out.everywhere.insert(name)
            } else {
                for r in regionsWithEvidence.indices where regionsWithEvidence[r] { out.byRegion[regionNames[r], default: []].insert(name) }
            }
        }
        return (out, fromEvidence)
    }

    /// Spends an ask from a budget of `loneConfirmationLimit` s per `loneConfirmationWindow`:
    /// consecutive asks (a few evaluations apart) spend the time between them, and the first ask
    /// after a break spends `breakCost`. Returns whether the budget still allows the ask.
    static func spend(_ budget: inout ConfirmationBudget?, t: Double, breakCost: Double = 0) -> Bool {
        var b = budget ?? ConfirmationBudget(windowStart: t, last: -.infinity, spent: 0)
        let step = t - b.last
        b.spent += step <= 5 ? step : breakCost
        b.last = t
        budget = b
        return b.spent <= loneConfirmationLimit
    }
}
