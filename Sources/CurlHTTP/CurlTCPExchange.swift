import CCurl
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore

/// A TCP (optionally TLS) connection and a dialogue over it, for `tcp:` probe steps: bytes to
/// send, answers to wait for, and optionally a switch to TLS part-way (STARTTLS). libcurl makes
/// the connection (`CURLOPT_CONNECT_ONLY`): the same resolver, TLS stack, CA, client-certificate
/// and IP-version options as HTTP requests, and the same phase timings; then the bytes go over
/// `curl_easy_send`/`curl_easy_recv`, or over OpenSSL after a STARTTLS (libcurl cannot upgrade a
/// connect-only connection).
///
/// The exchange blocks, so it runs on a short-lived thread of its own (256 KiB stack): a
/// thread start (tens of microseconds) per `tcp` step, instead of a second event loop. Answers
/// are matched there too, never on the thread that drives other probes' transfers.
public struct TCPExchange: Sendable {
    public var host: String
    public var port: Int
    /// TLS from the start (`tls:`); a `.startTLS` action upgrades a plain connection instead.
    public var tls: Bool
    public var actions: [Action]
    public var timeout: Duration
    public var verifyTLS = true
    public var caFile: String?
    public var clientCertificate: String?
    public var clientKey: String?
    public var ipVersion: IPVersion?
    /// Unmatched bytes kept while waiting for one answer (a hostile server may send forever).
    public var maxReceiveBytes = 64 << 10

    public init(host: String, port: Int, tls: Bool, actions: [Action], timeout: Duration) {
        self.host = host
        self.port = port
        self.tls = tls
        self.actions = actions
        self.timeout = timeout
    }

    /// One move of the dialogue, in order.
    public enum Action: Sendable {
        case send(Data)
        /// Bytes made from what the previous `expect` consumed (its matched line, for groups of
        /// its regex in the text sent: blackbox_exporter's `${1}`).
        case sendMatched(@Sendable (_ consumed: Data, _ deadline: ContinuousClock.Instant) -> Result<Data, HTTPTransferError>)
        case expect(Expectation)
        /// Switch the connection to TLS here (after the server agreed in plain text).
        case startTLS
    }

    /// An answer to wait for. `find` is given the unmatched bytes and how many of them an earlier
    /// call already saw (so it need not look at them again), and says where the match ends.
    public struct Expectation: Sendable {
        public var find: @Sendable (_ received: Data, _ alreadySeen: Int, _ deadline: ContinuousClock.Instant) -> Result<Int?, HTTPTransferError>

        public init(find: @escaping @Sendable (Data, Int, ContinuousClock.Instant) -> Result<Int?, HTTPTransferError>) {
            self.find = find
        }

        /// These bytes, anywhere in what arrived.
        public static func bytes(_ expected: Data) -> Expectation {
            Expectation { received, seen, _ in
                let from = max(0, seen - expected.count + 1)
                return .success(received.offset(of: expected, from: from).map { $0 + expected.count })
            }
        }

        /// A test of each complete line (ending in `\n`, without its `\r\n` or `\n`), as
        /// blackbox_exporter's `query_response` does; the match ends at the end of that line.
        public static func line(_ test: @escaping @Sendable (Data, ContinuousClock.Instant) -> Result<Bool, HTTPTransferError>) -> Expectation {
            Expectation { received, seen, deadline in
                let base = received.startIndex
                // Only what arrived since the last call can end a line: with no newline in it there is
                // nothing new to try (a server dripping a line a byte at a time cost O(n²) scanning).
                guard received[(base + seen)...].contains(0x0A) else { return .success(nil) }
                // Lines that ended before `seen` were tried by an earlier call.
                var lineStart = received[base..<base + seen].lastIndex(of: 0x0A).map { $0 + 1 } ?? base
                while let newline = received[lineStart...].firstIndex(of: 0x0A) {
                    var lineEnd = newline
                    if lineEnd > lineStart, received[lineEnd - 1] == 0x0D { lineEnd -= 1 }
                    switch test(received[lineStart..<lineEnd], deadline) {
                    case .failure(let error): return .failure(error)
                    case .success(true): return .success(newline + 1 - base)
                    case .success(false): lineStart = newline + 1
                    }
                }
                return .success(nil)
            }
        }
    }

    /// How waiting for an answer ended.
    public enum ReadEnd: String, Sendable {
        case notRead, matched, closed, timeout, limit
    }

    public struct Outcome: Sendable {
        public var timings: PhaseTimings
        /// The unmatched bytes of the last answer waited for (what a failure message quotes).
        public var received: Data
        public var readEnd: ReadEnd
        /// Which action the dialogue stopped at when an answer did not come; nil when it ran to the end.
        public var stoppedAt: Int?
        public var certificateNotAfter: Date?
        public var certificateSubject: String?
    }

