/// `Decodable` values from a composed YAML tree, with the place of every problem: a type
/// mismatch, a missing key, a value a type's own `init(from:)` refuses, and (unlike
/// Swift's JSON decoder) every mapping key the type never asked for, with the closest key it
/// did ask for. Config files use it, so a typo (`listen_port`, `window_runz`) is an error with
/// line and column instead of a silently ignored setting.
///
/// A key counts as known when the type's decoding looks at it (`decode`, `decodeIfPresent`,
/// `contains`): synthesized and hand-written `init(from:)` alike, with no list to keep in step.
public struct NodeDecoder {
    public init() {}

    /// Decodes `type` from `node` (an empty document decodes as an empty mapping).
    public func decode<T: Decodable>(_ type: T.Type, from node: Node?) throws(NodeDecodingError) -> T {
        let root = node ?? Node([(Node, Node)]())
        let state = DecodingState()
        let value: T
        do {
            value = try T(from: NodeDecoderImpl(node: root, codingPath: [], state: state))
        } catch let error as NodeDecodingError {
            throw error
        } catch let error as DecodingError {
            throw NodeDecodingError(error, root: root)
        } catch {
            throw NodeDecodingError(path: [], mark: root.mark, message: "\(error)")
        }
        if let unknown = state.firstUnknownKey() { throw unknown }
        return value
    }
}

/// A decoding problem: the dotted path (`webhooks[0].format`), where it is, and what is wrong.
public struct NodeDecodingError: Error, Sendable, CustomStringConvertible {
    /// `listen.port`, `webhooks[1].url`; empty for the document itself.
    public var path: String
    public var mark: Mark?
    public var message: String

    public init(path: String, mark: Mark?, message: String) {
        self.path = path
        self.mark = mark
        self.message = message
    }

    init(path: [any CodingKey], mark: Mark?, message: String) {
        self.init(path: Self.dotted(path), mark: mark, message: message)
    }

    /// Swift's decoding error, placed at the deepest node its coding path reaches.
    init(_ error: DecodingError, root: Node) {
        let (path, message): ([any CodingKey], String) =
            switch error {
            case .keyNotFound(let key, let context): (context.codingPath + [key], "is required")
            case .typeMismatch(_, let context): (context.codingPath, context.debugDescription)
            case .valueNotFound(_, let context): (context.codingPath, context.debugDescription)
            case .dataCorrupted(let context): (context.codingPath, context.debugDescription)
            @unknown default: ([], "\(error)")
            }
        var node = root
        var keyMark: Mark?
        for key in path {
            if let index = key.intValue, let sequence = node.sequence, sequence.indices.contains(index) {
                node = sequence[index]
            } else if let entry = node.mapping?.first(where: { $0.key.string == key.stringValue }) {
                node = entry.value
                keyMark = entry.key.mark
            } else {
                break
            }
        }
        // A missing key is reported at its mapping; anything else at the value (or its key).
        self.init(path: path, mark: node.mark ?? keyMark, message: message)
    }

    static func dotted(_ path: [any CodingKey]) -> String {
        var text = ""
        for key in path {
            if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
        }
        return text
    }

    public var description: String {
        let place = mark.map { "\($0.line):\($0.column): " } ?? ""
        return place + (path.isEmpty ? "" : "\(path): ") + message
    }

    /// "; did you mean 'x'?" when one of `known` is close to `key` (edit distance), else the list.
    /// `accepts(parent, child)`, when given, says whether `parent` takes a mapping with `child` in
    /// it; without it every known key is assumed to (a decoder does not know the schema below).
    public static func suggestion(for key: String, among known: [String], accepts: ((String, String) -> Bool)? = nil) -> String {
        let ranked = known.map { ($0, editDistance($0.lowercased(), key.lowercased())) }.min { $0.1 < $1.1 }
        if let (best, distance) = ranked, distance <= max(2, key.count / 3) {
            // `no_follow_redirects` is not a misspelt `follow_redirects`: taking that hint
            // would check the opposite of what was meant.
            if negationOf(key, best) { return "; '\(best)' is its opposite, not a spelling of it" + (known.isEmpty ? "" : " (expected one of: \(known.joined(separator: ", ")))") }
            return "; did you mean '\(best)'?"
        }
        // `listen_port`, `correlation.window_runs`: a known key written flat instead of nested.
        // Only suggested as nested where that form is accepted: `status_code` under a probe's
        // `assert` is `status: 404`, never `status: {code: 404}`.
        for parent in known {
            for separator in ["_", "."] where key.hasPrefix(parent + separator) && key.count > parent.count + 1 {
                let child = String(key.dropFirst(parent.count + 1))
                guard accepts?(parent, child) ?? true else { return "; did you mean '\(parent)'?" }
                return "; did you mean '\(parent)' with '\(child)' inside it (\(parent): {\(child): …})?"
            }
        }
        return known.isEmpty ? "" : "; expected one of: \(known.joined(separator: ", "))"
    }

