import ArgumentParser
import CollectorAPI
import Correlation
import Foundation
import SondeCore

#if canImport(Glibc)
import Glibc
#endif

/// `sonde`: the operator's CLI against a collector's API.
public struct SondeCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sonde",
        abstract: "Ask a Sonde collector what is up: verdicts, results, incidents, agents; re-check signatures; test alerts.",
        version: SondeBuildInfo.versionLine,
        subcommands: [Status.self, Results.self, Incidents.self, Agents.self, Verify.self, Alert.self])

    public init() {}
}

/// Options every subcommand shares.
struct GlobalOptions: ParsableArguments {
    @Option(name: .long, help: "The collector's base URL (default $SONDE_COLLECTOR or http://127.0.0.1:18300).")
    var collector: String?

    @Option(name: .long, help: "API token (a read or admin token from the collector's `tokens`); prefer --token-file or $SONDE_TOKEN, a flag shows in `ps`.")
    var token: String?

    @Option(name: .long, help: "A file holding the API token (first line; keep it 0600).")
    var tokenFile: String?

    @Option(name: .long, help: "PEM file of the CA that signed the collector's certificate (default $SONDE_CA_FILE, else the system's CAs).")
    var caFile: String?

    @Option(name: .long, help: "PEM client certificate, when the collector requires mutual TLS (with --client-key).")
    var clientCert: String?

    @Option(name: .long, help: "PEM key of --client-cert.")
    var clientKey: String?

    @Flag(name: .long, help: "Print the collector's JSON instead of a table.")
    var json = false

    var collectorURL: String {
        collector ?? ProcessInfo.processInfo.environment["SONDE_COLLECTOR"].flatMap { $0.isEmpty ? nil : $0 } ?? "http://127.0.0.1:18300"
    }

    /// The token: --token, else --token-file, else $SONDE_TOKEN; nil when none is given.
    func resolvedToken() throws -> String? {
        if let token { return token }
        if let tokenFile {
            let text: String
            do { text = try String(contentsOfFile: tokenFile, encoding: .utf8) } catch {
                throw CLIError("--token-file: cannot read \(tokenFile): it \(unreadableFileReason(tokenFile))")
            }
            let line = text.split(whereSeparator: \.isNewline).first.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
            guard !line.isEmpty else { throw CLIError("--token-file: \(tokenFile) is empty; put the token on its first line") }
            // Said, not refused: Kubernetes mounts secrets 0644 by default (red team, 32nd session).
            var info = stat()
            if stat(tokenFile, &info) == 0, info.st_mode & 0o044 != 0 {
                FileHandle.standardError.write(Data(
                    "sonde: warning: --token-file \(tokenFile) can be read by other users (mode \(String(info.st_mode & 0o777, radix: 8))): `chmod 600 \(tokenFile)`\n".utf8))
            }
            return line
        }
        return ProcessInfo.processInfo.environment["SONDE_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
    }

    var client: CollectorClient {
        get throws {
            CollectorClient(
                baseURL: collectorURL, token: try resolvedToken(),
                caFile: caFile ?? ProcessInfo.processInfo.environment["SONDE_CA_FILE"].flatMap { $0.isEmpty ? nil : $0 },
                clientCertificate: clientCert.flatMap { cert in clientKey.map { (cert, $0) } })
        }
    }

    func validate() throws {
        guard collectorURL.hasPrefix("http://") || collectorURL.hasPrefix("https://") else {
            throw ValidationError("--collector: expected an http:// or https:// URL, got \"\(collectorURL)\"")
        }
        if token != nil && tokenFile != nil { throw ValidationError("--token and --token-file: give one of them") }
        if (clientCert == nil) != (clientKey == nil) { throw ValidationError("--client-cert and --client-key: give both or neither") }
    }
}

/// Runs a command body, turning CLIError into a message on stderr and exit status 2.
func reportingErrors(_ body: () async throws -> Void) async throws {
    do { try await body() } catch let error as CLIError {
        FileHandle.standardError.write(Data("sonde: \(shown(error.description, keepLines: true))\n".utf8))
        throw ExitCode(2)
    }
}

func printJSON(_ data: Data) {
    // Re-indent for people; keep the collector's bytes if it is not JSON. Either way made safe
    // for a terminal: a body that is not JSON can hold escape sequences, and JSON strings keep
    // bidi controls raw.
    if let object = try? JSONSerialization.jsonObject(with: data),
        let pretty = try? JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes])
    {
        print(shown(String(decoding: pretty, as: UTF8.self), keepLines: true))
    } else {
        print(shown(String(decoding: data, as: UTF8.self), keepLines: true))
    }
}

