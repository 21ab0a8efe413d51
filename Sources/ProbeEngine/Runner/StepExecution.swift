import CurlHTTP
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import Logging
import SondeCore

/// What a step produced: its result (with its error, if any) and why it was slow, if it was.
struct StepOutcome {
    var result: StepResult
    var degradedBy: String?
}

/// Runs one step: builds the request, sends it (once, or polling), checks, extracts, compares.
struct StepExecution {
    let runner: ProbeRunner
    let step: ProbeStep
    let failureCodes: [FailureCodeRule]
    let probeTimeout: Duration
    /// When this step must be done: the probe's deadline (or a cleanup grace).
    let deadline: ContinuousClock.Instant
    let logger: Logger
    let clock = ContinuousClock()

    /// `max_body` when a step does not set it and reads its body (checks, extractions, polls,
    /// failure codes).
    static let defaultMaxBody = 10 << 20
    /// Body bytes kept when nothing reads the body: enough for a failure message's snippet.
    static let keptPrefixBytes = 16 << 10
    /// `max_body` when a step does not set it and nothing reads its body (it streams through,
    /// hashed for a `compare` or not at all). Its time-out alone let a server streaming an endless
    /// body at full speed keep the thread that drives every probe's transfers reading at line
    /// rate until then (red team, 35th session); an endless gzip of zeros, inflating about
    /// 1000:1, was capped so already.
    static let defaultMaxUnread = 256 << 20
    /// Characters of a body quoted in a failure message.
    static let snippetLength = 300

    /// Nil when an `always` step is skipped because what it needs was never extracted.
    func run(_ state: inout RunState) async -> StepOutcome? {
        switch step.action {
        case .compare(let spec):
            var result = StepResult(name: step.name, method: "", url: "", ok: true, timings: .zero)
            do {
                try compare(spec, state: state)
            } catch {
                result.ok = false
                result.error = ProbeError(kind: error.kind, step: step.name, message: error.message)
            }
            return StepOutcome(result: result)
        case .request(let spec):
            return await request(spec, state: &state)
        case .tcp(let spec):
            return await tcp(spec, state: &state)
        case .dns(let spec):
            return await dns(spec, state: &state)
        case .icmp(let spec):
            return await icmp(spec, state: &state)
        }
    }

    // MARK: - Request steps

    private func request(_ spec: RequestSpec, state: inout RunState) async -> StepOutcome? {
        var result = StepResult(name: step.name, method: spec.method, url: spec.url.source, ok: false, timings: .zero)
        state.keepCredentials(inURL: spec.url.source)
        var lastResponse: HTTPResponse?
        // The final response's body as JSON, read once for the secrets, the checks and the extractions.
        var json = LazyJSON()
        var degradedBy: String?
        do {
            let stepTimeout = try step.timeout.map { spec throws(StepFailure) in try state.duration(spec, field: "timeout") }
            // Render once to know the URL even when the poll never gets an answer.
            result.url = try await offLoopIfLarge(state.largestExtracted) { () throws(StepFailure) in
                let url = try renderedURL(spec, state: &state)
                state.keepCredentials(inURL: url)
                return url
            }
            let response: HTTPResponse
            if let poll = step.poll {
                response = try await self.poll(poll, spec: spec, stepTimeout: stepTimeout, state: &state, result: &result, last: &lastResponse)
                if !step.extractions.isEmpty { await offLoop { redactSecretsAhead(in: response, json: &json, state: &state) } }
            } else {
                var request = try await offLoopIfLarge(state.largestExtracted) { () throws(StepFailure) in try build(spec, state: &state) }
                request.timeout = try timeLeft(stepTimeout)
                result.url = request.url
                response = try await send(request, result: &result)
                lastResponse = response
                try record(response, result: &result, state: &state)
                if !step.extractions.isEmpty { await offLoop { redactSecretsAhead(in: response, json: &json, state: &state) } }
                try checkStatus(response, method: spec.method, url: request.url, state: state)
            }
            if let digest = response.bodySHA256 { state.bodies[step.name] = BodyDigest(count: response.bodyByteCount, sha256: digest) }
            try await offLoop { () throws(StepFailure) in
                // The tree goes with the checks, here, not on the curl loop (`LazyJSON.letGo`).
                defer { json.letGo() }
                try checkAssertions(response, json: &json, state: &state)
                try extract(from: response, json: &json, state: &state)
            }
            degradedBy = try degradedReason(total: response.timings.total, state: &state)
            result.ok = true
        } catch {
            if step.always, let name = error.undefinedVariable, state.extracted[name] == nil {
                logger.debug("cleanup step skipped", metadata: ["step": "\(step.name)", "missing": "\(name)"])
                return nil
            }
            var probeError = ProbeError(kind: error.kind, step: step.name, message: error.message)
            if let response = lastResponse, error.kind == .httpStatus || error.kind == .assertion || error.kind == .script {
                probeError.code = await offLoop { failureCode(for: response, state: state) }
            }
            result.error = probeError
        }
        // A tree read for the secrets of a response whose status then failed.
        if json.holdsTree { await offLoop { json.letGo() } }
        return StepOutcome(result: result, degradedBy: degradedBy)
    }

