import CCurl
import FoundationEssentials
import SondeCore

/// Follows a request's redirects one hop at a time, so that each hop is checked before it is
/// sent: http and https only, at most `maxRedirects`, all within the request's `timeout`, and the
/// request's own headers go to another origin only when it opted in (`RedirectHeaders.all`).
/// libcurl's FOLLOWLOCATION strips only Authorization and Cookie on a cross-host redirect; a
/// script's `x-api-key` would follow anywhere.
struct RedirectHops {
    private let original: HTTPRequest
    private let origin: Origin?
    private let deadline: ContinuousClock.Instant
    /// The request of the hop being sent.
    var current: HTTPRequest
    private var count = 0
    private var timings = PhaseTimings.zero
    /// The earliest-expiring verified certificate over the hops so far: an apex that redirects
    /// to `www` must not hide its own certificate's expiry behind the last hop's.
    private var certificate: (notAfter: Date, subject: String?)?

    /// Headers that carry no credentials: they go with a cross-origin hop.
    private static let harmlessHeaders: Set<String> = ["user-agent", "accept", "accept-language", "accept-encoding", "content-type"]

    init(_ request: HTTPRequest) {
        original = request
        origin = Origin(request.url)
        deadline = ContinuousClock.now.advanced(by: request.timeout)
        current = request
    }

    /// Refuses a URL whose scheme is not http or https, before curl sees it.
    static func checkScheme(_ url: String, redirect: Bool) throws(HTTPTransferError) {
        // Nearly every URL starts with one of them: said without building its scheme's string.
        if startsWithAllowedScheme(url) { return }
        let scheme = Self.scheme(of: url)
        guard let scheme, HTTPRequest.allowedSchemes.contains(scheme) else {
            let shown = scheme.map { "\($0)://" } ?? "a URL without a scheme"
            let what = redirect ? "a redirect to \(shown) was not followed" : "\(shown) is not allowed"
            throw HTTPTransferError(kind: .invalidRequest, curlCode: 0, message: "\(what): only http:// and https:// URLs are fetched")
        }
    }

    /// Whether `url` starts with `http://` or `https://`, in any case (what `scheme(of:)` would
    /// then say too).
    static func startsWithAllowedScheme(_ url: String) -> Bool {
        var bytes = url.utf8.makeIterator()
        for expected in "http".utf8 {
            guard let byte = bytes.next(), byte | 0x20 == expected else { return false }
        }
        var next = bytes.next()
        if let byte = next, byte | 0x20 == UInt8(ascii: "s") { next = bytes.next() }
        return next == UInt8(ascii: ":") && bytes.next() == UInt8(ascii: "/") && bytes.next() == UInt8(ascii: "/")
    }

    /// What comes before the first "://", lowercased; nil without one. A byte scan: the generic
    /// `firstRange(of:)` cost about 8,000 instructions per request (two requests per probe run
    /// at 1 run/s: the probe's and the push).
    static func scheme(of url: String) -> String? {
        let bytes = url.utf8
        var index = bytes.startIndex
        while index != bytes.endIndex {
            if bytes[index] == UInt8(ascii: ":") {
                let slash = bytes.index(after: index)
                if slash != bytes.endIndex, bytes[slash] == UInt8(ascii: "/") {
                    let second = bytes.index(after: slash)
                    if second != bytes.endIndex, bytes[second] == UInt8(ascii: "/") { return url[..<index].lowercased() }
                }
            }
            index = bytes.index(after: index)
        }
        return nil
    }

