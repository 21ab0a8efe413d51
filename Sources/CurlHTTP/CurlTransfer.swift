import CCurl
import FoundationEssentials
import SondeCore
import Synchronization

/// `curl_global_init` must run once, before any handle exists.
let curlGlobalInit: Void = {
    let code = curl_global_init(Int(CURL_GLOBAL_ALL))
    precondition(code == CURLE_OK, "curl_global_init failed: \(code)")
}()

/// What the C callbacks write into during one transfer (on the loop thread that drives it).
private final class TransferState {
    var body = Data()
    /// Body bytes received, kept or not.
    var received = 0
    /// Capacity reserved in `body`, counted in `memory`.
    private(set) var reserved = 0
    var headers: [HTTPHeader] = []
    var statusLine: String?
    var tooLarge = false
    /// Header bytes of every response in this transfer (1xx ones too), and whether they passed
    /// `maxHeaderBytes`: a server that never ends its headers, or answers 1xx forever, is cut off
    /// here with a message that says so, whatever libcurl's own limit is (Debian's 7.88 stops at
    /// 300 KB since its CVE-2023-38039 patch, as "Too large response headers"; builds without
    /// that patch read until the timeout, keeping every line).
    var headerBytes = 0
    var headersTooLarge = false
    /// `HTTPRequest.innermostAddress`, and the address refused for passing it.
    let innermostAddress: AddressKind?
    var refusedAddress: (address: String, kind: AddressKind)?
    let maxBytes: Int
    /// The loop's rounds, shared by its transfers (`start(share:)`).
    var share: RoundShare?
    /// Where `reserved` is counted (the client's, set by `start`).
    var memory: BodyMemory?
    /// Paused until `memory` has room for `wantedBytes` more (its place in line `waitTurn`,
    /// since `waitingSince`), or allowed past the budget (`BodyMemory`).
    var waitingForMemory = false
    var wantedBytes = 0
    var waitTurn: UInt64 = 0
    var waitingSince = ContinuousClock.now
    var excused = false
    /// What this transfer's body cost in the round `costRound`, in bytes (`RoundShare.pieceCost`).
    var roundCost = 0
    var costRound: UInt64 = 0
    /// Paused for the rest of the round, and being resumed (its held data is taken whole).
    var paused = false
    var resuming = false
    /// The current response's decoder (its request accepted codings, and it applies one), the
    /// decoder's memory counted in `memory` so far, and why its coding was refused or decoding failed.
    var decoder: ContentDecoder?
    var decoderCounted = 0
    var decodeFailure: (kind: HTTPTransferError.Kind, message: String)?
    /// Bytes of the body kept: all up to `maxBytes`, or only a prefix.
    let keepBytes: Int
    let hasher: SHA256Digest.Stream?
    /// The content codings the request accepts, lower-cased (nil: it asked for none, and curl
    /// decodes nothing); the current response's applied codings so far.
    let acceptedCodings: Set<String>?
    var codingsSeen: [String] = []

    init(_ request: HTTPRequest) {
        maxBytes = request.maxResponseBytes
        keepBytes = request.keepBody ? request.maxResponseBytes : min(request.bodyPrefixBytes, request.maxResponseBytes)
        hasher = request.hashBody ? SHA256Digest.Stream() : nil
        acceptedCodings = request.headers.value(for: "Accept-Encoding").map(ContentCodings.accepted)
        innermostAddress = request.innermostAddress
    }

    /// Whether the transfer had its share of this round: true pauses it (curl holds the piece
    /// and hands it over again once `resume` lifts the pause, next round).
    /// A decoding transfer is paused again while resumed (`ContentDecoder` goes on where it
    /// stopped); an undecoded one takes what curl held whole (one network read).
    func overShare(_ bytes: Int, evenResuming: Bool = false) -> Bool {
        guard let share, !resuming || evenResuming else { return false }
        if costRound != share.round {
            costRound = share.round
            roundCost = 0
        }
        if roundCost >= RoundShare.budget {
            paused = true
            share.anyPaused = true
            return true
        }
        roundCost += max(bytes, RoundShare.pieceCost)
        return false
    }

    /// Reserves room in `body` for the part of a `count`-byte piece it keeps, counted in
    /// `memory`. False when the budget has none: the transfer then waits (paused) for it.
    func reserve(for count: Int) -> Bool {
        let room = keepBytes - body.count
        guard room > 0 else { return true }
        let needed = body.count + min(room, count)
        guard needed > reserved else { return true }
        // Grow by doubling, but never past what may be kept: a capped body costs its cap, not
        // the next power of two. When the budget has no room for that, by what this piece
        // needs, in whole MiB.
        let doubled = min(keepBytes, max(needed, reserved * 2, 16 << 10))
        let least = min(doubled, (needed + (1 << 20) - 1) & ~((1 << 20) - 1))
        func granted(_ target: Int) -> Bool {
            guard memory?.grant(target - reserved, holding: reserved, excused: excused) ?? true else { return false }
            reserved = target
            body.reserveCapacity(target)
            return true
        }
        if granted(doubled) || (least < doubled && granted(least)) { return true }
        waitFor(least - reserved)
        return false
    }