    /// Whether anything reads this step's body (beyond a failure message's snippet).
    private var readsBody: Bool {
        if step.poll != nil { return true }
        if failureCodes.contains(where: { $0.bodyContains != nil || $0.bodyMatches != nil }) { return true }
        let checks = step.assertions.contains { assertion in
            switch assertion {
            case .bodyContains, .bodyMatches, .json: true
            default: false
            }
        }
        let extracts = step.extractions.contains { if case .header = $0.source { false } else { true } }
        return checks || extracts
    }

    /// A templated URL or header line longer than this fails the step as `script`: servers refuse
    /// them past 8 KiB or so, and a 4 MB value a server sent in one step, put into the next
    /// step's URL, held every probe's transfers for 2 s while the request was built and scanned
    /// (red team, 34th session).
    static let maxTemplatedLine = 65_536
    /// Extracted values longer than this make the requests after them be built off the curl
    /// loop (their JSON or form bodies may quote them at length).
    static let largeValue = 65_536

    private func renderedURL(_ spec: RequestSpec, state: inout RunState) throws(StepFailure) -> String {
        try renderedLine(spec.url, what: "the URL", state: &state)
    }

    /// A URL or header value with its `${…}` filled in, at most `maxTemplatedLine` bytes.
    private func renderedLine(_ template: Template, what: String, state: inout RunState) throws(StepFailure) -> String {
        let line = try state.render(template)
        if line.utf8.count > Self.maxTemplatedLine {
            throw StepFailure(
                .script,
                "step '\(step.name)': \(what) is \(line.utf8.count) bytes once its ${…} are filled in, over \(Self.maxTemplatedLine); "
                    + "check what the values it uses hold (servers refuse such lines past 8 KiB or so)")
        }
        return line
    }

    /// `body` on `CheckExecutor`'s threads when the run holds an extracted value past
    /// `largeValue` (building a request from it is then real work), else where it is.
    private func offLoopIfLarge<T, Failure: Error>(_ largest: Int, _ body: () async throws(Failure) -> T) async throws(Failure) -> T {
        guard largest > Self.largeValue else { return try await body() }
        return try await withTaskExecutorPreference(CheckExecutor.shared, operation: body)
    }

    /// Runs a step's CPU-bound checks (regexes, JSON) on `CheckExecutor`'s threads, not on the
    /// curl loop that drives other probes' transfers. A step with none calls `body` where it is:
    /// `withTaskExecutorPreference(nil)` still costs the runtime a status record and executor
    /// look-ups on every call.
    private func offLoop<T, Failure: Error>(_ body: () async throws(Failure) -> T) async throws(Failure) -> T {
        guard hasCPUBoundChecks else { return try await body() }
        return try await withTaskExecutorPreference(CheckExecutor.shared, operation: body)
    }

    private var hasCPUBoundChecks: Bool {
        guard case .request = step.action else { return false }
        return readsBody || step.assertions.contains { if case .header(_, .matches) = $0 { true } else { false } }
    }

    /// min(step timeout, time left before the deadline); failing as `timeout` when none is left.
    /// The frame of a `dns` or `icmp` step: a result named for the step, the step's time-out
    /// resolved, and on failure the error recorded with the time spent (as lookup time when the
    /// step set no timings). `body` fills the result and returns why the step counts as slow.
    func framed(
        method: String, url: String, state: inout RunState,
        _ body: (inout StepResult, inout RunState, Duration?) async throws(StepFailure) -> String?
    ) async -> StepOutcome {
        var result = StepResult(name: step.name, method: method, url: url, ok: false, timings: .zero)
        var degradedBy: String?
        let started = clock.now
        do throws(StepFailure) {
            let stepTimeout = try step.timeout.map { spec throws(StepFailure) in try state.duration(spec, field: "timeout") }
            degradedBy = try await body(&result, &state, stepTimeout)
            result.ok = true
        } catch {
            if result.timings.total == 0 {
                let elapsed = (clock.now - started).milliseconds
                result.timings = PhaseTimings(dns: elapsed, total: elapsed)
            }
            result.error = ProbeError(kind: error.kind, step: step.name, message: error.message)
        }
        return StepOutcome(result: result, degradedBy: degradedBy)
    }

    func timeLeft(_ stepTimeout: Duration?) throws(StepFailure) -> Duration {
        let left = deadline - clock.now
        guard left > .milliseconds(1) else {
            throw StepFailure(.timeout, "probe timeout of \(DurationText.format(probeTimeout)) reached before step '\(step.name)' could run")
        }
        return stepTimeout.map { min($0, left) } ?? left
    }

