import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// A server's `Retry-After` (RFC 9110 §10.2.3), on a 429 or 503: the collector's to an agent's
/// push, a webhook receiver's (Slack, PagerDuty, Alertmanager) to the collector's delivery.
public enum RetryAfter {
    /// Whole seconds, or an HTTP-date in the IMF-fixdate form (`Sun, 06 Nov 1994 08:49:37 GMT`).
    /// Nil when it is neither (the uploader then uses its backoff); a date in the past is zero.
    public static func parse(_ value: String, now: Date) -> Duration? {
        let text = value.trimmed()
        let digits = text.utf8.allSatisfy { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }
        if !text.isEmpty, digits {
            // More than nine digits is more than 31 years: the caller's cap applies anyway.
            return .seconds(text.count > 9 ? 999_999_999 : Int(text) ?? 0)
        }
        guard let date = httpDate(text) else { return nil }
        return .seconds(double: max(0, date.timeIntervalSince(now)))
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// IMF-fixdate: `Day, DD Mon YYYY HH:MM:SS GMT`.
    static func httpDate(_ text: String) -> Date? {
        let fields = text.split(separator: " ")
        guard fields.count == 6, fields[0].hasSuffix(","), fields[5] == "GMT",
            let day = Int(fields[1]), let month = months.firstIndex(of: String(fields[2])), let year = Int(fields[3])
        else { return nil }
        let clock = fields[4].split(separator: ":")
        guard clock.count == 3, let hour = Int(clock[0]), let minute = Int(clock[1]), let second = Int(clock[2]),
            (1...31).contains(day), (1970...9999).contains(year), (0...23).contains(hour), (0...59).contains(minute), (0...60).contains(second)
        else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900)
        parts.tm_mon = Int32(month)
        parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour)
        parts.tm_min = Int32(minute)
        parts.tm_sec = Int32(second)
        return Date(timeIntervalSince1970: TimeInterval(timegm(&parts)))
    }
}
