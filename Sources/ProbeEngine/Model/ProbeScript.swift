import CurlHTTP
import FoundationEssentials
import SondeCore

// MARK: - The validated probe model
// What the loader produces from YAML and the runner executes. Everything is a plain value so a
// definition can be shared across tasks; regexes are kept as (already validated) pattern text,
// compiled on first use into the script's `RegexCache` and reused by every later run.

/// The steps and rules of one probe script, beyond the summary in `ProbeDefinition`.
struct ProbeScript: Sendable {
    /// The probe's `timeout`, possibly templated (`${probe_timeout:-30s}`); resolved per run.
    var timeout: DurationSpec = .fixed(.seconds(30))
    var degradedAfter: DurationSpec?
    var failureCodes: [FailureCodeRule] = []
    /// `labels`: name → value, carried in every result (and as Prometheus labels).
    var labels: [String: String] = [:]
    /// Cookies whose values are not secrets (`consent`, `locale`): shown as they are in results.
    var publicCookies: Set<String> = []
    var steps: [ProbeStep] = []
    /// `${env:…}` names and `${file:…}` paths used anywhere: their values are secrets to redact.
    var secretEnvironment: Set<String> = []
    /// `${env:NAME}` without a default: every run fails where NAME is unset.
    var requiredEnvironment: Set<String> = []
    var secretFiles: Set<String> = []
    /// Folder of the probe file: `${file:relative/path}` is resolved against it.
    var baseDirectory: String = FileManager.default.currentDirectoryPath
    /// The script's regexes, compiled once for all its runs.
    let regexes = RegexCache()

    /// Whether a run needs a cookie jar: only when a request can follow one that was answered
    /// (two request steps or more, a poll, redirects followed hop by hop) or a step reads a
    /// cookie. A lone request has nowhere to send cookies back, and a jar per run (a curl share
    /// handle, the cookie engine on every transfer) was about 2 % of an agent's CPU per probe
    /// (A/B at 10 probes/s).
    var needsCookieJar: Bool {
        var requests = 0
        for step in steps {
            if step.extractions.contains(where: { if case .cookie = $0.source { true } else { false } }) { return true }
            guard case .request(let spec) = step.action else { continue }
            requests += 1
            if requests > 1 || step.poll != nil || spec.followRedirects { return true }
        }
        return false
    }
}

/// A duration written literally (`30s`) or as a template resolved at run time
/// (`${finalizing_limit:-60s}`).
enum DurationSpec: Sendable, Hashable {
    case fixed(Duration)
    case template(Template)
}

/// `failure_codes` entry: a failing step's response that matches gets `error.code = code`.
struct FailureCodeRule: Sendable, Hashable {
    var code: String
    /// Empty means any status.
    var statuses: [Int]
    var bodyContains: String?
    var bodyMatches: String?
}

struct ProbeStep: Sendable {
    enum Action: Sendable {
        case request(RequestSpec)
        case compare(CompareSpec)
        case tcp(TCPSpec)
        case dns(DNSSpec)
        case icmp(ICMPSpec)
    }

    var name: String
    var action: Action
    /// The platform component this step exercises when not the probe's own (`component:`); its
    /// failures count as evidence against that component, and the probe's is shown as affected.
    var component: String?
    /// Present when the request is repeated until a condition holds.
    var poll: PollSpec?
    var assertions: [Assertion] = []
    var extractions: [Extraction] = []
    /// Runs even after an earlier step failed (cleanup).
    var always: Bool = false
    var timeout: DurationSpec?
    var degradedAfter: DurationSpec?

    /// True when the step states which statuses it accepts (otherwise 2xx/3xx are required).
    var checksStatus: Bool {
        assertions.contains { if case .status = $0 { true } else { false } }
    }
}

struct RequestSpec: Sendable {
    var method: String
    var url: Template
    var headers: [HeaderTemplate]
    var body: RequestBody?
    var followRedirects: Bool
    /// `redirect_headers: all`: the step's headers follow a redirect to another origin too.
    var redirectHeadersEverywhere = false
    /// `max_body`: the most response bytes accepted (nil: the default, see `StepExecution`).
    var maxBody: Int?
    /// `basic_auth`: sent as `Authorization: Basic base64(user:password)`.
    var basicAuth: (user: Template, password: Template)?
    var tls: TLSOptions?
    var ipVersion: IPVersion?
    /// `connect_to`: the address to connect to instead of what DNS says for the URL's host,
    /// which still names the server for TLS (SNI, certificate check) and the Host header.
    var connectTo: Template?
}

