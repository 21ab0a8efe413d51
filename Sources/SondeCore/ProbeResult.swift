import FoundationEssentials

/// How one probe run ended. `degraded` means every step passed but the run was slower than the
/// probe's `degraded_after` threshold.
public enum Outcome: String, Codable, Sendable, CaseIterable {
    case ok
    case degraded
    case failed
}

/// Why a probe run failed, in SPEC's words. Network-level kinds (`dns`, `connect`, `tls`,
/// `timeout`) point at reachability; `http_status` and `assertion` at the platform's answers;
/// `stuck` at a job that stayed in one state too long; `script` at the probe itself.
public enum ErrorKind: String, Codable, Sendable, CaseIterable {
    case dns
    case connect
    case tls
    case timeout
    case httpStatus = "http_status"
    case assertion
    case stuck
    case script
    case `internal`
}

/// The first failure of a run: which step, what kind, a message for people, and an optional short
/// machine code from the probe's failure labels (e.g. `file_expired`).
public struct ProbeError: Codable, Sendable, Hashable {
    public var kind: ErrorKind
    public var step: String
    public var message: String
    public var code: String?

    public init(kind: ErrorKind, step: String, message: String, code: String? = nil) {
        self.kind = kind
        self.step = step
        self.message = message
        self.code = code
    }
}

/// Phase-by-phase timing of one HTTP exchange, in milliseconds. The phases add up to `total`:
/// dns + connect + tls + ttfb + transfer == total. `ttfb` is the server's time: from the
/// connection being ready (after TLS, if any) to the first response byte.
public struct PhaseTimings: Codable, Sendable, Hashable {
    public var dns: Double
    public var connect: Double
    public var tls: Double
    public var ttfb: Double
    public var transfer: Double
    public var total: Double

    public init(dns: Double = 0, connect: Double = 0, tls: Double = 0, ttfb: Double = 0, transfer: Double = 0, total: Double = 0) {
        self.dns = dns
        self.connect = connect
        self.tls = tls
        self.ttfb = ttfb
        self.transfer = transfer
        self.total = total
    }

    public static let zero = PhaseTimings()

    /// Each phase rounded to a microsecond (curl's resolution), without binary-float tails.
    public var atMicroseconds: PhaseTimings {
        func µs(_ ms: Double) -> Double { ms.isFinite ? (ms * 1000).rounded() / 1000 : ms }
        return PhaseTimings(dns: µs(dns), connect: µs(connect), tls: µs(tls), ttfb: µs(ttfb), transfer: µs(transfer), total: µs(total))
    }

    /// Phase names as they appear in JSON and in `probe_http_duration_seconds{phase=…}`.
    public static let phaseNames = ["dns", "connect", "tls", "ttfb", "transfer"]

    /// (phase name, milliseconds) pairs in order, without `total`.
    public var phases: [(name: String, ms: Double)] {
        [("dns", dns), ("connect", connect), ("tls", tls), ("ttfb", ttfb), ("transfer", transfer)]
    }
}

/// One step of a probe run. `url` has secrets redacted. `status` is absent when no response came
/// (DNS, connect, TLS failure, time-out). `attempts` counts requests of a polling step.
public struct StepResult: Codable, Sendable, Hashable {
    public var name: String
    public var method: String
    public var url: String
    public var status: Int?
    public var ok: Bool
    public var timings: PhaseTimings
    public var attempts: Int?
    /// Why this step failed, when it did (the run's `error` repeats the first one).
    public var error: ProbeError?
    /// The platform component this step exercises when it is not the probe's own (`component:`
    /// on the step, e.g. `login` on a journey's login step); absent: the probe's component.
    public var component: String?
    /// TLS steps (https requests, `tcp` with `tls`): when the earliest certificate of the chain
    /// the server presented expires, and the days left then (negative once expired).
    public var certNotAfter: Date?
    public var certDaysLeft: Double?
    /// Why this step made the run `degraded`, when it passed but took longer than its own
    /// `degraded_after`: the slowness counts for this step's component, not the whole journey's.
    public var degraded: String?

    public init(
        name: String, method: String, url: String, status: Int? = nil, ok: Bool,
        timings: PhaseTimings, attempts: Int? = nil, error: ProbeError? = nil, component: String? = nil,
        certNotAfter: Date? = nil, certDaysLeft: Double? = nil, degraded: String? = nil
    ) {
        self.component = component
        self.name = name
        self.method = method
        self.url = url
        self.status = status
        self.ok = ok
        self.timings = timings
        self.attempts = attempts
        self.error = error
        self.certNotAfter = certNotAfter
        self.certDaysLeft = certDaysLeft
        self.degraded = degraded
    }

    enum CodingKeys: String, CodingKey {
        case name, method, url, status, ok, timings, attempts, error, component, degraded
        case certNotAfter = "cert_not_after"
        case certDaysLeft = "cert_days_left"
    }
}

/// One probe run, exactly as agents push it and the collector stores it (SPEC "Probe result").
public struct ProbeResult: Codable, Sendable, Hashable, Identifiable {
    /// Unique id of this run (a UUID string).
    public var id: String
    public var probe: String
    public var component: String
    public var agent: String
    public var region: String
    public var startedAt: Date
    public var durationMs: Double
    public var outcome: Outcome
    /// Absent when `outcome` is `ok` or `degraded`.
    public var error: ProbeError?
    /// Why the run as a whole is `degraded`: it took longer than the probe's `degraded_after`.
    /// A step over its own limit says so on the step instead (`StepResult.degraded`).
    public var degraded: String?
    public var steps: [StepResult]
    /// True for control probes: the agent's reach to a reference endpoint. Their failures say
    /// "this agent's network is broken", not "the platform is down".
    public var control: Bool?
    /// True for a retry: an extra run the agent made between the probe's regular slots because a
    /// recent run failed or was slow (the probe's `retry_interval`). Its evidence counts like any
    /// run's; the collector leaves it out when it estimates the probe's interval.
    public var retry: Bool?
    /// Per-agent monotonically increasing sequence number, assigned by the agent's spool; keeps
    /// order per agent across restarts.
    public var seq: UInt64?
    /// The probe's `labels` (e.g. team, tier), absent when it has none.
    public var labels: [String: String]?

    public init(
        id: String = UUID().uuidString.lowercased(), probe: String, component: String, agent: String,
        region: String, startedAt: Date, durationMs: Double, outcome: Outcome, error: ProbeError? = nil,
        steps: [StepResult], control: Bool? = nil, retry: Bool? = nil, seq: UInt64? = nil, labels: [String: String]? = nil,
        degraded: String? = nil
    ) {
        self.id = id
        self.probe = probe
        self.component = component
        self.agent = agent
        self.region = region
        self.startedAt = startedAt
        self.durationMs = durationMs
        self.outcome = outcome
        self.error = error
        self.steps = steps
        self.control = control
        self.retry = retry
        self.seq = seq
        self.labels = labels
        self.degraded = degraded
    }

    enum CodingKeys: String, CodingKey {
        case id, probe, component, agent, region
        case startedAt = "started_at"
        case durationMs = "duration_ms"
        case outcome, error, degraded, steps, control, retry, seq, labels
    }

    /// Why a `degraded` run is degraded, for people: the run's own reason, else its first slow
    /// step's (nil for a run that is not degraded, or from an agent that does not say).
    public var degradedReason: String? {
        guard outcome == .degraded else { return nil }
        return degraded ?? steps.lazy.compactMap(\.degraded).first
    }
}
