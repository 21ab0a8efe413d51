import CollectorAPI
import CollectorStore
import Correlation
import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Testing

#if canImport(FoundationXML)
    import FoundationXML
#endif

@testable import Collector

/// The status pages as people see them: rendered by Debian's headless Chromium at phone and
/// desktop widths, from a real collector with agents, 90 days of history and incidents.
@Suite(.serialized) struct StatusPageBrowserTests {
    static let chromium = "/usr/bin/chromium"
    static let agents = [
        TestAgent(id: "edge-fra-07.hosting-provider.example", region: "eu-central"),
        TestAgent(id: "edge-iad-03.hosting-provider.example", region: "us-east"),
    ]
    static let components = ["files", "login", "search", "billing-and-invoicing-api"]

    /// A collector with history (91 days in the store), current results from both agents (a
    /// failing `files` in us-east), an open incident with a person's update and a resolved one.
    static func withPopulatedCollector(public isPublic: Bool, _ body: (RunningCollector, Incident) async throws -> Void) async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        var config = testConfig(dir: dir, agents: agents)
        config.statusPagePublic = isPublic
        config.components = components + ["checkout"]
        config.statusPage.title = "Example Cloud status"
        config.statusPage.link = "https://example.com/"
        try await withCollector(config) { collector in
            let now = Date()
            let today = UptimeDay.dayNumber(now)
            for daysBack in Int64(1)...91 {
                for agent in agents {
                    let start = Date(epochMs: (today - daysBack) * 86_400_000)
                    let results = (0..<24).map { hour in
                        let component = components[hour % components.count]
                        let failed = component == "files" && (daysBack == 12 || daysBack == 40) && hour < 12
                        return agent.result(
                            probe: "\(component)-journey", component: component, outcome: failed ? .failed : .ok,
                            startedAt: start.addingTimeInterval(Double(hour) * 3600 + 30))
                    }
                    _ = try await collector.store.ingest(
                        batch: BatchRecord(batchID: UUID().uuidString, agent: agent.id, receivedAt: now, body: Data(), signature: ""), results: results)
                }
            }
            for agent in agents {
                let results = components.map { component in
                    agent.result(
                        probe: "\(component)-journey", component: component, outcome: component == "files" && agent.region == "us-east" ? .failed : .ok,
                        startedAt: now.addingTimeInterval(-5))
                }
                #expect(try await agent.push(agent.batch(results), to: collector).status == 200)
            }
            try await waitUntil("verdicts for every component") {
                let status = try decode(StatusResponse.self, try await get(collector, "/v1/status"))
                return Set(status.components.map(\.component)).isSuperset(of: components)
            }
            let open = Incident(
                id: "files.\(now.addingTimeInterval(-1500).epochMs)", component: "files", status: .monitoring, scope: .region,
                severity: .partialOutage, regions: ["us-east"], agents: [agents[1].id], openedAt: now.addingTimeInterval(-1500),
                updatedAt: now.addingTimeInterval(-300), evidence: Evidence(failingAgents: [agents[1].id], failingAgentCount: 1, reportingAgents: 2),
                eventSeq: 2,
                updates: [
                    IncidentUpdate(
                        time: now.addingTimeInterval(-1500), status: .investigating, scope: .region, severity: .partialOutage,
                        message: "1/2 agents failing (\(agents[1].id)), http_status"),
                    IncidentUpdate(
                        time: now.addingTimeInterval(-300), status: .monitoring, scope: .region, severity: .partialOutage,
                        message: "Uploads work again for users in us-east after a storage node was replaced; we are watching them."),
                ])
            let resolved = Incident(
                id: "login.\(now.addingTimeInterval(-5 * 86400).epochMs)", component: "login", status: .resolved, scope: .platform,
                severity: .majorOutage, regions: ["eu-central", "us-east"], agents: agents.map(\.id), openedAt: now.addingTimeInterval(-5 * 86400),
                updatedAt: now.addingTimeInterval(-5 * 86400 + 2700), resolvedAt: now.addingTimeInterval(-5 * 86400 + 2700), evidence: Evidence(),
                eventSeq: 2,
                updates: [
                    IncidentUpdate(
                        time: now.addingTimeInterval(-5 * 86400), status: .investigating, scope: .platform, severity: .majorOutage,
                        message: "2/2 agents failing, see https://platform.internal.example/login"),
                    IncidentUpdate(
                        time: now.addingTimeInterval(-5 * 86400 + 2700), status: .resolved, scope: .platform, severity: .majorOutage, message: "recovered"),
                ])
            try await collector.store.commit(EvaluationCommit(incidents: [try record(open, author: "Dana (on call)"), try record(resolved, author: nil, conflict: "resolved by dana while 2 of 2 agents still fail")]))
            try await body(collector, open)
        }
    }

    /// The stored record of an incident: `author` on its last update, as a person's update has
    /// it, the engine's `sonde` on the others; a person's `conflict` with the measurements.
    static func record(_ incident: Incident, author: String?, conflict: String? = nil) throws -> IncidentRecord {
        var object = try JSONSerialization.jsonObject(with: SondeJSON.encode(incident)) as! [String: Any]
        if let author, var updates = object["updates"] as? [[String: Any]] {
            for index in updates.indices { updates[index]["author"] = "sonde" }
            updates[updates.count - 1]["author"] = author
            object["updates"] = updates
        }
        if let conflict { object["conflict"] = conflict }
        return IncidentRecord(
            id: incident.id, component: incident.component, status: incident.status.rawValue, openedAt: incident.openedAt,
            updatedAt: incident.updatedAt, resolvedAt: incident.resolvedAt, json: try JSONSerialization.data(withJSONObject: object))
    }

    /// Runs Chromium and returns what it printed on stdout; fails loudly when it is missing.
    static func runChromium(_ arguments: [String], profile: String) async throws -> String {
        guard FileManager.default.isExecutableFile(atPath: chromium) else {
            throw TestFailure("\(chromium) is missing: these tests need Debian's chromium package (scripts/install-deps.sh installs it)")
        }
        let process = try ChildProcess(
            chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files", "--user-data-dir=\(profile)"] + arguments)
        let status = try await process.waitForExit(timeout: .seconds(120))
        let output = process.stdoutLines.joined(separator: "\n")
        guard status == 0 else { throw TestFailure("chromium exited \(status): \(process.allOutput.suffix(2000))") }
        return output
    }

    /// Headless Chromium's window is at least 500 px wide: narrower widths are iframes of the
    /// exact width (media queries follow the frame), each reporting its scroll width.
    static func measure(pages: [String: String], widths: [Int], dir: TemporaryDirectory) async throws -> [String: (scroll: Int, inner: Int, script: Bool)] {
        var frames = ""
        for (name, html) in pages {
            try html.write(toFile: dir.file("\(name).html"), atomically: true, encoding: .utf8)
            for width in widths {
                frames += "<iframe data-name=\"\(name)@\(width)\" src=\"\(name).html\" style=\"border:0;width:\(width)px;height:900px\"></iframe>\n"
            }
        }
        let harness = """
            <!DOCTYPE html><html><body style="margin:0">\(frames)<script>
            window.addEventListener("load",function(){var out=[];document.querySelectorAll("iframe").forEach(function(f){var d=f.contentDocument;
            var t=d.querySelector("time.abs"),js=t?(t.textContent.indexOf("UTC")<0?1:0):1;
            out.push(f.dataset.name+"="+d.documentElement.scrollWidth+"/"+f.contentWindow.innerWidth+"/"+js)});document.title=out.join(" ")});
            </script></body></html>
            """
        try harness.write(toFile: dir.file("harness.html"), atomically: true, encoding: .utf8)
        let dom = try await runChromium(["--window-size=1500,1000", "--dump-dom", "file://" + dir.file("harness.html")], profile: dir.file("profile"))
        guard let start = dom.range(of: "<title>"), let end = dom.range(of: "</title>") else { throw TestFailure("no title in Chromium's DOM: \(dom.prefix(500))") }
        var measured: [String: (Int, Int, Bool)] = [:]
        for entry in dom[start.upperBound..<end.lowerBound].split(separator: " ") {
            let parts = entry.split(separator: "=")
            let numbers = parts.last?.split(separator: "/").compactMap { Int($0) } ?? []
            if parts.count == 2, numbers.count == 3 { measured[String(parts[0])] = (numbers[0], numbers[1], numbers[2] == 1) }
        }
        return measured
    }

    /// Everything the public must not read: agent ids, the API, internal views, probed addresses.
    static func leaks(_ text: String, probes: Bool = true) -> [String] {
        var forbidden = agents.map(\.id) + ["/v1/", "/metrics", "/internal", "platform.example", "platform.internal.example", "https://platform", "http_status"]
        if probes { forbidden += components.map { "\($0)-journey" } }
        return forbidden.filter { text.contains($0) }
    }

    @Test func pagesFitEveryWidthAndThePublicOneLeaksNothing() async throws {
        try await Self.withPopulatedCollector(public: true) { collector, open in
            let dir = try TemporaryDirectory()
            defer { dir.remove() }
            let publicPage = try await get(collector, "/", token: nil)
            #expect(publicPage.status == 200)
            let internalPage = try await get(collector, "/internal", token: TestTokens.read)
            #expect(internalPage.status == 200)
            let incidentPage = try await get(collector, "/incidents/\(StatusPage.pathSegment(open.id))", token: nil)
            #expect(incidentPage.status == 200)
            let internalIncident = try await get(collector, "/internal/incidents/\(StatusPage.pathSegment(open.id))", token: TestTokens.read)
            #expect(internalIncident.status == 200)
            #expect(try await get(collector, "/internal", token: nil).status == 401, "the internal view always needs a token")
            // A widget on another site may read the public page's machine-readable forms.
            for path in ["/api/v2/summary.json", "/api/v2/status.json", "/history.atom", "/history.rss"] {
                let response = try await get(collector, path, token: nil)
                #expect(response.status == 200 && response.headers.value(for: "Access-Control-Allow-Origin") == "*", "\(path) from another origin")
            }

            // What the public reads.
            for (name, page) in [("public", publicPage), ("incident", incidentPage)] {
                #expect(Self.leaks(page.bodyText).isEmpty, "\(name) page shows \(Self.leaks(page.bodyText))")
            }
            let html = publicPage.bodyText
            #expect(html.contains("<title>Example Cloud status</title>") && html.contains("href=\"https://example.com/\""))
            #expect(html.contains("Active incidents") && html.contains("Incident history") && html.contains("Partial Outage of files in us-east"))
            #expect(html.contains("Uploads work again for users in us-east"), "a person's update is shown as written")
            #expect(html.contains("— Dana (on call)"))
            #expect(html.contains("% uptime") && html.contains("90 days ago"))
            #expect(html.components(separatedBy: "id=\"component-checkout\"").last?.contains(">Starting<") == true)
            #expect(incidentPage.bodyText.contains("We are investigating a problem with files."), "the engine's text naming an agent is replaced")
            #expect(incidentPage.bodyText.contains("by Dana (on call)") && incidentPage.bodyText.contains("Regions: us-east"))
            // The internal view keeps everything: agents, evidence, raw messages, links.
            #expect(!html.contains("Conflict") && !html.contains("resolved by dana"), "conflicts are for operators")
            #expect(!incidentPage.bodyText.contains("by sonde"), "the collector's own entries name no author")
            for text in [Self.agents[0].id, "/metrics", "Why", "Last 24 hours", "Regions and evidence", "Conflicts", "resolved by dana while 2 of 2 agents still fail"] {
                #expect(internalPage.bodyText.contains(text), "internal view lacks \(text)")
            }
            #expect(internalIncident.bodyText.contains("1/2 agents failing (\(Self.agents[1].id)), http_status"))

            let widths = [320, 390, 1280, 1440]
            let measured = try await Self.measure(
                pages: ["public": html, "internal": internalPage.bodyText, "incident": incidentPage.bodyText, "internal-incident": internalIncident.bodyText],
                widths: widths, dir: dir)
            for name in ["public", "internal", "incident", "internal-incident"] {
                for width in widths {
                    guard let m = measured["\(name)@\(width)"] else {
                        Issue.record("no measurement for \(name) at \(width) px")
                        continue
                    }
                    #expect(m.inner == width, "\(name) at \(width) px: the frame is \(m.inner) px wide")
                    #expect(m.scroll <= width, "\(name) overflows at \(width) px: scrollWidth \(m.scroll)")
                    #expect(m.script, "\(name) at \(width) px: the inline script did not fill the times")
                }
            }

            // Screenshots for the docs: SONDE_SCREENSHOTS=<folder> writes them there.
            if let folder = ProcessInfo.processInfo.environment["SONDE_SCREENSHOTS"] {
                for (name, page) in [("public", html), ("internal", internalPage.bodyText)] {
                    for (width, height) in [(390, 1500), (1280, 1300)] {
                        let frame = dir.file("shot-\(name)-\(width).html")
                        try """
                        <!DOCTYPE html><html><body style="margin:0;background:#57606a"><iframe src="\(name).html" style="border:0;display:block;width:\(width)px;height:\(height)px;background:#fff"></iframe></body></html>
                        """.write(toFile: frame, atomically: true, encoding: .utf8)
                        try page.write(toFile: dir.file("\(name).html"), atomically: true, encoding: .utf8)
                        _ = try await Self.runChromium(
                            ["--window-size=\(max(width, 500)),\(height)", "--screenshot=\(folder)/status-\(name)-\(width).png", "file://" + frame],
                            profile: dir.file("profile"))
                    }
                }
            }
        }
    }

    @Test func feedSummaryAndAccess() async throws {
        try await Self.withPopulatedCollector(public: false) { collector, open in
            // Not public: every page needs a read token, and takes one.
            for path in ["/", "/internal", "/incidents/\(StatusPage.pathSegment(open.id))", "/history.atom", "/api/v2/summary.json", "/api/v2/status.json"] {
                #expect(try await get(collector, path, token: nil).status == 401, "\(path) without a token")
                let allowed = try await get(collector, path, token: TestTokens.read)
                #expect(allowed.status == 200, "\(path) with a read token")
                #expect(allowed.headers.value(for: "Access-Control-Allow-Origin") == nil, "\(path): what a token opened is not for other origins")
            }
            #expect(try await get(collector, "/incidents/nope.1", token: TestTokens.read).status == 404)

            // Statuspage's summary shape.
            let summary = try await get(collector, "/api/v2/summary.json", token: TestTokens.read)
            let object = try #require(try JSONSerialization.jsonObject(with: summary.body) as? [String: Any])
            #expect(Set(object.keys) == ["page", "components", "incidents", "scheduled_maintenances", "status"])
            let page = try #require(object["page"] as? [String: Any])
            #expect(page["name"] as? String == "Example Cloud status" && page["id"] != nil && page["updated_at"] != nil)
            // Without public_url the links use the host the client asked for, never the listen
            // address (behind a proxy an internal one: red team F14).
            #expect(page["url"] as? String == collector.baseURL, "\(page["url"] ?? "-")")
            func pageURL(host: String) async throws -> String? {
                let response = try await CurlHTTPClient.shared.perform(
                    HTTPRequest(
                        url: collector.baseURL + "/api/v2/summary.json", headers: TestTokens.headers(TestTokens.read) + [HTTPHeader("Host", host)],
                        timeout: .seconds(10), caFile: collector.caFile))
                return ((try JSONSerialization.jsonObject(with: response.body) as? [String: Any])?["page"] as? [String: Any])?["url"] as? String
            }
            let asked = try await pageURL(host: "status.example.com")
            let scheme = collector.baseURL.hasPrefix("https:") ? "https" : "http"
            #expect(asked == scheme + "://status.example.com", "\(asked ?? "nil")")
            #expect(try await pageURL(host: "evil.example/<x>") == "", "a Host that is not a plain host[:port] gives relative links")
            // Links built from the Host: a shared cache must keep one answer per Host (red team N2).
            for path in ["/api/v2/summary.json", "/api/v2/incidents.json", "/history.atom"] {
                #expect(try await get(collector, path, token: TestTokens.read).headers.value(for: "Vary") == "Host", "\(path)")
            }
            let status = try #require(object["status"] as? [String: Any])
            #expect(status["indicator"] as? String != nil && status["description"] as? String != nil)
            let components = try #require(object["components"] as? [[String: Any]])
            #expect(Set(components.compactMap { $0["name"] as? String }).isSuperset(of: Self.components))
            #expect(components.allSatisfy { ["operational", "degraded_performance", "partial_outage", "major_outage", "under_maintenance"].contains($0["status"] as? String ?? "") })
            #expect(!components.contains { $0["name"] as? String == "checkout" }, "a starting component has no Statuspage status")
            let incidents = try #require(object["incidents"] as? [[String: Any]])
            #expect(incidents.count == 1)
            #expect(incidents.first?["status"] as? String == "monitoring" && incidents.first?["impact"] as? String == "major")
            #expect(incidents.first?["resolved_at"] is NSNull && incidents.first?["monitoring_at"] as? String != nil, "absent times are null, as Statuspage writes them")
            let updates = incidents.first?["incident_updates"] as? [[String: Any]] ?? []
            #expect(updates.count == 2 && (updates.first?["body"] as? String ?? "").hasPrefix("Uploads work again"))
            #expect(Self.leaks(summary.bodyText).isEmpty, "summary.json shows \(Self.leaks(summary.bodyText))")
            let small = try #require(try JSONSerialization.jsonObject(with: try await get(collector, "/api/v2/status.json", token: TestTokens.read).body) as? [String: Any])
            #expect(Set(small.keys) == ["page", "status"] && (small["status"] as? [String: Any])?["indicator"] as? String == status["indicator"] as? String)
            // The rest of Statuspage's public v2 that aggregators call: each the page and one list.
            func part(_ path: String) async throws -> [String: Any] {
                let response = try await get(collector, path, token: TestTokens.read)
                #expect(response.status == 200, "\(path)")
                #expect(Self.leaks(response.bodyText).isEmpty, "\(path) shows \(Self.leaks(response.bodyText))")
                return try #require(try JSONSerialization.jsonObject(with: response.body) as? [String: Any])
            }
            let componentsPart = try await part("/api/v2/components.json")
            #expect(Set(componentsPart.keys) == ["page", "components"] && (componentsPart["components"] as? [[String: Any]])?.count == components.count)
            let unresolved = try await part("/api/v2/incidents/unresolved.json")
            #expect((unresolved["incidents"] as? [[String: Any]])?.map { $0["id"] as? String } == incidents.map { $0["id"] as? String })
            let all = try #require(try await part("/api/v2/incidents.json")["incidents"] as? [[String: Any]])
            #expect(all.count == 2 && all.contains { $0["status"] as? String == "resolved" && $0["resolved_at"] as? String != nil }, "open and resolved: \(all)")
            for path in ["/api/v2/scheduled-maintenances.json", "/api/v2/scheduled-maintenances/upcoming.json", "/api/v2/scheduled-maintenances/active.json"] {
                let maintenances = try await part(path)
                #expect(Set(maintenances.keys) == ["page", "scheduled_maintenances"] && (maintenances["scheduled_maintenances"] as? [Any])?.isEmpty == true)
            }

            // The Atom feed: well-formed, one entry per incident, nothing internal.
            let feed = try await get(collector, "/history.atom", token: TestTokens.read)
            #expect(feed.headers.value(for: "Content-Type")?.hasPrefix("application/atom+xml") == true)
            let parser = XMLParser(data: feed.body)
            #expect(parser.parse(), "the feed is well-formed XML: \(String(describing: parser.parserError))")
            #expect(feed.bodyText.components(separatedBy: "<entry>").count == 3)
            #expect(feed.bodyText.contains("Major Outage of login in eu-central, us-east (resolved)"))
            #expect(Self.leaks(feed.bodyText).isEmpty, "the feed shows \(Self.leaks(feed.bodyText))")
            #expect(feed.bodyText.contains("<author><name>"), "RFC 4287 §4.1.1: the feed names its author")
            // The same as RSS 2.0, which Statuspage also serves and aggregators poll (integrations review #6).
            let rss = try await get(collector, "/history.rss", token: TestTokens.read)
            #expect(rss.headers.value(for: "Content-Type")?.hasPrefix("application/rss+xml") == true)
            let rssParser = XMLParser(data: rss.body)
            #expect(rssParser.parse(), "the RSS feed is well-formed XML: \(String(describing: rssParser.parserError))")
            #expect(rss.bodyText.components(separatedBy: "<item>").count == 3)
            #expect(rss.bodyText.contains("Major Outage of login in eu-central, us-east (resolved)"))
            #expect(Self.leaks(rss.bodyText).isEmpty, "the RSS feed shows \(Self.leaks(rss.bodyText))")
            let pubDate = try #require(rss.bodyText.split(separator: "<pubDate>").dropFirst().first?.split(separator: "<").first)
            #expect(pubDate.wholeMatch(of: /[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT/) != nil, "RFC 822 date: \(pubDate)")

            // Pollers fetch only what changed: an ETag, and 304 without a body for the one they hold.
            // (The HTML pages say when they were rendered, so theirs changes with every request.)
            for path in ["/history.atom", "/api/v2/summary.json", "/api/v2/status.json"] {
                let first = try await get(collector, path, token: TestTokens.read)
                let etag = try #require(first.headers.value(for: "ETag"), "\(path) has an ETag")
                #expect(first.headers.value(for: "Cache-Control") == "private, no-cache", "behind a token: the reader's cache only")
                let again = try await CurlHTTPClient.shared.perform(
                    HTTPRequest(
                        url: collector.baseURL + path, headers: TestTokens.headers(TestTokens.read) + [HTTPHeader("If-None-Match", "W/\"x\", \(etag)")],
                        timeout: .seconds(10), caFile: collector.caFile))
                #expect(again.status == 304 && again.body.isEmpty && again.headers.value(for: "ETag") == etag, "\(path): \(again.status)")
                let stale = try await CurlHTTPClient.shared.perform(
                    HTTPRequest(
                        url: collector.baseURL + path, headers: TestTokens.headers(TestTokens.read) + [HTTPHeader("If-None-Match", "\"0\"")],
                        timeout: .seconds(10), caFile: collector.caFile))
                #expect(stale.status == 200 && !stale.body.isEmpty, "another tag gets the page: \(path) \(stale.status)")
            }
        }
    }

    /// show_probes lists a probe only when `min_component_agents` agents that are not revoked run
    /// it now: one agent's made-up name ("https://evil.example/free-credits") stayed on the public
    /// page for good, even after it was revoked (red team, fifth pass).
    @Test func publicProbesAreThoseSeveralAgentsRunNow() async throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let agents = [TestAgent(id: "eu-1", region: "eu"), TestAgent(id: "eu-2", region: "eu")]
        var config = testConfig(dir: dir, agents: agents)
        config.statusPagePublic = true
        config.statusPage.showProbes = true
        try await withCollector(config) { collector in
            for agent in agents {
                var results = [agent.result(probe: "login-check", component: "login")]
                if agent.id == "eu-1" { results.append(agent.result(probe: "https://evil.example/free-credits", component: "login")) }
                #expect(try await agent.push(agent.batch(results), to: collector).status == 200)
            }
            // Once evaluated (the page lists components with a verdict; it is made at most once a second).
            var page = ""
            try await waitUntil("the public page to list login's probes", timeout: .seconds(10)) {
                page = try await get(collector, "/", token: nil).bodyText
                return page.contains("login-check")
            }
            #expect(!page.contains("evil.example"))
            // Operators still see every stored series.
            #expect(try await get(collector, "/internal").bodyText.contains("evil.example"))
        }
        // Revoked, an agent's probes leave the public list even while its runs are recent.
        let runs = [agents[0].result(probe: "p", component: "login"), agents[1].result(probe: "p", component: "login")]
        #expect(CollectorAPI.publicProbes(runs, revoked: [], minAgents: 2) == ["login": ["p"]])
        #expect(CollectorAPI.publicProbes(runs, revoked: ["eu-2"], minAgents: 2).isEmpty)
        #expect(CollectorAPI.publicProbes(runs, revoked: ["eu-2"], minAgents: 1) == ["login": ["p"]])
    }

    /// `status_page` keys: title, logo, link and show_probes load; a script link is refused.
    @Test func statusPageSettingsLoadAndRefuseScriptLinks() throws {
        let yaml = """
            listen: { plain_http: true }
            status_page: { public: true, title: "Example <Cloud>", logo: https://example.com/logo.svg, link: /, show_probes: true }
            """
        let config = try CollectorConfig.parse(yaml: yaml, file: "c.yaml")
        #expect(config.statusPagePublic && config.statusPage.showProbes)
        #expect(config.statusPage.title == "Example <Cloud>" && config.statusPage.logo == "https://example.com/logo.svg" && config.statusPage.link == "/")
        let html = StatusPage.head(title: config.statusPage.title, refresh: 60, settings: config.statusPage)
        #expect(html.contains("<h1>Example &lt;Cloud&gt;</h1>") && html.contains("<img src=\"https://example.com/logo.svg\""))
        // show_probes: the public page lists a component's probes only when configured.
        let component = PageComponent(name: "files", status: .component(.operational), since: nil, verdict: nil, days: [:], probes: ["upload-journey"])
        var page = PageSnapshot(settings: StatusPageSettings(), now: Date(), components: [component], incidents: [], agents: [], health: [], timeline: [])
        #expect(!StatusPage.render(page, audience: .public).contains("upload-journey"))
        page.settings = config.statusPage
        #expect(StatusPage.render(page, audience: .public).contains("Probes: upload-journey"))
        for bad in ["link: \"javascript:alert(1)\"", "logo: //evil.example/x.png", "title: \"  \""] {
            #expect(throws: ConfigError.self, "\(bad)") { try CollectorConfig.parse(yaml: "listen: { plain_http: true }\nstatus_page: { \(bad) }", file: "c.yaml") }
        }
    }
}
