import CollectorStore
import Correlation
import Foundation
import SondeCore
import SondeYAML

/// Everything `sonde-collector serve` reads from its YAML file. Keys are snake_case; durations
/// are seconds as a number or a string with a unit (`500ms`, `1s`, `5m`, `2h`).
///
/// ```yaml
/// listen: { host: 0.0.0.0, port: 18300, tls: { cert: collector.crt, key: collector.key } }  # port 0 picks a free one
/// # or plain HTTP, only when said: listen: { host: 127.0.0.1, port: 18300, plain_http: true }
/// tokens: [{ name: ops, role: admin, sha256: <hex SHA-256 of the token> }]
/// status_page: { public: false, title: Example status, logo: https://example.com/logo.svg, link: https://example.com, show_probes: false }
/// metrics: { public: false }                  # true: `/metrics` answers without a token
/// limits: { max_probes_per_agent: 200, max_components_per_agent: 50, pushes_per_minute: 600, push_burst: 120, results_per_minute: 60000, push_bytes_per_minute: 67108864, test_alerts_per_minute: 6, max_push_bytes_in_flight: 268435456, min_body_bytes_per_second: 16384, max_connections: (from the open-file limit) }
/// database: /var/lib/sonde/collector.db       # ":memory:" keeps nothing on disk
/// database_sync: full                          # fsync at every commit (normal: only at checkpoints)
/// public_url: https://status.example.com      # base of the links in webhooks
/// retention_days: 30
/// max_body_bytes: 8388608
/// allowed_clock_skew: 300s
/// evaluation_interval: 1s
/// agents: [{ id: eu-1, region: eu, public_key: <base64> }]
/// webhooks: [{ name: ops, url: https://hooks.example.com/sonde, secret: s3cret, events: [incident.opened], format: json }]
/// webhook_retry: { base: 1s, cap: 5m, timeout: 10s, max_attempts: 20, max_age: 24h }
/// correlation: { ... }                         # thresholds; see docs/collector.md
/// components: [api, files, batch, login]      # may open incidents on one agent's data
/// ```
public struct CollectorConfig: Sendable {
    /// `listen.host`, default 127.0.0.1.
    public var host: String = "127.0.0.1"
    /// `listen.port`, default 18300; 0 binds an ephemeral port.
    public var port: Int = 18300
    /// `listen.tls`: serve HTTPS with this certificate and key (reloaded on SIGHUP).
    public var tls: TLSFiles?
    /// `listen.plain_http: true`: serve plain HTTP. One of `tls` and this is required.
    public var plainHTTP = false
    /// `tokens`: who may call the API, and with which role.
    public var tokens: [APIToken] = []
    /// `status_page.public`: `/` answers without a token (default false: a read token).
    public var statusPagePublic = false
    /// `status_page.title`, `.logo`, `.link`, `.show_probes`: what the public page shows.
    public var statusPage = StatusPageSettings()
    /// `metrics.public`: `/metrics` answers without a token (default false: a read token).
    public var metricsPublic = false
    /// `limits`: what one agent or client may cost the collector.
    public var limits = Limits()
    /// `database`: SQLite file path (created when missing), `:memory:`, or a PostgreSQL URL
    /// (`postgres://USER[:PASSWORD]@HOST:PORT/DB[?sslmode=…]`). Default `sonde-collector.db`.
    public var databasePath: String = "sonde-collector.db"
    /// `database_sync`: `full` (default; an acknowledged batch survives power loss) or `normal`.
    public var databaseSync: SQLiteCollectorStore.Durability = .full
    /// `collector_name`: this collector among several on one PostgreSQL (logs, /v1/status,
    /// /metrics). Default: host name and process id.
    public var collectorName: String?

