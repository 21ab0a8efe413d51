import FoundationEssentials
import SondeCore

/// Durations as probe scripts write them: a number and a unit (`ms`, `s`, `m`, `h`, `d`),
/// possibly combined (`1m30s`) or fractional (`1.5s`). Days are for `cert_valid_for: 14d`.
enum DurationText {
    static let hint = "expected a duration such as 250ms, 30s, 1m, 1m30s, 2h or 14d"

    static func parse(_ text: String) -> Duration? {
        let chars = Array(text.trimmed())
        guard !chars.isEmpty else { return nil }
        var total = Duration.zero
        var i = 0
        while i < chars.count {
            var number = ""
            while i < chars.count, chars[i].isNumber || chars[i] == "." {
                number.append(chars[i])
                i += 1
            }
            var unit = ""
            while i < chars.count, chars[i].isLetter {
                unit.append(chars[i])
                i += 1
            }
            guard let value = Double(number), value >= 0, value.isFinite else { return nil }
            let scale: Double
            switch unit {
            case "ms": scale = 0.001
            case "s": scale = 1
            case "m": scale = 60
            case "h": scale = 3600
            case "d": scale = 86_400
            default: return nil
            }
            let seconds = value * scale
            guard seconds < 1e9 else { return nil }
            total += .milliseconds(Int64((seconds * 1000).rounded()))
        }
        return total
    }

    /// A measured time for messages that compare it with a limit: `1.4 ms` under 10 ms (so
    /// "took 1 ms, over 1ms" cannot happen), whole milliseconds above.
    static func took(_ ms: Double) -> String {
        ms < 10 ? fixedDecimals(ms, 1) + " ms" : "\(Int(ms)) ms"
    }

    /// Short form for messages: `250ms`, `60s`, `1.5s`, `61s`.
    static func format(_ duration: Duration) -> String {
        let ms = duration.milliseconds
        if ms < 1000 { return "\(Int(ms.rounded()))ms" }
        let seconds = ms / 1000
        if seconds >= 86_400, seconds.truncatingRemainder(dividingBy: 86_400) == 0 { return "\(Int(seconds / 86_400))d" }
        if seconds >= 10 || seconds.rounded() == seconds { return "\(Int(seconds.rounded()))s" }
        return fixedDecimals(seconds, 1) + "s"
    }
}