    /// Whether `a` and `b` differ only by a negation (`no_`, `not_`, `non_`).
    static func negationOf(_ a: String, _ b: String) -> Bool {
        func stripped(_ text: String) -> [Substring] {
            text.lowercased().split(separator: "_").filter { !["no", "not", "non"].contains($0) }
        }
        return a.lowercased() != b.lowercased() && stripped(a) == stripped(b)
    }

    static func editDistance(_ a: String, _ b: String) -> Int {
        let a = Array(a), b = Array(b)
        if a.isEmpty { return b.count }
        if b.isEmpty { return a.count }
        var previous = Array(0...b.count)
        for i in 1...a.count {
            var current = [i] + Array(repeating: 0, count: b.count)
            for j in 1...b.count {
                current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1))
            }
            previous = current
        }
        return previous[b.count]
    }
}

/// Which keys each decoded mapping was asked for; the rest are unknown.
private final class DecodingState {
    struct Seen {
        var mapping: Node.Mapping
        var path: [any CodingKey]
        var asked: [String]
        var order: Int
    }
    var mappings: [String: Seen] = [:]

    func opened(_ mapping: Node.Mapping, path: [any CodingKey]) {
        let id = NodeDecodingError.dotted(path)
        if mappings[id] == nil { mappings[id] = Seen(mapping: mapping, path: path, asked: [], order: mappings.count) }
    }

    func asked(_ key: String, path: [any CodingKey]) {
        let id = NodeDecodingError.dotted(path)
        if let seen = mappings[id], !seen.asked.contains(key) { mappings[id]!.asked.append(key) }
    }

    /// The first key, in document order, that no decoding asked for.
    func firstUnknownKey() -> NodeDecodingError? {
        var found: [(mark: Mark?, error: NodeDecodingError)] = []
        for seen in mappings.values.sorted(by: { $0.order < $1.order }) {
            for (keyNode, _) in seen.mapping {
                guard let key = keyNode.string, !seen.asked.contains(key) else { continue }
                let path = NodeDecodingError.dotted(seen.path)
                let message = "unknown key '\(key)'" + NodeDecodingError.suggestion(for: key, among: seen.asked)
                found.append((keyNode.mark, NodeDecodingError(path: path.isEmpty ? key : "\(path).\(key)", mark: keyNode.mark, message: message)))
            }
        }
        return found.min { ($0.mark?.line ?? 0, $0.mark?.column ?? 0) < ($1.mark?.line ?? 0, $1.mark?.column ?? 0) }?.error
    }
}

private struct AnyKey: CodingKey {
    var stringValue: String
    var intValue: Int?
    init(stringValue: String) { self.stringValue = stringValue }
    init(intValue: Int) {
        self.stringValue = "\(intValue)"
        self.intValue = intValue
    }
}

private struct NodeDecoderImpl: Decoder {
    let node: Node
    let codingPath: [any CodingKey]
    let state: DecodingState
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard let mapping = node.mapping else {
            if node.tagName == .null {
                // An empty `key:` is an empty mapping, as in Yams.
                return KeyedDecodingContainer(NodeKeyedContainer<Key>(mapping: Node.Mapping([]), codingPath: codingPath, state: state))
            }
            throw DecodingError.typeMismatch(
                [String: Any].self, .init(codingPath: codingPath, debugDescription: "expected a mapping, found \(node.readableDescription)"))
        }
        state.opened(mapping, path: codingPath)
        return KeyedDecodingContainer(NodeKeyedContainer<Key>(mapping: mapping, codingPath: codingPath, state: state))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        if node.tagName == .null { return NodeUnkeyedContainer(nodes: [], codingPath: codingPath, state: state) }
        guard let sequence = node.sequence else {
            throw DecodingError.typeMismatch([Any].self, .init(codingPath: codingPath, debugDescription: "expected a list, found \(node.readableDescription)"))
        }
        return NodeUnkeyedContainer(nodes: Array(sequence), codingPath: codingPath, state: state)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer {
        NodeSingleValue(node: node, codingPath: codingPath, state: state)
    }
}

extension Node {
    /// How the node reads in an error message: "a mapping", "the number 3", "the text 'x'".
    public var readableDescription: String {
        switch self {
        case .mapping: "a mapping"
        case .sequence: "a list"
        case .scalar(let scalar):
            switch tagName {
            case .null: "nothing (null)"
            case .int, .float: "the number \(scalar.string)"
            case .bool: "the boolean \(scalar.string)"
            default: "the text '\(scalar.string)'"
            }
        }
    }
}

private struct NodeSingleValue: SingleValueDecodingContainer {
    let node: Node
    let codingPath: [any CodingKey]
    let state: DecodingState

    func decodeNil() -> Bool { node.tagName == .null }

