import Foundation
import SondeCore

/// How one (agent, probe) is doing, ordered from good to bad.
enum SeriesState: UInt8, Comparable {
    /// Passing, or not confirmed otherwise yet (a single failed run is still `ok`).
    case ok = 0
    /// The latest `confirm_failures` runs were all non-ok and at least one was `degraded`.
    case degraded = 1
    /// Failure ratio over the recent window above `flaky_ratio` (with `min_runs`), not hard.
    case flaky = 2
    /// At least `confirm_failures` consecutive failed runs.
    case failing = 3

    static func < (lhs: SeriesState, rhs: SeriesState) -> Bool { lhs.rawValue < rhs.rawValue }

    var isFailing: Bool { rawValue >= SeriesState.flaky.rawValue }
}

/// The hot, reference-free digest of one series, recomputed only when that series gets new runs,
/// so an evaluation reads one small value per series and never walks history.
struct SeriesSummary {
    var agent: Int32
    var component: Int32
    /// The probe's own component when this series holds the runs a step of another component
    /// decided (`component` is then the step's); -1 for a probe's own series.
    var affects: Int32 = -1
    var control: Bool
    var state: SeriesState
    /// Runs and failed runs among the latest `flaky_window`.
    var windowRuns: Int32
    var windowFailed: Int32
    var latestFailed: Bool
    /// The latest run was slow (`degraded`): with peers slow at once it is corroborated.
    var latestSlow = false
    /// Collector time of the last result received for this series (seconds since 1970).
    var lastReceived: Double
    /// Median spacing of `started_at` over the window, seconds; 0 when unknown (fewer than 2 runs).
    var interval: Double
    /// Duration of the latest non-failed run, ms; negative when none.
    var latencyMs: Double
    /// Interned `code ?? kind` of the latest run's error when it failed; -1 otherwise.
    var errorCode: Int32
    /// When the current problem began (`started_at`, seconds): the first run of the trailing
    /// failed streak when `failing`, the earliest failure of the recent window when `flaky`;
    /// +infinity otherwise.
    var failingSince: Double = .infinity
    /// `started_at` of the newest failed run among the latest `flaky_window`; -infinity when none.
    var lastFailedAt: Double = -.infinity
    /// `started_at` of the oldest of the `confirm_failures` newest bad runs that gave the series
    /// its state (failing, flaky, degraded): the fault was on then. -infinity when `ok`. The
    /// region-scope wait counts another region's runs that started after it as fresh.
    var stateShownAt: Double = -.infinity
    /// Runs and failed runs over the whole window (the rate the peer test and recovery use).
    var allRuns: Int32 = 0
    var allFailed: Int32 = 0
    /// Consecutive `ok` runs at the end of the window (slow runs are not recovered ones).
    var cleanTail: Int32 = 0
    /// Non-ok (failed or degraded) runs over the whole window.
    var allBad: Int32 = 0
    /// `started_at` of the newest non-ok run in the whole window, and of the oldest run;
    /// -infinity / +infinity when none.
    var newestBadAt: Double = -.infinity
    var oldestAt: Double = .infinity
    /// `started_at` of the newest run; -infinity when none.
    var newestAt: Double = -.infinity
    /// When that run ended (agent clock): how current the series' data is, whenever it arrived.
    var newestEndAt: Double = -.infinity
    /// The component's steps attempted, and the failed runs, in the recent window's runs after its
    /// first failed run: the per-step failure rate's terms (see `WindowRun.steps`). Starting after
    /// a failure removes the bias of starting at one.
    var rateSteps: Int32 = 0
    var rateFailed: Int32 = 0
    /// Runs and non-ok runs of the whole window strictly between its first and its newest non-ok
    /// run: when they are equal (pooled, enough of them) the problem failed every run while it
    /// was on, a hard fault, whatever runs before it began the window holds (recovery's p).
    var spanRuns: Int32 = 0
    var spanBad: Int32 = 0
}

/// One run as the window keeps it.
struct WindowRun {
    var id: String
    var startedAt: Double
    var durationMs: Double
    var outcome: Outcome
    var error: ProbeError?
    /// Steps of this series' component the run attempted, up to and including the first failed
    /// one (≥ 1). A run stops at its first failure, so failed runs / attempted steps is the
    /// maximum-likelihood per-step failure rate: a journey that calls the failing endpoint 4
    /// times fails ~76 % of its runs at 30 % of requests failing, and this reads 30 %.
    var steps: Int32 = 1
    /// An extra run between the probe's slots (`retry_interval`): not part of its schedule.
    var retry = false
}

