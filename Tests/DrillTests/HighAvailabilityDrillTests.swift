import CollectorAPI
import CollectorStore
import CurlHTTP
import Foundation
import Logging
import SondeCore
import SondeScenarios
import SondeTestSupport
import Synchronization
import Testing

/// Several real `sonde-collector serve` processes on one real PostgreSQL, behind a real haproxy
/// (health-checked on /healthz); each collector reaches PostgreSQL through its own
/// `sonde-sim relay`, so one can be cut off from the database. Agents push through haproxy.
final class HACluster: Sendable {
    /// An enrolled agent: id, region, public key (base64).
    typealias Enrolment = (id: String, region: String, publicKey: String)

    struct Member: Sendable {
        let name: String
        let child: ChildProcess
        let port: Int
        /// Its TCP path to PostgreSQL, and the port it listens on.
        var relay: ChildProcess
        let relayPort: Int
        var baseURL: String { "http://127.0.0.1:\(port)" }
    }

    let folder: TemporaryDirectory
    let databaseURL: String
    let databasePort: Int
    let members: Mutex<[Member]>
    let haproxy: ChildProcess
    let haproxyPort: Int
    let receiver: LoopbackHTTPServer
    /// Webhook arrivals: event id, event type, body, when it arrived.
    let arrivals = Shared<[(id: String, type: String, body: Data, at: Date)]>([])
    /// Collectors killed and replaced, kept for their logs.
    let retired = Shared<[(name: String, child: ChildProcess)]>([])
    let client = CurlHTTPClient(threads: 8)
    var frontURL: String { "http://127.0.0.1:\(haproxyPort)" }

    /// A fixed port per collector: one restarted after a kill is where haproxy expects it.
    static func configYAML(name: String, port: Int, databaseURL: String, agents: [Enrolment], receiver: String) -> String {
        var yaml = [
            "listen: { host: 127.0.0.1, port: \(port), plain_http: true }",
            "database: \"\(databaseURL)\"",
            "collector_name: \(name)",
            "evaluation_interval: 200ms",
            "webhooks: [{ name: drill, url: \"\(receiver)/hook\", secret: drill-secret }]",
            // No outbox polling to speak of: a new leader's dispatcher must be woken by its take-over.
            "webhook_retry: { base: 100ms, cap: 1s, timeout: 2s, poll: 1h }",
        ] + DrillTokens.yaml
        yaml.append("agents:")
        for agent in agents { yaml.append("  - { id: \(agent.id), region: \(agent.region), public_key: \"\(agent.publicKey)\" }") }
        return yaml.joined(separator: "\n") + "\n"
    }

    /// Starts `count` collectors at the same moment on an empty database, then haproxy.
    init(collectors count: Int, agents: [Enrolment]) async throws {
        let pg = try await PostgresServer.shared()
        folder = try TemporaryDirectory("sonde-ha")
        databaseURL = try pg.createDatabase()
        databasePort = pg.port
        let arrivals = self.arrivals
        receiver = try LoopbackHTTPServer { request in
            arrivals.withLock { $0.append((request.header("Sonde-Event-Id") ?? "?", request.header("Sonde-Event-Type") ?? "?", request.body, Date())) }
            return .json(200, "{}")
        }
        var relays: [(ChildProcess, Int)] = []
        for _ in 0..<count {
            let relay = try ChildProcess("sonde-sim", ["relay", "--listen", "127.0.0.1:0", "--to", "127.0.0.1:\(pg.port)"])
            let line = try await relay.waitForLine { $0.hasPrefix("relay ") }
            guard let port = Int(line.split(separator: ":").last ?? "") else { throw TestFailure("no relay port in \(line)") }
            relays.append((relay, port))
        }
        var children: [(String, ChildProcess)] = []
        for (index, relay) in relays.enumerated() {
            let name = "c\(index + 1)"
            let url = pg.url(database: String(databaseURL.split(separator: "/").last!.split(separator: "?")[0]), port: relay.1) + "&connect_timeout=2"
            let path = folder.file("\(name).yaml")
            try Self.configYAML(name: name, port: try freeLoopbackPort(), databaseURL: url, agents: agents, receiver: receiver.baseURL)
                .write(toFile: path, atomically: true, encoding: .utf8)
            children.append((name, try ChildProcess("sonde-collector", ["serve", "--config", path, "--log-level", "info"])))
        }
        var started: [Member] = []
        for ((name, child), relay) in zip(children, relays) {
            let line = try await child.waitForLine(timeout: .seconds(90), stderr: true) { $0.contains("Collector listening") }
            guard let match = line.firstMatch(of: /http\.port=(\d+)/), let port = Int(match.1) else { throw TestFailure("no port in \(line)") }
            started.append(Member(name: name, child: child, port: port, relay: relay.0, relayPort: relay.1))
        }
        members = Mutex(started)
        haproxyPort = try freeLoopbackPort()
        let servers = started.map { "  server \($0.name) 127.0.0.1:\($0.port) check" }.joined(separator: "\n")
        try """
            global
              maxconn 2000
            defaults
              mode http
              timeout connect 1s
              timeout client 30s
              timeout server 30s
              retries 3
              option redispatch
            frontend sonde
              bind 127.0.0.1:\(haproxyPort)
              default_backend collectors
            backend collectors
              balance roundrobin
              option httpchk GET /healthz
              http-check expect status 200
              default-server inter 250ms fall 2 rise 2
            \(servers)

            """.write(toFile: folder.file("haproxy.cfg"), atomically: true, encoding: .utf8)
        guard FileManager.default.isExecutableFile(atPath: "/usr/sbin/haproxy") else {
            throw TestFailure("haproxy is not installed (/usr/sbin/haproxy): run scripts/install-deps.sh, or apt-get install haproxy")
        }
        haproxy = try ChildProcess("/usr/sbin/haproxy", ["-f", folder.file("haproxy.cfg"), "-db"])
        let client = self.client
        let front = "http://127.0.0.1:\(haproxyPort)"
        try await waitUntil("haproxy to answer /healthz", timeout: .seconds(30), every: .milliseconds(100)) {
            if !self.haproxy.isRunning { throw TestFailure("haproxy exited:\n\(self.haproxy.allOutput)") }
            return (try? await client.perform(HTTPRequest(url: front + "/healthz", timeout: .seconds(2))))?.status == 200
        }
    }

