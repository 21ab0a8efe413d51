import CollectorAPI
import CollectorStore
import Correlation
import Foundation
import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import Logging
import ServiceLifecycle
import SondeCore
import Synchronization

// MARK: - Build

/// A built collector: the HTTP application (which also runs the evaluator, the webhook dispatcher
/// and retention as services) and handles for tests and the demo.
public struct BuiltCollector: Sendable {
    public let application: Application<RouterResponder<BasicRequestContext>>
    public let store: any CollectorStorage
    public let hub: CorrelationHub
    public let metrics: CollectorMetrics
    /// Wakes the evaluator (pushes that could change a decision, people's updates).
    let trigger: WakeSignal
    let boundPort: BoundPort

    /// The port the server listens on, once it does (useful with `listen.port: 0`).
    public var port: Int? { boundPort.value }

    /// Runs until SIGTERM/SIGINT, then shuts down gracefully (server first, then the services).
    public func runUntilSignalled() async throws {
        try await application.runService(gracefulShutdownSignals: [.sigterm, .sigint])
    }
}

/// The port once bound, shared between `onServerRunning` and whoever waits for it.
final class BoundPort: Sendable {
    private let port = Mutex<Int?>(nil)
    var value: Int? { port.withLock { $0 } }
    func set(_ value: Int?) { port.withLock { $0 = value } }
}