    public static func defaultCollectorName() -> String {
        "\(ProcessInfo.processInfo.hostName)-\(getpid())"
    }
    /// `public_url`: base URL of this collector as people reach it, for links. Default from `listen`.
    public var publicURL: String?
    /// `agents`: enrolled (or updated) at start-up.
    public var agents: [AgentEnrolment] = []
    /// `webhooks`: alert targets.
    public var webhooks: [WebhookTarget] = []
    /// `correlation`: the engine's thresholds (defaults from `CorrelationConfig()`).
    public var correlation: CorrelationConfig = CorrelationConfig()
    /// `components`: the platform's components. A component not listed here opens incidents only
    /// when `correlation.min_component_agents` (2) agents report it, so one enrolled agent cannot
    /// page anyone about a component it made up. Default: none declared.
    public var components: [String] = []
    /// `retention_days`: results, batches, resolved incidents and delivered events older than this go. Default 30.
    public var retentionDays: Double = 30
    /// `max_body_bytes`: largest accepted push body. Default 8 MiB.
    public var maxBodyBytes: Int = PushProtocol.defaultMaxBodyBytes
    /// `max_results_per_batch`: default 10,000.
    public var maxResultsPerBatch: Int = 10_000
    /// `allowed_clock_skew`: how far `sent_at` may be from the collector's clock. Default 300 s.
    public var allowedClockSkew: TimeInterval = PushProtocol.defaultAllowedSkew
    /// `evaluation_interval`: how often the engine runs without new failures. Default 1 s.
    public var evaluationInterval: TimeInterval = 1
    /// `retention_interval`: how often old rows are pruned. Default 1 h.
    public var retentionInterval: TimeInterval = 3600
    /// `webhook_retry.base` / `.cap`: exponential backoff between delivery attempts. Default 1 s / 5 min.
    public var webhookRetryBase: TimeInterval = 1
    public var webhookRetryCap: TimeInterval = 300
    /// `webhook_retry.timeout`: one delivery attempt's time limit. Default 10 s.
    public var webhookTimeout: TimeInterval = 10
    /// `webhook_retry.poll`: how often an idle dispatcher looks at the outbox anyway (deliveries
    /// this collector queues wake it at once; this finds those another collector queued). Default 5 s.
    public var webhookPollInterval: TimeInterval = 5
    /// `webhook_retry.max_attempts`: failed attempts after which an event is dead-lettered. Default 20.
    public var webhookMaxAttempts = 20
    /// `webhook_retry.max_age`: an event still undelivered this long after it occurred is dead-lettered. Default 24 h.
    public var webhookMaxAge: TimeInterval = 86400
    /// `idle_timeout`: a connection that sends nothing for this long is closed, also in the middle
    /// of its request headers (slow clients). Default 30 s.
    public var idleTimeout: TimeInterval = 30
    /// `request_timeout`: the most time a request may take to arrive, head to end of body; a
    /// client trickling its body is cut off after it. Default 60 s.
    public var requestTimeout: TimeInterval = 60

    public init() {}

    /// The base for links: `public_url`, or the listen address.
    public func linkBase(boundPort: Int?) -> String {
        if let publicURL { return publicURL.hasSuffix("/") ? String(publicURL.dropLast()) : publicURL }
        return "\(tls == nil ? "http" : "https")://\(host):\(boundPort ?? port)"
    }

    /// The base for links on the public feed and summary.json: `public_url`, else the host the
    /// client asked for (its `Host`, when it is a plain host[:port]), else none (relative
    /// links); never the listen address, which behind a proxy is an internal one (red team F14).
    public func publicLinkBase(host requested: String?) -> String {
        if publicURL != nil { return linkBase(boundPort: nil) }
        guard let requested, !requested.isEmpty, requested.utf8.count <= 255,
            requested.utf8.allSatisfy({ ($0 | 0x20 >= 0x61 && $0 | 0x20 <= 0x7A) || ($0 >= 0x30 && $0 <= 0x39) || "-.:[]".utf8.contains($0) })
        else { return "" }
        return "\(tls == nil ? "http" : "https")://\(requested)"
    }
}

/// `listen.tls`: PEM files of the server's certificate chain and private key, and optionally the
/// CA that client certificates must chain to (mutual TLS).
public struct TLSFiles: Sendable, Hashable {
    /// `listen.tls.cert`: the certificate chain, leaf first (PEM).
    public var cert: String
    /// `listen.tls.key`: the private key (PEM); keep it 0600.
    public var key: String
    /// `listen.tls.client_ca`: when set, every client (agents, `sonde`, scrapers) must present a
    /// certificate signed by this CA (PEM).
    public var clientCA: String?

    public init(cert: String, key: String, clientCA: String? = nil) {
        self.cert = cert
        self.key = key
        self.clientCA = clientCA
    }
}

/// An API token as configured: only the hex SHA-256 of the secret is kept.
public struct APIToken: Sendable, Hashable {
    public enum Role: String, Sendable, Codable, Hashable, Comparable {
        /// Reads everything (status, results, incidents, agents, metrics, dead letters).
        case read
        /// Also: raw batches, test alerts, re-driving dead letters.
        case admin

        public static func < (a: Role, b: Role) -> Bool { a == .read && b == .admin }
    }

    public var name: String
    public var role: Role
    /// The 32-byte SHA-256 of the token.
    public var sha256: [UInt8]

    public init(name: String, role: Role, sha256: [UInt8]) {
        self.name = name
        self.role = role
        self.sha256 = sha256
    }

    /// `sha256` as 64 hex digits (what `sha256sum` prints); nil when it is not.
    public static func digest(hex: String) -> [UInt8]? {
        let text = hex.trimmingCharacters(in: .whitespaces).lowercased()
        guard text.utf8.count == 64 else { return nil }
        var bytes: [UInt8] = []
        var index = text.startIndex
        while index < text.endIndex {
            let next = text.index(index, offsetBy: 2)
            guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
            bytes.append(byte)
            index = next
        }
        return bytes
    }
}

