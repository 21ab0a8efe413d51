/// What a probe result may carry as names, codes, labels and text: one rule, used by the probe
/// loader (`sonde-agent validate` refuses a script that would break it) and by the collector's
/// ingest (a push that breaks it is refused, naming the result and the field). Everything an
/// agent sends ends up in incident texts, public pages, webhooks, metrics and terminals, so
/// names are identifiers (they cannot carry a sentence), sizes are bounded, and no control
/// character (ESC above all) reaches a person.
public enum ResultText {
    /// Probe names: 1–128 of letters, digits, `.`, `_`, `:`, `/`, `-`.
    public static let longestProbeName = 128
    /// Component names: 1–64 of letters, digits, `.`, `_`, `-` (as `POST /v1/incidents` takes them).
    public static let longestComponent = 64
    /// `error.code` (a probe's `failure_codes`): 1–64 of letters, digits, `.`, `_`, `:`, `-`.
    public static let longestCode = 64
    /// A label's value, in bytes.
    public static let longestLabelValue = 256
    /// A probe's labels together (names and values), in bytes. They are copied onto every
    /// series of the probe in `/metrics` and onto its alerts: 32 labels of 256 bytes made one
    /// agent's 200 probes a 21 MB scrape (red team, second pass, N4). Real labels (`team`,
    /// `tier`, `service`, `owner`) take a few dozen bytes.
    public static let largestLabelSet = 1024
    /// A step's name, in bytes (the probe loader refuses longer ones).
    public static let longestStepName = 1024
    /// An error message or a slowness reason, in bytes: the agent cuts messages at 1,024
    /// characters, which UTF-8 may make four times as many bytes.
    public static let longestMessage = 4096 + 64
    /// A result's `id` and a batch's `batch_id`, in bytes: agents use UUIDs (and `X.1.2` for a
    /// batch's halves); the engine keeps the ids of every series' window runs, so one agent's
    /// megabyte ids must not reach it (red team, third pass).
    public static let longestID = 128
    /// Steps in one result (the probe loader refuses a script with more).
    public static let mostSteps = 256
    /// One result's JSON in a push, in bytes.
    public static let largestResultBytes = 256 << 10
    /// A push body's bytes beside its results (`agent`, `batch_id`, `sent_at`, the brackets,
    /// members a newer agent may add).
    public static let largestBatchOverhead = 64 << 10

    /// Nil for a good result or batch id, else why it is not one.
    public static func idProblem(_ id: String) -> String? {
        if id.isEmpty { return "must not be empty" }
        return textProblem(id, newlines: false, longest: longestID)
    }

    /// Nil for a good probe name, else why it is not one.
    public static func probeNameProblem(_ name: String) -> String? {
        identifierProblem(name, longest: longestProbeName, extra: "._:/-", described: "letters, digits, '.', '_', ':', '/' or '-'")
    }

    /// Nil for a good component name, else why it is not one.
    public static func componentProblem(_ name: String) -> String? {
        identifierProblem(name, longest: longestComponent, extra: "._-", described: "letters, digits, '.', '_' or '-'")
    }

    /// Nil for a good failure code, else why it is not one.
    public static func codeProblem(_ code: String) -> String? {
        identifierProblem(code, longest: longestCode, extra: "._:-", described: "letters, digits, '.', '_', ':' or '-'")
    }

    /// Nil for a good label name (`ProbeLabels.isValidName`), else why it is not one.
    public static func labelNameProblem(_ name: String) -> String? {
        guard !ProbeLabels.isValidName(name) else { return nil }
        return "'\(shown(name))' is not a usable label name: letters, digits and _, not starting with a digit or __, and not one of \(ProbeLabels.reserved.sorted().joined(separator: ", "))"
    }

    /// Nil when a probe's labels together fit `largestLabelSet`, else why not.
    public static func labelSetProblem(_ labels: [String: String]) -> String? {
        let bytes = labels.reduce(0) { $0 + $1.key.utf8.count + $1.value.utf8.count }
        return bytes > largestLabelSet ? "a probe's labels take at most \(largestLabelSet) bytes together, names and values (got \(bytes))" : nil
    }

    /// Nil for a good label value (at most 256 bytes, no control characters), else why not.
    public static func labelValueProblem(_ value: String) -> String? {
        if value.utf8.count > longestLabelValue { return "a label value is at most \(longestLabelValue) bytes (got \(value.utf8.count))" }
        return textProblem(value, newlines: false)
    }

