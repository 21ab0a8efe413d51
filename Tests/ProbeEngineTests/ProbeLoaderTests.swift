import Foundation
import SondeCore
import Testing

@testable import ProbeEngine

/// Folders next to this file: the broken-probe corpus and the repository's shipped probes.
enum Fixtures {
    static let testsFolder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().path
    static let corpus = testsFolder + "/Corpus"
    static let repository = URL(fileURLWithPath: testsFolder).deletingLastPathComponent().deletingLastPathComponent().path
    static let probes = repository + "/probes"
}

/// Loads paths and returns the diagnostics (none when loading succeeded).
func diagnostics(_ paths: [String], variables: Set<String> = ["base_url"]) -> [ProbeDiagnostic] {
    do {
        _ = try ProbeLoader.load(paths: paths, variables: variables)
        return []
    } catch {
        return error.diagnostics
    }
}

@Suite("Probe validation")
struct ProbeLoaderTests {
    /// One broken file, where the problem must be reported: line, field, and words the message
    /// must contain.
    struct Case: Sendable, CustomTestStringConvertible {
        var file: String
        var line: Int
        var field: String?
        var says: String
        var testDescription: String { "\(file):\(line) \(field ?? "-")" }
    }

    static let cases: [Case] = [
        Case(file: "bad-yaml.yaml", line: 6, field: nil, says: "invalid YAML"),
        Case(file: "unknown-field.yaml", line: 11, field: "steps[0].assert.body_contain", says: "did you mean 'body_contains'"),
        Case(file: "wrong-types.yaml", line: 3, field: "interval", says: "expected a duration such as 250ms, 30s, 1m, 1m30s, 2h or 14d, found a list"),
        Case(file: "wrong-types.yaml", line: 5, field: "control", says: "expected true or false"),
        Case(file: "wrong-types.yaml", line: 10, field: "steps[0].request.headers", says: "expected a mapping"),
        Case(file: "no-steps.yaml", line: 5, field: "steps", says: "no steps"),
        Case(file: "bad-json-path.yaml", line: 11, field: "steps[0].assert.json[0].path", says: "not an index"),
        Case(file: "bad-json-path.yaml", line: 14, field: "steps[0].extract.id.json", says: "must start with '$'"),
        Case(file: "undefined-variable.yaml", line: 15, field: "steps[1].request.url", says: "undefined variable '${file_idd}'"),
        Case(file: "undefined-variable.yaml", line: 15, field: "steps[1].request.url", says: "did you mean 'file_id'"),
        Case(file: "bad-durations.yaml", line: 3, field: "interval", says: "bad duration '30 seconds'"),
        Case(file: "bad-durations.yaml", line: 4, field: "timeout", says: "bad duration '5' (did you mean 5s?)"),
        Case(file: "bad-durations.yaml", line: 5, field: "degraded_after", says: "bad duration 'fast'"),
        Case(file: "bad-regex.yaml", line: 10, field: "steps[0].assert.body_matches", says: "invalid regular expression"),
        Case(file: "missing-fields.yaml", line: 1, field: "name", says: "missing required field 'name'"),
        Case(file: "missing-fields.yaml", line: 1, field: "component", says: "missing required field 'component'"),
        Case(file: "missing-fields.yaml", line: 1, field: "interval", says: "missing required field 'interval'"),
        Case(file: "missing-fields.yaml", line: 4, field: "steps[0].name", says: "missing required field 'name'"),
        Case(file: "poll-without-until.yaml", line: 10, field: "steps[0].poll.until", says: "missing required field 'until'"),
        Case(file: "compare-unknown-payload.yaml", line: 21, field: "steps[2].compare.with", says: "did you mean 'payload'"),
        Case(file: "missing-secret-file.yaml", line: 10, field: "steps[0].request.headers.Authorization", says: "/nonexistent/sonde/token"),
        Case(file: "bad-template.yaml", line: 8, field: "steps[0].request.url", says: "never closed"),
        Case(file: "not-a-mapping.yaml", line: 1, field: nil, says: "expected a mapping"),
        Case(file: "empty.yaml", line: 1, field: nil, says: "empty"),
        Case(file: "bad-condition.yaml", line: 12, field: "steps[0].poll.until", says: "unknown operator 'is'"),
        Case(file: "bad-condition.yaml", line: 14, field: "steps[0].poll.stuck_after.finalizing", says: "bad duration 'soon'"),
        // What the collector would refuse at ingest (ResultText, one rule for both).
        Case(file: "free-text-names.yaml", line: 1, field: "name", says: "expected 1 to 128 letters, digits, '.', '_', ':', '/' or '-'"),
        Case(file: "free-text-names.yaml", line: 2, field: "component", says: "expected 1 to 64 letters, digits, '.', '_' or '-'"),
        Case(file: "free-text-names.yaml", line: 6, field: "failure_codes[0].code", says: "expected 1 to 64 letters, digits, '.', '_', ':' or '-'"),
        Case(file: "free-text-names.yaml", line: 9, field: "labels.team", says: "control character U+001B"),
        Case(file: "free-text-names.yaml", line: 10, field: "labels", says: "not a usable label name"),
        Case(file: "free-text-names.yaml", line: 12, field: "steps[0].name", says: "control character U+001B"),
        Case(file: "free-text-names.yaml", line: 13, field: "steps[0].component", says: "expected 1 to 64 letters"),
    ]