/// The bounded rolling window of one (agent, probe): at most `window_runs` runs, none older than
/// `window_age` before the newest, sorted by `started_at`.
struct SeriesWindow {
    var agent: Int32
    var probe: String
    var component: Int32
    var affects: Int32 = -1
    var control: Bool
    var runs: [WindowRun] = []
    /// Runs that did not fail since the newest failed one, counted beyond the window (which holds
    /// `window_runs`): a fault failing 10 % of runs is judged gone only after about 66 of them.
    var passedSinceFailure: Int32 = 0
    var newestFailedAt = -Double.infinity
    var lastReceived: Double = -.infinity
    /// Every run ever added, and the non-ok ones among them (a resend of a run that has left the
    /// window counts again): an open incident reads its fault's record from their growth.
    var received = 0
    var receivedBad = 0

    /// Adds a run in `started_at` order; a run id already in the window is ignored (resends).
    mutating func insert(_ run: WindowRun, config: CorrelationConfig) {
        if runs.contains(where: { $0.id == run.id }) { return }
        received += 1
        if run.outcome != .ok { receivedBad += 1 }
        if run.outcome == .failed {
            if run.startedAt >= newestFailedAt {
                newestFailedAt = run.startedAt
                passedSinceFailure = Int32(runs.count { $0.startedAt > run.startedAt && $0.outcome != .failed })
            }
        } else if run.startedAt > newestFailedAt {
            passedSinceFailure += 1
        }
        if let last = runs.last, last.startedAt > run.startedAt {
            let at = runs.firstIndex(where: { $0.startedAt > run.startedAt }) ?? runs.count
            runs.insert(run, at: at)
        } else {
            runs.append(run)
        }
        if runs.count > config.windowRuns { runs.removeFirst(runs.count - config.windowRuns) }
        let oldest = runs[runs.count - 1].startedAt - config.windowAge
        if runs[0].startedAt < oldest {
            runs.removeAll(where: { $0.startedAt < oldest })
        }
    }

    /// The error of the newest failed run in the window (a random fault's latest run often passes).
    var latestError: ProbeError? { runs.last { $0.outcome == .failed }?.error }

