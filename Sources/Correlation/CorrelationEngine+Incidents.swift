import Foundation
import SondeCore

// The incident state machine of one component (rules on `CorrelationEngine`).
extension CorrelationEngine {
    /// One step of a component's incident: open after `open_after` problem verdicts in a row (only
    /// for an eligible component, and at region scope only once that scope is settled); while
    /// investigating, escalate scope or severity, keep membership current, or move to
    /// `monitoring` once recovered in runs; from `monitoring`, resolve or relapse.
    func stepIncident(
        _ track: inout ComponentTrack, component: String, status: ComponentStatus, scope: ProblemScope?,
        evidence: Evidence, hasNewData: Bool, eligible: Bool, scopeSettled: Bool, recovery: RecoveryFacts, t: Double,
        failingNow: Bool = true, now: Date, changed: inout [Incident], events: inout [AlertEvent]
    ) {
        // Nobody reporting, or nothing new since the last tick: no step of the hysteresis.
        guard status != .unknown, hasNewData else { return }
        let bad = status != .operational
        if bad {
            track.badStreak += 1
            if track.badSince == nil { track.badSince = t }
        } else {
            track.badStreak = 0
            track.badSince = nil
        }
        let cfg = config

        guard var incident = track.incident else {
            if bad, let scope, eligible, track.badStreak >= cfg.openAfter, scope == .platform || scopeSettled {
                let id = "\(component).\(Int64((now.timeIntervalSince1970 * 1000).rounded()))"
                let message = Self.describe(component: component, status: status, scope: scope, evidence: evidence)
                var opened = Incident(
                    id: id, component: component, status: .investigating, scope: scope, severity: status,
                    regions: evidence.failingRegions, agents: evidence.failingAgents, openedAt: now, updatedAt: now,
                    evidence: evidence, eventSeq: 0,
                    updates: [IncidentUpdate(time: now, status: .investigating, scope: scope, severity: status, message: message)])
                emit(.incidentOpened, &opened, now: now, summary: "opened: " + message, events: &events)
                track.incident = opened
                track.pendingCount = 0
                track.pendingMembership = nil
                changed.append(opened)
            }
            return
        }

        switch incident.status {
        case .investigating:
            if recovery.canMonitor {
                // Runs up to the newest failure belong to this incident from now on.
                track.horizon = max(track.horizon, recovery.newestFailure)
                transition(
                    &incident, to: .monitoring, scope: incident.scope, severity: incident.severity, evidence: evidence,
                    message: "\(component): recovering, \(recovery.cleanRuns) runs without a failure and every agent passes; monitoring",
                    now: now, events: &events)
                track.incident = incident
                track.pendingCount = 0
                track.pendingMembership = nil
                changed.append(incident)
            } else if bad, let scope, Self.isEscalation(scope: scope, severity: status, of: incident) {
                if track.pendingScope == scope && track.pendingSeverity == status {
                    track.pendingCount += 1
                } else {
                    track.pendingScope = scope
                    track.pendingSeverity = status
                    track.pendingCount = 1
                }
                if track.pendingCount >= cfg.openAfter {
                    let newScope: ProblemScope = scope == .platform ? .platform : incident.scope
                    let newSeverity = max(status, incident.severity)
                    let message = Self.describe(component: component, status: newSeverity, scope: newScope, evidence: evidence)
                    let verb = newScope != incident.scope ? "spread: " : "worse: "
                    transition(
                        &incident, to: .investigating, scope: newScope, severity: newSeverity, evidence: evidence,
                        message: verb + message, now: now, events: &events)
                    track.incident = incident
                    track.pendingCount = 0
                    track.pendingMembership = nil
                    changed.append(incident)
                }
            } else if bad {
                track.pendingCount = 0
                keepMembershipCurrent(
                    &track, &incident, evidence: evidence, failingNow: failingNow, now: now, changed: &changed, events: &events)
            } else {
                track.pendingCount = 0
                track.pendingMembership = nil
            }
        case .monitoring:
            if bad, let scope, track.badStreak >= cfg.openAfter {
                let message = Self.describe(component: component, status: status, scope: scope, evidence: evidence)
                let widest: ProblemScope = incident.scope == .platform ? .platform : scope
                transition(
                    &incident, to: .investigating, scope: widest, severity: max(status, incident.severity), evidence: evidence,
                    message: "relapse: " + message, now: now, events: &events)
                track.incident = incident
                changed.append(incident)
            } else if !bad, recovery.canResolve {
                resolve(&track, &incident, now: now, evidence: evidence, changed: &changed, events: &events)
            }
        case .resolved:
            // A stored incident restored as resolved is not open; forget it.
            track.incident = nil
        }
    }