/// `limits`: per-agent and per-client bounds, so one enrolled agent or one token holder cannot
/// exhaust the collector's memory, its alert channel or its pages.
public struct Limits: Sendable, Hashable {
    /// `limits.max_probes_per_agent`: distinct probe names one agent may report. Default 200.
    public var maxProbesPerAgent = 200
    /// `limits.max_components_per_agent`: distinct components one agent may report. Default 50.
    public var maxComponentsPerAgent = 50
    /// `limits.pushes_per_minute`: sustained pushes per agent. Default 600 (10 a second).
    public var pushesPerMinute = 600.0
    /// `limits.push_burst`: pushes an agent may make at once above the sustained rate (a spool
    /// draining after an outage). Default 120.
    public var pushBurst = 120.0
    /// `limits.results_per_minute`: results one agent may add per minute, sustained and at once
    /// (past it: 429 with Retry-After; the agent keeps them in its spool). Default 60,000: an
    /// agent at the 200-probe cap running each every 1 s, or a spool of an hour at 10 runs a
    /// second draining in a minute.
    public var resultsPerMinute = 60_000.0
    /// `limits.push_bytes_per_minute`: push body bytes one agent may send per minute, sustained
    /// (at once: the larger of this and two `max_body_bytes`). Default 64 MiB, about 40,000
    /// results of a typical 1.5 KiB. Results per minute alone let one agent pad each push to
    /// `max_body_bytes` and fill the disk at 80 MB/s (red team, third pass).
    public var pushBytesPerMinute = Double(64 << 20)
    /// `limits.test_alerts_per_minute`: `POST /v1/alerts/test` for the whole collector (that many at
    /// once, then one every 60/N s). Default 6.
    public var testAlertsPerMinute = 6.0
    /// `limits.max_push_bytes_in_flight`: push body bytes the collector reads at once, for all
    /// agents together (past it: 503 `busy`, retry in 1 s). Bounds what slow or hostile senders
    /// can make it buffer. Default 256 MiB.
    public var maxPushBytesInFlight = 256 << 20
    /// `limits.min_body_bytes_per_second`: after `RequestReadDeadline.bodyGrace` (5 s), a request
    /// body must arrive at least this fast on average, else the connection is closed: a trickled
    /// body cannot hold a connection, a handler or budget for long. 0 turns it off. Default 16 KiB/s.
    public var minBodyBytesPerSecond = 16 << 10
    /// `limits.max_connections`: client connections open at once; past it the collector stops
    /// accepting (new ones wait in the listen backlog) until one closes. Nil: from the open-file
    /// limit (`ConnectionCap.defaultLimit`). At the file limit itself NIO's accept loop spun a core
    /// and the collector answered nobody, /healthz included (red team, fifth pass).
    public var maxConnections: Int?

    public init() {}
}

/// An agent enrolled from the config file.
public struct AgentEnrolment: Sendable, Codable, Hashable {
    public var id: String
    public var region: String
    public var publicKey: String

    public init(id: String, region: String, publicKey: String) {
        self.id = id
        self.region = region
        self.publicKey = publicKey
    }

    enum CodingKeys: String, CodingKey {
        case id, region
        case publicKey = "public_key"
    }
}

/// Where alert webhooks go.
public struct WebhookTarget: Sendable, Decodable, Hashable {
    public enum Format: String, Sendable, Codable, Hashable, CaseIterable {
        /// The AlertEvent JSON plus `link`, signed.
        case json
        /// Slack incoming-webhook message: `{"text": …, "blocks": […]}`.
        case slack
        /// PagerDuty Events API v2: `trigger` on open and update, `resolve` on resolution, one
        /// alert per incident (`dedup_key` = incident id). Needs `routing_key`.
        case pagerduty
        /// Alertmanager API v2 (`POST /api/v2/alerts`): one alert per open incident, re-sent
        /// every `resend_interval` while open, ended (`endsAt`) on resolution.
        case alertmanager
    }

    /// `name`: the delivery key (stable across restarts), shown in logs, the dead-letter list and
    /// test answers. Without one: ``defaultName(url:)``, never the URL itself.
    public var name: String
    /// The key an unnamed target had before names stopped defaulting to the URL: its queue is
    /// moved to `name` when its dispatcher starts (nil for a named target).
    public var legacyName: String?
    public var url: String
    /// `secret`: HMAC-SHA256 key for `Sonde-Signature`.
    public var secret: String
    /// `events`: event types to send (`incident.opened`, …); empty sends all.
    public var events: [String]
    public var format: Format
    /// `routing_key` (pagerduty): the integration key of the PagerDuty service (Events API v2).
    public var routingKey: String?
    /// `resend_interval` (alertmanager): how often open incidents' alerts are sent again. An
    /// open alert's `endsAt` is 4 of these ahead, so it stays firing while re-sent and ends by
    /// itself if the collector is gone. Default 1 min (Prometheus's resend delay).
    public var resendInterval: TimeInterval = 60

    public init(
        name: String? = nil, url: String, secret: String = "", events: [String] = [], format: Format = .json, routingKey: String? = nil,
        resendInterval: TimeInterval = 60
    ) {
        self.name = name ?? Self.defaultName(url: url)
        legacyName = name == nil ? url : nil
        self.url = url
        self.secret = secret
        self.events = events
        self.format = format
        self.routingKey = routingKey
        self.resendInterval = resendInterval
    }

    /// True when this target wants events of `type` (`alert.test` goes everywhere). A pagerduty
    /// or alertmanager target without `events` gets incident events only: an agent's own
    /// problem is not a page.
    /// `agent.recovered` goes where the problem it ends (`resolving`) went, so an alert raised is
    /// also ended, unless `events` lists it.
    public func accepts(_ type: String, resolving: String? = nil) -> Bool {
        if type == AlertEventType.test.rawValue { return true }
        if type == AlertEventType.agentRecovered.rawValue, let resolving, !events.contains(type) { return accepts(resolving) }
        if events.isEmpty { return ![.pagerduty, .alertmanager].contains(format) || type.hasPrefix("incident.") }
        return events.contains(type)
    }