/// Builds the collector from its configuration: opens and migrates the database, enrols the
/// configured agents and rebuilds the correlation engine from stored results, open incidents and
/// agent states, all before anything listens. `serve`, the tests and the demo all call this.
///
/// `configPath` is the file `config` came from: SIGHUP re-reads it (agents, tokens, webhooks,
/// certificate; `CollectorReloader`). Without it SIGHUP re-reads the certificate alone.
public func buildCollector(config: CollectorConfig, configPath: String? = nil, logger: Logger) async throws -> BuiltCollector {
    // HTTPS or an explicit plain_http; never plain HTTP by default.
    guard config.tls != nil || config.plainHTTP else { throw ConfigError(file: "config", field: "listen", message: CollectorConfig.transportRequired) }
    // SIGHUP reloads (CollectorReloader); until that service traps it, it must not kill us.
    signal(SIGHUP, SIG_IGN)
    let credentials = try config.tls.map(TLSCredentials.init(files:))
    if let key = config.tls?.key, let mode = (try? FileManager.default.attributesOfItem(atPath: key))?[.posixPermissions] as? Int, mode & 0o077 != 0 {
        logger.warning("The TLS key is readable by others; make it owner-only (chmod 600)", metadata: ["tls.key": .string(key), "mode": .string(String(mode, radix: 8))])
    }

    let store = try openStore(config: config, logger: logger)
    try await store.migrate()
    if let postgres = store as? PostgresCollectorStore {
        logger.info("Database ready", metadata: ["db.url": .string(postgres.url.description)])
    } else {
        logger.info("Database ready", metadata: ["db.path": .string(config.databasePath), "db.sync": .string(config.databaseSync.rawValue)])
    }
    if config.databaseSync == .normal && !PostgresURL.isPostgres(config.databasePath) {
        logger.warning("database_sync: normal: a power loss can drop batches already acknowledged to agents")
    }

    for enrolment in config.agents {
        let existing = try await store.agent(id: enrolment.id)
        // A revocation made with `sonde-collector agents revoke` survives restarts with an old config.
        do {
            try await store.upsertAgent(
                AgentRecord(
                    id: enrolment.id, region: enrolment.region, publicKey: enrolment.publicKey, revoked: existing?.revoked ?? false,
                    enrolledAt: existing?.enrolledAt ?? Date(), lastSeen: existing?.lastSeen))
        } catch let error as DuplicateKeyError {
            throw ConfigError(file: "config", field: "agents", message: error.description)
        }
    }

    // Rebuild the engine's memory: the recent window of results, open incidents, agent states.
    // With PostgreSQL, every collector follows what all of them ingest and one leads (see
    // ClusterCoordinator): the window comes from where following starts.
    let metrics = CollectorMetrics()
    let window = config.correlation.sanitized.windowAge
    let postgres = store as? PostgresCollectorStore
    let follower = ClusterCoordinator.Follower(metrics: metrics)
    let engine: CorrelationEngine
    if let postgres {
        engine = try await follower.rebuild(store: postgres, config: config)
    } else {
        let recent = try await store.results(since: Date().addingTimeInterval(-window), limit: 1_000_000)
        engine = try await rebuildEngine(store: store, config: config, recent: recent)
        metrics.record(recent: recent)
        logger.info("Correlation engine rebuilt", metadata: ["results": "\(recent.count)"])
    }
    let cardinality = AgentCardinality(limits: config.limits, known: try await store.seriesNames())

    let hub = CorrelationHub(engine: engine)
    let trigger = WakeSignal()
    let boundPort = BoundPort()
    let linkBase: @Sendable () -> String = { config.linkBase(boundPort: boundPort.value) }
    let health = StorageHealth(store: store, logger: logger)
    let settings = ReloadableSettings(tokens: config.tokens, webhooks: config.webhooks)
    let outbox = WakeSignal()
    let coordinator = postgres.map { postgres in
        ClusterCoordinator(
            leadership: PostgresLeadership(store: postgres, name: config.collectorName ?? CollectorConfig.defaultCollectorName(), logger: logger),
            store: postgres, hub: hub, trigger: trigger, outbox: outbox, follower: follower, config: config, logger: logger)
    }

    let writer = IngestWriter(store: store, logger: logger)
    var ingest = IngestHandler(
        store: store, writer: writer, hub: hub, trigger: trigger, metrics: metrics, health: health, cardinality: cardinality,
        pushLimiter: RateLimiter(perMinute: config.limits.pushesPerMinute, burst: config.limits.pushBurst),
        resultLimiter: RateLimiter(
            perMinute: config.limits.resultsPerMinute, burst: max(config.limits.resultsPerMinute, Double(config.maxResultsPerBatch))),
        byteLimiter: RateLimiter(
            perMinute: config.limits.pushBytesPerMinute, burst: max(config.limits.pushBytesPerMinute, 2 * Double(config.maxBodyBytes))),
        maxBodyBytes: config.maxBodyBytes, maxResults: config.maxResultsPerBatch, allowedSkew: config.allowedClockSkew,
        retention: config.retentionDays * 86_400, logger: logger,
        bodyBudget: PushBodyBudget(limit: config.limits.maxPushBytesInFlight, perAgent: 2 * config.maxBodyBytes))
    ingest.feedsHub = coordinator == nil
    let api = CollectorAPI(
        store: store, hub: hub, metrics: metrics, settings: settings, trigger: trigger, outbox: outbox, ingest: ingest,
        health: health, testAlertLimiter: RateLimiter(perMinute: config.limits.testAlertsPerMinute, burst: config.limits.testAlertsPerMinute),
        page: config.statusPage, declaredComponents: config.components,
        publicLinkBase: { host in config.publicLinkBase(host: host) }, cluster: coordinator,
        logger: logger)
    var evaluator = Evaluator(
        hub: hub, store: store, settings: settings, metrics: metrics, interval: config.evaluationInterval, trigger: trigger, outbox: outbox, logger: logger)
    var dispatcher = WebhookDispatcher(
        store: store, settings: settings, metrics: metrics, linkBase: linkBase,
        retry: .init(
            base: config.webhookRetryBase, cap: config.webhookRetryCap, timeout: config.webhookTimeout, maxAttempts: config.webhookMaxAttempts,
            maxAge: config.webhookMaxAge),
        pollInterval: config.webhookPollInterval, outbox: outbox, logger: logger)
    if let coordinator {
        evaluator.mayWrite = { coordinator.mayStore(adoptedEpoch: $0) }
        dispatcher.mayDispatch = { coordinator.isLeader }
        logger.notice("Standing by until elected leader", metadata: ["collector": .string(coordinator.leadership.name)])
    }
    var services: [any Service] = [
        writer, evaluator, dispatcher,
        RetentionService(store: store, retention: config.retentionDays * 86400, interval: config.retentionInterval, logger: logger),
        CollectorReloader(
            path: configPath, config: config, store: store, settings: settings, outbox: outbox, credentials: credentials, metrics: metrics,
            logger: logger),
    ]
    if let coordinator { services.insert(coordinator, at: 0) }
    // Slow or stalled clients are cut off: `idle_timeout` (nothing received, including a
    // trickled header) and `request_timeout` (a whole request, body included).
    let http1 = HTTPServerBuilder.http1(
        configuration: .init(
            additionalChannelHandlers: [
                RequestReadDeadline(limit: .nanoseconds(Int64(config.requestTimeout * 1e9)), minBodyRate: config.limits.minBodyBytesPerSecond)
            ],
            idleTimeout: .nanoseconds(Int64(config.idleTimeout * 1e9))))
    let server = try credentials.map { try HTTPServerBuilder.tls(http1, tlsConfiguration: $0.serverConfiguration()) } ?? http1
    if credentials == nil {
        logger.warning(
            "Serving plain HTTP (listen.plain_http: true): tokens and results cross the network unencrypted; use it only on loopback or behind a TLS proxy",
            metadata: ["http.host": .string(config.host)])
    }
    let openFiles = ConnectionCap.raiseOpenFileLimit(logger: logger)
    let connectionLimit = config.limits.maxConnections ?? ConnectionCap.defaultLimit(openFiles: openFiles)
    if connectionLimit > openFiles - ConnectionCap.reservedFiles(openFiles: openFiles) {
        logger.warning(
            "limits.max_connections leaves too few files for the database and webhooks under the open-file limit; raise LimitNOFILE or lower it",
            metadata: ["limits.max_connections": "\(connectionLimit)", "open_file_limit": "\(openFiles)"])
    }
    let connectionCounts = ConnectionCap.Counts(limit: connectionLimit)
    metrics.connections = connectionCounts
    let application = Application(
        router: makeRouter(api: api, config: config, settings: settings, metrics: metrics, logger: logger),
        server: server,
        configuration: .init(
            address: .hostname(config.host, port: config.port), serverName: "sonde-collector",
            availableConnectionsDelegate: ConnectionCap(counts: connectionCounts, logger: logger)),
        services: services,
        onServerRunning: { channel in
            boundPort.set(channel.localAddress?.port)
            logger.info(
                "Collector listening",
                metadata: [
                    "http.host": .string(config.host), "http.port": "\(boundPort.value ?? -1)", "http.scheme": .string(credentials == nil ? "http" : "https"),
                    "tls.client_certificates": .string(config.tls?.clientCA == nil ? "not required" : "required"),
                ])
        },
        logger: logger)
    return BuiltCollector(application: application, store: store, hub: hub, metrics: metrics, trigger: trigger, boundPort: boundPort)
}

