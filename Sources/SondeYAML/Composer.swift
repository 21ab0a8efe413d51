/// Composes the first YAML document of `yaml` into a node tree, as Yams' `compose(yaml:)` does
/// with its default resolver: plain scalars get their tag from `TagResolver`, aliases stand for
/// the node their anchor names, marks are where each node starts (1-based).
///
/// - Returns: nil when the text has no document (empty, or only comments and blank lines). An
///   explicit empty document (`---`) is a null scalar, as in Yams.
/// - Throws: `YAMLError` for invalid YAML, an alias to no anchor, a second document (as Yams:
///   "but found another document"), or a document past `ComposeLimits`.
public func compose(yaml: String) throws(YAMLError) -> Node? {
    var text = yaml
    return try text.withUTF8 { bytes in
        Result { () throws(YAMLError) -> Node? in try Composer.compose(bytes) }
    }.get()
}

/// `compose(yaml:)` for bytes that have not been checked as UTF-8: libyaml's reader refuses
/// invalid UTF-8 (and characters YAML does not allow) with a `.reader` error and its place.
public func compose(bytes: [UInt8]) throws(YAMLError) -> Node? {
    try bytes.withUnsafeBufferPointer { buffer in
        Result { () throws(YAMLError) -> Node? in try Composer.compose(buffer) }
    }.get()
}

/// Bounds on what `compose` builds, so hostile text can neither exhaust the stack of a caller
/// that walks the tree recursively nor make an alias "bomb" expand exponentially.
public enum ComposeLimits {
    /// Mappings and sequences nested in one another, aliases counted where they are used.
    public static let maxDepth = 256
    /// Nodes in the document, each use of an alias counted as a copy of the node it names.
    public static let maxNodes = 100_000
}

/// Builds the tree from libyaml's events with an explicit stack: no recursion on depth.
struct Composer {
    private let parser: EventParser
    /// Each anchor's node, its size (nodes, aliases expanded) and height (collection levels).
    private var anchors: [String: (node: Node, size: Int, height: Int)] = [:]
    private var nodeCount = 0

    private init(parser: EventParser) {
        self.parser = parser
    }

    static func compose(_ bytes: UnsafeBufferPointer<UInt8>) throws(YAMLError) -> Node? {
        var composer = Composer(parser: try EventParser(input: bytes))
        return try composer.singleRoot()
    }

    /// The event order of Yams' `Parser.init` + `singleRoot()`, so that errors come from the
    /// same libyaml calls.
    private mutating func singleRoot() throws(YAMLError) -> Node? {
        _ = try parser.next() // STREAM-START
        let first = try parser.next()
        guard first.kind != .streamEnd else { return nil }
        // `first` is DOCUMENT-START; the root node's events follow.
        let root = try node(from: try parser.next())
        _ = try parser.next() // DOCUMENT-END
        let after = try parser.next()
        guard after.kind == .streamEnd else {
            throw YAMLError(kind: .composer, problem: "but found another document", mark: after.mark,
                            context: "expected a single document in the stream", contextMark: Mark(line: 1, column: 1))
        }
        return root
    }

    /// A mapping or sequence whose start event has been read and whose end has not.
    private struct Open {
        var isMapping: Bool
        var start: Event
        var nodeCountBefore: Int
        var items: [Node] = []
        var pairs: [(Node, Node)] = []
        var pendingKey: Node?
        /// The tallest child's height (0 for scalars).
        var childHeight = 0
    }

    private mutating func node(from firstEvent: Event) throws(YAMLError) -> Node {
        var stack: [Open] = []
        var event = firstEvent
        while true {
            let completed: (node: Node, height: Int)
            switch event.kind {
            case .scalar:
                try count(1, at: event.mark)
                let style = Node.Scalar.Style(rawValue: event.style) ?? .any
                let node = Node.scalar(Node.Scalar(event.value, Tag(event.tag ?? .implicit), style, event.mark))
                define(event.anchor, node, size: 1, height: 0)
                completed = (node, 0)
            case .alias:
                guard let name = event.anchor, let anchored = anchors[name] else {
                    throw YAMLError(kind: .composer, problem: "found undefined alias", mark: event.mark)
                }
                try checkDepth(stack.count + anchored.height, at: event.mark)
                try count(anchored.size, at: event.mark)
                completed = (anchored.node, anchored.height)
            case .sequenceStart, .mappingStart:
                try checkDepth(stack.count + 1, at: event.mark)
                let before = nodeCount
                try count(1, at: event.mark)
                stack.append(Open(isMapping: event.kind == .mappingStart, start: event, nodeCountBefore: before))
                event = try parser.next()
                continue
            case .sequenceEnd, .mappingEnd:
                guard let open = stack.popLast(), open.isMapping == (event.kind == .mappingEnd), open.pendingKey == nil else {
                    throw Self.unexpected(event)
                }
                let start = open.start
                let tag = Tag(start.tag ?? .implicit)
                // The style comes from the start event. Yams reads it from the end event, which
                // libyaml leaves zeroed, so Yams always says `.any`; here it is `.block` or `.flow`.
                let node: Node = open.isMapping
                    ? .mapping(Node.Mapping(open.pairs, tag, Node.Mapping.Style(rawValue: start.style) ?? .any, start.mark))
                    : .sequence(Node.Sequence(open.items, tag, Node.Sequence.Style(rawValue: start.style) ?? .any, start.mark))
                let height = open.childHeight + 1
                define(start.anchor, node, size: nodeCount - open.nodeCountBefore, height: height)
                completed = (node, height)
            case .streamStart, .streamEnd, .documentStart, .documentEnd:
                throw Self.unexpected(event)
            }

            guard var parent = stack.popLast() else { return completed.node }
            parent.childHeight = max(parent.childHeight, completed.height)
            if !parent.isMapping {
                parent.items.append(completed.node)
            } else if let key = parent.pendingKey {
                parent.pairs.append((key, completed.node))
                parent.pendingKey = nil
            } else {
                parent.pendingKey = completed.node
            }
            stack.append(parent)
            event = try parser.next()
        }
    }

    /// As Yams: an anchor names the node once it is complete, and a later anchor of the same
    /// name replaces it for the aliases after it.
    private mutating func define(_ anchor: String?, _ node: Node, size: Int, height: Int) {
        if let anchor { anchors[anchor] = (node, size, height) }
    }

    private mutating func count(_ nodes: Int, at mark: Mark) throws(YAMLError) {
        nodeCount += nodes
        guard nodeCount <= ComposeLimits.maxNodes else {
            throw YAMLError(kind: .limit, problem: "the document has more than \(ComposeLimits.maxNodes) nodes, counting each use of an alias as a copy of what it names; split it or use fewer aliases", mark: mark)
        }
    }

    private func checkDepth(_ depth: Int, at mark: Mark) throws(YAMLError) {
        guard depth <= ComposeLimits.maxDepth else {
            throw YAMLError(kind: .limit, problem: "mappings and sequences are nested more than \(ComposeLimits.maxDepth) levels deep (aliases counted where they are used)", mark: mark)
        }
    }

    /// libyaml never produces these out of order; refused rather than trusted, so a libyaml bug
    /// cannot crash the caller.
    private static func unexpected(_ event: Event) -> YAMLError {
        YAMLError(kind: .composer, problem: "unexpected event \(event.kind) from libyaml", mark: event.mark)
    }
}
