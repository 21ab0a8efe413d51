import FoundationEssentials

/// Replaces secret values with `[redacted]` in anything that leaves a run: step URLs, error
/// messages (including quoted response bodies) and log metadata.
///
/// A server may echo a secret in any encoding, even one character at a time, so each secret is
/// matched character by character, every character in any of the forms it can take: raw,
/// percent-encoded (either case), form-encoded (`+` for a space), JSON-escaped (`\/`, `\"`,
/// `\uXXXX`, surrogate pairs), HTML entities (named, decimal, hexadecimal), hex of its bytes
/// (either case, for secrets of 4 bytes or more). Base64 of the secret,
/// alone or after any prefix (`user:secret` in a Basic header), is found by the run of base64
/// characters that must be in it whatever the prefix, and the whole base64 word is redacted.
///
/// A secret shorter than `wholeWordBelow` bytes (a password "ok") is redacted only as a whole
/// word, not next to an ASCII letter or digit (the neighbour decoded when it is percent-, JSON-
/// or HTML-encoded): otherwise "cookie" became "co[redacted]ie" in every message.
public struct Redactor: Sendable {
    public static let mask = "[redacted]"

    private struct Needle: Sendable {
        var scalars: [Unicode.Scalar]
        /// A base64 core: the whole surrounding base64 word is redacted.
        var widen: Bool
        /// A short secret: redacted only where it is a whole word.
        var wholeWord = false
    }

    /// Secrets shorter than this (in UTF-8 bytes) are redacted only as whole words.
    static let wholeWordBelow = 4

    private var needles: [Needle] = []
    /// Secrets longer than `longestTolerant`, matched as they are (and whether to widen to the
    /// base64 word around them).
    private var literals: [(bytes: [UInt8], widen: Bool)] = []
    private var known: Set<String> = []
    /// Bytes an encoded secret can start with: other positions are skipped at once.
    /// A bit set, not an array: a redactor is made for every run, most with no secret at all.
    private var firstBytes = ByteSet()

    /// The longest encoded length of one character (`&#x0001F600;`, a surrogate pair): how far
    /// past a cut point a secret that starts before it can reach, per character.
    static let maxEncodedScalarLength = 12

    /// Secrets (and base64 cores) up to this many characters are matched in any encoding; longer
    /// ones (a JWT, a server's 12,000-character cookie) as they are, by a linear byte search, so
    /// neither the cost nor the matcher's work grows with a length a server chooses.
    static let longestTolerant = 256

    /// A run that collects more secrets than this (a response setting 20,000 cookies) redacts
    /// everything it reports wholesale from then on: matching that many costs more than a run
    /// may spend, and nothing may leak.
    static let maxSecrets = 512

    /// Matching steps one `redact` may take before it gives up and masks the whole text (a body
    /// built to make the encoding-tolerant matcher backtrack): bounded cost, nothing leaked.
    static let stepBudget = 2_000_000

    /// What replaces a whole text that could not be redacted piece by piece.
    public static let wholesaleMask = "[redacted: too many secrets or too costly to redact]"

    /// How far past a cut point, in bytes, a secret that starts before it can reach in any form
    /// it is matched in (the window a snippet redacts before cutting).
    public private(set) var reach = 0

    /// More than `maxSecrets` were added: every non-empty text is masked whole.
    private var overflowed = false

    public var isEmpty: Bool { needles.isEmpty && literals.isEmpty && !overflowed }

    public init() {}

    /// From now on every non-empty text is masked whole: the run holds secrets it cannot list.
    public mutating func maskEverything() {
        overflowed = true
        needles = []
        literals = []
    }

