import Foundation
import SondeCore

/// Mutations of valid JSON bodies for property tests of decoders: bytes flipped, truncated,
/// spliced with JSON fragments, deep nesting, a repeated key. Driven by a seeded generator, so a
/// failing input reproduces from its seed.
public enum JSONBodyMutator {
    /// Pieces of JSON (and of almost-JSON) spliced in at random.
    public static let fragments: [String] = [
        "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "\\udc00", "null", "true", "1e999", "-0", "NaN", "2.5", "1e2", "01",
        "\"results\":[]", "\"results\":", "\"agent\":\"other\"", "\"agent\":\"eu-1\"", "\"sent_at\":\"2001-01-01T00:00:00Z\"",
        "\"batch_id\":\"\"", "{\"id\":\"x\"}", "\u{FEFF}", "\u{0}", "[[[[[[[[", "]]]]]]]]", "\"outcome\":\"failed\"",
        "\"duration_ms\":\"1\"", "\"x\":1,", "\\u00e9", "\\/", "é", "\"seq\":-1,", "\"status\":2.0,",
    ]

    /// One random mutation of `body`; nesting up to `maxDepth` levels.
    public static func mutate(_ body: Data, maxDepth: Int = 2000, using rng: inout SplitMix64) -> Data {
        var bytes = [UInt8](body)
        guard !bytes.isEmpty else { return Data(fragments.randomElement(using: &rng)!.utf8) }
        let at = Int.random(in: 0..<bytes.count, using: &rng)
        switch Int.random(in: 0..<7, using: &rng) {
        case 0: bytes[at] ^= UInt8(1 << Int.random(in: 0..<8, using: &rng))
        case 1: bytes.removeSubrange(at...)
        case 2: bytes.insert(contentsOf: Array(fragments.randomElement(using: &rng)!.utf8), at: at)
        case 3: bytes.remove(at: at)
        case 4:
            let depth = Int.random(in: 1...maxDepth, using: &rng)
            bytes.insert(contentsOf: Array((String(repeating: "[", count: depth) + String(repeating: "]", count: depth)).utf8), at: at)
        case 5:
            // Repeat a key: `{"results":[],` in front of the real members.
            if bytes.first == UInt8(ascii: "{") { bytes.insert(contentsOf: Array("\"results\":[],".utf8), at: 1) }
        default:
            bytes[at] = UInt8.random(in: 0...255, using: &rng)
        }
        return Data(bytes)
    }
}
