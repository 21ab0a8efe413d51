import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Why `PushBatchDecoder` refused a body: where (a field path such as `results[0].started_at`),
/// what was wrong, and at which byte.
public struct JSONDecodingError: Error, CustomStringConvertible, Sendable, Hashable {
    public enum Kind: String, Sendable, Hashable {
        /// Not JSON at all: a missing comma, an unterminated string, trailing bytes…
        case syntax
        /// Bytes that are not UTF-8 (Foundation's decoder only checks the strings it decodes).
        case invalidUTF8
        /// A raw control character (below U+0020) inside a string.
        case controlCharacter
        /// An unknown escape or a `\u` surrogate without its pair.
        case invalidEscape
        /// More than `StrictJSONReader.maxDepth` nested arrays and objects.
        case tooDeep
        case missingField
        case nullValue
        case wrongType
        /// The right JSON type but a value the field cannot hold (an unknown enum case, a bad
        /// timestamp, a number out of range).
        case invalidValue
        /// A number with a fraction or exponent where an integer is expected (Foundation accepts
        /// `2e2` for an Int; this decoder does not).
        case notAnInteger
        /// A key given twice in one object: readers differ on which one counts (the first, the
        /// last), so a signed body could mean one thing here and another to a consumer of
        /// `/v1/batches` (red team, 32nd session).
        case duplicateKey
        /// A UTF-8 byte order mark or a UTF-16/32 body (Foundation converts those; pushes are UTF-8).
        case notUTF8JSON
    }

    public var kind: Kind
    /// The field path, `(top level)` for the body itself.
    public var path: String
    public var message: String
    /// Where in the body the problem was found.
    public var offset: Int

    public var description: String { "\(path): \(message) (byte \(offset))" }
}

/// A strict, allocation-light JSON reader over UTF-8 bytes, for the hot ingest path where
/// Foundation's `JSONDecoder` was the largest CPU cost after SQLite. RFC 8259 grammar only; every
/// byte is checked (UTF-8, escapes, numbers, nesting up to `maxDepth`), including values that are
/// skipped because their key is unknown. Typed readers (`string()`, `double()`…) say what was
/// expected and where, with the path kept in `path`.
struct StrictJSONReader {
    /// Same nesting limit as Foundation's JSONDecoder (the outermost object counts as 1).
    static let maxDepth = 512

    enum PathComponent {
        case key(String)
        case index(Int)
    }

    let bytes: UnsafeBufferPointer<UInt8>
    var index = 0
    var depth = 0
    var path: [PathComponent] = []

    init(_ bytes: UnsafeBufferPointer<UInt8>) {
        self.bytes = bytes
        path.reserveCapacity(8)
    }

    // MARK: - Errors

    func pathText() -> String {
        var text = ""
        for component in path {
            switch component {
            case .key(let key): text += (text.isEmpty ? "" : ".") + key
            case .index(let index): text += "[\(index)]"
            }
        }
        return text.isEmpty ? "(top level)" : text
    }

    func error(_ kind: JSONDecodingError.Kind, _ message: String, at offset: Int? = nil) -> JSONDecodingError {
        JSONDecodingError(kind: kind, path: pathText(), message: message, offset: offset ?? index)
    }

    func describeNext() -> String {
        guard index < bytes.count else { return "the end of the body" }
        switch bytes[index] {
        case UInt8(ascii: "\""): return "a string"
        case UInt8(ascii: "{"): return "an object"
        case UInt8(ascii: "["): return "an array"
        case UInt8(ascii: "t"), UInt8(ascii: "f"): return "a boolean"
        case UInt8(ascii: "n"): return "null"
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return "a number"
        default: return "the byte 0x\(String(bytes[index], radix: 16))"
        }
    }

    func wrongType(_ expected: String) -> JSONDecodingError {
        if index < bytes.count, bytes[index] == UInt8(ascii: "n") {
            return error(.nullValue, "expected \(expected), found null")
        }
        return error(.wrongType, "expected \(expected), found \(describeNext())")
    }

    // MARK: - Structure

    @inline(__always) mutating func skipSpace() {
        while index < bytes.count {
            let byte = bytes[index]
            guard byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 else { return }
            index += 1
        }
    }