    @Test("a broken probe is reported at its file, line and field", arguments: cases)
    func brokenProbe(_ expected: Case) throws {
        let path = Fixtures.corpus + "/" + expected.file
        let found = diagnostics([path])
        let match = found.first { $0.line == expected.line && $0.field == expected.field && $0.message.contains(expected.says) }
        #expect(match != nil, "expected \(expected.file):\(expected.line) \(expected.field ?? "-"): …\(expected.says)…, got:\n\(found.map(\.description).joined(separator: "\n"))")
        #expect(found.allSatisfy { $0.file == path })
        if let match { #expect(match.description.hasPrefix("\(path):\(expected.line):")) }
    }

    @Test("every problem of every file is reported in one go")
    func everyProblemAtOnce() {
        let paths = Self.cases.map { Fixtures.corpus + "/" + $0.file }
        let found = diagnostics(Array(Set(paths)).sorted())
        for expected in Self.cases {
            #expect(found.contains { $0.file.hasSuffix("/" + expected.file) && $0.line == expected.line && $0.field == expected.field })
        }
    }

    @Test("probe names must be unique across files")
    func duplicateNames() {
        let found = diagnostics([Fixtures.corpus + "/duplicates"])
        #expect(found.count == 1)
        #expect(found.first?.file.hasSuffix("duplicates/b.yaml") == true)
        #expect(found.first?.line == 1)
        #expect(found.first?.field == "name")
        #expect(found.first?.message.contains("already used by") == true)
        #expect(found.first?.message.contains("duplicates/a.yaml:1") == true)
    }

    @Test("every shipped probe validates", arguments: ["sim", "openai", "examples"])
    func shippedProbes(_ folder: String) throws {
        let probes = try ProbeLoader.load(paths: [Fixtures.probes + "/" + folder], variables: ["base_url"])
        #expect(probes.count >= 2)
        for probe in probes {
            #expect(!probe.stepNames.isEmpty)
            #expect(probe.interval > .zero && probe.timeout > .zero)
        }
    }

    @Test("the shipped sim probes: names, components and defaults")
    func simProbes() throws {
        let probes = try ProbeLoader.load(paths: [Fixtures.probes + "/sim"], variables: ["base_url"])
        let byComponent = Dictionary(uniqueKeysWithValues: probes.map { ($0.component, $0) })
        #expect(Set(byComponent.keys) == ["login", "files", "batch", "api", "network"])
        #expect(byComponent["network"]?.control == true)
        #expect(probes.filter(\.control).map(\.name) == ["sim-reach"])
        #expect(byComponent["api"]?.degradedAfter == .milliseconds(250))
        #expect(byComponent["batch"]?.timeout == .seconds(600))
        #expect(byComponent["files"]?.script.steps.last?.always == true)
        #expect(byComponent["files"]?.script.secretEnvironment == ["SONDE_SIM_PASSWORD"])
        // The journeys' login steps count against login (step `component:`), the batch journey's
        // steps through the files API against files, the rest against their own component.
        for journey in ["files", "batch", "api"] {
            #expect(byComponent[journey]?.script.steps.first?.component == "login")
        }
        #expect(byComponent["files"]?.script.steps.dropFirst().allSatisfy { $0.component == nil } == true)
        let batchSteps = byComponent["batch"]?.script.steps.dropFirst().map { "\($0.name)=\($0.component ?? "-")" } ?? []
        #expect(batchSteps == [
            "upload input=files", "create batch=-", "wait for completion=-", "read output=files", "cancel batch=-", "delete input=files",
        ])
        // The login journey's token check reads models: an api outage is api's, not login's.
        #expect(byComponent["login"]?.script.steps.map { $0.component ?? "-" } == ["-", "api"])
    }

    @Test("sim probes need base_url from the agent's variables")
    func baseURLIsRequired() {
        let found = diagnostics([Fixtures.probes + "/sim/login.yaml"], variables: [])
        #expect(found.contains { $0.field == "steps[0].request.url" && $0.message.contains("${base_url}") })
    }

    @Test("missing paths are reported, not ignored")
    func missingPath() {
        let found = diagnostics(["/nonexistent/probes"])
        #expect(found.count == 1 && found[0].message.contains("no such file"))
    }

    /// Every prefix of real probe files (cut at arbitrary bytes) and some junk: the loader must
    /// answer with diagnostics or a probe, never crash.
    @Test("truncated and junk input never crashes the loader")
    func neverCrashes() throws {
        var inputs: [String] = ["", "\t", "---\n---\n", "[", "{a: [}", "name: [1, {2: 3}]", "&a [*a]", "!!binary x", "\u{0}\u{1}", "- - - -", "steps: *nothing"]
        for file in ["sim/upload.yaml", "sim/batch.yaml", "openai/upload.yaml"] {
            let text = try String(contentsOfFile: Fixtures.probes + "/" + file, encoding: .utf8)
            let bytes = Array(text.utf8)
            for cut in stride(from: 0, to: bytes.count, by: 13) {
                inputs.append(String(decoding: bytes[0..<cut], as: UTF8.self))
            }
            // Swap every step field for junk.
            inputs.append(text.replacingOccurrences(of: "request:", with: "request: 7"))
            inputs.append(text.replacingOccurrences(of: "    assert:", with: "    assert: [1]\n    x:"))
        }
        var failures = 0
        for input in inputs {
            let (probe, problems) = ProbeLoader.parse(yaml: input, file: "junk.yaml", variables: ["base_url"])
            if probe == nil { failures += 1 }
            #expect(probe != nil || !problems.isEmpty, "no probe and no diagnostic for:\n\(input)")
        }
        #expect(failures > inputs.count / 2)
    }
}

