/// Prometheus text exposition format 0.0.4, written by hand: the collector's and the agent's
/// `/metrics` (one renderer for both, so both print values the same way).
public struct PrometheusText: Sendable {
    public private(set) var text = ""
    private var declared = Set<String>()

    public init() {}

    public mutating func declare(_ name: String, type: String, help: String) {
        guard declared.insert(name).inserted else { return }
        text += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
    }

    public mutating func reserve(_ bytes: Int) { text.reserveCapacity(bytes) }

    public mutating func sample(_ name: String, _ labels: [(String, String)] = [], _ value: Double) {
        sample(name, rendered: labels.isEmpty ? "" : Self.labels(labels), value)
    }

    /// A sample whose label set is already rendered (`{a="b",…}` or empty).
    public mutating func sample(_ name: String, rendered labels: String, _ value: Double) {
        text += name
        text += labels
        text += " "
        text += Self.format(value)
        text += "\n"
    }

    /// A histogram without labels: `buckets` are the upper bounds (ascending) and the cumulative
    /// counts of observations at or below each; `+Inf` is `count`.
    public mutating func histogram(_ name: String, help: String, buckets: [(le: Double, count: UInt64)], sum: Double, count: UInt64) {
        declare(name, type: "histogram", help: help)
        for bucket in buckets { sample(name + "_bucket", [("le", Self.format(bucket.le))], Double(bucket.count)) }
        sample(name + "_bucket", [("le", "+Inf")], Double(count))
        sample(name + "_sum", [], sum)
        sample(name + "_count", [], Double(count))
    }

    /// The standard process series (names and help as Prometheus's own clients write them), and
    /// `sonde_build_info`.
    public mutating func processAndBuild(_ p: ProcessStats) {
        declare("sonde_build_info", type: "gauge", help: "Always 1; the labels say which build is running.")
        sample("sonde_build_info", [("version", SondeBuildInfo.version), ("commit", SondeBuildInfo.commit), ("date", SondeBuildInfo.date)], 1)
        let series: [(String, String, String, Double?)] = [
            ("process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", p.cpuSeconds),
            ("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.residentBytes),
            ("process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", p.virtualBytes),
            ("process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.", p.startTime),
            ("process_open_fds", "gauge", "Number of open file descriptors.", p.openFDs),
            ("process_max_fds", "gauge", "Maximum number of open file descriptors.", p.maxFDs),
        ]
        for (name, type, help, value) in series {
            guard let value else { continue }
            declare(name, type: type, help: help)
            sample(name, [], value)
        }
    }

    public static func labels(_ labels: [(String, String)]) -> String {
        "{" + labels.map { "\($0.0)=\"\(escape($0.1))\"" }.joined(separator: ",") + "}"
    }

    /// A label value with `\`, `"` and newlines escaped as the format requires.
    public static func escape(_ value: String) -> String {
        // Most values need nothing: scan the bytes before building a new string.
        guard value.utf8.contains(where: { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\n") }) else { return value }
        var out = ""
        out.reserveCapacity(value.utf8.count + 8)
        for character in value.unicodeScalars {
            switch character {
            case "\\": out += "\\\\"
            case "\"": out += "\\\""
            case "\n": out += "\\n"
            default: out.unicodeScalars.append(character)
            }
        }
        return out
    }

    /// Shortest text that reads back as the same Double (Swift's description), integers without
    /// a fraction. Durations are rounded to microseconds before they get here (``seconds(ms:)``),
    /// so 3.452 ms prints as 0.003452, not 0.0034519999999999998.
    public static func format(_ value: Double) -> String {
        if value.isNaN { return "NaN" }
        if value.isInfinite { return value > 0 ? "+Inf" : "-Inf" }
        if value == value.rounded(), abs(value) < 1e15 { return String(Int64(value)) }
        return String(value)
    }

    /// Milliseconds as seconds at microsecond resolution (what the timings carry).
    public static func seconds(ms: Double) -> Double { (ms * 1000).rounded() / 1_000_000 }
}
