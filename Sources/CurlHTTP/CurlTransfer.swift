import CCurl
import Foundation
import SondeCore
import Synchronization

/// `curl_global_init` must run once, before any handle exists.
private let curlGlobalInit: Void = {
    let code = curl_global_init(Int(CURL_GLOBAL_ALL))
    precondition(code == CURLE_OK, "curl_global_init failed: \(code)")
}()

/// Set from another task to abort a transfer at curl's next progress callback.
final class CancelToken: Sendable {
    let cancelled = Atomic<Bool>(false)
    func cancel() { cancelled.store(true, ordering: .relaxed) }
    var isCancelled: Bool { cancelled.load(ordering: .relaxed) }
}

/// What the C callbacks write into during one transfer. Lives only on the worker thread that
/// runs the transfer.
private final class TransferState {
    var body = Data()
    var headers: [HTTPHeader] = []
    var statusLine: String?
    var tooLarge = false
    let maxBytes: Int
    let cancel: CancelToken

    init(maxBytes: Int, cancel: CancelToken) {
        self.maxBytes = maxBytes
        self.cancel = cancel
    }
}

/// One blocking transfer on one curl easy handle. The handle is created, used and cleaned up here
/// on a single worker thread; it never crosses tasks.
enum CurlTransfer {
    static func perform(_ request: HTTPRequest, cancel: CancelToken) -> Result<HTTPResponse, HTTPTransferError> {
        _ = curlGlobalInit
        guard let handle = curl_easy_init() else {
            return .failure(HTTPTransferError(kind: .other, curlCode: 0, message: "curl_easy_init failed (out of memory?)"))
        }
        defer { curl_easy_cleanup(handle) }

        let state = TransferState(maxBytes: request.maxResponseBytes, cancel: cancel)
        let context = Unmanaged.passUnretained(state).toOpaque()
        var errorBuffer = [CChar](repeating: 0, count: Int(CURL_ERROR_SIZE) + 1)
        var headerList: UnsafeMutablePointer<curl_slist>? = nil
        defer { curl_slist_free_all(headerList) }

        var setupError: String?
        func set(_ code: CURLcode, _ what: String) {
            if code != CURLE_OK, setupError == nil {
                setupError = "curl rejected \(what): \(String(cString: curl_easy_strerror(code)))"
            }
        }

        set(sonde_curl_setopt_string(handle, CURLOPT_URL, request.url), "the URL \(request.url)")
        set(sonde_curl_setopt_long(handle, CURLOPT_NOSIGNAL, 1), "NOSIGNAL")
        set(sonde_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, milliseconds(request.timeout)), "the time-out")
        if let connect = request.connectTimeout {
            set(sonde_curl_setopt_long(handle, CURLOPT_CONNECTTIMEOUT_MS, milliseconds(connect)), "the connect time-out")
        }
        set(sonde_curl_setopt_long(handle, CURLOPT_FOLLOWLOCATION, request.followRedirects ? 1 : 0), "FOLLOWLOCATION")
        set(sonde_curl_setopt_long(handle, CURLOPT_MAXREDIRS, 10), "MAXREDIRS")
        set(sonde_curl_setopt_long(handle, CURLOPT_SSL_VERIFYPEER, request.verifyTLS ? 1 : 0), "SSL_VERIFYPEER")
        set(sonde_curl_setopt_long(handle, CURLOPT_SSL_VERIFYHOST, request.verifyTLS ? 2 : 0), "SSL_VERIFYHOST")
        if let caFile = request.caFile { set(sonde_curl_setopt_string(handle, CURLOPT_CAINFO, caFile), "the CA file \(caFile)") }
        if let proxy = request.proxy { set(sonde_curl_setopt_string(handle, CURLOPT_PROXY, proxy), "the proxy \(proxy)") }
        set(sonde_curl_setopt_pointer(handle, CURLOPT_ERRORBUFFER, &errorBuffer), "ERRORBUFFER")

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