/// The store `database:` names: a PostgreSQL URL, `:memory:`, or an SQLite file.
public func openStore(config: CollectorConfig, logger: Logger) throws -> any CollectorStorage {
    if PostgresURL.isPostgres(config.databasePath) {
        do { return try PostgresCollectorStore(url: config.databasePath, logger: logger) } catch let error as StorageError {
            throw ConfigError(file: "config", field: "database", message: error.description)
        }
    }
    if config.databasePath == ":memory:" { return InMemoryCollectorStore() }
    return try SQLiteCollectorStore(path: config.databasePath, durability: config.databaseSync, logger: logger)
}

// MARK: - Routing

/// The API on Hummingbird's router. Each group carries who may call it:
///
/// | endpoint | who |
/// |---|---|
/// | `GET /healthz` | anyone (says only ok or storage_unavailable) |
/// | `POST /v1/results` | enrolled agents (Ed25519 signature, no token) |
/// | `GET /`, `/incidents/ID`, `/history.atom`, `/history.rss`, `/api/v2/*.json` (Statuspage's public v2), `/metrics` | read token, or anyone when `status_page.public` / `metrics.public` |
/// | `GET /internal`, `/internal/incidents/ID` | read |
/// | `GET /v1/status`, `/v1/results`, `/v1/incidents[/ID]`, `/v1/agents`, `/v1/alerts/dead-letters` | read |
/// | `GET /v1/batches`, `POST /v1/alerts/test`, `POST /v1/alerts/dead-letters/ID/redrive` | admin |
/// | `POST /v1/incidents`, `POST /v1/incidents/ID/updates` (author: the token's name) | admin |
func makeRouter(api: CollectorAPI, config: CollectorConfig, settings: ReloadableSettings, metrics: CollectorMetrics, logger: Logger) -> Router<BasicRequestContext> {
    typealias Handler = @Sendable (Request, BasicRequestContext) async throws -> Response
    @Sendable func query(_ request: Request) -> Query {
        var query = Query()
        for (key, value) in request.uri.queryParameters where query[String(key)] == nil { query[String(key)] = String(value) }
        return query
    }
    let read = APIAccess.Requirement.role(.read)
    let admin = APIAccess.Requirement.role(.admin)
    // The public pages: anyone with `status_page.public`, else a read token.
    let pages = config.statusPagePublic ? APIAccess.Requirement.anyone : read
    let access = APIAccess(settings: settings)
    // The author of a person's incident write: the name of the (admin) token that made it.
    @Sendable func author(_ request: Request) -> String {
        (try? access.check(request.headers[.authorization], admin).get())?.name ?? "admin"
    }
    // Shared caches (a CDN in front of a public page) may keep what anyone may read, briefly;
    // pages behind a token are for the reader's own cache only.
    @Sendable func page(_ request: Request, _ body: PageBody, shared: Bool = true) -> Response {
        body.response(to: request, cacheControl: shared && config.statusPagePublic ? "public, max-age=10" : "private, no-cache")
    }
    // A public page's machine-readable forms may be read by a widget on another site, as
    // Statuspage's API allows (`Access-Control-Allow-Origin: *`). Never for pages behind a token:
    // a browser must not hand another origin what a reader's credentials opened.
    @Sendable func feed(_ request: Request, _ body: PageBody) -> Response {
        var response = page(request, body)
        if config.statusPagePublic { response.headers[.accessControlAllowOrigin] = "*" }
        // Without `public_url` the absolute links are built from the request's Host: a shared
        // cache must keep one answer per Host, never hand a forged Host's links to everyone
        // (red team, second pass, N2).
        if config.publicURL == nil { response.headers[.vary] = "Host" }
        return response
    }
    let routes: [(who: APIAccess.Requirement, methods: [HTTPRequest.Method], path: String, handler: Handler)] = [
        (pages, [.get, .head], "/", { request, _ in page(request, try await api.statusPage(.public)) }),
        (read, [.get, .head], "/internal", { request, _ in page(request, try await api.statusPage(.operators), shared: false) }),
        (
            pages, [.get, .head], "/incidents/:id",
            { request, context in page(request, try await api.incidentPage(id: context.parameters.get("id") ?? "", audience: .public)) }
        ),
        (
            read, [.get, .head], "/internal/incidents/:id",
            { request, context in
                page(request, try await api.incidentPage(id: context.parameters.get("id") ?? "", audience: .operators), shared: false)
            }
        ),
        (pages, [.get, .head], "/history.atom", { request, _ in feed(request, try await api.incidentFeed(host: request.head.authority)) }),
        (pages, [.get, .head], "/history.rss", { request, _ in feed(request, try await api.incidentFeed(host: request.head.authority, format: .rss)) }),
        (pages, [.get, .head], "/api/v2/summary.json", { request, _ in feed(request, try await api.statuspageSummary(host: request.head.authority)) }),
        (pages, [.get, .head], "/api/v2/status.json", { request, _ in feed(request, try await api.statuspageStatus(host: request.head.authority)) }),
        (pages, [.get, .head], "/api/v2/components.json", { request, _ in feed(request, try await api.statuspagePart(.components, host: request.head.authority)) }),
        (pages, [.get, .head], "/api/v2/incidents.json", { request, _ in feed(request, try await api.statuspagePart(.incidents, host: request.head.authority)) }),
        (
            pages, [.get, .head], "/api/v2/incidents/unresolved.json",
            { request, _ in feed(request, try await api.statuspagePart(.unresolvedIncidents, host: request.head.authority)) }
        ),
        (
            pages, [.get, .head], "/api/v2/scheduled-maintenances.json",
            { request, _ in feed(request, try await api.statuspagePart(.scheduledMaintenances, host: request.head.authority)) }
        ),
        (
            pages, [.get, .head], "/api/v2/scheduled-maintenances/upcoming.json",
            { request, _ in feed(request, try await api.statuspagePart(.scheduledMaintenances, host: request.head.authority)) }
        ),
        (
            pages, [.get, .head], "/api/v2/scheduled-maintenances/active.json",
            { request, _ in feed(request, try await api.statuspagePart(.scheduledMaintenances, host: request.head.authority)) }
        ),
        (.anyone, [.get, .head], "/healthz", { _, _ in try await api.health() }),
        (
            config.metricsPublic ? .anyone : read, [.get, .head], "/metrics",
            { request, _ in
                // Anyone may scrape with `metrics.public`: without a read token the text is made at
                // most once a second, however many ask (each making reads storage).
                guard config.metricsPublic, (try? access.check(request.headers[.authorization], read).get()) == nil else {
                    return await api.prometheus()
                }
                return try await api.anonymousPrometheus()
            }
        ),
        (.anyone, [.post], "/v1/results", { request, _ in JSONResponse.make(try await api.ingest.handle(request)) }),
        (read, [.get], "/v1/results", { request, _ in try await api.results(query(request)) }),
        (read, [.get], "/v1/status", { _, _ in await api.status() }),
        (read, [.get], "/v1/incidents", { request, _ in try await api.incidents(query(request)) }),
        (read, [.get], "/v1/incidents/:id", { _, context in try await api.incident(id: context.parameters.get("id") ?? "") }),
        (read, [.get], "/v1/agents", { _, _ in try await api.agents() }),
        (read, [.get], "/v1/alerts/dead-letters", { request, _ in try await api.deadLetters(query(request)) }),
        (admin, [.get], "/v1/batches", { request, _ in try await api.batches(query(request)) }),
        (admin, [.post], "/v1/alerts/test", { _, _ in try await api.testAlert() }),
        (admin, [.post], "/v1/incidents", { request, _ in try await api.createIncident(request, author: author(request)) }),
        (
            admin, [.post], "/v1/incidents/:id/updates",
            { request, context in try await api.updateIncident(id: context.parameters.get("id") ?? "", request, author: author(request)) }
        ),
        (
            admin, [.post], "/v1/alerts/dead-letters/:event/redrive",
            { request, context in try await api.redrive(eventID: context.parameters.get("event") ?? "", target: query(request)["target"]) }
        ),
    ]
    var table = RouteTable()
    for route in routes { for method in route.methods { table.add(route.path, method) } }

    let router = Router(context: BasicRequestContext.self)
    // Outermost first: every answer is logged, every failure is a JSON error (404/405 included).
    router.add(middleware: RequestLogMiddleware(logger: logger))
    router.add(middleware: SecurityHeadersMiddleware())
    router.add(middleware: JSONErrorMiddleware(routes: table, logger: logger))
    for route in routes {
        let group = router.group().add(middleware: AuthMiddleware(access: access, requirement: route.who, metrics: metrics, logger: logger))
        for method in route.methods { group.on(RouterPath(route.path), method: method, use: route.handler) }
    }
    return router
}

