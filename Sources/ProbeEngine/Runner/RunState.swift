import CurlHTTP
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore

/// A problem found while running a step, before it becomes a `ProbeError`.
struct StepFailure: Error, Sendable {
    var kind: ErrorKind
    var message: String
    /// Set when a template named a variable that is not defined (yet): an `always` step whose
    /// inputs never came (the upload failed, so there is no file to delete) is skipped.
    var undefinedVariable: String?

    init(_ kind: ErrorKind, _ message: String, undefinedVariable: String? = nil) {
        self.kind = kind
        self.message = message
        self.undefinedVariable = undefinedVariable
    }
}

/// A body or payload as `compare` needs it: its size and SHA-256, not its bytes.
struct BodyDigest: Sendable, Equatable {
    var count: Int
    var sha256: [UInt8]
    /// The bytes themselves, kept only for a payload the run made and saved (`save_as`), which
    /// `${name.base64}` may ask for; received bodies keep only their digest.
    var bytes: Data?

    init(count: Int, sha256: [UInt8]) {
        self.count = count
        self.sha256 = sha256
    }

    init(_ bytes: Data, keep: Bool = false) {
        self.init(count: bytes.count, sha256: SHA256Digest.hash(bytes))
        if keep { self.bytes = bytes }
    }
}

/// What one run knows as it goes: extracted values, payloads sent, bodies received, secrets.
struct RunState {
    let probe: ProbeDefinition
    let context: RunContext
    let runID: String
    var extracted: [String: String] = [:]
    /// The longest value extracted so far (bytes): past `StepExecution.largeValue`, requests that
    /// may carry it are built off the curl loop.
    var largestExtracted = 0
    /// Multipart parts sent with `save_as`, by name.
    var payloads: [String: BodyDigest] = [:]
    /// The last response body of each request step that a `compare` reads, by step name.
    var bodies: [String: BodyDigest] = [:]
    var redactor = Redactor()
    /// The run's cookies after the latest response (for `extract: {cookie: …}`).
    private(set) var cookies: [HTTPCookie] = []
    private var jar: CurlCookieJar?
    /// False for a script that sends one request and reads no cookie (`needsCookieJar`).
    private let usesCookieJar: Bool
    private var fileCache: [String: String] = [:]
    /// One variable at a time: `ProcessInfo.processInfo.environment` builds the whole dictionary
    /// on every call, which cost about 4 % of an agent's CPU when done once per run.
    private struct Environment {
        subscript(name: String) -> String? { getenv(name).map { String(cString: $0) } }
    }
    private let environment = Environment()

    init(probe: ProbeDefinition, context: RunContext, runID: String) {
        self.probe = probe
        self.context = context
        self.runID = runID
        usesCookieJar = probe.script.needsCookieJar
        // Collect every secret before the first request, so even a response that echoes one
        // early is redacted.
        for name in context.secretNames {
            if let value = context.variables[name] { redactor.add(value) }
        }
        for name in probe.script.secretEnvironment {
            if let value = environment[name] { redactor.add(value) }
        }
        for path in probe.script.secretFiles {
            if let value = readFile(path) { redactor.add(value) }
        }
    }

    private mutating func readFile(_ path: String) -> String? {
        if let cached = fileCache[path] { return cached }
        let full = NodeReader.resolve(path, base: probe.script.baseDirectory)
        guard case .success(let data) = RegularFile.read(atPath: full, limit: NodeReader.maxSecretFileBytes) else { return nil }
        let value = String(decoding: data, as: UTF8.self).trimmed()
        fileCache[path] = value
        return value
    }

    // MARK: - Templates

    mutating func render(_ template: Template) throws(StepFailure) -> String {
        if let literal = template.literal { return literal }
        var text = ""
        try render(template) { part, _ in text += part }
        return text
    }