    var all: [Member] { members.withLock { $0 } }

    /// Stops every collector's relay: connections to PostgreSQL are refused, as when it is down.
    func stopRelays() async {
        for member in all { await member.relay.stop() }
    }

    /// Starts the relays again on their ports.
    func startRelays() async throws {
        for member in all {
            let relay = try ChildProcess("sonde-sim", ["relay", "--listen", "127.0.0.1:\(member.relayPort)", "--to", "127.0.0.1:\(databasePort)"])
            _ = try await relay.waitForLine { $0.hasPrefix("relay ") }
            members.withLock { list in
                if let index = list.firstIndex(where: { $0.name == member.name }) { list[index].relay = relay }
            }
        }
    }

    func status(_ member: Member) async -> StatusResponse? {
        let request = HTTPRequest(
            // Longer than the collectors' connect_timeout (2 s): one cut off from PostgreSQL answers
            // with its engine's view once its read of the stored incidents gives up.
            url: member.baseURL + "/v1/status", headers: [HTTPHeader("Authorization", "Bearer \(DrillTokens.read)")], timeout: .seconds(5))
        guard let response = try? await client.perform(request), response.status == 200 else { return nil }
        return try? SondeJSON.decode(StatusResponse.self, from: response.body)
    }

    /// The members that say they lead right now.
    func leaders() async -> [Member] {
        var leaders: [Member] = []
        for member in all where member.child.isRunning {
            if let status = await status(member), status.cluster?.role == "leader" { leaders.append(member) }
        }
        return leaders
    }

    func waitForOneLeader(excluding: Set<String> = [], timeout: Duration = .seconds(30)) async throws -> Member {
        var found: Member?
        try await waitUntil("exactly one leader", timeout: timeout, every: .milliseconds(50)) {
            let leaders = await self.leaders().filter { !excluding.contains($0.name) }
            found = leaders.count == 1 ? leaders[0] : nil
            return found != nil
        }
        return found!
    }

    func stop() async {
        await haproxy.stop()
        for member in all {
            await member.child.stop()
            member.relay.signal(SIGCONT)
            await member.relay.stop()
        }
        receiver.stop()
        folder.remove()
    }
}

/// Pushes signed batches of healthy results for `components` through haproxy until stopped,
/// recording every acknowledged one: ingest load beside the real agents.
final class PushLoad: Sendable {
    let acked = Shared<[String: Int]>([:])
    let stopped = Shared(false)
    let ackLatencies = Shared<[Double]>([])
    private let task: Mutex<Task<Void, Never>?> = Mutex(nil)

