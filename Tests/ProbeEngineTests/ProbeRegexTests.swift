import Testing

@testable import ProbeEngine

/// Probe scripts' regular expressions run on the standard library's Regex (the agent has no
/// NSRegularExpression): the syntax probe authors write, capture groups and their count.
@Suite("probe regexes")
struct ProbeRegexTests {
    @Test("the syntax probe scripts use matches as NSRegularExpression's did", arguments: [
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
    ])
    func matches(pattern: String, text: String, expected: Bool) throws {
        #expect(try ProbeRegex(pattern).matches(text) == expected)
    }

    // Lookbehind is the one common construct Swift's Regex lacks (probes/README.md says so): a
    // script using it is refused at load time with the engine's reason, never mis-matched.
    @Test("an invalid or unsupported pattern is refused when the script is loaded", arguments: ["(unclosed", "[z-a]", "a{2,1}", #"\"#, "*x", "(?<=id=)\\w+"])
    func invalid(pattern: String) {
        #expect(throws: (any Error).self) { try ProbeRegex(pattern) }
    }

    @Test("captures: the whole match, a group, a group that took no part, no match")
    func captures() throws {
        let regex = try ProbeRegex(#"v(\d+)\.(\d+)?(x)?"#)
        #expect(regex.firstCapture(0, in: "release v12.3 ok") == "v12.3")
        #expect(regex.firstCapture(1, in: "release v12.3 ok") == "12")
        #expect(regex.firstCapture(2, in: "release v12.3 ok") == "3")
        #expect(regex.firstCapture(3, in: "release v12.3 ok") == nil)
        #expect(regex.firstCapture(1, in: "no version") == nil)
        #expect(regex.firstCapture(9, in: "v1.2") == nil)
    }

    @Test("capture groups are counted from the pattern as a match would count them", arguments: [
        (#"abc"#, 0), (#"(a)(b)"#, 2), (#"(?:a)(b)"#, 1), (#"(?<name>a)(?'other'b)(?P<third>c)"#, 3),
        (#"(?=a)(?!b)(?<=c)(?<!d)(?>e)(?i)(f)"#, 1), (#"\(a\)(b)"#, 1), (#"[(](a)[)]"#, 1),
        (#"[]()](x)"#, 1), (#"[^]()](x)"#, 1), (#"\Q(a)\E(b)"#, 1), (#"((a)(b(c)))"#, 4), (#"(a|(b))*"#, 2),
    ])
    func groupCount(pattern: String, expected: Int) throws {
        #expect(ProbeRegex.countCaptureGroups(pattern) == expected)
        // Cross-check against the engine: a match's output has one element per group, plus the whole match.
        guard let regex = try? Regex(pattern) else { return }  // e.g. lookbehind: refused at load time anyway
        let sample = ["abcdef", "a", "b", "(a)b", "(x", "]x", "cx", "abc", ""].lazy.compactMap { try? regex.firstMatch(in: $0) }.first
        if let sample { #expect(sample.output.count - 1 == expected, "Regex counts \(sample.output.count - 1) for \(pattern)") }
    }
}