    private func send(_ request: HTTPRequest, result: inout StepResult) async throws(StepFailure) -> HTTPResponse {
        switch await runner.perform(request) {
        case .success(let response):
            result.status = response.status
            result.timings = response.timings
            return response
        case .failure(let error):
            result.timings = error.timings
            result.setCertificate(error.certificateNotAfter)
            var message = "\(request.method) \(request.url): \(error.message)"
            if error.kind == .responseTooLarge {
                let size = Self.formatBytes(request.maxResponseBytes)
                message = "\(request.method) \(request.url): the response body is larger than max_body \(size); raise the step's max_body if that is expected"
            } else if error.kind == .timeout {
                let limit = DurationText.format(request.timeout)
                message = "\(request.method) \(request.url): no complete answer within \(limit) (\(error.message))"
            }
            throw StepFailure(error.errorKind, message)
        }
    }

    private func build(_ spec: RequestSpec, state: inout RunState) throws(StepFailure) -> HTTPRequest {
        let url = try renderedURL(spec, state: &state)
        var headers: [HTTPHeader] = []
        for header in spec.headers {
            headers.append(HTTPHeader(header.name, try renderedLine(header.value, what: "header \(header.name)", state: &state)))
        }
        var body: Data?
        var contentType: String?
        switch spec.body {
        case .json(let template):
            body = Data(try state.jsonText(template).utf8)
            contentType = "application/json"
        case .raw(let template):
            body = Data(try state.render(template).utf8)
        case .multipart(let parts):
            let boundary = "sonde-" + UUID().uuidString.lowercased()
            body = try multipart(parts, boundary: boundary, state: &state)
            contentType = "multipart/form-data; boundary=\(boundary)"
        case .form(let fields):
            var pairs: [String] = []
            for field in fields { pairs.append(FormEncoding.encode(field.name) + "=" + FormEncoding.encode(try state.render(field.value))) }
            body = Data(pairs.joined(separator: "&").utf8)
            contentType = "application/x-www-form-urlencoded"
        case .randomBytes(let count, let saveAs):
            let bytes = Self.randomBytes(count)
            if let saveAs { state.payloads[saveAs] = BodyDigest(bytes, keep: true) }
            body = bytes
        case nil:
            break
        }
        if let auth = spec.basicAuth {
            let credentials = Data((try state.render(auth.user) + ":" + (try state.render(auth.password))).utf8).base64EncodedString()
            // A server that echoes the request (httpbin's /headers) must not show it either.
            state.redactor.add(credentials)
            // And the password as it is: a 401 page may quote it ("wrong password 'hunter2'").
            state.redactor.add(try state.render(auth.password))
            headers.append(HTTPHeader("Authorization", "Basic " + credentials))
        }
        if let contentType, headers.value(for: "Content-Type") == nil { headers.append(HTTPHeader("Content-Type", contentType)) }
        if headers.value(for: "User-Agent") == nil { headers.append(HTTPHeader("User-Agent", "sonde-agent (probe \(state.probe.name))")) }
        // The body is kept only when something reads it, under max_body; a `compare` hashes it as
        // it streams; otherwise it streams through, only its first bytes kept for messages.
        let keep = readsBody
        let hash = state.probe.script.steps.contains { if case .compare(let c) = $0.action { c.download == step.name } else { false } }
        var request = HTTPRequest(
            method: spec.method, url: url, headers: headers, body: body, followRedirects: spec.followRedirects,
            caFile: state.context.caFile, proxy: state.context.proxy,
            maxResponseBytes: spec.maxBody ?? (keep ? Self.defaultMaxBody : Self.defaultMaxUnread),
            keepBody: keep, bodyPrefixBytes: Self.keptPrefixBytes, hashBody: hash,
            redirectHeaders: spec.redirectHeadersEverywhere ? .all : .sameOriginOnly)
        request.apply(spec.tls, ipVersion: spec.ipVersion)
        if let connectTo = spec.connectTo {
            let address = try state.render(connectTo)
            guard let target = ConnectTarget(address) else {
                throw StepFailure(.script, "connect_to '\(address)' (from \(connectTo.source)) is not an address: a host or IP, optionally with :port")
            }
            request.connectTo = target
        }
        request.cookieJar = state.cookieJar()
        return request
    }

    /// What every response leaves, before any check can fail: its cookies (secrets from now on,
    /// so even a failure message quoting the body is redacted) and its certificate's expiry. A
    /// jar past what a run keeps ends the step: each later request would send them all, and libcurl's engine walks them on the thread
    /// every transfer shares (a poll answered with 50 new cookies each time reached 12,850 and
    /// 24 s of CPU in 30 s; red team, 34th session). Browsers keep about 180 per site.
    private func record(_ response: HTTPResponse, result: inout StepResult, state: inout RunState) throws(StepFailure) {
        state.keep(cookiesOf: response)
        result.setCertificate(response.certificateNotAfter)
        if response.cookiesTruncated {
            throw StepFailure(
                .script,
                "step '\(step.name)': the server has set more than \(HTTPResponse.mostCookiesKept) cookies in this run, more than a run keeps; "
                    + "the run stops here (browsers keep about 180 per site)")
        }
    }

    /// Days from now until `date` (negative once it has passed), to 0.01 day.
    static func daysLeft(until date: Date) -> Double {
        (date.timeIntervalSinceNow / 86_400 * 100).rounded(.down) / 100
    }

