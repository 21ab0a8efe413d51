/// A composed YAML node: the tree `compose(yaml:)` returns, with resolved tags and the place in
/// the text each node starts at. Mirrors Yams' `Node` (the part of it Sonde uses).
///
/// Equality and hashing, as in Yams, compare content and resolved tag only: not marks, not styles.
public enum Node: Sendable, Hashable {
    case scalar(Scalar)
    case mapping(Mapping)
    case sequence(Sequence)
}

extension Node {
    /// A scalar node, its tag resolved from `string` when `tag` is implicit.
    public init(_ string: String, _ tag: Tag = .implicit, _ style: Scalar.Style = .any) {
        self = .scalar(Scalar(string, tag, style))
    }

    /// A mapping node.
    public init(_ pairs: [(Node, Node)], _ tag: Tag = .implicit, _ style: Mapping.Style = .any) {
        self = .mapping(Mapping(pairs, tag, style))
    }

    /// A sequence node.
    public init(_ nodes: [Node], _ tag: Tag = .implicit, _ style: Sequence.Style = .any) {
        self = .sequence(Sequence(nodes, tag, style))
    }

    /// The scalar, if this is one.
    public var scalar: Scalar? {
        if case .scalar(let scalar) = self { return scalar }
        return nil
    }

    /// The mapping, if this is one.
    public var mapping: Mapping? {
        if case .mapping(let mapping) = self { return mapping }
        return nil
    }

    /// The sequence, if this is one.
    public var sequence: Sequence? {
        if case .sequence(let sequence) = self { return sequence }
        return nil
    }

    /// Where the node starts in the text (nil for a node built in code).
    public var mark: Mark? {
        switch self {
        case .scalar(let scalar): scalar.mark
        case .mapping(let mapping): mapping.mark
        case .sequence(let sequence): sequence.mark
        }
    }

    /// The resolved tag.
    public var tag: Tag {
        switch self {
        case .scalar(let scalar): scalar.tag
        case .mapping(let mapping): mapping.tag
        case .sequence(let sequence): sequence.tag
        }
    }

    /// The resolved tag's name: `.str`, `.int`, `.bool`, `.null`, `.map`, `.seq`, …
    public var tagName: Tag.Name { tag.name }

    /// The text of a scalar, as Yams' `Node.string`. A mapping with a `=` (value) key stands for
    /// that key's value, as in Yams; any other mapping, and a sequence, has no text.
    public var string: String? {
        var node = self
        // Iterative: each step goes one level down a tree whose depth the composer bounds.
        while case .mapping(let mapping) = node {
            guard let entry = mapping.first(where: { $0.key.tagName == .value }) else { return nil }
            node = entry.value
        }
        return node.scalar?.string
    }

    /// The scalar as a Bool (true/yes/on, false/no/off in any case), as Yams' `Node.bool`.
    public var bool: Bool? { scalar.flatMap(ScalarConstruction.bool) }

    /// The plain scalar as an Int (underscores, 0x/0o/0b/0 radix, `1:30` base 60), as Yams'
    /// `Node.int`.
    public var int: Int? { scalar.flatMap(ScalarConstruction.int) }

    /// The plain scalar as a Double (`.inf`, `.nan`, underscores, `1:30.5` base 60), as Yams'
    /// `Node.float`.
    public var float: Double? { scalar.flatMap(ScalarConstruction.float) }
}

// MARK: - Scalar

extension Node {
    public struct Scalar: Sendable, Hashable {
        /// The text, after libyaml's unescaping and folding. Setting it resolves the tag again
        /// from the new text, as Yams does.
        public var string: String {
            didSet { tag = Tag(TagResolver.resolve(string)) }
        }
        /// The resolved tag. Setting `.implicit` resolves it from `string`; `!` makes it `str`.
        public var tag: Tag {
            didSet { tag = Self.resolved(tag, string) }
        }
        public var style: Style
        public var mark: Mark?

        /// How the scalar was written; raw values are libyaml's `yaml_scalar_style_t`.
        public enum Style: UInt32, Sendable, Hashable {
            case any = 0
            case plain
            case singleQuoted
            case doubleQuoted
            case literal
            case folded
        }

