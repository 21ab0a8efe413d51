import Testing

@testable import ProbeEngine

/// Probe scripts' regular expressions run on PCRE2 (Perl syntax, UTF-8) with limits and a
/// deadline: the syntax probe authors write, capture groups and their count, and patterns that
/// backtrack without end stopped on time.
@Suite("probe regexes")
struct ProbeRegexTests {
    static var later: ContinuousClock.Instant { .now.advanced(by: .seconds(5)) }

    @Test("the syntax probe scripts use", arguments: [
        (#"^tok_"#, "tok_abc", true),
        (#"^tok_"#, "xtok_", false),
        (#""status":\s*"ok""#, #"{"status": "ok"}"#, true),
        (#"v(\d+)\."#, "version v12.3", true),
        (#"(?i)EXPIRED"#, "file has expired", true),
        (#"file[- ]has[- ]expired"#, "the file has expired", true),
        (#"^[a-f0-9]{8}-"#, "1b4e28ba-2fa1", true),
        (#"a.+?c"#, "abcabc", true),
        (#"\bcat\b"#, "concatenate", false),
        (#"^$"#, "", true),
        (#"(?<=id=)\w+"#, "id=abc", true),
        (#"caf\x{e9}"#, "café", true),
        (#"^.{4}$"#, "café", true),
    ])
    func matches(pattern: String, text: String, expected: Bool) throws {
        #expect(try ProbeRegex(pattern).matches(text.utf8, deadline: Self.later) == expected)
    }

    @Test("an invalid pattern is refused when the script is loaded, with PCRE2's reason", arguments: ["(unclosed", "[z-a]", "a{2,1}", #"\"#, "*x", #"\C"#])
    func invalid(pattern: String) {
        #expect(throws: ProbeRegex.SyntaxError.self) { try ProbeRegex(pattern) }
    }

    @Test("captures: the whole match, a group, a group that took no part, no match")
    func captures() throws {
        let regex = try ProbeRegex(#"v(\d+)\.(\d+)?(x)?"#)
        #expect(try regex.firstCapture(0, in: "release v12.3 ok".utf8, deadline: Self.later) == "v12.3")
        #expect(try regex.firstCapture(1, in: "release v12.3 ok".utf8, deadline: Self.later) == "12")
        #expect(try regex.firstCapture(2, in: "release v12.3 ok".utf8, deadline: Self.later) == "3")
        #expect(try regex.firstCapture(3, in: "release v12.3 ok".utf8, deadline: Self.later) == nil)
        #expect(try regex.firstCapture(1, in: "no version".utf8, deadline: Self.later) == nil)
        #expect(try regex.firstCapture(9, in: "v1.2".utf8, deadline: Self.later) == nil)
    }

    @Test("capture groups are counted as PCRE2 counts them", arguments: [
        (#"abc"#, 0), (#"(a)(b)"#, 2), (#"(?:a)(b)"#, 1), (#"(?<name>a)(?'other'b)(?P<third>c)"#, 3),
        (#"(?=a)(?!b)(?<=c)(?<!d)(?>e)(?i)(f)"#, 1), (#"\(a\)(b)"#, 1), (#"[(](a)[)]"#, 1),
        (#"[]()](x)"#, 1), (#"[^]()](x)"#, 1), (#"\Q(a)\E(b)"#, 1), (#"((a)(b(c)))"#, 4), (#"(a|(b))*"#, 2),
    ])
    func groupCount(pattern: String, expected: Int) throws {
        #expect(try ProbeRegex(pattern).captureCount == expected)
    }

    @Test("a catastrophic pattern is stopped at its deadline, not left running")
    func catastrophicPatternStopsAtDeadline() throws {
        let regex = try ProbeRegex("^(a+)+$")
        let text = String(repeating: "a", count: 30) + "!"
        let start = ContinuousClock.now
        #expect(throws: ProbeRegex.MatchError.self) {
            _ = try regex.matches(text.utf8, deadline: start.advanced(by: .milliseconds(300)))
        }
        let elapsed = ContinuousClock.now - start
        #expect(elapsed < .milliseconds(400), "stopped after \(elapsed)")
    }

    @Test("a text that is not UTF-8 still matches where it can")
    func invalidUTF8() throws {
        let bytes: [UInt8] = [0xFF, 0xFE] + Array("status=ok".utf8) + [0xC3]
        #expect(try ProbeRegex("status=(\\w+)").firstCapture(1, in: bytes, deadline: Self.later) == "ok")
    }
}
