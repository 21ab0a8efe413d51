/// Scalar text → Bool, Int, Double, as Yams' `Bool.construct`, `Int.construct` and
/// `Double.construct` do. Like Yams these look at the text (and, for numbers, the style) and not
/// at the resolved tag: callers that want "a YAML integer" check `tagName == .int` first.
enum ScalarConstruction {
    /// true/yes/on and false/no/off in any letter case, whatever the style.
    static func bool(_ scalar: Node.Scalar) -> Bool? {
        switch scalar.string.lowercased() {
        case "true", "yes", "on": true
        case "false", "no", "off": false
        default: nil
        }
    }

    /// Yams' `FixedWidthInteger._construct`: plain (or unstyled) scalars only; underscores are
    /// dropped; a sign, then `0x`, `0b`, `0o` or a bare leading `0` (octal) choose the radix;
    /// `a:b:c` is sexagesimal. Its quirks are kept (`-0` is not an Int, `0x-1` is -1), except
    /// that a sexagesimal value too large for Int is nil here where Yams traps on the overflow.
    static func int(_ scalar: Node.Scalar) -> Int? {
        guard scalar.style == .any || scalar.style == .plain else { return nil }
        let withSign = withoutUnderscores(scalar.string)
        if withSign == "0" { return 0 }
        let negative = withSign.hasPrefix("-")
        let hasSign = negative || withSign.hasPrefix("+")
        let signPrefix = negative ? "-" : ""
        let unsigned = withSign.dropFirst(hasSign ? 1 : 0)
        for (prefix, radix) in [("0x", 16), ("0b", 2), ("0o", 8), ("0", 8)] where unsigned.hasPrefix(prefix) {
            return Int(signPrefix + unsigned.dropFirst(prefix.count), radix: radix)
        }
        if unsigned.contains(":") {
            return sexagesimal(withSign, part: { Int($0, radix: 10) },
                               multiply: { a, b in let (r, o) = a.multipliedReportingOverflow(by: b); return o ? nil : r },
                               add: { a, b in let (r, o) = a.addingReportingOverflow(b); return o ? nil : r })
        }
        return Int(withSign)
    }

    /// Yams' `FloatingPoint.construct`: plain (or unstyled) scalars only; `.inf`, `.nan` in
    /// their three spellings; underscores dropped; `a:b:c` sexagesimal; otherwise the standard
    /// library's `Double(String)`, which Yams calls too.
    static func float(_ scalar: Node.Scalar) -> Double? {
        guard scalar.style == .any || scalar.style == .plain else { return nil }
        switch scalar.string {
        case ".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF": return .infinity
        case "-.inf", "-.Inf", "-.INF": return -.infinity
        case ".nan", ".NaN", ".NAN": return .nan
        default:
            let text = withoutUnderscores(scalar.string)
            if text.contains(":") {
                return sexagesimal(text, part: { Double($0) }, multiply: { $0 * $1 }, add: { $0 + $1 })
            }
            return Double(text)
        }
    }

    /// Yams removes "_" with `replacingOccurrences`, which works on code units; dropping the
    /// scalar keeps that even where "_" starts a grapheme with a combining mark.
    private static func withoutUnderscores(_ text: String) -> String {
        guard text.utf8.contains(0x5F) else { return text }
        var scalars = String.UnicodeScalarView()
        scalars.append(contentsOf: text.unicodeScalars.lazy.filter { $0 != "_" })
        return String(scalars)
    }

    /// Yams' `String.sexagesimal()`: an optional sign, then `:`-separated parts, least
    /// significant last, each worth 60 times the next; parts that do not parse are skipped.
    private static func sexagesimal<T: SignedNumeric>(
        _ text: String, part: (Substring) -> T?, multiply: (T, T) -> T?, add: (T, T) -> T?
    ) -> T? {
        var rest = Substring(text)
        var sign: T = 1
        if rest.hasPrefix("-") {
            sign = -1
            rest = rest.dropFirst()
        } else if rest.hasPrefix("+") {
            rest = rest.dropFirst()
        }
        let parts = rest.split(separator: ":", omittingEmptySubsequences: false).compactMap(part)
        var value: T = 0
        var base: T? = 1
        for digit in parts.reversed() {
            // A base past Int's range only matters if a part still has to be scaled by it.
            guard let scale = base, let scaled = multiply(digit, scale), let sum = add(value, scaled) else { return nil }
            value = sum
            base = multiply(scale, 60)
        }
        return multiply(sign, value)
    }
}
