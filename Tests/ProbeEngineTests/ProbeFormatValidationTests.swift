@testable import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

@testable import ProbeEngine

/// `validate` on the real-platform keys: every mistake with file:line:column, warnings that
/// do not stop loading, and the DNS client's parser against hostile answers.
@Suite("Probe format validation")
struct ProbeFormatValidationTests {
    func problems(_ yaml: String) -> [ProbeDiagnostic] {
        ProbeLoader.parse(yaml: yaml, file: "p.yaml", variables: ["base_url"]).1
    }

    @Test("an unknown key in a new block is an error at its line and column, with a suggestion")
    func unknownKeys() {
        let found = problems("""
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: login
                request:
                  url: ${base_url}/login
                  from: {user: probe}
              - name: dns
                dns: {name: api.internal, typ: A}
              - name: tcp
                tcp: {host: h, port: 6379, expct: "+PONG"}
            """)
        let text = found.map(\.description)
        #expect(text.contains { $0.hasPrefix("p.yaml:9:7: steps[0].request.from: unknown field 'from'; did you mean 'form'?") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:11:31: steps[1].dns.typ: unknown field 'typ'; did you mean 'type'?") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:13:32: steps[2].tcp.expct: unknown field 'expct'; did you mean 'expect'?") }, "\(text)")
    }