// MARK: - Handlers

/// Query parameters; the first value of a repeated name wins.
typealias Query = [String: String]

/// The plain async handlers behind the routes.
public struct CollectorAPI: Sendable {
    let store: any CollectorStorage
    let hub: CorrelationHub
    let metrics: CollectorMetrics
    let settings: ReloadableSettings
    let trigger: WakeSignal
    /// Wakes the webhook dispatcher for what the API queues.
    let outbox: WakeSignal
    let ingest: IngestHandler
    let health: StorageHealth
    let testAlertLimiter: RateLimiter
    /// `status_page`: title, logo, link, show_probes.
    let page: StatusPageSettings
    /// `components`: shown ("starting") before their first result.
    let declaredComponents: [String]
    /// Base of absolute links on the public feed and summary.json, given the request's `Host`.
    let publicLinkBase: @Sendable (_ host: String?) -> String
    /// With several collectors on PostgreSQL: leadership, for /v1/status and /metrics.
    let cluster: ClusterCoordinator?
    let logger: Logger
    /// The pages' uptime history, read at most every 15 s.
    let uptimeHistory = RecentValues<[UptimeDay]>(maxAge: .seconds(15))
    /// The operators' page's last 24 hours: the hours before the previous one, read at most
    /// every 5 minutes (only late results, a spool after a downtime, still change them), and
    /// the previous and current hours, at most every 10 s (`operatorsTimeline(now:)`).
    let timelineClosedHours = RecentValues<[TimelineBucket]>(maxAge: .seconds(300), capacity: 2)
    let timelineRecentHours = RecentValues<[TimelineBucket]>(maxAge: .seconds(10), capacity: 2)
    /// What the public pages show, and the public page itself, made at most every 5 s however
    /// many anonymous readers ask (shared caches may keep them 10 s anyway).
    let publicSnapshots = RecentValues<PageSnapshot>(maxAge: .seconds(5))
    let publicPages = RecentValues<PageBody>(maxAge: .seconds(5))
    /// `/metrics` for anonymous scrapers (`metrics.public`): made at most once a second, so a
    /// flood of them cannot keep the collector rendering and reading storage; a scrape every 5 s
    /// or more reads it at most a second old. With a read token it is made for each request.
    let anonymousMetrics = RecentValues<String>(maxAge: .seconds(1), capacity: 1)

