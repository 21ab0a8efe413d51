import CurlHTTP
import FoundationEssentials
import Logging
import SondeCore

/// Runs a probe's steps in order over libcurl and returns one `ProbeResult`. A failure is data
/// (the result), never a thrown error or an error-level log line.
///
/// Time: the probe's `timeout` bounds the whole run; each request gets
/// min(step timeout, time left), so a server that never answers still ends the run on time.
/// `always` steps (cleanup) that come after the deadline share one short grace (`cleanupGrace`),
/// so a run never outlives its timeout by more than the grace, however many cleanups it has.
public struct ProbeRunner: Sendable {
    public let client: CurlHTTPClient
    let logger: Logger
    /// Time the run's `always` steps get, together, once the probe's own time is used up (per
    /// step, a hanging server could hold each cleanup for the whole grace in turn).
    public var cleanupGrace: Duration = .seconds(5)

    public init(client: CurlHTTPClient = .shared, logger: Logger) {
        self.client = client
        self.logger = logger
    }

    /// Runs every step of `probe` and returns its result; never throws: every failure is data.
    public func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult {
        let clock = ContinuousClock()
        let start = clock.now
        let startedAt = Date()
        let runID = RandomUUID.make()
        var state = RunState(probe: probe, context: context, runID: runID)
        var logger = self.logger
        // The runner logs at debug level only; setting metadata copies the handler's dictionary
        // (a few per cent of the agent's CPU per run), so it is done only when it will be seen.
        if logger.logLevel <= .debug {
            logger[metadataKey: "probe.name"] = "\(probe.name)"
            logger[metadataKey: "run.id"] = "\(runID)"
        }

        var firstError: ProbeError?
        var steps: [StepResult] = []
        var slowStep = false
        var runDegraded: String?

        let probeTimeout: Duration
        do {
            probeTimeout = try state.duration(probe.script.timeout, field: "timeout")
        } catch {
            probeTimeout = probe.timeout
            firstError = ProbeError(kind: .script, step: "-", message: Self.reported(error.message, state.redactor))
        }
        let deadline = start.advanced(by: probeTimeout)
        // Set by the first `always` step that starts with less than the grace left.
        var cleanupDeadline: ContinuousClock.Instant?

        for step in probe.script.steps {
            if firstError != nil, !step.always { continue }
            var stepDeadline = deadline
            if step.always {
                if cleanupDeadline == nil, clock.now.advanced(by: cleanupGrace) > deadline {
                    cleanupDeadline = clock.now.advanced(by: cleanupGrace)
                }
                stepDeadline = cleanupDeadline ?? deadline
            }
            let execution = StepExecution(runner: self, step: step, failureCodes: probe.script.failureCodes, probeTimeout: probeTimeout, deadline: stepDeadline, logger: logger)
            let outcome = await execution.run(&state)
            guard let outcome else { continue }  // an `always` step whose inputs never came
            var result = outcome.result
            result.component = step.component
            // tcp, dns and icmp phases are differences of clock readings: no binary-float tails
            // (`0.024626999999999954`) in results, as for curl's.
            result.timings = result.timings.atMicroseconds
            result.url = Self.reported(result.url, state.redactor, limit: Self.longestURL, lines: false)
            if var error = result.error {
                error.message = Self.reported(error.message, state.redactor)
                result.error = error
                if firstError == nil { firstError = error }
            } else if let slow = outcome.degradedBy {
                // Said on the step: its slowness counts for the step's component.
                result.degraded = slow
                slowStep = true
            }
            steps.append(result)
            logger.debug(
                "probe step finished",
                metadata: [
                    "step": "\(step.name)", "http.method": "\(result.method)", "url": "\(result.url)",
                    "http.status": "\(result.status.map(String.init) ?? "-")", "ok": "\(result.ok)",
                    "duration_ms": "\(Int(result.timings.total))", "attempts": "\(result.attempts.map(String.init) ?? "1")",
                    "error.kind": "\(result.error?.kind.rawValue ?? "-")", "error.message": "\(result.error?.message ?? "-")",
                ])
        }

        let elapsed = clock.now - start
        let durationMs = elapsed.milliseconds
        if firstError == nil, let spec = probe.script.degradedAfter {
            do {
                let limit = try state.duration(spec, field: "degraded_after")
                if elapsed > limit {
                    runDegraded = "the run took \(DurationText.took(durationMs)), over degraded_after \(DurationText.format(limit))"
                }
            } catch {
                firstError = ProbeError(kind: .script, step: "-", message: Self.reported(error.message, state.redactor))
            }
        }
        let outcome: Outcome = firstError != nil ? .failed : (slowStep || runDegraded != nil ? .degraded : .ok)
        logger.debug(
            "probe run finished",
            metadata: [
                "outcome": "\(outcome.rawValue)", "duration_ms": "\(Int(durationMs))",
                "error.kind": "\(firstError?.kind.rawValue ?? "-")", "error.step": "\(firstError?.step ?? "-")",
                "error.code": "\(firstError?.code ?? "-")", "degraded": "\(runDegraded ?? steps.lazy.compactMap(\.degraded).first ?? "-")",
            ])
        return Self.fitted(ProbeResult(
            id: runID, probe: probe.name, component: probe.component, agent: context.agent, region: context.region,
            startedAt: startedAt, durationMs: (durationMs * 1000).rounded() / 1000, outcome: outcome, error: firstError,
            steps: steps, control: probe.control, labels: probe.script.labels.isEmpty ? nil : probe.script.labels,
            degraded: firstError == nil ? runDegraded : nil))
    }

