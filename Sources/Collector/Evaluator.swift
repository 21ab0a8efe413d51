import CollectorStore
import Correlation
import Foundation
import Logging
import ServiceLifecycle
import SondeCore
import Synchronization

/// The wall clock at start-up moved on by a monotonic clock: the engine's one time line, so a
/// wall-clock step (NTP, an operator) never makes agents look silent or fresh.
public struct MonotonicWallClock: Sendable {
    private let startWall = Date()
    private let start = ContinuousClock.now

    public init() {}

    public func now() -> Date {
        startWall.addingTimeInterval(start.duration(to: .now).seconds)
    }
}

/// The correlation engine (a value type) behind an actor, plus the latest output for the API.
/// Receive times and evaluation times come from one `MonotonicWallClock`.
public actor CorrelationHub {
    private var engine: CorrelationEngine
    private(set) var latest: CorrelationOutput
    /// As of the latest evaluation: whether a decision is being made that agents' newest runs
    /// speed up (`CorrelationEngine.wantsFreshRuns`). Read by every push's answer without a hop
    /// onto this actor.
    nonisolated let wantsFreshRuns = Atomic<Bool>(false)
    /// As of the latest evaluation: what agents are asked to confirm, per region
    /// (`CorrelationEngine.confirmationRequests`). Read by every push's answer without a hop.
    nonisolated let confirmations = Mutex(ConfirmationRequests())
    /// When `latest` was computed, on the wall clock that stamps `/metrics`' receive times: a run
    /// received after it is newer than the agent states in `latest`.
    private(set) var latestAt = Date.distantPast
    let clock = MonotonicWallClock()

    init(engine: CorrelationEngine) {
        self.engine = engine
        latest = CorrelationOutput(verdicts: engine.verdicts, agents: engine.agentHealth, changedIncidents: [], events: [])
    }

    /// Adds results; true when they are worth an evaluation now rather than at the next tick: a
    /// failure, or passing runs while the engine awaits them (an open incident, a problem verdict,
    /// a local fault; see `CorrelationEngine.awaitsPassingRuns`). A healthy fleet's pushes cost
    /// no evaluation.
    /// `push`: the batch's `sent_at` and when its request arrived (monotonic), so the agent's clock
    /// offset is measured on the push, without the time the batch took to store.
    @discardableResult
    func ingest(_ results: [ProbeResult], push: (sentAt: Date, arrived: ContinuousClock.Instant)? = nil) -> Bool {
        ingested += results.count
        let now = clock.now()
        let timing = push.map { push in
            PushTiming(sentAt: push.sentAt, arrivedAt: now.addingTimeInterval(-push.arrived.duration(to: .now).seconds))
        }
        engine.ingest(results, receivedAt: now, push: timing)
        return engine.awaitsPassingRuns || results.contains { $0.outcome != .ok }
    }

    /// Results handed to the engine so far (each stored result once; tests read it).
    private(set) var ingested = 0

    private var knownAgents: [AgentInfo]?

    func setAgentsIfChanged(_ agents: [AgentInfo]) {
        guard agents != knownAgents else { return }
        knownAgents = agents
        engine.setAgents(agents)
    }

    /// The leader epoch whose stored decisions the engine adopted (nil: its decisions are its own).
    private(set) var adoptedEpoch: Int64?

    /// A new leader's: keeps the followed windows, takes the decisions the last leader stored.
    func adopt(_ stored: StoredDecisions, epoch: Int64) {
        adoptedEpoch = epoch
        // `latest` stays until the evaluation that follows at once.
        engine.adoptStoredDecisions(openIncidents: stored.openIncidents, agentStates: stored.agentStates, resolved: stored.resolved)
        engine.countSilence(from: clock.now().addingTimeInterval(Self.heldPushAllowance))
    }

    /// Storage refused a push (the database stalled, full or gone): the agents cannot deliver,
    /// and their quiet until they do is this collector's, as after a restart (found by the HA
    /// review, F1: a 25 s table lock paged `agent.silent` and `agent.recovered` for every agent).
    /// At most once a second: each call walks every agent, and a fleet's refused pushes come by
    /// the thousand during an outage (the 70 s allowance makes a second's lag irrelevant).
    func pushRefusedByStorage() {
        let now = clock.now()
        guard now.timeIntervalSince(lastRefusalCounted) >= 1 else { return }
        lastRefusalCounted = now
        engine.countSilence(from: now.addingTimeInterval(restartSilenceAllowance))
    }
    private var lastRefusalCounted = Date.distantPast

    /// How long an agent's push may be held by a frozen leader before the agent gives up and
    /// sends it again, to us: the agent's default push time-out.
    static let heldPushAllowance: TimeInterval = 10

    func evaluate() -> CorrelationOutput {
        let output = engine.evaluate(now: clock.now())
        wantsFreshRuns.store(engine.wantsFreshRuns, ordering: .relaxed)
        let requests = engine.confirmationRequests
        confirmations.withLock { if $0 != requests { $0 = requests } }
        latest = output
        latestAt = Date()
        evaluations += 1
        return output
    }

    /// An evaluation with the epoch whose decisions it started from, read in the same turn: a
    /// take-over landing just before it cannot go unnoticed (its events would never be stored).
    func evaluateWithAdoptedEpoch() -> (output: CorrelationOutput, adoptedEpoch: Int64?) { (evaluate(), adoptedEpoch) }

    /// Evaluations run so far, and how many of them the evaluator has stored: a person's write is
    /// durable once `committed` reaches the evaluation after it.
    private(set) var evaluations = 0
    private(set) var committed = 0
    /// Evaluations whose changes were thrown away unstored because this collector is no longer
    /// the leader: a person's write in one of them is lost, and its caller must be told so.
    private(set) var discarded = 0

    func markCommitted(through evaluation: Int) { committed = max(committed, evaluation) }
    func markDiscarded(through evaluation: Int) { discarded = max(discarded, evaluation) }

    /// A person's update, applied to the engine; stored (with its events) by the next evaluation,
    /// whose number is returned with it (wait for `committed` to reach it).
    func applyHumanUpdate(_ update: HumanIncidentUpdate) throws(HumanUpdateError) -> (incident: Incident, evaluation: Int) {
        (try engine.applyHumanUpdate(update, now: clock.now()), evaluations + 1)
    }

    /// Opens incidents people report, all or none (any component with an open incident refuses all).
    func openHumanIncidents(_ requests: [HumanNewIncident]) throws(HumanUpdateError) -> (incidents: [Incident], evaluation: Int) {
        for request in requests {
            if let open = engine.openIncidents.first(where: { $0.component == request.component }) {
                throw .alreadyOpen(component: request.component, id: open.id)
            }
        }
        var opened: [Incident] = []
        for request in requests { opened.append(try engine.openHumanIncident(request, now: clock.now())) }
        return (opened, evaluations + 1)
    }

    var verdicts: [ComponentVerdict] { latest.verdicts }
    /// `correlation.min_component_agents` as in force now.
    var minComponentAgents: Int { engine.config.minComponentAgents }
    var agentHealth: [AgentHealth] { latest.agents }
    var openIncidents: [Incident] { engine.openIncidents }
}

