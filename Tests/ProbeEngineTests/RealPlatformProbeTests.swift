import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeTestSupport
import Testing

@testable import ProbeEngine

/// The probe format's real-platform features against real servers started here: httpbin
/// (cookies, forms, Basic auth, delays, statuses), nginx (WebDAV raw uploads, TLS with test
/// certificates, mutual TLS), dnsmasq (DNS over UDP and TCP) and TCP services.
@Suite("Probe scripts against real servers", .serialized)
struct RealPlatformProbeTests {
    let client = CurlHTTPClient(threads: 4)
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../probes/examples").standardized.path

    func run(_ probe: ProbeDefinition, variables: [String: String] = [:]) async -> ProbeResult {
        let runner = ProbeRunner(client: client, logger: Logger(label: "test") { _ in SwiftLogNoOpLogHandler() })
        return await runner.run(probe, context: RunContext(agent: "agent-1", region: "eu", variables: variables))
    }

    func example(_ file: String, variables: Set<String>) throws -> ProbeDefinition {
        let probes = try ProbeLoader.load(paths: [Self.examples + "/" + file], variables: variables)
        return try #require(probes.first)
    }

    func failureSummary(_ result: ProbeResult) -> String {
        "\(result.outcome) \(result.error.map { "\($0.kind) at \($0.step): \($0.message)" } ?? "")"
    }

    // MARK: - httpbin

    @Test("httpbin example: cookie jar, cookie and Set-Cookie extraction, form login with & = + %, Basic auth, delay, status; secrets and cookies redacted")
    func httpbinLogin() async throws {
        try await withTeardown { teardown in
            let httpbin = try await RealServers.httpbin()
            teardown.add { await httpbin.stop() }
            let password = "p&ss=w+rd%20 é"
            setenv("HTTPBIN_PASSWORD", password, 1)
            setenv("HTTPBIN_BASIC_PASSWORD", "b4sic-secret", 1)
            defer { unsetenv("HTTPBIN_PASSWORD"); unsetenv("HTTPBIN_BASIC_PASSWORD") }

            var probe = try example("httpbin-login.yaml", variables: ["base_url"])
            // The form field must arrive exactly as written, & = + % and all.
            probe.script.steps[2].assertions.append(.json(Condition(path: try JSONPath.parse("$.form.password"), test: .equals(.string(try Template.parse("${env:HTTPBIN_PASSWORD}"))))))
            let result = await run(probe, variables: ["base_url": httpbin.url])
            #expect(result.outcome == .ok, "\(failureSummary(result))")
            #expect(result.steps.map(\.name) == ["session", "cookies-sent", "login", "basic-auth", "logout", "cookie-gone", "slow", "teapot"])
            #expect(result.labels == ["team": "storage", "tier": "1"])
            let json = String(decoding: try result.encodedJSON(), as: UTF8.self)
            #expect(json.contains(#""labels":{"team":"storage","tier":"1"}"#))
            expectHonestTimings(result)
            #expect((result.steps.first { $0.name == "slow" }?.timings.total ?? 0) >= 1000)
            // Cookie values, the password (in any encoding) and the Basic credentials never appear.
            for secret in ["s3ss10n-abc", "csrf-7f3a9", password, FormEncoding.encode(password), "b4sic-secret", Data("probe:b4sic-secret".utf8).base64EncodedString()] {
                #expect(!json.contains(secret), "result shows \(secret)")
            }
        }
    }

    @Test("a cookie for another path is not sent, and a wrong password fails the form login with its response redacted")
    func httpbinCookiePathAndFailure() async throws {
        try await withTeardown { teardown in
            let httpbin = try await RealServers.httpbin()
            teardown.add { await httpbin.stop() }
            // httpbin's /response-headers sets any header: a cookie scoped to /elsewhere.
            let probe = try makeProbe("""
                name: cookie-path
                component: login
                interval: 30s
                timeout: 10s
                steps:
                  - name: scoped
                    request: {url: "${httpbin_url}/response-headers?Set-Cookie=scoped%3Dv4lue-xyz%3B%20Path%3D%2Felsewhere"}
                  - name: not-sent
                    request: {url: "${httpbin_url}/cookies"}
                    assert:
                      json:
                        - {path: $.cookies.scoped, exists: false}
                  - name: late-cookie
                    request: {url: "${httpbin_url}/cookies/set?late=l4te-c00kie"}
                    assert: {status: 302}
                  - name: echo
                    request:
                      method: POST
                      url: ${httpbin_url}/post
                      form: {password: "${env:PW_FOR_TEST}"}
                    assert:
                      body_matches: 'never-${env:PW_FOR_TEST}'
                """, variables: ["httpbin_url"])
            setenv("PW_FOR_TEST", "t0p=s3cret&x", 1)
            defer { unsetenv("PW_FOR_TEST") }
            let result = await run(probe, variables: ["httpbin_url": httpbin.url])
            #expect(result.steps.count == 4)
            #expect(result.steps[1].ok, "\(failureSummary(result))")
            #expect(result.error?.kind == .assertion)
            #expect(result.error?.step == "echo")
            let json = String(decoding: try result.encodedJSON(), as: UTF8.self)
            #expect(!json.contains("t0p=s3cret&x") && !json.contains("t0p%3Ds3cret%26x"), "\(json)")
            #expect(!json.contains("l4te-c00kie"))

            // A cookie set by the very response that fails its status check is already a secret.
            let failing = try makeProbe("""
                name: failing-cookie
                component: login
                interval: 30s
                timeout: 10s
                steps:
                  - name: set
                    request: {url: "${httpbin_url}/cookies/set?fresh=fr3sh-val"}
                    assert: {status: 200}
                """, variables: ["httpbin_url"])
            let failed = await run(failing, variables: ["httpbin_url": httpbin.url])
            #expect(failed.error?.kind == .httpStatus)
            let failedJSON = String(decoding: try failed.encodedJSON(), as: UTF8.self)
            #expect(!failedJSON.contains("fr3sh-val") && failedJSON.contains("fresh=[redacted]"), "\(failedJSON)")
        }
    }