    private func mismatch<T>(_ type: T.Type, _ expected: String) -> DecodingError {
        .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "expected \(expected), found \(node.readableDescription)"))
    }

    func decode(_ type: Bool.Type) throws -> Bool {
        guard node.scalar != nil, let value = node.bool else { throw mismatch(type, "true or false") }
        return value
    }

    func decode(_ type: String.Type) throws -> String {
        guard node.scalar != nil, node.tagName != .null, let value = node.string else { throw mismatch(type, "text") }
        return value
    }

    func decode(_ type: Double.Type) throws -> Double {
        guard node.scalar != nil, node.tagName == .int || node.tagName == .float, let value = node.float ?? node.int.map(Double.init) else {
            throw mismatch(type, "a number")
        }
        return value
    }

    func decode(_ type: Float.Type) throws -> Float { Float(try decode(Double.self)) }

    func integer<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard node.scalar != nil, node.tagName == .int, let value = node.int else { throw mismatch(type, "a whole number") }
        guard let exact = T(exactly: value) else {
            throw DecodingError.dataCorrupted(.init(codingPath: codingPath, debugDescription: "\(value) does not fit in \(T.self)"))
        }
        return exact
    }

    func decode(_ type: Int.Type) throws -> Int { try integer(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try integer(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try integer(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try integer(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try integer(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try integer(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type) }

    func decode<T: Decodable>(_ type: T.Type) throws -> T {
        try T(from: NodeDecoderImpl(node: node, codingPath: codingPath, state: state))
    }
}

private struct NodeKeyedContainer<Key: CodingKey>: KeyedDecodingContainerProtocol {
    let mapping: Node.Mapping
    let codingPath: [any CodingKey]
    let state: DecodingState

    var allKeys: [Key] { mapping.compactMap { $0.key.string.flatMap(Key.init(stringValue:)) } }

    private func value(_ key: Key) -> Node? {
        state.asked(key.stringValue, path: codingPath)
        return mapping.first { $0.key.string == key.stringValue }?.value
    }

    private func required(_ key: Key) throws -> Node {
        guard let node = value(key) else {
            throw DecodingError.keyNotFound(key, .init(codingPath: codingPath, debugDescription: "missing key '\(key.stringValue)'"))
        }
        return node
    }

    func contains(_ key: Key) -> Bool { value(key) != nil }

    func decodeNil(forKey key: Key) throws -> Bool { try required(key).tagName == .null }

    func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T {
        let node = try required(key)
        let path = codingPath + [key]
        return try NodeSingleValue(node: node, codingPath: path, state: state).decodeAny(type)
    }

    func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws -> KeyedDecodingContainer<NestedKey> {
        try NodeDecoderImpl(node: try required(key), codingPath: codingPath + [key], state: state).container(keyedBy: type)
    }

    func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
        try NodeDecoderImpl(node: try required(key), codingPath: codingPath + [key], state: state).unkeyedContainer()
    }

    func superDecoder() throws -> any Decoder {
        NodeDecoderImpl(node: .mapping(mapping), codingPath: codingPath, state: state)
    }

    func superDecoder(forKey key: Key) throws -> any Decoder {
        NodeDecoderImpl(node: try required(key), codingPath: codingPath + [key], state: state)
    }
}

extension NodeSingleValue {
    /// Scalars through the typed methods (so `Int` is checked as a whole number), anything else
    /// through its own `init(from:)`.
    func decodeAny<T: Decodable>(_ type: T.Type) throws -> T {
        switch type {
        case is Bool.Type: return try decode(Bool.self) as! T
        case is String.Type: return try decode(String.self) as! T
        case is Double.Type: return try decode(Double.self) as! T
        case is Int.Type: return try decode(Int.self) as! T
        default: return try T(from: NodeDecoderImpl(node: node, codingPath: codingPath, state: state))
        }
    }
}

private struct NodeUnkeyedContainer: UnkeyedDecodingContainer {
    let nodes: [Node]
    let codingPath: [any CodingKey]
    let state: DecodingState
    var currentIndex = 0

    init(nodes: [Node], codingPath: [any CodingKey], state: DecodingState) {
        self.nodes = nodes
        self.codingPath = codingPath
        self.state = state
    }

    var count: Int? { nodes.count }
    var isAtEnd: Bool { currentIndex >= nodes.count }

    private mutating func next() throws -> (Node, [any CodingKey]) {
        guard !isAtEnd else {
            throw DecodingError.valueNotFound(Any.self, .init(codingPath: codingPath, debugDescription: "the list has only \(nodes.count) items"))
        }
        defer { currentIndex += 1 }
        return (nodes[currentIndex], codingPath + [AnyKey(intValue: currentIndex)])
    }

    mutating func decodeNil() throws -> Bool {
        guard !isAtEnd, nodes[currentIndex].tagName == .null else { return false }
        currentIndex += 1
        return true
    }

    mutating func decode<T: Decodable>(_ type: T.Type) throws -> T {
        let (node, path) = try next()
        return try NodeSingleValue(node: node, codingPath: path, state: state).decodeAny(type)
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws -> KeyedDecodingContainer<NestedKey> {
        let (node, path) = try next()
        return try NodeDecoderImpl(node: node, codingPath: path, state: state).container(keyedBy: type)
    }

    mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
        let (node, path) = try next()
        return try NodeDecoderImpl(node: node, codingPath: path, state: state).unkeyedContainer()
    }

    mutating func superDecoder() throws -> any Decoder {
        let (node, path) = try next()
        return NodeDecoderImpl(node: node, codingPath: path, state: state)
    }
}