    enum CodingKeys: String, CodingKey {
        case name, url, secret, events, format
        case routingKey = "routing_key"
        case resendInterval = "resend_interval"
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        url = try c.decode(String.self, forKey: .url)
        let given = try c.decodeIfPresent(String.self, forKey: .name)
        name = given ?? Self.defaultName(url: url)
        legacyName = given == nil ? url : nil
        events = try c.decodeIfPresent([String].self, forKey: .events) ?? []
        let formatName = try c.decodeIfPresent(String.self, forKey: .format) ?? Format.json.rawValue
        guard let format = Format(rawValue: formatName) else {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: c.codingPath + [CodingKeys.format],
                    debugDescription: "unknown format \"\(formatName)\"; expected one of \(Format.allCases.map(\.rawValue).joined(separator: ", "))"))
        }
        self.format = format
        // json and slack receivers check `Sonde-Signature`; PagerDuty and Alertmanager do not.
        if [.json, .slack].contains(format) {
            secret = try c.decode(String.self, forKey: .secret)
        } else {
            secret = try c.decodeIfPresent(String.self, forKey: .secret) ?? ""
        }
        if let interval = try c.decodeIfPresent(ConfigDuration.self, forKey: .resendInterval) {
            guard format == .alertmanager else {
                throw DecodingError.dataCorrupted(
                    .init(codingPath: c.codingPath + [CodingKeys.resendInterval], debugDescription: "only format alertmanager re-sends; remove resend_interval"))
            }
            guard interval.seconds >= 1 else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.resendInterval], debugDescription: "expected at least 1s"))
            }
            resendInterval = interval.seconds
        }
        routingKey = try c.decodeIfPresent(String.self, forKey: .routingKey)
        if format == .pagerduty, (routingKey ?? "").isEmpty {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: c.codingPath + [CodingKeys.routingKey],
                    debugDescription: "format pagerduty needs routing_key: the integration key of a PagerDuty service (Events API v2)"))
        }
        let known = Set(AlertEventType.allCases.map(\.rawValue))
        for (index, event) in events.enumerated() where !known.contains(event) {
            throw DecodingError.dataCorrupted(
                .init(
                    codingPath: c.codingPath + [CodingKeys.events, IndexKey(index)],
                    debugDescription: "unknown event type \"\(event)\"; expected one of \(known.sorted().joined(separator: ", "))"))
        }
    }
}

struct IndexKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(_ index: Int) {
        intValue = index
        stringValue = "\(index)"
    }
    init?(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { self.init(intValue) }
}

// MARK: - Loading

/// A configuration problem: which file, where in it, which field, what was expected.
public struct ConfigError: Error, CustomStringConvertible, Sendable {
    public var file: String
    public var field: String?
    public var message: String
    /// Where in the file (from 1), when the problem is at a place in the YAML.
    public var line: Int?
    public var column: Int?
    /// The other problems found in the same read, in file order after this one: `validate` and
    /// `serve` list every problem the checks after decoding find, not one per attempt.
    public var others: [ConfigError] = []

    public init(file: String, field: String?, message: String, line: Int? = nil, column: Int? = nil) {
        self.file = file
        self.field = field
        self.message = message
        self.line = line
        self.column = column
    }

    /// `file:line:column: field: message`, as compilers print it, one line per problem.
    public var description: String {
        ([self] + others).map { problem in
            let place = problem.line.map { ":\($0)" + (problem.column.map { ":\($0)" } ?? "") } ?? ""
            if let field = problem.field, !field.isEmpty { return "\(problem.file)\(place): \(field): \(problem.message)" }
            return "\(problem.file)\(place): \(problem.message)"
        }.joined(separator: "\n")
    }
}

/// A duration in YAML: a number of seconds or a string like `500ms`, `2s`, `5m`, `1h`.
struct ConfigDuration: Decodable {
    var seconds: TimeInterval

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Double.self) {
            seconds = number
        } else {
            let text = try container.decode(String.self).trimmingCharacters(in: .whitespaces)
            guard let parsed = ConfigDuration.parse(text) else {
                throw DecodingError.dataCorruptedError(in: container, debugDescription: "expected a duration such as 500ms, 1s, 5m or 2h, got \"\(text)\"")
            }
            seconds = parsed
        }
        if seconds < 0 {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "a duration cannot be negative")
        }
    }

    /// Parses `500ms`, `1.5s`, `5m`, `2h`, `1d` or a bare number of seconds.
    static func parse(_ text: String) -> TimeInterval? {
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600), ("d", 86400)]
        for (suffix, factor) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)) { return value * factor }
        }
        return Double(text)
    }
}