    /// `result` within the collector's size for one result (`ResultText.largestResultBytes`): a
    /// journey of many steps whose URLs and messages a server filled (2 KiB and 1 KiB each) could
    /// pass it, and the collector would refuse the run, evidence of a failure included. Over it,
    /// step URLs and messages are cut shorter and shorter until it fits. A quick upper bound first:
    /// nearly every result is far below it and is not encoded here.
    static func fitted(_ result: ProbeResult) -> ProbeResult {
        let budget = ResultText.largestResultBytes - 4096
        func bound(_ r: ProbeResult) -> Int {
            // Escaping at most doubles printable text (`"` and `\`); 512 bytes for each step's other fields.
            let steps = r.steps.reduce(0) { $0 + 2 * ($1.url.utf8.count + ($1.error?.message.utf8.count ?? 0) + $1.name.utf8.count) + 512 }
            let labels = r.labels?.reduce(0) { $0 + 2 * ($1.key.utf8.count + $1.value.utf8.count) + 8 } ?? 0
            return 2048 + steps + labels + 2 * ((r.error?.message.utf8.count ?? 0) + (r.degraded?.utf8.count ?? 0))
        }
        guard bound(result) > budget else { return result }
        var fitted = result
        var limit = longestURL
        while limit >= 16, ((try? fitted.encodedJSON().count) ?? 0) > budget {
            limit /= 2
            func cut(_ text: String) -> String {
                text.unicodeScalars.count > limit ? String(String.UnicodeScalarView(text.unicodeScalars.prefix(limit))) + "…" : text
            }
            for index in fitted.steps.indices {
                let url = fitted.steps[index].url
                fitted.steps[index].url = cut(url)
                if let message = fitted.steps[index].error?.message { fitted.steps[index].error?.message = cut(message) }
            }
            if let message = fitted.error?.message { fitted.error?.message = cut(message) }
        }
        return fitted
    }

    func perform(_ request: HTTPRequest) async -> Result<HTTPResponse, HTTPTransferError> {
        do {
            return .success(try await client.perform(request))
        } catch {
            return .failure(error)
        }
    }

    /// The longest error message a result carries, in characters (Unicode scalars): a failed
    /// check may quote a server's whole value (a 9 MB string), and the result is stored, pushed
    /// and, if refused, kept in `spool/rejected/`.
    static let longestMessage = 1024
    /// The longest step URL a result carries (a URL templated from a server's value).
    static let longestURL = 2048

    /// `text` as a result reports it: cut to `limit` characters plus the redactor's reach first
    /// (redacting megabytes costs), redacted, then cut at `limit`, so no prefix of a secret that
    /// straddles the cut is left.
    /// Cut by Unicode scalars (at most 4 bytes each; a grapheme can hold thousands), so the cut
    /// lies in the first 4 × `limit` bytes, which the redacted window passes by `reach`.
    /// Control characters are shown visibly (`TerminalText`; `lines` keeps line feed and tab):
    /// the collector refuses them (a server's ESC must not reach an operator's terminal).
    static func reported(_ text: String, _ redactor: Redactor, limit: Int = longestMessage, lines: Bool = true) -> String {
        let windowBytes = 4 * limit + redactor.reach
        // Most texts (every step's URL) fit the window whole: no copy to cut and decode again.
        if text.utf8.count <= windowBytes { return cut(text, more: false, redactor, limit: limit, lines: lines) }
        let window = Data(text.utf8.prefix(windowBytes))
        return cut(String(decoding: window, as: UTF8.self), more: true, redactor, limit: limit, lines: lines)
    }

    /// `reported` for raw bytes (a response body): only the window redacted is decoded.
    static func reported(_ bytes: Data, _ redactor: Redactor, limit: Int) -> String {
        let window = bytes.prefix(4 * limit + redactor.reach)
        return cut(String(decoding: window, as: UTF8.self), more: bytes.count > window.count, redactor, limit: limit, lines: true)
    }

    private static func cut(_ window: String, more: Bool, _ redactor: Redactor, limit: Int, lines: Bool) -> String {
        var shown = TerminalText.visible(redactor.redact(window), keepLines: lines)
        if shown.unicodeScalars.count > limit {
            shown = String(String.UnicodeScalarView(shown.unicodeScalars.prefix(limit))) + "…"
        } else if more {
            shown += "…"
        }
        return shown
    }
}
