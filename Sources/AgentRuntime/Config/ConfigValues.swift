import FoundationEssentials
import SondeCore

/// Parsing of the value forms config files use: durations (`500ms`, `10s`, `1.5m`, `2h`, a bare
/// number is seconds) and byte sizes (`256MiB`, `10MB`, `4096`).
public enum ConfigValues {
    public static func duration(_ text: String) -> Duration? {
        let trimmed = text.trimmed().lowercased()
        let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
            let number = trimmed.dropLast(suffix.count).trimmed()
            // "ms" also ends in "s": only accept a pure number before the suffix.
            guard let value = Double(number), value >= 0, value.isFinite else { continue }
            return .milliseconds(Int64((value * scale * 1000).rounded()))
        }
        if let value = Double(trimmed), value >= 0, value.isFinite { return .milliseconds(Int64((value * 1000).rounded())) }
        return nil
    }

    public static func byteSize(_ text: String) -> Int? { parseByteSize(text) }
}

