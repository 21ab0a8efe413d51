/// Resolves the tag of a plain scalar from its text, as Yams' `Resolver.default` does: the rules
/// bool, int, float, merge, null, timestamp, value are tried in that order and the first that
/// matches wins; text no rule matches is a `str`.
///
/// Yams matches each rule with an ICU regular expression of the form `^(?:…)$`. Each is hand-written
/// here as a matcher over the UTF-8 bytes (every character a rule names is ASCII, so a non-ASCII
/// byte simply fails to match). ICU's `$` without the multi-line option also matches just before
/// one line terminator that ends the text, so `"true\n"` is a bool in Yams; `resolve` keeps that.
enum TagResolver {
    static func resolve(_ text: String) -> Tag.Name {
        var text = text
        return text.withUTF8 { resolve(utf8: $0) }
    }

    static func resolve(utf8 bytes: UnsafeBufferPointer<UInt8>) -> Tag.Name {
        if let name = firstMatchingRule(bytes[...]) { return name }
        if let trimmed = withoutFinalLineTerminator(bytes[...]), let name = firstMatchingRule(trimmed) { return name }
        return .str
    }

    typealias Bytes = Slice<UnsafeBufferPointer<UInt8>>

    private static func firstMatchingRule(_ text: Bytes) -> Tag.Name? {
        if isBool(text) { return .bool }
        if isInt(text) { return .int }
        if isFloat(text) { return .float }
        if isMerge(text) { return .merge }
        if isNull(text) { return .null }
        if isTimestamp(text) { return .timestamp }
        if isValue(text) { return .value }
        return nil
    }

    /// The text without the one line terminator ICU's `$` may stand before: CR LF, or one of
    /// LF, VT, FF, CR, NEL, LS, PS (but not the LF of a CR LF, which only goes as a pair).
    static func withoutFinalLineTerminator(_ text: Bytes) -> Bytes? {
        let n = text.count
        let s = text.startIndex
        func byte(fromEnd k: Int) -> UInt8? { k <= n ? text[s + n - k] : nil }
        guard let last = byte(fromEnd: 1) else { return nil }
        switch last {
        case 0x0A:
            return text.prefix(byte(fromEnd: 2) == 0x0D ? n - 2 : n - 1)
        case 0x0B, 0x0C, 0x0D:
            return text.prefix(n - 1)
        case 0x85 where byte(fromEnd: 2) == 0xC2:
            return text.prefix(n - 2)
        case 0xA8 where byte(fromEnd: 2) == 0x80 && byte(fromEnd: 3) == 0xE2,
             0xA9 where byte(fromEnd: 2) == 0x80 && byte(fromEnd: 3) == 0xE2:
            return text.prefix(n - 3)
        default:
            return nil
        }
    }

    // MARK: - Rules

    /// `^(?:yes|Yes|YES|no|No|NO|true|True|TRUE|false|False|FALSE|on|On|ON|off|Off|OFF)$`
    static func isBool(_ text: Bytes) -> Bool {
        oneOf(text, ["yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE",
                     "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"])
    }

    /// `^(?:[-+]?0b[0-1_]+|[-+]?0o?[0-7_]+|[-+]?(?:0|[1-9][0-9_]*)|[-+]?0x[0-9a-fA-F_]+`
    /// `|[-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+)$`
    static func isInt(_ text: Bytes) -> Bool {
        var c = Cursor(text)
        c.skipSign()
        let body = c
        // [-+]?0b[0-1_]+
        var b = body
        if b.take("0"), b.take("b"), b.takeOneOrMore(where: { $0 == 0x30 || $0 == 0x31 || $0 == 0x5F }), b.atEnd { return true }
        // [-+]?0o?[0-7_]+
        b = body
        if b.take("0") {
            _ = b.take("o")
            if b.takeOneOrMore(where: { isOctalDigit($0) || $0 == 0x5F }), b.atEnd { return true }
        }
        // [-+]?(?:0|[1-9][0-9_]*)
        b = body
        if b.take("0"), b.atEnd { return true }
        b = body
        if b.takeOne(where: isNonZeroDigit) {
            b.takeZeroOrMore(where: { isDigit($0) || $0 == 0x5F })
            if b.atEnd { return true }
        }
        // [-+]?0x[0-9a-fA-F_]+
        b = body
        if b.take("0"), b.take("x"), b.takeOneOrMore(where: { isHexDigit($0) || $0 == 0x5F }), b.atEnd { return true }
        // [-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
        b = body
        if b.takeOne(where: isNonZeroDigit) {
            b.takeZeroOrMore(where: { isDigit($0) || $0 == 0x5F })
            if b.takeSexagesimalGroups(), b.atEnd { return true }
        }
        return false
    }

