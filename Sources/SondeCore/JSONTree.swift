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
    }

    public static func parse<Node: JSONTreeNode>(_ data: Data, as: Node.Type, maxValues: Int) -> Result<Node, Failure> {
        data.withUnsafeBytes { raw -> Result<Node, Failure> in
            var reader = StrictJSONReader(raw.bindMemory(to: UInt8.self))
            // A UTF-8 byte order mark before the document is allowed, as Foundation's decoder does.
            if raw.count >= 3, raw[0] == 0xEF, raw[1] == 0xBB, raw[2] == 0xBF { reader.index = 3 }
            var budget = maxValues
            do {
                let node: Node = try reader.tree(budget: &budget)
                try reader.expectEnd()
                return .success(node)
            } catch TreeBudget.exceeded {
                return .failure(.tooManyValues(maxValues))
            } catch let error as JSONDecodingError {
                return .failure(.invalid(error))
            } catch {
                return .failure(.invalid(JSONDecodingError(kind: .syntax, path: "$", message: "\(error)", offset: 0)))
            }
        }
    }

    enum TreeBudget: Error { case exceeded }
}

extension StrictJSONReader {
    mutating func tree<Node: JSONTreeNode>(budget: inout Int) throws -> Node {
        budget -= 1
        guard budget >= 0 else { throw JSONTree.TreeBudget.exceeded }
        skipSpace()
        guard index < bytes.count else { throw error(.syntax, "expected a value, found the end of the body") }
        switch bytes[index] {
        case UInt8(ascii: "\""):
            return .jsonString(try string())
        case UInt8(ascii: "{"):
            try beginObject()
            var members: [String: Node] = [:]
            var first = true
            while let key = try nextKey(&first) { members[text(of: key)] = try tree(budget: &budget) }
            return .jsonObject(members)
        case UInt8(ascii: "["):
            try beginArray()
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
