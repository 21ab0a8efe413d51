import CCurl
import FoundationEssentials

/// One probe run's cookies, kept by libcurl's own cookie engine (RFC 6265 domain, path, expiry,
/// `Secure` and, where libcurl has libpsl, public suffixes) in a curl share handle that every
/// request of the run attaches to. A browser-grade jar for a few hundred bytes, and no second
/// cookie implementation to keep right.
///
/// A run's requests are sequential: the share handle is used by one transfer at a time, so it
/// needs no lock callbacks. That is why this is `@unchecked Sendable`; do not attach one jar to
/// concurrent requests.
public final class CurlCookieJar: @unchecked Sendable {
    let share: UnsafeMutableRawPointer

    /// Nil when libcurl cannot make a share handle (out of memory).
    public init?() {
        _ = curlGlobalInit
        guard let share = curl_share_init() else { return nil }
        guard sonde_curl_share_setopt_long(share, CURLSHOPT_SHARE, Int(CURL_LOCK_DATA_COOKIE.rawValue)) == CURLSHE_OK else {
            curl_share_cleanup(share)
            return nil
        }
        self.share = share
    }

    deinit { curl_share_cleanup(share) }
}

/// A cookie as the jar holds it after a response.
public struct HTTPCookie: Sendable, Hashable {
    public var name: String
    public var value: String
    public var domain: String
    public var path: String

    public init(name: String, value: String, domain: String, path: String) {
        self.name = name
        self.value = value
        self.domain = domain
        self.path = path
    }

    /// Cookies from `CURLINFO_COOKIELIST` lines (Netscape format: domain, tail-match flag,
    /// path, secure, expiry, name, value, tab-separated; `#HttpOnly_` may prefix the domain).
    static func parse(netscapeLines lines: [String]) -> [HTTPCookie] {
        lines.compactMap { line in
            let fields = line.split(separator: "\t", omittingEmptySubsequences: false)
            guard fields.count >= 7 else { return nil }
            var domain = String(fields[0])
            if domain.hasPrefix("#HttpOnly_") { domain.removeFirst("#HttpOnly_".count) }
            return HTTPCookie(name: String(fields[5]), value: fields[6...].joined(separator: "\t"), domain: domain, path: String(fields[2]))
        }
    }
}