    /// Connects and runs the dialogue; a connection failure (DNS, connect, TLS, time-out) is an
    /// error, an answer that did not come is an outcome (`readEnd`, `stoppedAt`).
    public func perform() async -> Result<Outcome, HTTPTransferError> {
        let exchange = self
        let outcome = await DetachedThread.run(name: "sonde-tcp", slots: .shared) { exchange.performBlocking() }
        return outcome ?? .failure(HTTPTransferError(kind: .other, curlCode: 0, message: DetachedThread.noValue(for: "the TCP exchange")))
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
        // A slow lookup is abandoned at the time-out, not waited for (see CurlTransfer).
        set(sonde_curl_setopt_long(handle, CURLOPT_QUICK_EXIT, 1), "QUICK_EXIT")
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
        var certificate = certificates?.earliest
        var timings = CurlTransfer.readTimings(
            handle, failed: code == CURLE_OK ? nil : code, tlsStartedAgo: code == CURLE_OK ? nil : certificates?.tlsStartedAgo)
        if code != CURLE_OK {
            let detail = String(cString: errorBuffer)
            let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            return .failure(HTTPTransferError(
                kind: CurlTransfer.classify(code, detail: message), curlCode: Int(code.rawValue),
                message: CurlTransfer.explain(code, message), timings: timings).withCertificate(certificate))
        }
        let ready = clock.now
        var socket: curl_socket_t = -1
        _ = sonde_curl_getinfo_socket(handle, &socket)

        errorBuffer[0] = 0
        var channel = Channel(curl: handle, socket: socket, errorBuffer: errorBuffer)
        defer { channel.close() }
        var firstByte: ContinuousClock.Instant?
        var received = Data()
        var consumed = Data()
        var readEnd = ReadEnd.notRead
        var stoppedAt: Int?
        var failure: HTTPTransferError?
        var handshake: (start: ContinuousClock.Instant, end: ContinuousClock.Instant)?
        dialogue: for (index, action) in actions.enumerated() {
            do {
                switch action {
                case .send(let bytes):
                    try channel.write(bytes, deadline: deadline)
                case .sendMatched(let make):
                    try channel.write(try make(consumed, deadline).get(), deadline: deadline)
                case .expect(let expectation):
                    readEnd = try channel.read(
                        until: expectation, into: &received, consumed: &consumed, limit: maxReceiveBytes, firstByte: &firstByte, deadline: deadline)
                    if readEnd != .matched {
                        stoppedAt = index
                        break dialogue
                    }
                case .startTLS:
                    // Plain text that came after the server's go-ahead is not part of the TLS
                    // conversation (an attacker in the path could have put it there).
                    received.removeAll()
                    let start = clock.now
                    // A handshake that fails or stalls is `tls` time too, not the transfer's.
                    defer { handshake = (start, clock.now) }
                    certificate = try channel.startTLS(self, host: host, defaultCAs: Self.defaultCAs(handle), deadline: deadline)
                }
            } catch {
                failure = error
                break dialogue
            }
        }
        // After the connection: ready → first byte read (ttfb), then the rest (transfer). With
        // nothing read yet, all of it is ttfb when an answer was awaited (a server that never
        // sends), transfer when none was (only sending). A STARTTLS handshake is the `tls`
        // phase, taken out of whichever of the two it fell in.
        let end = clock.now
        let curlSetup = timings.dns + timings.connect + timings.tls
        let handshakeTime = handshake.map { ($0.end - $0.start).milliseconds } ?? 0
        let awaited = actions.contains { if case .expect = $0 { true } else { false } }
        let handshakeBeforeFirstByte = handshake.map { done in firstByte.map { $0 > done.end } ?? awaited } ?? false
        timings.tls += handshakeTime
        let setup = curlSetup + handshakeTime
        let total = max(setup, (end - started).milliseconds)
        let firstByteAt = firstByte.map { ($0 - started).milliseconds } ?? (awaited ? total : (ready - started).milliseconds)
        timings.ttfb = max(0, min(firstByteAt - curlSetup - (handshakeBeforeFirstByte ? handshakeTime : 0), total - setup))
        timings.transfer = max(0, total - setup - timings.ttfb)
        timings.total = total
        if var failure {
            failure.timings = timings
            // A chain verified before the failure (a bad record after the handshake, a time-out
            // in the dialogue) still tells its expiry.
            if failure.certificateNotAfter == nil, let certificate {
                failure.certificateNotAfter = certificate.notAfter
                failure.certificateSubject = certificate.subject
            }
            return .failure(failure)
        }
        return .success(Outcome(
            timings: timings, received: received, readEnd: readEnd, stoppedAt: stoppedAt,
            certificateNotAfter: certificate?.notAfter, certificateSubject: certificate?.subject))
    }

