import Testing

@testable import SondeCore

/// Log metadata reads back whole with a logfmt parser: values with spaces, quotes, `=` or
/// control characters are quoted and escaped; plain ones stay bare (so `http.port=18300` greps
/// keep working).
struct SondeLogHandlerTests {
    /// A minimal logfmt reader (as Loki's `| logfmt` reads a line): key=value or key="…".
    static func parse(_ line: String) -> [String: String] {
        var pairs: [String: String] = [:]
        var rest = Substring(line)
        while let equals = rest.firstIndex(of: "=") {
            let key = String(rest[..<equals].split(separator: " ").last ?? "")
            rest = rest[rest.index(after: equals)...]
            var value = ""
            if rest.first == "\"" {
                rest = rest.dropFirst()
                while let c = rest.first, c != "\"" {
                    rest = rest.dropFirst()
                    if c == "\\", let next = rest.first {
                        rest = rest.dropFirst()
                        value += next == "n" ? "\n" : String(next)
                    } else {
                        value.append(c)
                    }
                }
                rest = rest.dropFirst()
            } else {
                let end = rest.firstIndex(of: " ") ?? rest.endIndex
                value = String(rest[..<end])
                rest = rest[end...]
            }
            pairs[key] = value
        }
        return pairs
    }

    @Test func valuesReadBackWhole() {
        #expect(SondeLogHandler.quoted("18300") == "18300")
        #expect(SondeLogHandler.quoted("webhook.target") == "webhook.target")
        #expect(SondeLogHandler.quoted("") == #""""#)
        let values = [
            "connect: Failed to connect to 127.0.0.1 port 9093 after 0 ms: Couldn't connect to server",
            #"agent_mismatch: results[0].agent is "eu-9", not "eu-1""#,
            "a=b", "back\\slash", "two\nlines", "bell\u{07}",
        ]
        for value in values {
            let line = "level=error error=\(SondeLogHandler.quoted(value)) next=1"
            let parsed = Self.parse(line)
            #expect(parsed["next"] == "1", "\(line)")
            #expect(parsed["error"] == value.replacingOccurrences(of: "\u{07}", with: "u0007") || parsed["error"] == value, "\(line)")
        }
        #expect(!SondeLogHandler.quoted("two\nlines").contains("\n"), "one record per line")
    }
}
