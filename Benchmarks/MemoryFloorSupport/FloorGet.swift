// What the cost benchmark's Swift floors share: the benchmark's GET over libcurl's easy interface
// (fresh connection each) and the process's CPU time and peak RSS. The standard library and
// libcurl only, so that the Swift floor measures nothing else.
import CCurl
#if canImport(Glibc)
import Glibc
#endif

/// Peak resident set size (`VmHWM`) in KiB, -1 when /proc cannot be read.
public func peakRSSKiB() -> Int {
    guard let file = fopen("/proc/self/status", "r") else { return -1 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(decoding: line.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        if text.hasPrefix("VmHWM:") { return Int(text.dropFirst(6).filter(\.isNumber)) ?? -1 }
    }
    return -1
}

/// User + system CPU seconds of this process.
public func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

private let discard: sonde_curl_data_callback = { _, size, count, _ in size * count }

/// One GET of `url` on a fresh connection, body discarded; true for a 200.
public func floorGet(_ url: String) -> Bool {
    guard let handle = curl_easy_init() else { return false }
    defer { curl_easy_cleanup(handle) }
    _ = sonde_curl_setopt_string(handle, CURLOPT_URL, url)
    _ = sonde_curl_setopt_data_callback(handle, CURLOPT_WRITEFUNCTION, discard)
    _ = sonde_curl_setopt_long(handle, CURLOPT_FRESH_CONNECT, 1)
    _ = sonde_curl_setopt_long(handle, CURLOPT_FORBID_REUSE, 1)
    _ = sonde_curl_setopt_long(handle, CURLOPT_TIMEOUT_MS, 5000)
    var status = 0
    let code = curl_easy_perform(handle)
    _ = sonde_curl_getinfo_long(handle, CURLINFO_RESPONSE_CODE, &status)
    return code == CURLE_OK && status == 200
}

/// libcurl's global set-up (TLS included), as the agent does it.
public func floorCurlSetUp() {
    curl_global_init(Int(CURL_GLOBAL_ALL))
}

/// The command line both floors take: URL COUNT RATE_PER_SECOND; exits 2 with usage otherwise.
public func floorArguments(_ name: String) -> (url: String, count: Int, rate: Double) {
    let arguments = CommandLine.arguments
    guard arguments.count == 4, let count = Int(arguments[2]), let rate = Double(arguments[3]), rate > 0 else {
        floorFail("usage: \(name) URL COUNT RATE_PER_SECOND", status: 2)
    }
    return (arguments[1], count, rate)
}

/// Prints `message` on stderr and exits with `status`.
public func floorFail(_ message: String, status: Int32 = 1) -> Never {
    let line = Array((message + "\n").utf8)
    _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    exit(status)
}
