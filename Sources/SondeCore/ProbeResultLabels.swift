/// Rules for a probe's `labels` shared by the agent (validation) and the collector (metrics).
public enum ProbeLabels {
    /// A probe has at most this many labels; a push with more is refused.
    public static let maxCount = 32
    /// Label names the collector's own probe series already use.
    public static let reserved: Set<String> = ["probe", "component", "agent", "region", "phase", "step", "le", "instance", "job"]

    /// True for a name Prometheus accepts as written: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting
    /// with `__` (reserved by Prometheus) and not one of `reserved`.
    public static func isValidName(_ name: String) -> Bool {
        guard let first = name.utf8.first, !name.hasPrefix("__"), !reserved.contains(name) else { return false }
        guard first == UInt8(ascii: "_") || isLetter(first) else { return false }
        return name.utf8.allSatisfy { $0 == UInt8(ascii: "_") || isLetter($0) || ($0 >= 0x30 && $0 <= 0x39) }
    }

    /// `name` as a Prometheus label name: other characters become `_`, a leading digit gets a
    /// `_` in front, and a reserved or `__` name gets `label_` in front (a result from a hostile
    /// or older agent may carry anything).
    public static func prometheusName(_ name: String) -> String {
        var bytes = name.utf8.map { $0 == UInt8(ascii: "_") || isLetter($0) || ($0 >= 0x30 && $0 <= 0x39) ? $0 : UInt8(ascii: "_") }
        if bytes.isEmpty || (bytes[0] >= 0x30 && bytes[0] <= 0x39) { bytes.insert(UInt8(ascii: "_"), at: 0) }
        let text = String(decoding: bytes, as: UTF8.self)
        return text.hasPrefix("__") || reserved.contains(text) ? "label_" + text : text
    }

    private static func isLetter(_ byte: UInt8) -> Bool {
        (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
    }
}
