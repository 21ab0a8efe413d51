import FoundationEssentials
import SondeCore
import SondeYAML

#if canImport(Glibc)
import Glibc
#endif

/// Reads a composed YAML tree field by field, collecting every problem as a diagnostic with
/// file, line, column and dotted field path instead of stopping at the first one.
struct NodeReader {
    let file: String
    var diagnostics: [ProbeDiagnostic] = []
    var warnings: [ProbeDiagnostic] = []
    /// Names `${name}` may use at this point: agent variables, built-ins, earlier extractions.
    var scope: Set<String> = []
    /// The agent variables' values, for what the loader must know now (`interval`,
    /// `retry_interval`, `timeout`); empty where only names are known.
    var values: [String: String] = [:]
    /// `${env:…}` and `${file:…}` references seen, for redaction at run time.
    var environmentReferences: Set<String> = []
    /// Those without a `:-default`: a run fails as `script` where one is unset.
    var requiredEnvironment: Set<String> = []
    var fileReferences: Set<String> = []
    /// Folder `${file:relative}` paths are resolved against.
    var baseDirectory: String

    init(file: String, baseDirectory: String) {
        self.file = file
        self.baseDirectory = baseDirectory
    }

    // MARK: - Reporting

    mutating func report(_ node: Node?, _ field: String?, _ message: String) {
        let mark = node?.mark
        diagnostics.append(ProbeDiagnostic(file: file, line: mark?.line, column: mark?.column, field: field, message: message))
    }

    mutating func warn(_ node: Node?, _ field: String?, _ message: String) {
        let mark = node?.mark
        warnings.append(ProbeDiagnostic(file: file, line: mark?.line, column: mark?.column, field: field, message: message, isWarning: true))
    }

    static func join(_ parent: String, _ key: String) -> String {
        parent.isEmpty ? key : "\(parent).\(key)"
    }

    static func describe(_ node: Node) -> String { node.readableDescription }

    // MARK: - Structure

    /// The fields of a mapping, in order. Unknown fields are reported with the closest known
    /// name; duplicates and missing required fields too.
    /// `nested`: the fields that take a mapping, each with the names it accepts inside (nil: any
    /// name, such as `headers`), so that a key written flat (`poll_every`) is suggested nested
    /// only where that form is valid.
    mutating func fields(
        _ node: Node, _ field: String, known: [String], required: [String] = [], nested: [String: [String]?] = [:]
    ) -> [(key: String, keyNode: Node, value: Node)]? {
        guard let mapping = node.mapping else {
            report(node, field.isEmpty ? nil : field, "expected a mapping with fields (\(known.joined(separator: ", "))), found \(Self.describe(node))")
            return nil
        }
        var result: [(key: String, keyNode: Node, value: Node)] = []
        var seen: [String: Node] = [:]
        for (keyNode, value) in mapping {
            guard let key = keyNode.scalar?.string else {
                report(keyNode, field.isEmpty ? nil : field, "field names must be plain text")
                continue
            }
            let path = Self.join(field, key)
            if let first = seen[key] {
                report(keyNode, path, "duplicate field '\(key)' (first set at line \(first.mark?.line ?? 0))")
                continue
            }
            seen[key] = keyNode
            guard known.contains(key) else {
                let accepts = { (parent: String, child: String) in nested[parent].map { $0?.contains(child) ?? true } ?? false }
                report(keyNode, path, "unknown field '\(key)'" + NodeDecodingError.suggestion(for: key, among: known, accepts: accepts))
                continue
            }
            result.append((key, keyNode, value))
        }
        for name in required where seen[name] == nil {
            report(node, Self.join(field, name), "missing required field '\(name)'")
        }
        return result
    }

    /// "; did you mean 'x'?" or the list of known names (SondeYAML's, shared with config files).
    static func suggestion(for key: String, among known: [String]) -> String {
        NodeDecodingError.suggestion(for: key, among: known)
    }

    mutating func list(_ node: Node, _ field: String) -> [Node]? {
        guard let sequence = node.sequence else {
            report(node, field, "expected a list, found \(Self.describe(node))")
            return nil
        }
        return Array(sequence)
    }

    /// A list, or a single item taken as a one-item list.
    func listOrOne(_ node: Node) -> [Node] {
        if let sequence = node.sequence { return Array(sequence) }
        return [node]
    }

    // MARK: - Scalars