    /// The request for the next hop, or nil when `response` is the final answer.
    mutating func next(after response: HTTPResponse) throws(HTTPTransferError) -> HTTPRequest? {
        timings = Self.sum(timings, response.timings)
        keepCertificate(of: response)
        guard [301, 302, 303, 307, 308].contains(response.status), let location = response.redirectURL else { return nil }
        do {
            try Self.checkScheme(location, redirect: true)
        } catch {
            throw failed(error)
        }
        guard count < original.maxRedirects else {
            throw failed(HTTPTransferError(kind: .invalidRequest, curlCode: 0, message: "more than \(original.maxRedirects) redirects (last to \(location))"))
        }
        let left = deadline - ContinuousClock.now
        guard left > .milliseconds(1) else {
            throw failed(HTTPTransferError(kind: .timeout, curlCode: 0, message: "time-out after \(count + 1) redirect(s)"))
        }
        count += 1
        var hop = current
        hop.url = location
        hop.timeout = left
        // No further inside the network than the first request went (its address's kind).
        if hop.innermostAddress == nil { hop.innermostAddress = response.remoteAddress.flatMap(AddressKind.of) ?? .publicAddress }
        // As browsers and libcurl do: 303 turns into GET, and so do 301 and 302 after a POST;
        // 307 and 308 repeat the method and body.
        let method = hop.method.uppercased()
        if (response.status == 303 && method != "HEAD") || ((response.status == 301 || response.status == 302) && method == "POST") {
            hop.method = "GET"
            hop.body = nil
        }
        // `connect_to` pins the URL's own host to one address; a hop to another host goes where
        // DNS says (each hop's rule is made from its own host, so it would follow otherwise).
        if hop.connectTo != nil, Origin(location)?.host.lowercased() != origin?.host.lowercased() { hop.connectTo = nil }
        var headers = original.headers
        if hop.body == nil { headers.removeAll { $0.name.lowercased() == "content-type" } }
        if original.redirectHeaders == .sameOriginOnly, origin == nil || Origin(location) != origin {
            headers.removeAll { !Self.harmlessHeaders.contains($0.name.lowercased()) }
        }
        hop.headers = headers
        return hop
    }

    /// The final response, with the timings of every hop added up.
    func finished(_ response: HTTPResponse) -> HTTPResponse {
        var response = response
        response.timings = timings
        response.redirects = count
        if let certificate {
            response.certificateNotAfter = certificate.notAfter
            response.certificateSubject = certificate.subject
        }
        return response
    }

    private mutating func keepCertificate(of response: HTTPResponse) {
        guard let notAfter = response.certificateNotAfter, notAfter < certificate?.notAfter ?? .distantFuture else { return }
        certificate = (notAfter, response.certificateSubject)
    }

    /// A hop's failure, with the time the earlier hops took added.
    func failed(_ error: HTTPTransferError) -> HTTPTransferError {
        var error = error
        error.timings = Self.sum(timings, error.timings)
        return error
    }

    private static func sum(_ a: PhaseTimings, _ b: PhaseTimings) -> PhaseTimings {
        PhaseTimings(
            dns: a.dns + b.dns, connect: a.connect + b.connect, tls: a.tls + b.tls, ttfb: a.ttfb + b.ttfb,
            transfer: a.transfer + b.transfer, total: a.total + b.total)
    }
}

/// Scheme, host and port of a URL as libcurl parses it (default ports filled in), for the
/// same-origin test of redirects and each server's share of the transfers.
struct Origin: Hashable, CustomStringConvertible {
    var scheme: String
    var host: String
    var port: String

    init?(_ url: String) {
        guard let handle = curl_url() else { return nil }
        defer { curl_url_cleanup(handle) }
        guard curl_url_set(handle, CURLUPART_URL, url, 0) == CURLUE_OK else { return nil }
        func part(_ which: CURLUPart, _ flags: UInt32 = 0) -> String? {
            var value: UnsafeMutablePointer<CChar>?
            guard curl_url_get(handle, which, &value, flags) == CURLUE_OK, let value else { return nil }
            defer { curl_free(value) }
            return String(cString: value)
        }
        guard let scheme = part(CURLUPART_SCHEME), let host = part(CURLUPART_HOST), let port = part(CURLUPART_PORT, UInt32(CURLU_DEFAULT_PORT)) else { return nil }
        self.scheme = scheme.lowercased()
        self.host = host.lowercased()
        self.port = port
    }

    /// `http://127.0.0.1:8080`, `https://[::1]:443`.
    var description: String { "\(scheme)://\(host):\(port)" }
}