    /// For load balancers: 200 while storage takes writes, 503 when it cannot (full disk,
    /// read-only file system); the body names no path and no error detail.
    func health() async throws -> Response {
        guard await health.canWrite() else {
            throw APIError(.serviceUnavailable, "storage_unavailable", "storage cannot take writes; the collector's log says why")
        }
        return JSONResponse.make(["status": "ok"])
    }

    func status() async -> Response {
        JSONResponse.make(await statusResponse())
    }

    func statusResponse() async -> StatusResponse {
        var verdicts = await hub.verdicts
        let health = await hub.agentHealth
        var incidents = await hub.openIncidents
        // With several collectors the stored incidents are the leader's: a standby's engine
        // evaluates for its verdicts only, so its own incident list is not the truth, and it is
        // not shown instead when the database cannot be read (its ids name no stored incident:
        // found by the HA review, F3): none, and why, while the rest (verdicts, its role) stands.
        var unavailable: String?
        if cluster != nil {
            do {
                incidents = try await store.incidents(.open, limit: 1_000).compactMap { try? SondeJSON.decoder().decode(Incident.self, from: $0.json) }
            } catch {
                incidents = []
                unavailable = "this collector cannot read the database now; ask another, or retry shortly"
            }
        }
        // A declared component nothing has reported yet is unknown, not missing: a fleet whose
        // agents never got through must not read as all well (found by the CLI walk-through, F5).
        let now = Date()
        let reported = Set(verdicts.map(\.component))
        for name in declaredComponents where !reported.contains(name) {
            verdicts.append(ComponentVerdict(component: name, status: .unknown, since: now, updatedAt: now, known: true))
        }
        verdicts.sort { $0.component < $1.component }
        let states = health.map(\.state)
        return StatusResponse(
            generatedAt: now, overall: verdicts.filter(\.known).map(\.status).max() ?? .unknown, components: verdicts,
            agents: AgentsSummary(
                total: health.count, ok: states.filter { $0 == .ok }.count, localFault: states.filter { $0 == .localFault }.count,
                silent: states.filter { $0 == .silent }.count, revoked: states.filter { $0 == .revoked }.count,
                localFaultAgents: health.filter { $0.state == .localFault }.map(\.agent), silentAgents: health.filter { $0.state == .silent }.map(\.agent)),
            openIncidents: incidents.sorted { $0.openedAt > $1.openedAt }, cluster: cluster?.view, openIncidentsUnavailable: unavailable)
    }