/// The YAML file's shape; turned into `CollectorConfig` by `CollectorConfig.load`.
private struct ConfigFile: Decodable {
    struct Listen: Decodable {
        struct TLS: Decodable {
            var cert: String
            var key: String
            var clientCA: String?
            enum CodingKeys: String, CodingKey {
                case cert, key
                case clientCA = "client_ca"
            }
        }
        var host: String?
        var port: Int?
        var tls: TLS?
        var plainHTTP: Bool?
        enum CodingKeys: String, CodingKey {
            case host, port, tls
            case plainHTTP = "plain_http"
        }
    }
    struct Retry: Decodable {
        var base: ConfigDuration?
        var cap: ConfigDuration?
        var timeout: ConfigDuration?
        var poll: ConfigDuration?
        var maxAttempts: Int?
        var maxAge: ConfigDuration?
        enum CodingKeys: String, CodingKey {
            case base, cap, timeout, poll
            case maxAttempts = "max_attempts"
            case maxAge = "max_age"
        }
    }
    struct Token: Decodable {
        var name: String
        var role: APIToken.Role
        var sha256: String

        enum CodingKeys: String, CodingKey { case name, role, sha256 }

        init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            name = try c.decode(String.self, forKey: .name)
            sha256 = try c.decode(String.self, forKey: .sha256)
            let text = try c.decode(String.self, forKey: .role)
            // Said in the config's words, not Codable's ("Cannot initialize Role from …").
            guard let role = APIToken.Role(rawValue: text) else {
                throw DecodingError.dataCorrupted(.init(codingPath: c.codingPath + [CodingKeys.role], debugDescription: "unknown role '\(text)'; expected read or admin"))
            }
            self.role = role
        }
    }
    struct Public: Decodable {
        var `public`: Bool?
    }
    struct StatusPageFile: Decodable {
        var `public`: Bool?
        var title: String?
        var logo: String?
        var link: String?
        var showProbes: Bool?
        enum CodingKeys: String, CodingKey {
            case `public`, title, logo, link
            case showProbes = "show_probes"
        }
    }
    struct LimitsFile: Decodable {
        var maxProbesPerAgent: Int?
        var maxComponentsPerAgent: Int?
        var pushesPerMinute: Double?
        var pushBurst: Double?
        var resultsPerMinute: Double?
        var pushBytesPerMinute: Double?
        var testAlertsPerMinute: Double?
        var maxPushBytesInFlight: Int?
        var minBodyBytesPerSecond: Int?
        var maxConnections: Int?
        enum CodingKeys: String, CodingKey {
            case maxProbesPerAgent = "max_probes_per_agent"
            case maxComponentsPerAgent = "max_components_per_agent"
            case pushesPerMinute = "pushes_per_minute"
            case pushBurst = "push_burst"
            case resultsPerMinute = "results_per_minute"
            case pushBytesPerMinute = "push_bytes_per_minute"
            case testAlertsPerMinute = "test_alerts_per_minute"
            case maxPushBytesInFlight = "max_push_bytes_in_flight"
            case minBodyBytesPerSecond = "min_body_bytes_per_second"
            case maxConnections = "max_connections"
        }
    }
    var listen: Listen?
    var tokens: [Token]?
    var statusPage: StatusPageFile?
    var metrics: Public?
    var limits: LimitsFile?
    var database: String?
    var databaseSync: String?
    var collectorName: String?
    var publicURL: String?
    var agents: [AgentEnrolment]?
    var webhooks: [WebhookTarget]?
    var correlation: CorrelationConfig?
    var components: [String]?
    var retentionDays: Double?
    var maxBodyBytes: Int?
    var maxResultsPerBatch: Int?
    var allowedClockSkew: ConfigDuration?
    var evaluationInterval: ConfigDuration?
    var retentionInterval: ConfigDuration?
    var webhookRetry: Retry?
    var idleTimeout: ConfigDuration?
    var requestTimeout: ConfigDuration?

    enum CodingKeys: String, CodingKey {
        case listen, database, tokens, metrics, limits
        case databaseSync = "database_sync"
        case collectorName = "collector_name"
        case statusPage = "status_page"
        case publicURL = "public_url"
        case agents, webhooks, correlation, components
        case retentionDays = "retention_days"
        case maxBodyBytes = "max_body_bytes"
        case maxResultsPerBatch = "max_results_per_batch"
        case allowedClockSkew = "allowed_clock_skew"
        case evaluationInterval = "evaluation_interval"
        case retentionInterval = "retention_interval"
        case webhookRetry = "webhook_retry"
        case idleTimeout = "idle_timeout"
        case requestTimeout = "request_timeout"
    }
}