        public init(_ string: String, _ tag: Tag = .implicit, _ style: Style = .any, _ mark: Mark? = nil) {
            self.string = string
            self.tag = Self.resolved(tag, string)
            self.style = style
            self.mark = mark
        }

        private static func resolved(_ tag: Tag, _ string: String) -> Tag {
            switch tag.name {
            case .implicit: Tag(TagResolver.resolve(string))
            case .nonSpecific: Tag(.str)
            default: tag
            }
        }

        public static func == (lhs: Scalar, rhs: Scalar) -> Bool {
            lhs.string == rhs.string && lhs.tag == rhs.tag
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(string)
            hasher.combine(tag)
        }
    }
}

// MARK: - Mapping

extension Node {
    /// A mapping's or sequence's style. Raw values are libyaml's `yaml_mapping_style_t` and
    /// `yaml_sequence_style_t`, which agree.
    public enum CollectionStyle: UInt32, Sendable, Hashable {
        case any = 0
        case block
        case flow
    }
}

extension Node {
    /// A mapping's entries in document order. Duplicate keys are kept, each in its place: YAML
    /// forbids them, and a caller that reports them needs to see them.
    public struct Mapping: Sendable, Hashable, RandomAccessCollection {
        private var pairs: [Pair]
        /// The resolved tag (`map`, or an explicit one). Setting `.implicit` or `!` gives `map`.
        public var tag: Tag {
            didSet { tag = Node.collectionTag(tag, default: .map) }
        }
        public var style: Style
        public var mark: Mark?

        public typealias Style = Node.CollectionStyle

        public typealias Element = (key: Node, value: Node)
        public typealias Index = Int

        public init(_ pairs: [(Node, Node)], _ tag: Tag = .implicit, _ style: Style = .any, _ mark: Mark? = nil) {
            self.pairs = pairs.map { Pair(key: $0.0, value: $0.1) }
            self.tag = Node.collectionTag(tag, default: .map)
            self.style = style
            self.mark = mark
        }

        public var startIndex: Int { pairs.startIndex }
        public var endIndex: Int { pairs.endIndex }

        public subscript(position: Int) -> Element {
            let pair = pairs[position]
            return (key: pair.key, value: pair.value)
        }

        /// The keys, in order.
        public var keys: [Node] { pairs.map(\.key) }
        /// The values, in order.
        public var values: [Node] { pairs.map(\.value) }

        public static func == (lhs: Mapping, rhs: Mapping) -> Bool {
            lhs.pairs == rhs.pairs && lhs.tag == rhs.tag
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(pairs)
            hasher.combine(tag)
        }

        private struct Pair: Sendable, Hashable {
            var key: Node
            var value: Node
        }
    }
}

// MARK: - Sequence

extension Node {
    /// A sequence's items in document order.
    public struct Sequence: Sendable, Hashable, RandomAccessCollection {
        private var nodes: [Node]
        /// The resolved tag (`seq`, or an explicit one). Setting `.implicit` or `!` gives `seq`.
        public var tag: Tag {
            didSet { tag = Node.collectionTag(tag, default: .seq) }
        }
        public var style: Style
        public var mark: Mark?

        public typealias Style = Node.CollectionStyle

        public typealias Element = Node
        public typealias Index = Int

        public init(_ nodes: [Node], _ tag: Tag = .implicit, _ style: Style = .any, _ mark: Mark? = nil) {
            self.nodes = nodes
            self.tag = Node.collectionTag(tag, default: .seq)
            self.style = style
            self.mark = mark
        }

        public var startIndex: Int { nodes.startIndex }
        public var endIndex: Int { nodes.endIndex }

        public subscript(position: Int) -> Node { nodes[position] }

        public static func == (lhs: Sequence, rhs: Sequence) -> Bool {
            lhs.nodes == rhs.nodes && lhs.tag == rhs.tag
        }

        public func hash(into hasher: inout Hasher) {
            hasher.combine(nodes)
            hasher.combine(tag)
        }
    }
}

extension Node {
    /// Mappings and sequences are never resolved by content: implicit and `!` give the kind's tag.
    fileprivate static func collectionTag(_ tag: Tag, default name: Tag.Name) -> Tag {
        tag.name == .implicit || tag.name == .nonSpecific ? Tag(name) : tag
    }
}