    func incidents(_ query: Query) async throws -> Response {
        let filter: IncidentFilter
        if let raw = query["status"] {
            guard let parsed = IncidentFilter(rawValue: String(raw)) else { throw APIError.badQuery("status: expected open, resolved or all, got \"\(raw)\"") }
            filter = parsed
        } else {
            filter = .all
        }
        let limit = try Self.limit(query, default: 100)
        let decoder = SondeJSON.decoder()
        let records = try await store.incidents(filter, limit: limit)
        return JSONResponse.make(IncidentsResponse(incidents: records.compactMap { try? decoder.decode(Incident.self, from: $0.json) }))
    }

    func incident(id: String) async throws -> Response {
        guard let record = try await store.incident(id: id) else { throw APIError.notFound("no incident \"\(id)\"") }
        return JSONResponse.bytes(record.json, contentType: "application/json")
    }

    func results(_ query: Query) async throws -> Response {
        var filter = ResultQuery(limit: try Self.limit(query, default: 100))
        func text(_ key: String) -> String? { query[key].flatMap { $0.isEmpty ? nil : $0 } }
        filter.probe = text("probe")
        filter.component = text("component")
        filter.agent = text("agent")
        filter.region = text("region")
        if let raw = text("outcome") {
            guard let outcome = Outcome(rawValue: raw) else { throw APIError.badQuery("outcome: expected ok, degraded or failed, got \"\(raw)\"") }
            filter.outcome = outcome
        }
        filter.since = try text("since").map { try Self.time($0, field: "since") }
        filter.until = try text("until").map { try Self.time($0, field: "until") }
        if let raw = text("cursor") {
            guard let cursor = ResultCursor(raw) else { throw APIError.badQuery("cursor: not a next_cursor this API returned") }
            filter.cursor = cursor
        }
        // Read at most `resultsPerRead` at a time and stop at `resultPageBytes` of stored JSON: a
        // result may be up to 256 KiB, so a page of 1000 could otherwise hold 256 MB (red team).
        let limit = filter.limit
        var results: [ProbeResult] = []
        var bytes = 0
        var next: ResultCursor?
        reading: repeat {
            filter.limit = min(limit - results.count, Self.resultsPerRead)
            let page = try await store.results(filter)
            for (index, result) in page.results.enumerated() {
                results.append(result)
                bytes += index < page.sizes.count ? page.sizes[index] : 0
                if bytes >= Self.resultPageBytes, index < page.results.count - 1 || page.nextCursor != nil {
                    next = ResultCursor(after: result)
                    break reading
                }
            }
            next = page.nextCursor
            filter.cursor = next
        } while next != nil && results.count < limit && bytes < Self.resultPageBytes
        return JSONResponse.make(ResultsResponse(results: results, nextCursor: next?.text))
    }

    /// Stored JSON bytes past which a `/v1/results` page ends early (its `next_cursor` goes on).
    static let resultPageBytes = 32 << 20
    /// Results read from the store at once while a page is made (at most 25.6 MB of them).
    static let resultsPerRead = 100

    func agents() async throws -> Response {
        let records = try await store.agents()
        let health = Dictionary(await hub.agentHealth.map { ($0.agent, $0) }, uniquingKeysWith: { $1 })
        let views = records.map { record in
            let state = health[record.id]
            return AgentView(
                id: record.id, region: record.region, publicKey: record.publicKey, revoked: record.revoked, enrolledAt: record.enrolledAt,
                lastSeen: record.lastSeen, state: record.revoked ? .revoked : state?.state, stateSince: state?.since, reason: state?.reason)
        }
        return JSONResponse.make(AgentsResponse(agents: views))
    }

    /// Body bytes past which a `/v1/batches` page ends early (its `next_cursor` goes on).
    static let batchPageBytes = 32 << 20
    /// Batches read from the store at once while a page is made.
    static let batchesPerRead = 8