    /// `^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?|\.[0-9_]+(?:[eE][-+][0-9]+)?`
    /// `|[-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$`
    static func isFloat(_ text: Bytes) -> Bool {
        let start = Cursor(text)
        var signed = start
        signed.skipSign()
        // [-+]?[0-9][0-9_]*(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?
        var c = signed
        if c.takeOne(where: isDigit) {
            c.takeZeroOrMore(where: { isDigit($0) || $0 == 0x5F })
            if c.take(".") { c.takeZeroOrMore(where: { isDigit($0) || $0 == 0x5F }) }
            if c.takeOne(where: { $0 == 0x65 || $0 == 0x45 }) {
                c.skipSign()
                if !c.takeOneOrMore(where: isDigit) { c = Cursor.failed }
            }
            if c.atEnd { return true }
        }
        // \.[0-9_]+(?:[eE][-+][0-9]+)?   (no sign; the exponent's sign is required)
        c = start
        if c.take("."), c.takeOneOrMore(where: { isDigit($0) || $0 == 0x5F }) {
            if c.takeOne(where: { $0 == 0x65 || $0 == 0x45 }) {
                if !(c.takeOne(where: { $0 == 0x2B || $0 == 0x2D }) && c.takeOneOrMore(where: isDigit)) { c = Cursor.failed }
            }
            if c.atEnd { return true }
        }
        // [-+]?[0-9][0-9_]*(?::[0-5]?[0-9])+\.[0-9_]*
        c = signed
        if c.takeOne(where: isDigit) {
            c.takeZeroOrMore(where: { isDigit($0) || $0 == 0x5F })
            if c.takeSexagesimalGroups(), c.take(".") {
                c.takeZeroOrMore(where: { isDigit($0) || $0 == 0x5F })
                if c.atEnd { return true }
            }
        }
        // [-+]?\.(?:inf|Inf|INF)
        c = signed
        if c.take("."), oneOf(c.rest, ["inf", "Inf", "INF"]) { return true }
        // \.(?:nan|NaN|NAN)
        return oneOf(text, [".nan", ".NaN", ".NAN"])
    }

    /// `^(?:<<)$`
    static func isMerge(_ text: Bytes) -> Bool { oneOf(text, ["<<"]) }

    /// `^(?:~|null|Null|NULL|)$`
    static func isNull(_ text: Bytes) -> Bool { oneOf(text, ["~", "null", "Null", "NULL", ""]) }

    /// `^(?:[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]`
    /// `|[0-9][0-9][0-9][0-9]-[0-9][0-9]?-[0-9][0-9]?(?:[Tt]|[ \t]+)[0-9][0-9]?:[0-9][0-9]:[0-9][0-9]`
    /// `(?:\.[0-9]*)?(?:[ \t]*(?:Z|[-+][0-9][0-9]?(?::[0-9][0-9])?))?)$`
    static func isTimestamp(_ text: Bytes) -> Bool {
        // A date alone: exactly four, two and two digits.
        var c = Cursor(text)
        if c.takeDigits(exactly: 4), c.take("-"), c.takeDigits(exactly: 2), c.take("-"), c.takeDigits(exactly: 2), c.atEnd { return true }
        // A date and a time. Each optional part starts with a byte the part before cannot
        // end with, so taking greedily never needs to backtrack.
        c = Cursor(text)
        guard c.takeDigits(exactly: 4), c.take("-"), c.takeDigits(oneOrTwo: ()), c.take("-"), c.takeDigits(oneOrTwo: ()) else { return false }
        if !c.takeOne(where: { $0 == 0x54 || $0 == 0x74 }) {
            guard c.takeOneOrMore(where: isSpaceOrTab) else { return false }
        }
        guard c.takeDigits(oneOrTwo: ()), c.take(":"), c.takeDigits(exactly: 2), c.take(":"), c.takeDigits(exactly: 2) else { return false }
        if c.take(".") { c.takeZeroOrMore(where: isDigit) }
        if c.atEnd { return true }
        c.takeZeroOrMore(where: isSpaceOrTab)
        if c.take("Z") { return c.atEnd }
        guard c.takeOne(where: { $0 == 0x2B || $0 == 0x2D }), c.takeDigits(oneOrTwo: ()) else { return false }
        if c.atEnd { return true }
        return c.take(":") && c.takeDigits(exactly: 2) && c.atEnd
    }

