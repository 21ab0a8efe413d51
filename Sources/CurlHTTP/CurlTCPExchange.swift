import CCurl
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore

/// A TCP (optionally TLS) connect with an optional send and an optional expected answer, for
/// `tcp:` probe steps. libcurl makes the connection (`CURLOPT_CONNECT_ONLY`): the same resolver,
/// TLS stack, CA, client-certificate and IP-version options as HTTP requests, and the same
/// phase timings; then the bytes go over `curl_easy_send`/`curl_easy_recv`.
///
/// The exchange blocks, so it runs on a short-lived thread of its own (256 KiB stack): a
/// thread start (tens of microseconds) per `tcp` step, instead of a second event loop.
public struct TCPExchange: Sendable {
    public var host: String
    public var port: Int
    public var tls: Bool
    public var send: Data?
    /// Read until these bytes arrive (nil: no read at all).
    public var expect: Data?
    public var timeout: Duration
    public var verifyTLS = true
    public var caFile: String?
    public var clientCertificate: String?
    public var clientKey: String?
    public var ipVersion: IPVersion?
    /// Reading stops after this many bytes (a hostile server may send forever).
    public var maxReceiveBytes = 64 << 10

    public init(host: String, port: Int, tls: Bool, send: Data? = nil, expect: Data? = nil, timeout: Duration) {
        self.host = host
        self.port = port
        self.tls = tls
        self.send = send
        self.expect = expect
        self.timeout = timeout
    }

    /// How reading ended.
    public enum ReadEnd: String, Sendable {
        case notRead, matched, closed, timeout, limit
    }

    public struct Outcome: Sendable {
        public var timings: PhaseTimings
        public var received: Data
        public var readEnd: ReadEnd
        public var certificateNotAfter: Date?
        public var certificateSubject: String?
    }

    /// Connects, sends, reads; a connection failure (DNS, connect, TLS, time-out) is an error.
    public func perform() async -> Result<Outcome, HTTPTransferError> {
        let exchange = self
        let outcome = await DetachedThread.run(name: "sonde-tcp") { exchange.performBlocking() }
        return outcome ?? .failure(HTTPTransferError(kind: .other, curlCode: 0, message: "no thread for the TCP exchange (raise the process's thread limit)"))
    }