    /// Nil when `text` has no control character (C0, DEL, C1), else which; `newlines` allows
    /// line feed and tab (a message may have lines). Carriage return and ESC never pass: they
    /// rewrite what a terminal shows.
    public static func textProblem(_ text: String, newlines: Bool, longest: Int = .max) -> String? {
        // Bounded too: a 5 MB message in a real incident's sample errors would make every
        // webhook too large for Slack or PagerDuty, which refuse it for good.
        if text.utf8.count > longest { return "is at most \(longest) bytes (got \(text.utf8.count))" }
        for scalar in text.unicodeScalars where isControl(scalar) || isBidiFormat(scalar) {
            if newlines, scalar == "\n" || scalar == "\t" { continue }
            let code = "U+\(String(scalar.value, radix: 16, uppercase: true).leftPadded(to: 4))"
            if isBidiFormat(scalar) { return "contains the bidirectional formatting character \(code), which reorders the text around it; they are not accepted" }
            return "contains the control character \(code); control characters (other than \(newlines ? "line feed and tab" : "none")) are not accepted"
        }
        return nil
    }

    /// The longest agent id or region name (the collector refuses a longer `Sonde-Agent`).
    public static let longestName = 256

    /// Nil for a good agent id or region name (1 to `longestName` bytes; no whitespace, control
    /// or bidirectional formatting characters), else why not. Enrolment and both configs use
    /// it: a control sequence in an id went raw to every terminal that listed agents, and a
    /// 5,000-character id into every page and metric (red team, 32nd session).
    public static func nameProblem(_ name: String) -> String? {
        if name.isEmpty { return "is empty" }
        if let problem = textProblem(name, newlines: false, longest: longestName) { return problem }
        if name.unicodeScalars.contains(where: { $0.properties.isWhitespace }) { return "contains whitespace" }
        return nil
    }