    @Test("validate warns about checks that cannot hold: cert_valid_for on http:// or plain tcp, a body check on HEAD")
    func checksThatCannotHold() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: plain
                request: {url: "http://example.com/"}
                assert: {cert_valid_for: 14d}
              - name: head
                request: {method: HEAD, url: "https://example.com/"}
                assert: {body_contains: ok}
              - name: tcp
                tcp: {host: example.com, port: 25}
                assert: {cert_valid_for: 14d}
              - name: fine
                request: {url: "http://example.com/", follow_redirects: true}
                assert: {cert_valid_for: 14d}
            """, file: "p.yaml", variables: [])
        #expect(errors.isEmpty, "\(errors)")
        let warnings = try #require(probe?.warnings).map(\.description)
        #expect(warnings.count == 3, "\(warnings)")
        #expect(warnings.contains { $0.hasPrefix("p.yaml:8:") && $0.contains("an http:// URL has no certificate") }, "\(warnings)")
        #expect(warnings.contains { $0.hasPrefix("p.yaml:11:") && $0.contains("a HEAD response has no body") }, "\(warnings)")
        #expect(warnings.contains { $0.hasPrefix("p.yaml:14:") && $0.contains("add tls: true") }, "\(warnings)")
    }

    @Test("a header check with two tests is an error, not its first test alone")
    func oneTestPerHeader() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "https://example.com/"}
                assert: {headers: {content-type: {equals: a, matches: b}}}
            """, file: "p.yaml", variables: [])
        #expect(probe == nil)
        #expect(errors.map(\.description).contains { $0.contains("one test per header (equals, matches or exists), found equals and matches") }, "\(errors)")
    }

    @Test("interval, retry_interval and timeout templates take the agent's variables when it has them, else their defaults")
    func templatedSchedule() throws {
        let yaml = """
            name: p
            component: api
            interval: ${check_interval:-30s}
            retry_interval: ${check_retry:-10s}
            timeout: ${check_timeout:-5s}
            steps:
              - {name: get, request: {url: "https://example.com/"}}
            """
        let names: Set<String> = ["check_interval", "check_retry", "check_timeout"]
        let (defaults, none) = ProbeLoader.parse(yaml: yaml, file: "p.yaml", variables: names)
        #expect(none.isEmpty, "\(none)")
        #expect(defaults?.interval == .seconds(30) && defaults?.retryInterval == .seconds(10) && defaults?.timeout == .seconds(5))
        let (set, problems) = ProbeLoader.parse(
            yaml: yaml, file: "p.yaml", variables: names, values: ["check_interval": "10s", "check_retry": "2s", "check_timeout": "3s"])
        #expect(problems.isEmpty, "\(problems)")
        #expect(set?.interval == .seconds(10) && set?.retryInterval == .seconds(2) && set?.timeout == .seconds(3))
        // A value that is not a duration is a problem where the template is, naming the value.
        let (_, bad) = ProbeLoader.parse(yaml: yaml, file: "p.yaml", variables: names, values: ["check_interval": "often"])
        #expect(bad.map(\.description).contains { $0.hasPrefix("p.yaml:3:") && $0.contains("is 'often' for this agent, not a duration") }, "\(bad)")
        // The retry_interval check reads the values too: 20 s is longer than a 10 s interval.
        let (_, tooLong) = ProbeLoader.parse(yaml: yaml, file: "p.yaml", variables: names, values: ["check_interval": "10s", "check_retry": "20s"])
        #expect(tooLong.map(\.description).contains { $0.contains("retry_interval must be between 100ms and the interval (10s)") }, "\(tooLong)")
    }

    @Test("a schedule from a file (${file:…}) takes the file's value at load, beside the probe file; without the file, its default")
    func scheduleFromAFile() throws {
        let dir = try TemporaryDirectory("schedule-file")
        defer { dir.remove() }
        let yaml = """
            name: p
            component: api
            interval: ${file:interval.txt:-30s}
            timeout: 5s
            steps:
              - {name: get, request: {url: "https://example.com/"}}
            """
        let (fallback, none) = ProbeLoader.parse(yaml: yaml, file: dir.file("p.yaml"), variables: [])
        #expect(none.isEmpty && fallback?.interval == .seconds(30), "\(none)")
        try "15s\n".write(toFile: dir.file("interval.txt"), atomically: true, encoding: .utf8)
        let (read, problems) = ProbeLoader.parse(yaml: yaml, file: dir.file("p.yaml"), variables: [])
        #expect(problems.isEmpty && read?.interval == .seconds(15), "\(problems)")
        try "sometimes".write(toFile: dir.file("interval.txt"), atomically: true, encoding: .utf8)
        let (_, bad) = ProbeLoader.parse(yaml: yaml, file: dir.file("p.yaml"), variables: [])
        #expect(bad.map(\.description).contains { $0.contains("is 'sometimes' for this agent, not a duration") }, "\(bad)")
    }

    @Test("cert_valid_for on a dns step is an error: a DNS answer has no certificate, so the check could never pass")
    func certValidForOnDNS() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: lookup
                dns: {name: api.example.com, type: A}
                assert: {cert_valid_for: 14d}
            """, file: "p.yaml", variables: [])
        #expect(probe == nil)
        #expect(errors.map(\.description).contains { $0.hasPrefix("p.yaml:8:") && $0.contains("a dns step has no TLS certificate to check") }, "\(errors)")
    }

    @Test("query_response: entries checked with line and column; a STARTTLS dialogue carries a certificate; send/expect beside it, two upgrades, two answers in one entry are errors")
    func queryResponse() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: p
            component: mail
            interval: 30s
            timeout: 5s
            steps:
              - name: smtp
                tcp:
                  host: mail.example.com
                  port: 587
                  query_response:
                    - expect_matches: "^220 "
                    - {send: "EHLO probe\\r\\n", expect: "250"}
                    - {expect_matches: "^250-STARTTLS", send: "STARTTLS\\r\\n"}
                    - {expect: "220", starttls: true}
                assert: {cert_valid_for: 14d}
            """, file: "p.yaml", variables: [])
        #expect(errors.isEmpty, "\(errors)")
        let spec = try #require(probe.flatMap { if case .tcp(let spec) = $0.script.steps[0].action { spec } else { nil } })
        #expect(spec.queryResponse.count == 4 && spec.startsTLS && spec.tls != nil)
        #expect(probe?.warnings.isEmpty == true, "\(probe?.warnings ?? [])")

        let text = problems("""
            name: p
            component: mail
            interval: 30s
            timeout: 5s
            steps:
              - name: both
                tcp: {host: h, port: 25, send: "x", query_response: [{expect: "220"}]}
              - name: twice
                tcp: {host: h, port: 25, query_response: [{starttls: true}, {starttls: true}]}
              - name: entry
                tcp:
                  host: h
                  port: 25
                  query_response:
                    - {expect: "a", expect_matches: "b"}
                    - {expct: "220"}
                    - {expect_matches: "(unclosed"}
                    - {}
            """).map(\.description)
        #expect(text.contains { $0.hasPrefix("p.yaml:7:") && $0.contains("use either send/expect or query_response") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:9:") && $0.contains("starttls: true may appear once") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:15:") && $0.contains("expect or expect_matches, not both") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:16:") && $0.contains("steps[2].tcp.query_response[1].expct: unknown field 'expct'; did you mean 'expect'?") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:17:") && $0.contains("query_response[2].expect_matches") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:18:") && $0.contains("an entry needs expect, expect_matches, send or starttls") }, "\(text)")
    }

    @Test("query_response groups: ${1} only in a send beside expect_matches, no more groups than the pattern has, no default; not in other fields")
    func queryResponseGroups() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: p
            component: irc
            interval: 30s
            timeout: 5s
            steps:
              - name: ping
                tcp:
                  host: irc.example.com
                  port: 6667
                  query_response:
                    - {expect_matches: '^PING :(\\S+)$', send: "PONG :${1}\\r\\n"}
            """, file: "p.yaml", variables: [])
        #expect(errors.isEmpty, "\(errors)")
        let spec = try #require(probe.flatMap { if case .tcp(let spec) = $0.script.steps[0].action { spec } else { nil } })
        #expect(spec.queryResponse[0].send?.highestCapture == 1)

        let text = problems("""
            name: p
            component: irc
            interval: 30s
            timeout: 5s
            steps:
              - name: a
                tcp:
                  host: h
                  port: 6667
                  query_response:
                    - {expect: "PING", send: "PONG ${1}"}
                    - {expect_matches: '^PING :(\\S+)$', send: "PONG ${2}"}
                    - {expect_matches: "^x(y)", send: "a ${1:-z}"}
              - name: b
                request: {url: "http://h/${1}"}
            """).map(\.description)
        #expect(text.contains { $0.hasPrefix("p.yaml:11:") && $0.contains("'${1}' refers to a group of this entry's expect_matches, and the entry has none") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:12:") && $0.contains("'${2}': the entry's expect_matches has 1 group") }, "\(text)")
        #expect(text.contains { $0.contains("a group reference takes no default") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:15:") && $0.contains("works only in a query_response entry's send") }, "\(text)")
    }

    @Test("icmp: an unknown key, an assertion other than latency_below and an oversized payload are errors; ICMP errors are matched to this request only")
    func icmpSteps() {
        let text = problems("""
            name: p
            component: net
            interval: 30s
            timeout: 5s
            steps:
              - name: a
                icmp: {host: gw, payload_sise: 10}
              - name: b
                icmp: {host: gw}
                assert: {status: 200}
              - name: c
                icmp: {host: gw, payload_size: 70000}
            """).map(\.description)
        #expect(text.contains { $0.hasPrefix("p.yaml:7:") && $0.contains("did you mean 'payload_size'?") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:10:") && $0.contains("an icmp step checks only latency_below") }, "\(text)")
        #expect(text.contains { $0.hasPrefix("p.yaml:12:") && $0.contains("payload_size") }, "\(text)")

        // A raw IPv4 socket sees the IP header and every ICMP message: only a reply or an error
        // that quotes this request's identifier and sequence counts.
        let ip: [UInt8] = [0x45] + [UInt8](repeating: 0, count: 19)
        let reply: [UInt8] = ip + [0, 0, 0, 0, 0x12, 0x34, 0x00, 0x07]
        #expect(ICMPEcho.match(reply[...], raw: true, v6: false, identifier: 0x1234, sequence: 7) == .reply)
        #expect(ICMPEcho.match(reply[...], raw: true, v6: false, identifier: 0x1235, sequence: 7) == .other, "someone else's ping")
        let unreachable: [UInt8] = ip + [3, 1, 0, 0, 0, 0, 0, 0] + ip + [8, 0, 0, 0, 0x12, 0x34, 0x00, 0x07]
        #expect(ICMPEcho.match(unreachable[...], raw: true, v6: false, identifier: 0x1234, sequence: 7) == .error("destination unreachable: host unreachable"))
        #expect(ICMPEcho.match(unreachable[...], raw: true, v6: false, identifier: 0x1234, sequence: 8) == .other)
        let v6Exceeded: [UInt8] = [3, 0, 0, 0, 0, 0, 0, 0] + [UInt8](repeating: 0, count: 40) + [128, 0, 0, 0, 0xAB, 0xCD, 0x00, 0x02]
        #expect(ICMPEcho.match(v6Exceeded[...], raw: false, v6: true, identifier: 0, sequence: 2) == .error("time to live exceeded in transit (a routing loop, or too many hops)"))
        #expect(ICMPEcho.match([0, 0, 0][...], raw: true, v6: false, identifier: 1, sequence: 1) == .other, "a truncated packet")
        // RFC 1071's example words sum to 0xddf2; the checksum is its complement.
        #expect(ICMPEcho.checksum([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]) == ~UInt16(0xddf2))
    }

    @Test("a negated key is never 'corrected' to its opposite (no_follow_redirects is not follow_redirects)")
    func negatedKeys() {
        let found = problems("""
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "${base_url}/", no_follow_redirects: true}
                assert: {body_not_contain: error, not_status: 500}
            """)
        let text = found.map(\.description)
        #expect(text.contains { $0.contains("request.no_follow_redirects: unknown field 'no_follow_redirects'; 'follow_redirects' is its opposite, not a spelling of it") }, "\(text)")
        #expect(text.contains { $0.contains("assert.body_not_contain: unknown field 'body_not_contain'; did you mean 'body_not_contains'?") }, "\(text)")
        #expect(text.contains { $0.contains("assert.not_status: unknown field 'not_status'") }, "\(text)")
        #expect(!text.contains { $0.contains("did you mean 'follow_redirects'") || $0.contains("did you mean 'status'") }, "\(text)")
    }

    @Test("a key written flat is suggested nested only where the parent takes that mapping (status_code → status)")
    func flatKeyHints() {
        let found = problems("""
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "${base_url}/", tls_insecure: true}
                poll_every: 1s
                assert: {status_code: 200}
            """)
        let text = found.map(\.description)
        #expect(text.contains { $0 == "p.yaml:7:36: steps[0].request.tls_insecure: unknown field 'tls_insecure'; did you mean 'tls' with 'insecure' inside it (tls: {insecure: …})?" }, "\(text)")
        #expect(text.contains { $0 == "p.yaml:8:5: steps[0].poll_every: unknown field 'poll_every'; did you mean 'poll' with 'every' inside it (poll: {every: …})?" }, "\(text)")
        #expect(text.contains { $0 == "p.yaml:9:14: steps[0].assert.status_code: unknown field 'status_code'; did you mean 'status'?" }, "\(text)")
    }

    @Test("retry_interval: a quarter of the interval by default, set per probe, between 100ms and the interval")
    func retryInterval() throws {
        func parse(_ line: String) -> (ProbeDefinition?, [ProbeDiagnostic]) {
            ProbeLoader.parse(yaml: """
                name: p
                component: api
                interval: 1m
                \(line)
                timeout: 5s
                steps:
                  - name: get
                    request: {url: "${base_url}/"}
                """, file: "p.yaml", variables: ["base_url"])
        }
        let (byDefault, none) = parse("")
        #expect(none.isEmpty, "\(none)")
        #expect(byDefault?.retryInterval == .seconds(15))
        let (set, noProblems) = parse("retry_interval: 10s")
        #expect(noProblems.isEmpty, "\(noProblems)")
        #expect(set?.retryInterval == .seconds(10))
        #expect(parse("retry_interval: 1m").0?.retryInterval == .seconds(60), "equal to the interval: retries off")
        for bad in ["retry_interval: 2m", "retry_interval: 50ms"] {
            let text = parse(bad).1.map(\.description)
            #expect(text.contains { $0.hasPrefix("p.yaml:4:17: retry_interval: retry_interval must be between 100ms and the interval (60s)") }, "\(text)")
        }
    }

    @Test("a stuck_after state that differs only in case from a polled state is a warning at its key")
    func stuckAfterCase() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: p
            component: batch
            interval: 30s
            timeout: 5m
            steps:
              - name: wait
                request: {url: "${base_url}/batch"}
                poll:
                  every: 1s
                  max_wait: 2m
                  state: $.status
                  until: "$.status == COMPLETED"
                  fail_when: "$.status in [FAILED, EXPIRED]"
                  stuck_after:
                    finalizing: 60s
                    COMPLETED: 10s
                    default: 90s
            """, file: "p.yaml", variables: ["base_url"])
        #expect(errors.isEmpty, "\(errors)")
        let warnings = try #require(probe?.warnings)
        #expect(warnings.count == 0, "finalizing is not seen in until/fail_when in any case: \(warnings)")

        let (cased, _) = ProbeLoader.parse(yaml: """
            name: p
            component: batch
            interval: 30s
            timeout: 5m
            steps:
              - name: wait
                request: {url: "${base_url}/batch"}
                poll:
                  every: 1s
                  max_wait: 2m
                  state: $.status
                  until: "$.status == completed"
                  fail_when: "$.status == FINALIZING_FAILED"
                  stuck_after:
                    Completed: 60s
            """, file: "p.yaml", variables: ["base_url"])
        let warning = try #require(cased?.warnings.first)
        #expect(warning.description.hasPrefix("p.yaml:15:9: warning: steps[0].poll.stuck_after.Completed: 'Completed' differs only in case from the state 'completed'"), "\(warning)")
    }

    @Test("a stuck_after key that differs only in case from 'default' is a warning; a real state of that name is not")
    func stuckAfterDefaultCase() throws {
        func warnings(states: String, stuck: String) throws -> [String] {
            let (probe, errors) = ProbeLoader.parse(yaml: """
                name: p
                component: batch
                interval: 30s
                timeout: 5m
                steps:
                  - name: wait
                    request: {url: "${base_url}/batch"}
                    poll:
                      every: 1s
                      max_wait: 2m
                      state: $.status
                      until: "$.status in [\(states)]"
                      stuck_after: {\(stuck)}
                """, file: "p.yaml", variables: ["base_url"])
            #expect(errors.isEmpty, "\(errors)")
            return try #require(probe).warnings.map(\.description)
        }
        let mistyped = try warnings(states: "completed", stuck: "Default: 2s")
        #expect(mistyped.count == 1, "\(mistyped)")
        #expect(mistyped.first?.hasPrefix("p.yaml:13:21: warning: steps[0].poll.stuck_after.Default: 'Default' differs only in case from 'default'") == true, "\(mistyped)")
        #expect(mistyped.first?.contains("did you mean 'default'?") == true)
        #expect(try warnings(states: "completed", stuck: "DEFAULT: 2s, default: 5s").count == 1)
        #expect(try warnings(states: "completed", stuck: "default: 2s").isEmpty)
        // A job whose state really is `Default` may have a limit for it.
        #expect(try warnings(states: "completed, Default", stuck: "Default: 2s").isEmpty)
    }

    @Test("a ${…} in a regex that takes no templates (header matches, json matches, regex extraction) is a warning; \\$ is not")
    func templateInAPlainRegex() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: get
                request: {url: "${base_url}/"}
                assert:
                  headers: {X-Id: {matches: "^${id}$"}}
                  json: ['$.total matches ^\\${amount}']
                extract: {next: {regex: 'next=${token}', group: 0}}
            """, file: "p.yaml", variables: ["base_url"])
        #expect(errors.isEmpty, "\(errors)")
        let warnings = try #require(probe).warnings.map(\.description)
        #expect(warnings.count == 2, "\(warnings)")
        #expect(warnings.allSatisfy { $0.contains("'${…}' is not filled in here") }, "\(warnings)")
    }

    @Test("body_matches takes templates; bad labels, ip_version, missing tls files and basic_auth with an Authorization header are errors")
    func newKeyErrors() {
        let found = problems("""
            name: p
            component: api
            interval: 30s
            timeout: 5s
            labels: {team: storage, probe: x, 9lives: y}
            steps:
              - name: one
                request:
                  url: ${base_url}/x
                  ip_version: 5
                  tls: {ca_file: /nonexistent/ca.pem}
                  basic_auth: {user: u, password: p}
                  headers: {Authorization: Bearer x}
                assert:
                  body_matches: 'id=${nope}'
            """).map(\.description)
        #expect(found.contains { $0.contains("labels: 'probe' is not a usable label name") }, "\(found)")
        #expect(found.contains { $0.contains("labels: '9lives' is not a usable label name") }, "\(found)")
        #expect(found.contains { $0.contains("ip_version is 4 or 6") }, "\(found)")
        #expect(found.contains { $0.contains("'/nonexistent/ca.pem' does not exist") }, "\(found)")
        #expect(found.contains { $0.contains("basic_auth sets the Authorization header") }, "\(found)")
        #expect(found.contains { $0.contains("undefined variable '${nope}'") }, "\(found)")
    }

    /// A FIFO as `ca_file` hung `validate` and a reload (open waits for a writer), and
    /// `${file:/dev/zero}` would read until memory ran out (red team, 33rd session, F3): TLS files
    /// and secret files must be regular files of bounded size, and saying so takes no time.
    @Test("a FIFO, a device or an oversized file as a TLS or secret file is refused at once")
    func specialFilesAreRefused() throws {
        let dir = try TemporaryDirectory("special-files")
        defer { dir.remove() }
        #expect(mkfifo(dir.file("fifo"), 0o600) == 0)
        #expect(FileManager.default.createFile(atPath: dir.file("big.pem"), contents: Data(count: TLSFiles.maxBytes + 1)))
        let started = ContinuousClock.now
        let found = problems("""
            name: p
            component: api
            interval: 30s
            timeout: 5s
            steps:
              - name: one
                request:
                  url: ${base_url}/x
                  headers: {X-Token: "${file:\(dir.file("fifo"))}", X-Other: "${file:/dev/zero}"}
                  tls: {ca_file: \(dir.file("fifo")), cert: \(dir.file("big.pem")), key: /dev/zero}
            """).map(\.description)
        #expect(ContinuousClock.now - started < .seconds(2))
        #expect(found.contains { $0.contains("'\(dir.file("fifo"))' is a FIFO, not a regular file") }, "\(found)")
        #expect(found.contains { $0.contains("'\(dir.file("big.pem"))' is \(TLSFiles.maxBytes + 1) bytes, over the") }, "\(found)")
        #expect(found.contains { $0.contains("'/dev/zero' is a device, not a regular file") }, "\(found)")
        #expect(found.contains { $0.contains("secret file '\(dir.file("fifo"))' (from ${file:\(dir.file("fifo"))}) is a FIFO") }, "\(found)")
        #expect(found.contains { $0.contains("secret file '/dev/zero' (from ${file:/dev/zero}) is a device") }, "\(found)")
    }

    @Test("payload facts are in scope after save_as, not before; a tcp step rejects body assertions")
    func payloadScope() {
        let found = problems("""
            name: p
            component: files
            interval: 30s
            timeout: 5s
            steps:
              - name: early
                request: {url: "${base_url}/${payload.sha256}"}
              - name: put
                request: {method: PUT, url: "${base_url}/f", body: {random_bytes: 10, save_as: payload}}
              - name: late
                request: {url: "${base_url}/${payload.sha256}/${payload.size}/${payload.base64}"}
              - name: tcp
                tcp: {host: h, port: 1}
                assert: {body_contains: x}
            """).map(\.description)
        #expect(found.count == 2, "\(found)")
        #expect(found.contains { $0.contains("steps[0].request.url: undefined variable '${payload.sha256}'") })
        #expect(found.contains { $0.contains("a tcp or dns step checks only latency_below and cert_valid_for") })
    }

    /// Only records that answer the question count (found by the red team: a server's
    /// `evil.example. A 10.0.0.1`, or the name's record in class CH, made `expect` pass).
    @Test("the DNS parser takes only class-IN records of the name asked or of its CNAME chain")
    func dnsAnswersMustBeForTheQuestion() throws {
        let query = try DNSWireClient.encodeQuery(name: "a.example", type: .A, id: 0x1234).get()
        func answer(_ records: [[UInt8]]) -> [UInt8] {
            var message = query
            message[2] = 0x81; message[3] = 0x80
            message[7] = UInt8(records.count)
            return message + records.flatMap { $0 }
        }
        func name(_ text: String) -> [UInt8] { DNSWireClient.encodeName(text)! }
        func record(_ owner: [UInt8], type: UInt8 = 1, class dnsClass: UInt8 = 1, _ data: [UInt8]) -> [UInt8] {
            owner + [0, type, 0, dnsClass, 0, 0, 0, 60, 0, UInt8(data.count)] + data
        }
        let question: [UInt8] = [0xC0, 12]
        let other = answer([record(name("evil.example"), [10, 0, 0, 1])])
        #expect(try DNSWireClient.parse(other, id: 0x1234, name: "a.example", type: .A).get() == [])
        let chaos = answer([record(question, class: 3, [10, 0, 0, 1])])
        #expect(try DNSWireClient.parse(chaos, id: 0x1234, name: "a.example", type: .A).get() == [])
        // a.example CNAME b.example, b.example CNAME c.example, c.example A 10.0.0.3, listed backwards, plus a stray.
        let chain = answer([
            record(name("c.example"), [10, 0, 0, 3]), record(name("b.example"), type: 5, name("c.example")),
            record(question, type: 5, name("b.example")), record(name("stray.example"), [10, 0, 0, 9]),
        ])
        #expect(try DNSWireClient.parse(chain, id: 0x1234, name: "a.example", type: .A).get() == ["10.0.0.3"])
    }

    /// One problem, one message: a step dropped for its own error (here an undefined variable)
    /// still counts as an earlier step for `compare` (found by the first-use review).
    @Test("a step with an error is still a known step name: compare names it without a second, false error")
    func brokenStepStillNamed() {
        let text = problems("""
            name: p
            component: files
            interval: 30s
            timeout: 5s
            steps:
              - name: upload
                request: {method: PUT, url: "http://h/x", body: {random_bytes: 16, save_as: payload}}
              - name: download
                request: {url: "${undefined_base}/x"}
              - name: check
                compare: {download: download, with: payload}
            """).map(\.description)
        #expect(text.count == 1 && text[0].contains("undefined variable '${undefined_base}'"), "\(text)")
    }

    @Test("form encoding keeps & = + % and spaces safe")
    func formEncoding() {
        #expect(FormEncoding.encode("a&b=c+d%e f") == "a%26b%3Dc%2Bd%25e+f")
        #expect(FormEncoding.encode("é*-._") == "%C3%A9*-._")
    }

    @Test("the DNS parser refuses hostile answers: pointer loops, forward pointers, overlong records, wrong ids")
    func hostileDNS() throws {
        let query = try DNSWireClient.encodeQuery(name: "a.example", type: .A, id: 0x1234).get()
        func answer(_ records: [UInt8], count: UInt8 = 1) -> [UInt8] {
            var message = query
            message[2] = 0x81; message[3] = 0x80
            message[7] = count
            return message + records
        }
        // A record whose owner name points at itself (offset of the record).
        let loopOffset = UInt8(query.count)
        let loop = answer([0xC0, loopOffset, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1])
        #expect(throws: DNSFailure.self) { try DNSWireClient.parse(loop, id: 0x1234, name: "a.example", type: .A).get() }
        // A forward pointer.
        let forward = answer([0xC0, 0xFF, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1])
        #expect(throws: DNSFailure.self) { try DNSWireClient.parse(forward, id: 0x1234, name: "a.example", type: .A).get() }
        // rdlength past the end.
        let long = answer([0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0xFF, 0xFF, 10, 0, 0, 1])
        #expect(throws: DNSFailure.self) { try DNSWireClient.parse(long, id: 0x1234, name: "a.example", type: .A).get() }
        // 255 claimed answers, one present.
        let many = answer([0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1], count: 255)
        #expect(throws: DNSFailure.self) { try DNSWireClient.parse(many, id: 0x1234, name: "a.example", type: .A).get() }
        // Another id.
        let good = answer([0xC0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 10, 0, 0, 1])
        #expect(try DNSWireClient.parse(good, id: 0x1234, name: "A.Example.", type: .A).get() == ["10.0.0.1"])
        #expect(throws: DNSFailure.self) { try DNSWireClient.parse(good, id: 0x4321, name: "a.example", type: .A).get() }
        #expect(DNSWireClient.encodeName(String(repeating: "a", count: 64) + ".x") == nil)
    }

    @Test("a probe's components: its own and its steps' (what a collector's confirmation request matches)")
    func probeComponents() throws {
        let (probe, errors) = ProbeLoader.parse(yaml: """
            name: upload
            component: files
            interval: 30s
            timeout: 10s
            steps:
              - name: login
                component: login
                request: {url: "${base_url}/login"}
              - name: put
                request: {url: "${base_url}/files"}
            """, file: "p.yaml", variables: ["base_url"])
        #expect(errors.isEmpty, "\(errors)")
        #expect(try #require(probe).components == ["files", "login"])
    }
}
