import Foundation
import SondeCore

// The incident state machine of one component (rules on `CorrelationEngine`).
extension CorrelationEngine {
    func stepIncident(
        _ track: inout ComponentTrack, component: String, status: ComponentStatus, scope: ProblemScope?,
        evidence: Evidence, hasNewData: Bool, now: Date, changed: inout [Incident], events: inout [AlertEvent]
    ) {
        // Nobody reporting, or nothing new since the last tick: no step of the hysteresis.
        guard status != .unknown, hasNewData else { return }
        let bad = status != .operational
        if bad {
            track.badStreak += 1
            track.goodStreak = 0
            track.goodSince = nil
        } else {
            track.goodStreak += 1
            track.badStreak = 0
            if track.goodSince == nil { track.goodSince = now.timeIntervalSince1970 }
        }
        let cfg = config

        guard var incident = track.incident else {
            if bad, let scope, track.badStreak >= cfg.openAfter {
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
                changed.append(opened)
            }
            return
        }

        switch incident.status {
        case .investigating:
            if !bad {
                if track.goodStreak >= cfg.resolveAfter {
                    resolve(&track, &incident, now: now, evidence: evidence, changed: &changed, events: &events)
                } else {
                    transition(
                        &incident, to: .monitoring, scope: incident.scope, severity: incident.severity, evidence: evidence,
                        message: "\(component): recovering, all reporting agents pass; monitoring", now: now, events: &events)
                    track.incident = incident
                    changed.append(incident)
                }
                track.pendingCount = 0
            } else if let scope, Self.isEscalation(scope: scope, severity: status, of: incident) {
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
                    changed.append(incident)
                }
            } else {
                track.pendingCount = 0
            }
        case .monitoring:
            if !bad, track.goodStreak >= cfg.resolveAfter {
                resolve(&track, &incident, now: now, evidence: evidence, changed: &changed, events: &events)
            } else if bad, let scope, track.badStreak >= cfg.openAfter {
                let message = Self.describe(component: component, status: status, scope: scope, evidence: evidence)
                transition(
                    &incident, to: .investigating, scope: scope, severity: status, evidence: evidence,
                    message: "relapse: " + message, now: now, events: &events)
                track.incident = incident
                changed.append(incident)
            }
        case .resolved:
            // A stored incident restored as resolved is not open; forget it.
            track.incident = nil
        }
    }

    private func resolve(
        _ track: inout ComponentTrack, _ incident: inout Incident, now: Date, evidence: Evidence,
        changed: inout [Incident], events: inout [AlertEvent]
    ) {
        incident.resolvedAt = now
        track.lastRecovery = ComponentTrack.Recovery(
            at: track.goodSince ?? now.timeIntervalSince1970, platform: incident.scope == .platform, regions: Set(incident.regions))
        transition(
            &incident, to: .resolved, scope: incident.scope, severity: incident.severity, evidence: evidence,
            message: "\(incident.component): resolved, operational for \(config.resolveAfter) evaluations", now: now,
            events: &events, type: .incidentResolved)
        track.incident = nil
        track.pendingCount = 0
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
        if let p95 = evidence.latencyP95Ms { detail += ", p95 \(Int(p95.rounded())) ms" }
        let codes = evidence.errorCodes.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }.prefix(3).map(\.key)
        if !codes.isEmpty { detail += ", " + codes.joined(separator: ", ") }
        return "\(component): \(words) \(place) (\(detail))"
    }
}