    /// C0, DEL and C1 (what a terminal acts on).
    public static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (scalar.value >= 0x7F && scalar.value < 0xA0)
    }

    /// Unicode's bidirectional formatting characters (marks, embeddings, overrides, isolates: the
    /// "Trojan Source" set): in a terminal, log viewer or editor that applies them they reorder
    /// the text around them, so an agent could make "it is heating" read reversed, or columns
    /// look swapped (red team, second pass, N6).
    public static func isBidiFormat(_ scalar: Unicode.Scalar) -> Bool {
        switch scalar.value {
        case 0x061C, 0x200E, 0x200F, 0x202A...0x202E, 0x2066...0x2069: true
        default: false
        }
    }

    /// The first field of `result` that breaks a rule: its path inside the result (`error.code`,
    /// `steps[2].name`, `labels.team`) and why; nil for a good result.
    public static func problem(in result: ProbeResult) -> (field: String, reason: String)? {
        if let reason = idProblem(result.id) { return ("id", reason) }
        if let reason = probeNameProblem(result.probe) { return ("probe", reason) }
        if result.steps.count > mostSteps { return ("steps", "at most \(mostSteps) steps (got \(result.steps.count))") }
        if let reason = numberProblem(result.durationMs, within: largestMilliseconds) { return ("duration_ms", reason) }
        if let reason = componentProblem(result.component) { return ("component", reason) }
        if result.outcome == .ok, result.error != nil { return ("error", "a result whose outcome is ok has no error (it would read as a pass here and a failure elsewhere)") }
        if let error = result.error, let found = problem(in: error) { return ("error." + found.field, found.reason) }
        for (index, step) in result.steps.enumerated() {
            if let reason = textProblem(step.name, newlines: false, longest: longestStepName) { return ("steps[\(index)].name", reason) }
            if let reason = textProblem(step.method, newlines: false, longest: 32) { return ("steps[\(index)].method", reason) }
            if let reason = textProblem(step.url, newlines: false, longest: 16384) { return ("steps[\(index)].url", reason) }
            if let component = step.component, let reason = componentProblem(component) { return ("steps[\(index)].component", reason) }
            if let error = step.error, let found = problem(in: error) { return ("steps[\(index)].error." + found.field, found.reason) }
            if let degraded = step.degraded, let reason = textProblem(degraded, newlines: true, longest: longestMessage) { return ("steps[\(index)].degraded", reason) }
            for (phase, ms) in step.timings.phases + [("total", step.timings.total)] {
                if let reason = numberProblem(ms, within: largestMilliseconds) { return ("steps[\(index)].timings.\(phase)", reason) }
            }
            if let status = step.status, !(0...999).contains(status) { return ("steps[\(index)].status", "expected 0…999, got \(status)") }
            if let attempts = step.attempts, !(0...1_000_000).contains(attempts) {
                return ("steps[\(index)].attempts", "expected 0…1000000, got \(attempts)")
            }
            if let days = step.certDaysLeft, let reason = numberProblem(days, within: 1e7) { return ("steps[\(index)].cert_days_left", reason) }
        }
        if let degraded = result.degraded, let reason = textProblem(degraded, newlines: true, longest: longestMessage) { return ("degraded", reason) }
        for (name, value) in (result.labels ?? [:]).sorted(by: { $0.key < $1.key }) {
            if let reason = labelNameProblem(name) { return ("labels", reason) }
            if let reason = labelValueProblem(value) { return ("labels.\(name)", reason) }
        }
        if let labels = result.labels, let reason = labelSetProblem(labels) { return ("labels", reason) }
        return nil
    }

    /// The largest duration or phase a result may give, in milliseconds (11.6 days): a run
    /// claiming 1e308 ms made the collector trap (red team F15).
    public static let largestMilliseconds = 1e9

    /// Nil for a finite number within ±`within`, else why not.
    public static func numberProblem(_ value: Double, within: Double) -> String? {
        value.isFinite && abs(value) <= within ? nil : "expected a number within ±\(fixedDecimals(within, 0)), got \(value)"
    }

    private static func problem(in error: ProbeError) -> (field: String, reason: String)? {
        if let reason = textProblem(error.step, newlines: false, longest: longestStepName) { return ("step", reason) }
        if let reason = textProblem(error.message, newlines: true, longest: longestMessage) { return ("message", reason) }
        if let code = error.code, let reason = codeProblem(code) { return ("code", reason) }
        return nil
    }

    private static func identifierProblem(_ text: String, longest: Int, extra: String, described: String) -> String? {
        let ok = !text.isEmpty && text.utf8.count <= longest
            && text.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A) || extra.utf8.contains(byte)
            }
        guard !ok else { return nil }
        return "expected 1 to \(longest) \(described), got \"\(shown(text))\" (\(text.utf8.count) bytes)"
    }

    /// The start of a refused value, quoted in a message: at most 64 characters, controls as `?`.
    private static func shown(_ text: String) -> String {
        let head = String(String.UnicodeScalarView(text.unicodeScalars.prefix(64).map { isControl($0) || isBidiFormat($0) ? "?" : $0 }))
        return text.unicodeScalars.count > 64 ? head + "…" : head
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String { count >= width ? self : String(repeating: "0", count: width - count) + self }
}

/// Text safe to write to a terminal: every control character (C0, DEL, C1) shown visibly, as
/// `cat -v` does (ESC as `^[`, DEL as `^?`, U+009B as `M-^[`), so text from an agent or a
/// target (an error message quoting a response) cannot move the cursor, clear the screen, set
/// the window title or hide what follows. `keepLines` keeps line feed and tab (text printed on
/// lines of its own); a table cell shows them too.
public enum TerminalText {
    public static func visible(_ text: String, keepLines: Bool = false) -> String {
        guard text.unicodeScalars.contains(where: { ResultText.isControl($0) || ResultText.isBidiFormat($0) }) else { return text }
        var out = String.UnicodeScalarView()
        for scalar in text.unicodeScalars {
            if ResultText.isBidiFormat(scalar) {
                out.append(contentsOf: "<U+\(String(scalar.value, radix: 16, uppercase: true))>".unicodeScalars)
                continue
            }
            guard ResultText.isControl(scalar), !(keepLines && (scalar == "\n" || scalar == "\t")) else {
                out.append(scalar)
                continue
            }
            var value = scalar.value
            if value >= 0x80 {
                out.append(contentsOf: "M-".unicodeScalars)
                value -= 0x80
            }
            out.append(contentsOf: (value == 0x7F ? "^?" : "^" + String(Unicode.Scalar(UInt8(value + 0x40)))).unicodeScalars)
        }
        return String(out)
    }
}