    /// `count` fresh random bytes (8 at a time from the system generator).
    static func randomBytes(_ count: Int) -> Data {
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: count)
        bytes.withUnsafeMutableBytes { raw in
            var offset = 0
            while offset < raw.count {
                let word = generator.next() as UInt64
                let n = min(8, raw.count - offset)
                withUnsafeBytes(of: word) { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
                offset += n
            }
        }
        return Data(bytes)
    }


    private func multipart(_ parts: [MultipartPart], boundary: String, state: inout RunState) throws(StepFailure) -> Data {
        var data = Data()
        for part in parts {
            let content: Data
            switch part.content {
            case .text(let template): content = Data(try state.render(template).utf8)
            case .randomBytes(let count):
                content = Self.randomBytes(count)
            }
            if let name = part.saveAs { state.payloads[name] = BodyDigest(content, keep: true) }
            var head = "--\(boundary)\r\nContent-Disposition: form-data; name=\"\(part.name)\""
            if let filename = part.filename { head += "; filename=\"\(try state.render(filename))\"" }
            head += "\r\n"
            if let type = part.contentType ?? (part.filename != nil ? "application/octet-stream" : nil) {
                head += "Content-Type: \(type)\r\n"
            }
            data.append(Data((head + "\r\n").utf8))
            data.append(content)
            data.append(Data("\r\n".utf8))
        }
        data.append(Data("--\(boundary)--\r\n".utf8))
        return data
    }

    // MARK: - Polling

    private func poll(
        _ poll: PollSpec, spec: RequestSpec, stepTimeout: Duration?, state: inout RunState,
        result: inout StepResult, last: inout HTTPResponse?
    ) async throws(StepFailure) -> HTTPResponse {
        let every = try state.duration(poll.every, field: "poll.every")
        let maxWait = try state.duration(poll.maxWait, field: "poll.max_wait")
        var limits: [String: Duration] = [:]
        for (name, limit) in poll.stuckAfter { limits[name] = try state.duration(limit, field: "poll.stuck_after.\(name)") }
        let started = clock.now
        let giveUp = started.advanced(by: maxWait)
        var attempts = 0
        var errorsInARow = 0
        var currentState: String?
        var stateSince = started
        // What the last answer said at the poll's state (or first `until`) path: kept as short
        // text, not the whole document, which a server may make as big as `max_body`.
        let watched = poll.state ?? poll.until.first?.path
        var lastSeen: String?
        // The step did run: say that the probe's timeout cut the poll, and where the job was.
        func cutOff() -> StepFailure {
            let seen = watched.map { p in " (\(p) was '\(lastSeen ?? "missing")')" } ?? ""
            return StepFailure(.timeout, "poll cut off by the probe timeout of \(DurationText.format(probeTimeout)) after \(attempts) attempt(s) in \(DurationText.format(clock.now - started))\(seen), before its max_wait of \(DurationText.format(maxWait))")
        }
        // A failed attempt within `tolerate_errors` in a row: no answer (connect, reset, the
        // attempt's time-out), the status check, or a body that is not JSON. The next attempt
        // comes at the poll's pace (or just after the job's stuck limit). TLS, DNS and the
        // script's own errors are never tolerated, nor are fail_when, stuck and max_wait; an
        // error whose next attempt would come after max_wait or the probe's deadline is the
        // step's error (not a time-out that hides it).
        func tolerate(_ error: StepFailure) async throws(StepFailure) {
            guard [.connect, .timeout, .httpStatus, .assertion].contains(error.kind) else { throw error }
            errorsInARow += 1
            let now = clock.now
            var next = now.advanced(by: every)
            if let state = currentState, let limit = limits[state] ?? limits["default"] {
                next = min(next, stateSince.advanced(by: limit + .milliseconds(20)))
            }
            guard errorsInARow <= poll.tolerateErrors else {
                guard poll.tolerateErrors > 0 else { throw error }
                var failure = error
                failure.message += " (\(errorsInARow) failed attempts in a row; tolerate_errors: \(poll.tolerateErrors))"
                throw failure
            }
            guard next < giveUp, next < deadline else { throw error }
            do { try await Task.sleep(until: next, clock: clock) } catch {
                throw StepFailure(.internal, "run cancelled while polling")
            }
        }
        while true {
            var request = try await offLoopIfLarge(state.largestExtracted) { () throws(StepFailure) in try build(spec, state: &state) }
            do {
                request.timeout = try timeLeft(stepTimeout)
            } catch where attempts > 0 {
                throw cutOff()
            }
            attempts += 1
            result.attempts = attempts
            result.url = request.url
            let response: HTTPResponse
            do {
                // The previous answer goes before the next is read: its body counts in
                // `limits.body_memory` until let go, and polls each holding their last answer
                // while their next waited for that memory would wait for each other to time out.
                // A failure code is only ever read from the answer that failed.
                last = nil
                response = try await send(request, result: &result)
                last = response
                try record(response, result: &result, state: &state)
                try checkStatus(response, method: spec.method, url: request.url, state: state)
            } catch where error.kind == .timeout && attempts > 1 && clock.now >= deadline {
                // An attempt sent just before the deadline, cut by it.
                throw cutOff()
            } catch {
                try await tolerate(error)
                continue
            }
            // Parsing, the checks and the state's text, all off the loop thread.
            let read = try await offLoop { () throws(StepFailure) -> (done: Bool, state: String?, seen: String?)? in
                var document = LazyJSON()
                let json: JSONValue
                switch document.read(response.body, until: deadline) {
                case .success(let read): json = read
                case .failure(.tree): return nil
                case .failure(let failure): throw failure.failure(for: "the poll", snippet: { "" })
                }
                for condition in poll.failWhen {
                    guard try holds(condition, in: json, state: &state) else { continue }
                    let value = condition.path.isSingular ? "'\(condition.path.evaluate(json)?.text ?? "missing")'" : condition.path.shown(in: json)
                    throw StepFailure(.assertion, "\(state.probe.component) reached \(condition.path) = \(value) (fail_when) after \(attempts) attempt(s)")
                }
                var done = true
                for condition in poll.until {
                    if !(try holds(condition, in: json, state: &state)) { done = false }
                }
                return (done, poll.state.map { $0.evaluate(json)?.shortText ?? "(missing)" }, watched.flatMap { $0.evaluate(json)?.shortText })
            }
            guard let (done, stateValue, seen) = read else {
                try await tolerate(StepFailure(.assertion, "poll: the response is not JSON: \(snippet(response, state: state))"))
                continue
            }
            errorsInARow = 0
            if done { return response }
            lastSeen = seen

            let now = clock.now
            var nextCheck = now.advanced(by: every)
            if let value = stateValue {
                if value != currentState {
                    currentState = value
                    stateSince = now
                }
                if let limit = limits[value] ?? limits["default"] {
                    let lasted = now - stateSince
                    if lasted > limit {
                        throw StepFailure(.stuck, "\(state.probe.component) stuck in \(value) for \(DurationText.format(lasted)) (limit \(DurationText.format(limit)))")
                    }
                    // Check again just after the limit, not a whole interval later.
                    nextCheck = min(nextCheck, stateSince.advanced(by: limit + .milliseconds(20)))
                }
            }
            if now >= giveUp {
                let where_ = poll.state.map { " (\($0) is '\(currentState ?? "?")')" } ?? ""
                throw StepFailure(.timeout, "still waiting after \(DurationText.format(now - started)) (max_wait \(DurationText.format(maxWait)))\(where_), \(attempts) attempt(s)")
            }
            nextCheck = min(nextCheck, giveUp, deadline)
            if nextCheck > now {
                do { try await Task.sleep(until: nextCheck, clock: clock) } catch {
                    throw StepFailure(.internal, "run cancelled while polling")
                }
            }
        }
    }