extension CollectorConfig {
    /// Reads and checks a YAML config file. Relative `database` paths are relative to the file.
    public static func load(path: String) throws -> CollectorConfig {
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw ConfigError(file: path, field: nil, message: "cannot be read: it \(unreadableFileReason(path))")
        }
        return try parse(yaml: text, file: path)
    }

    /// Parses config YAML; `file` names it in errors and anchors relative paths.
    public static func parse(yaml: String, file: String) throws -> CollectorConfig {
        let raw: ConfigFile
        let root: Node?
        do {
            root = try compose(yaml: yaml)
            raw = try NodeDecoder().decode(ConfigFile.self, from: root)
        } catch let error as NodeDecodingError {
            throw ConfigError(file: file, field: error.path, message: error.message, line: error.mark?.line, column: error.mark?.column)
        } catch let error as YAMLError {
            throw ConfigError(file: file, field: nil, message: "is not valid YAML: \(error.problem)", line: error.mark?.line, column: error.mark?.column)
        } catch {
            throw ConfigError(file: file, field: nil, message: "\(error)")
        }
        var problems: [ConfigError] = []
        let config = build(raw, file: file, problems: &problems)
        guard !problems.isEmpty else { return config }
        // A check made after decoding names a field: point at it in the file.
        for i in problems.indices where problems[i].line == nil {
            if let field = problems[i].field, let mark = root.flatMap({ Self.mark(of: field, in: $0) }) {
                problems[i].line = mark.line
                problems[i].column = mark.column
            }
        }
        // In file order, as a compiler lists them (a problem with no place last).
        problems = problems.enumerated().sorted { a, b in
            (a.element.line ?? .max, a.element.column ?? 0, a.offset) < (b.element.line ?? .max, b.element.column ?? 0, b.offset)
        }.map(\.element)
        var error = problems[0]
        error.others = Array(problems.dropFirst())
        throw error
    }

    /// The node at a dotted path such as `webhooks[1].url`, for the place of an error.
    static func mark(of path: String, in root: Node) -> Mark? {
        var node = root
        for part in path.split(separator: ".") {
            var name = Substring(part)
            var indices: [Int] = []
            while let open = name.lastIndex(of: "["), name.hasSuffix("]"), let index = Int(name[name.index(after: open)..<name.index(before: name.endIndex)]) {
                indices.insert(index, at: 0)
                name = name[..<open]
            }
            if !name.isEmpty {
                guard let entry = node.mapping?.first(where: { $0.key.string == String(name) }) else { return node.mark }
                node = entry.value
            }
            for index in indices {
                guard let sequence = node.sequence, sequence.indices.contains(index) else { return node.mark }
                node = sequence[index]
            }
        }
        return node.mark
    }

    /// The config `raw` describes; each problem found is added to `problems` and the check goes on
    /// (the value in question keeps its default), so one read reports them all.
    private static func build(_ raw: ConfigFile, file: String, problems: inout [ConfigError]) -> CollectorConfig {
        var config = CollectorConfig()
        func problem(_ field: String, _ message: String) { problems.append(ConfigError(file: file, field: field, message: message)) }
        if let host = raw.listen?.host { config.host = host }
        if let port = raw.listen?.port {
            if (0...65535).contains(port) { config.port = port } else { problem("listen.port", "expected 0...65535, got \(port)") }
        }
        config.applySecurity(raw, file: file, problems: &problems)
        if let database = raw.database {
            if PostgresURL.isPostgres(database) {
                do { _ = try PostgresURL(database) } catch { problem("database", error.description) }
                config.databasePath = database
            } else if database == ":memory:" || database.hasPrefix("/") {
                config.databasePath = database
            } else {
                let folder = URL(fileURLWithPath: file).deletingLastPathComponent().path
                config.databasePath = folder + "/" + database
            }
        }
        if let sync = raw.databaseSync {
            if let durability = SQLiteCollectorStore.Durability(rawValue: sync) {
                config.databaseSync = durability
            } else {
                problem("database_sync", "expected full or normal, got \"\(sync)\"")
            }
        }
        if let name = raw.collectorName {
            if !name.isEmpty, name.count <= 100, name.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || "-_.:".contains($0)) }) {
                config.collectorName = name
            } else {
                problem("collector_name", "expected 1 to 100 of A-Z a-z 0-9 - _ . :, got \"\(name)\"")
            }
        }
        config.publicURL = raw.publicURL
        config.agents = raw.agents ?? []
        for (index, agent) in config.agents.enumerated() {
            if let why = ResultText.nameProblem(agent.id) { problem("agents[\(index)].id", "expected an agent id without spaces or control characters: it \(why)") }
            if let why = ResultText.nameProblem(agent.region) { problem("agents[\(index)].region", "expected a region name without spaces or control characters: it \(why)") }
            do { _ = try AgentPublicKey(base64: agent.publicKey) } catch {
                let weak = (error as? KeyFileError)?.problem == AgentPublicKey.weakKeyProblem
                problem(
                    "agents[\(index)].public_key",
                    "agent \(agent.id): "
                        + (weak ? AgentPublicKey.weakKeyProblem : "expected base64 of a 32-byte Ed25519 public key (the .pub file `sonde-agent keygen` writes)"))
            }
        }
        // One key, one agent: a key listed under two ids would stay usable after revoking one.
        var keys: [String: String] = [:]
        var ids = Set<String>()
        for (index, agent) in config.agents.enumerated() {
            guard ids.insert(agent.id).inserted else {
                problem("agents[\(index)].id", "agent \"\(agent.id)\" is listed twice")
                continue
            }
            let key = (try? AgentPublicKey(base64: agent.publicKey).base64) ?? agent.publicKey
            if let other = keys.updateValue(agent.id, forKey: key) {
                problem(
                    "agents[\(index)].public_key",
                    "agent \(agent.id) has the same public key as agent \(other); every agent needs its own key (`sonde-agent keygen`)")
            }
        }
        config.webhooks = raw.webhooks ?? []
        var seen = Set<String>()
        for (index, target) in config.webhooks.enumerated() {
            if !target.url.hasPrefix("http://") && !target.url.hasPrefix("https://") {
                // Not echoed: a webhook URL is a secret (a Slack hook's path is its token), and
                // this message reaches `validate` and the reload log.
                problem(
                    "webhooks[\(index)].url",
                    "expected an http:// or https:// URL, got one starting \"\(String(target.url.prefix(8)))…\" (\(target.url.count) characters; the rest is not shown)")
            } else if let flaw = WebhookTarget.webhookURLFlaw(target.url) {
                problem("webhooks[\(index)].url", "\(flaw) (the URL is not shown: its path may be a token)")
            }
            if !seen.insert(target.name).inserted {
                problem("webhooks[\(index)].name", "\"\(target.name)\" is used twice; names must be unique")
            }
        }
        if let correlation = raw.correlation { config.correlation = correlation }
        config.components = raw.components ?? []
        for (index, name) in config.components.enumerated() where name.isEmpty {
            problem("components[\(index)]", "expected a component name, got an empty string")
        }
        if let days = raw.retentionDays {
            if days > 0 { config.retentionDays = days } else { problem("retention_days", "expected a positive number of days") }
        }
        if let bytes = raw.maxBodyBytes {
            if bytes >= 1024 { config.maxBodyBytes = bytes } else { problem("max_body_bytes", "expected at least 1024") }
        }
        if let count = raw.maxResultsPerBatch {
            if count >= 1 { config.maxResultsPerBatch = count } else { problem("max_results_per_batch", "expected at least 1") }
        }
        if let skew = raw.allowedClockSkew { config.allowedClockSkew = skew.seconds }
        if let interval = raw.evaluationInterval {
            if interval.seconds > 0 { config.evaluationInterval = interval.seconds } else { problem("evaluation_interval", "expected more than 0") }
        }
        if let interval = raw.retentionInterval, interval.seconds > 0 { config.retentionInterval = interval.seconds }
        if let timeout = raw.idleTimeout {
            if timeout.seconds > 0 { config.idleTimeout = timeout.seconds } else { problem("idle_timeout", "expected more than 0") }
        }
        if let timeout = raw.requestTimeout {
            if timeout.seconds > 0 { config.requestTimeout = timeout.seconds } else { problem("request_timeout", "expected more than 0") }
        }
        if let retry = raw.webhookRetry {
            if let base = retry.base { config.webhookRetryBase = base.seconds }
            if let cap = retry.cap { config.webhookRetryCap = cap.seconds }
            if let timeout = retry.timeout { config.webhookTimeout = max(0.1, timeout.seconds) }
            if let poll = retry.poll { config.webhookPollInterval = max(0.01, poll.seconds) }
            if let attempts = retry.maxAttempts {
                if attempts >= 1 { config.webhookMaxAttempts = attempts } else { problem("webhook_retry.max_attempts", "expected at least 1") }
            }
            if let age = retry.maxAge {
                if age.seconds > 0 { config.webhookMaxAge = age.seconds } else { problem("webhook_retry.max_age", "expected more than 0") }
            }
        }
        return config
    }

    /// `listen.tls` / `listen.plain_http`, `tokens`, `status_page`, `metrics` and `limits`.
    private mutating func applySecurity(_ raw: ConfigFile, file: String, problems: inout [ConfigError]) {
        func problem(_ field: String, _ message: String) { problems.append(ConfigError(file: file, field: field, message: message)) }
        func resolve(_ path: String) -> String {
            path.hasPrefix("/") ? path : URL(fileURLWithPath: file).deletingLastPathComponent().path + "/" + path
        }
        if let tls = raw.listen?.tls { self.tls = TLSFiles(cert: resolve(tls.cert), key: resolve(tls.key), clientCA: tls.clientCA.map(resolve)) }
        plainHTTP = raw.listen?.plainHTTP ?? false
        if tls != nil && plainHTTP { problem("listen.plain_http", "cannot be true together with listen.tls; choose one") }
        if tls == nil && !plainHTTP { problem("listen", Self.transportRequired) }
        var names = Set<String>()
        for (index, token) in (raw.tokens ?? []).enumerated() {
            if !names.insert(token.name).inserted {
                problem("tokens[\(index)].name", "\"\(token.name)\" is used twice; names must be unique")
            }
            guard let digest = APIToken.digest(hex: token.sha256) else {
                problem(
                    "tokens[\(index)].sha256",
                    "expected 64 hex digits, the SHA-256 of the token (`printf %s \"$TOKEN\" | sha256sum`), never the token itself")
                continue
            }
            guard !tokens.contains(where: { $0.sha256 == digest }) else {
                problem("tokens[\(index)].sha256", "the same token is listed twice; give each client its own")
                continue
            }
            tokens.append(APIToken(name: token.name, role: token.role, sha256: digest))
        }
        statusPagePublic = raw.statusPage?.public ?? false
        if let page = raw.statusPage {
            if let title = page.title {
                if !title.trimmingCharacters(in: .whitespaces).isEmpty, title.count <= 200 {
                    statusPage.title = title
                } else {
                    problem("status_page.title", "expected a title of 1 to 200 characters")
                }
            }
            for (key, value) in [("logo", page.logo), ("link", page.link)] {
                guard let value else { continue }
                // Only web addresses: a `javascript:` link on a public page would run in readers' browsers.
                if !(value.hasPrefix("https://") || value.hasPrefix("http://") || (value.hasPrefix("/") && !value.hasPrefix("//"))) {
                    problem("status_page.\(key)", "expected an https:// or http:// URL or a path starting with /, got \"\(value)\"")
                }
            }
            statusPage.logo = page.logo
            statusPage.link = page.link
            statusPage.showProbes = page.showProbes ?? false
        }
        metricsPublic = raw.metrics?.public ?? false
        if let l = raw.limits {
            func positive<T: Comparable & Numeric>(_ value: T?, _ key: String) -> T? {
                guard let value else { return nil }
                guard value > 0 else {
                    problem("limits.\(key)", "expected more than 0")
                    return nil
                }
                return value
            }
            if let v = positive(l.maxProbesPerAgent, "max_probes_per_agent") { limits.maxProbesPerAgent = v }
            if let v = positive(l.maxComponentsPerAgent, "max_components_per_agent") { limits.maxComponentsPerAgent = v }
            if let v = positive(l.pushesPerMinute, "pushes_per_minute") { limits.pushesPerMinute = v }
            if let v = positive(l.pushBurst, "push_burst") { limits.pushBurst = max(1, v) }
            if let v = positive(l.resultsPerMinute, "results_per_minute") { limits.resultsPerMinute = v }
            if let v = positive(l.pushBytesPerMinute, "push_bytes_per_minute") { limits.pushBytesPerMinute = v }
            if let v = positive(l.testAlertsPerMinute, "test_alerts_per_minute") { limits.testAlertsPerMinute = v }
            if let v = positive(l.maxPushBytesInFlight, "max_push_bytes_in_flight") { limits.maxPushBytesInFlight = v }
            if let v = l.minBodyBytesPerSecond {
                if v >= 0 { limits.minBodyBytesPerSecond = v } else { problem("limits.min_body_bytes_per_second", "expected 0 (off) or more") }
            }
            if let v = positive(l.maxConnections, "max_connections") { limits.maxConnections = v }
        }
    }

    static let transportRequired =
        "say how to serve: listen.tls {cert, key} for HTTPS, or listen.plain_http: true for plain HTTP (only on loopback or behind a TLS proxy)"
}