    init(agents: [DrillAgent], components: [String], url: String, client: CurlHTTPClient, batch: Int = 20) {
        let (acked, stopped, latencies) = (acked, stopped, ackLatencies)
        task.withLock {
            $0 = Task {
                await withTaskGroup(of: Void.self) { group in
                    for agent in agents {
                        group.addTask {
                            let clock = ContinuousClock()
                            while !stopped.value {
                                guard let (id, body, signature) = try? agent.signedBatch(batch, components: components) else { continue }
                                let start = clock.now
                                guard let response = try? await client.perform(agent.pushRequest(baseURL: url, body: body, signature: signature, timeout: .seconds(10))),
                                    response.status == 200, let ack = try? SondeJSON.decode(PushAck.self, from: response.body), ack.accepted == batch
                                else {
                                    try? await Task.sleep(for: .milliseconds(50))
                                    continue
                                }
                                let elapsed = start.duration(to: clock.now)
                                latencies.withLock { $0.append(Double(elapsed.components.attoseconds) / 1e15 + Double(elapsed.components.seconds) * 1000) }
                                acked.withLock { $0[id] = batch }
                                try? await Task.sleep(for: .milliseconds(100))
                            }
                        }
                    }
                }
            }
        }
    }

    func stop() async {
        stopped.withLock { $0 = true }
        await task.withLock { $0 }?.value
    }
}

/// Real `sonde-agent run` processes probing a real `sonde-sim` (one region per id prefix),
/// pushing through haproxy; what they logged as acknowledged is what the collectors must hold.
final class SimAgents: Sendable {
    let ids: [String]
    let folder: TemporaryDirectory
    let keys: [String: String]
    let platform: SimulatedPlatform
    private let processes = Mutex<[ChildProcess]>([])

    init(ids: [String]) async throws {
        folder = try TemporaryDirectory("sonde-ha-agents")
        keys = try await SimAgentSetup.keygen(ids, in: folder)
        platform = try await SimulatedPlatform(regions: Set(ids.map(SimAgentSetup.region(of:))).sorted())
        self.ids = ids
    }

    var enrolments: [HACluster.Enrolment] { ids.map { ($0, SimAgentSetup.region(of: $0), keys[$0]!) } }

    func start(collectorURL: String, interval: String) throws {
        for id in ids {
            try SimAgentSetup.writeConfig(
                id: id, dir: folder, collectorURL: collectorURL, caFile: nil, baseURL: platform.regionURLs[SimAgentSetup.region(of: id)]!, interval: interval)
            // Debug: each acknowledged batch is logged (`batch delivered`, with its id and size).
            let child = try ChildProcess("sonde-agent", ["run", "--config", folder.file("\(id).yaml"), "--log-level", "debug"], environment: SimAgentSetup.environment)
            processes.withLock { $0.append(child) }
        }
    }

    /// Batch id → results, for every batch an agent logged as acknowledged.
    var acknowledged: [String: Int] {
        var acked: [String: Int] = [:]
        for child in processes.withLock({ $0 }) {
            for line in child.stderrLines where line.hasSuffix("batch delivered") {
                guard let id = line.firstMatch(of: /batch\.part=(\S+)/)?.1, let count = line.firstMatch(of: /batch\.results=(\d+)/).flatMap({ Int($0.1) })
                else { continue }
                acked[String(id)] = count
            }
        }
        return acked
    }

    /// Stops the agents (their logs stay readable).
    func stopAgents() async {
        for child in processes.withLock({ $0 }) { await child.stop() }
    }

    func stop() async {
        await stopAgents()
        await platform.stop()
        folder.remove()
    }
}

/// What a webhook receiver saw across leader kills. A repeat of one event id is explained only
/// by the at-least-once window: its first copy arrived before a kill, from the collector that was
/// killed (which never logged it delivered), and the repeat came after. A transition is
/// re-announced when one incident (or agent) gets two consecutive events with a new id but the
/// same type, status, scope, regions and agents: a new leader that did not know it was sent.
struct WebhookAudit {
    typealias Arrival = (id: String, type: String, body: Data, at: Date)
    let arrivals: [Arrival]
    /// Each kill: the collector, when, and its log up to then.
    let kills: [(name: String, at: Date, log: String)]
    /// Every collector's log (the killed ones' too).
    let logs: [(String, String)]

    var perEvent: [String: [Arrival]] { Dictionary(grouping: arrivals, by: \.id) }
    var repeats: [String: [Arrival]] { perEvent.filter { $0.value.count > 1 } }

    /// Repeats in the at-least-once window, with how long before the kill the first copy arrived.
    var inFlightAtKill: [String: Duration] {
        var found: [String: Duration] = [:]
        for (id, copies) in repeats where copies.count == 2 {
            let (first, second) = (copies[0].at, copies[1].at)
            guard let kill = kills.first(where: { $0.at >= first && $0.at < second && $0.at.timeIntervalSince(first) < 2 }) else { continue }
            // Before the kill only the killed collector led, so it sent the first copy.
            let recordedByKilled = kill.log.split(separator: "\n").contains { $0.contains("Webhook delivered") && $0.contains("event.id=\(id) ") }
            if !recordedByKilled { found[id] = .milliseconds(Int64(kill.at.timeIntervalSince(first) * 1000)) }
        }
        return found
    }