    // MARK: - Checks

    /// The start of a body for a failure message, in O(snippet) whatever the body's size.
    /// Redacted before it is cut: a secret that starts before the cut is replaced whole, so no
    /// prefix of it is left (the window redacted reaches past the cut by the longest secret in
    /// its longest encoding).
    private func snippet(_ response: HTTPResponse, state: RunState) -> String {
        var text = ProbeRunner.reported(response.body, state.redactor, limit: Self.snippetLength).replacingAll("\n", with: " ")
        if !text.hasSuffix("…"), response.bodyByteCount > response.body.count { text += "…" }  // the body kept was cut at max_body
        return text.isEmpty ? "(empty body)" : text
    }

    private func checkStatus(_ response: HTTPResponse, method: String, url: String, state: RunState) throws(StepFailure) {
        let patterns: [StatusPattern] = step.assertions.lazy.compactMap { if case .status(let p) = $0 { p } else { nil } }.first
            ?? [.family(2), .family(3)]
        guard patterns.contains(where: { $0.matches(response.status) }) else {
            let expected = patterns.map(\.description).joined(separator: "/")
            throw StepFailure(.httpStatus, "\(method) \(url) answered \(response.status), expected \(expected): \(snippet(response, state: state))")
        }
    }

    /// Every check of the step, so that a failure message names all that failed (as Checkly
    /// and Datadog list each assertion), not only the first: "2 checks failed: …; …".
    private func checkAssertions(_ response: HTTPResponse, json: inout LazyJSON, state: inout RunState) throws(StepFailure) {
        var failed: [StepFailure] = []
        for assertion in step.assertions {
            do throws(StepFailure) {
                try check(assertion, response, json: &json, state: &state)
            } catch {
                if error.kind == .assertion {
                    failed.append(error)
                    continue
                }
                // A check that could not finish (its time budget, a bad pattern) ends the step,
                // unless checks already failed: they are the step's answer.
                if failed.isEmpty { throw error }
                break
            }
        }
        guard let first = failed.first else { return }
        if failed.count == 1 { throw first }
        let shown = failed.prefix(Self.checksReported).map(\.message)
        let more = failed.count > shown.count ? "; and \(failed.count - shown.count) more" : ""
        throw StepFailure(.assertion, "\(failed.count) checks failed: \(shown.joined(separator: "; "))\(more)")
    }

    /// At most this many failed checks are spelled out in one message (each may quote the body).
    static let checksReported = 3

