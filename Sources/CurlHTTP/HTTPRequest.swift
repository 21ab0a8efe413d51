import FoundationEssentials
import SondeCore

/// One HTTP request as CurlHTTP sends it. Everything is a value so a request can be built on one
/// task and performed on a worker thread.
public struct HTTPRequest: Sendable {
    public var method: String
    public var url: String
    /// Header name/value pairs in order; duplicates are sent as given.
    public var headers: [HTTPHeader]
    public var body: Data?
    /// Whole-exchange time-out (connect + TLS + wait + transfer). curl enforces it even when the
    /// server accepts the connection and never answers.
    public var timeout: Duration
    /// Time-out for the TCP connect alone; nil lets `timeout` cover it.
    public var connectTimeout: Duration?
    /// Follow 301/302/303/307/308 answers, hop by hop (at most `maxRedirects`), to http and
    /// https URLs only. `timeout` covers all hops together.
    public var followRedirects: Bool
    public var maxRedirects: Int
    /// Which of `headers` a redirect to another origin (scheme, host or port) still carries.
    public var redirectHeaders: RedirectHeaders
    /// Verify the server's certificate and host name (on by default; off only for lab targets).
    public var verifyTLS: Bool
    /// A PEM file of CA certificates to trust instead of the system's.
    public var caFile: String?
    /// PEM files of a client certificate and its key, for servers that require mutual TLS.
    public var clientCertificate: (cert: String, key: String)?
    /// `http://host:port` proxy; nil uses curl's defaults (which honour `http_proxy`).
    public var proxy: String?
    /// Responses larger than this fail with `responseTooLarge` instead of filling memory (or
    /// taking forever when the body is discarded).
    public var maxResponseBytes: Int
    /// Keep the whole body in `HTTPResponse.body`; when false only its first `bodyPrefixBytes`
    /// are kept (for messages) and the rest is dropped as it arrives.
    public var keepBody: Bool
    public var bodyPrefixBytes: Int
    /// Hash the whole body as it streams (`HTTPResponse.bodySHA256`), kept or not.
    public var hashBody: Bool
    /// Resolve and connect over this IP version only; nil lets curl use either (happy eyeballs).
    public var ipVersion: IPVersion?
    /// Connect to this address instead of the URL's host (whose name still goes in SNI, the
    /// certificate check and Host): one backend of a pool, checked under the pool's name.
    /// Only the URL's own origin is redirected; a redirect to another host goes where DNS says.
    public var connectTo: ConnectTarget?
    /// The run's cookie jar: cookies set by earlier responses go out, new ones are kept.
    public var cookieJar: CurlCookieJar?
    /// Keep the connection open after the exchange, and send over one left open by an earlier
    /// request of the same client to the same server with the same TLS settings (no new TCP or
    /// TLS handshake). For the agent's pushes to its collector; probes leave it off, since they
    /// measure DNS, connect and TLS every time.
    public var reuseConnection = false
    /// The innermost kind of address this request may connect to (nil: any). Set on redirect
    /// hops to the kind the chain started at: a server may not send the agent further inside the
    /// network than it was asked to go (`AddressKind`).
    public var innermostAddress: AddressKind?

    public init(
        method: String = "GET", url: String, headers: [HTTPHeader] = [], body: Data? = nil,
        timeout: Duration = .seconds(30), connectTimeout: Duration? = nil, followRedirects: Bool = false,
        verifyTLS: Bool = true, caFile: String? = nil, proxy: String? = nil, maxResponseBytes: Int = 64 << 20,
        keepBody: Bool = true, bodyPrefixBytes: Int = 4096, hashBody: Bool = false,
        maxRedirects: Int = 10, redirectHeaders: RedirectHeaders = .sameOriginOnly
    ) {
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body
        self.timeout = timeout
        self.connectTimeout = connectTimeout
        self.followRedirects = followRedirects
        self.verifyTLS = verifyTLS
        self.caFile = caFile
        self.proxy = proxy
        self.maxResponseBytes = maxResponseBytes
        self.keepBody = keepBody
        self.bodyPrefixBytes = bodyPrefixBytes
        self.hashBody = hashBody
        self.maxRedirects = maxRedirects
        self.redirectHeaders = redirectHeaders
    }

    /// The schemes CurlHTTP speaks; libcurl is told to refuse every other one, for requests and
    /// for redirects alike (no file://, gopher://, ftp://, dict://, … from a templated URL).
    public static let allowedSchemes = ["http", "https"]
}

/// What happens to a request's own headers when a redirect leads to another origin.
public enum RedirectHeaders: Sendable, Hashable {
    /// Only headers that carry no credentials (User-Agent, Accept*, Content-Type) go along, as
    /// libcurl does for Authorization and Cookie, but for every header a script set
    /// (`x-api-key` included). Back on the first origin, all of them are sent again.
    case sameOriginOnly
    /// Every header goes to every hop (the step opted in).
    case all
}

public enum IPVersion: Int, Sendable, Hashable {
    case v4 = 4
    case v6 = 6
}

public struct HTTPHeader: Sendable, Hashable {
    public var name: String
    public var value: String
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

extension HTTPHeader {
    func isNamed(_ other: String) -> Bool {
        name.utf8.elementsEqual(other.utf8) { a, b in
            a == b || (a | 0x20 == b | 0x20 && (a | 0x20) >= 0x61 && (a | 0x20) <= 0x7A)
        }
    }
}

extension Array where Element == HTTPHeader {
    /// The first value of a header, by case-insensitive name. Header names are ASCII tokens
    /// (RFC 9110), so ASCII case folding is the whole rule; Foundation's `caseInsensitiveCompare`
    /// was a few per cent of the agent's CPU, called several times per probe run.
    public func value(for name: String) -> String? {
        first { $0.isNamed(name) }?.value
    }

    /// Every value of a header that may repeat (`Set-Cookie`), in order.
    public func values(for name: String) -> [String] {
        filter { $0.isNamed(name) }.map(\.value)
    }
}

/// Where `connect_to` sends a connection: a host name or IP literal, and a port or none (the
/// URL's port).
public struct ConnectTarget: Sendable, Hashable {
    public var host: String
    public var port: Int?

    /// `10.0.0.5`, `10.0.0.5:8443`, `backend-3.internal`, `[2001:db8::1]:443`, `2001:db8::1`.
    public init?(_ text: String) {
        let text = text.trimmed()
        var host = text[...]
        var port: Int?
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { return nil }
            host = text[text.index(after: text.startIndex)..<close]
            let rest = text[text.index(after: close)...]
            if !rest.isEmpty {
                guard rest.hasPrefix(":"), let value = Int(rest.dropFirst()) else { return nil }
                port = value
            }
            guard host.contains(":") else { return nil }
        } else if text.filter({ $0 == ":" }).count == 1, let colon = text.firstIndex(of: ":") {
            guard let value = Int(text[text.index(after: colon)...]) else { return nil }
            host = text[..<colon]
            port = value
        }
        if let port, !(1...65535).contains(port) { return nil }
        let allowed = host.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || ".-:_".contains($0)) }
        guard !host.isEmpty, allowed else { return nil }
        self.host = String(host)
        self.port = port
    }

    /// libcurl's CONNECT_TO entry for requests to `origin`: `HOST:PORT:TO-HOST:TO-PORT`.
    func curlEntry(host originHost: String, port originPort: String) -> String {
        let bracketed = host.contains(":") ? "[\(host)]" : host
        return "\(originHost):\(originPort):\(bracketed):\(port.map(String.init) ?? originPort)"
    }
}