    func batches(_ query: Query) async throws -> Response {
        let limit = try Self.limit(query, default: 100)
        let since = try query["since"].map { try Self.time(String($0), field: "since") }
        var after: ResultCursor?
        if let raw = query["cursor"] {
            guard let cursor = ResultCursor(String(raw)) else { throw APIError.badQuery("cursor: not a next_cursor this API returned") }
            after = cursor
        }
        // Read a few at a time and stop at `batchPageBytes` of bodies: a batch may be up to
        // max_body_bytes, so a page of 1000 could otherwise hold gigabytes (red team, fourth pass).
        var page: [BatchRecord] = []
        var bytes = 0
        var more = false
        reading: while page.count < limit {
            let want = min(limit - page.count, Self.batchesPerRead)
            let records = try await store.batches(since: since, after: after, limit: want + 1)
            for record in records.prefix(want) {
                page.append(record)
                bytes += record.body.count
                if bytes >= Self.batchPageBytes {
                    more = true
                    break reading
                }
            }
            more = records.count > want
            guard more, let last = page.last else { break }
            after = ResultCursor(startedAtMs: last.receivedAt.epochMs, id: last.batchID)
        }
        let next = more ? page.last.map { ResultCursor(startedAtMs: $0.receivedAt.epochMs, id: $0.batchID).text } : nil
        return JSONResponse.make(
            BatchesResponse(
                batches: page.map {
                    BatchView(batchID: $0.batchID, agent: $0.agent, receivedAt: $0.receivedAt, body: $0.body.base64EncodedString(), signature: $0.signature)
                },
                nextCursor: next))
    }

    func testAlert() async throws -> Response {
        // One shared bucket: test alerts reach every target, so they must not crowd out real ones.
        if let wait = testAlertLimiter.take("alert.test") {
            metrics.refused(.api, reason: "rate_limited")
            throw RateLimiter.tooMany("rate_limited", "too many test alerts (limits.test_alerts_per_minute)", retryAfter: wait)
        }
        let now = Date()
        let id = "alert.test.\(now.epochMs).\(UInt32.random(in: 0...UInt32.max))"
        let event = AlertEvent(id: id, type: .test, occurredAt: now, summary: "Test alert from sonde-collector: webhooks reach this target")
        let payload = try SondeJSON.encode(event)
        let targets = settings.webhooks
        let queued = EvaluationCommit(
            events: [OutboxEvent(id: id, type: AlertEventType.test.rawValue, occurredAt: now, payload: payload)],
            deliveries: targets.map { DeliveryKey(eventID: id, target: $0.name) })
        // Any collector may queue a test alert (behind a load balancer it may not be the leader).
        if let postgres = store as? PostgresCollectorStore { try await postgres.queueUnfenced(queued) } else { try await store.commit(queued) }
        outbox.fire()
        logger.info("Test alert queued", metadata: ["event.id": .string(id), "targets": "\(targets.count)"])
        return JSONResponse.make(AlertTestResponse(eventID: id, targets: targets.map(\.name)), status: .accepted)
    }

    func deadLetters(_ query: Query) async throws -> Response {
        let letters = try await store.deadLetters(limit: try Self.limit(query, default: 100))
        return JSONResponse.make(DeadLettersResponse(deadLetters: letters))
    }

