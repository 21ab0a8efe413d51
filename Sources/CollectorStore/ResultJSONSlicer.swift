import Foundation

/// Finds the exact bytes of each element of a push body's top-level `"results"` array, so the
/// store can keep each result's JSON as the agent sent it instead of re-encoding every decoded
/// result (re-encoding was a fifth of the ingest CPU). A small structural scanner: strings and
/// escapes, nesting depth, nothing else. Returns nil whenever it is not sure (not an object, a
/// second `"results"` key, unbalanced input); the caller then re-encodes. The ingest path gets
/// the ranges from `PushBatchDecoder` instead; this covers batches stored without them.
enum ResultJSONSlicer {
    static func slices(of body: Data, expectedCount: Int) -> [Data]? {
        body.withUnsafeBytes { raw -> [Data]? in
            let bytes = raw.bindMemory(to: UInt8.self)
            guard let ranges = scan(bytes), ranges.count == expectedCount else { return nil }
            return ranges.map { Data(bytes[$0]) }
        }
    }

    /// The byte ranges of the elements (offsets from the body's first byte).
    static func ranges(of body: Data, expectedCount: Int) -> [Range<Int>]? {
        body.withUnsafeBytes { raw -> [Range<Int>]? in
            guard let ranges = scan(raw.bindMemory(to: UInt8.self)), ranges.count == expectedCount else { return nil }
            return ranges
        }
    }

    private static let quote = UInt8(ascii: "\""), backslash = UInt8(ascii: "\\")
    private static let openBrace = UInt8(ascii: "{"), closeBrace = UInt8(ascii: "}")
    private static let openBracket = UInt8(ascii: "["), closeBracket = UInt8(ascii: "]")
    private static let comma = UInt8(ascii: ","), colon = UInt8(ascii: ":")

    private static func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }

    /// Index just past the string starting at `i` (which is a quote); nil when unterminated.
    private static func skipString(_ b: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int? {
        var i = start + 1
        while i < b.count {
            switch b[i] {
            case backslash: i += 2
            case quote: return i + 1
            default: i += 1
            }
        }
        return nil
    }

    /// Index just past the value starting at `i` (object, array, string or scalar).
    private static func skipValue(_ b: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int? {
        var i = start
        guard i < b.count else { return nil }
        if b[i] == quote { return skipString(b, i) }
        if b[i] == openBrace || b[i] == openBracket {
            var depth = 0
            while i < b.count {
                switch b[i] {
                case quote:
                    guard let end = skipString(b, i) else { return nil }
                    i = end
                    continue
                case openBrace, openBracket: depth += 1
                case closeBrace, closeBracket:
                    depth -= 1
                    if depth == 0 { return i + 1 }
                default: break
                }
                i += 1
            }
            return nil
        }
        // A scalar: up to the next delimiter.
        while i < b.count, b[i] != comma, b[i] != closeBrace, b[i] != closeBracket, !isSpace(b[i]) { i += 1 }
        return i > start ? i : nil
    }

    private static func skipSpace(_ b: UnsafeBufferPointer<UInt8>, _ start: Int) -> Int {
        var i = start
        while i < b.count, isSpace(b[i]) { i += 1 }
        return i
    }

    private static func scan(_ b: UnsafeBufferPointer<UInt8>) -> [Range<Int>]? {
        var i = skipSpace(b, 0)
        guard i < b.count, b[i] == openBrace else { return nil }
        i += 1
        var found: [Range<Int>]?
        let resultsKey = Array("\"results\"".utf8)
        while true {
            i = skipSpace(b, i)
            guard i < b.count else { return nil }
            if b[i] == closeBrace { return found }
            guard b[i] == quote, let keyEnd = skipString(b, i) else { return nil }
            // An escaped key could spell "results" in a way only the decoder sees: not sure, give up.
            if b[i..<keyEnd].contains(backslash) { return nil }
            let isResults = keyEnd - i == resultsKey.count && zip(b[i..<keyEnd], resultsKey).allSatisfy { $0 == $1 }
            i = skipSpace(b, keyEnd)
            guard i < b.count, b[i] == colon else { return nil }
            i = skipSpace(b, i + 1)
            if isResults {
                guard found == nil, i < b.count, b[i] == openBracket else { return nil }
                var elements: [Range<Int>] = []
                i = skipSpace(b, i + 1)
                if i < b.count, b[i] == closeBracket {
                    i += 1
                } else {
                    while true {
                        let start = i
                        guard let end = skipValue(b, i) else { return nil }
                        elements.append(start..<end)
                        i = skipSpace(b, end)
                        guard i < b.count else { return nil }
                        if b[i] == comma { i = skipSpace(b, i + 1); continue }
                        guard b[i] == closeBracket else { return nil }
                        i += 1
                        break
                    }
                }
                found = elements
            } else {
                guard let end = skipValue(b, i) else { return nil }
                i = end
            }
            i = skipSpace(b, i)
            guard i < b.count else { return nil }
            if b[i] == comma { i += 1; continue }
            guard b[i] == closeBrace else { return nil }
            return found
        }
    }
}