    /// A `tcp` step's `send`, rendered: the `\r\n` written in the template stays, but a `${…}`
    /// value holding CR, LF or NUL fails the step as `script` before anything is sent. A value a
    /// server supplied (`"42\r\nFLUSHALL"`) would otherwise send commands of its own to the
    /// service, as it would headers in HTTP (`CurlHTTPClient.checkLines`).
    mutating func renderSend(_ template: Template, field: String) throws(StepFailure) -> String {
        if let literal = template.literal { return literal }
        var text = ""
        var broken = false
        try render(template) { part, substituted in
            if substituted, Self.hasLineBreak(part) { broken = true }
            text += part
        }
        if broken { throw Self.lineBreakFailure(field) }
        return text
    }

    /// CR, LF or NUL: what ends a command in a line protocol.
    static func hasLineBreak(_ text: some StringProtocol) -> Bool { text.utf8.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 } }
    static func hasLineBreak(_ bytes: Data) -> Bool { bytes.contains { $0 == 0x0D || $0 == 0x0A || $0 == 0 } }

    static func lineBreakFailure(_ field: String) -> StepFailure {
        StepFailure(.script, "\(field): a ${…} value holds a line break or NUL; not sent (it would send a command of its own)")
    }

    /// A regex template (`body_matches: '"id":"${file_id}"'`) rendered once: `pattern` has every
    /// substituted value (and `${…:-default}`) escaped so it matches literally, while the text
    /// written around them stays a regex; `display` has the values as they are, for messages
    /// (the redactor finds a secret there, not in its escaped form).
    mutating func renderPattern(_ template: Template) throws(StepFailure) -> (pattern: String, display: String) {
        if let literal = template.literal { return (literal, literal) }
        var pattern = "", display = ""
        try render(template) { part, substituted in
            pattern += substituted ? ProbeRegex.escape(part) : part
            display += part
        }
        return (pattern, display)
    }

    /// A piece of a `send` that refers to groups of the line its entry matched.
    enum MatchedText: Sendable {
        case text(String)
        case group(Int)
    }

    /// A `query_response` send with `${1}` …: everything but the groups rendered now; the groups
    /// are filled in from the line once it has matched.
    mutating func renderWithGroups(_ template: Template, field: String) throws(StepFailure) -> [MatchedText] {
        var parts: [MatchedText] = []
        var broken = false
        try render(template, emit: { part, substituted in
            if substituted, Self.hasLineBreak(part) { broken = true }
            parts.append(.text(part))
        }, group: { parts.append(.group($0)) })
        if broken { throw Self.lineBreakFailure(field) }
        return parts
    }

    /// Calls `emit` with each piece of the rendered text, saying whether it was substituted, and
    /// `group` with each `${N}` (which only a `query_response` send may hold).
    private mutating func render(_ template: Template, emit: (String, Bool) -> Void, group: ((Int) -> Void)? = nil) throws(StepFailure) {
        for segment in template.segments {
            switch segment {
            case .literal(let part):
                emit(part, false)
            case .capture(let number):
                guard let group else { throw StepFailure(.script, "${\(number)} refers to a group of a matched line, and there is none here") }
                group(number)
            case .variable(let name, let fallback):
                if let value = lookup(name) {
                    emit(value, true)
                } else if let fallback {
                    emit(fallback, true)
                } else {
                    throw StepFailure(.script, "${\(name)} is not defined (no agent variable, no earlier extraction)", undefinedVariable: name)
                }
            case .environment(let name, let fallback):
                if let value = environment[name] {
                    emit(value, true)
                } else if let fallback {
                    emit(fallback, true)
                } else {
                    throw StepFailure(.script, "environment variable \(name) (from ${env:\(name)}) is not set on this agent")
                }
            case .file(let path, let fallback):
                if let value = readFile(path) {
                    emit(value, true)
                } else if let fallback {
                    emit(fallback, true)
                } else {
                    throw StepFailure(.script, "secret file '\(path)' (from ${file:\(path)}) cannot be read")
                }
            }
        }
    }

    /// A step's URL, written or rendered: the password in its userinfo, and the values of query
    /// parameters named like credentials (a presigned URL's signature), are redacted from then on.
    mutating func keepCredentials(inURL url: String) {
        for password in URLCredentials.passwords(in: url) { redactor.add(password) }
        for value in URLCredentials.queryCredentials(in: url) where !value.contains("${") { redactor.add(value) }
    }

    /// Keeps an extracted value for later templates; a secret one is redacted from then on.
    mutating func remember(_ name: String, _ value: String, secret: Bool) {
        extracted[name] = value
        largestExtracted = max(largestExtracted, value.utf8.count)
        guard secret else { return }
        redactor.add(value)
    }

    /// The run's cookie jar, made at its first request; nil for a script that needs none, or
    /// when libcurl is out of memory (the requests then go without cookies).
    mutating func cookieJar() -> CurlCookieJar? {
        if jar == nil, usesCookieJar { jar = CurlCookieJar() }
        return jar
    }

    /// Cookies are secrets by default: their values are redacted from everything the run
    /// reports. Values under 4 bytes (`1`, `yes`) are left alone: hiding them would garble every
    /// message, and they are not credentials. With a jar they come from it (cookies set on a
    /// redirect hop too); without one, from the response's `Set-Cookie` headers, since a run
    /// without a jar follows no redirect and that response is the only one.
    mutating func keep(cookiesOf response: HTTPResponse) {
        if jar != nil {
            // More cookies than can be read: their values cannot all be redacted, so everything
            // the run reports is masked (as for more secrets than the redactor holds).
            if response.cookiesTruncated { redactor.maskEverything() }
            guard !response.cookies.isEmpty else { return }
            cookies = response.cookies
            for cookie in cookies where cookie.value.utf8.count >= SecretNames.minimumDefaultLength && !probe.script.publicCookies.contains(cookie.name) {
                redactor.add(cookie.value)
            }
        } else {
            for header in response.headers.values(for: "Set-Cookie") {
                if let cookie = SecretNames.cookie(header), !probe.script.publicCookies.contains(cookie.name) { redactor.add(cookie.value) }
            }
        }
    }

    func lookup(_ name: String) -> String? {
        if let value = extracted[name] { return value }
        if let value = PayloadFacts.value(name, payloads: payloads) { return value }
        if let value = context.variables[name] { return value }
        switch name {
        case "agent.id": return context.agent
        case "agent.region": return context.region
        case "run.id": return runID
        case "uuid": return UUID().uuidString.lowercased()
        case "now.unix": return String(Int(Date().timeIntervalSince1970))
        case "now.unix_ms": return String(Int64(Date().timeIntervalSince1970 * 1000))
        case "now.iso8601": return RFC3339.string(from: Date())
        default: return nil
        }
    }

    mutating func duration(_ spec: DurationSpec, field: String) throws(StepFailure) -> Duration {
        switch spec {
        case .fixed(let value):
            return value
        case .template(let template):
            let text = try render(template)
            guard let value = DurationText.parse(text) else {
                throw StepFailure(.script, "\(field) '\(redactor.redact(text))' (from \(template.source)) is not a duration: \(DurationText.hint)")
            }
            return value
        }
    }

    /// A JSON template with its strings rendered, as a value to compare.
    mutating func value(_ template: JSONTemplate) throws(StepFailure) -> JSONValue {
        switch template {
        case .string(let text): return .string(try render(text))
        case .number(let number): return .number(number)
        case .bool(let flag): return .bool(flag)
        case .null: return .null
        case .array(let items):
            var values: [JSONValue] = []
            for item in items { values.append(try value(item)) }
            return .array(values)
        case .object(let members):
            var values: [String: JSONValue] = [:]
            for member in members { values[member.key] = try value(member.value) }
            return .object(values)
        }
    }

    /// A JSON template as body text, keys in the order written.
    mutating func jsonText(_ template: JSONTemplate) throws(StepFailure) -> String {
        switch template {
        case .string(let text): return JSONWriter.quote(try render(text))
        case .number(let number): return JSONValue.format(number)
        case .bool(let flag): return flag ? "true" : "false"
        case .null: return "null"
        case .array(let items):
            var parts: [String] = []
            for item in items { parts.append(try jsonText(item)) }
            return "[" + parts.joined(separator: ",") + "]"
        case .object(let members):
            var parts: [String] = []
            for member in members { parts.append(JSONWriter.quote(member.key) + ":" + (try jsonText(member.value))) }
            return "{" + parts.joined(separator: ",") + "}"
        }
    }
}