    private func check(_ assertion: Assertion, _ response: HTTPResponse, json: inout LazyJSON, state: inout RunState) throws(StepFailure) {
        switch assertion {
        case .status:
            break  // checked first, on every attempt
        case .header(let name, let test):
            let actual = response.headers.value(for: name)
            // A credential header's value is secret when checked as when extracted (the check
            // runs first, and its message goes into the result): `X-Subject-Token` stays hidden.
            if let actual, SecretNames.isSecretHeader(name) {
                if actual.trimmed().count >= SecretNames.minimumDefaultLength { state.redactor.add(actual.trimmed()) }
                for part in SecretNames.credentialParts(actual) { state.redactor.add(part) }
            }
            switch test {
            case .exists(let expected):
                if (actual != nil) != expected {
                    throw StepFailure(.assertion, "header \(name) is \(actual == nil ? "missing" : "present"), expected it \(expected ? "present" : "absent")")
                }
            case .equals(let template):
                let expected = try state.render(template)
                if actual?.trimmed() != expected {
                    throw StepFailure(.assertion, "header \(name) is '\(actual ?? "missing")', expected '\(expected)'")
                }
            case .matches(let pattern):
                if try !matches(pattern, (actual ?? "").utf8, state: state, check: "header \(name) matches") {
                    throw StepFailure(.assertion, "header \(name) is '\(actual ?? "missing")', expected to match /\(pattern)/")
                }
            }
        case .bodyContains(let template, let negated):
            let expected = try state.render(template)
            if response.body.contains(bytes: expected.utf8) == negated {
                let what = negated ? "body contains '\(expected)', expected it not to" : "body does not contain '\(expected)'"
                throw StepFailure(.assertion, "\(what): \(snippet(response, state: state))")
            }
        case .bodyMatches(let template, let negated):
            // Values are matched literally (`a+b` is not a regex); messages show them as they
            // are, since the redactor would not find a secret in its escaped form.
            let (pattern, display) = try state.renderPattern(template)
            let check = negated ? "body_not_matches" : "body_matches"
            if try matches(pattern, response.body, state: state, check: check, display: display) == negated {
                let what = negated ? "body matches /\(display)/, expected it not to" : "body does not match /\(display)/"
                throw StepFailure(.assertion, "\(what): \(snippet(response, state: state))")
            }
        case .json(let condition):
            let document: JSONValue
            switch json.read(response.body, until: deadline) {
            case .success(let read): document = read
            case .failure(let failure): throw failure.failure(for: "\(condition.path)", snippet: { snippet(response, state: state) })
            }
            if !(try holds(condition, in: document, state: &state)) {
                let expected = try describe(condition.test, state: &state)
                guard condition.path.isSingular else {
                    let wanted = if case .notEquals(let value) = condition.test { "none of them to equal '\(try state.value(value).text)'" } else { "one of them to \(expected)" }
                    throw StepFailure(.assertion, "\(condition.path) selects \(condition.path.shown(in: document)), expected \(wanted)")
                }
                throw StepFailure(.assertion, "\(condition.path) is \(condition.path.shown(in: document)), expected it to \(expected)")
            }
        case .latencyBelow, .certValidFor:
            try checkTimingAndCertificate(assertion, total: response.timings.total, certificate: response.certificateNotAfter, subject: response.certificateSubject, state: &state)
        }
    }

    /// `latency_below` and `cert_valid_for`, which every step kind with a connection has.
    func checkTimingAndCertificate(_ assertion: Assertion, total: Double, certificate: Date?, subject: String? = nil, state: inout RunState) throws(StepFailure) {
        switch assertion {
        case .latencyBelow(let spec):
            let limit = try state.duration(spec, field: "assert.latency_below")
            if total >= limit.milliseconds {
                throw StepFailure(.assertion, "took \(DurationText.took(total)), expected below \(DurationText.format(limit))")
            }
        case .certValidFor(let spec):
            let limit = try state.duration(spec, field: "assert.cert_valid_for")
            guard let certificate else {
                throw StepFailure(.assertion, "cert_valid_for: no TLS certificate was seen (not an https or TLS connection)")
            }
            let left = certificate.timeIntervalSinceNow
            if left < limit.seconds {
                // Named, so the one renewed is the one that expires (often an intermediate).
                let which = subject.flatMap { $0.isEmpty ? nil : "; first to expire: \($0)" } ?? ""
                throw StepFailure(.assertion, "the certificate chain expires \(RFC3339.string(from: certificate)) (\(Self.daysLeft(until: certificate)) days left), expected valid for \(DurationText.format(limit))\(which)")
            }
        default:
            break
        }
    }

    private func describe(_ test: Condition.Test, state: inout RunState) throws(StepFailure) -> String {
        switch test {
        case .equals(let value): "equal '\(try state.value(value).text)'"
        case .notEquals(let value): "differ from '\(try state.value(value).text)'"
        case .exists(let flag): flag ? "exist" : "be absent"
        case .matches(let pattern): "match /\(pattern)/"
        case .oneOf(let options): "be one of \(try options.map { o throws(StepFailure) in try state.value(o).text })"
        case .compare(let comparison, let limit): "be \(comparison.rawValue) \(try state.value(limit).text)"
        }
    }

