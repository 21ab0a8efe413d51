import Foundation
import Logging
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
        // Characters a terminal acts on beyond C0: DEL, C1 and the bidirectional overrides (an
        // agent id with U+202E logged reversed text; red team, 32nd session).
        for (value, escaped) in [("eu-1\u{202E}1-ue", "\\u202e"), ("a\u{7F}", "\\u007f"), ("b\u{9B}2J", "\\u009b"), ("c\u{2066}", "\\u2066")] {
            let quoted = SondeLogHandler.quoted(value)
            #expect(quoted.contains(escaped), "\(quoted.debugDescription)")
            #expect(!quoted.unicodeScalars.contains { ResultText.isControl($0) || ResultText.isBidiFormat($0) }, "\(quoted.debugDescription)")
        }
    }

    /// `--log-format json`: one object per line that a JSON parser reads whole, fixed fields first,
    /// metadata as keys (nested as arrays and objects), a metadata key named like a fixed field
    /// kept under `meta.`, control characters escaped.
    @Test func jsonLinesParse() throws {
        var handler = SondeLogHandler(label: "sonde.agent", level: .debug, format: .json)
        handler[metadataKey: "agent.id"] = "eu-1"
        let event = LogEvent(
            level: .warning, message: "two\nlines \"quoted\"", error: nil,
            metadata: ["error": "connect: Failed to connect\u{07}", "msg": "not the message", "codes": ["500", "502"], "nested": ["a": "1"]],
            source: "AgentRuntime", file: #fileID, function: #function, line: #line)
        let line = handler.line(for: event)
        #expect(line.hasSuffix("}\n") && line.dropLast().allSatisfy { $0 != "\n" }, "one record per line: \(line)")
        let object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        #expect(object["level"] as? String == "warning")
        #expect(object["logger"] as? String == "sonde.agent")
        #expect(object["source"] as? String == "AgentRuntime")
        #expect(object["msg"] as? String == "two\nlines \"quoted\"")
        #expect(object["meta.msg"] as? String == "not the message")
        #expect(object["agent.id"] as? String == "eu-1")
        #expect(object["error"] as? String == "connect: Failed to connect\u{07}")
        #expect(object["codes"] as? [String] == ["500", "502"])
        #expect(object["nested"] as? [String: String] == ["a": "1"])
        let ts = try #require(object["ts"] as? String)
        #expect(ts.count == 24 && ts.hasSuffix("Z") && ts.dropFirst(19).hasPrefix("."), "RFC 3339 UTC with milliseconds: \(ts)")
        #expect(line.hasPrefix(#"{"ts":"#), "the time first, as log shippers expect")
    }
}