/// `tls:` of a request or `tcp` step. Paths are relative to the probe file.
struct TLSOptions: Sendable, Hashable {
    var caFile: String?
    var certificate: String?
    var key: String?
    /// Skip certificate and host name checks (`validate` warns about it).
    var insecure = false
}

/// A `tcp` step: connect (optionally with TLS), then a dialogue: `send` and `expect`, or the
/// entries of `query_response` in order.
struct TCPSpec: Sendable {
    var host: Template
    var port: Int
    var send: Template?
    var expect: Template?
    var queryResponse: [TCPQueryResponse] = []
    /// Nil: plain TCP. With a `starttls` entry, the options of the upgrade instead.
    var tls: TLSOptions?
    var ipVersion: IPVersion?

    /// Whether the connection starts in plain text and switches to TLS part-way.
    var startsTLS: Bool { queryResponse.contains(where: \.startTLS) }
}

/// One `query_response` entry, done in blackbox_exporter's order: wait for the answer, send,
/// then switch to TLS.
struct TCPQueryResponse: Sendable {
    enum Answer: Sendable {
        /// `expect`: these bytes, anywhere in what arrives.
        case text(Template)
        /// `expect_matches`: a regex tried on each complete line.
        case line(Template)
    }
    var expect: Answer?
    var send: Template?
    var startTLS = false
}

/// An `icmp` step: one echo request to `host`, and its reply.
struct ICMPSpec: Sendable {
    var host: Template
    var ipVersion: IPVersion?
    /// Bytes after the 8-byte ICMP header (ping's default 56).
    var payloadSize = 56
    /// Set DF (IPv4) or refuse fragmentation (IPv6), to check a path's MTU.
    var dontFragment = false
}

/// A `dns` step: one question, answered by the system resolver or by `server`.
struct DNSSpec: Sendable {
    var name: Template
    var type: DNSRecordType
    /// `host:port` of a DNS server to ask directly (plain UDP, TCP on truncation).
    var server: (host: String, port: Int)?
    /// Each must be among the answers.
    var expect: [Template]
    /// `rcode: NXDOMAIN`: the answer code expected instead of answers (NOERROR, NXDOMAIN,
    /// SERVFAIL, REFUSED), as blackbox_exporter's `valid_rcodes`.
    var rcode: String?
}

struct HeaderTemplate: Sendable, Hashable {
    var name: String
    var value: Template
}

enum RequestBody: Sendable {
    case json(JSONTemplate)
    case raw(Template)
    case multipart([MultipartPart])
    /// `form`: fields URL-encoded as application/x-www-form-urlencoded, in the order written.
    case form([(name: String, value: Template)])
    /// `body: {random_bytes: N, save_as: name}`: fresh random bytes on every run.
    case randomBytes(Int, saveAs: String?)
}

struct MultipartPart: Sendable {
    enum Content: Sendable {
        case text(Template)
        /// A fresh random payload of this many bytes on every run.
        case randomBytes(Int)
    }

    var name: String
    var filename: Template?
    var contentType: String?
    var content: Content
    /// Name under which the sent bytes are remembered for a later `compare`.
    var saveAs: String?
}

/// A JSON body or expected value from YAML: strings are templates, the rest is literal.
indirect enum JSONTemplate: Sendable {
    case string(Template)
    case number(Double)
    case bool(Bool)
    case null
    case array([JSONTemplate])
    case object([(key: String, value: JSONTemplate)])
}

struct PollSpec: Sendable {
    var every: DurationSpec
    /// All must hold for the poll to finish successfully.
    var until: [Condition]
    /// Any holding fails the step (kind `assertion`).
    var failWhen: [Condition]
    var maxWait: DurationSpec
    /// Where the job's state is read, for `stuck_after`.
    var state: JSONPath?
    /// State name → the longest it may last; `default` applies to states not listed.
    var stuckAfter: [String: DurationSpec]
    /// Attempts in a row that may fail (no answer, the status check, a body that is not JSON)
    /// before the step does: a job's status page answering one 502 in a 10-minute wait is not
    /// the job failing. 0 (the default): the first failed attempt fails the step.
    var tolerateErrors = 0
}

struct CompareSpec: Sendable {
    /// A request step's name (its response body) or an extracted variable.
    var download: String
    /// A payload remembered with `save_as`.
    var with: String
}

