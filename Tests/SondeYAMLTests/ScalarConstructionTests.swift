import Testing
@testable import SondeYAML

/// Yams' `Bool.construct`, `Int.construct` and `Double.construct`, quirks included.
@Suite struct ScalarConstructionTests {
    func plain(_ text: String) -> Node { .scalar(Node.Scalar(text, .implicit, .plain)) }

    @Test func bool() {
        for text in ["true", "True", "tRuE", "yes", "YES", "on", "On"] { #expect(plain(text).bool == true, "\(text)") }
        for text in ["false", "FALSE", "no", "nO", "off", "OFF"] { #expect(plain(text).bool == false, "\(text)") }
        for text in ["y", "1", "", "truth", " true"] { #expect(plain(text).bool == nil, "\(text)") }
        // As in Yams the style does not matter for a Bool.
        #expect(Node.scalar(Node.Scalar("yes", Tag(.str), .doubleQuoted)).bool == true)
        #expect(Node([Node("true")]).bool == nil)
    }

    @Test func int() {
        let cases: [(String, Int?)] = [
            ("0", 0), ("1", 1), ("-17", -17), ("+5", 5), ("1_000", 1000), ("0x1F", 31), ("-0x1F", -31),
            ("0x_ff", 255), ("0b101", 5), ("-0b11", -3), ("0o17", 15), ("017", 15), ("09", nil),
            ("1:30", 90), ("-1:30", -90), ("1:30:45", 5445), ("1:-30", 30), ("1:x:30", 90),
            ("9223372036854775807", .max), ("9223372036854775808", nil), ("-9223372036854775808", .min),
            ("1.0", nil), ("1e3", nil), ("", nil), ("abc", nil),
            // Yams' quirks, kept: "-0" goes through the octal branch and parses "-" alone.
            ("-0", nil), ("0x-1", -1), ("0b+1", 1), ("0x", nil),
        ]
        for (text, expected) in cases { #expect(plain(text).int == expected, "\(text)") }
        for style in [Node.Scalar.Style.singleQuoted, .doubleQuoted, .literal, .folded] {
            #expect(Node.scalar(Node.Scalar("12", Tag(.int), style)).int == nil)
        }
        #expect(Node.scalar(Node.Scalar("12", Tag(.str), .any)).int == 12)
    }

    /// Yams traps on these (Int overflow in its base-60 arithmetic); here they are nil.
    @Test func sexagesimalOverflowIsNilNotATrap() {
        #expect(plain("999999999999999999:0").int == nil)
        #expect(plain("1:0:0:0:0:0:0:0:0:0:0:0").int == nil)
        #expect(plain("1:0:0:0:0:0:0:0:0:0:0").int == 604_661_760_000_000_000)
        #expect(plain("-153722867280912931:0").int == nil)
    }

    @Test func float() {
        let cases: [(String, Double?)] = [
            ("1.5", 1.5), ("-2", -2), ("1e3", 1000), ("1_0.5", 10.5), (".5", 0.5), (".5e3", 500),
            ("1:30", 90), ("1:30.5", 90.5), ("-1:30", -90), ("0x1F", 31), ("0x1p3", 8), ("inf", .infinity),
            (".inf", .infinity), ("+.INF", .infinity), ("-.Inf", -.infinity), ("abc", nil), ("", nil), ("1.2.3", nil),
        ]
        for (text, expected) in cases { #expect(plain(text).float == expected, "\(text)") }
        #expect(plain(".nan").float?.isNaN == true)
        #expect(plain(".NaN").float?.isNaN == true)
        #expect(plain("-.nan").float == nil)
        #expect(plain("-0:0").float?.sign == .minus)
        #expect(Node.scalar(Node.Scalar("1.5", Tag(.float), .singleQuoted)).float == nil)
    }

    @Test func stringOfAValueMapping() throws {
        let root = try #require(try compose(yaml: "a: {=: hello, b: 2}\nb: {=: {=: deep}}\nc: {x: 1}\nd: [1]\ne: 5\n"))
        let values = try #require(root.mapping).values
        #expect(values.map(\.string) == ["hello", "deep", nil, nil, "5"])
    }
}