    /// `^(?:=)$`
    static func isValue(_ text: Bytes) -> Bool { oneOf(text, ["="]) }

    // MARK: - Matching helpers

    private static func oneOf(_ text: Bytes, _ words: [StaticString]) -> Bool {
        words.contains { word in
            word.utf8CodeUnitCount == text.count
                && word.withUTF8Buffer { w in zip(w, text).allSatisfy { $0 == $1 } }
        }
    }

    static func isDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x39 }
    static func isNonZeroDigit(_ b: UInt8) -> Bool { b >= 0x31 && b <= 0x39 }
    static func isOctalDigit(_ b: UInt8) -> Bool { b >= 0x30 && b <= 0x37 }
    static func isHexDigit(_ b: UInt8) -> Bool { isDigit(b) || (b >= 0x61 && b <= 0x66) || (b >= 0x41 && b <= 0x46) }
    static func isSpaceOrTab(_ b: UInt8) -> Bool { b == 0x20 || b == 0x09 }

    /// A position in the text being matched; a value, so an alternative starts from a copy.
    struct Cursor {
        var text: Bytes
        var index: Int
        /// Never at the end, so no `atEnd` test passes after a failed sub-match.
        var failedMatch = false

        init(_ text: Bytes) {
            self.text = text
            self.index = text.startIndex
        }

        static var failed: Cursor {
            var c = Cursor(UnsafeBufferPointer<UInt8>(start: nil, count: 0)[...])
            c.failedMatch = true
            return c
        }

        var atEnd: Bool { !failedMatch && index == text.endIndex }
        var rest: Bytes { failedMatch ? Cursor.failed.text : text[index...] }

        var current: UInt8? { !failedMatch && index < text.endIndex ? text[index] : nil }

        mutating func takeOne(where test: (UInt8) -> Bool) -> Bool {
            guard let b = current, test(b) else { return false }
            index += 1
            return true
        }

        mutating func take(_ ascii: Unicode.Scalar) -> Bool {
            takeOne { $0 == UInt8(ascii.value) }
        }

        mutating func takeZeroOrMore(where test: (UInt8) -> Bool) {
            while takeOne(where: test) {}
        }

        mutating func takeOneOrMore(where test: (UInt8) -> Bool) -> Bool {
            guard takeOne(where: test) else { return false }
            takeZeroOrMore(where: test)
            return true
        }

        mutating func skipSign() {
            _ = takeOne { $0 == 0x2B || $0 == 0x2D }
        }

        mutating func takeDigits(exactly count: Int) -> Bool {
            for _ in 0..<count where !takeOne(where: TagResolver.isDigit) { return false }
            return true
        }

        /// `[0-9][0-9]?`
        mutating func takeDigits(oneOrTwo _: Void) -> Bool {
            guard takeOne(where: TagResolver.isDigit) else { return false }
            _ = takeOne(where: TagResolver.isDigit)
            return true
        }

        /// `(?::[0-5]?[0-9])+`: a group is one digit, or two whose first is 0–5. Groups end at
        /// the next `:`, so a third digit (or a first one above 5 before another digit) fails.
        mutating func takeSexagesimalGroups() -> Bool {
            var groups = 0
            while current == 0x3A {
                var next = self
                next.index += 1
                guard next.takeOne(where: TagResolver.isDigit) else { break }
                let first = text[next.index - 1]
                if first <= 0x35, next.current.map(TagResolver.isDigit) == true { next.index += 1 }
                self = next
                groups += 1
            }
            return groups > 0
        }
    }
}