    private func performBlocking() -> Result<Outcome, HTTPTransferError> {
        _ = curlGlobalInit
        let clock = ContinuousClock()
        let started = clock.now
        let deadline = started.advanced(by: timeout)
        guard let handle = curl_easy_init() else {
            return .failure(HTTPTransferError(kind: .other, curlCode: 0, message: "curl_easy_init failed (out of memory?)"))
        }
        defer { curl_easy_cleanup(handle) }
        let errorBuffer = UnsafeMutablePointer<CChar>.allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        defer { errorBuffer.deallocate() }

        let hostPart = host.contains(":") && !host.hasPrefix("[") ? "[\(host)]" : host
        let url = (tls ? "https://" : "http://") + hostPart + ":\(port)/"
        var problem: String?
        func set(_ code: CURLcode, _ what: String) {
            if code != CURLE_OK, problem == nil { problem = "curl rejected \(what): \(String(cString: curl_easy_strerror(code)))" }
        }
        set(sonde_curl_setopt_string(handle, CURLOPT_URL, url), "the address \(url)")
        set(sonde_curl_setopt_long(handle, CURLOPT_CONNECT_ONLY, 1), "CONNECT_ONLY")
        set(sonde_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1), "NOSIGNAL")
        set(sonde_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, max(1, Int(timeout.milliseconds))), "the time-out")
        set(sonde_curl_setopt_string(handle, CURLOPT_NOPROXY, "*"), "NOPROXY")
        set(sonde_curl_setopt_long(handle, CURLOPT_DNS_CACHE_TIMEOUT, 0), "DNS_CACHE_TIMEOUT")
        set(sonde_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer), "ERRORBUFFER")
        if let ipVersion {
            set(sonde_curl_setopt_long(handle, CURLOPT_IPRESOLVE, Int(ipVersion == .v4 ? CURL_IPRESOLVE_V4 : CURL_IPRESOLVE_V6)), "IPRESOLVE")
        }
        // The verified chain's expiry (see CertificateExpiry); read right after the handshake,
        // which also keeps the record alive until then.
        var certificates: CertificateExpiry?
        if tls {
            do {
                certificates = try CertificateExpiry(tracking: handle)
            } catch {
                set(error.code, error.what)
            }
            set(sonde_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, verifyTLS ? 1 : 0), "SSL_VERIFYPEER")
            set(sonde_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, verifyTLS ? 2 : 0), "SSL_VERIFYHOST")
            set(sonde_curl_setopt_long(handle, CURLOPT_SSL_ENABLE_ALPN, 0), "SSL_ENABLE_ALPN")
            if let caFile { set(sonde_curl_setopt_string(handle, CURLOPT_CAINFO, caFile), "the CA file \(caFile)") }
            if let clientCertificate { set(sonde_curl_setopt_string(handle, CURLOPT_SSLCERT, clientCertificate), "the client certificate") }
            if let clientKey { set(sonde_curl_setopt_string(handle, CURLOPT_SSLKEY, clientKey), "the client key") }
        }
        if let problem { return .failure(HTTPTransferError(kind: .invalidRequest, curlCode: 0, message: problem)) }

        let code = curl_easy_perform(handle)
        let certificate = certificates?.earliest
        var timings = CurlTransfer.readTimings(handle, failed: code == CURLE_OK ? nil : code)
        if code != CURLE_OK {
            let detail = String(cString: errorBuffer)
            let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            return .failure(HTTPTransferError(
                kind: CurlTransfer.classify(code, detail: message), curlCode: Int(code.rawValue),
                message: CurlTransfer.explain(code, message), timings: timings))
        }
        let ready = clock.now
        var socket: curl_socket_t = -1
        _ = sonde_curl_getinfo_socket(handle, &socket)

        var firstByte: ContinuousClock.Instant?
        var received = Data()
        var readEnd = ReadEnd.notRead
        var failure: HTTPTransferError?
        do {
            if let send { try write(handle, socket: socket, send, deadline: deadline) }
            if let expect { readEnd = try read(handle, socket: socket, until: expect, into: &received, firstByte: &firstByte, deadline: deadline) }
        } catch {
            failure = error
        }
        // After the connection: ready → first byte read (ttfb), then the rest (transfer). With
        // nothing read yet, all of it is ttfb when an answer was awaited (a server that never
        // sends), transfer when none was (only sending).
        let end = clock.now
        let setup = timings.dns + timings.connect + timings.tls
        let total = max(setup, (end - started).milliseconds)
        let firstByteAt = firstByte.map { ($0 - started).milliseconds } ?? (expect != nil ? total : (ready - started).milliseconds)
        timings.ttfb = max(0, min(firstByteAt, total) - setup)
        timings.transfer = max(0, total - setup - timings.ttfb)
        timings.total = total
        if let failure {
            return .failure(HTTPTransferError(kind: failure.kind, curlCode: failure.curlCode, message: failure.message, timings: timings))
        }
        return .success(Outcome(timings: timings, received: received, readEnd: readEnd, certificateNotAfter: certificate?.notAfter, certificateSubject: certificate?.subject))
    }

    private func write(_ handle: UnsafeMutableRawPointer, socket: curl_socket_t, _ bytes: Data, deadline: ContinuousClock.Instant) throws(HTTPTransferError) {
        var offset = 0
        while offset < bytes.count {
            var sent = 0
            let code = bytes.withUnsafeBytes { raw in curl_easy_send(handle, raw.baseAddress! + offset, raw.count - offset, &sent) }
            if code == CURLE_AGAIN {
                try wait(socket, for: Int16(POLLOUT), deadline: deadline, doing: "sending")
                continue
            }
            guard code == CURLE_OK else {
                throw HTTPTransferError(kind: .connectionLost, curlCode: Int(code.rawValue), message: "sending failed: \(String(cString: curl_easy_strerror(code)))")
            }
            offset += sent
        }
    }

    private func read(
        _ handle: UnsafeMutableRawPointer, socket: curl_socket_t, until expect: Data, into received: inout Data,
        firstByte: inout ContinuousClock.Instant?, deadline: ContinuousClock.Instant
    ) throws(HTTPTransferError) -> ReadEnd {
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if received.count >= maxReceiveBytes { return .limit }
            var count = 0
            let code = buffer.withUnsafeMutableBytes { raw in curl_easy_recv(handle, raw.baseAddress!, min(raw.count, maxReceiveBytes - received.count), &count) }
            if code == CURLE_AGAIN {
                do { try wait(socket, for: Int16(POLLIN), deadline: deadline, doing: "waiting for the expected answer") } catch {
                    if error.kind == .timeout { return .timeout }
                    throw error
                }
                continue
            }
            guard code == CURLE_OK else {
                throw HTTPTransferError(kind: .connectionLost, curlCode: Int(code.rawValue), message: "receiving failed: \(String(cString: curl_easy_strerror(code)))")
            }
            if count == 0 { return .closed }
            if firstByte == nil { firstByte = ContinuousClock().now }
            let searchFrom = max(0, received.count - expect.count + 1)
            received.append(contentsOf: buffer[0..<count])
            if received.contains(bytes: expect, from: searchFrom) { return .matched }
        }
    }

    private func wait(_ socket: curl_socket_t, for events: Int16, deadline: ContinuousClock.Instant, doing: String) throws(HTTPTransferError) {
        let left = deadline - ContinuousClock().now
        guard left > .zero else { throw HTTPTransferError(kind: .timeout, curlCode: 0, message: "time-out \(doing)") }
        var descriptor = pollfd(fd: socket, events: events, revents: 0)
        let milliseconds = Int32(min(left.milliseconds.rounded(.up), 60_000))
        if poll(&descriptor, 1, max(1, milliseconds)) == 0, ContinuousClock().now >= deadline {
            throw HTTPTransferError(kind: .timeout, curlCode: 0, message: "time-out \(doing)")
        }
    }
}