    public mutating func add(_ secret: String) {
        guard !overflowed else { return }
        for form in [secret, secret.trimmed()] where !form.isEmpty && known.insert(form).inserted {
            guard known.count <= Self.maxSecrets else {
                overflowed = true
                needles = []
                return
            }
            let scalars = Array(form.unicodeScalars)
            var added = [Needle(scalars: scalars, widen: false, wholeWord: form.utf8.count < Self.wholeWordBelow)]
            for core in Self.base64Cores(Array(form.utf8)) {
                added.append(Needle(scalars: Array(core.unicodeScalars), widen: true))
            }
            // Hex of its bytes, either case (a binary protocol's server dumping what it got:
            // `-ERR got 415554482068756e74…`); not for short ones, whose hex is too common.
            if form.utf8.count >= Self.wholeWordBelow {
                added.append(Needle(scalars: Array(hexDigits(form.utf8).unicodeScalars), widen: false))
            }
            for needle in added {
                if needle.scalars.count <= Self.longestTolerant {
                    let first = String(needle.scalars[0]).utf8.first!
                    firstBytes.insert(first)
                    if !needle.wholeWord, Self.isASCIILetter(first) { firstBytes.insert(first ^ 0x20) }
                    reach = max(reach, needle.scalars.count * Self.maxEncodedScalarLength)
                    // Longest first, kept in order as they come (no re-sort of every needle per add).
                    let index = needles.firstIndex { $0.scalars.count < needle.scalars.count } ?? needles.endIndex
                    needles.insert(needle, at: index)
                } else {
                    // Its base64 form (a core is inside one) is 4/3 as long, plus a prefix's.
                    reach = max(reach, 2 * String(String.UnicodeScalarView(needle.scalars)).utf8.count)
                    literals.append((Array(String(String.UnicodeScalarView(needle.scalars)).utf8), needle.widen))
                }
            }
        }
        for escape in "%+\\&".utf8 { firstBytes.insert(escape) }
    }