    /// Paused until `memory` has room for `bytes` more, in line.
    private func waitFor(_ bytes: Int) {
        waitingForMemory = true
        wantedBytes = bytes
        waitingSince = .now
        waitTurn = memory?.waitTurn() ?? 0
    }

    /// A piece of a body in `coding`, decoded (`ContentDecoder`) and taken piece by piece: what
    /// the write callback returns. A decoder starts once the body memory has room for what its
    /// stream's header says it needs (else the transfer waits, as for its body's bytes); what it
    /// then allocates is counted in `memory` while the transfer lasts.
    func decode(_ piece: UnsafeRawBufferPointer, coding name: String) -> Int {
        if decoder == nil {
            // Codings the agent does not decode were refused at the headers (`ContentCodings`).
            guard let coding = ContentDecoder.Coding(name: name) else { return 0 }
            let needs = ContentDecoder.memoryToStart(coding, firstBytes: piece)
            if let memory, !excused, !memory.fits(needs, holding: reserved + decoderCounted) {
                waitFor(needs)
                return Int(CURL_WRITEFUNC_PAUSE)
            }
            guard let started = ContentDecoder(coding, firstBytes: piece) else {
                decodeFailure = (.other, "could not start a \(coding.rawValue) decoder (out of memory?)")
                return 0
            }
            decoder = started
        }
        guard let decoder else { return 0 }
        let outcome = decoder.write(piece) { output in
            if overShare(output.count, evenResuming: true) || !reserve(for: output.count) { return .pause }
            return take(output) ? .took : .stop
        }
        countDecoderMemory()
        switch outcome {
        case .consumed: return piece.count
        case .paused: return Int(CURL_WRITEFUNC_PAUSE)
        case .stopped: return 0
        case .failed(let why):
            decodeFailure = (decoder.refusedMemory ? .decodedTooLarge : .connectionLost, why)
            return 0
        }
    }

    /// Brings `memory`'s count of the decoder's bytes up to date (granted past the budget: they
    /// are already allocated; the next transfers wait for them).
    private func countDecoderMemory() {
        let now = decoder?.allocated ?? 0
        if now > decoderCounted {
            _ = memory?.grant(now - decoderCounted, holding: 0, excused: true)
        } else if now < decoderCounted {
            memory?.release(decoderCounted - now)
        }
        decoderCounted = now
    }

    /// The decoder goes (a new response begins, or the transfer ended), and its memory with it.
    func dropDecoder() {
        decoder = nil
        countDecoderMemory()
    }

    /// One piece of the body as curl hands it over (room reserved): counted, hashed, kept up to
    /// `keepBytes`. False when it goes over `maxBytes` (the transfer is then aborted).
    func take(_ piece: UnsafeRawBufferPointer) -> Bool {
        received += piece.count
        if received > maxBytes {
            tooLarge = true
            return false
        }
        hasher?.update(piece)
        let room = keepBytes - body.count
        if room > 0, let start = piece.baseAddress {
            body.append(start.assumingMemoryBound(to: UInt8.self), count: min(room, piece.count))
        }
        return true
    }

    /// Whether the transfer holds budget beyond its own bytes (its body's, its decoder's) and is
    /// reading: it lets them go when it ends. A decoder's window counts: 15 br transfers holding
    /// 16 MiB windows and 4 KiB of body each are reading, and the loop must not let waiting
    /// transfers past the budget as if nobody were.
    var readsOnBudget: Bool { reserved + decoderCounted > BodyMemory.ownBytes && !waitingForMemory }

    /// Stops counting the body's bytes as the transfer's (it ended): let go, or, when the body
    /// goes to the caller in a response (`handOver`), counted until the caller lets it go.
    func releaseMemory(handOver: Bool) -> BodyMemory.Hold? {
        if waitingForMemory {
            waitingForMemory = false
            memory?.stopWaiting()
        }
        dropDecoder()
        defer { memory = nil }
        if handOver { return memory?.handOver(reserved) }
        memory?.release(reserved)
        return nil
    }
}

/// The loop's rounds as its transfers see them: each transfer's body may cost `budget` per round
/// (a round is one `curl_multi_perform` and what the loop does around it), then it is paused
/// until the next. Bodies are decoded (chunks by libcurl, content codings by `ContentDecoder`)
/// inside `curl_multi_perform` on the one thread that drives every probe's transfers and timers:
/// a gzip bomb nobody reads, decoded to its 256 MiB cap in one perform, made a 1 s heartbeat
/// 477 ms late, and endless 1-byte chunks 193 ms (red team, 32nd session, F1). Used on the loop
/// thread only.
final class RoundShare {
    /// 1 MiB: about a millisecond of decoding or copying; a 100 MiB download takes 100 rounds,
    /// each a few microseconds of the loop's own.
    static let budget = 1 << 20
    /// The least a piece counts for: curl's work per piece (a 1-byte chunk is a chunk header to
    /// parse and a call) is not in its length.
    static let pieceCost = 512
    var round: UInt64 = 1
    /// Some transfer paused this round.
    var anyPaused = false
}