    /// How long each delivery took from the target's 2xx to its record (the at-least-once window), ms.
    var recordingMs: [Int] {
        logs.flatMap { $0.1.split(separator: "\n") }.filter { $0.contains("Webhook delivered") }
            .compactMap { $0.firstMatch(of: /recorded_ms=(\d+)/).flatMap { Int($0.1) } }.sorted()
    }

    var unexplained: [String] {
        let explained = inFlightAtKill
        return repeats.keys.filter { explained[$0] == nil }.sorted().map { id in "\(id) ×\(repeats[id]!.count)" }
    }

    var reannounced: [String] {
        var last: [String: (id: String, key: [String])] = [:]
        var found: [String] = []
        for arrival in arrivals.sorted(by: { $0.at < $1.at }) {
            guard let object = (try? JSONSerialization.jsonObject(with: arrival.body)) as? [String: Any] else { continue }
            let subject = (object["incident"] as? [String: Any])?["id"] as? String ?? (object["agent"] as? String).map { "agent \($0)" } ?? "?"
            let incident = object["incident"] as? [String: Any]
            let codes = ((object["evidence"] as? [String: Any])?["error_codes"] as? [String: Any])?.keys.sorted() ?? []
            let key = [
                arrival.type, "\(object["status"] ?? "")", "\(incident?["severity"] ?? "")", "\(object["scope"] ?? "")", "\(object["regions"] ?? "")",
                "\(object["agents"] ?? "")", "\(codes)",
            ]
            if let previous = last[subject], previous.id != arrival.id, previous.key == key {
                found.append("\(subject): \(previous.id) then \(arrival.id) at \(RFC3339.string(from: arrival.at)) (\(key)): \(object["summary"] ?? "")")
            }
            last[subject] = (arrival.id, key)
        }
        return found
    }

    /// Each repeat's arrival times, delivery row and the log lines about it and about leadership.
    func evidence(rows: [DeliveryRecord]) -> String {
        var report = "kills: " + kills.map { "\($0.name) at \(RFC3339.string(from: $0.at))" }.joined(separator: ", ") + "\n"
        let window = inFlightAtKill
        for (id, copies) in repeats.sorted(by: { $0.key < $1.key }) {
            let verdict = window[id].map { "2xx in flight \($0) before its leader was killed" } ?? "UNEXPLAINED"
            report += "event \(id) ×\(copies.count) at \(copies.map { RFC3339.string(from: $0.at) }): \(verdict)\n"
            report += "  row: \(rows.filter { $0.event.id == id }.map { "\($0.status) attempts=\($0.attempts) error=\($0.lastError ?? "-")" })\n"
            for (name, log) in logs {
                for line in log.split(separator: "\n")
                where line.contains(id) || line.contains("Stepped down") || line.contains("Leading") || line.contains("took over") {
                    report += "  \(name): \(line)\n"
                }
            }
        }
        for line in reannounced { report += "re-announced: \(line)\n" }
        if !reannounced.isEmpty {
            for arrival in arrivals {
                let object = (try? JSONSerialization.jsonObject(with: arrival.body)) as? [String: Any]
                report += "  arrived \(RFC3339.string(from: arrival.at)) \(arrival.id) \(arrival.type): \(object?["summary"] ?? "")\n"
            }
            for (name, log) in logs {
                for line in log.split(separator: "\n") where line.contains("Alert event queued") || line.contains("Leading") || line.contains("took over") {
                    report += "  \(name): \(line)\n"
                }
            }
        }
        return report
    }
}

@Suite(.serialized) struct HighAvailabilityDrillTests {
    /// Senders of synthetic signed batches (ingest load), for components the sim does not have.
    static let loadAgents = (0..<4).map { DrillAgent(id: "load-\($0)", region: ["eu", "us"][$0 % 2]) }
    static let loadComponents = ["load-a", "load-b", "load-c", "load-d"]
    static var loadEnrolments: [HACluster.Enrolment] { loadAgents.map { ($0.id, $0.region, $0.key.publicKey.base64) } }
    /// Real agents, two per region of the sim.
    static let simAgentIDs = ["eu-1", "eu-2", "us-1", "us-2", "ap-1", "ap-2"]

