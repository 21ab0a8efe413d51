import SondeCore
import CollectorStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import Synchronization

/// Bearer-token authentication for the API. Tokens are configured as the hex SHA-256 of the
/// secret; a presented token is hashed and compared with every configured digest in constant
/// time (no early exit, so timing says nothing about which bytes or which token matched).
struct APIAccess: Sendable {
    /// The tokens in force: SIGHUP may replace them, and each request reads them anew.
    let settings: ReloadableSettings

    init(settings: ReloadableSettings) { self.settings = settings }

    /// Who may call an endpoint.
    enum Requirement: Sendable, CustomStringConvertible {
        /// No token needed (`/healthz`; the status page and `/metrics` when configured public).
        case anyone
        case role(APIToken.Role)

        var description: String {
            switch self {
            case .anyone: "public"
            case .role(let role): role.rawValue
            }
        }
    }

    /// The token in an `Authorization: Bearer …` header, or a refusal (401 no or unknown token,
    /// 403 a token whose role is too low).
    func check(_ authorization: String?, _ requirement: Requirement) -> Result<APIToken?, APIError> {
        guard case .role(let needed) = requirement else { return .success(nil) }
        guard let authorization, !authorization.isEmpty else {
            return .failure(Self.unauthorized("missing_token", "this endpoint needs \(needed == .admin ? "an" : "a") \(needed.rawValue) token: send `Authorization: Bearer <token>`"))
        }
        let parts = authorization.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else {
            return .failure(Self.unauthorized("bad_token", "the Authorization header must be `Bearer <token>`"))
        }
        guard let token = match(String(parts[1]).trimmingCharacters(in: .whitespaces)) else {
            return .failure(Self.unauthorized("bad_token", "the token is not one this collector knows"))
        }
        guard token.role >= needed else {
            return .failure(APIError(.forbidden, "forbidden_role", "token \"\(token.name)\" has role \(token.role.rawValue); this endpoint needs \(needed.rawValue)"))
        }
        return .success(token)
    }

    /// The configured token whose digest equals SHA-256(`presented`).
    func match(_ presented: String) -> APIToken? {
        let digest = SHA256Digest.hash(Data(presented.utf8))
        var found: APIToken?
        for token in settings.tokens {
            if ConstantTime.equal(token.sha256, digest) { found = token }
        }
        return found
    }

    static func unauthorized(_ code: String, _ message: String) -> APIError {
        var error = APIError(.unauthorized, code, message)
        error.headers[.wwwAuthenticate] = "Bearer realm=\"sonde\""
        return error
    }
}

/// A token bucket per key: `rate` per second sustained, `burst` at once. Keys are enrolled agent
/// ids or fixed names, never free text from a request, so the table stays bounded.
final class RateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }
    private let rate: Double
    private let burst: Double
    private let buckets = Mutex<[String: Bucket]>([:])

    init(perMinute: Double, burst: Double) {
        rate = perMinute / 60
        self.burst = max(1, burst)
    }

    /// Takes `count` tokens for `key` (at most the burst); nil when allowed, else the seconds
    /// until that many are available.
    func take(_ key: String, count: Double = 1) -> TimeInterval? {
        let now = ContinuousClock.now
        let count = min(count, burst)
        return buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            let elapsed = bucket.updated.duration(to: now)
            bucket.tokens = min(burst, bucket.tokens + rate * elapsed.seconds)
            bucket.updated = now
            defer { buckets[key] = bucket }
            if bucket.tokens >= count {
                bucket.tokens -= count
                return nil
            }
            return (count - bucket.tokens) / rate
        }
    }

    /// A 429 answer with `Retry-After` in whole seconds (at least 1).
    static func tooMany(_ code: String, _ message: String, retryAfter: TimeInterval) -> APIError {
        let seconds = max(1, Int(retryAfter.rounded(.up)))
        var error = APIError(.tooManyRequests, code, "\(message); retry in \(seconds) s")
        error.headers[.retryAfter] = "\(seconds)"
        return error
    }
}

// MARK: - Middleware

/// Refuses a request without a token of the required role before it reaches the handler, and
/// counts the refusal.
struct AuthMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let access: APIAccess
    let requirement: APIAccess.Requirement
    let metrics: CollectorMetrics
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        switch access.check(request.headers[.authorization], requirement) {
        case .failure(let error):
            metrics.refused(.api, reason: error.code)
            logger.notice("API request refused", metadata: ["http.path": .string(APIError.loggedPath(request.uri.path)), "error.code": .string(error.code)])
            return error.response
        case .success(let token):
            if let token { logger.trace("API token accepted", metadata: ["token.name": .string(token.name)]) }
            return try await next(request, context)
        }
    }
}

