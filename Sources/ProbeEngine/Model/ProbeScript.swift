import FoundationEssentials

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
    var steps: [ProbeStep] = []
    /// `${env:…}` names and `${file:…}` paths used anywhere: their values are secrets to redact.
    var secretEnvironment: Set<String> = []
    var secretFiles: Set<String> = []
    /// Folder of the probe file: `${file:relative/path}` is resolved against it.
    var baseDirectory: String = FileManager.default.currentDirectoryPath
    /// The script's regexes, compiled once for all its runs.
    let regexes = RegexCache()
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
    }

    var name: String
    var action: Action
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
}

struct HeaderTemplate: Sendable, Hashable {
    var name: String
    var value: Template
}

enum RequestBody: Sendable {
    case json(JSONTemplate)
    case raw(Template)
    case multipart([MultipartPart])
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
    case bodyContains(Template)
    case bodyMatches(String)
    case json(Condition)
    case latencyBelow(DurationSpec)
}

struct Extraction: Sendable {
    enum Source: Sendable {
        case json(JSONPath)
        case header(String)
        case regex(String, group: Int)
        /// The whole response body (e.g. to `compare` a download later).
        case body
    }

    var name: String
    var source: Source
    /// `secret: true|false`; nil lets the source decide (cookies, credentials, token-like keys).
    var secret: Bool?
}