        // Headers; "Expect:" stops curl waiting for a 100-continue on large bodies.
        for header in request.headers { headerList = curl_slist_append(headerList, "\(header.name): \(header.value)") }
        if request.headers.value(for: "Expect") == nil { headerList = curl_slist_append(headerList, "Expect:") }
        set(sonde_curl_setopt_slist(handle, CURLOPT_HTTPHEADER, headerList), "the headers")

        // Callbacks.
        set(sonde_curl_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION, { buffer, size, count, context in
            let state = Unmanaged<TransferState>.fromOpaque(context!).takeUnretainedValue()
            let bytes = size * count
            if state.body.count + bytes > state.maxBytes {
                state.tooLarge = true
                return 0
            }
            if let buffer { state.body.append(UnsafeRawPointer(buffer).assumingMemoryBound(to: UInt8.self), count: bytes) }
            return bytes
        }), "WRITEFUNCTION")
        set(sonde_curl_setopt_pointer(handle, CURLOPT_WRITEDATA, context), "WRITEDATA")
        set(sonde_curl_setopt_data_callback(handle, CURLOPT_HEADERFUNCTION, { buffer, size, count, context in
            let state = Unmanaged<TransferState>.fromOpaque(context!).takeUnretainedValue()
            let bytes = size * count
            guard let buffer else { return bytes }
            // Trimmed and split on the bytes: Foundation's trimmingCharacters cost ~5 % of an
            // agent's CPU here (several header lines per request).
            let raw = trimmedASCII(UnsafeRawBufferPointer(start: buffer, count: bytes))
            if raw.starts(with: "HTTP/".utf8) {
                // A new response begins (after a 1xx or a redirect): keep only the last one's headers.
                state.headers.removeAll()
                state.statusLine = String(decoding: raw, as: UTF8.self)
            } else if let colon = raw.firstIndex(of: UInt8(ascii: ":")) {
                let name = String(decoding: trimmedASCII(UnsafeRawBufferPointer(rebasing: raw[..<colon])), as: UTF8.self)
                let value = String(decoding: trimmedASCII(UnsafeRawBufferPointer(rebasing: raw[(colon + 1)...])), as: UTF8.self)
                state.headers.append(HTTPHeader(name, value))
            }
            return bytes
        }), "HEADERFUNCTION")
        set(sonde_curl_setopt_pointer(handle, CURLOPT_HEADERDATA, context), "HEADERDATA")
        set(sonde_curl_setopt_long(handle, CURLOPT_NOPROGRESS, 0), "NOPROGRESS")
        set(sonde_curl_setopt_xferinfo_callback(handle, { context, _, _, _, _ in
            let state = Unmanaged<TransferState>.fromOpaque(context!).takeUnretainedValue()
            return state.cancel.isCancelled ? 1 : 0
        }), "XFERINFOFUNCTION")
        set(sonde_curl_setopt_pointer(handle, CURLOPT_XFERINFODATA, context), "XFERINFODATA")

        if let setupError {
            return .failure(HTTPTransferError(kind: .invalidRequest, curlCode: 0, message: setupError))
        }

        let code = curl_easy_perform(handle)
        let timings = readTimings(handle)
        if code != CURLE_OK {
            let detail = String(decoding: errorBuffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            let message = detail.isEmpty ? String(cString: curl_easy_strerror(code)) : detail
            let kind = state.tooLarge ? .responseTooLarge : classify(code)
            let text = switch kind {
            case .responseTooLarge: "response larger than \(request.maxResponseBytes) bytes"
            case .cancelled: "request cancelled"
            default: message
            }
            return .failure(HTTPTransferError(kind: kind, curlCode: Int(code.rawValue), message: text, timings: timings))
        }

        var status = 0
        _ = sonde_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
        var ip: UnsafeMutablePointer<CChar>? = nil
        _ = sonde_curl_getinfo_string(handle, CURLINFO_PRIMARY_IP, &ip)
        let version = state.statusLine.flatMap { $0.split(separator: " ").first.map(String.init) }
        return .success(HTTPResponse(
            status: status, headers: state.headers, body: state.body, timings: timings,
            remoteAddress: ip.map { String(cString: $0) }, httpVersion: version))
    }

    private static func milliseconds(_ duration: Duration) -> Int {
        let (seconds, attoseconds) = duration.components
        return max(1, Int(seconds) * 1000 + Int(attoseconds / 1_000_000_000_000_000))
    }

    /// curl's `*_TIME_T` values are cumulative microseconds from the start of the transfer. They
    /// are made monotonic (a phase that did not happen has 0) and split into phases that add up
    /// to the total exactly.
    static func readTimings(_ handle: UnsafeMutableRawPointer) -> PhaseTimings {
        func info(_ what: CURLINFO) -> Double {
            var value: curl_off_t = 0
            return sonde_curl_getinfo_off_t(handle, what, &value) == CURLE_OK ? Double(value) / 1000 : 0
        }
        let total = info(CURLINFO_TOTAL_TIME_T)
        let dns = min(info(CURLINFO_NAMELOOKUP_TIME_T), total)
        let rawConnect = info(CURLINFO_CONNECT_TIME_T)
        let connect = rawConnect > 0 ? min(max(rawConnect, dns), total) : dns
        let rawTLS = info(CURLINFO_APPCONNECT_TIME_T)
        let ready = rawTLS > 0 ? min(max(rawTLS, connect), total) : connect
        let rawFirstByte = info(CURLINFO_STARTTRANSFER_TIME_T)
        let firstByte = rawFirstByte > 0 ? min(max(rawFirstByte, ready), total) : total
        return PhaseTimings(
            dns: dns, connect: connect - dns, tls: ready - connect, ttfb: firstByte - ready,
            transfer: total - firstByte, total: total)
    }

    static func classify(_ code: CURLcode) -> HTTPTransferError.Kind {
        switch code {
        case CURLE_COULDNT_RESOLVE_HOST, CURLE_COULDNT_RESOLVE_PROXY: .dns
        case CURLE_COULDNT_CONNECT: .connect
        case CURLE_OPERATION_TIMEDOUT: .timeout
        case CURLE_SSL_CONNECT_ERROR, CURLE_PEER_FAILED_VERIFICATION, CURLE_SSL_CERTPROBLEM, CURLE_SSL_CIPHER,
            CURLE_SSL_CACERT_BADFILE, CURLE_SSL_ISSUER_ERROR, CURLE_SSL_PINNEDPUBKEYNOTMATCH,
            CURLE_SSL_INVALIDCERTSTATUS, CURLE_USE_SSL_FAILED, CURLE_SSL_ENGINE_NOTFOUND, CURLE_SSL_CRL_BADFILE:
            .tls
        case CURLE_GOT_NOTHING, CURLE_RECV_ERROR, CURLE_SEND_ERROR, CURLE_PARTIAL_FILE, CURLE_WEIRD_SERVER_REPLY,
            CURLE_HTTP2, CURLE_HTTP2_STREAM:
            .connectionLost
        case CURLE_ABORTED_BY_CALLBACK: .cancelled
        case CURLE_URL_MALFORMAT, CURLE_UNSUPPORTED_PROTOCOL: .invalidRequest
        default: .other
        }
    }
}

/// `bytes` without leading and trailing ASCII spaces, tabs, CRs and LFs.
private func trimmedASCII(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer.SubSequence {
    func isSpace(_ byte: UInt8) -> Bool { byte == 0x20 || byte == 0x09 || byte == 0x0D || byte == 0x0A }
    var start = bytes.startIndex
    var end = bytes.endIndex
    while start < end, isSpace(bytes[start]) { start += 1 }
    while end > start, isSpace(bytes[end - 1]) { end -= 1 }
    return bytes[start..<end]
}
