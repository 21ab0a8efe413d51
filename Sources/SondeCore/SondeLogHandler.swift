#if canImport(Glibc)
import Glibc
#endif
import Logging

/// The programs' log lines: swift-log's `StreamLogHandler` layout (time, level, label, metadata,
/// `[source]`, message) on stderr, except that a metadata value holding a space, a quote, `=`, a
/// backslash or a control character, or nothing, is quoted as logfmt quotes it. So every
/// `key=value` pair reads back whole with a logfmt parser (Loki's `| logfmt`, Vector, promtail):
/// `error="connect: Failed to connect to 127.0.0.1 port 9093"`, not `error=connect:` and stray keys.
public struct SondeLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String

    public init(label: String, level: Logger.Level = .info) {
        self.label = label
        logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let explicit = event.metadata { merged.merge(explicit) { $1 } }
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        var line = Self.timestamp() + " \(event.level)" + (label.isEmpty ? "" : " ") + label + ":"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " " + key + "=" + Self.quoted("\(value)")
        }
        line += " [\(event.source)] \(event.message)\n"
        let bytes = Array(line.utf8)
        // One write per line: lines from several threads do not interleave.
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// `value` as logfmt writes it: bare when it needs no quotes, else a quoted string with `"`,
    /// `\` and control characters escaped.
    public static func quoted(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.unicodeScalars.contains { $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || $0.value < 0x20 || $0.value == 0x7F }
        return needsQuotes ? jsonQuoted(value) : value
    }

    private static func timestamp() -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        var now = time(nil)
        var local = tm()
        localtime_r(&now, &local)
        let count = strftime(&buffer, buffer.count, "%Y-%m-%dT%H:%M:%S%z", &local)
        return String(decoding: buffer.prefix(count).map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}