    @Test("a raw random body's sha256, size and base64 are usable in later templates, body_matches and JSON assertions")
    func payloadFacts() async throws {
        try await withTeardown { teardown in
            let httpbin = try await RealServers.httpbin()
            teardown.add { await httpbin.stop() }
            let probe = try makeProbe("""
                name: payload-facts
                component: files
                interval: 30s
                timeout: 10s
                steps:
                  - name: put
                    request:
                      method: PUT
                      url: ${httpbin_url}/anything/upload
                      body: {random_bytes: 3000, save_as: payload}
                    assert:
                      json:
                        - "$.data == data:application/octet-stream;base64,${payload.base64}"
                        - "$.headers.Content-Length == ${payload.size}"
                        - {path: $.headers.Content-Type, exists: false}
                      body_matches: '"Content-Length": "${payload.size}"'
                  - name: echo-hash
                    request: {url: "${httpbin_url}/anything?sha256=${payload.sha256}"}
                    assert:
                      json: ["$.args.sha256 == ${payload.sha256}"]
                """, variables: ["httpbin_url"])
            let result = await run(probe, variables: ["httpbin_url": httpbin.url])
            #expect(result.outcome == .ok, "\(failureSummary(result))")
        }
    }

    // MARK: - nginx WebDAV

    @Test("WebDAV example: raw PUT of random bytes, GET, compare, DELETE; a changed file fails the compare")
    func webdavRoundTrip() async throws {
        try await withTeardown { teardown in
            let folder = try TemporaryDirectory("sonde-dav")
            teardown.add { folder.remove() }
            let certificates = try RealServers.certificates(in: folder.path, leaves: [("server", 90)])
            let nginx = try await RealServers.nginx(in: folder.path, certificates: certificates, leaves: ["server"])
            teardown.add { await nginx.stop() }
            let probe = try example("webdav-roundtrip.yaml", variables: ["base_url"])
            let result = await run(probe, variables: ["base_url": nginx.davURL])
            #expect(result.outcome == .ok, "\(failureSummary(result))")
            #expect(result.steps.map(\.name) == ["put", "get", "same-bytes", "delete"])
            #expect(result.steps.map(\.status) == [201, 200, nil, 204])
            // Deleted: nothing left behind.
            let left = try FileManager.default.contentsOfDirectory(atPath: folder.path + "/dav/sonde")
            #expect(left.isEmpty, "\(left)")

            // The same journey, but what is read back is another file: the compare must fail.
            let tampered = try makeProbe("""
                name: dav-tampered
                component: files
                interval: 30s
                timeout: 10s
                steps:
                  - name: put
                    request: {method: PUT, url: "${dav_url}/a.bin", body: {random_bytes: 4096, save_as: payload}}
                  - name: other
                    request: {method: PUT, url: "${dav_url}/b.bin", body: {random_bytes: 4096}}
                  - name: get
                    request: {url: "${dav_url}/b.bin"}
                  - name: same
                    compare: {download: get, with: payload}
                """, variables: ["dav_url"])
            let bad = await run(tampered, variables: ["dav_url": nginx.davURL])
            #expect(bad.error?.kind == .assertion && bad.error?.step == "same", "\(failureSummary(bad))")
        }
    }

    // MARK: - TLS

    @Test("https steps carry the chain's expiry; cert_valid_for fails on a certificate expiring in 5 days; ca_file, client certificates, insecure")
    func tlsCertificates() async throws {
        try await withTeardown { teardown in
            let folder = try TemporaryDirectory("sonde-tls")
            teardown.add { folder.remove() }
            let certificates = try RealServers.certificates(in: folder.path, leaves: [("long", 90), ("soon", 5), ("client", 30), ("expired", -3)])
            let nginx = try await RealServers.nginx(in: folder.path, certificates: certificates, leaves: ["long", "soon", "expired"])
            teardown.add { await nginx.stop() }
            let longURL = "https://127.0.0.1:\(nginx.tlsPorts["long"]!)/"
            let soonURL = "https://127.0.0.1:\(nginx.tlsPorts["soon"]!)/"
            func probe(_ url: String, tls: String, assert: String = "cert_valid_for: 14d") throws -> ProbeDefinition {
                try makeProbe("""
                    name: cert
                    component: edge
                    interval: 30s
                    timeout: 10s
                    labels: {team: edge}
                    steps:
                      - name: cert
                        request:
                          url: \(url)
                          tls: \(tls)
                        assert: {\(assert)}
                    """, variables: [], file: folder.file("cert.yaml"))
            }
            let good = await run(try probe(longURL, tls: "{ca_file: ca.pem}"))
            #expect(good.outcome == .ok, "\(failureSummary(good))")
            let days = try #require(good.steps[0].certDaysLeft)
            #expect(days > 88 && days <= 90, "\(days)")
            #expect(good.steps[0].certNotAfter != nil)

            let soon = await run(try probe(soonURL, tls: "{ca_file: ca.pem}"))
            #expect(soon.error?.kind == .assertion, "\(failureSummary(soon))")
            #expect(soon.error?.message.contains("expires") == true)
            let soonDays = try #require(soon.steps[0].certDaysLeft)
            #expect(soonDays > 3 && soonDays <= 5, "\(soonDays)")

            // An expired certificate fails the handshake; the failure still says when it expired
            // (message, cert_not_after, negative days left), for the result and the metrics.
            let expired = await run(try probe("https://127.0.0.1:\(nginx.tlsPorts["expired"]!)/", tls: "{ca_file: ca.pem}"))
            #expect(expired.error?.kind == .tls, "\(failureSummary(expired))")
            #expect(expired.error?.message.contains("/CN=localhost expired 20") == true, "\(failureSummary(expired))")
            print("expired certificate: \(failureSummary(expired))")
            let expiredDays = try #require(expired.steps[0].certDaysLeft)
            #expect(expiredDays < -2.9 && expiredDays > -3.1, "\(expiredDays)")

            // Without the private CA the chain is not trusted: a tls error.
            let untrusted = await run(try makeProbe("""
                name: untrusted
                component: edge
                interval: 30s
                timeout: 10s
                steps:
                  - name: cert
                    request: {url: "\(longURL)"}
                """, variables: []))
            #expect(untrusted.error?.kind == .tls, "\(failureSummary(untrusted))")
            // The failed handshake's time is tls (connect done, no request sent, so no ttfb).
            let handshake = untrusted.steps[0].timings
            #expect(handshake.tls > 0 && handshake.ttfb == 0 && handshake.transfer == 0, "\(handshake)")
            expectHonestTimings(untrusted)
            // insecure: true accepts it, and validate warns.
            let insecure = try probe(longURL, tls: "{insecure: true}", assert: "status: 200")
            #expect(insecure.warnings.contains { $0.message.contains("insecure") && $0.line == 10 })
            #expect(await run(insecure).outcome == .ok)

            // Mutual TLS: refused without a client certificate, accepted with one.
            let mutualURL = "https://127.0.0.1:\(nginx.mutualTLSPort)/"
            let anonymous = await run(try probe(mutualURL, tls: "{ca_file: ca.pem}", assert: "status: 200"))
            #expect(anonymous.outcome == .failed)
            let withClient = await run(try probe(mutualURL, tls: "{ca_file: ca.pem, cert: client.pem, key: client.key}", assert: "status: 200"))
            #expect(withClient.outcome == .ok, "\(failureSummary(withClient))")

            // ip_version 6 to an IPv4-only address cannot connect; 4 can.
            let v4 = try makeProbe("""
                name: v4
                component: edge
                interval: 30s
                timeout: 10s
                steps:
                  - name: v4
                    request: {url: "\(longURL)", tls: {ca_file: ca.pem}, ip_version: 4}
                """, variables: [], file: folder.file("v4.yaml"))
            #expect(await run(v4).outcome == .ok)
            let v6 = try makeProbe("""
                name: v6
                component: edge
                interval: 30s
                timeout: 10s
                steps:
                  - name: v6
                    request: {url: "\(longURL)", tls: {ca_file: ca.pem}, ip_version: 6}
                """, variables: [], file: folder.file("v6.yaml"))
            let onlyV6 = await run(v6)
            #expect(onlyV6.outcome == .failed && onlyV6.steps[0].status == nil, "\(failureSummary(onlyV6))")

            // The result round-trips through the push decoder with its expiry.
            let batch = PushBatch(agent: "agent-1", batchID: "b-1", sentAt: Date(), results: [good])
            let decoded = try PushBatchDecoder.decode(try SondeJSON.encode(batch))
            #expect(decoded.batch.results[0].steps[0].certNotAfter == good.steps[0].certNotAfter)
            #expect(decoded.batch.results[0].labels == ["team": "edge"])
        }
    }

