// The floor under any Swift agent on libcurl, for the cost benchmark's memory column: what
// scripts/bench/curl_floor.c does, in Swift with nothing but the standard library and libcurl
// (no Foundation, no Dispatch, no concurrency). Prints {"gets", "failed", "cpu_per_get_ms", "hwm_kib"}.
import MemoryFloorSupport
#if canImport(Glibc)
import Glibc
#endif

@main
enum SwiftFloor {
    static func main() {
        let (url, count, rate) = floorArguments("sonde-swift-floor")
        floorCurlSetUp()
        for _ in 0..<50 where !floorGet(url) { floorFail("GET \(url) failed") }
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
            if !floorGet(url) { failed += 1 }
        }
        let cpu = cpuSeconds() - cpu0
        print("{\"gets\": \(count), \"failed\": \(failed), \"cpu_per_get_ms\": \(cpu / Double(count) * 1000), \"hwm_kib\": \(peakRSSKiB())}")
        exit(failed == 0 ? 0 : 1)
    }
}