/// One transfer on one curl easy handle: created by the caller, then set up (`start`), driven and
/// finished (`finish`, which answers the caller) on the `CurlMultiLoop` thread.
///
/// Handed over, never shared: the caller creates it and queues it (under the loop's lock); from
/// then only the loop thread uses it, or the canceller that takes it out of the queue under that
/// lock before the loop saw it. Only `cancelled` is read across threads (atomically). That is why
/// it is `@unchecked Sendable`.
final class CurlTransfer: @unchecked Sendable {
    /// The most header bytes one transfer takes, over all its responses (1xx included): far
    /// above real responses' headers (a few KiB), far below memory trouble.
    static let maxHeaderBytes = 256 << 10

    let request: HTTPRequest
    private let proxies: ProxyEnvironment
    let cancelled = Atomic<Bool>(false)
    /// Set by `start` (on the loop thread), freed by `finish`.
    private(set) var handle: UnsafeMutableRawPointer?
    private let state: TransferState
    private let errorBuffer: UnsafeMutablePointer<CChar>
    private var headerList: UnsafeMutablePointer<curl_slist>?
    private var connectToList: UnsafeMutablePointer<curl_slist>?
    /// The verified TLS chain of an https probe's handshake.
    private var certificates: CertificateExpiry?
    private let continuation: CheckedContinuation<Result<HTTPResponse, HTTPTransferError>, Never>

    /// When the caller asked for it: its time-out counts from here, waiting for a slot included.
    let submittedAt = ContinuousClock.now

    /// When the request's time-out ends, whether or not it has started.
    var deadline: ContinuousClock.Instant { submittedAt + request.timeout }

    /// The origin whose share (`CurlMultiLoop.originShare`) this transfer counts against: its
    /// own URL's (a redirect hop is a transfer of its own, to the hop's URL), none for a push
    /// (`reuseConnection`: exempt, and first) or a URL curl cannot parse (it fails at once).
    /// Parsed on the loop thread, only once transfers in flight could reach a share.
    private(set) lazy var origin: Origin? = request.reuseConnection ? nil : Origin(request.url)

