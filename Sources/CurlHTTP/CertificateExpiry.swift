import CCurl
import FoundationEssentials

/// The earliest `notAfter` of the certificate chain a TLS handshake verified: the path OpenSSL
/// built from the server's certificate to a trust anchor (`sonde_tls_chain` in the shim, filled
/// by the verify callback), not every certificate the server sent. Extra certificates outside
/// the path, such as an expired cross-sign, are ignored; an intermediate that expires before the
/// leaf counts. With `insecure: true` the chain is what OpenSSL could build, checked or not.
///
/// One per transfer that makes a fresh connection; the record must outlive the connection, so
/// connections that are kept for reuse are not tracked.
final class CertificateExpiry {
    private let record = UnsafeMutablePointer<sonde_tls_chain>.allocate(capacity: 1)

    /// Starts recording `handle`'s handshakes.
    init(tracking handle: UnsafeMutableRawPointer) throws(CurlSetupError) {
        let code = sonde_curl_track_tls_chain(handle, record)
        guard code == CURLE_OK else { throw CurlSetupError(code: code, what: "the TLS verify callback") }
    }

    deinit { record.deallocate() }

    /// How long ago (ms) the latest TLS set-up began, once its TCP connection was up; nil when none did.
    var tlsStartedAgo: Double? {
        let started = record.pointee.tls_started_ns
        guard started > 0 else { return nil }
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        return max(0, Double(Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) - started) / 1e6)
    }

    /// The earliest expiry in the verified chain and that certificate's subject; nil when no
    /// handshake was seen.
    var earliest: (notAfter: Date, subject: String)? { Self.earliest(in: record.pointee) }

    /// A record's earliest expiry and its certificate's subject; nil when no handshake was seen.
    static func earliest(in record: sonde_tls_chain) -> (notAfter: Date, subject: String)? {
        guard record.certificates > 0 else { return nil }
        let subject = withUnsafeBytes(of: record.earliest_subject) { bytes in
            String(decoding: bytes.prefix { $0 != 0 }, as: UTF8.self)
        }
        return (Date(timeIntervalSince1970: Double(record.earliest_not_after)), subject)
    }
}

/// An option curl refused while a handle was set up (the handle's setup describes it).
struct CurlSetupError: Error {
    var code: CURLcode
    var what: String
}

/// A probe's TLS files, loaded as libcurl will load them, so that a file that is not a PEM
/// certificate, a key that is not the certificate's, or an encrypted key is a configuration
/// error when the probe is loaded, not a `tls` failure of every run.
public enum TLSFiles {
    /// The most a CA bundle, certificate or key file may hold (Debian's whole CA bundle is
    /// about 220 KB).
    public static let maxBytes = 4 << 20

    public enum Problem: Equatable, Sendable {
        case caFile(String), certificate(String), key(String), keyMismatch(String)
    }

    public static func check(caFile: String?, certificate: String?, key: String?) -> Problem? {
        var reason = [CChar](repeating: 0, count: 256)
        let failed = sonde_tls_check_files(caFile, certificate, key, &reason, reason.count)
        let text = reason.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let why = text.isEmpty ? "" : " (\(text))"
        switch failed {
        case 0: return nil
        case 1: return .caFile("holds no PEM CA certificate OpenSSL can load\(why)")
        case 2: return .certificate("holds no PEM certificate OpenSSL can load\(why)")
        // OpenSSL checks a key against the certificate as it loads it.
        case 3 where text.contains("mismatch"): return .keyMismatch("the key is not the certificate's\(why)")
        case 3: return .key("holds no unencrypted PEM private key OpenSSL can load\(why)")
        default: return .keyMismatch("the key is not the certificate's\(why)")
        }
    }
}
