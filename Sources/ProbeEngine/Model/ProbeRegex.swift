/// A probe script's regular expression (`matches`, `regex` extractions, failure-code patterns),
/// compiled with the Swift standard library's `Regex` rather than Foundation's
/// NSRegularExpression, so that the agent never loads Foundation and ICU. The syntax is the
/// common Perl/ICU one: classes (`\d`, `\w`, `[a-z]`), groups, alternation, quantifiers (lazy and
/// possessive too), anchors, look-around, named groups `(?<name>…)`, inline options `(?i)`.
struct ProbeRegex: @unchecked Sendable {
    // @unchecked: Regex<AnyRegexOutput> is not declared Sendable, but a compiled regex is an
    // immutable program; matching does not mutate it.
    private let regex: Regex<AnyRegexOutput>

    /// Compiles `pattern`; throws the standard library's description of what is wrong.
    init(_ pattern: String) throws {
        regex = try Regex(pattern)
    }

    /// Whether the pattern matches anywhere in `text`.
    func matches(_ text: String) -> Bool {
        (try? regex.firstMatch(in: text)) != nil
    }

    /// The text of capture `group` (0: the whole match) in the first match in `text`; nil when
    /// nothing matches or that group took no part in the match.
    func firstCapture(_ group: Int, in text: String) -> String? {
        guard let match = try? regex.firstMatch(in: text), group < match.output.count else { return nil }
        return match.output[group].substring.map(String.init)
    }
}

extension ProbeRegex {
    /// Capture groups counted in the pattern text, since `Regex` tells its capture count only
    /// through a match: every `(` that is not escaped, not inside a `[…]` class and not a
    /// non-capturing construct (`(?:`, `(?=`, `(?!`, `(?<=`, `(?<!`, `(?>`, `(?i)`…), except
    /// named groups `(?<name>`, `(?'name'` and `(?P<name>`, which capture.
    static func countCaptureGroups(_ pattern: String) -> Int {
        let chars = Array(pattern.unicodeScalars)
        var count = 0
        var index = 0
        var inClass = false
        while index < chars.count {
            let c = chars[index]
            if c == "\\" {
                // \Q…\E quotes everything up to \E.
                if index + 1 < chars.count, chars[index + 1] == "Q" {
                    index += 2
                    while index + 1 < chars.count, !(chars[index] == "\\" && chars[index + 1] == "E") { index += 1 }
                }
                index += 2
                continue
            }
            if inClass {
                if c == "]" { inClass = false }
            } else if c == "[" {
                inClass = true
                // A "]" right after "[" or "[^" is a literal member, not the end.
                if index + 1 < chars.count, chars[index + 1] == "^" { index += 1 }
                if index + 1 < chars.count, chars[index + 1] == "]" { index += 1 }
            } else if c == "(" {
                if index + 1 < chars.count, chars[index + 1] == "?" {
                    let next = index + 2 < chars.count ? chars[index + 2] : " "
                    let after = index + 3 < chars.count ? chars[index + 3] : " "
                    if next == "'" || (next == "<" && after != "=" && after != "!") || (next == "P" && after == "<") { count += 1 }
                } else if index + 1 < chars.count, chars[index + 1] == "*" {
                    // (*VERB) controls capture nothing.
                } else {
                    count += 1
                }
            }
            index += 1
        }
        return count
    }
}