    /// A path that selects several values (`$.items[*].status`) holds when one of them passes
    /// the test (Datadog's "at least one element"); `!=` / `not_equals` is `==` negated, so it
    /// holds when none of them equals (`$.jobs[*].state != failed`: no job failed); `exists`
    /// when it selects any. A singular path is the one-value case of the same rules.
    func holds(_ condition: Condition, in document: JSONValue, state: inout RunState) throws(StepFailure) -> Bool {
        let values = condition.path.isSingular ? condition.path.evaluate(document).map { [$0] } ?? [] : condition.path.evaluateAll(document)
        switch condition.test {
        case .exists(let expected):
            return !values.isEmpty == expected
        case .equals(let template):
            let expected = try state.value(template)
            return values.contains { Self.equal($0, expected) }
        case .notEquals(let template):
            let expected = try state.value(template)
            return !values.contains { Self.equal($0, expected) }
        case .matches(let pattern):
            for value in values where try matches(pattern, value.text.utf8, state: state, check: "\(condition.path) matches") { return true }
            return false
        case .oneOf(let options):
            let expected = try options.map { option throws(StepFailure) in try state.value(option) }
            return values.contains { value in expected.contains { Self.equal(value, $0) } }
        case .compare(let comparison, let limit):
            guard case .number(let bound) = try state.value(limit) else { return false }
            return values.contains { $0.comparableNumber.map { comparison.holds($0, bound) } ?? false }
        }
    }

    /// Loose equality, and an array or object against a number compares its number of items, as
    /// `<`/`>=` do (`$.items == 2`).
    static func equal(_ actual: JSONValue, _ expected: JSONValue) -> Bool {
        switch (actual, expected) {
        case (.array(let items), .number(let count)): Double(items.count) == count
        case (.object(let members), .number(let count)): Double(members.count) == count
        default: actual.looselyEquals(expected)
        }
    }

    /// Whether `pattern` (compiled once per probe) matches `text`, within the run's time: a
    /// pattern that backtracks without end fails the run as `timeout` (or `script` when PCRE2's
    /// limits stop it first), naming `check`.
    func matches<Text: Collection<UInt8>>(_ pattern: String, _ text: Text, state: RunState, check: String, display: String? = nil) throws(StepFailure) -> Bool {
        try firstMatch(pattern, text, state: state, check: check, display: display) { (regex: ProbeRegex, text: Text, deadline: ContinuousClock.Instant) throws(ProbeRegex.MatchError) in
            try regex.matches(text, deadline: deadline)
        }
    }

    /// `display`: the pattern as messages show it, when that is not `pattern` itself.
    private func firstMatch<T, Text: Collection<UInt8>>(
        _ pattern: String, _ text: Text, state: RunState, check: String, display: String? = nil,
        _ body: (ProbeRegex, Text, ContinuousClock.Instant) throws(ProbeRegex.MatchError) -> T
    ) throws(StepFailure) -> T {
        let shown = display ?? pattern
        let regex: ProbeRegex
        do {
            regex = try state.probe.script.regexes.regex(pattern)
        } catch {
            throw StepFailure(.script, "\(check) /\(shown)/: invalid regular expression: \(error)")
        }
        do {
            return try body(regex, text, deadline)
        } catch {
            switch error {
            case .outOfTime:
                throw StepFailure(.timeout, "\(check) /\(shown)/ did not finish within the probe timeout of \(DurationText.format(probeTimeout)) on \(text.count) bytes (the pattern backtracks too much; make it less ambiguous)")
            case .cancelled:
                throw StepFailure(.internal, "run cancelled during \(check) /\(shown)/")
            case .tooComplex(let why):
                throw StepFailure(.script, "\(check) /\(shown)/ was stopped on \(text.count) bytes: \(why) (the pattern backtracks too much; make it less ambiguous)")
            }
        }
    }