// MARK: - Output helpers

/// ANSI colours, only when stdout is a terminal (and NO_COLOR is unset).
enum Colour {
    static let enabled = isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil

    /// Only for Sonde's own words: anything from the collector goes through `shown` first.
    static func paint(_ text: String, _ code: String) -> String { enabled ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }

    static func status(_ status: ComponentStatus) -> String { paint(status.rawValue, code(status)) }

    static func code(_ status: ComponentStatus) -> String {
            switch status {
            case .operational: "32"
            case .degradedPerformance: "33"
            case .partialOutage: "38;5;208"
            case .majorOutage: "31"
            case .underMaintenance: "34"
            case .unknown: "90"
            }
    }

    static func agentState(_ state: String) -> String {
        switch state {
        case "ok": "32"
        case "local_fault": "38;5;208"
        case "silent": "33"
        default: "90"
        }
    }
}

/// What every printer writes for a value that came from the collector (names, ids, messages an
/// agent or a target supplied): control characters shown as `cat -v` does (`TerminalText`), so
/// no escape sequence in the data reaches the terminal. `keepLines`: line feed and tab pass (a
/// message printed on lines of its own).
func shown(_ text: String, keepLines: Bool = false) -> String { TerminalText.visible(text, keepLines: keepLines) }

/// One table cell: the collector's text, and a colour for Sonde's own words (painted after
/// the text is made safe, so its escapes are the only ones printed).
struct Cell: ExpressibleByStringLiteral, ExpressibleByStringInterpolation {
    var text: String
    var colour: String?

    init(_ text: String, colour: String? = nil) {
        self.text = text
        self.colour = colour
    }

    init(stringLiteral value: String) { self.init(value) }
    init(stringInterpolation: DefaultStringInterpolation) { self.init(String(stringInterpolation: stringInterpolation)) }
    static func status(_ status: ComponentStatus) -> Cell { Cell(status.rawValue, colour: Colour.code(status)) }
}

/// A plain text table; every cell goes through `shown`, widths ignore the colours.
struct Table {
    var header: [String]
    var rows: [[Cell]] = []

    static func visibleWidth(_ text: String) -> Int {
        var width = 0
        var inEscape = false
        for c in text.unicodeScalars {
            if c == "\u{1B}" { inEscape = true; continue }
            if inEscape { if c == "m" { inEscape = false }; continue }
            width += 1
        }
        return width
    }

    func render() -> String {
        let all = [header] + rows.map { row in
            row.map { cell in
                let text = shown(cell.text)
                return cell.colour.map { Colour.paint(text, $0) } ?? text
            }
        }
        let columns = header.count
        let widths = (0..<columns).map { c in all.map { Self.visibleWidth($0.count > c ? $0[c] : "") }.max() ?? 0 }
        return all.map { row in
            (0..<columns).map { c in
                let cell = row.count > c ? row[c] : ""
                return c == columns - 1 ? cell : cell + String(repeating: " ", count: widths[c] - Self.visibleWidth(cell))
            }.joined(separator: "  ")
        }.joined(separator: "\n")
    }
}

