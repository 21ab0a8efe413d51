#if canImport(Glibc)
import Glibc
#endif

/// This process's own figures for Prometheus's standard `process_*` series (the names and meanings
/// of the Go and Python clients), read from /proc/self on Linux. Fields are nil where /proc is
/// missing or says something unexpected; the caller then leaves the series out.
public struct ProcessStats: Sendable {
    public var cpuSeconds: Double?
    public var residentBytes: Double?
    public var virtualBytes: Double?
    /// Seconds since the Unix epoch when the process started.
    public var startTime: Double?
    public var openFDs: Double?
    public var maxFDs: Double?

    public static func current() -> ProcessStats {
        var stats = ProcessStats()
        let ticks = Double(sysconf(Int32(_SC_CLK_TCK)))
        let page = Double(sysconf(Int32(_SC_PAGESIZE)))
        // /proc/self/stat: fields after the parenthesised name; utime, stime are 14 and 15,
        // starttime 22, vsize 23, rss (pages) 24 (1-based, proc(5)).
        if let stat = readSmallFile("/proc/self/stat"), let close = stat.lastIndex(of: ")") {
            let fields = stat[stat.index(after: close)...].split(separator: " ")
            func field(_ n: Int) -> Double? { fields.count > n - 3 ? Double(fields[n - 3]) : nil }
            if let utime = field(14), let stime = field(15), ticks > 0 { stats.cpuSeconds = (utime + stime) / ticks }
            stats.virtualBytes = field(23)
            if let rss = field(24) { stats.residentBytes = rss * page }
            if let start = field(22), ticks > 0, let boot = bootTime() { stats.startTime = boot + start / ticks }
        }
        stats.openFDs = countEntries("/proc/self/fd")
        var limit = rlimit()
        if getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 { stats.maxFDs = Double(limit.rlim_cur) }
        return stats
    }

    private static func bootTime() -> Double? {
        guard let text = readSmallFile("/proc/stat") else { return nil }
        for line in text.split(separator: "\n") where line.hasPrefix("btime ") {
            return Double(line.dropFirst(6).trimmed())
        }
        return nil
    }

    private static func countEntries(_ path: String) -> Double? {
        guard let dir = opendir(path) else { return nil }
        defer { closedir(dir) }
        var count = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            if name != "." && name != ".." { count += 1 }
        }
        return Double(count - 1)  // less the descriptor opendir itself holds
    }

    /// A /proc file's text (they report size 0, so read until EOF), at most 64 KiB.
    private static func readSmallFile(_ path: String) -> String? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while bytes.count < 65536 {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            bytes += buffer[0..<n]
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
