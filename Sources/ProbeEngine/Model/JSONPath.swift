import FoundationEssentials
import SondeCore

/// The JSONPath subset probes use: `$`, `.key`, `['key']` / `["key"]`, `[index]` (negative
/// indexes count from the end). Enough to reach one value; no wildcards or filters.
struct JSONPath: Sendable, Hashable, CustomStringConvertible {
    enum Component: Sendable, Hashable {
        case key(String)
        case index(Int)
    }

    var components: [Component]
    var text: String

    var description: String { text }

    struct SyntaxError: Error, Sendable {
        var message: String
    }

    static func parse(_ text: String) throws(SyntaxError) -> JSONPath {
        let chars = Array(text)
        guard chars.first == "$" else {
            throw SyntaxError(message: "JSON path '\(text)' must start with '$' (e.g. $.data[0].id)")
        }
        var components: [Component] = []
        var i = 1
        func fail(_ why: String) -> SyntaxError {
            SyntaxError(message: "JSON path '\(text)' at position \(i + 1): \(why)")
        }
        while i < chars.count {
            switch chars[i] {
            case ".":
                i += 1
                var key = ""
                while i < chars.count, chars[i] != ".", chars[i] != "[" {
                    key.append(chars[i])
                    i += 1
                }
                guard !key.isEmpty else { throw fail("expected a key name after '.'") }
                guard !key.contains(where: { $0 == "]" || $0 == "'" || $0 == "\"" || $0 == " " || $0 == "*" }) else {
                    throw fail("key '\(key)' has characters that need the ['key'] form")
                }
                components.append(.key(key))
            case "[":
                i += 1
                guard i < chars.count else { throw fail("unclosed '['") }
                if chars[i] == "'" || chars[i] == "\"" {
                    let quote = chars[i]
                    i += 1
                    var key = ""
                    while i < chars.count, chars[i] != quote {
                        if chars[i] == "\\", i + 1 < chars.count { i += 1 }
                        key.append(chars[i])
                        i += 1
                    }
                    guard i < chars.count else { throw fail("unclosed quote in [\(quote)…]") }
                    i += 1
                    guard i < chars.count, chars[i] == "]" else { throw fail("expected ']' after the quoted key") }
                    i += 1
                    components.append(.key(key))
                } else {
                    var digits = ""
                    while i < chars.count, chars[i] != "]" {
                        digits.append(chars[i])
                        i += 1
                    }
                    guard i < chars.count else { throw fail("unclosed '['") }
                    guard let index = Int(digits) else {
                        throw fail("'[\(digits)]' is not an index; use [0], [-1] or ['key'] (wildcards and filters are not supported)")
                    }
                    i += 1
                    components.append(.index(index))
                }
            default:
                throw fail("unexpected '\(chars[i])'; expected '.key', ['key'] or [index]")
            }
        }
        return JSONPath(components: components, text: text)
    }

    /// The value at this path, or nil when some part is missing.
    func evaluate(_ root: JSONValue) -> JSONValue? {
        var current = root
        for component in components {
            switch (component, current) {
            case (.key(let key), .object(let members)):
                guard let next = members[key] else { return nil }
                current = next
            case (.index(let index), .array(let items)):
                let position = index < 0 ? items.count + index : index
                guard items.indices.contains(position) else { return nil }
                current = items[position]
            default:
                return nil
            }
        }
        return current
    }
}

/// A parsed JSON document (from a response).
enum JSONValue: Sendable, Hashable, Decodable {
    case null
    case bool(Bool)
    case number(Double)
    case string(String)
    case array([JSONValue])
    case object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }

    /// Parses a response body; nil when it is not JSON.
    static func parse(_ data: Data) -> JSONValue? {
        try? JSONDecoder().decode(JSONValue.self, from: data)
    }

    /// Text form for comparisons, extraction and messages: strings bare, the rest as JSON.
    var text: String {
        switch self {
        case .null: "null"
        case .bool(let value): value ? "true" : "false"
        case .number(let value): JSONValue.format(value)
        case .string(let value): value
        case .array, .object: jsonText
        }
    }

    var jsonText: String {
        switch self {
        case .string(let value): JSONWriter.quote(value)
        case .array(let items): "[" + items.map(\.jsonText).joined(separator: ",") + "]"
        case .object(let members):
            "{" + members.keys.sorted().map { JSONWriter.quote($0) + ":" + members[$0]!.jsonText }.joined(separator: ",") + "}"
        default: text
        }
    }

    static func format(_ number: Double) -> String {
        if number.rounded() == number, abs(number) < 1e15 { return String(Int64(number)) }
        return String(number)
    }

    /// Loose equality for conditions: same JSON value, or same text when one side is a scalar
    /// (so `equals: 200` matches `"200"` and `equals: "true"` matches `true`).
    /// What a `<`/`>` condition compares: a number, a string that is one, or the number of
    /// items of an array or object; nil for anything else.
    var comparableNumber: Double? {
        switch self {
        case .number(let number): number
        case .string(let text): Double(text.trimmed())
        case .array(let items): Double(items.count)
        case .object(let members): Double(members.count)
        case .bool, .null: nil
        }
    }

    func looselyEquals(_ other: JSONValue) -> Bool {
        if self == other { return true }
        switch (self, other) {
        case (.array, _), (.object, _), (_, .array), (_, .object): return false
        default: return text == other.text
        }
    }
}

/// Writes JSON text with keys in the order given (YAML order), so bodies look as written.
enum JSONWriter {
    static func quote(_ text: String) -> String { jsonQuoted(text) }
}