/// Runs the engine every `interval` and when triggered; persists changed incidents, new events
/// (with one delivery per matching webhook target) and agent states in one transaction.
public struct Evaluator: Service {
    let hub: CorrelationHub
    let store: any CollectorStorage
    /// Webhook targets in force (SIGHUP may change them): each event gets a delivery per target.
    let settings: ReloadableSettings
    /// Where the probes' `labels` come from, for incident events.
    let metrics: CollectorMetrics
    let interval: TimeInterval
    let trigger: WakeSignal
    /// Woken after a commit that queued deliveries.
    let outbox: WakeSignal
    /// With several collectors: whether this one may store an evaluation that started from the
    /// decisions adopted for this epoch (nil: the engine's own): it leads with that epoch. A standby
    /// evaluates for its own API only.
    var mayWrite: @Sendable (_ adoptedEpoch: Int64?) -> Bool = { _ in true }
    let logger: Logger

    /// How stale a stored `last_seen` may get when nothing else about an agent changes. Each push
    /// moves `last_seen`; storing it every evaluation cost a transaction and an fsync every
    /// second. The stored state is read only after a restart or a take-over, and its `last_seen`
    /// only for an agent with nothing in the window (`window_age`, 10 min by default) since: what
    /// the window holds wins. So the only cost of waiting is that such an agent, after a crash
    /// (a graceful stop stores it), is judged silent from up to this much earlier. Any other
    /// write (an agent's state, an incident, an event) takes every pending `last_seen` with it.
    var lastSeenStoreInterval: Duration = .seconds(30)
    /// How often the enrolled agents are read again, for agents enrolled or revoked with
    /// `sonde-collector agents …` while running (ingest checks each push against the database at
    /// once; this is the engine's list, for agent health): not a database read every evaluation.
    var agentsRefreshInterval: Duration = .seconds(10)

