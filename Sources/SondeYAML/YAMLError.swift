/// Why a YAML text could not be composed, and where.
///
/// `problem`, `mark`, `context` and `contextMark` are libyaml's own (marks made 1-based, as
/// Yams reports them), or the composer's for an undefined alias, a second document or a limit.
public struct YAMLError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The stage that refused the text.
    public enum Kind: String, Sendable, Hashable {
        /// The bytes are not valid UTF-8, or hold a character YAML does not allow (such as NUL).
        case reader
        /// A token could not be read (a tab indent, an unclosed quote, `a: b: c`).
        case scanner
        /// The tokens do not form a valid document (a missing `]`, a bad indentation).
        case parser
        /// The document is valid YAML but cannot be a tree: an undefined alias, a second document.
        case composer
        /// The document is nested too deeply or has too many nodes (see `Limits`).
        case limit
        /// libyaml could not allocate memory.
        case memory
    }

    public var kind: Kind
    /// What is wrong, e.g. "mapping values are not allowed in this context".
    public var problem: String
    /// Where the problem is. For a reader error libyaml gives a byte offset only; the mark is
    /// worked out from it.
    public var mark: Mark?
    /// What libyaml was reading when it found the problem, e.g. "while scanning a quoted scalar".
    public var context: String?
    /// Where that started.
    public var contextMark: Mark?
    /// For a reader error: the offset in bytes from the start of the text.
    public var offset: Int?
    /// For a reader error: the offending byte or character, as libyaml gives it (-1 for none).
    var value: Int?

    public init(kind: Kind, problem: String, mark: Mark? = nil, context: String? = nil, contextMark: Mark? = nil, offset: Int? = nil) {
        self.kind = kind
        self.problem = problem
        self.mark = mark
        self.context = context
        self.contextMark = contextMark
        self.offset = offset
    }

    /// One line an operator can act on, e.g. "mapping values are not allowed in this context at
    /// line 1, column 5", or "found unexpected end of stream at line 2, column 1 (while scanning a
    /// quoted scalar at line 1, column 4)".
    public var description: String {
        var text = problem
        if let value, value >= 0 {
            // libyaml gives the code point for a character it refuses, the octet for bad UTF-8.
            let isCharacter = problem.hasPrefix("control characters") || problem.hasPrefix("invalid Unicode character")
            let hex = String(value, radix: 16, uppercase: true)
            text += isCharacter
                ? " (character U+" + String(repeating: "0", count: max(0, 4 - hex.count)) + hex + ")"
                : " (byte 0x" + (hex.count < 2 ? "0" : "") + hex + ")"
        }
        if let mark { text += " at line \(mark.line), column \(mark.column)" }
        if let offset { text += " (byte offset \(offset))" }
        if let context {
            text += " (\(context)"
            if let contextMark { text += " at line \(contextMark.line), column \(contextMark.column)" }
            text += ")"
        }
        return text
    }
}