/// `status_page`: the public page's title, logo and link, and whether it names probes.
public struct StatusPageSettings: Sendable, Hashable {
    /// `status_page.title`, default "Sonde status".
    public var title = "Sonde status"
    /// `status_page.logo`: an image URL shown before the title.
    public var logo: String?
    /// `status_page.link`: where the title and logo lead (the company's site).
    public var link: String?
    /// `status_page.show_probes`: list the probes that check each component on the public page.
    public var showProbes = false

    public init() {}
}

// Printed anywhere (an interpolation, a log line), a webhook target must not show its secret.
extension WebhookTarget: CustomStringConvertible {
    public var description: String {
        "WebhookTarget(name: \(name), url: \(Self.origin(of: url))/…, format: \(format.rawValue), secret: <redacted>)"
    }

    /// What makes a webhook URL unusable, without quoting it: a space or control character
    /// (libcurl would send it as it is, and the receiver answer 400 for every event), or no host.
    static func webhookURLFlaw(_ url: String) -> String? {
        if let i = url.unicodeScalars.firstIndex(where: { $0.value <= 0x20 || $0.value == 0x7F }) {
            let at = url.unicodeScalars.distance(from: url.unicodeScalars.startIndex, to: i)
            let what = url.unicodeScalars[i] == " " ? "a space" : "a control character"
            return "expected a URL without spaces or control characters, found \(what) at character \(at + 1); percent-encode it (%20)"
        }
        guard let parts = URLComponents(string: url), let host = parts.host, !host.isEmpty else {
            return "expected a URL with a host, such as https://hooks.example.com/sonde"
        }
        return nil
    }

    /// Scheme, host and port only: a URL's path can be a credential (Slack's incoming-webhook
    /// URLs are), and so can its user-info and query.
    static func origin(of url: String) -> String {
        let parts = url.split(separator: "/", maxSplits: 3, omittingEmptySubsequences: false)
        guard parts.count >= 3 else { return "(not a URL)" }
        let authority = parts[2]
        let host = authority.lastIndex(of: "@").map { authority[authority.index(after: $0)...] } ?? authority
        return "\(parts[0])//\(host.split(separator: "?", maxSplits: 1).first ?? "")"
    }

    /// An unnamed target's name: its origin and the first 8 hex digits of its whole URL's
    /// SHA-256, so targets on one host stay apart and nothing secret in the URL shows.
    static func defaultName(url: String) -> String {
        let digest = hexDigits(SHA256Digest.hash(Data(url.utf8)).prefix(4))
        return "\(origin(of: url))/…#\(digest)"
    }
}

