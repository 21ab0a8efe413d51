import FoundationEssentials
import SondeCore

/// A string with `${…}` references, parsed once at load:
/// - `${name}`: an agent variable, an earlier step's extraction or a built-in
///   (`agent.id`, `agent.region`, `run.id`, `uuid`, `now.unix`, `now.unix_ms`, `now.iso8601`);
/// - `${name:-default}`: the same, with a default when it is not defined;
/// - `${env:NAME}`, `${file:PATH}`: secrets from the environment or a file (trimmed);
/// - `${1}` … `${99}`: a group of the regex the same `query_response` entry matched (its `send`
///   only; blackbox_exporter's `${1}`);
/// - `$${` writes a literal `${`.
struct Template: Sendable, Hashable, CustomStringConvertible {
    enum Segment: Sendable, Hashable {
        case literal(String)
        case variable(String, default: String?)
        case environment(String, default: String?)
        case file(String, default: String?)
        /// A group of the line the entry's `expect_matches` matched (empty when it took no part).
        case capture(Int)
    }

    var segments: [Segment]
    /// The text as written, for messages.
    var source: String

    var description: String { source }

    /// The highest `${N}` group it refers to; nil when it has none.
    var highestCapture: Int? {
        segments.compactMap { if case .capture(let group) = $0 { group } else { nil } }.max()
    }

    /// The text when the template has no references.
    var literal: String? {
        if segments.isEmpty { return "" }
        if segments.count == 1, case .literal(let text) = segments[0] { return text }
        return nil
    }

    /// Variable names it needs that have no default.
    var requiredVariables: [String] {
        segments.compactMap { if case .variable(let name, nil) = $0 { name } else { nil } }
    }

    /// The value when every reference has a default (or there is none): what the loader can know.
    var defaultValue: String? { filled(variable: { _ in nil }, environment: { _ in nil }) }

    /// The value with variables and environment variables looked up, their defaults where the
    /// look-up gives nil, and `${file:…}` defaults; nil when a reference has neither (a built-in,
    /// an extraction, a capture, a file without default).
    func filled(variable: (String) -> String?, environment: (String) -> String?, file: (String) -> String? = { _ in nil }) -> String? {
        var text = ""
        for segment in segments {
            switch segment {
            case .literal(let part): text += part
            case .variable(let name, let fallback):
                guard let value = variable(name) ?? fallback else { return nil }
                text += value
            case .environment(let name, let fallback):
                guard let value = environment(name) ?? fallback else { return nil }
                text += value
            case .file(let path, let fallback):
                guard let value = file(path) ?? fallback else { return nil }
                text += value
            default: return nil
            }
        }
        return text
    }

    static let builtins: Set<String> = ["agent.id", "agent.region", "run.id", "uuid", "now.unix", "now.unix_ms", "now.iso8601"]

    struct SyntaxError: Error, Sendable {
        var message: String
    }

    static func literal(_ text: String) -> Template {
        Template(segments: text.isEmpty ? [] : [.literal(text)], source: text)
    }

    static func parse(_ text: String) throws(SyntaxError) -> Template {
        var segments: [Segment] = []
        var literal = ""
        var index = text.startIndex
        while index < text.endIndex {
            let rest = text[index...]
            if rest.hasPrefix("$${") {
                literal += "${"
                index = text.index(index, offsetBy: 3)
                continue
            }
            guard rest.hasPrefix("${") else {
                literal.append(text[index])
                index = text.index(after: index)
                continue
            }
            let open = text.index(index, offsetBy: 2)
            guard let close = text[open...].firstIndex(of: "}") else {
                throw SyntaxError(message: "'${' at offset \(text.distance(from: text.startIndex, to: index)) is never closed with '}'")
            }
            let inner = String(text[open..<close])
            if !literal.isEmpty {
                segments.append(.literal(literal))
                literal = ""
            }
            segments.append(try parseReference(inner))
            index = text.index(after: close)
        }
        if !literal.isEmpty { segments.append(.literal(literal)) }
        return Template(segments: segments, source: text)
    }

    private static func parseReference(_ inner: String) throws(SyntaxError) -> Segment {
        var body = inner
        var fallback: String?
        if let range = inner.firstRange(of: ":-") {
            body = String(inner[..<range.lowerBound])
            fallback = String(inner[range.upperBound...])
        }
        if !body.isEmpty, body.utf8.count <= 2, body.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) {
            guard fallback == nil else {
                throw SyntaxError(message: "'${\(inner)}': a group reference takes no default (a group that took no part in the match is empty)")
            }
            return .capture(Int(body) ?? 0)
        }
        if body.hasPrefix("env:") {
            let name = String(body.dropFirst(4))
            guard isName(name, allowDots: false) else {
                throw SyntaxError(message: "'${\(inner)}': environment variable name '\(name)' is not valid (letters, digits and _)")
            }
            return .environment(name, default: fallback)
        }
        if body.hasPrefix("file:") {
            let path = String(body.dropFirst(5))
            guard !path.isEmpty else { throw SyntaxError(message: "'${\(inner)}': file path is empty") }
            return .file(path, default: fallback)
        }
        guard isName(body, allowDots: true) else {
            throw SyntaxError(message: "'${\(inner)}' is not a valid reference (expected ${name}, ${name:-default}, ${env:NAME}, ${file:PATH} or a group ${1})")
        }
        return .variable(body, default: fallback)
    }

    static func isName(_ text: String, allowDots: Bool) -> Bool {
        guard let first = text.unicodeScalars.first, first == "_" || first.isASCIILetter else { return false }
        return text.unicodeScalars.allSatisfy { scalar in
            scalar.isASCIIAlphanumeric || scalar == "_" || (allowDots && (scalar == "." || scalar == "-"))
        }
    }
}