/// One log line per request: method, path (never the query: it can carry ids and times only,
/// but the line stays short), status and duration. Successes at debug, refusals and errors at info.
struct RequestLogMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        let start = ContinuousClock.now
        let response = try await next(request, context)
        let elapsed = start.duration(to: .now)
        let ms = elapsed.milliseconds
        logger.log(
            level: response.status.code < 400 ? .debug : .info, "HTTP request",
            metadata: [
                "http.method": .string(request.method.rawValue), "http.path": .string(APIError.loggedPath(request.uri.path)), "http.status": "\(response.status.code)",
                "http.duration_ms": .string(String(format: "%.1f", ms)),
            ])
        return response
    }
}

/// Headers every answer carries, as a browser-facing service should (integrations review, 33rd
/// session, F7): no content sniffing; pages behind a token are never framed by another site (a
/// click-jacking page over `/internal`) nor sent with a referrer; an error is never cached.
/// The public pages stay frameable: embedding a status page is what Statuspage users do.
struct SecurityHeadersMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    static let frameOptions = HTTPField.Name("X-Frame-Options")!
    static let referrerPolicy = HTTPField.Name("Referrer-Policy")!

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        var response = try await next(request, context)
        response.headers[.xContentTypeOptions] = "nosniff"
        let path = request.uri.path
        if path == "/internal" || path.hasPrefix("/internal/") {
            response.headers[Self.frameOptions] = "DENY"
            response.headers[.contentSecurityPolicy] = "frame-ancestors 'none'"
            response.headers[Self.referrerPolicy] = "no-referrer"
        }
        if response.status.code >= 400 { response.headers[.cacheControl] = "no-store" }
        return response
    }
}

/// Every failure as a JSON error body: APIErrors as they are, the router's "no route" as 404, or
/// 405 with `Allow` when the path exists with other methods, anything else as 500 (logged).
struct JSONErrorMiddleware: RouterMiddleware {
    typealias Context = BasicRequestContext
    let routes: RouteTable
    let logger: Logger

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        do {
            return try await next(request, context)
        } catch let error as APIError {
            return error.response
        } catch let error as HTTPError where error.status == .notFound {
            let path = request.uri.path
            if let allowed = routes.methods(for: path), !allowed.contains(request.method) {
                var refusal = APIError(
                    .methodNotAllowed, "method_not_allowed",
                    "\(request.method.rawValue) is not allowed here; use \(allowed.map(\.rawValue).joined(separator: " or "))")
                refusal.headers[.allow] = allowed.map(\.rawValue).joined(separator: ", ")
                return refusal.response
            }
            return APIError.notFound("no route for \(request.method.rawValue) \(path); see docs/collector.md for the API").response
        } catch let error as any HTTPResponseError {
            return APIError(error.status, "http_error", "\(error.status.reasonPhrase)").response
        } catch let error as StorageError {
            // The database is down, stalled or refusing: say so as /healthz and ingest do, with
            // when to retry, and log the store's own words (HA review, F2: a generic 500).
            logger.error("Storage cannot answer a request", metadata: ["http.path": .string(APIError.loggedPath(request.uri.path)), "error": "\(error)"])
            var refusal = APIError(.serviceUnavailable, "storage_unavailable", "the collector's storage cannot answer now; retry shortly")
            refusal.headers[.retryAfter] = "5"
            return refusal.response
        } catch {
            logger.error("Request failed", metadata: ["http.path": .string(APIError.loggedPath(request.uri.path)), "error": "\(error)"])
            return APIError(.internalServerError, "internal", "the collector failed to answer; see its log").response
        }
    }
}

/// The API's paths and their methods, for 405 answers (`:name` matches one segment).
struct RouteTable: Sendable {
    private(set) var entries: [(pattern: [String], methods: [HTTPRequest.Method])] = []

    mutating func add(_ path: String, _ method: HTTPRequest.Method) {
        let pattern = path.split(separator: "/").map(String.init)
        if let index = entries.firstIndex(where: { $0.pattern == pattern }) {
            if !entries[index].methods.contains(method) { entries[index].methods.append(method) }
        } else {
            entries.append((pattern, [method]))
        }
    }

    func methods(for path: String) -> [HTTPRequest.Method]? {
        let segments = path.split(separator: "/").map(String.init)
        return entries.first { entry in
            entry.pattern.count == segments.count && zip(entry.pattern, segments).allSatisfy { $0.hasPrefix(":") || $0 == $1 }
        }?.methods
    }
}