    mutating func string(_ node: Node, _ field: String, allowEmpty: Bool = false) -> String? {
        guard let scalar = node.scalar, !(node.tagName == .null && scalar.style == .plain) else {
            report(node, field, "expected text, found \(Self.describe(node))")
            return nil
        }
        if !allowEmpty, scalar.string.isEmpty {
            report(node, field, "must not be empty")
            return nil
        }
        return scalar.string
    }

    mutating func bool(_ node: Node, _ field: String) -> Bool? {
        guard node.scalar != nil, node.tagName == .bool, let value = node.bool else {
            report(node, field, "expected true or false, found \(Self.describe(node))")
            return nil
        }
        return value
    }

    mutating func int(_ node: Node, _ field: String, range: ClosedRange<Int>) -> Int? {
        guard let scalar = node.scalar, let value = Int(scalar.string) else {
            report(node, field, "expected a whole number, found \(Self.describe(node))")
            return nil
        }
        guard range.contains(value) else {
            report(node, field, "\(value) is out of range (\(range.lowerBound)…\(range.upperBound))")
            return nil
        }
        return value
    }

    /// A regex that takes no templates (header and JSON `matches`, `regex` extractions, failure
    /// codes): a `${…}` in it is warned about, since it is read as regex text (an end anchor, then
    /// a brace) and never matches what the writer meant.
    mutating func regex(_ node: Node, _ field: String) -> String? {
        guard let pattern = string(node, field) else { return nil }
        if Self.hasUnescapedTemplate(pattern) {
            warn(node, field, "'${…}' is not filled in here (only an assert's body_matches takes values); as a regex it never matches. Write \\$ for a literal dollar sign")
        }
        do {
            _ = try ProbeRegex(pattern)
            return pattern
        } catch {
            report(node, field, "invalid regular expression '\(pattern)': \(error)")
            return nil
        }
    }

    /// True when `pattern` holds `${` not preceded by a backslash.
    static func hasUnescapedTemplate(_ pattern: String) -> Bool {
        let bytes = Array(pattern.utf8)
        for i in bytes.indices.dropLast() where bytes[i] == UInt8(ascii: "$") && bytes[i + 1] == UInt8(ascii: "{") {
            if i == 0 || bytes[i - 1] != UInt8(ascii: "\\") { return true }
        }
        return false
    }

    mutating func jsonPath(_ node: Node, _ field: String) -> JSONPath? {
        guard let text = string(node, field) else { return nil }
        do {
            return try JSONPath.parse(text)
        } catch {
            report(node, field, error.message)
            return nil
        }
    }

    // MARK: - Templates

    /// A templated string: syntax, undefined variables and missing `${file:…}` are reported.
    /// `captures`: `${1}` … may refer to groups of a regex (a `query_response` entry's `send`).
    mutating func template(_ node: Node, _ field: String, allowEmpty: Bool = true, captures: Bool = false) -> Template? {
        guard let text = string(node, field, allowEmpty: allowEmpty) else { return nil }
        return template(text: text, node, field, captures: captures)
    }

    mutating func template(text: String, _ node: Node, _ field: String, captures: Bool = false) -> Template? {
        let parsed: Template
        do {
            parsed = try Template.parse(text)
        } catch {
            report(node, field, error.message)
            return nil
        }
        var valid = true
        for segment in parsed.segments {
            switch segment {
            case .variable(let name, nil) where !scope.contains(name) && !Template.builtins.contains(name):
                let known = scope.union(Template.builtins).sorted()
                report(node, field, "undefined variable '${\(name)}': not an agent variable, not extracted by an earlier step and not built in"
                    + Self.suggestion(for: name, among: known) + " (or give a default: ${\(name):-value})")
                valid = false
            case .capture(let group) where !captures:
                report(node, field, "'${\(group)}' is a group of a matched line: it works only in a query_response entry's send, beside that entry's expect_matches")
                valid = false
            case .environment(let name, let fallback):
                environmentReferences.insert(name)
                if fallback == nil { requiredEnvironment.insert(name) }
            case .file(let path, let fallback):
                fileReferences.insert(path)
                if fallback == nil, let problem = RegularFile.problem(atPath: Self.resolve(path, base: baseDirectory), limit: Self.maxSecretFileBytes) {
                    report(node, field, "secret file '\(path)' (from ${file:\(path)}) \(problem)")
                    valid = false
                }
            default:
                break
            }
        }
        return valid ? parsed : nil
    }

    /// The most a `${file:…}` secret may hold: a token, a password, a key, not a data set.
    static let maxSecretFileBytes = 1 << 20