    func redrive(eventID: String, target: String?) async throws -> Response {
        try await refuseStaleTrigger(eventID: eventID, target: target)
        let targets = try await store.redrive(eventID: eventID, target: target)
        guard !targets.isEmpty else {
            throw APIError.notFound("no dead letter for event \"\(eventID)\"\(target.map { " and target \"\($0)\"" } ?? ""); `sonde alert dead-letters` lists them")
        }
        outbox.fire()
        logger.notice("Dead letters re-driven", metadata: ["event.id": .string(eventID), "targets": .string(targets.joined(separator: ","))])
        return JSONResponse.make(RedriveResponse(eventID: eventID, targets: targets))
    }

    /// PagerDuty and Alertmanager keep one alert per incident: a redriven `incident.opened` or
    /// `incident.updated` of an incident resolved since would open a page that nothing resolves.
    /// Refused for those targets; other formats (a chat message, a JSON log) take it.
    /// (An event's id is its incident's id and a sequence number.)
    func refuseStaleTrigger(eventID: String, target: String?) async throws {
        guard let dot = eventID.lastIndex(of: "."), let incident = try await store.incident(id: String(eventID[..<dot])), incident.resolvedAt != nil else {
            return
        }
        let stateful = Set(settings.webhooks.filter { $0.format == .pagerduty || $0.format == .alertmanager }.map(\.name))
        let stale = try await store.deadLetters(limit: 10_000).filter {
            $0.eventID == eventID && ["incident.opened", "incident.updated"].contains($0.eventType) && stateful.contains($0.target)
                && (target == nil || $0.target == target)
        }
        guard let first = stale.first else { return }
        throw APIError(
            .conflict, "incident_resolved",
            "incident \(incident.id) is resolved; re-sending its \(first.eventType) to \(stale.map(\.target).joined(separator: ", ")) (pagerduty/alertmanager) "
                + "would open a page for an outage that is over, and nothing would resolve it. Redrive other targets with ?target=NAME, or leave it.")
    }

    func anonymousPrometheus() async throws -> Response {
        let api = self
        let text = try await anonymousMetrics.value("/metrics") { await api.prometheusText() }
        return JSONResponse.text(text, contentType: "text/plain; version=0.0.4; charset=utf-8")
    }

    func prometheus() async -> Response {
        JSONResponse.text(await prometheusText(), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }

    func prometheusText() async -> String {
        MetricsRenderer.render(
            runs: metrics.latestRuns(now: Date()), agents: await hub.agentHealth, agentsAt: await hub.latestAt, counters: metrics.snapshot, verdicts: await hub.verdicts,
            openIncidents: await hub.openIncidents.count,
            deadLetters: (try? await store.deadLetterCount()) ?? 0, pushBytesInFlight: ingest.bodyBudget.inUse, connections: metrics.connections)
            + (cluster.map { Self.clusterMetrics($0.view) } ?? "")
    }

    /// Which collector leads, in Prometheus text (alert on `sum(sonde_collector_leader) != 1`).
    static func clusterMetrics(_ view: ClusterView) -> String {
        var out = PrometheusText()
        let labels = [("collector", view.collector)]
        out.declare("sonde_collector_leader", type: "gauge", help: "1 when this collector leads (evaluates and sends webhooks), 0 on standby.")
        out.sample("sonde_collector_leader", labels, view.role == "leader" ? 1 : 0)
        out.declare("sonde_collector_leader_epoch", type: "gauge", help: "The fencing epoch of the current leadership as this collector last saw it.")
        out.sample("sonde_collector_leader_epoch", labels, Double(view.epoch))
        return out.text
    }

    func statusPage(_ audience: StatusPage.Audience) async throws -> PageBody {
        guard audience == .public else { return PageBody(html: StatusPage.render(try await pageSnapshot(audience: audience), audience: audience)) }
        let api = self
        return try await publicPages.value("/") { PageBody(html: StatusPage.render(try await api.publicSnapshot(), audience: .public)) }
    }

    /// The public pages' snapshot (one making per 5 s, see `publicSnapshots`).
    func publicSnapshot() async throws -> PageSnapshot {
        let api = self
        return try await publicSnapshots.value("public") { try await api.pageSnapshot(audience: .public) }
    }

    func incidentPage(id raw: String, audience: StatusPage.Audience) async throws -> PageBody {
        let id = raw.removingPercentEncoding ?? raw
        guard let record = try await store.incident(id: id), let incident = try? SondeJSON.decoder().decode(PageIncident.self, from: record.json) else {
            throw APIError.notFound("no incident \"\(id)\"")
        }
        let page = audience == .public ? try await publicSnapshot() : try await pageSnapshot(audience: audience)
        return PageBody(html: StatusPage.renderIncident(incident, page: page, audience: audience))
    }

    func incidentFeed(host: String?, format: IncidentFeed.Format = .atom) async throws -> PageBody {
        let xml = IncidentFeed.render(try await publicSnapshot(), base: publicLinkBase(host), format: format)
        return PageBody(data: Data(xml.utf8), contentType: format == .atom ? "application/atom+xml; charset=utf-8" : "application/rss+xml; charset=utf-8")
    }

    func statuspageSummary(host: String?) async throws -> PageBody {
        PageBody(json: StatuspageSummary(try await publicSnapshot(), base: publicLinkBase(host)))
    }

    func statuspagePart(_ part: StatuspageSummary.Part, host: String?) async throws -> PageBody {
        PageBody(json: StatuspageSummary(try await publicSnapshot(), base: publicLinkBase(host), history: part == .incidents).part(part))
    }

    func statuspageStatus(host: String?) async throws -> PageBody {
        PageBody(json: StatuspageStatus(StatuspageSummary(try await publicSnapshot(), base: publicLinkBase(host))))
    }

    // MARK: Query helpers

    static func limit(_ query: Query, default value: Int) throws(APIError) -> Int {
        guard let raw = query["limit"] else { return value }
        guard let limit = Int(raw), (1...1000).contains(limit) else { throw APIError.badQuery("limit: expected 1...1000, got \"\(raw)\"") }
        return limit
    }

    /// The longest duration back from now a query may name (100 years): a larger or non-finite
    /// number would trap when converted to the store's integer milliseconds (`since=1e300`).
    static let longestQueryDuration: TimeInterval = 100 * 365 * 86_400

    /// An RFC 3339 time, or a duration back from now (`10m`, `2h`, `1d`, `30s`).
    static func time(_ text: String, field: String) throws(APIError) -> Date {
        if let date = RFC3339.date(from: text) { return date }
        if let seconds = ConfigDuration.parse(text) {
            guard seconds.isFinite, seconds >= 0, seconds <= longestQueryDuration else {
                throw APIError.badQuery("\(field): \"\(text)\" is out of range; a duration back from now is 0 to 36500d")
            }
            return Date().addingTimeInterval(-seconds)
        }
        throw APIError.badQuery("\(field): expected an RFC 3339 time (2026-01-02T03:04:05Z) or a duration back from now (10m, 2h), got \"\(text)\"")
    }
}