@Suite("Probe script parts")
struct ScriptPartTests {
    @Test("durations", arguments: [("250ms", 250), ("30s", 30_000), ("1m", 60_000), ("1m30s", 90_000), ("1.5s", 1_500), ("2h", 7_200_000), ("1d", 86_400_000)])
    func durations(_ text: String, _ ms: Int) {
        #expect(DurationText.parse(text) == .milliseconds(ms))
    }

    @Test("bad durations", arguments: ["", "5", "30 seconds", "1w", "-1s", "s", "1.2.3s"])
    func badDurations(_ text: String) {
        #expect(DurationText.parse(text) == nil)
    }

    @Test("JSON paths reach values")
    func jsonPaths() throws {
        let document = try #require(JSONValue.parse(Data(#"{"data":[{"id":"a","n":1},{"id":"b"}],"odd key":{"x":true}}"#.utf8)))
        #expect(try JSONPath.parse("$.data[0].id").evaluate(document) == .string("a"))
        #expect(try JSONPath.parse("$.data[-1].id").evaluate(document) == .string("b"))
        #expect(try JSONPath.parse("$['odd key'].x").evaluate(document) == .bool(true))
        #expect(try JSONPath.parse("$[\"data\"][0].n").evaluate(document)?.text == "1")
        #expect(try JSONPath.parse("$.data[5]").evaluate(document) == nil)
        #expect(try JSONPath.parse("$").evaluate(document) == document)
        for bad in ["data", "$.", "$['x'", "$x", "$..", "$..*", "$[?(id)]", "$[?(@.a ~ 1)]", "$[?(@.a == )]", "$[?(@.a == 1]", "$[?(@.a == x)]", "$[?(@[?(@.b)])]", "$[*"] {
            #expect(throws: JSONPath.SyntaxError.self) { try JSONPath.parse(bad) }
        }
    }

