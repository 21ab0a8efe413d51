import Foundation
import SondeCore

extension CorrelationEngine {
    /// A standby becoming leader: keep the windows it has followed, take the decisions the last
    /// leader stored. The engine then stands as one rebuilt from the database would (the open
    /// incidents continue under their ids, agent states carry over, nothing already announced is
    /// announced again) without re-reading and re-ingesting the window: its own incidents, streaks
    /// and agent states, never stored, are dropped; results, clock offsets and control-probe
    /// episodes, which come from the data alone, stay.
    public mutating func adoptStoredDecisions(openIncidents: [Incident], agentStates: [AgentHealth], resolved: [Incident]) {
        tracks = Array(repeating: ComponentTrack(), count: tracks.count)
        humanChanged = []
        humanEvents = []
        health = []
        restoredHealth = [:]
        agentOrderDirty = true
        for a in agentCleanStreak.indices { agentCleanStreak[a] = 0 }
        for state in agentStates {
            restoredHealth[state.agent] = state
            // Agents it knows (enrolled ones all are): one silent since before its window is judged
            // from when it was last seen, as after a rebuild.
            if let a = agentIndex[state.agent].map(Int.init), agentLastReceived[a] == -.infinity, let seen = state.lastSeen {
                agentLastReceived[a] = seen.timeIntervalSince1970
            }
        }
        restoreOpenIncidents(openIncidents)
        restoreResolved(resolved)
    }

    /// A take-over follows the last leader's death, freeze or loss of its database, and a
    /// restart follows this collector's own downtime: results pushed meanwhile were never
    /// stored, and an agent sends again only after its push time-out (a frozen leader held the
    /// push) or its back-off (the collector refused connections). That silence is the
    /// collector's, not the agents': an agent not judged silent before has its silence counted
    /// from `date` (the take-over or start, plus that allowance), so no `agent.silent` pages for
    /// a fleet that was pushing all along. One judged silent before stays so, and one never
    /// heard from is judged as before.
    public mutating func countSilence(from date: Date) {
        let from = date.timeIntervalSince1970
        collectorGapUntil = max(collectorGapUntil, from)
        // Agents never heard from are left as they are: nothing of theirs was held up.
        for a in agentIDs.indices where restoredHealth[agentIDs[a]]?.state != .silent && agentLastReceived[a] > -.infinity {
            agentSilenceCountedFrom[a] = max(agentSilenceCountedFrom[a], from)
        }
    }

    /// The stored open incidents, one per component (the most recently opened).
    mutating func restoreOpenIncidents(_ incidents: [Incident]) {
        for incident in incidents where incident.status != .resolved {
            let c = Int(internComponent(incident.component))
            componentIsWatched[c] = true
            // Never two open incidents per component: keep the most recently opened.
            if let existing = tracks[c].incident, existing.openedAt > incident.openedAt { continue }
            tracks[c].incident = incident
            // Its fault has been on since it opened, not since this start: "since 14:08", not the
            // restart's time, in the texts that follow (found by the integrations review).
            if incident.status.isUnderWay {
                tracks[c].badSince = incident.openedAt.timeIntervalSince1970
            }
            // Recovering when stored: its failures (up to about when it went to monitoring) stay
            // out of the verdicts, as they did before the restart.
            // (A person's `monitoring` set while the fault was measured moved no horizon.)
            if incident.status == .monitoring, Self.statusSetter(incident)?.isHuman != true {
                tracks[c].horizon = incident.updatedAt.timeIntervalSince1970
                // Its newest failure was no later: resolution's clean stretch counts from there.
                tracks[c].newestBad = tracks[c].horizon
            }
        }
    }

    /// Stored resolved incidents (the newest first or in any order): those a person resolved
    /// while the fault was measured hold their component (``restoreResolvedByPeople(_:)``), and
    /// each component's newest automatic resolution is its flap memory again
    /// (``ComponentTrack/lastResolution``). Without it, a restart forgot that a fault had come
    /// back after a pause, and an incident held in `monitoring` for that resolved at once.
    mutating func restoreResolved(_ incidents: [Incident]) {
        restoreResolvedByPeople(incidents)
        var newest: [Int: Incident] = [:]
        for incident in incidents where incident.status == .resolved && incident.openedBy == IncidentUpdate.automatic && incident.resolvedBy == nil {
            guard let resolvedAt = incident.resolvedAt else { continue }
            let c = Int(internComponent(incident.component))
            if let kept = newest[c], let keptAt = kept.resolvedAt, keptAt >= resolvedAt { continue }
            newest[c] = incident
        }
        for (c, incident) in newest {
            guard let resolvedAt = incident.resolvedAt?.timeIntervalSince1970 else { continue }
            // Its newest failure is not stored: no later than when it went to `monitoring`.
            let recovered = incident.updates.last { $0.status == .monitoring && $0.author == IncidentUpdate.automatic }?.time
            let newestBad = recovered?.timeIntervalSince1970 ?? resolvedAt
            if let open = tracks[c].incident {
                // Already back: the gap it came back after, as the evaluation that opened it read it.
                let opened = open.openedAt.timeIntervalSince1970
                if opened > resolvedAt, opened - resolvedAt <= config.flapMemory {
                    tracks[c].carriedLull = max(tracks[c].carriedLull, opened - newestBad)
                }
            } else {
                tracks[c].lastResolution = (resolvedAt, newestBad, 0)
            }
        }
    }
}