/// A test of one JSON value: `{path, equals | exists | matches | in}` or the short form
/// `"$.status == completed"`.
struct Condition: Sendable {
    enum Test: Sendable {
        case equals(JSONTemplate)
        case notEquals(JSONTemplate)
        case exists(Bool)
        case matches(String)
        case oneOf([JSONTemplate])
        /// `$.queue_depth < 1000`: numbers (a numeric string counts); an array or object
        /// compares by its number of items (`$.items >= 1`).
        case compare(Comparison, JSONTemplate)
    }

    enum Comparison: String, Sendable, CaseIterable {
        case less = "<", lessOrEqual = "<=", greater = ">", greaterOrEqual = ">="

        /// The mapping form's key (`{path: $.n, less_than: 5}`).
        var key: String {
            switch self {
            case .less: "less_than"
            case .lessOrEqual: "at_most"
            case .greater: "greater_than"
            case .greaterOrEqual: "at_least"
            }
        }

        func holds(_ actual: Double, _ limit: Double) -> Bool {
            switch self {
            case .less: actual < limit
            case .lessOrEqual: actual <= limit
            case .greater: actual > limit
            case .greaterOrEqual: actual >= limit
            }
        }
    }

    var path: JSONPath
    var test: Test
}

enum HeaderTest: Sendable {
    case equals(Template)
    case matches(String)
    case exists(Bool)
}

/// Accepted status: an exact code or a class such as `2xx`.
enum StatusPattern: Sendable, Hashable, CustomStringConvertible {
    case code(Int)
    case family(Int)

    func matches(_ status: Int) -> Bool {
        switch self {
        case .code(let code): status == code
        case .family(let first): status / 100 == first
        }
    }

    var description: String {
        switch self {
        case .code(let code): "\(code)"
        case .family(let first): "\(first)xx"
        }
    }
}

enum Assertion: Sendable {
    case status([StatusPattern])
    case header(name: String, test: HeaderTest)
    /// `body_contains`, or `body_not_contains` when `negated` (blackbox_exporter's
    /// `fail_if_body_matches_regexp` as text).
    case bodyContains(Template, negated: Bool)
    /// `body_matches`, or `body_not_matches` when `negated`.
    case bodyMatches(Template, negated: Bool)
    case json(Condition)
    case latencyBelow(DurationSpec)
    /// Every certificate of the chain must stay valid at least this long.
    case certValidFor(DurationSpec)
}

extension Assertion {
    /// The `assert` key it came from, for messages.
    var fieldName: String {
        switch self {
        case .status: "status"
        case .header: "headers"
        case .bodyContains(_, let negated): negated ? "body_not_contains" : "body_contains"
        case .bodyMatches(_, let negated): negated ? "body_not_matches" : "body_matches"
        case .json: "json"
        case .latencyBelow: "latency_below"
        case .certValidFor: "cert_valid_for"
        }
    }
}

struct Extraction: Sendable {
    enum Source: Sendable {
        case json(JSONPath)
        case header(String)
        /// `{header: Set-Cookie, regex: …, group: N}`: the first match over every value of it.
        case headerRegex(String, pattern: String, group: Int)
        /// `{cookie: name}`: from the run's cookie jar.
        case cookie(String)
        case regex(String, group: Int)
        /// The whole response body (e.g. to `compare` a download later).
        case body
    }

    var name: String
    var source: Source
    /// `secret: true|false`; nil lets the source decide (cookies, credentials, token-like keys).
    var secret: Bool?
}

/// What `${name.…}` gives for a payload remembered with `save_as`.
enum PayloadFacts {
    static let suffixes = ["sha256", "size", "base64"]

    static func names(of payload: String) -> [String] { suffixes.map { "\(payload).\($0)" } }

    /// The value of `${payload.fact}`, or nil when `name` is not such a reference.
    static func value(_ name: String, payloads: [String: BodyDigest]) -> String? {
        guard let dot = name.lastIndex(of: ".") else { return nil }
        guard let payload = payloads[String(name[..<dot])] else { return nil }
        switch name[name.index(after: dot)...] {
        case "sha256": return hexDigits(payload.sha256)
        case "size": return String(payload.count)
        case "base64": return payload.bytes?.base64EncodedString()
        default: return nil
        }
    }
}

/// `server:` of a `dns` step: an IP address with an optional port (53 when left out).
enum DNSServerAddress {
    static func parse(_ text: String) -> (host: String, port: Int)? {
        var host = text, port = 53
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let number = Int(rest.dropFirst()) else { return nil }
                port = number
            }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            host = String(text[..<colon])
            guard let number = Int(text[text.index(after: colon)...]) else { return nil }
            port = number
        }
        guard (1...65535).contains(port), SocketAddress(host: host, port: port) != nil else { return nil }
        return (host, port)
    }
}