    /// libcurl's own CA file and directory (as built, e.g. Debian's /etc/ssl/certs), so that a
    /// STARTTLS upgrade trusts what an https request on the same host trusts.
    private static func defaultCAs(_ handle: UnsafeMutableRawPointer) -> (file: String?, path: String?) {
        var file: UnsafeMutablePointer<CChar>?
        var path: UnsafeMutablePointer<CChar>?
        _ = sonde_curl_getinfo_string(handle, CURLINFO_CAINFO, &file)
        _ = sonde_curl_getinfo_string(handle, CURLINFO_CAPATH, &path)
        return (file.map { String(cString: $0) }, path.map { String(cString: $0) })
    }
}

/// The connection's byte stream: libcurl's until a STARTTLS, OpenSSL's after.
private struct Channel {
    let curl: UnsafeMutableRawPointer
    let socket: curl_socket_t
    /// The handle's CURLOPT_ERRORBUFFER: what curl's TLS layer said, beyond its error code.
    let errorBuffer: UnsafeMutablePointer<CChar>
    var ssl: OpaquePointer?
    /// Where the session's verify callback records the chain: lives as long as the session.
    var chain: UnsafeMutablePointer<sonde_tls_chain>?

    init(curl: UnsafeMutableRawPointer, socket: curl_socket_t, errorBuffer: UnsafeMutablePointer<CChar>) {
        self.curl = curl
        self.socket = socket
        self.errorBuffer = errorBuffer
    }

    /// A failed curl_easy_send/recv, classified as a transfer's would be: a TLS 1.3 alert that
    /// comes on the first read ("certificate required" from a server that wants a client
    /// certificate) is `tls` with its hint, not a lost connection (found by the TLS review, F4).
    func curlFailure(_ code: CURLcode, doing: String) -> HTTPTransferError {
        let detail = String(cString: errorBuffer)
        let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
        return HTTPTransferError(
            kind: CurlTransfer.classify(code, detail: message), curlCode: Int(code.rawValue),
            message: "\(doing) failed: " + CurlTransfer.explain(code, message))
    }

    mutating func close() {
        if let ssl {
            _ = SSL_shutdown(ssl) // one non-blocking try at close_notify; the socket closes with curl's handle
            SSL_free(ssl)
            self.ssl = nil
        }
        chain?.deallocate()
        chain = nil
    }

    /// Switches to TLS; returns the verified chain's earliest expiry.
    mutating func startTLS(
        _ exchange: TCPExchange, host: String, defaultCAs: (file: String?, path: String?), deadline: ContinuousClock.Instant
    ) throws(HTTPTransferError) -> (notAfter: Date, subject: String)? {
        guard ssl == nil, !exchange.tls else {
            throw HTTPTransferError(kind: .invalidRequest, curlCode: 0, message: "STARTTLS on a connection that is already TLS")
        }
        var reason = [CChar](repeating: 0, count: 512)
        let record = UnsafeMutablePointer<sonde_tls_chain>.allocate(capacity: 1)
        chain = record
        var v4 = in_addr(), v6 = in6_addr()
        let isAddress = inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
        // A probe's CA file replaces the defaults, as CURLOPT_CAINFO does for requests.
        let (caFile, caPath) = exchange.caFile.map { ($0, nil) } ?? defaultCAs
        guard let session = sonde_starttls_new(
            Int32(socket), host, isAddress ? 1 : 0, exchange.verifyTLS ? 1 : 0, caFile, caPath,
            exchange.clientCertificate, exchange.clientKey, record, &reason, reason.count)
        else {
            throw HTTPTransferError(kind: .tls, curlCode: 0, message: "STARTTLS: \(cText(reason))")
        }
        ssl = session
        while true {
            let done = SSL_do_handshake(session)
            if done == 1 { break }
            let error = SSL_get_error(session, done)
            if error == SSL_ERROR_WANT_READ || error == SSL_ERROR_WANT_WRITE {
                try wait(for: Int16(error == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT), deadline: deadline, doing: "the STARTTLS handshake")
                continue
            }
            sonde_tls_failure(session, &reason, reason.count)
            throw HTTPTransferError(kind: .tls, curlCode: 0, message: "STARTTLS handshake failed: \(cText(reason))")
                .withCertificate(CertificateExpiry.earliest(in: record.pointee))
        }
        return CertificateExpiry.earliest(in: record.pointee)
    }