    /// Three collectors started at the same moment on an empty database: one applies the
    /// migration, none fails, exactly one leads. Six real agents probe a real sim through haproxy
    /// (plus synthetic signed batches for load); the sim's files API fails everywhere, and during
    /// that incident the leader is SIGKILLed (`rounds` times in `make drill`): another leads within
    /// 5 s, every batch an agent saw acknowledged is stored whole, the open incidents carry on
    /// (resolved, never opened twice), and every webhook event arrives once per event id.
    @Test func sigkillTheLeaderUnderLoad() async throws {
        let rounds = Drill.scale(quick: 1, full: 10)
        let agents = try await SimAgents(ids: Self.simAgentIDs)
        let cluster: HACluster
        do { cluster = try await HACluster(collectors: 3, agents: Self.loadEnrolments + agents.enrolments) } catch {
            await agents.stop()
            throw error
        }
        do {
            try await Self.drill(cluster, agents: agents, rounds: rounds)
        } catch {
            await agents.stop()
            await cluster.stop()
            throw error
        }
        await agents.stop()
        await cluster.stop()
    }

    static func drill(_ cluster: HACluster, agents: SimAgents, rounds: Int) async throws {
        // Each migration applied once among the three simultaneous starts (all by one collector),
        // and no error in any log.
        let migrations = cluster.all.map { $0.child.allOutput.components(separatedBy: "Applied database migration").count - 1 }
        #expect(migrations.sorted() == [0, 0, PostgresCollectorStore.migrations.count], "migrations applied per collector: \(migrations)")
        for member in cluster.all { #expect(!member.child.allOutput.contains("error"), "\(member.name):\n\(member.child.allOutput.suffix(2000))") }

        var leader = try await cluster.waitForOneLeader()
        try agents.start(collectorURL: cluster.frontURL, interval: "1s")
        let load = PushLoad(agents: loadAgents, components: loadComponents, url: cluster.frontURL, client: cluster.client)
        // A platform incident: the files API answers 503 in every region.
        try await agents.platform.fault(["--type", "error", "--status", "503", "--component", "files"])
        try await waitUntil("incident.opened webhooks", timeout: .seconds(90), every: .milliseconds(100)) {
            cluster.arrivals.value.contains { $0.type == "incident.opened" }
        }
        var takeovers: [Double] = []
        let clock = ContinuousClock()
        var killed: Set<String> = []
        var killTimes: [(String, Date)] = []
        for round in 1...rounds {
            let (acked, agentAcked) = (load.acked.value.count, agents.acknowledged.count)
            try await waitUntil("more acknowledged pushes", timeout: .seconds(30), every: .milliseconds(20)) {
                load.acked.value.count > acked + 5 && agents.acknowledged.count > agentAcked + 3
            }
            leader.child.signal(SIGKILL)
            let killedAt = clock.now
            killTimes.append((leader.name, Date()))
            _ = try await leader.child.waitForExit(timeout: .seconds(10))
            killed.insert(leader.name)
            let next = try await cluster.waitForOneLeader(excluding: killed, timeout: .seconds(15))
            let takeover = killedAt.duration(to: clock.now)
            takeovers.append(Double(takeover.components.seconds) + Double(takeover.components.attoseconds) / 1e18)
            #expect(takeover <= .seconds(5), "round \(round): \(next.name) took over after \(takeover)")
            // Bring the killed one back as a standby (same name, same config), so every round has three.
            let path = cluster.folder.file("\(leader.name).yaml")
            let child = try ChildProcess("sonde-collector", ["serve", "--config", path, "--log-level", "info"])
            let line = try await child.waitForLine(timeout: .seconds(60), stderr: true) { $0.contains("Collector listening") }
            guard let match = line.firstMatch(of: /http\.port=(\d+)/), let port = Int(match.1) else { throw TestFailure("no port in \(line)") }
            let revived = HACluster.Member(name: leader.name, child: child, port: port, relay: leader.relay, relayPort: leader.relayPort)
            cluster.retired.withLock { [old = leader.child, name = leader.name] in $0.append((name, old)) }
            cluster.members.withLock { members in members = members.map { $0.name == revived.name ? revived : $0 } }
            killed.remove(leader.name)
            leader = next
        }
        // Recovery: the incidents that were open carry on and resolve once (never reopened).
        try await agents.platform.clearFaults()
        try await waitUntil("every incident resolved", timeout: .seconds(120), every: .milliseconds(200)) {
            let types = cluster.arrivals.value.map(\.type)
            return types.filter { $0 == "incident.opened" }.count == types.filter { $0 == "incident.resolved" }.count
        }
        await load.stop()
        await agents.stopAgents()

        // Every acknowledged batch is stored, whole.
        let store = try PostgresCollectorStore(url: cluster.databaseURL, logger: Logger(label: "drill"))
        defer { store.close() }
        let stored = try await store.batchIntegrity()
        // Acknowledged: to the load's pushes, and what the real agents logged as acknowledged.
        let agentAcked = agents.acknowledged
        let sent = load.acked.value.merging(agentAcked) { $1 }
        #expect(!agentAcked.isEmpty, "the real agents logged no acknowledged batch")
        let missing = sent.keys.filter { stored[$0] == nil }
        let wrong = sent.filter { id, count in stored[id].map { $0.declared != count || $0.stored != count } ?? false }
        #expect(missing.isEmpty, "\(missing.count) acknowledged batches missing")
        #expect(wrong.isEmpty, "\(wrong.count) batches stored partly")

        // Webhooks: each event once, after deduping on Sonde-Event-Id as receivers must; every raw
        // repeat is accounted for (see WebhookAudit); each opened incident resolved with the same id.
        let arrivals = cluster.arrivals.value
        let retired = cluster.retired.value
        let logs = retired.map { ("\($0.name) (killed)", $0.child.allOutput) } + cluster.all.map { ($0.name, $0.child.allOutput) }
        let kills = zip(killTimes, retired).map { (name: $0.0, at: $0.1, log: $1.child.allOutput) }
        let audit = WebhookAudit(arrivals: arrivals.map { ($0.id, $0.type, $0.body, $0.at) }, kills: kills, logs: logs)
        let perEvent = audit.perEvent
        if !audit.repeats.isEmpty || !audit.reannounced.isEmpty {
            let rows = try await store.deliveries()
            let report = audit.evidence(rows: rows)
            print(report)
            Drill.report("7b-ha-webhook-repeats", "#### Drill 7: each repeated webhook event\n\n```\n" + report + "```\n")
        }
        #expect(audit.unexplained.isEmpty, "events sent twice for no reason the failover explains:\n\(audit.unexplained.joined(separator: "\n"))")
        #expect(audit.reannounced.isEmpty, "a transition announced again under a new event id:\n\(audit.reannounced.joined(separator: "\n"))")
        func incidentID(_ body: Data) -> String? {
            guard let object = (try? JSONSerialization.jsonObject(with: body)) as? [String: Any] else { return nil }
            return (object["incident"] as? [String: Any])?["id"] as? String ?? object["incident"] as? String
        }
        let opened = arrivals.filter { $0.type == "incident.opened" }.compactMap { incidentID($0.body) }
        let resolved = arrivals.filter { $0.type == "incident.resolved" }.compactMap { incidentID($0.body) }
        #expect(!opened.isEmpty)
        if Set(opened) != Set(resolved) {
            // What each collector decided and when (the incidents' transitions, the leadership).
            let lines = logs.flatMap { name, log in
                log.split(separator: "\n").filter { $0.contains("Incident changed") || $0.contains("leader") || $0.contains("local_fault") }
                    .map { "\(name): \($0)" }
            }
            print("incident timeline:\n" + lines.joined(separator: "\n"))
        }
        #expect(Set(opened) == Set(resolved), "opened \(opened), resolved \(resolved)")
        #expect(opened.count == Set(opened).count, "an incident was opened twice")
        let delivered = try await store.deliveries().filter { $0.status == .delivered }.count
        #expect(delivered == perEvent.count)

        let latencies = load.ackLatencies.value.sorted()
        let p99 = latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * 0.99))]
        let passed =
            (takeovers.max() ?? 99) <= 5 && missing.isEmpty && wrong.isEmpty && audit.unexplained.isEmpty && audit.reannounced.isEmpty
            && !opened.isEmpty && Set(opened) == Set(resolved) && opened.count == Set(opened).count && delivered == perEvent.count
        Drill.report(
            "7-ha-leader-kill",
            """
            ### Drill 7: the leader SIGKILLed under ingest load (3 collectors, PostgreSQL, haproxy) — \(passed ? "PASS" : "FAIL")

            Three `sonde-collector serve` processes on one throwaway PostgreSQL behind haproxy (health checks on `/healthz` \
            every 250 ms); six real `sonde-agent run` processes probe a real `sonde-sim` (3 regions) and push through \
            haproxy, with 4 senders of synthetic signed batches (other components) for load. The sim's files API answers \
            503 everywhere, and during that incident the leader is SIGKILLed \(rounds) times, each time once more pushes \
            were acknowledged; a killed collector comes back as a standby. Then the fault is cleared. Pass: a new leader \
            within 5 s each time; every batch acknowledged to an agent (its own log) or a sender stored whole; every \
            incident opened once and resolved under the same id; no event re-announced under a new id; each event \
            delivered once per event id — a repeat is allowed only in the at-least-once window (the receiver's 2xx \
            in flight when its leader was killed, resent by the next leader with the same `Sonde-Event-Id`), and counted.

            """
                + "\n" + Drill.table([
                ("collectors", "3 behind haproxy, one PostgreSQL"),
                ("agents", "6 real (sonde-agent run, sim probes every 1 s) + 4 synthetic load senders"),
                ("leader kills", "\(rounds)"),
                ("takeover (s), max / median", String(format: "%.2f / %.2f", takeovers.max() ?? 0, takeovers.sorted()[takeovers.count / 2])),
                ("acknowledged batches (real agents + load)", "\(sent.count) (\(agentAcked.count) + \(sent.count - agentAcked.count))"), ("missing", "\(missing.count)"), ("partly stored", "\(wrong.count)"),
                ("webhook events", "\(perEvent.count)"),
                ("sent twice, same event id: 2xx in flight when its leader was killed", "\(audit.inFlightAtKill.count)"),
                ("sent twice for another reason", "\(audit.unexplained.count)"),
                ("2xx to recorded delivered (ms), median / max", audit.recordingMs.isEmpty ? "–" : "\(audit.recordingMs[audit.recordingMs.count / 2]) / \(audit.recordingMs.last!)"),
                ("announced again under a new event id", "\(audit.reannounced.count)"),
                ("incidents opened / resolved", "\(opened.count) / \(resolved.count)"),
                ("p99 acknowledgement of the load's pushes (ms)", String(format: "%.0f", p99)),
            ]))
    }

    /// The leader cut off from PostgreSQL (its relay SIGSTOPped: the TCP connections stay open
    /// and silent, as in a real partition): it steps down before another collector takes over,
    /// and its writes after that are refused by the fencing epoch.
    @Test func leaderPartitionedFromTheDatabaseStepsDownFirst() async throws {
        let cluster = try await HACluster(collectors: 2, agents: Self.loadEnrolments)
        do {
            let leader = try await cluster.waitForOneLeader()
            let other = cluster.all.first { $0.name != leader.name }!
            leader.relay.signal(SIGSTOP)
            let clock = ContinuousClock()
            let cutAt = clock.now
            var steppedDownAt: ContinuousClock.Instant?
            var takenOverAt: ContinuousClock.Instant?
            do {
                try await waitUntil("the other collector to take over", timeout: .seconds(20), every: .milliseconds(20)) {
                    if steppedDownAt == nil, leader.child.stderrLines.contains(where: { $0.contains("Stepped down") }) { steppedDownAt = clock.now }
                    if takenOverAt == nil, await cluster.status(other)?.cluster?.role == "leader" { takenOverAt = clock.now }
                    return takenOverAt != nil
                }
            } catch {
                throw TestFailure("\(error)\n\(other.name) (should take over):\n\(other.child.allOutput.suffix(3000))\n\(leader.name) (cut off):\n\(leader.child.allOutput.suffix(2000))")
            }
            if steppedDownAt == nil, leader.child.stderrLines.contains(where: { $0.contains("Stepped down") }) { steppedDownAt = clock.now }
            let down = try #require(steppedDownAt, "the partitioned leader never stepped down:\n\(leader.child.allOutput.suffix(3000))")
            let over = try #require(takenOverAt)
            #expect(down < over, "stepped down \(cutAt.duration(to: down)) after the cut, the other took over \(cutAt.duration(to: over)) after")
            #expect(cutAt.duration(to: over) <= .seconds(5))
            // The partitioned one says standby.
            let partitioned = await cluster.status(leader)
            #expect(partitioned?.cluster?.role == "standby")
            // It cannot read the stored incidents, and says so instead of showing its own engine's
            // (whose ids name no stored incident: HA review F3).
            #expect(partitioned?.openIncidentsUnavailable != nil && partitioned?.openIncidents.isEmpty == true)
            // Its health check answers 503 at once instead of hanging on the silent database, so a
            // load balancer sees it down rather than its own time-out.
            let asked = clock.now
            let health = try? await cluster.client.perform(HTTPRequest(url: leader.baseURL + "/healthz", timeout: .seconds(5)))
            #expect(health?.status == 503 && asked.duration(to: clock.now) < .seconds(2), "healthz \(health?.status ?? 0) after \(asked.duration(to: clock.now))")
            // Healed: it stays standby; the other keeps leading.
            leader.relay.signal(SIGCONT)
            try await waitUntil("the healed collector to see the other lead", timeout: .seconds(20), every: .milliseconds(100)) {
                let view = await cluster.status(leader)?.cluster
                return view?.role == "standby" && view?.leader == other.name
            }
            #expect(await cluster.leaders().map(\.name) == [other.name])
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// PostgreSQL away for 30 s for both collectors (their relays stopped: connections refused,
    /// as when it is down), then back: within seconds a collector leads again and stores a push
    /// through haproxy, because each starts a new connection pool the moment its leader-election
    /// session connects again, instead of waiting out PostgresNIO's reconnect backoff (about 7 s
    /// after 30 s of refused connections, a minute at most).
    @Test func aDatabaseOutageEndsForTheCollectorsWhenTheDatabaseReturns() async throws {
        let cluster = try await HACluster(collectors: 2, agents: Self.loadEnrolments)
        do {
            _ = try await cluster.waitForOneLeader()
            let agent = Self.loadAgents[0]
            func push() async -> Int {
                guard let (_, body, signature) = try? agent.signedBatch(1, components: ["load-a"]) else { return 0 }
                return (try? await cluster.client.perform(agent.pushRequest(baseURL: cluster.frontURL, body: body, signature: signature, timeout: .seconds(3))))?.status ?? 0
            }
            #expect(await push() == 200)
            await cluster.stopRelays()
            // Pooled work fails during the outage (pushes are refused; the collectors step down).
            try await waitUntil("pushes refused while the database is away", timeout: .seconds(20), every: .milliseconds(200)) { await push() != 200 }
            try await Task.sleep(for: .seconds(30))
            let clock = ContinuousClock()
            try await cluster.startRelays()
            let back = clock.now
            try await waitUntil("a leader, and a push stored through haproxy", timeout: .seconds(60), every: .milliseconds(100)) {
                guard await !cluster.leaders().isEmpty else { return false }
                return await push() == 200
            }
            let recovered = back.duration(to: clock.now)
            print("database outage of 30 s: a leader and a stored push \(recovered) after the database returned")
            let logs = cluster.all.map { $0.child.allOutput }.joined(separator: "\n")
            #expect(logs.contains("PostgreSQL answers again; started a new connection pool"), "\(logs.suffix(3000))")
            // At --log-level info the pool's own connect failures (a line a second, PostgresNIO's
            // type names) stay out of the log.
            #expect(!logs.contains("psql_error=PSQLError"), "\(logs.suffix(3000))")
            #expect(recovered < .seconds(5), "the reconnect backoff would be about 7 s here")
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }

    /// Agents pushing to a collector that does not lead: the leader evaluates what it follows
    /// from the database, and its `/metrics` and the labels its alerts carry must cover those
    /// results too. They came from the results it received itself only: none here, so the leader
    /// exported no probe series and paged with no `team` label, and a route on it missed
    /// (integrations review, 33rd session, F1).
    @Test func theLeaderExportsAndLabelsWhatAnotherCollectorReceived() async throws {
        let agents = ["eu", "eu", "us", "us"].enumerated().map { DrillAgent(id: "labelled-\($0.offset)", region: $0.element) }
        let cluster = try await HACluster(collectors: 2, agents: agents.map { ($0.id, $0.region, $0.key.publicKey.base64) })
        do {
            let leader = try await cluster.waitForOneLeader()
            let other = cluster.all.first { $0.name != leader.name }!
            // Every agent's api probe fails, labelled, pushed to the collector that does not lead.
            func pushFailures() async throws {
                for agent in agents {
                    let results = agent.results(2, failed: true, components: ["api"]).map { result in
                        var labelled = result
                        labelled.labels = ["team": "identity"]
                        return labelled
                    }
                    let body = try SondeJSON.encode(PushBatch(agent: agent.id, batchID: UUID().uuidString, sentAt: Date(), results: results))
                    let response = try await cluster.client.perform(
                        agent.pushRequest(baseURL: other.baseURL, body: body, signature: try agent.key.signatureHeader(for: body)))
                    #expect(response.status == 200, "\(String(decoding: response.body, as: UTF8.self))")
                }
            }
            var opened: Data?
            try await waitUntil("incident.opened from the leader", timeout: .seconds(30), every: .milliseconds(300)) {
                try await pushFailures()
                opened = cluster.arrivals.value.first { $0.type == "incident.opened" }?.body
                return opened != nil
            }
            let body = try #require(opened)
            let event = try #require(try JSONSerialization.jsonObject(with: body) as? [String: Any])
            #expect(event["labels"] as? [String: String] == ["team": "identity"], "\(String(decoding: body, as: UTF8.self))")
            // Every agent's failing run on the leader's /metrics, once it has followed them all
            // (the incident may open before the last agent's push is followed).
            var text = ""
            do {
                try await waitUntil("every agent's probe_success 0 on the leader's /metrics", timeout: .seconds(10)) {
                    let metrics = try await cluster.client.perform(
                        HTTPRequest(url: leader.baseURL + "/metrics", headers: [HTTPHeader("Authorization", "Bearer \(DrillTokens.read)")]))
                    text = String(decoding: metrics.body, as: UTF8.self)
                    let lines = text.split(separator: "\n")
                    return agents.allSatisfy { agent in
                        lines.contains { $0.hasPrefix("probe_success{") && $0.contains("agent=\"\(agent.id)\"") && $0.hasSuffix(" 0") }
                    }
                }
            } catch {
                Issue.record("\(error): the leader's /metrics:\n\(text.prefix(3000))")
            }
        } catch {
            await cluster.stop()
            throw error
        }
        await cluster.stop()
    }
}
