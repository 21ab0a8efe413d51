import FoundationEssentials

/// A type a JSON document can be read into, node by node (the probes' `JSONValue`).
public protocol JSONTreeNode {
    static var jsonNull: Self { get }
    static func jsonBool(_ value: Bool) -> Self
    static func jsonNumber(_ value: Double) -> Self
    static func jsonString(_ value: String) -> Self
    static func jsonArray(_ items: [Self]) -> Self
    static func jsonObject(_ members: [String: Self]) -> Self
}

/// Reads a whole JSON document (a response a probe checks) with the strict reader: every byte
/// checked, nesting up to 512, and at most `maxValues` values. A server chooses the body, and
/// Foundation's `JSONDecoder` into a tree cost 5.8 s and 390 MB of memory for 10 MiB of
/// `[{"a":0},…]` (red team, fourth pass); this reads it in a fraction of both, or gives up.
public enum JSONTree {
    public enum Failure: Error, Sendable {
        /// Not JSON (the reader's error says where).
        case invalid(JSONDecodingError)
        /// More than `maxValues` values.
        case tooManyValues(Int)
        /// A tree that would take more than this many bytes of memory (`MemoryCost`).
        case tooMuchMemory(Int)
    }

    /// What a tree's nodes cost in memory, estimated from above on 64-bit Linux: a value in its
    /// parent (an enum of 17 bytes, stride 24, with malloc's rounding), an object's own
    /// dictionary (header, buckets, and one allocation per small dictionary), an array's buffer,
    /// and a string's or key's bytes. Counting values alone allowed about 100 MB per check: 4 MB
    /// of `[{"b":[{"c":1},…]},…]` (half a million small objects) peaked at 128 MiB, and eight such
    /// checks at once at 724 MiB (red team, 32nd session, F3).
    enum MemoryCost {
        static let value = 32
        static let object = 176
        static let member = 48
        static let array = 48
    }

    /// `spent`: the tree's estimated bytes (`MemoryCost`), so far as it was built.
    public static func parse<Node: JSONTreeNode>(
        _ data: Data, as: Node.Type, maxValues: Int, maxBytes: Int = .max, spent: inout Int
    ) -> Result<Node, Failure> {
        var budget = TreeBudget(values: maxValues, bytes: maxBytes)
        defer { spent = maxBytes - max(budget.bytes, 0) }
        return data.withUnsafeBytes { raw -> Result<Node, Failure> in
            var reader = StrictJSONReader(raw.bindMemory(to: UInt8.self))
            // A UTF-8 byte order mark before the document is allowed, as Foundation's decoder does.
            if raw.count >= 3, raw[0] == 0xEF, raw[1] == 0xBB, raw[2] == 0xBF { reader.index = 3 }
            do {
                let node: Node = try reader.tree(budget: &budget)
                try reader.expectEnd()
                return .success(node)
            } catch TreeBudget.Exceeded.values {
                return .failure(.tooManyValues(maxValues))
            } catch TreeBudget.Exceeded.bytes {
                return .failure(.tooMuchMemory(maxBytes))
            } catch let error as JSONDecodingError {
                return .failure(.invalid(error))
            } catch {
                return .failure(.invalid(JSONDecodingError(kind: .syntax, path: "$", message: "\(error)", offset: 0)))
            }
        }
    }

    /// What `parse` would spend on `data`, from one pass over its bytes that allocates nothing:
    /// its values, and its tree's estimated bytes (`MemoryCost`; a string counts its bytes as
    /// written, escapes included, so never less than `parse`). Valid or not, the body is not
    /// checked here; `parse` does that. So a body whose tree is over the caps fails without a
    /// tree being built, and the memory a tree is let have is what it will take (`CheckMemory`).
    public static func estimate(_ data: Data) -> (values: Int, bytes: Int) {
        data.withUnsafeBytes { raw -> (values: Int, bytes: Int) in
            var values = 0
            var bytes = 0
            var index = 0
            var inScalar = false
            let count = raw.count
            while index < count {
                let byte = raw[index]
                switch byte {
                case UInt8(ascii: "\""):
                    inScalar = false
                    // A string: its bytes up to the closing quote not escaped by a backslash.
                    var end = index + 1
                    while end < count, raw[end] != UInt8(ascii: "\"") { end += raw[end] == UInt8(ascii: "\\") ? 2 : 1 }
                    values += 1
                    bytes += MemoryCost.value + min(end, count) - index - 1
                    index = end + 1
                    continue
                case UInt8(ascii: ":"):
                    // The string before was a key: a member, not a value.
                    inScalar = false
                    values -= 1
                    bytes += MemoryCost.member - MemoryCost.value
                case UInt8(ascii: "{"):
                    inScalar = false
                    values += 1
                    bytes += MemoryCost.value + MemoryCost.object
                case UInt8(ascii: "["):
                    inScalar = false
                    values += 1
                    bytes += MemoryCost.value + MemoryCost.array
                case UInt8(ascii: ","), UInt8(ascii: "]"), UInt8(ascii: "}"), UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\r"), UInt8(ascii: "\t"):
                    inScalar = false
                default:
                    // A number, true, false or null: one value, however long.
                    if !inScalar {
                        inScalar = true
                        values += 1
                        bytes += MemoryCost.value
                    }
                }
                index += 1
            }
            return (max(values, 0), max(bytes, 0))
        }
    }

    /// What a tree may still take: values, and estimated bytes (`MemoryCost`).
    struct TreeBudget {
        enum Exceeded: Error { case values, bytes }
        var values: Int
        var bytes: Int

        mutating func spend(values count: Int = 0, bytes cost: Int) throws {
            values -= count
            bytes -= cost
            if values < 0 { throw Exceeded.values }
            if bytes < 0 { throw Exceeded.bytes }
        }
    }
}

extension StrictJSONReader {
    mutating func tree<Node: JSONTreeNode>(budget: inout JSONTree.TreeBudget) throws -> Node {
        try budget.spend(values: 1, bytes: JSONTree.MemoryCost.value)
        skipSpace()
        guard index < bytes.count else { throw error(.syntax, "expected a value, found the end of the body") }
        switch bytes[index] {
        case UInt8(ascii: "\""):
            let text = try string()
            try budget.spend(bytes: text.utf8.count)
            return .jsonString(text)
        case UInt8(ascii: "{"):
            try beginObject()
            try budget.spend(bytes: JSONTree.MemoryCost.object)
            var members: [String: Node] = [:]
            var first = true
            while let key = try nextKey(&first) {
                let name = text(of: key)
                try budget.spend(bytes: JSONTree.MemoryCost.member + name.utf8.count)
                members[name] = try tree(budget: &budget)
            }
            return .jsonObject(members)
        case UInt8(ascii: "["):
            try beginArray()
            try budget.spend(bytes: JSONTree.MemoryCost.array)
            var items: [Node] = []
            var first = true
            while try nextElement(&first) { items.append(try tree(budget: &budget)) }
            return .jsonArray(items)
        case UInt8(ascii: "t"), UInt8(ascii: "f"):
            return .jsonBool(try bool())
        case UInt8(ascii: "n"):
            guard null() else { throw error(.syntax, "expected a value, found \(describeNext())") }
            return .jsonNull
        default:
            return .jsonNumber(try double())
        }
    }
}