    /// What the evaluator remembers between evaluations.
    struct Memory {
        /// Changes not stored yet (the commit failed): retried with the next evaluation.
        var unsaved = EvaluationCommit()
        /// The agent states as stored; nil until known (read at start and after standing by).
        var stored: [String: AgentHealth]?
        /// States whose only change is `last_seen`, not stored yet, and the epoch they come from.
        var pendingLastSeen: [String: AgentHealth] = [:]
        var pendingEpoch: Int64?
        var lastSeenDue = ContinuousClock.now
        var agentsDue = ContinuousClock.now
        /// Unknown components with a problem that the log has already warned about.
        var warnedUnknown: Set<String> = []
        /// Per known component, the regions that no longer decide it as the log last said them.
        var unwatched: [String: [String]] = [:]
    }

    public func run() async throws {
        var memory = Memory()
        memory.stored = await storedStates()
        memory.lastSeenDue = .now + lastSeenStoreInterval
        // Each evaluation waits for the next tick, or less when woken (bursts coalesce in one wake-up).
        await withGracefulShutdownHandler {
            await trigger.waiting { wait in
                while !Task.isCancelled && !Task.isShuttingDownGracefully {
                    await wait(.milliseconds(Int(interval * 1000)))
                    if Task.isCancelled || Task.isShuttingDownGracefully { break }
                    await evaluateOnce(&memory)
                }
            }
        } onGracefulShutdown: { [trigger] in
            trigger.fire()
        }
        await storePendingLastSeen(&memory)
    }

    func storedStates() async -> [String: AgentHealth]? {
        guard let states = try? await store.agentStates() else { return [:] }
        let decoder = SondeJSON.decoder()
        return states.compactMapValues { try? decoder.decode(AgentHealth.self, from: $0) }
    }

    /// At a graceful stop: the `last_seen` values still waiting, so a restart judges from them.
    func storePendingLastSeen(_ memory: inout Memory) async {
        guard !memory.pendingLastSeen.isEmpty, mayWrite(memory.pendingEpoch) else { return }
        let states = Self.encoded(memory.pendingLastSeen)
        do {
            try await store.commit(EvaluationCommit(agentStates: states))
            memory.pendingLastSeen = [:]
        } catch {
            logger.warning("Cannot store the agents' last_seen at shutdown", metadata: ["error": "\(error)"])
        }
    }

    /// A component that fails while not known (not under `components:`, reported by fewer than
    /// `min_component_agents` agents) opens no incident and pages nobody: said once in the log
    /// while it lasts, so a one-agent set-up does not watch an outage in silence.
    func warnAboutUnknownComponents(_ output: CorrelationOutput, _ memory: inout Memory) {
        for verdict in output.verdicts where !verdict.known {
            if verdict.status == .operational {
                memory.warnedUnknown.remove(verdict.component)
            } else if memory.warnedUnknown.insert(verdict.component).inserted {
                logger.warning(
                    "A component fails but opens no incident: it is not under components: and fewer agents than correlation.min_component_agents report it; list it under components: to have its incidents",
                    metadata: ["component": "\(verdict.component)", "status": "\(verdict.status.rawValue)"])
            }
        }
    }

