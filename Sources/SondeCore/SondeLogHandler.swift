#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials
import Logging

/// The programs' log lines on stderr, one `write` each, in one of two formats (`--log-format`):
/// - `text` (default): swift-log's `StreamLogHandler` layout (time, level, label, metadata,
///   `[source]`, message), except that a metadata value holding a space, a quote, `=`, a
///   backslash or a control character, or nothing, is quoted as logfmt quotes it. So every
///   `key=value` pair reads back whole with a logfmt parser (Loki's `| logfmt`, Vector, promtail):
///   `error="connect: Failed to connect to 127.0.0.1 port 9093"`, not `error=connect:` and stray keys.
/// - `json`: one JSON object per line, `ts` (RFC 3339, UTC, milliseconds), `level`, `logger`,
///   `source`, `msg`, then each metadata key, as Prometheus's `--log.format=json` gives a log
///   shipper fields it needs no parser for.
public struct SondeLogHandler: LogHandler {
    public var logLevel: Logger.Level = .info
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: LogFormat

    public init(label: String, level: Logger.Level = .info, format: LogFormat = .text) {
        self.label = label
        self.format = format
        logLevel = level
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        let bytes = Array(line(for: event).utf8)
        // One write per line: lines from several threads do not interleave.
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// The whole line, `\n` included, in this handler's format.
    func line(for event: LogEvent) -> String {
        var merged = metadata
        if let provided = metadataProvider?.get() { merged.merge(provided) { $1 } }
        if let explicit = event.metadata { merged.merge(explicit) { $1 } }
        if let error = event.error {
            merged["error.message"] = "\(error)"
            merged["error.type"] = "\(String(reflecting: type(of: error)))"
        }
        return format == .json ? jsonLine(event, merged) : textLine(event, merged)
    }

    private func textLine(_ event: LogEvent, _ merged: Logger.Metadata) -> String {
        var line = Self.timestamp() + " \(event.level)" + (label.isEmpty ? "" : " ") + label + ":"
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            line += " " + key + "=" + Self.quoted("\(value)")
        }
        return line + " [\(event.source)] \(event.message)\n"
    }

    private func jsonLine(_ event: LogEvent, _ merged: Logger.Metadata) -> String {
        let fixed: [(String, String)] = [
            ("ts", RFC3339.string(from: Date())), ("level", "\(event.level)"), ("logger", label), ("source", event.source), ("msg", "\(event.message)"),
        ]
        var line = "{" + fixed.map { jsonQuoted($0.0) + ":" + jsonQuoted($0.1) }.joined(separator: ",")
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) {
            // A metadata key named like a fixed field keeps its value under `meta.`, so `msg` stays the message.
            let name = fixed.contains { $0.0 == key } ? "meta." + key : key
            line += "," + jsonQuoted(name) + ":" + Self.json(value)
        }
        return line + "}\n"
    }

    /// Strings stay strings; a metadata array or dictionary becomes a JSON array or object.
    private static func json(_ value: Logger.MetadataValue) -> String {
        switch value {
        case .string(let text): jsonQuoted(text)
        case .stringConvertible(let item): jsonQuoted(item.description)
        case .array(let items): "[" + items.map(json).joined(separator: ",") + "]"
        case .dictionary(let entries): "{" + entries.sorted { $0.key < $1.key }.map { jsonQuoted($0.key) + ":" + json($0.value) }.joined(separator: ",") + "}"
        }
    }

    /// `value` as logfmt writes it: bare when it needs no quotes, else a quoted string with `"`,
    /// `\` and control characters escaped.
    public static func quoted(_ value: String) -> String {
        let needsQuotes = value.isEmpty || value.unicodeScalars.contains {
            $0 == " " || $0 == "\"" || $0 == "=" || $0 == "\\" || ResultText.isControl($0) || ResultText.isBidiFormat($0)
        }
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

/// `--log-format`.
public enum LogFormat: String, CaseIterable, Sendable {
    case text, json
}
