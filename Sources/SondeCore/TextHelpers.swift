import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

// The few text helpers the agent side needs that live in Foundation proper, not in
// FoundationEssentials: the agent imports only the latter so that it never loads Foundation and
// ICU (about 14 MiB of resident memory per agent).

extension StringProtocol {
    /// The text without leading and trailing white space, line breaks included.
    public func trimmed() -> String {
        guard let first = firstIndex(where: { !$0.isWhitespace }) else { return "" }
        let last = lastIndex(where: { !$0.isWhitespace })!
        return String(self[first...last])
    }

    /// Every occurrence of `needle` replaced by `replacement`; the text unchanged for an empty needle.
    public func replacingAll(_ needle: String, with replacement: String) -> String {
        guard !needle.isEmpty else { return String(self) }
        return String(self).replacing(needle, with: replacement)
    }
}

extension Unicode.Scalar {
    /// `a`–`z`, `A`–`Z`: the letters names and URL-safe forms allow (not Unicode letters).
    public var isASCIILetter: Bool { ("a"..."z").contains(self) || ("A"..."Z").contains(self) }
    /// An ASCII letter or `0`–`9`.
    public var isASCIIAlphanumeric: Bool { isASCIILetter || ("0"..."9").contains(self) }
}

/// A byte size as config files and probe scripts write it: `256MiB`, `10MB`, `512KiB`, `4096`.
public func parseByteSize(_ text: String) -> Int? {
    let trimmed = text.trimmed()
    let units: [(String, Int)] = [
        ("KiB", 1 << 10), ("MiB", 1 << 20), ("GiB", 1 << 30),
        ("KB", 1000), ("MB", 1_000_000), ("GB", 1_000_000_000), ("K", 1 << 10), ("M", 1 << 20), ("G", 1 << 30), ("B", 1),
    ]
    for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
        let number = trimmed.dropLast(suffix.count).trimmed()
        guard let value = Double(number), value >= 0, value.isFinite, value * Double(scale) < 0x1p62 else { continue }
        return Int(value * Double(scale))
    }
    return Int(trimmed).flatMap { $0 >= 0 ? $0 : nil }
}

/// `text` as a JSON string literal (quotes, backslashes and control characters escaped): for
/// JSON bodies written in YAML order and for quoted log values alike.
public func jsonQuoted(_ text: String) -> String {
    var out = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": out += "\\\""
        case "\\": out += "\\\\"
        case "\n": out += "\\n"
        case "\r": out += "\\r"
        case "\t": out += "\\t"
        case _ where scalar.value < 0x20: out += "\\u00" + hexDigits([UInt8(scalar.value)])
        // DEL, C1 and the bidirectional formatting characters too: JSON allows them raw, but a
        // terminal or log viewer acts on them (an agent id with U+202E logged reversed text;
        // red team, 32nd session).
        case _ where ResultText.isControl(scalar) || ResultText.isBidiFormat(scalar):
            out += "\\u" + hexDigits([UInt8(scalar.value >> 8), UInt8(scalar.value & 0xFF)])
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out + "\""
}

/// Lower-case hexadecimal digits of bytes ("0a1b…").
public func hexDigits(_ bytes: some Sequence<UInt8>) -> String {
    let digits = Array("0123456789abcdef".utf8)
    var out: [UInt8] = []
    for byte in bytes {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0f)])
    }
    return String(decoding: out, as: UTF8.self)
}

/// A number with a fixed count of decimals, rounded half away from zero ("%.Nf" without
/// String(format:), which is Foundation's).
public func fixedDecimals(_ value: Double, _ decimals: Int) -> String {
    guard value.isFinite else { return "\(value)" }
    var scale = 1.0
    for _ in 0..<decimals { scale *= 10 }
    let scaled = (abs(value) * scale).rounded(.toNearestOrAwayFromZero)
    guard scaled < 9e15 else { return "\(value)" }
    let whole = Int64(scaled)
    let unit = Int64(scale)
    var text = String(whole / unit)
    if decimals > 0 {
        let fraction = String(whole % unit)
        text += "." + String(repeating: "0", count: decimals - fraction.count) + fraction
    }
    return (value < 0 && whole != 0 ? "-" : "") + text
}

/// Why `path` cannot be read, in words for an operator (Foundation's localizedDescription is
/// not in FoundationEssentials): "does not exist", "cannot be read by this user", ….
public func unreadableFileReason(_ path: String) -> String {
    var info = stat()
    guard stat(path, &info) == 0 else {
        return errno == ENOENT || errno == ENOTDIR ? "does not exist" : String(cString: strerror(errno))
    }
    if (info.st_mode & S_IFMT) == S_IFDIR { return "is a folder, not a file" }
    if access(path, R_OK) != 0 { return "cannot be read by this user" }
    return "is not UTF-8 text"
}

extension Data {
    /// Whether `needle`'s bytes occur in these bytes at or after offset `from`: memchr for the
    /// first byte, memcmp for the rest. The one byte search of the codebase (body_contains, a TCP
    /// step's `expect`, the push answer's `fast_flush_for_s`): Foundation's generic
    /// `firstRange(of:)` took about 50 000 instructions on a 60-byte push answer.
    public func contains(bytes needle: some Collection<UInt8>, from: Int = 0) -> Bool {
        offset(of: needle, from: from) != nil
    }

    /// Where `needle`'s bytes first occur at or after offset `from`, counted from the start.
    public func offset(of needle: some Collection<UInt8>, from: Int = 0) -> Int? {
        let target = Array(needle)
        guard let first = target.first else { return Swift.max(0, Swift.min(from, count)) }
        return withUnsafeBytes { haystack -> Int? in
            guard let base = haystack.baseAddress, haystack.count >= target.count else { return nil }
            let last = haystack.count - target.count
            var offset = Swift.max(0, from)
            while offset <= last {
                guard let hit = memchr(base + offset, Int32(first), last - offset + 1) else { return nil }
                let at = base.distance(to: UnsafeRawPointer(hit))
                if memcmp(hit, target, target.count) == 0 { return at }
                offset = at + 1
            }
            return nil
        }
    }
}

/// RFC 1123 / IMF-fixdate ("Sun, 06 Dec 2026 14:04:57 GMT"): HTTP's `Date` header and RSS's dates
/// (RFC 822 with a four-digit year), formatted without a locale.
public enum HTTPDate {
    public static func string(from date: Date) -> String {
        var seconds = time_t(date.timeIntervalSince1970.rounded(.down))
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(two(parts.tm_mday)) \(months[Int(parts.tm_mon)]) \(Int(parts.tm_year) + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) GMT"
    }
}