    init(request: HTTPRequest, proxies: ProxyEnvironment, continuation: CheckedContinuation<Result<HTTPResponse, HTTPTransferError>, Never>) {
        self.request = request
        self.proxies = proxies
        self.continuation = continuation
        state = TransferState(request)
        errorBuffer = .allocate(capacity: Int(CURL_ERROR_SIZE) + 1)
        errorBuffer.initialize(repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
    }

    deinit {
        if let handle { curl_easy_cleanup(handle) }
        curl_slist_free_all(headerList)
        curl_slist_free_all(connectToList)
        errorBuffer.deallocate()
    }

    /// Paused by `RoundShare`'s budget and not yet resumed.
    var isPaused: Bool { state.paused }

    /// Lifts the pause: curl hands over what it held (taken whole, whatever this round's
    /// share: held data is at most what one read decodes to) and reads again on the next perform.
    /// Not `CURLE_OK` when taking the held data failed (over `max_body`): curl does not end the
    /// transfer for it then, so the caller does.
    func resume() -> CURLcode {
        guard let handle, state.paused else { return CURLE_OK }
        state.paused = false
        state.resuming = true
        defer { state.resuming = false }
        return curl_easy_pause(handle, CURLPAUSE_CONT)
    }

    /// Paused for body memory (`BodyMemory`), and its place in line.
    var waitsForMemory: Bool { state.waitingForMemory }
    var memoryTurn: UInt64 { state.waitTurn }
    var readsOnBudget: Bool { state.readsOnBudget }

    /// Whether the body memory it waits for is there now.
    func memoryFits(_ memory: BodyMemory) -> Bool {
        memory.fits(state.wantedBytes, holding: state.reserved + state.decoderCounted)
    }

    /// Lifts a pause for body memory, when it fits or the loop lets this transfer past the
    /// budget (`excuse`): curl hands over what it held and reads again on the next perform. Not
    /// `CURLE_OK` when taking the held data failed, as for `resume`.
    func resumeForMemory(excuse: Bool = false) -> CURLcode {
        guard let handle, state.waitingForMemory else { return CURLE_OK }
        state.waitingForMemory = false
        state.memory?.stopWaiting()
        if excuse { state.excused = true }
        state.resuming = true
        defer { state.resuming = false }
        return curl_easy_pause(handle, CURLPAUSE_CONT)
    }

    /// Creates the easy handle with every option of the request set. On failure the caller has
    /// been answered (with why curl refused) and this returns nil.
    func start(share: RoundShare? = nil, memory: BodyMemory? = nil) -> UnsafeMutableRawPointer? {
        state.share = share
        state.memory = memory
        _ = curlGlobalInit
        guard let handle = curl_easy_init() else {
            answer(.failure(HTTPTransferError(kind: .other, curlCode: 0, message: "curl_easy_init failed (out of memory?)")))
            return nil
        }
        self.handle = handle
        if let setupError = configure(handle) {
            answer(.failure(HTTPTransferError(kind: .invalidRequest, curlCode: 0, message: setupError)))
            return nil
        }
        return handle
    }

    /// Sets the options; returns the first one curl rejected, described.
    private func configure(_ handle: UnsafeMutableRawPointer) -> String? {
        let context = Unmanaged.passUnretained(state).toOpaque()
        var setupError: String?
        func set(_ code: CURLcode, _ what: @autoclosure () -> String) {
            if code != CURLE_OK, setupError == nil {
                setupError = "curl rejected \(what()): \(String(cString: curl_easy_strerror(code)))"
            }
        }

        set(sonde_curl_setopt_string(handle, CURLOPT_URL, request.url), "the URL \(request.url)")
        set(sonde_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1), "NOSIGNAL")
        // A lookup still under way when the transfer ends (its time-out, or the agent stopping)
        // is left to finish on its own thread: without this, libcurl joins that thread, inside
        // the one loop that drives every transfer, for as long as getaddrinfo takes (a name whose
        // DNS answered in 8 s held a 1 s heartbeat 7.85 s and SIGTERM 16 s; red team, 33rd
        // session, F1). The thread ends when the system resolver gives up.
        set(sonde_curl_setopt_long(handle, CURLOPT_QUICK_EXIT, 1), "QUICK_EXIT")
        // What is left of the time-out after any wait for a slot (`expireUnstarted`).
        set(sonde_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, Self.milliseconds(deadline - .now)), "the time-out")
        if let connect = request.connectTimeout {
            set(sonde_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, Self.milliseconds(connect)), "the connect time-out")
        }
        // One multi handle drives every transfer, and it would keep connections, DNS answers and
        // (libcurl 8.12 and later) TLS sessions for the next one. Probes measure DNS, connect and
        // TLS every time: a fresh connection, closed after use, no DNS cache and no TLS session
        // resumed (as when each transfer had a multi handle of its own).
        // A request that asks for reuse (the pushes) keeps its connection in the multi handle's
        // cache: a push then costs no TCP or TLS handshake on either side.
        if !request.reuseConnection {
            set(sonde_curl_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1), "FRESH_CONNECT")
            set(sonde_curl_setopt_long(handle, CURLOPT_FORBID_REUSE, 1), "FORBID_REUSE")
            set(sonde_curl_setopt_long(handle, CURLOPT_DNS_CACHE_TIMEOUT, 0), "DNS_CACHE_TIMEOUT")
            set(sonde_curl_setopt_long(handle, CURLOPT_SSL_SESSIONID_CACHE, 0), "SSL_SESSIONID_CACHE")
        }
        // http and https only, for the request and any redirect curl might follow (it follows
        // none: CurlHTTPClient follows redirects hop by hop, to decide which headers go along).
        set(sonde_curl_setopt_string(handle, CURLOPT_PROTOCOLS_STR, Self.protocols), "PROTOCOLS_STR")
        set(sonde_curl_setopt_string(handle, CURLOPT_REDIR_PROTOCOLS_STR, Self.protocols), "REDIR_PROTOCOLS_STR")
        set(sonde_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, 0), "FOLLOWLOCATION")
        set(sonde_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, request.verifyTLS ? 1 : 0), "SSL_VERIFYPEER")
        set(sonde_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, request.verifyTLS ? 2 : 0), "SSL_VERIFYHOST")
        if let caFile = request.caFile { set(sonde_curl_setopt_string(handle, CURLOPT_CAINFO, caFile), "the CA file \(caFile)") }
        if let client = request.clientCertificate {
            set(sonde_curl_setopt_string(handle, CURLOPT_SSLCERT, client.cert), "the client certificate \(client.cert)")
            set(sonde_curl_setopt_string(handle, CURLOPT_SSLKEY, client.key), "the client key \(client.key)")
        }
        // The request's proxy, else the environment's as libcurl would read it. Both options are
        // always set, so libcurl does not read the variables again for every transfer ("" means
        // no proxy, and no host exempt).
        let proxy = request.proxy ?? proxies.proxy(for: request.url) ?? ""
        set(sonde_curl_setopt_string(handle, CURLOPT_PROXY, proxy), "the proxy \(proxy)")
        set(sonde_curl_setopt_string(handle, CURLOPT_NOPROXY, proxies.noProxy ?? ""), "the no_proxy list")
        set(sonde_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, errorBuffer), "ERRORBUFFER")
        configureTLSAndCookies(handle, set)

        // Method and body.
        let method = request.method.uppercased()
        if method == "HEAD" {
            set(sonde_curl_setopt_long(handle, CURLOPT_NOBODY, 1), "NOBODY")
        } else if let body = request.body {
            set(sonde_curl_setopt_off_t(handle, CURLOPT_POSTFIELDSIZE_LARGE, curl_off_t(body.count)), "the body size")
            body.withUnsafeBytes { raw in
                // COPYPOSTFIELDS copies, so the bytes need not outlive this call.
                set(sonde_curl_setopt_pointer(handle, CURLOPT_COPYPOSTFIELDS, raw.baseAddress ?? UnsafeRawPointer(bitPattern: 1)!), "the body")
            }
            if method != "POST" { set(sonde_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method), "the method \(method)") }
        } else if method != "GET" {
            set(sonde_curl_setopt_string(handle, CURLOPT_CUSTOMREQUEST, method), "the method \(method)")
        }

        // Headers; "Expect:" stops curl waiting for a 100-continue on large bodies. A request
        // that asks for compression (Accept-Encoding) gets the body decoded, as a browser does,
        // so checks read text and `max_body` caps the decoded bytes (a gzip bomb stops at the
        // cap): by the write callback (`ContentDecoder`), not by curl, which is never given
        // ACCEPT_ENCODING and so decodes nothing.
        for header in request.headers {
            headerList = curl_slist_append(headerList, "\(header.name): \(header.value)")
        }
        // (curl sends Expect only with a body: none to stop on a bodyless request)
        if request.body != nil, request.headers.value(for: "Expect") == nil { headerList = curl_slist_append(headerList, "Expect:") }
        // A body without a Content-Type goes out without one (curl would label it
        // application/x-www-form-urlencoded, which it rarely is).
        if request.body != nil, request.headers.value(for: "Content-Type") == nil { headerList = curl_slist_append(headerList, "Content-Type:") }
        set(sonde_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList), "the headers")

        // Callbacks. Cancellation needs no progress callback: the loop removes a cancelled
        // transfer from the multi handle at once.
        set(sonde_curl_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION, { buffer, size, count, context in
            let state = Unmanaged<TransferState>.fromOpaque(context!).takeUnretainedValue()
            let bytes = size * count
            guard let buffer else { return bytes }
            if state.acceptedCodings != nil, let coding = state.codingsSeen.first {
                return state.decode(UnsafeRawBufferPointer(start: buffer, count: bytes), coding: coding)
            }
            if state.overShare(bytes) || !state.reserve(for: bytes) { return Int(CURL_WRITEFUNC_PAUSE) }
            return state.take(UnsafeRawBufferPointer(start: buffer, count: bytes)) ? bytes : 0
        }), "WRITEFUNCTION")
        set(sonde_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context), "WRITEDATA")
        set(sonde_curl_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION, { buffer, size, count, context in
            let state = Unmanaged<TransferState>.fromOpaque(context!).takeUnretainedValue()
            let bytes = size * count
            guard let buffer else { return bytes }
            // Trimmed and split on the bytes: Foundation's trimmingCharacters cost ~5 % of an
            // agent's CPU here (several header lines per request).
            state.headerBytes += bytes
            if state.headerBytes > CurlTransfer.maxHeaderBytes {
                state.headersTooLarge = true
                return 0  // curl aborts the transfer (CURLE_WRITE_ERROR)
            }
            // Typed, contiguous buffers: String(decoding:) then takes its fast path.
            let raw = trimmedASCII(UnsafeBufferPointer(start: UnsafeRawPointer(buffer).assumingMemoryBound(to: UInt8.self), count: bytes))
            if raw.starts(with: "HTTP/".utf8) {
                // A new response begins (after a 1xx or a redirect): keep only the last one's headers.
                state.headers.removeAll(keepingCapacity: true)
                state.codingsSeen.removeAll()
                state.dropDecoder()
                state.statusLine = String(decoding: raw, as: UTF8.self)
            } else if let colon = raw.firstIndex(of: UInt8(ascii: ":")) {
                let name = String(decoding: trimmedASCII(UnsafeBufferPointer(rebasing: raw[..<colon])), as: UTF8.self)
                let value = String(decoding: trimmedASCII(UnsafeBufferPointer(rebasing: raw[(colon + 1)...])), as: UTF8.self)
                if state.headers.isEmpty { state.headers.reserveCapacity(16) }
                state.headers.append(HTTPHeader(name, value))
                if let accepted = state.acceptedCodings, name.utf8.count == 16, HTTPHeader(name, "").isNamed("Content-Encoding") {
                    // Applied codings only: refused at the second, so a server repeating
                    // `identity` in every header line cannot grow the list.
                    state.codingsSeen += ContentCodings.applied(value)
                    if let refusal = ContentCodings.refusal(state.codingsSeen, accepted: accepted) {
                        state.decodeFailure = (.decodedTooLarge, "\(refusal): not decoded, whatever the step's max_body (a compression bomb?)")
                        return 0  // curl aborts the transfer (CURLE_WRITE_ERROR) before decoding any of it
                    }
                }
            }
            return bytes
        }), "HEADERFUNCTION")
        set(sonde_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context), "HEADERDATA")
        if request.innermostAddress != nil {
            // Once connected, before anything is sent: the address the hop reached.
            set(sonde_curl_setopt_prereq_callback(handle, { context, primary, _, _, _ in
                let state = Unmanaged<TransferState>.fromOpaque(context!).takeUnretainedValue()
                guard let allowed = state.innermostAddress, let primary else { return CURL_PREREQFUNC_OK }
                let address = String(cString: primary)
                guard let kind = AddressKind.of(address), kind > allowed else { return CURL_PREREQFUNC_OK }
                state.refusedAddress = (address, kind)
                return CURL_PREREQFUNC_ABORT
            }), "PREREQFUNCTION")
            set(sonde_curl_setopt_pointer(handle, CURLOPT_PREREQDATA, context), "PREREQDATA")
        }
        return setupError
    }

    /// The outcome of a transfer curl finished with `code` (already out of the multi handle).
    private func result(_ code: CURLcode) -> Result<HTTPResponse, HTTPTransferError> {
        // The TLS start is read (a clock read) only for a failure, where it places the phases.
        let timings = handle.map { Self.readTimings($0, failed: code == CURLE_OK ? nil : code, tlsStartedAgo: code == CURLE_OK ? nil : certificates?.tlsStartedAgo) } ?? .zero
        if code != CURLE_OK {
            let detail = String(cString: errorBuffer)
            let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            if let refused = state.refusedAddress, let allowed = state.innermostAddress {
                let text =
                    "a redirect to \(request.url) reached \(refused.address), a \(refused.kind) address, and was not followed: the request started at a \(allowed) address, and a server may not send the agent further inside the network (probe that address with its own step)"
                return .failure(HTTPTransferError(kind: .invalidRequest, curlCode: Int(code.rawValue), message: text, timings: timings))
            }
            if state.headersTooLarge {
                // The server's answer is broken, as a connection cut mid-response is (`connect`).
                let text = "response headers larger than \(Self.maxHeaderBytes / 1024) KiB: the server did not end its headers"
                return .failure(HTTPTransferError(kind: .connectionLost, curlCode: Int(code.rawValue), message: text, timings: timings))
            }
            if let failure = state.decodeFailure {
                return .failure(HTTPTransferError(kind: failure.kind, curlCode: Int(code.rawValue), message: failure.message, timings: timings))
            }
            if code == CURLE_OUT_OF_MEMORY, state.received == 0 {
                // libcurl refuses one header line over its own limit (100 KiB) with this code and
                // "Out of memory", which read as the agent's own fault (red team, 32nd session).
                let text = "a response header line longer than libcurl takes (about 100 KiB): the server's answer is broken"
                return .failure(HTTPTransferError(kind: .connectionLost, curlCode: Int(code.rawValue), message: text, timings: timings))
            }
            if code == CURLE_OPERATION_TIMEDOUT, state.waitingForMemory, let memory = state.memory {
                // Still counted as a time-out, but the operator is told where the time went.
                let waited = Int((ContinuousClock.now - state.waitingSince).wholeMilliseconds)
                let text =
                    "\(message), \(waited) ms of it paused for memory for the body: the agent's transfers held their budget for response bodies (limits.body_memory, \(memory.limit >> 20) MiB)"
                return .failure(HTTPTransferError(kind: .timeout, curlCode: Int(code.rawValue), message: text, timings: timings))
            }
            let kind = state.tooLarge ? .responseTooLarge : Self.classify(code, detail: message)
            let text = switch kind {
            case .responseTooLarge: "response larger than \(request.maxResponseBytes) bytes"
            case .cancelled: "request cancelled"
            default: Self.explain(code, message)
            }
            return .failure(HTTPTransferError(kind: kind, curlCode: Int(code.rawValue), message: text, timings: timings).withCertificate(certificates?.earliest))
        }

        if let decoder = state.decoder, !decoder.isComplete {
            // HTTP said the body was whole (its length, or the last chunk), its coding did not.
            // A status-only check would otherwise pass on half a body; Go's readers (and so
            // blackbox_exporter) fail it with "unexpected EOF".
            let text =
                "the response body's \(decoder.coding.rawValue) stream ends early (\(state.received) bytes of it decoded): the body was cut short by the server or a proxy on the way"
            return .failure(HTTPTransferError(kind: .connectionLost, curlCode: 0, message: text, timings: timings))
        }
        var status = 0
        var ip: UnsafeMutablePointer<CChar>? = nil
        var location: UnsafeMutablePointer<CChar>? = nil
        if let handle {
            _ = sonde_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
            _ = sonde_curl_getinfo_string(handle, CURLINFO_PRIMARY_IP, &ip)
            _ = sonde_curl_getinfo_string(handle, CURLINFO_REDIRECT_URL, &location)
        }
        // The status line's first word, found on its bytes (a Character-wise `split` of the line
        // was 2 % of an agent's instructions per probe).
        let version = state.statusLine.flatMap { line -> String? in
            let word = line.utf8.drop { $0 == UInt8(ascii: " ") }.prefix { $0 != UInt8(ascii: " ") }
            return word.isEmpty ? nil : String(decoding: word, as: UTF8.self)
        }
        var response = HTTPResponse(
            status: status, headers: state.headers, body: state.body, timings: timings,
            remoteAddress: ip.map { String(cString: $0) }, httpVersion: version,
            bodyByteCount: state.received, bodySHA256: state.hasher?.finish(), redirectURL: location.map { String(cString: $0) })
        if let handle { readTLSAndCookies(handle, into: &response) }
        return .success(response)
    }

    /// Answers a transfer whose time-out ended while it waited for a slot (every slot, or its
    /// origin's share of them, held by slow or hanging servers: `why`): a time-out, as the caller
    /// asked, with nothing sent.
    func expireUnstarted(_ why: String) {
        let waited = Int((ContinuousClock.now - submittedAt).wholeMilliseconds)
        answer(.failure(HTTPTransferError(
            kind: .timeout, curlCode: Int(CURLE_OPERATION_TIMEDOUT.rawValue),
            message: "timed out after \(waited) ms before it could start: \(why); nothing was sent")))
    }

    /// Frees the handle and answers the waiting caller; the transfer must be out of the multi
    /// handle (or never in it).
    func finish(_ code: CURLcode) {
        var outcome = result(code)
        if case .success(var response) = outcome {
            response.bodyHold = state.releaseMemory(handOver: true)
            outcome = .success(response)
        } else {
            _ = state.releaseMemory(handOver: false)
        }
        if let handle { curl_easy_cleanup(handle) }
        handle = nil
        answer(outcome)
    }

    private func answer(_ outcome: Result<HTTPResponse, HTTPTransferError>) {
        continuation.resume(returning: outcome)
    }

    private static let protocols = HTTPRequest.allowedSchemes.joined(separator: ",")

    /// IP version, certificate info and the run's cookie jar.
    private func configureTLSAndCookies(_ handle: UnsafeMutableRawPointer, _ set: (CURLcode, @autoclosure () -> String) -> Void) {
        // `connect_to`: this origin's connections go to another address; the URL's host still
        // names the server (SNI, certificate check, Host).
        if let target = request.connectTo, let origin = Origin(request.url) {
            connectToList = curl_slist_append(connectToList, target.curlEntry(host: origin.host, port: origin.port))
            set(sonde_curl_setopt_slist(handle, CURLOPT_CONNECT_TO, connectToList), "connect_to \(target.host)")
        }
        if let version = request.ipVersion {
            let resolve = version == .v4 ? CURL_IPRESOLVE_V4 : CURL_IPRESOLVE_V6
            set(sonde_curl_setopt_long(handle, CURLOPT_IPRESOLVE, Int(resolve)), "IPRESOLVE")
        }
        // The verified chain's expiry for `cert_valid_for` and the result (https probes only: a
        // connection kept for reuse would outlive the record).
        if !request.reuseConnection, request.url.utf8.count > 8, request.url.prefix(8).lowercased() == "https://" {
            do {
                certificates = try CertificateExpiry(tracking: handle)
            } catch {
                set(error.code, error.what)
            }
        }
        if let jar = request.cookieJar {
            set(sonde_curl_setopt_pointer(handle, CURLOPT_SHARE, jar.share), "the cookie jar")
            set(sonde_curl_setopt_string(handle, CURLOPT_COOKIEFILE, ""), "the cookie engine")
        }
    }

    private func readTLSAndCookies(_ handle: UnsafeMutableRawPointer, into response: inout HTTPResponse) {
        if let earliest = certificates?.earliest {
            response.certificateNotAfter = earliest.notAfter
            response.certificateSubject = earliest.subject
        }
        guard request.cookieJar != nil else { return }
        var list: UnsafeMutablePointer<curl_slist>?
        guard sonde_curl_getinfo_slist(handle, CURLINFO_COOKIELIST, &list) == CURLE_OK else { return }
        defer { curl_slist_free_all(list) }
        var lines: [String] = []
        var node = list
        while let entry = node {
            // A server may set 50 cookies a response, and a polling step gets many responses: the
            // jar is read whole after each one, on the thread every transfer shares, so only so far.
            guard lines.count < Self.mostCookies else {
                response.cookiesTruncated = true
                break
            }
            if let data = entry.pointee.data { lines.append(String(cString: data)) }
            node = entry.pointee.next
        }
        response.cookies = HTTPCookie.parse(netscapeLines: lines)
    }

    /// The most cookies read from a run's jar after a response.
    static let mostCookies = 512

    private static func milliseconds(_ duration: Duration) -> Int {
        max(1, Int(duration.wholeMilliseconds))
    }

    /// curl's `*_TIME_T` values are cumulative microseconds from the start of the transfer. They
    /// are made monotonic and split into phases that add up to the total exactly.
    ///
    /// A phase that never completed has 0. On success that means it did not happen (no TLS on
    /// http, no first byte of a body-less answer). On a transfer that `failed` (with that
    /// code), the first phase that never completed is the one that was under way: it runs until
    /// the failure, and the later ones get nothing (a refused connection is all dns + connect).
    /// Until the request is sent (pretransfer) there is no ttfb; once it is, waiting for an
    /// answer that never came is ttfb, not transfer.
    ///
    /// libcurl (7.88) sets the connect time only once the whole connection is up, TLS included,
    /// so a failed handshake leaves it 0 (seen with `curl -w`): the time after dns then goes
    /// to tls, the TCP connect included, since where it ended is not known.
    /// Phases are differences of curl's microsecond instants: rounded back to microseconds, so a
    /// result says `"connect": 0.299`, not `0.29900000000000004` (first-use review).
    /// `tlsStartedAgo`: how long before now the TLS set-up of a tracked handshake began, so that
    /// a handshake that failed or stalled before libcurl recorded its connect time is `tls`.
    static func readTimings(_ handle: UnsafeMutableRawPointer, failed code: CURLcode? = nil, tlsStartedAgo: Double? = nil) -> PhaseTimings {
        func info(_ what: CURLINFO) -> Double {
            var value: curl_off_t = 0
            return sonde_curl_getinfo_off_t(handle, what, &value) == CURLE_OK ? Double(value) / 1000 : 0
        }
        let total = info(CURLINFO_TOTAL_TIME_T)
        let rawDNS = info(CURLINFO_NAMELOOKUP_TIME_T)
        let rawConnect = info(CURLINFO_CONNECT_TIME_T)
        let rawTLS = info(CURLINFO_APPCONNECT_TIME_T)
        let requestSent = info(CURLINFO_PRETRANSFER_TIME_T) > 0
        let rawFirstByte = info(CURLINFO_STARTTRANSFER_TIME_T)
        if let code, !requestSent {
            // Failed while connecting: the phase under way ends at the failure.
            let dns = rawDNS > 0 ? min(rawDNS, total) : total
            let connect =
                rawConnect > 0 ? min(max(rawConnect, dns), total)
                : tlsStartedAgo.map { min(max(total - $0, dns), total) } ?? (classify(code) == .tls ? dns : total)
            return PhaseTimings(dns: dns, connect: connect - dns, tls: total - connect, total: total).atMicroseconds
        }
        let dns = min(rawDNS, total)
        let connect = rawConnect > 0 ? min(max(rawConnect, dns), total) : dns
        let ready = rawTLS > 0 ? min(max(rawTLS, connect), total) : connect
        let firstByte = rawFirstByte > 0 ? min(max(rawFirstByte, ready), total) : total
        return PhaseTimings(
            dns: dns, connect: connect - dns, tls: ready - connect, ttfb: firstByte - ready,
            transfer: total - firstByte, total: total).atMicroseconds
    }

    /// What failed, from curl's code and, where one code covers two causes, its message.
    static func classify(_ code: CURLcode, detail: String = "") -> HTTPTransferError.Kind {
        switch code {
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: .dns
        case CURLE_COULDNT_CONNECT: .connect
        case CURLE_OPERATION_TIMEDOUT: .timeout
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CIPHER, CURLE_SSL_ISSUER_ERROR,
            CURLE_SSL_PINNEDPUBKEYNOTMATCH, CURLE_SSL_INVALIDCERTSTATUS, CURLE_USE_SSL_FAILED:
            .tls
        // The agent's own TLS files (client certificate, CA bundle, CRL) could not be used: its
        // configuration, not the server (validate checks them when the probe is loaded).
        case CURLE_SSL_CERTPROBLEM, CURLE_SSL_CACERT_BADFILE, CURLE_SSL_CRL_BADFILE, CURLE_SSL_ENGINE_NOTFOUND:
            .invalidRequest
        // A TLS alert after the handshake (TLS 1.3 sends "certificate required" there, on the
        // first read) is the server refusing the session, as the same alert in a TLS 1.2
        // handshake is; a reset or a close is the connection lost.
        case CURLE_RECV_ERROR, CURLE_SEND_ERROR:
            detail.contains("SSL routines") && detail.contains(" alert ") ? .tls : .connectionLost
        case CURLE_GOT_NOTHING, CURLE_PARTIAL_FILE, CURLE_WEIRD_SERVER_REPLY, CURLE_HTTP2, CURLE_HTTP2_STREAM,
            CURLE_BAD_CONTENT_ENCODING:
            .connectionLost
        // Schemes are checked before curl sees a URL, so this is the server answering without
        // HTTP ("Received HTTP/0.9 when not allowed"): the server's fault, not the script's.
        case CURLE_UNSUPPORTED_PROTOCOL: .connectionLost
        case CURLE_ABORTED_BY_CALLBACK: .cancelled
        case CURLE_URL_MALFORMAT: .invalidRequest
        default: .other
        }
    }

    /// curl's message, with what to check where it alone would not say.
    static func explain(_ code: CURLcode, _ message: String) -> String {
        if message.contains("certificate required") {
            return message + " (the server requires a client certificate: set the step's tls.cert and tls.key)"
        }
        if code == CURLE_UNSUPPORTED_PROTOCOL || message.contains("HTTP/0.9") {
            return "the server did not answer with HTTP (\(message)): is another service on this port?"
        }
        if message.contains("wrong version number") {
            return message + " (the server did not answer with TLS: a plain-text port?)"
        }
        return message
    }
}

/// `bytes` without leading and trailing ASCII spaces, tabs, CRs and LFs.
private func trimmedASCII(_ bytes: UnsafeBufferPointer<UInt8>) -> UnsafeBufferPointer<UInt8> {
    func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
    var start = bytes.startIndex
    var end = bytes.endIndex
    while start < end, isSpace(bytes[start]) { start += 1 }
    while end > start, isSpace(bytes[end - 1]) { end -= 1 }
    return UnsafeBufferPointer(rebasing: bytes[start..<end])
}