    /// A region that stops deciding a known component — its agents there went silent or are in
    /// local-fault episodes, or fewer than half of those that reported it within
    /// `region_quorum_window` still do ("Region quorum") — is said once in the log, and again when
    /// it no longer is. Meanwhile nothing opens or resolves there and the pages show no data for
    /// it: an operator should hear why.
    func noteUnwatchedRegions(_ output: CorrelationOutput, _ memory: inout Memory) {
        let known = Set(output.verdicts.filter(\.known).map(\.component))
        memory.unwatched = memory.unwatched.filter { known.contains($0.key) }
        for verdict in output.verdicts where verdict.known {
            let before = memory.unwatched[verdict.component] ?? []
            guard verdict.unwatchedRegions != before else { continue }
            let lost = verdict.unwatchedRegions.filter { !before.contains($0) }
            let back = before.filter { !verdict.unwatchedRegions.contains($0) }
            if !lost.isEmpty {
                logger.warning(
                    "A region no longer decides a component: its agents there went silent or have local faults, or fewer than half of those that reported it within correlation.region_quorum_window still report; nothing opens or resolves there until they report again",
                    metadata: ["component": "\(verdict.component)", "regions": "\(lost.joined(separator: ","))"])
            }
            if !back.isEmpty {
                logger.notice(
                    "A region no longer lacks data for a component",
                    metadata: ["component": "\(verdict.component)", "regions": "\(back.joined(separator: ","))"])
            }
            memory.unwatched[verdict.component] = verdict.unwatchedRegions.isEmpty ? nil : verdict.unwatchedRegions
        }
    }

    /// One evaluation; a commit that fails is retried with the next one, so no event is lost.
    func evaluateOnce(_ memory: inout Memory) async {
        // Agents enrolled or revoked with `sonde-collector agents …` while running take effect here.
        if ContinuousClock.now >= memory.agentsDue, let agents = try? await store.agents() {
            memory.agentsDue = .now + agentsRefreshInterval
            await hub.setAgentsIfChanged(agents.map { AgentInfo(id: $0.id, region: $0.region, revoked: $0.revoked) })
        }
        let (output, adoptedEpoch) = await hub.evaluateWithAdoptedEpoch()
        warnAboutUnknownComponents(output, &memory)
        noteUnwatchedRegions(output, &memory)
        let evaluation = await hub.evaluations
        guard mayWrite(adoptedEpoch) else {
            // A standby's changes are not stored; a new leader starts from the database. What the
            // log already said stays said (a standby evaluates too, every interval).
            memory = Memory(agentsDue: memory.agentsDue, warnedUnknown: memory.warnedUnknown, unwatched: memory.unwatched)
            await hub.markDiscarded(through: evaluation)
            return
        }
        if memory.stored == nil { memory.stored = await storedStates() }
        let metrics = metrics
        var (commit, lastSeenOnly) = Self.commit(
            for: output, targets: settings.webhooks, stored: memory.stored ?? [:], labels: { metrics.probeLabels(component: $0, now: Date()) })
        commit.incidents = Self.mergeByID(memory.unsaved.incidents, commit.incidents, id: \.id)
        commit.events = Self.mergeByID(memory.unsaved.events, commit.events, id: \.id)
        commit.deliveries = Array(Set(memory.unsaved.deliveries + commit.deliveries))
        // `last_seen` alone waits (see lastSeenStoreInterval) unless something is written anyway.
        if !lastSeenOnly.isEmpty, !commit.isEmpty || ContinuousClock.now >= memory.lastSeenDue {
            commit.agentStates.merge(Self.encoded(lastSeenOnly)) { $1 }
            lastSeenOnly = [:]
        }
        memory.pendingLastSeen = lastSeenOnly
        memory.pendingEpoch = adoptedEpoch
        guard !commit.isEmpty else { return await hub.markCommitted(through: evaluation) }
        do {
            try await store.commit(commit)
            await hub.markCommitted(through: evaluation)
            memory.unsaved = EvaluationCommit()
            for health in output.agents where commit.agentStates[health.agent] != nil { memory.stored?[health.agent] = health }
            if !commit.agentStates.isEmpty { memory.lastSeenDue = .now + lastSeenStoreInterval }
            if !commit.deliveries.isEmpty { outbox.fire() }
            for incident in commit.incidents {
                logger.info(
                    "Incident changed",
                    metadata: ["incident.id": .string(incident.id), "incident.status": .string(incident.status), "component": .string(incident.component)])
            }
            for event in commit.events {
                logger.info("Alert event queued", metadata: ["event.id": .string(event.id), "event.type": .string(event.type)])
            }
        } catch {
            // Agent states are not kept: the next evaluation compares with what is stored again.
            commit.agentStates = [:]
            memory.unsaved = commit
            logger.error("Cannot store the evaluation; will retry", metadata: ["error": "\(error)"])
        }
    }