    static func resolve(_ path: String, base: String) -> String {
        path.hasPrefix("/") ? path : (base.hasSuffix("/") ? base : base + "/") + path
    }

    /// A duration, literal (`30s`) or templated (`${limit:-60s}`, checked through its default).
    mutating func duration(_ node: Node, _ field: String) -> DurationSpec? {
        guard node.scalar != nil else {
            report(node, field, "\(DurationText.hint), found \(Self.describe(node))")
            return nil
        }
        guard let text = string(node, field) else { return nil }
        if !text.contains("${") {
            guard let value = DurationText.parse(text) else {
                let guess = Double(text) != nil ? " (did you mean \(text)s?)" : ""
                report(node, field, "bad duration '\(text)'\(guess): \(DurationText.hint)")
                return nil
            }
            return .fixed(value)
        }
        guard let parsed = template(text: text, node, field) else { return nil }
        if let fallback = parsed.defaultValue, DurationText.parse(fallback) == nil {
            report(node, field, "bad duration '\(fallback)' (the default of '\(text)'): \(DurationText.hint)")
            return nil
        }
        return .template(parsed)
    }

    /// A duration the loader must know now (interval, retry_interval, timeout): literal or with a
    /// default. An agent variable it names (`values`) or an environment variable set for the agent
    /// takes the default's place: `interval: ${check_interval:-30s}` with `check_interval: 10s`
    /// in the agent's `variables:` runs every 10 s (a reload reads them again).
    mutating func fixedDuration(_ node: Node, _ field: String) -> (spec: DurationSpec, value: Duration)? {
        guard let spec = duration(node, field) else { return nil }
        switch spec {
        case .fixed(let value):
            return (spec, value)
        case .template(let parsed):
            guard let fallback = parsed.defaultValue, let value = DurationText.parse(fallback) else {
                report(node, field, "'\(parsed.source)' needs a default here, e.g. ${name:-30s}")
                return nil
            }
            guard let known = knownNow(parsed), known != fallback else { return (spec, value) }
            guard let chosen = DurationText.parse(known) else {
                report(node, field, "'\(parsed.source)' is '\(known)' for this agent, not a duration (e.g. 30s, 1m30s)")
                return nil
            }
            return (spec, chosen)
        }
    }

    /// The template with agent variables, the agent's environment (an empty variable is unset)
    /// and files (`${file:…}`, read as a run reads them: trimmed) put in; nil when it has a
    /// reference the loader cannot know.
    private func knownNow(_ template: Template) -> String? {
        template.filled(
            variable: { values[$0] }, environment: { name in getenv(name).map { String(cString: $0) }.flatMap { $0.isEmpty ? nil : $0 } },
            file: { Self.smallFile(Self.resolve($0, base: baseDirectory)) })
    }

    /// A file's text, trimmed, when it is under 4 KiB: a schedule's value is a few bytes, and a
    /// bigger file is not one (nor read whole).
    private static func smallFile(_ path: String) -> String? {
        guard case .success(let bytes) = RegularFile.read(atPath: path, limit: 4095) else { return nil }
        return String(decoding: bytes, as: UTF8.self).trimmed()
    }

    // MARK: - JSON values

    /// A YAML value as JSON: mappings, lists, numbers, booleans, null; strings are templates.
    mutating func jsonTemplate(_ node: Node, _ field: String) -> JSONTemplate? {
        switch node {
        case .mapping(let mapping):
            var members: [(key: String, value: JSONTemplate)] = []
            var ok = true
            for (keyNode, value) in mapping {
                guard let key = keyNode.scalar?.string else {
                    report(keyNode, field, "JSON object keys must be text")
                    ok = false
                    continue
                }
                if let item = jsonTemplate(value, Self.join(field, key)) { members.append((key, item)) } else { ok = false }
            }
            return ok ? .object(members) : nil
        case .sequence(let sequence):
            var items: [JSONTemplate] = []
            var ok = true
            for (index, value) in sequence.enumerated() {
                if let item = jsonTemplate(value, "\(field)[\(index)]") { items.append(item) } else { ok = false }
            }
            return ok ? .array(items) : nil
        case .scalar(let scalar):
            if scalar.style == .plain {
                switch node.tagName {
                case .null: return .null
                case .bool: if let value = node.bool { return .bool(value) }
                case .int, .float: if let value = Double(scalar.string) ?? node.float { return .number(value) }
                default: break
                }
            }
            return template(text: scalar.string, node, field).map { .string($0) }
        }
    }
}