    /// Checks the start of the body and that nothing but whitespace follows the top-level value.
    func checkEncoding() throws {
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
            throw error(.notUTF8JSON, "the body starts with a byte order mark; send plain UTF-8 JSON", at: 0)
        }
        if bytes.count >= 2, bytes[0] == 0 || bytes[1] == 0 {
            throw error(.notUTF8JSON, "the body looks like UTF-16 or UTF-32; send UTF-8 JSON", at: 0)
        }
    }

    mutating func expectEnd() throws {
        skipSpace()
        guard index == bytes.count else { throw error(.syntax, "unexpected \(describeNext()) after the JSON value") }
    }

    /// Consumes `{` and enters the object; throws when the next value is something else.
    mutating func beginObject(_ expected: String = "an object") throws {
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "{") else { throw wrongType(expected) }
        try enter()
    }

    mutating func beginArray(_ expected: String = "an array") throws {
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "[") else { throw wrongType(expected) }
        try enter()
    }

    private mutating func enter() throws {
        depth += 1
        guard depth <= Self.maxDepth else { throw error(.tooDeep, "more than \(Self.maxDepth) nested arrays and objects") }
        index += 1
    }

    /// A key of the current object, pointing into the body or, when it had escapes, unescaped.
    struct Key {
        var start: Int
        var count: Int
        var unescaped: [UInt8]?

        @inline(__always) func matches(_ name: StaticString, in bytes: UnsafeBufferPointer<UInt8>) -> Bool {
            guard count == name.utf8CodeUnitCount else { return false }
            if count == 0 { return true }
            if let unescaped { return unescaped.withUnsafeBufferPointer { memcmp($0.baseAddress!, name.utf8Start, count) == 0 } }
            return memcmp(bytes.baseAddress! + start, name.utf8Start, count) == 0
        }
    }

    /// A key as text.
    func text(of key: Key) -> String {
        key.unescaped.map { String(decoding: $0, as: UTF8.self) }
            ?? String(decoding: UnsafeBufferPointer(rebasing: bytes[key.start..<(key.start + key.count)]), as: UTF8.self)
    }

    /// The next key of the object being read, positioned at its value; nil (and the object left)
    /// after the closing `}`. `first` tracks whether a comma is due.
    mutating func nextKey(_ first: inout Bool) throws -> Key? {
        skipSpace()
        guard index < bytes.count else { throw error(.syntax, "unterminated object: expected a key or '}'") }
        if bytes[index] == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return nil
        }
        if !first {
            guard bytes[index] == UInt8(ascii: ",") else { throw error(.syntax, "expected ',' or '}' after an object member, found \(describeNext())") }
            index += 1
            skipSpace()
        }
        first = false
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw error(.syntax, "expected a quoted key, found \(describeNext())") }
        let key = try readString { start, count, unescaped in Key(start: start, count: count, unescaped: unescaped) }
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { throw error(.syntax, "expected ':' after a key, found \(describeNext())") }
        index += 1
        skipSpace()
        return key
    }

    /// Before each element of an array: false (and the array left) after the closing `]`.
    mutating func nextElement(_ first: inout Bool) throws -> Bool {
        skipSpace()
        guard index < bytes.count else { throw error(.syntax, "unterminated array: expected a value or ']'") }
        if bytes[index] == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return false
        }
        if !first {
            guard bytes[index] == UInt8(ascii: ",") else { throw error(.syntax, "expected ',' or ']' after an array element, found \(describeNext())") }
            index += 1
            skipSpace()
        }
        first = false
        return true
    }

    /// Any value, checked and thrown away (members this decoder does not know).
    mutating func skipValue() throws {
        skipSpace()
        guard index < bytes.count else { throw error(.syntax, "expected a value, found the end of the body") }
        switch bytes[index] {
        case UInt8(ascii: "\""):
            try readString { _, _, _ in () }
        case UInt8(ascii: "{"):
            try enter()
            var first = true
            while try nextKey(&first) != nil { try skipValue() }
        case UInt8(ascii: "["):
            try enter()
            var first = true
            while try nextElement(&first) { try skipValue() }
        case UInt8(ascii: "t"): try literal("true")
        case UInt8(ascii: "f"): try literal("false")
        case UInt8(ascii: "n"): try literal("null")
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): _ = try scanNumber()
        default: throw error(.syntax, "expected a value, found \(describeNext())")
        }
    }

    private mutating func literal(_ word: StaticString) throws {
        let count = word.utf8CodeUnitCount
        guard index + count <= bytes.count, memcmp(bytes.baseAddress! + index, word.utf8Start, count) == 0 else {
            throw error(.syntax, "expected a value, found \(describeNext())")
        }
        index += count
    }

    // MARK: - Scalars

    /// Consumes `null` when it comes next.
    mutating func null() -> Bool {
        skipSpace()
        guard index + 4 <= bytes.count, bytes[index] == UInt8(ascii: "n"), bytes[index + 1] == UInt8(ascii: "u"),
            bytes[index + 2] == UInt8(ascii: "l"), bytes[index + 3] == UInt8(ascii: "l")
        else { return false }
        index += 4
        return true
    }

    mutating func bool() throws -> Bool {
        skipSpace()
        if index + 4 <= bytes.count, memcmp(bytes.baseAddress! + index, "true", 4) == 0 {
            index += 4
            return true
        }
        if index + 5 <= bytes.count, memcmp(bytes.baseAddress! + index, "false", 5) == 0 {
            index += 5
            return false
        }
        throw wrongType("a boolean")
    }

    mutating func string() throws -> String {
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw wrongType("a string") }
        let bytes = self.bytes
        return try readString { start, count, unescaped in
            if let unescaped { return String(decoding: unescaped, as: UTF8.self) }
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<start + count]), as: UTF8.self)
        }
    }

    /// Reads the string at `index` (a quote), checks it, and hands its content to `body`: a range
    /// of the body when it had no escapes, else the unescaped bytes.
    mutating func readString<T>(_ body: (_ start: Int, _ count: Int, _ unescaped: [UInt8]?) throws -> T) throws -> T {
        let quoteAt = index
        let start = index + 1
        var cursor = start
        var ascii = true
        while cursor < bytes.count {
            let byte = bytes[cursor]
            if byte == UInt8(ascii: "\"") {
                let count = cursor - start
                if !ascii, !Self.isValidUTF8(UnsafeBufferPointer(rebasing: bytes[start..<cursor])) {
                    throw error(.invalidUTF8, "a string is not valid UTF-8", at: quoteAt)
                }
                index = cursor + 1
                return try body(start, count, nil)
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error(.controlCharacter, "a string contains the raw control character 0x\(String(byte, radix: 16)); escape it", at: cursor) }
            if byte >= 0x80 { ascii = false }
            cursor += 1
        }
        guard cursor < bytes.count else { throw error(.syntax, "unterminated string", at: quoteAt) }
        // Escapes: unescape into a buffer.
        var out = [UInt8](UnsafeBufferPointer(rebasing: bytes[start..<cursor]))
        while cursor < bytes.count {
            let byte = bytes[cursor]
            if byte == UInt8(ascii: "\"") {
                if !Self.isValidUTF8(UnsafeBufferPointer(rebasing: bytes[start..<cursor])) {
                    throw error(.invalidUTF8, "a string is not valid UTF-8", at: quoteAt)
                }
                index = cursor + 1
                return try body(start, out.count, out)
            }
            if byte < 0x20 { throw error(.controlCharacter, "a string contains the raw control character 0x\(String(byte, radix: 16)); escape it", at: cursor) }
            guard byte == UInt8(ascii: "\\") else {
                out.append(byte)
                cursor += 1
                continue
            }
            guard cursor + 1 < bytes.count else { break }
            let escape = bytes[cursor + 1]
            cursor += 2
            switch escape {
            case UInt8(ascii: "\""): out.append(0x22)
            case UInt8(ascii: "\\"): out.append(0x5C)
            case UInt8(ascii: "/"): out.append(0x2F)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                guard var scalar = hex4(at: cursor) else { throw error(.invalidEscape, "\\u must be followed by 4 hex digits", at: cursor - 2) }
                cursor += 4
                if (0xD800..<0xDC00).contains(scalar) {
                    guard cursor + 6 <= bytes.count, bytes[cursor] == UInt8(ascii: "\\"), bytes[cursor + 1] == UInt8(ascii: "u"),
                        let low = hex4(at: cursor + 2), (0xDC00..<0xE000).contains(low)
                    else { throw error(.invalidEscape, "a \\u high surrogate is not followed by a low surrogate", at: cursor - 6) }
                    cursor += 6
                    scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                } else if (0xDC00..<0xE000).contains(scalar) {
                    throw error(.invalidEscape, "a \\u low surrogate without its high surrogate", at: cursor - 6)
                }
                Self.appendUTF8(scalar, to: &out)
            default:
                throw error(.invalidEscape, "unknown escape \\\(Character(Unicode.Scalar(escape)))", at: cursor - 2)
            }
        }
        throw error(.syntax, "unterminated string", at: quoteAt)
    }

    private func hex4(at position: Int) -> UInt32? {
        guard position + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for offset in 0..<4 {
            let byte = bytes[position + offset]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    private static func appendUTF8(_ scalar: UInt32, to out: inout [UInt8]) {
        switch scalar {
        case 0..<0x80: out.append(UInt8(scalar))
        case 0x80..<0x800:
            out.append(UInt8(0xC0 | scalar >> 6))
            out.append(UInt8(0x80 | scalar & 0x3F))
        case 0x800..<0x10000:
            out.append(UInt8(0xE0 | scalar >> 12))
            out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        default:
            out.append(UInt8(0xF0 | scalar >> 18))
            out.append(UInt8(0x80 | scalar >> 12 & 0x3F))
            out.append(UInt8(0x80 | scalar >> 6 & 0x3F))
            out.append(UInt8(0x80 | scalar & 0x3F))
        }
    }

    /// Well-formed UTF-8 (no overlong forms, no surrogates, nothing above U+10FFFF).
    static func isValidUTF8(_ bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        var i = 0
        let n = bytes.count
        while i < n {
            let lead = bytes[i]
            if lead < 0x80 {
                i += 1
                continue
            }
            func continuation(_ offset: Int, _ range: ClosedRange<UInt8> = 0x80...0xBF) -> Bool {
                i + offset < n && range.contains(bytes[i + offset])
            }
            switch lead {
            case 0xC2...0xDF:
                guard continuation(1) else { return false }
                i += 2
            case 0xE0:
                guard continuation(1, 0xA0...0xBF), continuation(2) else { return false }
                i += 3
            case 0xE1...0xEC, 0xEE...0xEF:
                guard continuation(1), continuation(2) else { return false }
                i += 3
            case 0xED:
                guard continuation(1, 0x80...0x9F), continuation(2) else { return false }
                i += 3
            case 0xF0:
                guard continuation(1, 0x90...0xBF), continuation(2), continuation(3) else { return false }
                i += 4
            case 0xF1...0xF3:
                guard continuation(1), continuation(2), continuation(3) else { return false }
                i += 4
            case 0xF4:
                guard continuation(1, 0x80...0x8F), continuation(2), continuation(3) else { return false }
                i += 4
            default:
                return false
            }
        }
        return true
    }

    // MARK: - Numbers

    /// A number as scanned: its bytes, whether it is a plain integer, and its digits when they
    /// fit the fast paths.
    struct NumberToken {
        var start: Int
        var end: Int
        var isInteger: Bool
        var negative: Bool
        /// The significant digits as an integer, when there were at most 19 of them.
        var mantissa: UInt64
        var digitCount: Int
        /// Power of ten to apply to `mantissa` (fraction digits and exponent).
        var exponent: Int
        var hasNonZeroDigit: Bool
    }

    /// Scans a number by the JSON grammar: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
    mutating func scanNumber() throws -> NumberToken {
        let start = index
        var token = NumberToken(start: start, end: start, isInteger: true, negative: false, mantissa: 0, digitCount: 0, exponent: 0, hasNonZeroDigit: false)
        func digit(_ at: Int) -> UInt8? {
            guard at < bytes.count else { return nil }
            let byte = bytes[at]
            return byte >= 0x30 && byte <= 0x39 ? byte - 0x30 : nil
        }
        func addDigit(_ d: UInt8) {
            if d != 0 { token.hasNonZeroDigit = true }
            if token.digitCount == 0 && d == 0 { return }  // leading zeros of the fraction ("0.001") carry no digits
            if token.digitCount < 19 {
                token.mantissa = token.mantissa * 10 + UInt64(d)
                token.digitCount += 1
            } else {
                token.digitCount += 1
                token.exponent += 1  // digits beyond 19 only count for the slow path, which reparses
            }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "-") {
            token.negative = true
            index += 1
        }
        guard let first = digit(index) else { throw error(.syntax, "a number must have digits after '-'") }
        index += 1
        if first == 0 {
            if digit(index) != nil { throw error(.syntax, "a number must not have leading zeros", at: start) }
        } else {
            addDigit(first)
            while let d = digit(index) {
                addDigit(d)
                index += 1
            }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
            token.isInteger = false
            index += 1
            guard digit(index) != nil else { throw error(.syntax, "a number's fraction needs digits after '.'", at: start) }
            while let d = digit(index) {
                addDigit(d)
                token.exponent -= 1
                index += 1
            }
        }
        if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
            token.isInteger = false
            index += 1
            var negativeExponent = false
            if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") {
                negativeExponent = bytes[index] == UInt8(ascii: "-")
                index += 1
            }
            guard digit(index) != nil else { throw error(.syntax, "a number's exponent needs digits", at: start) }
            var value = 0
            while let d = digit(index) {
                if value < 100_000 { value = value * 10 + Int(d) }
                index += 1
            }
            token.exponent += negativeExponent ? -value : value
        }
        token.end = index
        return token
    }

    private static let powersOfTen: [Double] = (0...22).map { pow(10, Double($0)) }

    mutating func double() throws -> Double {
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "-") || (bytes[index] >= 0x30 && bytes[index] <= 0x39) else {
            throw wrongType("a number")
        }
        let token = try scanNumber()
        var value: Double
        // Exact when the digits fit a Double's 53 bits and the power of ten is exact (Clinger's
        // fast path); anything else goes to strtod, which rounds correctly.
        if token.digitCount <= 15, abs(token.exponent) <= 22 {
            value = Double(token.mantissa)
            value = token.exponent < 0 ? value / Self.powersOfTen[-token.exponent] : value * Self.powersOfTen[token.exponent]
            if token.negative { value = -value }
        } else {
            value = parseWithStrtod(token)
        }
        guard value.isFinite else { throw error(.invalidValue, "the number \(text(token)) does not fit a Double", at: token.start) }
        if value == 0, token.hasNonZeroDigit { throw error(.invalidValue, "the number \(text(token)) is too small for a Double", at: token.start) }
        return value
    }

    private func parseWithStrtod(_ token: NumberToken) -> Double {
        let count = token.end - token.start
        return withUnsafeTemporaryAllocation(of: CChar.self, capacity: count + 1) { buffer in
            for offset in 0..<count { buffer[offset] = CChar(bitPattern: bytes[token.start + offset]) }
            buffer[count] = 0
            return strtod(buffer.baseAddress!, nil)
        }
    }

    private func text(_ token: NumberToken) -> String {
        String(decoding: UnsafeBufferPointer(rebasing: bytes[token.start..<min(token.end, token.start + 40)]), as: UTF8.self)
    }

    /// An integer literal (no fraction, no exponent) that fits `Int64`.
    mutating func int() throws -> Int {
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "-") || (bytes[index] >= 0x30 && bytes[index] <= 0x39) else {
            throw wrongType("an integer")
        }
        let token = try scanNumber()
        guard token.isInteger else { throw error(.notAnInteger, "expected an integer, found \(text(token))", at: token.start) }
        guard token.digitCount <= 19 else { throw error(.invalidValue, "the integer \(text(token)) is out of range", at: token.start) }
        if token.negative {
            guard token.mantissa <= UInt64(Int64.max) + 1 else { throw error(.invalidValue, "the integer \(text(token)) is out of range", at: token.start) }
            return token.mantissa == UInt64(Int64.max) + 1 ? Int.min : -Int(token.mantissa)
        }
        guard token.mantissa <= UInt64(Int64.max) else { throw error(.invalidValue, "the integer \(text(token)) is out of range", at: token.start) }
        return Int(token.mantissa)
    }

    /// A non-negative integer literal that fits `UInt64` (`-0` is 0, as in Foundation).
    mutating func uint64() throws -> UInt64 {
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "-") || (bytes[index] >= 0x30 && bytes[index] <= 0x39) else {
            throw wrongType("an unsigned integer")
        }
        let token = try scanNumber()
        guard token.isInteger else { throw error(.notAnInteger, "expected an unsigned integer, found \(text(token))", at: token.start) }
        if token.negative, token.mantissa != 0 { throw error(.invalidValue, "expected an unsigned integer, found \(text(token))", at: token.start) }
        if token.digitCount == 20 {
            // 20 digits: only up to 18446744073709551615; the mantissa kept 19 of them.
            let lastDigit = UInt64(bytes[token.end - 1] - 0x30)
            let (times10, overflow1) = token.mantissa.multipliedReportingOverflow(by: 10)
            let (sum, overflow2) = times10.addingReportingOverflow(lastDigit)
            guard !overflow1, !overflow2 else { throw error(.invalidValue, "the integer \(text(token)) is out of range", at: token.start) }
            return sum
        }
        guard token.digitCount <= 19 else { throw error(.invalidValue, "the integer \(text(token)) is out of range", at: token.start) }
        return token.mantissa
    }
}
