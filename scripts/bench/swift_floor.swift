// The floor under any Swift agent on libcurl, for the cost benchmark's memory column: what
// curl_floor.c does, in Swift with the runtime linked statically and nothing else (no
// Foundation, no Dispatch). Built by scripts/bench/agent_bench.py with
// `swiftc -O -static-stdlib -I Sources/CCurl swift_floor.swift -lcurl`.
import CCurl

#if canImport(Glibc)
import Glibc
#endif

func cpuSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6
        + Double(usage.ru_stime.tv_sec) + Double(usage.ru_stime.tv_usec) / 1e6
}

func peakRSSKiB() -> Int {
    guard let file = fopen("/proc/self/status", "r") else { return -1 }
    defer { fclose(file) }
    var line = [CChar](repeating: 0, count: 256)
    while fgets(&line, Int32(line.count), file) != nil {
        let text = String(cString: line)
        if text.hasPrefix("VmHWM:") { return Int(text.dropFirst(6).filter(\.isNumber)) ?? -1 }
    }
    return -1
}

let discard: sonde_curl_data_callback = { _, size, count, _ in size * count }

func get(_ url: String) -> Bool {
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

let arguments = CommandLine.arguments
guard arguments.count == 4, let count = Int(arguments[2]), let rate = Double(arguments[3]) else {
    fputs("usage: swift_floor URL COUNT RATE_PER_SECOND\n", stderr)
    exit(2)
}
let url = arguments[1]
curl_global_init(Int(CURL_GLOBAL_ALL))
for _ in 0..<50 where !get(url) {
    fputs("GET \(url) failed\n", stderr)
    exit(1)
}
var start = timespec()
clock_gettime(CLOCK_MONOTONIC, &start)
let cpu0 = cpuSeconds()
var failed = 0
for i in 0..<count {
    let due = Double(i) / rate
    var at = start
    at.tv_sec += Int(due)
    at.tv_nsec += Int((due - Double(Int(due))) * 1e9)
    if at.tv_nsec >= 1_000_000_000 { at.tv_sec += 1; at.tv_nsec -= 1_000_000_000 }
    clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at, nil)
    if !get(url) { failed += 1 }
}
let cpu = cpuSeconds() - cpu0
print("{\"gets\": \(count), \"failed\": \(failed), \"cpu_per_get_ms\": \(cpu / Double(count) * 1000), \"hwm_kib\": \(peakRSSKiB())}")
exit(failed == 0 ? 0 : 1)