    /// `10 MiB`, `512 KiB`, `300 bytes`: a size as `max_body` takes it.
    static func formatBytes(_ count: Int) -> String {
        for (unit, size) in [("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] where count >= size && count % size == 0 {
            return "\(count / size) \(unit)"
        }
        return "\(count) bytes"
    }

    // MARK: - Extraction, comparison, failure codes

    private func extract(from response: HTTPResponse, json: inout LazyJSON, state: inout RunState) throws(StepFailure) {
        for extraction in step.extractions {
            let found = try extracted(extraction, from: response, state: state, json: &json)
            guard let value = found.value else {
                throw StepFailure(
                    .script, "step '\(step.name)': extract '\(extraction.name)': \(found.source) found nothing in the response: \(snippet(response, state: state))")
            }
            let secret = isSecret(extraction, value, byDefault: found.secretByDefault)
            state.remember(extraction.name, value, secret: secret)
            if secret { for part in found.secretParts { state.redactor.add(part) } }
        }
    }

    /// Short values (a flag, a count) are not treated as secrets by default: redacting "1"
    /// everywhere would hide everything and protect nothing.
    private func isSecret(_ extraction: Extraction, _ value: String, byDefault: Bool) -> Bool {
        extraction.secret ?? (byDefault && value.count >= SecretNames.minimumDefaultLength)
    }

    /// Before any check of a response: the values its secret extractions will take, added to the
    /// redactor, so a failed check's message (which quotes the body) does not show a token the
    /// step was about to keep secret (red team, fourth pass). Best effort: what cannot be found now
    /// is not there to leak either.
    private func redactSecretsAhead(in response: HTTPResponse, json: inout LazyJSON, state: inout RunState) {
        for extraction in step.extractions {
            guard let found = try? extracted(extraction, from: response, state: state, json: &json), let value = found.value,
                isSecret(extraction, value, byDefault: found.secretByDefault)
            else { continue }
            state.redactor.add(value)
            for part in found.secretParts { state.redactor.add(part) }
        }
    }

    /// What `extraction` finds in `response` (nil: nothing), where it looked, and whether such a
    /// value is a secret by default. `json`: the body, parsed once for the step's checks and extractions.
    private func extracted(
        _ extraction: Extraction, from response: HTTPResponse, state: RunState, json: inout LazyJSON
    ) throws(StepFailure) -> (value: String?, source: String, secretByDefault: Bool, secretParts: [String]) {
        switch extraction.source {
        case .json(let path):
            let found: JSONValue?
            switch json.read(response.body, until: deadline) {
            case .success(let document): found = path.evaluate(document)
            case .failure(.tree): found = nil
            case .failure(let failure): throw failure.failure(for: "extract '\(extraction.name)'", snippet: { "" })
            }
            var secret = false
            switch (found, path.components.last) {
            case (.string?, .key(let key)?), (.string?, .descendant(let key)?): secret = SecretNames.isSecretKey(key)
            default: break
            }
            return (found.map(\.text), "\(path)", secret, [])
        case .header(let name):
            let value = response.headers.value(for: name)
            return (value, "header \(name)", SecretNames.isSecretHeader(name), value.map(SecretNames.credentialParts) ?? [])
        case .headerRegex(let name, let pattern, let group):
            var found: String?
            for header in response.headers.values(for: name) where found == nil {
                found = try firstMatch(pattern, Array(header.utf8), state: state, check: "extract '\(extraction.name)' regex over \(name)") {
                    (regex: ProbeRegex, text: [UInt8], deadline: ContinuousClock.Instant) throws(ProbeRegex.MatchError) in
                    try regex.firstCapture(group, in: text, deadline: deadline)
                }
            }
            return (found, "regex /\(pattern)/ group \(group) over header \(name)", SecretNames.isSecretHeader(name), [])
        case .cookie(let name):
            return (state.cookies.last { $0.name == name }?.value, "cookie \(name)", !state.probe.script.publicCookies.contains(name), [])
        case .regex(let pattern, let group):
            let value = try firstMatch(pattern, response.body, state: state, check: "extract '\(extraction.name)' regex") {
                (regex: ProbeRegex, text: Data, deadline: ContinuousClock.Instant) throws(ProbeRegex.MatchError) in
                try regex.firstCapture(group, in: text, deadline: deadline)
            }
            return (value, "regex /\(pattern)/ group \(group)", false, [])
        case .body:
            return (response.bodyText, "body", false, [])
        }
    }

    private func compare(_ spec: CompareSpec, state: RunState) throws(StepFailure) {
        guard let downloaded = state.bodies[spec.download] ?? state.extracted[spec.download].map({ BodyDigest(Data($0.utf8)) }) else {
            throw StepFailure(.script, "compare: nothing was downloaded as '\(spec.download)'")
        }
        guard let sent = state.payloads[spec.with] else {
            throw StepFailure(.script, "compare: payload '\(spec.with)' was never sent")
        }
        let got = hexDigits(downloaded.sha256)
        let want = hexDigits(sent.sha256)
        if downloaded.count != sent.count || got != want {
            throw StepFailure(.assertion, "'\(spec.download)' differs from payload '\(spec.with)': got \(downloaded.count) bytes sha256 \(got.prefix(16))…, sent \(sent.count) bytes sha256 \(want.prefix(16))…")
        }
    }

    /// The first failure code whose rule fits; a rule whose regex cannot finish does not fit.
    private func failureCode(for response: HTTPResponse, state: RunState) -> String? {
        for rule in failureCodes where rule.statuses.isEmpty || rule.statuses.contains(response.status) {
            if let needle = rule.bodyContains, !response.body.contains(bytes: needle.utf8) { continue }
            if let pattern = rule.bodyMatches, (try? matches(pattern, response.body, state: state, check: "failure code \(rule.code)")) != true { continue }
            return rule.code
        }
        return nil
    }
}

extension StepResult {
    /// The certificate expiry a step saw (also on a failed handshake) and the days left to it.
    mutating func setCertificate(_ notAfter: Date?) {
        guard let notAfter else { return }
        certNotAfter = notAfter
        certDaysLeft = StepExecution.daysLeft(until: notAfter)
    }
}
