/// The type of a node: a resolved YAML tag such as `tag:yaml.org,2002:int`, or a tag written in the
/// document (`!!str`, `!local`) as libyaml expanded it.
public struct Tag: Sendable, Hashable, CustomStringConvertible {
    /// The tag's full name.
    public var name: Name

    public init(_ name: Name) {
        self.name = name
    }

    /// A tag to be resolved from the node's content (plain scalars by the resolver's rules,
    /// mappings to `map`, sequences to `seq`), as Yams' `Tag.implicit`.
    public static var implicit: Tag { Tag(.implicit) }

    /// The tag's full name, as Yams' `Tag.description`.
    public var description: String { name.rawValue }

    /// A tag's name.
    public struct Name: RawRepresentable, Hashable, Sendable, ExpressibleByStringLiteral, CustomStringConvertible {
        public var rawValue: String

        public init(rawValue: String) {
            self.rawValue = rawValue
        }

        public init(stringLiteral value: String) {
            self.rawValue = value
        }

        public var description: String { rawValue }
    }
}

// The names Yams defines (http://www.yaml.org/spec/1.2/spec.html#Schema, http://yaml.org/type/).
extension Tag.Name {
    /// To be resolved from the content (never left on a composed node).
    public static let implicit: Tag.Name = ""
    /// The `!` tag: a string, mapping or sequence by the node's kind, never resolved by content.
    public static let nonSpecific: Tag.Name = "!"

    public static let str: Tag.Name = "tag:yaml.org,2002:str"
    public static let seq: Tag.Name = "tag:yaml.org,2002:seq"
    public static let map: Tag.Name = "tag:yaml.org,2002:map"
    public static let bool: Tag.Name = "tag:yaml.org,2002:bool"
    public static let float: Tag.Name = "tag:yaml.org,2002:float"
    public static let null: Tag.Name = "tag:yaml.org,2002:null"
    public static let int: Tag.Name = "tag:yaml.org,2002:int"
    public static let binary: Tag.Name = "tag:yaml.org,2002:binary"
    public static let merge: Tag.Name = "tag:yaml.org,2002:merge"
    public static let omap: Tag.Name = "tag:yaml.org,2002:omap"
    public static let pairs: Tag.Name = "tag:yaml.org,2002:pairs"
    public static let set: Tag.Name = "tag:yaml.org,2002:set"
    public static let timestamp: Tag.Name = "tag:yaml.org,2002:timestamp"
    public static let value: Tag.Name = "tag:yaml.org,2002:value"
    public static let yaml: Tag.Name = "tag:yaml.org,2002:yaml"
}