    @Test("JSON paths with a wildcard, a descent or a filter select every match, in document order")
    func multiValuedJSONPaths() throws {
        let document = try #require(JSONValue.parse(Data(#"""
            {"items": [{"id": 1, "status": "done", "size": 10}, {"id": 2, "status": "failed", "size": 99, "meta": {"id": 20}},
                       {"id": 3, "status": "done"}], "meta": {"id": 0, "next": null}}
            """#.utf8)))
        func all(_ path: String) throws -> [String] { try JSONPath.parse(path).evaluateAll(document).map(\.text) }
        #expect(try all("$.items[*].id") == ["1", "2", "3"])
        #expect(try all("$.items.*.status") == ["done", "failed", "done"])
        #expect(try all("$.items[?(@.status == 'failed')].id") == ["2"])
        #expect(try all("$.items[?@.size > 50].id") == ["2"], "RFC 9535's form without parentheses")
        #expect(try all("$.items[?(@.status != \"done\")].id") == ["2"])
        #expect(try all("$.items[?(@.size)].id") == ["1", "2"], "items that have the key")
        #expect(try all("$.items[?(@.meta.id >= 20)].id") == ["2"])
        #expect(try all("$..id") == ["1", "2", "20", "3", "0"], "every id at any depth, in document order")
        #expect(try all("$.meta[*]") == ["0", "null"], "an object's values, by key")
        #expect(try all("$.items[?(@.status == 'lost')]").isEmpty)
        let path = try JSONPath.parse("$.items[*].id")
        let single = try JSONPath.parse("$.items[0].id")
        #expect(!path.isSingular && single.isSingular)
        #expect(path.evaluate(document) == .number(1), "one value wanted (extract, poll state): the first")
        #expect(path.shown(in: document) == "['1', '2', '3']")
        // A body a server chose cannot make a path collect without bound.
        let wide = JSONValue.array(Array(repeating: .array(Array(repeating: .number(1), count: 200)), count: 200))
        #expect(try JSONPath.parse("$[*][*]").evaluateAll(wide).count == JSONPath.maxValues)
    }

    @Test("templates")
    func templates() throws {
        let template = try Template.parse("a ${x} ${y:-d:e} ${env:HOME} ${file:/tmp/t} $${lit}")
        #expect(template.segments == [
            .literal("a "), .variable("x", default: nil), .literal(" "), .variable("y", default: "d:e"), .literal(" "),
            .environment("HOME", default: nil), .literal(" "), .file("/tmp/t", default: nil), .literal(" ${lit}"),
        ])
        #expect(template.requiredVariables == ["x"])
        #expect(try Template.parse("${base:-https://api.openai.com}/v1").defaultValue == "https://api.openai.com/v1")
        #expect(throws: Template.SyntaxError.self) { try Template.parse("${") }
        #expect(throws: Template.SyntaxError.self) { try Template.parse("${1abc}") }
        #expect(throws: Template.SyntaxError.self) { try Template.parse("${env:A-B}") }
    }

    @Test("redaction covers raw, URL-encoded, JSON-escaped, HTML and base64 forms")
    func redaction() {
        var redactor = Redactor()
        redactor.add("p@ss w/\"rd\"")
        #expect(redactor.redact("x p@ss w/\"rd\" y") == "x [redacted] y")
        #expect(redactor.redact("u=p%40ss%20w%2F%22rd%22") == "u=[redacted]")
        #expect(redactor.redact(#"{"password":"p@ss w/\"rd\""}"#) == #"{"password":"[redacted]"}"#)
        #expect(redactor.redact(#"{"p":"p@ss w\/\u0022rd\u0022"}"#) == #"{"p":"[redacted]"}"#)
        #expect(redactor.redact("f=p%40ss+w%2f%22rd%22&x") == "f=[redacted]&x")
        #expect(redactor.redact("<b>p&commat;ss&#32;w&#x2F;&quot;rd&#034;</b>") == "<b>[redacted]</b>")
        #expect(redactor.redact("Basic " + "dXNlcjpwQHNzIHcvInJkIg==") == "Basic [redacted]")  // user:p@ss w/"rd"
        #expect(redactor.redact("cEBzcyB3LyJyZCI=") == "[redacted]")
    }
}

@Suite("Probe format reference")
struct ReadmeTests {
    @Test("the complete example in probes/README.md validates")
    func readmeExample() throws {
        let readme = try String(contentsOfFile: Fixtures.probes + "/README.md", encoding: .utf8)
        let section = try #require(readme.range(of: "## A complete example"))
        let rest = readme[section.upperBound...]
        let start = try #require(rest.range(of: "```yaml\n"))
        let end = try #require(rest[start.upperBound...].range(of: "```"))
        let yaml = String(rest[start.upperBound..<end.lowerBound])
        let (probe, problems) = ProbeLoader.parse(yaml: yaml, file: "README.md", variables: ["base_url"])
        #expect(problems.isEmpty, "\(problems)")
        #expect(probe?.stepNames == ["login", "upload", "download", "compare", "delete"])
    }
}
