#if canImport(Glibc)
import Glibc
#endif

/// The proxy variables of the environment, read once per client with libcurl's own rules, and
/// handed to every transfer as explicit options. Left to itself, libcurl looks them up on every
/// transfer (`no_proxy`, `NO_PROXY`, `http_proxy`, `all_proxy`, `ALL_PROXY`: five scans of the
/// environment), which showed in an agent's profile at 10 probes/s.
///
/// libcurl's rules (`lib/url.c`, `detect_proxy`): for http, `http_proxy` in lower case only (a
/// CGI program's `HTTP_PROXY` may come from a request header); for https, `https_proxy`, then
/// `HTTPS_PROXY`; for both, then `all_proxy`, then `ALL_PROXY`. The hosts that skip the proxy
/// come from `no_proxy`, then `NO_PROXY`. An empty value counts as unset.
public struct ProxyEnvironment: Sendable, Equatable {
    public var http: String?
    public var https: String?
    public var noProxy: String?

    public init(http: String? = nil, https: String? = nil, noProxy: String? = nil) {
        self.http = http
        self.https = https
        self.noProxy = noProxy
    }

    /// From `lookup(name)`, the way libcurl would read the environment.
    public init(lookup: (String) -> String?) {
        func first(_ names: String...) -> String? {
            for name in names {
                if let value = lookup(name), !value.isEmpty { return value }
            }
            return nil
        }
        let all = first("all_proxy", "ALL_PROXY")
        self.init(http: first("http_proxy") ?? all, https: first("https_proxy", "HTTPS_PROXY") ?? all, noProxy: first("no_proxy", "NO_PROXY"))
    }

    /// This process's environment, now.
    public static func current() -> ProxyEnvironment {
        ProxyEnvironment { name in getenv(name).map { String(cString: $0) } }
    }

    /// The proxy for a request to `url` when the request names none; nil for none.
    func proxy(for url: String) -> String? {
        RedirectHops.scheme(of: url) == "https" ? https : http
    }
}