    func write(_ bytes: Data, deadline: ContinuousClock.Instant) throws(HTTPTransferError) {
        var offset = 0
        while offset < bytes.count {
            switch bytes.withUnsafeBytes({ raw in send(raw.baseAddress! + offset, raw.count - offset) }) {
            case .done(let count): offset += count
            case .wait(let events): try wait(for: events, deadline: deadline, doing: "sending")
            case .closed: throw HTTPTransferError(kind: .connectionLost, curlCode: 0, message: "sending failed: the server closed the connection")
            case .failed(let error): throw error
            }
        }
    }

    func read(
        until expectation: TCPExchange.Expectation, into received: inout Data, consumed: inout Data, limit: Int,
        firstByte: inout ContinuousClock.Instant?, deadline: ContinuousClock.Instant
    ) throws(HTTPTransferError) -> TCPExchange.ReadEnd {
        var buffer = [UInt8](repeating: 0, count: 4096)
        var seen = 0
        while true {
            // Bytes left over from the last answer may already hold this one.
            if received.count > seen {
                switch expectation.find(received, seen, deadline) {
                case .failure(let error): throw error
                case .success(let end?):
                    consumed = Data(received.prefix(end))
                    received = Data(received.dropFirst(end))
                    return .matched
                case .success(nil): seen = received.count
                }
            }
            if received.count >= limit { return .limit }
            switch buffer.withUnsafeMutableBytes({ raw in receive(raw.baseAddress!, min(raw.count, limit - received.count)) }) {
            case .done(let count):
                if firstByte == nil { firstByte = ContinuousClock().now }
                received.append(contentsOf: buffer[0..<count])
            case .wait(let events):
                do { try wait(for: events, deadline: deadline, doing: "waiting for the expected answer") } catch {
                    if error.kind == .timeout { return .timeout }
                    throw error
                }
            case .closed:
                return .closed
            case .failed(let error):
                throw error
            }
        }
    }

    private enum Step { case done(Int), wait(Int16), closed, failed(HTTPTransferError) }

    private func send(_ bytes: UnsafeRawPointer, _ count: Int) -> Step {
        if let ssl {
            let written = SSL_write(ssl, bytes, Int32(min(count, Int(Int32.max))))
            if written > 0 { return .done(Int(written)) }
            return tlsStep(ssl, written, doing: "sending")
        }
        var sent = 0
        let code = curl_easy_send(curl, bytes, count, &sent)
        if code == CURLE_AGAIN { return .wait(Int16(POLLOUT)) }
        guard code == CURLE_OK else { return .failed(curlFailure(code, doing: "sending")) }
        return .done(sent)
    }

    private func receive(_ buffer: UnsafeMutableRawPointer, _ count: Int) -> Step {
        if let ssl {
            let read = SSL_read(ssl, buffer, Int32(min(count, Int(Int32.max))))
            if read > 0 { return .done(Int(read)) }
            return tlsStep(ssl, read, doing: "receiving")
        }
        var got = 0
        let code = curl_easy_recv(curl, buffer, count, &got)
        if code == CURLE_AGAIN { return .wait(Int16(POLLIN)) }
        guard code == CURLE_OK else { return .failed(curlFailure(code, doing: "receiving")) }
        return got == 0 ? .closed : .done(got)
    }

    /// What an SSL_read/SSL_write that moved no bytes means.
    private func tlsStep(_ ssl: OpaquePointer, _ value: Int32, doing: String) -> Step {
        switch SSL_get_error(ssl, value) {
        case SSL_ERROR_WANT_READ: return .wait(Int16(POLLIN))
        case SSL_ERROR_WANT_WRITE: return .wait(Int16(POLLOUT))
        case SSL_ERROR_ZERO_RETURN: return .closed
        case SSL_ERROR_SYSCALL where ERR_peek_error() == 0: return .closed // end of stream without close_notify
        default:
            var reason = [CChar](repeating: 0, count: 256)
            sonde_tls_failure(ssl, &reason, reason.count)
            return .failed(HTTPTransferError(kind: .tls, curlCode: 0, message: "\(doing) over TLS failed: \(cText(reason))"))
        }
    }

    private func wait(for events: Int16, deadline: ContinuousClock.Instant, doing: String) throws(HTTPTransferError) {
        let left = deadline - ContinuousClock().now
        guard left > .zero else { throw HTTPTransferError(kind: .timeout, curlCode: 0, message: "time-out \(doing)") }
        var descriptor = pollfd(fd: socket, events: events, revents: 0)
        let milliseconds = Int32(min(left.milliseconds.rounded(.up), 60_000))
        if poll(&descriptor, 1, max(1, milliseconds)) == 0, ContinuousClock().now >= deadline {
            throw HTTPTransferError(kind: .timeout, curlCode: 0, message: "time-out \(doing)")
        }
    }
}

/// A NUL-terminated C string in a buffer the caller filled.
private func cText(_ buffer: [CChar]) -> String {
    buffer.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
}
