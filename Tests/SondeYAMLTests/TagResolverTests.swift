import Testing
@testable import SondeYAML

/// Each alternative of each of Yams' `Resolver.default` regular expressions, matched and just
/// missed, through the hand-written matchers.
@Suite struct TagResolverTests {
    func tag(_ text: String) -> Tag.Name { TagResolver.resolve(text) }

    @Test(arguments: ["yes", "Yes", "YES", "no", "No", "NO", "true", "True", "TRUE",
                      "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF"])
    func bool(_ text: String) {
        #expect(tag(text) == .bool)
    }

    @Test(arguments: ["tRue", "yES", "oN", "y", "n", "truee", " true", "true "])
    func notBool(_ text: String) {
        #expect(tag(text) == .str)
    }

    @Test(arguments: [
        "0b101", "-0b1", "+0b1_0", "0b_",            // [-+]?0b[0-1_]+
        "012", "0o12", "-0o7", "00", "0_", "0o_",    // [-+]?0o?[0-7_]+
        "0", "-0", "+0", "1", "-1", "+42", "1_000", "1__0", "1_", "123456789012345678901234567890", // [-+]?(?:0|[1-9][0-9_]*)
        "0x1F", "0x1f_ff", "-0x1F", "+0xff", "0x_",  // [-+]?0x[0-9a-fA-F_]+
        "1:30", "1:30:45", "-1:30", "+1:5", "1:05", "1_0:3",  // [-+]?[1-9][0-9_]*(?::[0-5]?[0-9])+
    ])
    func int(_ text: String) {
        #expect(tag(text) == .int)
    }

    @Test(arguments: [
        ("0b", Tag.Name.str), ("0b102", .str), ("0o", .str), ("0x", .str), ("0xg", .str), ("0X1F", .str),
        ("_1", .str), ("1:60", .str), ("1:", .str), (":30", .str), ("0:30", .str), ("01:30", .str), ("1:123", .str),
        ("08", .float), ("09", .float), ("0o8", .str), ("1:3a", .str),
    ])
    func notInt(_ text: String, _ expected: Tag.Name) {
        #expect(tag(text) == expected)
    }

    @Test(arguments: [
        "1.0", "-1.0", "+1.", "1e3", "1E3", "1e+3", "1e-3", "1.5e3", "1_0.5_5", "00.1", "08", // [-+]?[0-9][0-9_]*(\.[0-9_]*)?([eE][-+]?[0-9]+)?
        ".5", "._5", ".5e+3", ".5E-3",                // \.[0-9_]+([eE][-+][0-9]+)?
        "1:30.5", "-1:30.", "0:30.5", "190:20:30.15", // [-+]?[0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
        ".inf", ".Inf", ".INF", "-.inf", "+.INF",     // [-+]?\.(inf|Inf|INF)
        ".nan", ".NaN", ".NAN",                       // \.(nan|NaN|NAN)
    ])
    func float(_ text: String) {
        #expect(tag(text) == .float)
    }

    @Test(arguments: [".5e3", "-.5", "+.5", "1e", "1e+", "1.2.3", ".", ".iNf", "inf", "nan", "-.nan", "nan.", "1:60.5", "1e3.5"])
    func notFloat(_ text: String) {
        #expect(tag(text) == .str)
    }

    @Test func mergeNullValue() {
        #expect(tag("<<") == .merge)
        #expect(tag("<<<") == .str)
        for text in ["~", "null", "Null", "NULL", ""] { #expect(tag(text) == .null, "\(text)") }
        for text in ["nUll", "NULl", "~~", "none"] { #expect(tag(text) == .str, "\(text)") }
        #expect(tag("=") == .value)
        #expect(tag("==") == .str)
    }

    @Test(arguments: [
        "2001-12-14",                                  // the date alone
        "2001-12-14t21:59:43.10-05:00", "2001-12-14 21:59:43.10 -5", "2001-12-15T02:59:43.1Z",
        "2001-12-15 2:59:43.10", "2001-1-1\t1:00:00", "2001-01-01T01:00:00+01:00", "2001-01-01T01:00:00",
        "2001-01-01T01:00:00.", "2001-01-01T01:00:00.Z", "2001-01-01  01:00:00 \tZ",
    ])
    func timestamp(_ text: String) {
        #expect(tag(text) == .timestamp)
    }

    @Test(arguments: ["2001-1-01", "20011-01-01", "2001-01-01x", "2001-01-01T01:00",
                      "2001-01-01T01:00:00+5:3", "2001-01-01T01:00:00z", "2001-01-01T01:00:00 ", "2001-01-01T123:00:00"])
    func notTimestamp(_ text: String) {
        #expect(tag(text) == .str)
    }

    @Test func otherTextIsAString() {
        for text in ["hello", "1a", "a1", "0.0.0.0", "v1.2", "12:34:56x", "-", ":", "é", "1\u{0301}"] {
            #expect(tag(text) == .str, "\(text)")
        }
    }

    /// ICU's `$` also matches before one final line terminator, so Yams resolves these too.
    @Test func finalLineTerminatorIsAllowedOnce() {
        #expect(tag("true\n") == .bool)
        #expect(tag("12\r\n") == .int)
        #expect(tag("1.5\r") == .float)
        #expect(tag("~\u{2028}") == .null)
        #expect(tag("null\u{0085}") == .null)
        #expect(tag("\n") == .null)
        #expect(tag("true\n\n") == .str)
        #expect(tag("\ntrue") == .str)
        #expect(tag("true\n\r") == .str)
    }

    @Test func rulesAreTriedInYamsOrder() {
        // "0" matches int before float; "1_000" int before float; "<<" merge; "" null.
        #expect(tag("0") == .int)
        #expect(tag("1.0") == .float)
        #expect(tag("08") == .float)
    }
}
