import CollectorAPI
import CollectorStore
import Correlation
import Foundation
import Logging
import ServiceLifecycle
import SondeCore
import Synchronization

/// What the engine decided and storage keeps: open incidents, agent states, and the newest
/// resolved incidents (people's resolutions while still failing hold their component; the
/// engine's own are its flap memory).
public struct StoredDecisions: Sendable {
    public var openIncidents: [Incident]
    public var agentStates: [AgentHealth]
    public var resolved: [Incident]

    public static func read(from store: any CollectorStorage) async throws -> StoredDecisions {
        let decoder = SondeJSON.decoder()
        return StoredDecisions(
            openIncidents: try await store.incidents(.open, limit: 10_000).compactMap { try? decoder.decode(Incident.self, from: $0.json) },
            agentStates: try await store.agentStates().values.compactMap { try? decoder.decode(AgentHealth.self, from: $0) },
            resolved: try await store.incidents(.resolved, limit: 1_000).compactMap { try? decoder.decode(Incident.self, from: $0.json) })
    }
}

/// The engine's memory rebuilt from storage: the recent window of results, open incidents and
/// agent states. Used at start-up.
public func rebuildEngine(
    store: any CollectorStorage, config: CollectorConfig, recent: [ProbeResult]
) async throws -> CorrelationEngine {
    let agents = try await store.agents()
    let stored = try await StoredDecisions.read(from: store)
    var engine = CorrelationEngine(
        config: config.correlation, agents: agents.map { AgentInfo(id: $0.id, region: $0.region, revoked: $0.revoked) },
        openIncidents: stored.openIncidents, agentStates: stored.agentStates, declaredComponents: Set(config.components),
        resolved: stored.resolved)
    for result in recent {
        engine.ingest([result], receivedAt: result.startedAt.addingTimeInterval(result.durationMs / 1000))
    }
    // The agents could not push while this collector was down: their silence until they are
    // back is its own (found by the first-use review: every restart paged each agent).
    engine.countSilence(from: Date().addingTimeInterval(restartSilenceAllowance))
    return engine
}

/// How long after a start an agent may take to push again: a back-off cap of 60 s (the agent's
/// default is 10 s, older agents' was 60 s; reached after a minute of refused pushes) plus its
/// push time-out (10 s).
let restartSilenceAllowance: TimeInterval = 70

/// Several collectors on one PostgreSQL. Every collector follows what all of them ingest (by
/// the ingest horizon, woken by NOTIFY) into its engine, so each one's verdicts and agent health
/// are current; only the leader stores what the evaluations change and sends webhooks. On
/// becoming leader a collector catches up with following and adopts the decisions the last
/// leader stored (open incidents continue, agent states carry over) before its first write: its
/// windows are already warm, so nothing is re-read but the results since its last step.
final class ClusterCoordinator: Service, Sendable {
    let leadership: PostgresLeadership
    let store: PostgresCollectorStore
    let hub: CorrelationHub
    let trigger: WakeSignal
    /// Wakes the webhook dispatcher on a role change: a new leader sends what the last one queued.
    let outbox: WakeSignal
    let config: CollectorConfig
    let logger: Logger
    private let follower: Follower
    /// The epoch whose rebuild is done: the evaluator writes only while it equals the lead epoch.
    private let readyEpoch = Mutex<Int64?>(nil)

    /// Where following stands; an actor so a rebuild and a follow step never interleave.
    actor Follower {
        var position: Int64 = 0
        /// Results the last rebuild already fed the engine that following will meet again.
        var seen = Set<String>()
        /// Every result followed goes to `/metrics` too, not only those this collector received:
        /// the leader's probe series and the labels its alerts carry (routes match on them) came
        /// from its own pushes only, none when the agents pushed to another collector
        /// (integrations review, 33rd session, F1).
        let metrics: CollectorMetrics

        init(metrics: CollectorMetrics) { self.metrics = metrics }

        func reset(position: Int64, seen: Set<String>) {
            self.position = position
            self.seen = seen
        }
        /// The results followed, and whether they are worth an evaluation now (`CorrelationHub.ingest`).
        func step(store: PostgresCollectorStore, hub: CorrelationHub) async throws -> (results: [ProbeResult], evaluateNow: Bool) {
            let horizon = try await store.ingestHorizon()
            guard horizon > position else { return ([], false) }
            var results = try await store.ingested(from: position, to: horizon)
            if !seen.isEmpty {
                results.removeAll { seen.contains($0.id) }
                seen.removeAll()
            }
            position = horizon
            guard !results.isEmpty else { return ([], false) }
            metrics.record(results)
            return (results, await hub.ingest(results))
        }
        /// Becoming leader: what was ingested since the last step, then the stored decisions.
        /// Returns how many results the catch-up fed.
        func takeOver(store: PostgresCollectorStore, hub: CorrelationHub, epoch: Int64) async throws -> Int {
            let caughtUp = try await step(store: store, hub: hub).results.count
            await hub.adopt(try await StoredDecisions.read(from: store), epoch: epoch)
            return caughtUp
        }
        func rebuild(store: PostgresCollectorStore, config: CollectorConfig) async throws -> CorrelationEngine {
            // The horizon first: everything below it is in the window read next; what is at or
            // above it and already read is remembered so following does not feed it twice.
            let horizon = try await store.ingestHorizon()
            let window = try await store.window(since: Date().addingTimeInterval(-config.correlation.sanitized.windowAge), horizon: horizon, limit: 1_000_000)
            let engine = try await rebuildEngine(store: store, config: config, recent: window.results)
            metrics.record(recent: window.results)
            reset(position: horizon, seen: window.atOrAbove)
            return engine
        }
    }