    public func redact(_ text: String) -> String {
        guard !text.isEmpty else { return text }
        if overflowed { return Self.wholesaleMask }
        guard !needles.isEmpty || !literals.isEmpty else { return text }
        let bytes = Array(text.utf8)
        var ranges: [Range<Int>] = []
        // Long secrets, as they are.
        for (literal, widen) in literals {
            for range in Self.occurrences(of: literal, in: bytes) {
                ranges.append(widen ? Self.base64Word(around: range, in: bytes) : range)
            }
        }
        // Short ones, in any encoding, at every position one could start.
        var steps = 0
        var position = 0
        while position < bytes.count, !needles.isEmpty {
            guard firstBytes.contains(bytes[position]) else {
                position += 1
                continue
            }
            var found: Range<Int>?
            for needle in needles {
                guard let end = Self.match(needle.scalars, bytes, at: position, foldCase: !needle.wholeWord, steps: &steps) else {
                    if steps > Self.stepBudget { return Self.wholesaleMask }
                    continue
                }
                if needle.wholeWord, !Self.isWordBoundary(bytes, before: position) || !Self.isWordBoundary(bytes, after: end) { continue }
                found = needle.widen ? Self.base64Word(around: position..<end, in: bytes) : position..<end
                break
            }
            if let found {
                ranges.append(found)
                position = max(found.upperBound, position + 1)
            } else {
                position += 1
            }
        }
        guard !ranges.isEmpty else { return text }
        ranges.sort { $0.lowerBound < $1.lowerBound }
        var merged: [Range<Int>] = []
        for range in ranges {
            if let last = merged.last, last.upperBound >= range.lowerBound {
                merged[merged.count - 1] = last.lowerBound..<max(last.upperBound, range.upperBound)
            } else {
                merged.append(range)
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var last = 0
        for range in merged {
            out.append(contentsOf: bytes[last..<range.lowerBound])
            out.append(contentsOf: Self.mask.utf8)
            last = range.upperBound
        }
        out.append(contentsOf: bytes[last...])
        return String(decoding: out, as: UTF8.self)
    }

    /// Every occurrence of `needle` in `bytes`, not overlapping (Knuth–Morris–Pratt: linear
    /// whatever a server repeats).
    private static func occurrences(of needle: [UInt8], in bytes: [UInt8]) -> [Range<Int>] {
        guard !needle.isEmpty, bytes.count >= needle.count else { return [] }
        var border = [Int](repeating: 0, count: needle.count)
        var k = 0
        for i in 1..<needle.count {
            while k > 0, needle[i] != needle[k] { k = border[k - 1] }
            if needle[i] == needle[k] { k += 1 }
            border[i] = k
        }
        var found: [Range<Int>] = []
        var matched = 0
        for (i, byte) in bytes.enumerated() {
            while matched > 0, byte != needle[matched] { matched = border[matched - 1] }
            if byte == needle[matched] { matched += 1 }
            if matched == needle.count {
                found.append((i + 1 - needle.count)..<(i + 1))
                matched = 0
            }
        }
        return found
    }

    // MARK: - Word boundaries (short secrets)

    private static func isWordCharacter(_ value: UInt32) -> Bool {
        (0x30...0x39).contains(value) || (0x41...0x5A).contains(value) || (0x61...0x7A).contains(value)
    }

    /// Whether the character that ends at `position` is not an ASCII letter or digit, decoded
    /// when it is `%XX`, `\uXXXX`, `\n` (and the other JSON letter escapes) or `&#NN`: "%20ok"
    /// is "ok" standing alone, though a digit comes before it.
    static func isWordBoundary(_ bytes: [UInt8], before position: Int) -> Bool {
        guard position > 0 else { return true }
        if position >= 3, bytes[position - 3] == UInt8(ascii: "%"), let value = hexValue(bytes, position - 2, digits: 2) {
            return !isWordCharacter(value)
        }
        if position >= 6, bytes[position - 6] == UInt8(ascii: "\\"), bytes[position - 5] == UInt8(ascii: "u"), let value = hexValue(bytes, position - 4, digits: 4) {
            return !isWordCharacter(value)
        }
        if position >= 2, bytes[position - 2] == UInt8(ascii: "\\"), "bfnrt".utf8.contains(bytes[position - 1]) { return true }
        // `&#32ok` (a numeric reference without its `;`).
        var start = position
        while start > 0, position - start < 10, hexDigit(bytes[start - 1]) != nil || (bytes[start - 1] | 0x20) == UInt8(ascii: "x") { start -= 1 }
        if start >= 2, start < position, bytes[start - 2] == UInt8(ascii: "&"), bytes[start - 1] == UInt8(ascii: "#") { return true }
        return !isWordCharacter(UInt32(bytes[position - 1]))
    }

    /// Whether the character that starts at `position` is not an ASCII letter or digit (decoded
    /// when it is `%XX` or `\uXXXX`).
    static func isWordBoundary(_ bytes: [UInt8], after position: Int) -> Bool {
        guard position < bytes.count else { return true }
        if bytes[position] == UInt8(ascii: "%"), let value = hexValue(bytes, position + 1, digits: 2) { return !isWordCharacter(value) }
        if bytes[position] == UInt8(ascii: "\\"), position + 1 < bytes.count, bytes[position + 1] == UInt8(ascii: "u"),
            let value = hexValue(bytes, position + 2, digits: 4) {
            return !isWordCharacter(value)
        }
        return !isWordCharacter(UInt32(bytes[position]))
    }

    // MARK: - Matching one secret in any encoding

    /// The end of `scalars` matched at `start` of `bytes`, each character in any encoding (the
    /// longest such match); nil when it does not match there. Every encoding that fits is
    /// followed at once (a set of positions, no recursion), and each position looked at counts
    /// one step against the caller's budget.
    private static func match(_ scalars: [Unicode.Scalar], _ bytes: [UInt8], at start: Int, foldCase: Bool, steps: inout Int) -> Int? {
        var positions = [start]
        var next: [Int] = []
        for scalar in scalars {
            next.removeAll(keepingCapacity: true)
            for position in positions where position < bytes.count {
                steps += 1
                for end in encodedEnds(of: scalar, in: bytes, at: position, foldCase: foldCase) where !next.contains(end) { next.append(end) }
            }
            if next.isEmpty || steps > stepBudget { return nil }
            swap(&positions, &next)
        }
        return positions.max()
    }

    private static func isASCIILetter(_ byte: UInt8) -> Bool { (byte | 0x20) >= UInt8(ascii: "a") && (byte | 0x20) <= UInt8(ascii: "z") }

    /// `value` is `byte`, or the same ASCII letter in the other case.
    private static func sameLetter(_ value: UInt32, _ byte: UInt8) -> Bool {
        value == UInt32(byte) || (value < 128 && isASCIILetter(UInt8(value)) && isASCIILetter(byte) && UInt8(value) | 0x20 == byte | 0x20)
    }

    /// Where each encoding of `scalar` that appears at `start` ends.
    /// ASCII letters match in either case when `foldCase` (secrets of 4 bytes or more: a server
    /// that upper-cases what it echoes still shows them; a one-letter secret would match the `n` of `\n`).
    private static func encodedEnds(of scalar: Unicode.Scalar, in bytes: [UInt8], at start: Int, foldCase: Bool) -> [Int] {
        var ends: [Int] = []
        // Raw or percent-encoded, byte by byte (so "%C3©" and "é" both count; "%" may be
        // itself or the start of "%25").
        var positions = [start]
        for byte in String(scalar).utf8 {
            var next: [Int] = []
            // ASCII letters in either case: a server that upper-cases what it echoes still shows it.
            let letter = foldCase && Self.isASCIILetter(byte)
            for position in positions where position < bytes.count {
                let here = bytes[position]
                if here == byte || letter && here | 0x20 == byte | 0x20 { next.append(position + 1) }
                guard here == UInt8(ascii: "%") else { continue }
                if let value = hexValue(bytes, position + 1, digits: 2), value == UInt32(byte) || letter && Self.sameLetter(value, byte) {
                    next.append(position + 3)
                }
                // Not `else`: `%2525` is `%` encoded twice, and also `%` encoded once before "25".
                if position + 4 < bytes.count, bytes[position + 1] == UInt8(ascii: "2"), bytes[position + 2] == UInt8(ascii: "5"),
                    let value = hexValue(bytes, position + 3, digits: 2), value == UInt32(byte) || letter && Self.sameLetter(value, byte)
                {
                    next.append(position + 5)  // percent-encoded twice (`%252F`), as in a `return_to` parameter
                }
            }
            positions = next
        }
        ends.append(contentsOf: positions)
        let first = bytes[start]
        if scalar == " ", first == UInt8(ascii: "+") { ends.append(start + 1) }
        if first == UInt8(ascii: "\\") { ends.append(contentsOf: jsonEscapeEnds(of: scalar, in: bytes, at: start)) }
        if first == UInt8(ascii: "&"), let end = htmlEntityEnd(of: scalar, in: bytes, at: start) { ends.append(end) }
        return ends
    }

    private static let jsonShortEscapes: [Unicode.Scalar: UInt8] = [
        "/": UInt8(ascii: "/"), "\"": UInt8(ascii: "\""), "\\": UInt8(ascii: "\\"), "\u{08}": UInt8(ascii: "b"),
        "\u{0C}": UInt8(ascii: "f"), "\n": UInt8(ascii: "n"), "\r": UInt8(ascii: "r"), "\t": UInt8(ascii: "t"),
    ]

    private static func jsonEscapeEnds(of scalar: Unicode.Scalar, in bytes: [UInt8], at start: Int) -> [Int] {
        var ends: [Int] = []
        if let letter = jsonShortEscapes[scalar], start + 1 < bytes.count, bytes[start + 1] == letter { ends.append(start + 2) }
        func unit(_ at: Int) -> UInt32? {
            guard at + 1 < bytes.count, bytes[at] == UInt8(ascii: "\\"), bytes[at + 1] == UInt8(ascii: "u") else { return nil }
            return hexValue(bytes, at + 2, digits: 4)
        }
        if scalar.value < 0x10000 {
            if unit(start) == scalar.value { ends.append(start + 6) }
        } else {
            let v = scalar.value - 0x10000
            if unit(start) == 0xD800 + (v >> 10), unit(start + 6) == 0xDC00 + (v & 0x3FF) { ends.append(start + 12) }
        }
        return ends
    }

    /// HTML5's names for the ASCII characters that have one (and a few common others).
    private static let htmlNames: [String: Unicode.Scalar] = [
        "excl": "!", "quot": "\"", "QUOT": "\"", "num": "#", "dollar": "$", "percnt": "%", "amp": "&", "AMP": "&",
        "apos": "'", "lpar": "(", "rpar": ")", "ast": "*", "midast": "*", "plus": "+", "comma": ",", "period": ".",
        "sol": "/", "colon": ":", "semi": ";", "lt": "<", "LT": "<", "equals": "=", "gt": ">", "GT": ">",
        "quest": "?", "commat": "@", "lsqb": "[", "lbrack": "[", "bsol": "\\", "rsqb": "]", "rbrack": "]",
        "Hat": "^", "lowbar": "_", "UnderBar": "_", "grave": "`", "DiacriticalGrave": "`", "lcub": "{", "lbrace": "{",
        "verbar": "|", "vert": "|", "VerticalLine": "|", "rcub": "}", "rbrace": "}", "tilde": "~", "Tab": "\t",
        "NewLine": "\n", "nbsp": "\u{A0}", "hyphen": "\u{2010}", "dash": "\u{2010}",
    ]

    private static func htmlEntityEnd(of scalar: Unicode.Scalar, in bytes: [UInt8], at start: Int) -> Int? {
        var position = start + 1
        guard position < bytes.count else { return nil }
        if bytes[position] == UInt8(ascii: "#") {
            position += 1
            let hex = position < bytes.count && (bytes[position] | 0x20) == UInt8(ascii: "x")
            if hex { position += 1 }
            var value: UInt32 = 0
            let digitsStart = position
            while position < bytes.count, position - digitsStart < 10 {
                let byte = bytes[position]
                if let digit = hexDigit(byte), hex || digit < 10 {
                    value = value &* (hex ? 16 : 10) &+ digit
                    position += 1
                } else {
                    break
                }
            }
            guard position > digitsStart, value == scalar.value else { return nil }
            // The `;` is optional in numeric references (browsers accept "&#47x").
            if position < bytes.count, bytes[position] == UInt8(ascii: ";") { position += 1 }
            return position
        }
        var name = ""
        while position < bytes.count, name.count <= 16, bytes[position] != UInt8(ascii: ";") {
            name.unicodeScalars.append(Unicode.Scalar(bytes[position]))
            position += 1
        }
        guard position < bytes.count, htmlNames[name] == scalar else { return nil }
        return position + 1
    }

    private static func hexDigit(_ byte: UInt8) -> UInt32? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): UInt32(byte - UInt8(ascii: "0"))
        case UInt8(ascii: "a")...UInt8(ascii: "f"): UInt32(byte - UInt8(ascii: "a") + 10)
        case UInt8(ascii: "A")...UInt8(ascii: "F"): UInt32(byte - UInt8(ascii: "A") + 10)
        default: nil
        }
    }

    private static func hexValue(_ bytes: [UInt8], _ start: Int, digits: Int) -> UInt32? {
        guard start >= 0, start + digits <= bytes.count else { return nil }
        var value: UInt32 = 0
        for index in start..<start + digits {
            guard let digit = hexDigit(bytes[index]) else { return nil }
            value = value << 4 | digit
        }
        return value
    }

    // MARK: - Base64

    private static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// The base64 characters that encode only bytes of `secret`, for each of the three ways it
    /// can sit against the 3-byte groups after an unknown prefix (and before an unknown
    /// suffix), in the standard and the URL-safe alphabet. Too short a core (under 6
    /// characters, a secret of a few bytes) would redact unrelated text and is left out.
    static func base64Cores(_ secret: [UInt8]) -> [String] {
        var cores: [String] = []
        for offset in 0..<3 {
            let bytes = [UInt8](repeating: 0, count: offset) + secret
            var chars: [UInt8] = []
            var index = 0
            while index + 3 <= bytes.count {
                let group = UInt32(bytes[index]) << 16 | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2])
                for shift in [18, 12, 6, 0] { chars.append(base64Alphabet[Int((group >> UInt32(shift)) & 63)]) }
                index += 3
            }
            // Leftover bytes: their full 6-bit characters are still known.
            let rest = bytes.count - index
            if rest > 0 {
                var group: UInt32 = 0
                for i in 0..<rest { group |= UInt32(bytes[index + i]) << UInt32(16 - 8 * i) }
                for k in 0..<(rest * 8 / 6) { chars.append(base64Alphabet[Int((group >> UInt32(18 - 6 * k)) & 63)]) }
            }
            // Characters that hold a bit of the prefix are unknown.
            let skip = (offset * 8 + 5) / 6
            guard chars.count - skip >= 6 else { continue }
            let core = String(decoding: chars[skip...], as: UTF8.self)
            cores.append(core)
            let urlSafe = String(core.map { $0 == "+" ? "-" : $0 == "/" ? "_" : $0 })
            if urlSafe != core { cores.append(urlSafe) }
        }
        return cores
    }

    /// `range` widened to the whole word of base64 characters (both alphabets, padding, and the
    /// escaped forms of `/` a JSON or URL encoder writes) around it.
    private static func base64Word(around range: Range<Int>, in bytes: [UInt8]) -> Range<Int> {
        func isBase64(_ byte: UInt8) -> Bool {
            base64Alphabet.contains(byte) || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_") || byte == UInt8(ascii: "=")
                || byte == UInt8(ascii: "\\") || byte == UInt8(ascii: "%")
        }
        var lower = range.lowerBound, upper = range.upperBound
        while lower > 0, isBase64(bytes[lower - 1]) { lower -= 1 }
        while upper < bytes.count, isBase64(bytes[upper]) { upper += 1 }
        return lower..<upper
    }
}

/// 256 bits, one per byte value, held inline (no allocation).
struct ByteSet: Sendable {
    private var words: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)

    mutating func insert(_ byte: UInt8) {
        let bit = UInt64(1) << (byte & 63)
        switch byte >> 6 {
        case 0: words.0 |= bit
        case 1: words.1 |= bit
        case 2: words.2 |= bit
        default: words.3 |= bit
        }
    }

    func contains(_ byte: UInt8) -> Bool {
        let bit = UInt64(1) << (byte & 63)
        switch byte >> 6 {
        case 0: return words.0 & bit != 0
        case 1: return words.1 & bit != 0
        case 2: return words.2 & bit != 0
        default: return words.3 & bit != 0
        }
    }
}