func time(_ date: Date?) -> String { date.map(RFC3339.string(from:)) ?? "never" }

/// An incident and its timeline, each entry with its author.
func printIncident(_ incident: Incident) {
    print(
        "\(shown(incident.id))  \(shown(incident.component))  \(Colour.status(incident.severity))  \(incident.status.rawValue)  scope=\(incident.scope.rawValue)  regions=\(shown(incident.regions.joined(separator: ",")))"
    )
    if let title = incident.title { print("  \(shown(title))") }
    print(
        "  opened \(time(incident.openedAt)) by \(shown(incident.openedBy))"
            + (incident.resolvedAt.map { "  resolved \(time($0))" + (incident.resolvedBy.map { " by \(shown($0))" } ?? "") } ?? ""))
    if let conflict = incident.conflict { print("  " + Colour.paint("CONFLICT", "33") + " \(shown(conflict, keepLines: true))") }
    for update in incident.updates {
        print("  \(time(update.time))  \(update.status.rawValue) (\(shown(update.author))): \(shown(update.message, keepLines: true))")
    }
}

// MARK: - Commands

extension SondeCommand {
    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Component × region verdicts, open incidents and agent health.",
            discussion: """
                Exit status, from the worst verdict of a known component (declared in the collector's
                `components:`, or reported by min_component_agents agents) or of an incident a person
                opened and has not moved on from investigating/identified, so scripts and cron checks
                can act on it:
                  0  every component operational
                  1  degraded_performance, under_maintenance, or unknown (no agent reports it, also a
                     declared component nothing has reported yet), or a region of a known
                     component is unwatched (its agents stopped reporting)
                  3  partial_outage
                  4  major_outage
                  2  no answer: collector unreachable, token refused, or a reply that is not a status
                --exit-zero exits 0 whatever the verdicts (for dashboards); errors still exit 2.
                """)
        @OptionGroup var options: GlobalOptions
        @Flag(help: "Exit 0 whatever the verdicts (errors still exit 2).") var exitZero = false

        /// The documented exit status for a set of component verdicts.
        static func exitStatus(_ statuses: [ComponentStatus]) -> Int32 {
            if statuses.contains(.majorOutage) { return 4 }
            if statuses.contains(.partialOutage) { return 3 }
            if statuses.contains(where: { $0 != .operational }) { return 1 }
            return 0
        }

        func run() async throws {
            var verdicts: [ComponentStatus] = []
            try await reportingErrors {
                let client = try options.client
                let body = try await client.raw("/v1/status")
                let status = try client.decode(StatusResponse.self, body)
                // Known components only (a name one agent made up opens nothing and is not the
                // platform's state: found by the CLI walk-through, F4); a region nothing watches
                // any more counts as unknown: exit 1, not 0.
                let known = status.components.filter(\.known)
                verdicts = known.map(\.status) + known.filter { !$0.unwatchedRegions.isEmpty }.map { _ in .unknown }
                // A person's open incident sets its component's status on the page until they move
                // it on (as on Statuspage), so it sets the exit status too.
                verdicts += status.openIncidents.filter(\.declaresImpact).map(\.severity)
                if options.json { return printJSON(body) }
                print("Overall: \(Colour.status(status.overall))")
                let regions = Array(Set(status.components.flatMap { Array($0.regions.keys) + $0.unwatchedRegions })).sorted()
                var table = Table(header: ["COMPONENT", "STATUS", "SCOPE"] + regions.map { shown($0.uppercased()) } + ["EVIDENCE"])
                for verdict in status.components {
                    let e = verdict.evidence
                    var evidence: [String] = []
                    if !e.affectedBy.isEmpty { evidence.append("affected by \(e.affectedBy.joined(separator: ","))") }
                    if e.failingAgentCount > 0 { evidence.append("\(e.failingAgentCount)/\(e.reportingAgents) failing") }
                    if !e.errorCodes.isEmpty { evidence.append(e.errorCodes.sorted { $0.key < $1.key }.map { "\($0.key)×\($0.value)" }.joined(separator: ",")) }
                    if let p95 = e.latencyP95Ms { evidence.append("p95 \(Int(p95))ms") }
                    if !verdict.known { evidence.insert("not a known component: opens no incident", at: 0) }
                    if e.singleAgent { evidence.append("single agent") }
                    table.rows.append(
                        [Cell(verdict.component), .status(verdict.status), Cell(verdict.scope?.rawValue ?? "-")]
                            + regions.map { verdict.regions[$0].map(Cell.status) ?? (verdict.unwatchedRegions.contains($0) ? "no data" : "-") }
                            + [Cell(evidence.joined(separator: " "))])
                }
                print(status.components.isEmpty ? "No component verdicts yet (no results received)." : table.render())
                print("")
                if let why = status.openIncidentsUnavailable {
                    print("Open incidents: unknown (\(shown(why)))")
                } else if status.openIncidents.isEmpty {
                    print("Open incidents: none")
                } else {
                    print("Open incidents:")
                    for incident in status.openIncidents {
                        print(
                            "  \(shown(incident.id))  \(shown(incident.component))  \(Colour.status(incident.severity))  \(incident.status.rawValue)  scope=\(incident.scope.rawValue)  regions=\(shown(incident.regions.joined(separator: ",")))  since \(time(incident.openedAt))"
                        )
                        if let latest = incident.updates.last { print("    \(shown(latest.author)): \(shown(latest.message, keepLines: true))") }
                    }
                }
                // A person's resolution standing against a fault still measured.
                for verdict in status.components {
                    if let conflict = verdict.conflict { print(Colour.paint("CONFLICT", "33") + " \(shown(verdict.component)): \(shown(conflict, keepLines: true))") }
                }
                let a = status.agents
                print("Agents: \(a.total) total, \(a.ok) ok, \(a.localFault) local_fault, \(a.silent) silent, \(a.revoked) revoked")
                // By name: "is it my host?" answered without another command (F6).
                func listed(_ names: [String], of count: Int) -> String {
                    names.map { shown($0) }.joined(separator: ", ") + (count > names.count ? ", … (\(count - names.count) more: sonde agents)" : "")
                }
                if !a.localFaultAgents.isEmpty { print("  local_fault (their own host or network): \(listed(a.localFaultAgents, of: a.localFault))") }
                if !a.silentAgents.isEmpty { print("  silent (no results lately): \(listed(a.silentAgents, of: a.silent))") }
            }
            let code = Self.exitStatus(verdicts)
            if code != 0 && !exitZero { throw ExitCode(code) }
        }
    }

    struct Results: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Stored probe results, newest first.")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Only this probe.") var probe: String?
        @Option(help: "Only this component.") var component: String?
        @Option(help: "Only this agent.") var agent: String?
        @Option(help: "Only this region.") var region: String?
        @Option(help: "Only results started within this long (10m, 2h) or since an RFC 3339 time.") var since: String?
        @Option(help: "ok, degraded or failed.") var outcome: String?
        @Option(help: "At most this many (1…1000).") var limit: Int = 50

        func validate() throws {
            guard (1...1000).contains(limit) else { throw ValidationError("--limit: expected 1…1000") }
            if let outcome, Outcome(rawValue: outcome) == nil { throw ValidationError("--outcome: expected ok, degraded or failed") }
        }

        func run() async throws {
            try await reportingErrors {
                let query: [(String, String?)] = [
                    ("probe", probe), ("component", component), ("agent", agent), ("region", region), ("since", since), ("outcome", outcome),
                    ("limit", "\(limit)"),
                ]
                if options.json { return printJSON(try await options.client.raw("/v1/results", query: query)) }
                let page = try await options.client.get(ResultsResponse.self, "/v1/results", query: query)
                var table = Table(header: ["STARTED", "PROBE", "COMPONENT", "AGENT", "REGION", "OUTCOME", "MS", "ERROR"])
                for r in page.results {
                    let outcome =
                        switch r.outcome {
                        case .ok: Cell("ok", colour: "32")
                        case .degraded: Cell("degraded", colour: "33")
                        case .failed: Cell("failed", colour: "31")
                        }
                    let error = r.error.map { "\($0.kind.rawValue)\($0.code.map { "/" + $0 } ?? "") at \($0.step): \($0.message)" }
                        ?? r.degradedReason.map { "slow: \($0)" } ?? ""
                    table.rows.append([Cell(time(r.startedAt)), Cell(r.probe), Cell(r.component), Cell(r.agent), Cell(r.region), outcome, "\(Int(r.durationMs))", Cell(error)])
                }
                print(page.results.isEmpty ? "No results match." : table.render())
                if page.nextCursor != nil { print("(more results: raise --limit or narrow --since)") }
            }
        }
    }

    struct Incidents: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Incidents: list them (the default), add a person's update, or open one by hand.",
            subcommands: [List.self, Update.self, Create.self], defaultSubcommand: List.self)

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Open incidents (--all: resolved ones too), with their timelines.")
            @OptionGroup var options: GlobalOptions
            @Flag(help: "Include resolved incidents.") var all = false
            @Option(help: "At most this many (1…1000).") var limit: Int = 50

            func run() async throws {
                try await reportingErrors {
                    let query: [(String, String?)] = [("status", all ? "all" : "open"), ("limit", "\(limit)")]
                    if options.json { return printJSON(try await options.client.raw("/v1/incidents", query: query)) }
                    let body = try await options.client.get(IncidentsResponse.self, "/v1/incidents", query: query)
                    guard !body.incidents.isEmpty else { return print(all ? "No incidents." : "No open incidents.") }
                    for incident in body.incidents { printIncident(incident) }
                }
            }
        }

        struct Update: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Add a person's update to an open incident (admin token); the token's name is its author.",
                discussion:
                    "--status moves the incident: identified (cause known, being fixed), monitoring (fix in place, watching), "
                    + "resolved (closed for good: Sonde opens a new incident if the fault returns after the component was healthy again), "
                    + "or investigating. Without --status the message is added and the status stays. "
                    + "Webhooks get incident.updated (incident.resolved for resolved).")
            @OptionGroup var options: GlobalOptions
            @Argument(help: "The incident id (first column of `sonde incidents`).") var id: String
            @Option(help: "investigating, identified, monitoring or resolved (default: unchanged).") var status: String?
            @Option(help: "What people should read (at most 2,000 characters).") var message: String

            func validate() throws {
                if let status, IncidentStatus(rawValue: status) == nil {
                    throw ValidationError("--status: expected investigating, identified, monitoring or resolved, got \"\(status)\"")
                }
                if message.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty { throw ValidationError("--message: must not be empty") }
            }

            func run() async throws {
                try await reportingErrors {
                    let request = try SondeJSON.encode(IncidentUpdateRequest(status: status, message: message))
                    let data = try await options.client.raw(
                        "/v1/incidents/\(CollectorClient.escape(id))/updates", method: "POST", json: request)
                    if options.json { return printJSON(data) }
                    printIncident(try options.client.decode(Incident.self, data))
                }
            }
        }

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Open an incident by hand (admin token), e.g. for a problem no probe covers.",
                discussion:
                    "One incident per --component. Sonde's later measurements of that component join it; Sonde never moves "
                    + "an incident it has not measured (people do, with `sonde incidents update`).")
            @OptionGroup var options: GlobalOptions
            @Option(name: .long, help: "The component (repeat for several; one incident each).") var component: [String] = []
            @Option(help: "A short title (at most 200 characters).") var title: String?
            @Option(help: "The first update people read (at most 2,000 characters).") var message: String
            @Option(help: "investigating (default), identified or monitoring.") var status: String = "investigating"
            @Option(help: "degraded_performance, partial_outage (default) or major_outage.") var severity: String = "partial_outage"
            @Option(help: "An affected region (repeat; default: platform-wide).") var region: [String] = []

            func validate() throws {
                if component.isEmpty { throw ValidationError("--component: give at least one") }
                if ![IncidentStatus.investigating, .identified, .monitoring].contains(where: { $0.rawValue == status }) {
                    throw ValidationError("--status: expected investigating, identified or monitoring, got \"\(status)\"")
                }
                if ![ComponentStatus.degradedPerformance, .partialOutage, .majorOutage].contains(where: { $0.rawValue == severity }) {
                    throw ValidationError("--severity: expected degraded_performance, partial_outage or major_outage, got \"\(severity)\"")
                }
            }

            func run() async throws {
                try await reportingErrors {
                    let request = try SondeJSON.encode(
                        IncidentCreateRequest(
                            components: component, title: title, message: message, status: status, severity: severity,
                            regions: region.isEmpty ? nil : region))
                    let data = try await options.client.raw("/v1/incidents", method: "POST", json: request)
                    if options.json { return printJSON(data) }
                    for incident in try options.client.decode(IncidentsResponse.self, data).incidents { printIncident(incident) }
                }
            }
        }
    }

    struct Agents: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Enrolled agents and their health.")
        @OptionGroup var options: GlobalOptions

        func run() async throws {
            try await reportingErrors {
                if options.json { return printJSON(try await options.client.raw("/v1/agents")) }
                let body = try await options.client.get(AgentsResponse.self, "/v1/agents")
                var table = Table(header: ["AGENT", "REGION", "HEALTH", "LAST SEEN", "WHY"])
                for agent in body.agents {
                    let state = agent.revoked ? "revoked" : agent.state?.rawValue ?? "unknown"
                    table.rows.append([Cell(agent.id), Cell(agent.region), Cell(state, colour: Colour.agentState(state)), Cell(time(agent.lastSeen)), Cell(agent.reason ?? "")])
                }
                print(body.agents.isEmpty ? "No agents enrolled." : table.render())
            }
        }
    }

    struct Verify: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Re-check every stored batch's Ed25519 signature locally against the agents' public keys.",
            discussion: "Exits 1 when any stored batch does not verify (tampered storage, or a key changed since).")
        @OptionGroup var options: GlobalOptions
        @Option(help: "Only batches received within this long (10m, 2h) or since an RFC 3339 time.") var since: String?

        struct Report: Codable {
            var batches = 0
            var verified = 0
            var failed = 0
            var unknownAgent = 0
            var failures: [String] = []
            enum CodingKeys: String, CodingKey {
                case batches, verified, failed
                case unknownAgent = "unknown_agent"
                case failures
            }
        }

        func run() async throws {
            var report = Report()
            try await reportingErrors {
                let client = try options.client
                let agents = try await client.get(AgentsResponse.self, "/v1/agents").agents
                let keys = Dictionary(agents.compactMap { agent in (try? AgentPublicKey(base64: agent.publicKey)).map { (agent.id, $0) } }, uniquingKeysWith: { $1 })
                var cursor: String?
                for _ in 0..<1_000_000 {
                    let page = try await client.get(BatchesResponse.self, "/v1/batches", query: [("since", since), ("limit", "1000"), ("cursor", cursor)])
                    for batch in page.batches {
                        report.batches += 1
                        guard let key = keys[batch.agent] else {
                            report.unknownAgent += 1
                            report.failures.append("\(batch.batchID): agent \(batch.agent) has no enrolled key")
                            continue
                        }
                        guard let body = Data(base64Encoded: batch.body), key.verify(signatureHeader: batch.signature, body: body) else {
                            report.failed += 1
                            report.failures.append("\(batch.batchID): signature of agent \(batch.agent) does not verify (received \(time(batch.receivedAt)))")
                            continue
                        }
                        // The signed body must also name the agent it is stored under.
                        if let decoded = try? SondeJSON.decode(PushBatch.self, from: body), decoded.agent != batch.agent || decoded.batchID != batch.batchID {
                            report.failed += 1
                            report.failures.append("\(batch.batchID): stored under agent \(batch.agent) but the signed body says \(decoded.agent)/\(decoded.batchID)")
                            continue
                        }
                        report.verified += 1
                    }
                    cursor = page.nextCursor
                    if cursor == nil { break }
                }
            }
            if options.json {
                printJSON((try? SondeJSON.encode(report)) ?? Data())
            } else {
                for failure in report.failures { print(Colour.paint("MISMATCH", "31") + " " + shown(failure)) }
                print("\(report.batches) batches checked: \(report.verified) verified, \(report.failed) failed, \(report.unknownAgent) from unknown agents")
            }
            if report.failed + report.unknownAgent > 0 { throw ExitCode(1) }
        }
    }

    struct Alert: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Alert webhooks.", subcommands: [Test.self, DeadLetters.self, Redrive.self])

        struct DeadLetters: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                commandName: "dead-letters", abstract: "Webhook deliveries given up on (refused with a 4xx, or out of attempts or time), newest first.")
            @OptionGroup var options: GlobalOptions
            @Option(help: "At most this many (1…1000).") var limit: Int = 100

            func run() async throws {
                try await reportingErrors {
                    let query: [(String, String?)] = [("limit", "\(limit)")]
                    if options.json { return printJSON(try await options.client.raw("/v1/alerts/dead-letters", query: query)) }
                    let body = try await options.client.get(DeadLettersResponse.self, "/v1/alerts/dead-letters", query: query)
                    guard !body.deadLetters.isEmpty else { return print("No dead letters.") }
                    var table = Table(header: ["EVENT", "TYPE", "TARGET", "ATTEMPTS", "DEAD SINCE", "LAST ERROR"])
                    for letter in body.deadLetters {
                        table.rows.append([Cell(letter.eventID), Cell(letter.eventType), Cell(letter.target), "\(letter.attempts)", Cell(time(letter.deadAt)), Cell(letter.lastError)])
                    }
                    print(table.render())
                    print("Re-send one with: sonde alert redrive EVENT [--target NAME]")
                }
            }
        }

        struct Redrive: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Put a dead-lettered event back in its target queues (admin token).")
            @OptionGroup var options: GlobalOptions
            @Argument(help: "The event id (first column of `sonde alert dead-letters`).") var event: String
            @Option(help: "Only this target (default: every target it is dead for).") var target: String?

            func run() async throws {
                try await reportingErrors {
                    let path = "/v1/alerts/dead-letters/\(CollectorClient.escape(event))/redrive"
                    let data = try await options.client.raw(path, query: [("target", target)], method: "POST")
                    if options.json { return printJSON(data) }
                    let body = try SondeJSON.decode(RedriveResponse.self, from: data)
                    print("re-queued event \(shown(body.eventID)) for \(shown(body.targets.joined(separator: ", ")))")
                }
            }
        }

        struct Test: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Queue an alert.test event to every webhook target.")
            @OptionGroup var options: GlobalOptions

            func run() async throws {
                try await reportingErrors {
                    let data = try await options.client.raw("/v1/alerts/test", method: "POST")
                    if options.json { return printJSON(data) }
                    let body = try SondeJSON.decode(AlertTestResponse.self, from: data)
                    if body.targets.isEmpty {
                        print("queued test event \(shown(body.eventID)), but no webhook targets are configured")
                    } else {
                        print("queued test event \(shown(body.eventID)) for \(shown(body.targets.joined(separator: ", ")))")
                    }
                }
            }
        }
    }
}
