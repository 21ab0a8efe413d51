/// A place in the YAML text. Both numbers start at 1, as Yams reports them (libyaml counts from
/// 0); columns count Unicode scalars, as libyaml does.
public struct Mark: Sendable, Hashable, CustomStringConvertible {
    /// Line number, from 1.
    public var line: Int
    /// Column number, from 1, in Unicode scalars.
    public var column: Int

    public init(line: Int, column: Int) {
        self.line = line
        self.column = column
    }

    /// `line:column`, as Yams prints a mark.
    public var description: String { "\(line):\(column)" }
}
