import FoundationEssentials
import SondeCore

/// A complete response with curl's phase timings.
public struct HTTPResponse: Sendable {
    public var status: Int
    /// Headers of the final response (not of interim 1xx or redirected ones).
    public var headers: [HTTPHeader]
    /// The whole body, or only its first bytes when the request did not keep it (`keepBody`).
    public var body: Data
    /// Bytes the body had in all, kept or not.
    public var bodyByteCount: Int
    /// SHA-256 of the whole body when the request asked for it (`hashBody`).
    public var bodySHA256: [UInt8]?
    /// Where a 3xx answer points (absolute), when it has a Location.
    public var redirectURL: String?
    /// Redirects followed to get this response.
    public var redirects: Int = 0
    /// Of all hops when redirects were followed.
    public var timings: PhaseTimings
    /// The address curl connected to, e.g. `127.0.0.1`.
    public var remoteAddress: String?
    public var httpVersion: String?
    /// The run's cookies after this response (when the request had a cookie jar).
    public var cookies: [HTTPCookie] = []
    /// More cookies than `CurlTransfer.mostCookies` were in the run's jar: `cookies` holds the
    /// first of them only.
    public var cookiesTruncated = false
    /// The most cookies a run's jar is read for (`CurlTransfer.mostCookies`).
    public static var mostCookiesKept: Int { CurlTransfer.mostCookies }
    /// The earliest expiry in the certificate chain of an https response.
    public var certificateNotAfter: Date?
    /// The subject of the certificate that expires first (`/CN=R3/O=Let's Encrypt/C=US`).
    public var certificateSubject: String?
    /// The body's bytes in its client's body memory budget, let go with the last copy of this
    /// response (`BodyMemory.Hold`).
    var bodyHold: BodyMemory.Hold?

    public init(
        status: Int, headers: [HTTPHeader], body: Data, timings: PhaseTimings, remoteAddress: String? = nil, httpVersion: String? = nil,
        bodyByteCount: Int? = nil, bodySHA256: [UInt8]? = nil, redirectURL: String? = nil
    ) {
        self.status = status
        self.headers = headers
        self.body = body
        self.bodyByteCount = bodyByteCount ?? body.count
        self.bodySHA256 = bodySHA256
        self.redirectURL = redirectURL
        self.timings = timings
        self.remoteAddress = remoteAddress
        self.httpVersion = httpVersion
    }

    public var bodyText: String { String(decoding: body, as: UTF8.self) }
}

/// A transfer that produced no complete response. `kind` says which phase broke; `timings` holds
/// what curl measured up to the failure (so a time-out still shows where the time went).
public struct HTTPTransferError: Error, Sendable, CustomStringConvertible {
    public enum Kind: String, Sendable {
        case dns
        case connect
        case tls
        case timeout
        /// The server closed the connection or sent something that is not HTTP.
        case connectionLost = "connection_lost"
        case responseTooLarge = "response_too_large"
        /// The body's `Content-Encoding` was refused (nested, not accepted, not decoded by the
        /// agent), or decoding it needs more memory than its coding may take: a compression bomb.
        case decodedTooLarge = "decoded_too_large"
        case cancelled
        case invalidRequest = "invalid_request"
        case other
    }

    public var kind: Kind
    /// curl's result code (CURLcode), 0 when the error did not come from curl.
    public var curlCode: Int
    public var message: String
    public var timings: PhaseTimings
    /// A TLS failure's certificate chain as far as it was seen (an expired certificate is the
    /// usual cause): its earliest expiry and that certificate's subject.
    public var certificateNotAfter: Date?
    public var certificateSubject: String?

    public init(kind: Kind, curlCode: Int, message: String, timings: PhaseTimings = .zero) {
        self.kind = kind
        self.curlCode = curlCode
        self.message = message
        self.timings = timings
    }

    /// This error with the chain its handshake saw: its earliest expiry is kept whatever failed
    /// after it (a server that stalls or closes once the handshake is done still shows when its
    /// certificate expires; red team, 33rd session, F5), and for a failed handshake an expiry
    /// already past is named in the message ("…; /CN=x expired 2026-12-02 10:00 UTC").
    func withCertificate(_ earliest: (notAfter: Date, subject: String)?) -> HTTPTransferError {
        guard let earliest else { return self }
        var error = self
        error.certificateNotAfter = earliest.notAfter
        error.certificateSubject = earliest.subject
        if kind == .tls, earliest.notAfter < Date() {
            error.message += " (\(earliest.subject) expired \(RFC3339.string(from: earliest.notAfter)))"
        }
        return error
    }

    public var description: String { message }

    /// The probe-result error kind this maps to.
    public var errorKind: ErrorKind {
        switch kind {
        case .dns: .dns
        case .connect, .connectionLost: .connect
        case .tls: .tls
        case .timeout: .timeout
        case .responseTooLarge, .decodedTooLarge, .invalidRequest: .script
        case .cancelled, .other: .internal
        }
    }
}