    /// - Parameter follower: the one that built the first engine (so following starts where it did).
    init(
        leadership: PostgresLeadership, store: PostgresCollectorStore, hub: CorrelationHub, trigger: WakeSignal, outbox: WakeSignal,
        follower: Follower,
        config: CollectorConfig, logger: Logger
    ) {
        self.leadership = leadership
        self.store = store
        self.hub = hub
        self.trigger = trigger
        self.outbox = outbox
        self.follower = follower
        self.config = config
        self.logger = logger
    }

    /// True while this collector leads and its engine was rebuilt for this leadership.
    var mayWrite: Bool {
        let snapshot = leadership.snapshot
        guard case .leader(let epoch) = snapshot.role else { return false }
        return readyEpoch.withLock { $0 } == epoch
    }

    /// Whether an evaluation that started from the decisions adopted for `adoptedEpoch` may be
    /// stored: only while this collector leads with that very epoch.
    func mayStore(adoptedEpoch: Int64?) -> Bool {
        guard case .leader(let epoch) = leadership.snapshot.role else { return false }
        return adoptedEpoch == epoch
    }

    var isLeader: Bool { leadership.snapshot.isLeader }

    var view: ClusterView {
        let snapshot = leadership.snapshot
        return ClusterView(collector: leadership.name, role: snapshot.isLeader ? "leader" : "standby", leader: snapshot.leaderName, epoch: snapshot.epoch)
    }

    func run() async throws {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                group.addTask { await self.leadership.run() }
                group.addTask { await self.followRoles() }
                group.addTask { await self.follow() }
            }
        }
    }

    private func followRoles() async {
        for await role in leadership.roleChanges {
            outbox.fire()
            guard case .leader(let epoch) = role else {
                readyEpoch.withLock { $0 = nil }
                continue
            }
            let clock = ContinuousClock()
            let started = clock.now
            while !Task.isCancelled && leadership.snapshot.role == role {
                do {
                    let caughtUp = try await follower.takeOver(store: store, hub: hub, epoch: epoch)
                    readyEpoch.withLock { $0 = epoch }
                    let elapsed = started.duration(to: clock.now)
                    logger.notice(
                        "Leader engine took over the stored decisions",
                        metadata: [
                            "leader.epoch": "\(epoch)", "caught_up_results": "\(caughtUp)",
                            "takeover_ms": "\(elapsed.wholeMilliseconds)",
                        ])
                    trigger.fire()
                    break
                } catch {
                    logger.error("Cannot take over the engine after becoming leader; retrying", metadata: ["error": "\(error)"])
                    try? await Task.sleep(for: .milliseconds(500))
                }
            }
        }
    }

    private func follow() async {
        let notifications = store.ingestNotifications()
        let (ticks, tick) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        await withDiscardingTaskGroup { group in
            // NOTIFY wakes following at once; a tick every second covers a lost notification.
            group.addTask {
                for await _ in notifications { tick.yield() }
            }
            group.addTask {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    tick.yield()
                }
                tick.finish()
            }
            group.addTask {
                for await _ in ticks {
                    do {
                        if try await self.follower.step(store: self.store, hub: self.hub).evaluateNow { self.trigger.fire() }
                    } catch {
                        // Nothing followed is the database's silence, not the agents'.
                        await self.hub.pushRefusedByStorage()
                        self.logger.warning("Cannot follow ingest from the database; retrying", metadata: ["error": "\(error)"])
                    }
                }
            }
        }
    }
}

extension ClusterCoordinator: CustomStringConvertible {
    var description: String { "ClusterCoordinator(\(leadership.name))" }
}