    static func encoded(_ states: [String: AgentHealth]) -> [String: Data] {
        let encoder = SondeJSON.encoder()
        return states.compactMapValues { try? encoder.encode($0) }
    }

    /// The event JSON with `labels` added (when there are any), keys sorted as before.
    static func adding(labels: [String: String], to json: Data) -> Data {
        guard !labels.isEmpty, var object = (try? JSONSerialization.jsonObject(with: json)) as? [String: Any] else { return json }
        object["labels"] = labels
        return (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])) ?? json
    }

    private static func mergeByID<T>(_ old: [T], _ new: [T], id: KeyPath<T, String>) -> [T] {
        let newIDs = Set(new.map { $0[keyPath: id] })
        return old.filter { !newIDs.contains($0[keyPath: id]) } + new
    }

    /// `labels` gives a component's probe labels: an incident event carries them as `labels`
    /// (json, slack, pagerduty `custom_details`, Alertmanager labels all read them from there).
    /// Agent states that changed from `stored` go in the commit, except those whose only change
    /// is `last_seen`: those are returned apart, for the caller to store now or later.
    static func commit(
        for output: CorrelationOutput, targets: [WebhookTarget], stored: [String: AgentHealth], labels: (String) -> [String: String] = { _ in [:] }
    ) -> (commit: EvaluationCommit, lastSeenOnly: [String: AgentHealth]) {
        let encoder = SondeJSON.encoder()
        var commit = EvaluationCommit()
        for incident in output.changedIncidents {
            guard let json = try? encoder.encode(incident) else { continue }
            commit.incidents.append(
                IncidentRecord(
                    id: incident.id, component: incident.component, status: incident.status.rawValue, openedAt: incident.openedAt,
                    updatedAt: incident.updatedAt, resolvedAt: incident.resolvedAt, json: json))
        }
        for event in output.events {
            guard var json = try? encoder.encode(event) else { continue }
            if event.type.rawValue.hasPrefix("incident."), let component = event.component {
                json = Self.adding(labels: labels(component), to: json)
            }
            commit.events.append(OutboxEvent(id: event.id, type: event.type.rawValue, occurredAt: event.occurredAt, payload: json))
            for target in targets where target.accepts(event.type.rawValue, resolving: event.resolvesType?.rawValue) {
                commit.deliveries.append(DeliveryKey(eventID: event.id, target: target.name))
            }
        }
        var lastSeenOnly: [String: AgentHealth] = [:]
        for health in output.agents {
            guard var was = stored[health.agent], was != health else {
                if stored[health.agent] == nil, let json = try? encoder.encode(health) { commit.agentStates[health.agent] = json }
                continue
            }
            was.lastSeen = health.lastSeen
            if was == health {
                lastSeenOnly[health.agent] = health
            } else if let json = try? encoder.encode(health) {
                commit.agentStates[health.agent] = json
            }
        }
        return (commit, lastSeenOnly)
    }
}

/// Removes rows older than the retention period, once at start and then every `interval`.
public struct RetentionService: Service {
    let store: any CollectorStorage
    let retention: TimeInterval
    let interval: TimeInterval
    let logger: Logger

    public func run() async throws {
        await pruneOnce()
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(interval * 1000)))
                if Task.isCancelled { return }
                await pruneOnce()
            }
        }
    }

    func pruneOnce() async {
        do {
            let report = try await store.prune(before: Date().addingTimeInterval(-retention))
            if report.total > 0 {
                logger.info(
                    "Pruned old rows",
                    metadata: ["results": "\(report.results)", "batches": "\(report.batches)", "incidents": "\(report.incidents)", "events": "\(report.events)"])
            }
        } catch {
            logger.warning("Retention pruning failed", metadata: ["error": "\(error)"])
        }
    }
}

// Short names for ServiceLifecycle's logs, not reflection dumps (the targets carry secrets).
extension Evaluator: CustomStringConvertible {
    public var description: String { "Evaluator(every \(interval) s)" }
}

extension RetentionService: CustomStringConvertible {
    public var description: String { "RetentionService(keeps \(retention) s)" }
}
