import Foundation
import SondeCore
import Testing

/// The one rule for what a result may carry (ingest and the probe loader), and how a terminal is
/// shown control characters (`sonde`, the agent's messages).
@Suite struct ResultTextTests {
    @Test func identifiersAreBoundedAndPlain() {
        for good in ["sim-login", "eu/files:v2.1", "a", String(repeating: "p", count: 128)] { #expect(ResultText.probeNameProblem(good) == nil, "\(good)") }
        for bad in ["", "login check", "x\u{1B}", "é", String(repeating: "p", count: 129)] { #expect(ResultText.probeNameProblem(bad) != nil, "\(bad)") }
        for good in ["files", "Payments", "files-eu_2.a", String(repeating: "c", count: 64)] { #expect(ResultText.componentProblem(good) == nil, "\(good)") }
        for bad in ["", "a/b", "a:b", "payments - leaked", String(repeating: "c", count: 65)] { #expect(ResultText.componentProblem(bad) != nil, "\(bad)") }
        for good in ["http_status", "server_error", "file_expired", "NXDOMAIN", "RCODE9", "http:429"] { #expect(ResultText.codeProblem(good) == nil, "\(good)") }
        for bad in ["", "a b", "evil.example/reset", "<!channel>", String(repeating: "c", count: 65)] { #expect(ResultText.codeProblem(bad) != nil, "\(bad)") }
    }

    /// A passing result carries no error: one that does reads as a pass here and a failure to
    /// whatever reads `error` first (red team, 32nd session).
    @Test func aPassingResultHasNoError() {
        var result = ProbeResult(probe: "p", component: "c", agent: "a", region: "r", startedAt: Date(), durationMs: 1, outcome: .ok, steps: [])
        #expect(ResultText.problem(in: result) == nil)
        result.error = ProbeError(kind: .httpStatus, step: "s", message: "HTTP 500", code: "server_error")
        #expect(ResultText.problem(in: result)?.field == "error")
        result.outcome = .failed
        #expect(ResultText.problem(in: result) == nil)
    }

    @Test func textKeepsLinesButNoOtherControls() {
        #expect(ResultText.textProblem("line 1\nline 2\tcolumn", newlines: true) == nil)
        #expect(ResultText.textProblem("line 1\nline 2", newlines: false) != nil)
        for control in ["\u{1B}", "\r", "\u{07}", "\u{7F}", "\u{9B}", "\u{0}"] {
            #expect(ResultText.textProblem("a\(control)b", newlines: true)?.contains("control character") == true, "\(control.unicodeScalars.first!.value)")
        }
        #expect(ResultText.labelValueProblem(String(repeating: "v", count: 256)) == nil)
        #expect(ResultText.labelValueProblem(String(repeating: "v", count: 257)) != nil)
        #expect(ResultText.labelNameProblem("team") == nil)
        #expect(ResultText.labelSetProblem(["team": String(repeating: "v", count: 1020)]) == nil)
        #expect(ResultText.labelSetProblem(["team": String(repeating: "v", count: 1021)]) != nil, "1,025 bytes together")
        for bad in ["__name__", "probe", "9x", "cost-center", ""] { #expect(ResultText.labelNameProblem(bad) != nil, "\(bad)") }
    }

    @Test("control characters are shown as cat -v shows them; lines kept only when asked")
    func terminalTextIsVisible() {
        #expect(TerminalText.visible("plain") == "plain")
        #expect(TerminalText.visible("\u{1B}[2J\u{1B}]0;t\u{07}x\u{7F}\u{9B}1m") == "^[[2J^[]0;t^Gx^?M-^[1m")
        #expect(TerminalText.visible("a\nb\tc") == "a^Jb^Ic")
        #expect(TerminalText.visible("a\nb\tc\r", keepLines: true) == "a\nb\tc^M")
        // Every output of visible is accepted as a message (what the agent sends).
        let all = String(String.UnicodeScalarView((0..<0xA0).compactMap(Unicode.Scalar.init)))
        #expect(ResultText.textProblem(TerminalText.visible(all, keepLines: true), newlines: true) == nil)
        #expect(ResultText.textProblem(TerminalText.visible(all), newlines: false) == nil)
        // Bidi formatting ("Trojan Source"): refused as text, shown by name (red team N6).
        let trojan = "all good \u{202E}gnitaeh si ti\u{2069} ok\u{200F}"
        #expect(ResultText.textProblem(trojan, newlines: true)?.contains("bidirectional formatting character U+202E") == true)
        #expect(TerminalText.visible(trojan) == "all good <U+202E>gnitaeh si ti<U+2069> ok<U+200F>")
        #expect(ResultText.textProblem(TerminalText.visible(trojan), newlines: false) == nil)
        #expect(ResultText.textProblem("مرحبا שלום", newlines: false) == nil, "right-to-left text itself is fine")
    }
}