    /// The digest of the runs that started after `after` (agent clock; -infinity: all of them).
    func summarize(config: CorrelationConfig, errorCode: Int32, after: Double = -.infinity) -> SeriesSummary {
        if after > -.infinity, let first = runs.firstIndex(where: { $0.startedAt > after }), first > 0 {
            var newer = self
            newer.runs.removeFirst(first)
            return newer.summarize(config: config, errorCode: errorCode)
        } else if after > -.infinity, let last = runs.last, last.startedAt <= after {
            var newer = self
            newer.runs = []
            return newer.summarize(config: config, errorCode: -1)
        }
        let n = runs.count
        var consecutiveFailed = 0
        var consecutiveNotOK = 0
        var sawDegraded = false
        var i = n - 1
        while i >= 0, runs[i].outcome == .failed {
            consecutiveFailed += 1
            i -= 1
        }
        i = n - 1
        while i >= 0, runs[i].outcome != .ok, consecutiveNotOK < config.confirmFailures {
            consecutiveNotOK += 1
            if runs[i].outcome == .degraded { sawDegraded = true }
            i -= 1
        }
        let windowStart = max(0, n - config.flakyWindow)
        var failed = 0
        var firstFailedAt = Double.infinity
        var lastFailedAt = -Double.infinity
        // The window's failures from the newest back: the `confirm_failures`-th one's start.
        var confirmingFailureAt = -Double.infinity
        for j in windowStart..<n where runs[j].outcome == .failed {
            failed += 1
            firstFailedAt = min(firstFailedAt, runs[j].startedAt)
            lastFailedAt = runs[j].startedAt
        }
        if failed >= config.confirmFailures {
            var seen = 0
            for j in stride(from: n - 1, through: windowStart, by: -1) where runs[j].outcome == .failed {
                seen += 1
                if seen == config.confirmFailures {
                    confirmingFailureAt = runs[j].startedAt
                    break
                }
            }
        }
        let windowRuns = n - windowStart

        let state: SeriesState
        if consecutiveFailed >= config.confirmFailures {
            state = .failing
        } else if failed >= config.confirmFailures,
            Double(failed) > config.flakyRatio * Double(max(windowRuns, config.minRuns))
        {
            // A short window counts as `min_runs` long: passing runs that fill it later can only
            // lower the ratio, so a series never turns flaky again without a new failure.
            state = .flaky
        } else if consecutiveNotOK >= config.confirmFailures, sawDegraded {
            state = .degraded
        } else {
            state = .ok
        }

        var latency = -1.0
        var k = n - 1
        while k >= 0 {
            if runs[k].outcome != .failed {
                latency = runs[k].durationMs
                break
            }
            k -= 1
        }
        // The median spacing, so a gap (the agent was down) does not stretch the estimate. Of
        // the regular runs only: retries after a failure come faster than the probe's interval,
        // and an interval read from them would call the agent silent between its regular runs.
        var interval = 0.0
        if n >= 2 {
            var gaps: [Double] = []
            gaps.reserveCapacity(n - 1)
            var previous = -1
            for j in 0..<n where !runs[j].retry {
                if previous >= 0 { gaps.append(runs[j].startedAt - runs[previous].startedAt) }
                previous = j
            }
            if gaps.isEmpty {
                for j in 1..<n { gaps.append(runs[j].startedAt - runs[j - 1].startedAt) }
            }
            gaps.sort()
            interval = max(0, gaps[(gaps.count - 1) / 2])
        }
        var failingSince = Double.infinity
        var stateShownAt = -Double.infinity
        switch state {
        case .failing:
            failingSince = runs[n - consecutiveFailed].startedAt
            stateShownAt = runs[n - config.confirmFailures].startedAt
        case .flaky:
            failingSince = firstFailedAt
            stateShownAt = confirmingFailureAt
        case .degraded: stateShownAt = runs[n - consecutiveNotOK].startedAt
        case .ok: break
        }
        var allFailed: Int32 = 0
        var allBad: Int32 = 0
        var newestBadAt = -Double.infinity
        for run in runs where run.outcome != .ok {
            allBad += 1
            if run.outcome == .failed { allFailed += 1 }
            newestBadAt = run.startedAt
        }
        var rateSteps: Int32 = 0
        var rateFailed: Int32 = 0
        if let first = runs[windowStart..<n].firstIndex(where: { $0.outcome == .failed }) {
            for run in runs[(first + 1)..<n] {
                rateSteps += run.steps
                if run.outcome == .failed { rateFailed += 1 }
            }
        }
        var spanRuns: Int32 = 0
        var spanBad: Int32 = 0
        if let first = runs.firstIndex(where: { $0.outcome != .ok }), let newest = runs.lastIndex(where: { $0.outcome != .ok }),
            newest > first + 1
        {
            spanRuns = Int32(newest - first - 1)
            for run in runs[(first + 1)..<newest] where run.outcome != .ok { spanBad += 1 }
        }
        var cleanTail: Int32 = 0
        var t = n - 1
        while t >= 0, runs[t].outcome == .ok {
            cleanTail += 1
            t -= 1
        }
        return SeriesSummary(
            agent: agent, component: component, affects: affects, control: control, state: state,
            windowRuns: Int32(windowRuns), windowFailed: Int32(failed), latestFailed: runs.last?.outcome == .failed,
            latestSlow: runs.last?.outcome == .degraded,
            lastReceived: lastReceived, interval: interval, latencyMs: latency, errorCode: errorCode,
            failingSince: failingSince, lastFailedAt: lastFailedAt, stateShownAt: stateShownAt, allRuns: Int32(n), allFailed: allFailed,
            cleanTail: cleanTail, allBad: allBad, newestBadAt: newestBadAt, oldestAt: runs.first?.startedAt ?? .infinity,
            newestAt: runs.last?.startedAt ?? -.infinity, newestEndAt: runs.last.map { $0.startedAt + $0.durationMs / 1000 } ?? -.infinity,
            rateSteps: rateSteps, rateFailed: rateFailed, spanRuns: spanRuns, spanBad: spanBad)
    }

    /// Runs that started after `time` (agent clock).
    func runs(after time: Double) -> Int32 {
        var count: Int32 = 0
        var i = runs.count - 1
        while i >= 0, runs[i].startedAt > time {
            count += 1
            i -= 1
        }
        return count
    }
}