    /// Regions, agents or failure codes of an investigating incident that differ from the
    /// evidence for `open_after` evaluations in a row are announced (`incident.updated`). A change
    /// that only drops members is announced only while some agent's latest run still fails
    /// (`failingNow`): otherwise it is the incident recovering region by region, which
    /// `monitoring` reports, and a fault that moved still fails where it went.
    private func keepMembershipCurrent(
        _ track: inout ComponentTrack, _ incident: inout Incident, evidence: Evidence, failingNow: Bool, now: Date,
        changed: inout [Incident], events: inout [AlertEvent]
    ) {
        let seen = ComponentTrack.Membership(
            regions: evidence.failingRegions, agents: evidence.failingAgents, codes: evidence.errorCodes.keys.sorted())
        let known = ComponentTrack.Membership(
            regions: incident.regions, agents: incident.agents, codes: incident.evidence.errorCodes.keys.sorted())
        let onlyDrops =
            Set(seen.regions).isSubset(of: known.regions) && Set(seen.agents).isSubset(of: known.agents)
            && Set(seen.codes).isSubset(of: known.codes)
        guard seen != known, !seen.regions.isEmpty, failingNow || !onlyDrops else {
            track.pendingMembership = nil
            track.membershipCount = 0
            return
        }
        if track.pendingMembership == seen {
            track.membershipCount += 1
        } else {
            track.pendingMembership = seen
            track.membershipCount = 1
        }
        guard track.membershipCount >= config.openAfter else { return }
        let change = [
            Self.difference("regions", known.regions, seen.regions), Self.difference("agents", known.agents, seen.agents),
            Self.difference("codes", known.codes, seen.codes),
        ].compactMap { $0 }.joined(separator: "; ")
        let message = Self.describe(component: incident.component, status: incident.severity, scope: incident.scope, evidence: evidence)
        transition(
            &incident, to: .investigating, scope: incident.scope, severity: incident.severity, evidence: evidence,
            message: "changed: \(change): " + message, now: now, events: &events)
        track.incident = incident
        track.pendingMembership = nil
        track.membershipCount = 0
        changed.append(incident)
    }

    /// "agents +eu-2 −us-1", or nil when equal.
    static func difference(_ what: String, _ old: [String], _ new: [String]) -> String? {
        let added = Set(new).subtracting(old).sorted()
        let removed = Set(old).subtracting(new).sorted()
        guard !added.isEmpty || !removed.isEmpty else { return nil }
        return ([what] + added.map { "+" + $0 } + removed.map { "\u{2212}" + $0 }).joined(separator: " ")
    }

    private func resolve(
        _ track: inout ComponentTrack, _ incident: inout Incident, now: Date, evidence: Evidence,
        changed: inout [Incident], events: inout [AlertEvent]
    ) {
        incident.resolvedAt = now
        transition(
            &incident, to: .resolved, scope: incident.scope, severity: incident.severity, evidence: evidence,
            message: "\(incident.component): resolved, every agent passed its latest \(config.resolveRuns) runs", now: now,
            events: &events, type: .incidentResolved)
        track.incident = nil
        track.pendingCount = 0
        track.pendingMembership = nil
        changed.append(incident)
    }

    private func transition(
        _ incident: inout Incident, to status: IncidentStatus, scope: ProblemScope, severity: ComponentStatus,
        evidence: Evidence, message: String, now: Date, events: inout [AlertEvent], type: AlertEventType = .incidentUpdated
    ) {
        incident.status = status
        incident.scope = scope
        incident.severity = severity
        incident.updatedAt = now
        incident.evidence = evidence
        if status == .investigating {
            incident.regions = evidence.failingRegions
            incident.agents = evidence.failingAgents
        }
        incident.updates.append(IncidentUpdate(time: now, status: status, scope: scope, severity: severity, message: message))
        emit(type, &incident, now: now, summary: message, events: &events)
    }

    private func emit(_ type: AlertEventType, _ incident: inout Incident, now: Date, summary: String, events: inout [AlertEvent]) {
        incident.eventSeq += 1
        events.append(
            AlertEvent(
                id: "\(incident.id).\(incident.eventSeq)", type: type, occurredAt: now, component: incident.component,
                status: incident.status.rawValue, scope: incident.scope, regions: incident.regions, agents: incident.agents,
                evidence: incident.evidence, incident: incident, summary: summary))
    }

    /// While investigating, an incident only gets worse: a wider scope or a higher severity updates
    /// it; a milder verdict does not (it is usually the window draining during recovery, and
    /// recovery is what `monitoring` reports).
    static func isEscalation(scope: ProblemScope, severity: ComponentStatus, of incident: Incident) -> Bool {
        let wider = scope == .platform && incident.scope != .platform
        return wider || severity > incident.severity
    }

    /// One line for people: "files: partial outage in eu (3/9 agents failing, file_expired)".
    static func describe(component: String, status: ComponentStatus, scope: ProblemScope, evidence: Evidence) -> String {
        let words = status.rawValue.replacingOccurrences(of: "_", with: " ")
        let place = scope == .region ? "in " + evidence.failingRegions.joined(separator: ", ") : "platform-wide"
        var detail = "\(evidence.failingAgentCount)/\(evidence.reportingAgents) agents failing"
        if status == .degradedPerformance { detail = "\(evidence.degradedAgents)/\(evidence.reportingAgents) agents slow" }
        if evidence.singleAgent { detail += ", single agent" }
        if let p95 = evidence.latencyP95Ms { detail += ", p95 \(Int(p95.rounded())) ms" }
        let codes = evidence.errorCodes.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(3).map(\.key)
        if !codes.isEmpty { detail += ", " + codes.joined(separator: ", ") }
        let affects = evidence.affected.isEmpty ? "" : "; affects " + evidence.affected.joined(separator: ", ")
        return "\(component): \(words) \(place) (\(detail))\(affects)"
    }
}