    @Test("cert_valid_for reads the verified chain: an intermediate that expires first is named, a certificate outside the path is ignored, every redirect hop counts")
    func verifiedChain() async throws {
        try await withTeardown { teardown in
            let folder = try TemporaryDirectory("sonde-chain")
            teardown.add { folder.remove() }
            let dir = folder.path
            _ = try RealServers.certificates(in: dir, leaves: [("long", 90), ("soon", 5)])
            // An intermediate CA valid 5 days, and a 90-day leaf under it.
            try RealServers.sign(
                "inter", subject: "/CN=sonde-test-intermediate", extensions: "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign",
                days: 5, issuer: "ca", in: dir)
            try RealServers.sign("under", subject: "/CN=localhost", extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost", days: 90, issuer: "inter", in: dir)
            // A 2-day certificate no path uses (its issuer is not the server's), sent after the good leaf.
            try RealServers.sign("stray", subject: "/CN=sonde-test-stray", extensions: "subjectAltName=DNS:stray.invalid", days: 2, issuer: "inter", in: dir)
            func read(_ name: String) throws -> String { try String(contentsOfFile: dir + "/" + name, encoding: .utf8) }
            try (try read("under.pem") + read("inter.pem")).write(toFile: dir + "/under-chain.pem", atomically: true, encoding: .utf8)
            try (try read("long.pem") + read("stray.pem")).write(toFile: dir + "/long-stray.pem", atomically: true, encoding: .utf8)

            let binary = try RealServers.executable(["/usr/sbin/nginx"], install: "apt-get install nginx-light")
            let chainPort = try RealServers.freePort(), strayPort = try RealServers.freePort()
            let longPort = try RealServers.freePort(), hopPort = try RealServers.freePort()
            func server(_ port: Int, _ cert: String, _ key: String, _ answer: String) -> String {
                "server { listen 127.0.0.1:\(port) ssl; ssl_certificate \(dir)/\(cert); ssl_certificate_key \(dir)/\(key); location / { \(answer) } }\n"
            }
            chmod(dir, 0o755)
            let config = RealServers.nginxConfig(
                in: dir,
                servers: server(chainPort, "under-chain.pem", "under.key", "return 200 ok;")
                    + server(strayPort, "long-stray.pem", "long.key", "return 200 ok;")
                    + server(longPort, "long.pem", "long.key", "return 200 ok;")
                    + server(hopPort, "soon.pem", "soon.key", "return 302 https://127.0.0.1:\(longPort)/;"))
            try config.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
            let nginx = try ChildProcess(binary, ["-p", dir, "-c", dir + "/nginx.conf", "-e", dir + "/error.log"])
            teardown.add { await nginx.stop() }
            for port in [chainPort, strayPort, longPort, hopPort] { try await RealServers.waitForListener(port, "nginx (tls)", process: nginx) }

            func probe(_ port: Int, follow: Bool = false) throws -> ProbeDefinition {
                try makeProbe("""
                    name: chain
                    component: edge
                    interval: 30s
                    timeout: 10s
                    steps:
                      - name: cert
                        request: {url: "https://127.0.0.1:\(port)/", tls: {ca_file: ca.pem}, follow_redirects: \(follow)}
                        assert: {status: 200, cert_valid_for: 14d}
                    """, variables: [], file: folder.file("chain.yaml"))
            }
            // The intermediate expires first: it is what the result shows, by name.
            let chain = await run(try probe(chainPort))
            #expect(chain.error?.kind == .assertion, "\(failureSummary(chain))")
            #expect(chain.error?.message.contains("first to expire: /CN=sonde-test-intermediate") == true, "\(failureSummary(chain))")
            let chainDays = try #require(chain.steps[0].certDaysLeft)
            #expect(chainDays > 3 && chainDays <= 5, "\(chainDays)")

            // A stray certificate the server sends but no path uses: the site is healthy.
            let stray = await run(try probe(strayPort))
            #expect(stray.outcome == .ok, "\(failureSummary(stray))")
            let strayDays = try #require(stray.steps[0].certDaysLeft)
            #expect(strayDays > 88 && strayDays <= 90, "the stray 2-day certificate is not the chain's: \(strayDays)")

            // A front door whose certificate expires in 5 days, redirecting to a healthy one.
            let hop = await run(try probe(hopPort, follow: true))
            #expect(hop.error?.kind == .assertion, "\(failureSummary(hop))")
            let hopDays = try #require(hop.steps[0].certDaysLeft)
            #expect(hopDays > 3 && hopDays <= 5, "the first hop's certificate counts: \(hopDays)")
        }
    }

    @Test("TLS failures name their cause: a TLS 1.3 'certificate required' alert is tls with a hint; unusable client files are refused when the probe is loaded")
    func tlsFailureKinds() async throws {
        try await withTeardown { teardown in
            let folder = try TemporaryDirectory("sonde-tls-kinds")
            teardown.add { folder.remove() }
            let dir = folder.path
            let certificates = try RealServers.certificates(in: dir, leaves: [("long", 90), ("client", 30), ("other", 30)])
            let openssl = try RealServers.executable(["/usr/bin/openssl"], install: "apt-get install openssl")
            let port = try RealServers.freePort()
            // OpenSSL's own server asks for a client certificate; under TLS 1.3 its refusal comes
            // as an alert after the handshake, on curl's first read.
            let server = try ChildProcess(openssl, [
                "s_server", "-quiet", "-tls1_3", "-accept", "127.0.0.1:\(port)", "-cert", certificates.cert("long"), "-key", certificates.key("long"),
                "-Verify", "1", "-CAfile", certificates.ca, "-www",
            ])
            teardown.add { await server.stop() }
            try await RealServers.waitForListener(port, "openssl s_server", process: server)
            func probe(_ tls: String) -> (ProbeDefinition?, [ProbeDiagnostic]) {
                ProbeLoader.parse(yaml: """
                    name: mtls
                    component: edge
                    interval: 30s
                    timeout: 10s
                    steps:
                      - name: mtls
                        request:
                          url: "https://127.0.0.1:\(port)/"
                          tls: \(tls)
                    """, file: folder.file("mtls.yaml"), variables: [])
            }
            let anonymous = await run(try #require(probe("{ca_file: ca.pem}").0))
            #expect(anonymous.error?.kind == .tls, "\(failureSummary(anonymous))")
            #expect(anonymous.error?.message.contains("set the step's tls.cert and tls.key") == true, "\(failureSummary(anonymous))")
            let withClient = await run(try #require(probe("{ca_file: ca.pem, cert: client.pem, key: client.key}").0))
            #expect(withClient.outcome == .ok, "\(failureSummary(withClient))")
            // The same alert on a `tcp` step's first read (its TLS is curl's, read with
            // curl_easy_recv) read as `connect`, "Failure when receiving data from the peer".
            func tcpProbe(_ tls: String) throws -> ProbeDefinition {
                try makeProbe("""
                    name: mtls-tcp
                    component: edge
                    interval: 30s
                    timeout: 10s
                    steps:
                      - name: tcp
                        tcp: {host: 127.0.0.1, port: \(port), tls: \(tls), send: "GET / HTTP/1.0\\r\\n\\r\\n", expect: "HTTP/1.0 200"}
                    """, variables: [], file: folder.file("mtls-tcp.yaml"))
            }
            let tcpAnonymous = await run(try tcpProbe("{ca_file: ca.pem}"))
            #expect(tcpAnonymous.error?.kind == .tls, "\(failureSummary(tcpAnonymous))")
            #expect(tcpAnonymous.error?.message.contains("set the step's tls.cert and tls.key") == true, "\(failureSummary(tcpAnonymous))")
            let tcpWithClient = await run(try tcpProbe("{ca_file: ca.pem, cert: client.pem, key: client.key}"))
            #expect(tcpWithClient.outcome == .ok, "\(failureSummary(tcpWithClient))")

            // Files that exist but cannot be used: refused at load, with where and why.
            try "not a certificate\n".write(toFile: dir + "/garbage.pem", atomically: true, encoding: .utf8)
            for (tls, field) in [
                ("{ca_file: garbage.pem}", "tls.ca_file"), ("{cert: garbage.pem, key: client.key}", "tls.cert"),
                ("{cert: client.pem, key: garbage.pem}", "tls.key"), ("{cert: client.pem, key: other.key}", "tls.key"),
            ] {
                let (loaded, problems) = probe(tls)
                #expect(loaded == nil && problems.count == 1, "\(tls): \(problems)")
                let text = problems.first?.description ?? ""
                #expect(text.contains("mtls.yaml:9:") && text.contains(field), "\(tls): \(text)")
            }
            #expect(probe("{cert: client.pem, key: other.key}").1.first?.description.contains("the key is not the certificate's") == true)
            // Both a missing file and a missing key are reported in one pass.
            let (_, both) = probe("{ca_file: missing.pem, cert: client.pem}")
            #expect(both.count == 2, "\(both)")
        }
    }

    @Test("connect_to checks one backend under the service's name: SNI, certificate and Host stay the URL's, the address is the given one")
    func connectTo() async throws {
        try await withTeardown { teardown in
            let folder = try TemporaryDirectory("sonde-connect-to")
            teardown.add { folder.remove() }
            let dir = folder.path
            _ = try RealServers.certificates(in: dir, leaves: [])
            let openssl = try RealServers.executable(["/usr/bin/openssl"], install: "apt-get install openssl")
            // A certificate for a name no resolver knows: only connect_to can reach it.
            try RealServers.sign("named", subject: "/CN=api.sonde.invalid", extensions: "subjectAltName=DNS:api.sonde.invalid", days: 30, issuer: "ca", in: dir)
            let port = try RealServers.freePort()
            let server = try ChildProcess(openssl, ["s_server", "-quiet", "-accept", "127.0.0.1:\(port)", "-cert", dir + "/named.pem", "-key", dir + "/named.key", "-www"])
            teardown.add { await server.stop() }
            try await RealServers.waitForListener(port, "openssl s_server", process: server)
            func probe(_ url: String, _ connectTo: String?) throws -> ProbeDefinition {
                try makeProbe("""
                    name: backend
                    component: edge
                    interval: 30s
                    timeout: 10s
                    steps:
                      - name: get
                        request: {url: "\(url)", tls: {ca_file: ca.pem}\(connectTo.map { ", connect_to: \"\($0)\"" } ?? "")}
                        assert: {status: 200, cert_valid_for: 7d}
                    """, variables: [], file: folder.file("backend.yaml"))
            }
            let named = await run(try probe("https://api.sonde.invalid:\(port)/", "127.0.0.1"))
            #expect(named.outcome == .ok, "\(failureSummary(named))")
            let withPort = await run(try probe("https://api.sonde.invalid/", "127.0.0.1:\(port)"))
            #expect(withPort.outcome == .ok, "\(failureSummary(withPort))")
            #expect(withPort.steps[0].url == "https://api.sonde.invalid/", "the result names the service, as written")
            let unresolved = await run(try probe("https://api.sonde.invalid:\(port)/", nil))
            #expect(unresolved.error?.kind == .dns, "\(failureSummary(unresolved))")
            // The certificate is still checked against the URL's name.
            let byAddress = await run(try probe("https://localhost:\(port)/", "127.0.0.1"))
            #expect(byAddress.error?.kind == .tls, "\(failureSummary(byAddress))")
            let (_, problems) = ProbeLoader.parse(yaml: """
                name: p
                component: edge
                interval: 30s
                timeout: 5s
                steps:
                  - {name: get, request: {url: "https://x/", connect_to: "10.0.0.1:99999"}}
                """, file: "p.yaml", variables: [])
            #expect(problems.first?.description.contains("connect_to: '10.0.0.1:99999' is not an address") == true, "\(problems)")
        }
    }

    // MARK: - TCP

    @Test("tcp steps: send and expect against a real server, a closed answer, a refused port, TLS with the chain's expiry; failures' time in the phase under way")
    func tcpSteps() async throws {
        try await withTeardown { teardown in
            let httpbin = try await RealServers.httpbin()
            teardown.add { await httpbin.stop() }
            let folder = try TemporaryDirectory("sonde-tcp")
            teardown.add { folder.remove() }
            let certificates = try RealServers.certificates(in: folder.path, leaves: [("soon", 5)])
            let nginx = try await RealServers.nginx(in: folder.path, certificates: certificates, leaves: ["soon"])
            teardown.add { await nginx.stop() }
            let closedPort = try RealServers.freePort()
            func tcp(_ spec: String, assert: String? = nil) throws -> ProbeDefinition {
                try makeProbe("""
                    name: tcp
                    component: cache
                    interval: 30s
                    timeout: 5s
                    steps:
                      - name: tcp
                        tcp: \(spec)
                    \(assert.map { "    assert: {\($0)}" } ?? "")
                    """, variables: [], file: folder.file("tcp.yaml"))
            }
            let ok = await run(try tcp(#"{host: 127.0.0.1, port: \#(httpbin.port), send: "GET /status/418 HTTP/1.0\r\n\r\n", expect: "418"}"#))
            #expect(ok.outcome == .ok, "\(failureSummary(ok))")
            #expect(ok.steps[0].method == "TCP" && ok.steps[0].url == "tcp://127.0.0.1:\(httpbin.port)")
            expectHonestTimings(ok)
            // Whole microseconds, no binary-float tails (`0.024626999999999954`).
            let phases = ok.steps[0].timings
            for value in [phases.dns, phases.connect, phases.tls, phases.ttfb, phases.transfer, phases.total] {
                #expect((value * 1000).rounded() / 1000 == value, "\(value)")
            }
            #expect(ok.steps[0].timings.ttfb > 0)

            let closed = await run(try tcp(#"{host: 127.0.0.1, port: \#(httpbin.port), send: "GET /status/200 HTTP/1.0\r\n\r\n", expect: "+PONG"}"#))
            #expect(closed.error?.kind == .assertion, "\(failureSummary(closed))")
            #expect(closed.error?.message.contains("200 OK") == true)

            let refused = await run(try tcp("{host: 127.0.0.1, port: \(closedPort)}"))
            #expect(refused.error?.kind == .connect, "\(failureSummary(refused))")
            let refusedTimes = refused.steps[0].timings
            #expect(refusedTimes.connect > 0 && refusedTimes.tls == 0 && refusedTimes.ttfb == 0 && refusedTimes.transfer == 0, "\(refusedTimes)")
            expectHonestTimings(refused)

            // httpbin accepts and, sent nothing, never answers: the wait is ttfb, not transfer.
            let silent = await run(try tcp(#"{host: 127.0.0.1, port: \#(httpbin.port), expect: "never"}"#))
            #expect(silent.error?.kind == .timeout, "\(failureSummary(silent))")
            let silentTimes = silent.steps[0].timings
            #expect(silentTimes.transfer == 0 && silentTimes.ttfb > 0, "\(silentTimes)")
            expectHonestTimings(silent)

            let tls = await run(try tcp(#"{host: 127.0.0.1, port: \#(nginx.tlsPorts["soon"]!), tls: {ca_file: ca.pem}, send: "GET / HTTP/1.0\r\n\r\n", expect: "tls ok"}"#, assert: "cert_valid_for: 14d"))
            #expect(tls.error?.kind == .assertion, "\(failureSummary(tls))")
            #expect(tls.steps[0].timings.tls > 0)
            #expect((tls.steps[0].certDaysLeft ?? 0) > 3)
        }
    }

    /// A Python server on a free port, for TLS misbehaviour no real server does on purpose:
    /// `silent` accepts and sends nothing (a TLS port whose server hangs); `stall` sends
    /// `220 ready` then never answers a ClientHello; `garbage` sends `220 ready`,
    /// completes a TLS handshake with `cert`/`key`, reads a line, and answers with a TLS record
    /// that fails its MAC.
    static let hostileTLSServer = #"""
        import socket, ssl, sys, threading
        mode, cert, key = sys.argv[1], sys.argv[2], sys.argv[3]
        listener = socket.socket(); listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0)); listener.listen(16)
        print(listener.getsockname()[1], flush=True)
        held = []
        def serve(conn):
            if mode == "silent":
                held.append(conn); return
            conn.sendall(b"220 ready\r\n")
            if mode == "stall":
                held.append(conn); return
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER); context.load_cert_chain(cert, key)
            tls = context.wrap_socket(conn, server_side=True)
            tls.recv(100)
            raw = socket.fromfd(tls.fileno(), socket.AF_INET, socket.SOCK_STREAM)
            raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
            held.append((tls, raw))
        while True:
            conn, _ = listener.accept()
            threading.Thread(target=serve, args=(conn,), daemon=True).start()
        """#

    @Test("a TLS handshake that stalls is tls time, not connect or transfer; a bad TLS record after a verified handshake is tls and keeps the chain's expiry")
    func hostileTLS() async throws {
        try await withTeardown { teardown in
            let folder = try TemporaryDirectory("sonde-hostile-tls")
            teardown.add { folder.remove() }
            let certificates = try RealServers.certificates(in: folder.path, leaves: [("long", 90)])
            try Self.hostileTLSServer.write(toFile: folder.file("server.py"), atomically: true, encoding: .utf8)
            func server(_ mode: String) async throws -> Int {
                let process = try ChildProcess("/usr/bin/python3", [folder.file("server.py"), mode, certificates.cert("long"), certificates.key("long")])
                teardown.add { await process.stop() }
                let line = try await process.waitForLine(timeout: .seconds(20)) { Int($0) != nil }
                return Int(line)!
            }
            let silent = try await server("silent")
            let stall = try await server("stall")
            let garbage = try await server("garbage")
            func tcp(_ spec: String) throws -> ProbeDefinition {
                try makeProbe("name: t\ncomponent: api\ninterval: 30s\ntimeout: 1500ms\nsteps:\n  - name: t\n    tcp: \(spec)", variables: [], file: folder.file("t.yaml"))
            }
            // The server's TCP side is up at once; all of the wait is the handshake.
            for (what, probe) in [
                ("https", try makeProbe("name: h\ncomponent: api\ninterval: 30s\ntimeout: 1500ms\nsteps:\n  - name: h\n    request: {url: \"https://127.0.0.1:\(silent)/\", tls: {ca_file: ca.pem}}", variables: [], file: folder.file("h.yaml"))),
                ("tls from the start", try tcp(#"{host: 127.0.0.1, port: \#(silent), tls: {ca_file: ca.pem}, expect: "never"}"#)),
                ("STARTTLS", try tcp(#"{host: 127.0.0.1, port: \#(stall), tls: {ca_file: ca.pem}, query_response: [{expect: "220 ready", starttls: true}, {expect: "never"}]}"#)),
            ] {
                let result = await run(probe)
                #expect(result.error?.kind == .timeout, "\(what): \(failureSummary(result))")
                let timings = result.steps[0].timings
                #expect(timings.tls > 0.8 * timings.total && timings.connect < 100 && timings.transfer < 100, "\(what): \(timings)")
                expectHonestTimings(result)
            }
            let bad = await run(try tcp(#"{host: 127.0.0.1, port: \#(garbage), tls: {ca_file: ca.pem}, query_response: [{expect: "220 ready", starttls: true}, {send: "PING\r\n"}, {expect: "PONG"}]}"#))
            #expect(bad.error?.kind == .tls && bad.error?.message.contains("receiving over TLS failed") == true, "\(failureSummary(bad))")
            #expect((bad.steps[0].certDaysLeft ?? 0) > 88, "the chain verified before the bad record is still reported: \(failureSummary(bad))")
        }
    }

    @Test("tcp query_response against a real SMTP server (aiosmtpd): banner, EHLO, STARTTLS, the upgraded chain's expiry; a wrong name, an untrusted CA, a missing answer, a line-by-line regex, a catastrophic pattern")
    func tcpDialogues() async throws {
        try await withTeardown { teardown in
            let folder = try TemporaryDirectory("sonde-smtp")
            teardown.add { folder.remove() }
            let certificates = try RealServers.certificates(in: folder.path, leaves: [("long", 90), ("soon", 5)])
            try RealServers.sign("other", subject: "/CN=mail.other.example", extensions: "subjectAltName=DNS:mail.other.example", days: 90, issuer: "ca", in: folder.path)
            let long = try await RealServers.smtp(cert: certificates.cert("long"), key: certificates.key("long"))
            teardown.add { await long.stop() }
            let soon = try await RealServers.smtp(cert: certificates.cert("soon"), key: certificates.key("soon"))
            teardown.add { await soon.stop() }
            let other = try await RealServers.smtp(cert: certificates.cert("other"), key: certificates.key("other"))
            teardown.add { await other.stop() }
            let httpbin = try await RealServers.httpbin()
            teardown.add { await httpbin.stop() }
            func smtp(_ host: String, _ port: Int, tls: String?, after: String = #"{expect_matches: "^250 ", send: "QUIT\r\n"}"#, assert: String? = "cert_valid_for: 14d") throws -> ProbeDefinition {
                try makeProbe("""
                    name: smtp
                    component: mail
                    interval: 30s
                    timeout: 5s
                    steps:
                      - name: submission
                        tcp:
                          host: \(host)
                          port: \(port)
                    \(tls.map { "      tls: \($0)" } ?? "")
                          query_response:
                            - expect_matches: "^220 "
                            - send: "EHLO probe.example\\r\\n"
                            - {expect_matches: "^250-STARTTLS$", send: "STARTTLS\\r\\n"}
                            - {expect: "220 ", starttls: true}
                            - send: "EHLO probe.example\\r\\n"
                            - \(after)
                    \(assert.map { "    assert: {\($0)}" } ?? "")
                    """, variables: [], file: folder.file("smtp.yaml"))
            }

            // A healthy server: the dialogue runs through the upgrade, the chain is read.
            let good = await run(try smtp("127.0.0.1", long.port, tls: "{ca_file: ca.pem}"))
            #expect(good.outcome == .ok, "\(failureSummary(good))")
            #expect(good.steps[0].url == "tcp://127.0.0.1:\(long.port)")
            let days = try #require(good.steps[0].certDaysLeft)
            #expect(days > 88 && days <= 90, "\(days)")
            #expect(good.steps[0].timings.tls > 0 && good.steps[0].timings.ttfb > 0, "\(good.steps[0].timings)")
            expectHonestTimings(good)

            // By name: SNI and the host name check against DNS:localhost.
            let byName = await run(try smtp("localhost", long.port, tls: "{ca_file: ca.pem}"))
            #expect(byName.outcome == .ok, "\(failureSummary(byName))")

            // The certificate expires in 5 days: the check fails and names it.
            let expiring = await run(try smtp("127.0.0.1", soon.port, tls: "{ca_file: ca.pem}"))
            #expect(expiring.error?.kind == .assertion, "\(failureSummary(expiring))")
            #expect(expiring.error?.message.contains("CN=localhost") == true, "\(failureSummary(expiring))")

            // Not the server's name, and a CA the agent does not trust: tls errors that say why.
            let wrongName = await run(try smtp("127.0.0.1", other.port, tls: "{ca_file: ca.pem}"))
            #expect(wrongName.error?.kind == .tls, "\(failureSummary(wrongName))")
            #expect(wrongName.error?.message.contains("STARTTLS handshake failed: certificate verify failed") == true, "\(failureSummary(wrongName))")
            #expect((wrongName.steps[0].certDaysLeft ?? 0) > 88, "a failed upgrade still reports the chain it saw")
            let untrusted = await run(try smtp("127.0.0.1", long.port, tls: nil))
            #expect(untrusted.error?.kind == .tls, "\(failureSummary(untrusted))")
            #expect(untrusted.error?.message.contains("certificate verify failed") == true, "\(failureSummary(untrusted))")
            let insecure = await run(try smtp("127.0.0.1", other.port, tls: "{insecure: true}", assert: nil))
            #expect(insecure.outcome == .ok, "\(failureSummary(insecure))")

            // An answer that never comes after the upgrade: a time-out naming the entry, quoting
            // what the server said instead (read over TLS).
            let missing = await run(try smtp("127.0.0.1", long.port, tls: "{ca_file: ca.pem}", after: #"{expect_matches: "^250-CHUNKING"}"#, assert: nil))
            #expect(missing.error?.kind == .timeout, "\(failureSummary(missing))")
            #expect(missing.error?.message.contains("query_response[5] /^250-CHUNKING/ did not arrive") == true, "\(failureSummary(missing))")
            #expect(missing.error?.message.contains("250 HELP") == true, "\(failureSummary(missing))")
            expectHonestTimings(missing)

            // Plain TCP, line by line: `$` ends a line without its \r, and a later entry reads on
            // after the earlier match.
            func plain(_ entries: String) throws -> ProbeDefinition {
                try makeProbe("""
                    name: http-by-hand
                    component: api
                    interval: 30s
                    timeout: 3s
                    steps:
                      - name: raw
                        tcp:
                          host: 127.0.0.1
                          port: \(httpbin.port)
                          query_response: \(entries)
                    """, variables: [], file: folder.file("plain.yaml"))
            }
            let status = await run(try plain(#"[{send: "GET /status/418 HTTP/1.0\r\n\r\n"}, {expect_matches: "(?i)^HTTP/1\\.[01] 418 .*teapot$"}, {expect: "teapot"}]"#))
            #expect(status.outcome == .ok, "\(failureSummary(status))")
            let wrongOrder = await run(try plain(#"[{send: "GET /status/418 HTTP/1.0\r\n\r\n"}, {expect: "teapot"}, {expect_matches: "^HTTP/1"}]"#))
            #expect(wrongOrder.error?.kind == .assertion, "\(failureSummary(wrongOrder))")
            #expect(wrongOrder.error?.message.contains("the connection closed before query_response[2] /^HTTP/1/ arrived") == true, "\(failureSummary(wrongOrder))")

            // Groups of a matched line in the next send (blackbox_exporter's `${1}`): the last
            // command aiosmtpd lists goes back in `HELP <command>`, which it answers with that
            // command's syntax only when the name came through whole. (A server without
            // STARTTLS: one that offers it refuses HELP before the upgrade.)
            let plainSMTP = try await RealServers.smtp(cert: nil, key: nil)
            teardown.add { await plainSMTP.stop() }
            func groups(_ entries: String) throws -> ProbeDefinition {
                try makeProbe("""
                    name: smtp-help
                    component: mail
                    interval: 30s
                    timeout: 3s
                    steps:
                      - name: help
                        tcp:
                          host: 127.0.0.1
                          port: \(plainSMTP.port)
                          query_response: \(entries)
                    """, variables: [], file: folder.file("groups.yaml"))
            }
            let echoed = await run(try groups(#"[{expect_matches: "^220 "}, {send: "HELP\r\n"}, {expect_matches: "^250 Supported commands: .* (\\S+)$", send: "HELP ${1}\r\n"}, {expect_matches: "^250 Syntax: VRFY "}, {send: "QUIT\r\n"}]"#))
            #expect(echoed.outcome == .ok, "\(failureSummary(echoed))")
            // A group that took no part is empty: `HELP ` lists the commands again, no syntax line.
            let empty = await run(try groups(#"[{expect_matches: "^220 "}, {send: "HELP\r\n"}, {expect_matches: "^250 (Supported)|(Nothing)", send: "HELP ${2}\r\n"}, {expect_matches: "^250 Syntax: "}]"#))
            #expect(empty.error?.kind == .timeout && empty.error?.message.contains("250 Supported commands") == true, "\(failureSummary(empty))")
            // A templated pattern is compiled per run, so its group count is checked then.
            let tooFew = await run(try groups(#"[{expect_matches: "^220 (?:${agent.id})?", send: "HELP ${1}\r\n"}]"#))
            #expect(tooFew.error?.kind == .script && tooFew.error?.message.contains("${1}: its expect_matches has 0 groups") == true, "\(failureSummary(tooFew))")

            // A line chosen by the server against a backtracking pattern: stopped, named, and
            // within the probe's timeout.
            let hostile = Data((String(repeating: "a", count: 40) + "!\n").utf8).base64EncodedString()
            let started = ContinuousClock.now
            let stopped = await run(try plain(#"[{send: "GET /base64/\#(hostile) HTTP/1.0\r\n\r\n"}, {expect_matches: "^(a+)+$"}]"#))
            #expect(ContinuousClock.now - started < .seconds(4))
            #expect(stopped.error?.kind == .script || stopped.error?.kind == .timeout, "\(failureSummary(stopped))")
            #expect(stopped.error?.message.contains("query_response[1] expect_matches /^(a+)+$/") == true, "\(failureSummary(stopped))")
        }
    }

    // MARK: - ICMP

    @Test("icmp steps: a real echo to 127.0.0.1, ::1 and localhost with the round trip as ttfb; latency_below on the round trip; a name that does not exist; a network with no route")
    func icmpSteps() async throws {
        let folder = try TemporaryDirectory("sonde-icmp")
        defer { folder.remove() }
        func icmp(_ spec: String, assert: String? = nil) throws -> ProbeDefinition {
            try makeProbe("""
                name: ping
                component: network
                interval: 30s
                timeout: 3s
                steps:
                  - name: ping
                    icmp: \(spec)
                \(assert.map { "    assert: {\($0)}" } ?? "")
                """, variables: [], file: folder.file("ping.yaml"))
        }
        // `[::1]` as a URL writes it: the same host, shown bracketed once.
        for host in ["127.0.0.1", "::1", "[::1]"] {
            let ok = await run(try icmp("{host: \"\(host)\", payload_size: 100}", assert: "latency_below: 1s"))
            #expect(ok.outcome == .ok, "\(host): \(failureSummary(ok))")
            #expect(ok.steps[0].method == "ICMP" && ok.steps[0].url == (host.contains(":") ? "icmp://[::1]" : "icmp://127.0.0.1"))
            #expect(ok.steps[0].timings.ttfb > 0 && ok.steps[0].timings.dns == 0, "\(ok.steps[0].timings)")
            expectHonestTimings(ok)
        }
        let byName = await run(try icmp("{host: localhost, ip_version: 4, dont_fragment: true}"))
        #expect(byName.outcome == .ok, "\(failureSummary(byName))")

        // A round trip can never be below 0 s: the check fails and says how long it took.
        let slow = await run(try icmp("{host: 127.0.0.1}", assert: "latency_below: 0ms"))
        #expect(slow.error?.kind == .assertion && slow.error?.message.contains("expected below") == true, "\(failureSummary(slow))")

        let unknown = await run(try icmp("{host: no-such-host.invalid}"))
        #expect(unknown.error?.kind == .dns, "\(failureSummary(unknown))")
        #expect(unknown.error?.message.contains("no-such-host.invalid") == true)

        // A documentation prefix: refused at once where no IPv6 route exists, silent where one does.
        let unroutable = await run(try icmp("{host: \"2001:db8::1\"}"))
        #expect(unroutable.error?.kind == .connect || unroutable.error?.kind == .timeout, "\(failureSummary(unroutable))")
        #expect(unroutable.error?.message.contains("2001:db8::1") == true, "\(failureSummary(unroutable))")
        expectHonestTimings(unroutable)
    }

    // MARK: - DNS

    @Test("dns steps against dnsmasq: A, TXT, MX, a wrong expectation, NXDOMAIN, TCP after truncation; the system resolver; a silent server times out")
    func dnsSteps() async throws {
        try await withTeardown { teardown in
            let big = (0..<4).map { String(repeating: Character(UnicodeScalar(UInt8(97 + $0))), count: 200) }
            let dnsmasq = try RealServers.dnsmasq(bigText: big)
            teardown.add { await dnsmasq.stop() }
            let server = "127.0.0.1:\(dnsmasq.port)"
            try await waitUntil("dnsmasq to answer", timeout: .seconds(20)) {
                if !dnsmasq.process.isRunning { throw TestFailure("dnsmasq exited: \(dnsmasq.process.allOutput)") }
                let deadline = ContinuousClock.now.advanced(by: .milliseconds(300))
                return (try? DNSWireClient.query(name: "api.internal", type: .A, server: "127.0.0.1", port: dnsmasq.port, deadline: deadline).get()) != nil
            }
            func dns(_ spec: String) throws -> ProbeDefinition {
                try makeProbe("""
                    name: dns
                    component: dns
                    interval: 30s
                    timeout: 3s
                    steps:
                      - name: dns
                        dns: \(spec)
                    """, variables: [])
            }
            let a = await run(try dns("{name: api.internal, type: A, server: \"\(server)\", expect: [10.0.0.1]}"))
            #expect(a.outcome == .ok, "\(failureSummary(a))")
            #expect(a.steps[0].timings.dns > 0 && a.steps[0].timings.dns == a.steps[0].timings.total)
            let txt = await run(try dns("{name: info.internal, type: TXT, server: \"\(server)\", expect: \"v=sonde1 hello\"}"))
            #expect(txt.outcome == .ok, "\(failureSummary(txt))")
            let mx = await run(try dns("{name: mail.internal, type: mx, server: \"\(server)\", expect: [\"10 mx1.internal\"]}"))
            #expect(mx.outcome == .ok, "\(failureSummary(mx))")
            let wrong = await run(try dns("{name: api.internal, server: \"\(server)\", expect: [10.0.0.2]}"))
            #expect(wrong.error?.kind == .assertion && wrong.error?.message.contains("10.0.0.1") == true, "\(failureSummary(wrong))")
            let missing = await run(try dns("{name: nope.internal, server: \"\(server)\"}"))
            #expect(missing.error?.kind == .dns, "\(failureSummary(missing))")
            // rcode: the answer code is the check (blackbox_exporter's valid_rcodes).
            let mustNotResolve = await run(try dns("{name: old.gone.internal, server: \"\(server)\", rcode: NXDOMAIN}"))
            #expect(mustNotResolve.outcome == .ok, "\(failureSummary(mustNotResolve))")
            let resolves = await run(try dns("{name: api.internal, server: \"\(server)\", rcode: nxdomain}"))
            #expect(resolves.error?.kind == .assertion && resolves.error?.message.contains("answered NOERROR with answers [\"10.0.0.1\"], expected NXDOMAIN") == true, "\(failureSummary(resolves))")
            // 800+ bytes of TXT do not fit a 512-byte UDP answer: the client asks again over TCP.
            let truncated = await run(try dns("{name: big.internal, type: TXT, server: \"\(server)\", expect: \"\(big.joined())\"}"))
            #expect(truncated.outcome == .ok, "\(failureSummary(truncated))")

            let system = await run(try dns("{name: localhost, type: A, expect: [127.0.0.1]}"))
            #expect(system.outcome == .ok, "\(failureSummary(system))")

            // A UDP socket that never answers.
            let (silent, silentPort) = try silentLoopbackUDPSocket()
            defer { close(silent) }
            let started = ContinuousClock.now
            let timeout = await run(try dns("{name: api.internal, server: \"127.0.0.1:\(silentPort)\"}"))
            #expect(timeout.error?.kind == .timeout, "\(failureSummary(timeout))")
            #expect(timeout.error?.message.contains("(waited ") == true, "\(failureSummary(timeout))")
            #expect(ContinuousClock.now - started < .seconds(6))
        }
    }
}
