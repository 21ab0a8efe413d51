import CCurl
import Synchronization

/// Easy handles kept by one `CurlMultiLoop` for its next transfers, reset to curl's defaults.
/// Creating and freeing a handle per transfer (the handle, its 16 KiB receive buffer, the
/// resolver's state) was 0.04–0.07 ms of a 0.27–0.33 ms GET in C on this libcurl
/// (BENCHMARKS-agent.md, sixteenth session); a reset handle costs none of that.
///
/// `curl_easy_reset` puts every option back to its default, but keeps what the handle holds
/// outside its options: the TLS session cache, the cookies and an attached share. So a handle
/// comes back only when none of those can carry anything over: its transfer had no cookie jar
/// (the jar is a share, and turns the cookie engine on), and every transfer turns TLS session
/// caching off (`CURLOPT_SSL_SESSIONID_CACHE`, as a fresh handle per transfer always had it
/// in effect: every probe's TLS handshake is a full one). The DNS cache is the multi handle's
/// while a handle is in it, and probes turn it off.
///
/// Only the loop thread uses it (no lock); `spareCount` may be read from anywhere (tests).
final class CurlHandlePool: @unchecked Sendable {
    /// Enough for the transfers a loop runs at once at everyday rates; a handle over it is freed.
    static let capacity = 8

    private var spare: [UnsafeMutableRawPointer] = []

    /// How many handles are kept now.
    let spareCount = Atomic<Int>(0)

    init() { spare.reserveCapacity(Self.capacity) }

    /// A reset handle, or a new one (nil: out of memory).
    func take() -> UnsafeMutableRawPointer? {
        guard let handle = spare.popLast() else { return curl_easy_init() }
        spareCount.store(spare.count, ordering: .relaxed)
        return handle
    }

    /// Keeps `handle` (out of the multi handle) for a later transfer when `reusable`, else frees it.
    func give(_ handle: UnsafeMutableRawPointer, reusable: Bool) {
        guard reusable, spare.count < Self.capacity else {
            curl_easy_cleanup(handle)
            return
        }
        curl_easy_reset(handle)
        spare.append(handle)
        spareCount.store(spare.count, ordering: .relaxed)
    }

    /// Frees every kept handle (the loop is ending).
    func drain() {
        for handle in spare { curl_easy_cleanup(handle) }
        spare.removeAll()
        spareCount.store(0, ordering: .relaxed)
    }
}
