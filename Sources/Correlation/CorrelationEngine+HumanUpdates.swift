import Foundation
import SondeCore

// People's side of incidents: updates with a status and a message, incidents opened by hand for
// a problem Sonde cannot see, and the rules that keep a person's word against automatic
// transitions. Writes land in the engine like its own transitions and leave through the next
// `evaluate` output (`changedIncidents`, `events`), so they share one commit path and one outbox.
//
// Rules:
// - A person may set `investigating`, `identified`, `monitoring` or `resolved`, or only add a
//   message (status omitted: it stays). Every entry carries its author (the API token's name).
// - A person's status holds until the measurements change after it: the engine moves an
//   incident on from a person's `investigating`/`identified` to `monitoring` only after it
//   measured the fault after the person spoke, and back from a person's `monitoring` to
//   `investigating` only after it measured the component healthy after the person spoke; until
//   then a still-measured fault under a person's `monitoring` is shown as the incident's
//   `conflict`. From `monitoring` (a person's or its own) the engine still resolves once every
//   agent passes its latest `resolve_runs` runs: that is the recovery people wait for. Escalations ("spread", "worse") and membership changes are added
//   to the timeline and keep a person's `identified`.
// - An incident Sonde never measured (opened by a person, no automatic entry since) moves only by
//   people's updates.
// - A person's `resolved` closes the incident for good. While the component is still measured
//   as a problem it stays closed with `awaiting_recovery` and a `conflict` ("resolved by alice
//   while 2 of 2 agents still fail"), and no incident opens for it; once the component has been
//   measured operational `open_after` evaluations in a row, a returning fault opens a new one.

/// A person's update of an open incident (`POST /v1/incidents/{id}/updates`).
public struct HumanIncidentUpdate: Sendable, Hashable {
    public var incidentID: String
    /// nil: keep the incident's status, only add the message.
    public var status: IncidentStatus?
    public var message: String
    public var author: String

    public init(incidentID: String, status: IncidentStatus?, message: String, author: String) {
        self.incidentID = incidentID
        self.status = status
        self.message = message
        self.author = author
    }
}

/// An incident a person opens (`POST /v1/incidents`), e.g. for a problem no probe covers.
public struct HumanNewIncident: Sendable, Hashable {
    public var component: String
    public var title: String?
    public var message: String
    public var status: IncidentStatus
    public var severity: ComponentStatus
    /// Empty: platform-wide.
    public var regions: [String]
    public var author: String

    public init(
        component: String, title: String? = nil, message: String, status: IncidentStatus = .investigating,
        severity: ComponentStatus = .partialOutage, regions: [String] = [], author: String
    ) {
        self.component = component
        self.title = title
        self.message = message
        self.status = status
        self.severity = severity
        self.regions = regions
        self.author = author
    }
}

/// Why a person's incident write was refused. `field` names the input at fault.
public enum HumanUpdateError: Error, Sendable, Hashable, CustomStringConvertible {
    /// A field's value is not acceptable.
    case invalid(field: String, reason: String)
    /// No open incident has this id.
    case notFound(id: String)
    /// The incident is resolved; resolved incidents are closed for good.
    case closed(id: String)
    /// The component already has an open incident: update that one.
    case alreadyOpen(component: String, id: String)
    /// The incident's timeline has `HumanUpdateLimits.updatesPerIncident` entries already.
    case timelineFull(id: String)

    public var description: String {
        switch self {
        case .invalid(let field, let reason): "\(field): \(reason)"
        case .notFound(let id): "no open incident \"\(id)\""
        case .closed(let id): "incident \"\(id)\" is resolved and closed for good; open a new one with `sonde incidents create`"
        case .alreadyOpen(let component, let id):
            "component \"\(component)\" already has open incident \"\(id)\"; add an update to it with `sonde incidents update \(id)`"
        case .timelineFull(let id):
            "incident \"\(id)\" has \(HumanUpdateLimits.updatesPerIncident) timeline entries, the most one incident keeps; resolve it and open a new one"
        }
    }
}

/// Bounds on what people write (the page and every webhook carry it).
public enum HumanUpdateLimits {
    public static let messageCharacters = 2_000
    public static let titleCharacters = 200
    public static let nameCharacters = 64
    public static let regions = 32
    /// Every event carries the whole incident, so its timeline stays bounded.
    public static let updatesPerIncident = 200
}

/// What people said about a component's incidents, as the state machine needs it.
struct HumanTrack {
    /// Resolved by a person while still measured as a problem: nothing opens until it recovers.
    var closed: Incident?
    /// Operational verdicts in a row since that resolution.
    var goodStreak = 0
    /// Measured a problem / a recovered component (``RecoveryFacts/canMonitor``) since a person
    /// last set the status.
    var seenBad = false
    var seenGood = false
}

extension HumanIncidentUpdate {
    func validated() throws(HumanUpdateError) -> HumanIncidentUpdate {
        var copy = self
        copy.message = try HumanNewIncident.text(message, field: "message", limit: HumanUpdateLimits.messageCharacters, required: true)!
        copy.author = try HumanNewIncident.text(author, field: "author", limit: HumanUpdateLimits.nameCharacters, required: true)!
        return copy
    }
}

extension HumanNewIncident {
    func validated() throws(HumanUpdateError) -> HumanNewIncident {
        var copy = self
        copy.component = try Self.name(component, field: "component")
        copy.title = try Self.text(title, field: "title", limit: HumanUpdateLimits.titleCharacters, required: false)
        copy.message = try Self.text(message, field: "message", limit: HumanUpdateLimits.messageCharacters, required: true)!
        copy.author = try Self.text(author, field: "author", limit: HumanUpdateLimits.nameCharacters, required: true)!
        guard status != .resolved else { throw .invalid(field: "status", reason: "a new incident cannot start resolved; expected investigating, identified or monitoring") }
        guard [.degradedPerformance, .partialOutage, .majorOutage].contains(severity) else {
            throw .invalid(field: "severity", reason: "expected degraded_performance, partial_outage or major_outage, got \(severity.rawValue)")
        }
        guard regions.count <= HumanUpdateLimits.regions else { throw .invalid(field: "regions", reason: "at most \(HumanUpdateLimits.regions) regions") }
        copy.regions = try Array(Set(regions.map { region throws(HumanUpdateError) in try Self.name(region, field: "regions") })).sorted()
        return copy
    }

    /// Trimmed text without control characters other than newline and tab, or noncharacters, within `limit` characters.
    static func text(_ value: String?, field: String, limit: Int, required: Bool) throws(HumanUpdateError) -> String? {
        let trimmed = (value ?? "").trimmingCharacters(in: .whitespacesAndNewlines)
        if trimmed.isEmpty {
            if required { throw .invalid(field: field, reason: "is required and must not be empty") }
            return nil
        }
        guard trimmed.count <= limit else { throw .invalid(field: field, reason: "is \(trimmed.count) characters; at most \(limit)") }
        guard !trimmed.unicodeScalars.contains(where: { $0.properties.generalCategory == .control && $0 != "\n" && $0 != "\t" }) else {
            throw .invalid(field: field, reason: "contains control characters")
        }
        // Bidi embeddings, overrides and isolates reorder the text around them wherever a reader
        // applies them (a feed reader, a terminal): the "Trojan Source" set agents' text may not
        // carry either. The marks (LRM, RLM, ALM) that right-to-left writing needs are fine.
        guard !trimmed.unicodeScalars.contains(where: { (0x202A...0x202E).contains($0.value) || (0x2066...0x2069).contains($0.value) }) else {
            throw .invalid(field: field, reason: "contains bidirectional embedding, override or isolate characters (U+202A…U+202E, U+2066…U+2069)")
        }
        // Noncharacters (U+FFFE, U+FFFF, U+FDD0…U+FDEF, …) are not text, and XML forbids some of them.
        guard !trimmed.unicodeScalars.contains(where: { $0.properties.isNoncharacterCodePoint }) else {
            throw .invalid(field: field, reason: "contains Unicode noncharacters (such as U+FFFF)")
        }
        return trimmed
    }

    /// A component or region name: 1…64 of letters, digits, `.`, `_`, `-`.
    static func name(_ value: String, field: String) throws(HumanUpdateError) -> String {
        // The rule agents' results follow (one rule for component names, and region names alike).
        if let reason = ResultText.componentProblem(value) { throw .invalid(field: field, reason: reason) }
        return value
    }
}

extension CorrelationEngine {
    /// Applies a person's update to an open incident and returns the incident after it. The
    /// change and its event (`incident.updated`, or `incident.resolved` for `resolved`) leave
    /// with the next `evaluate` output.
    public mutating func applyHumanUpdate(_ request: HumanIncidentUpdate, now: Date) throws(HumanUpdateError) -> Incident {
        let update = try request.validated()
        guard let c = tracks.firstIndex(where: { $0.incident?.id == update.incidentID }), var incident = tracks[c].incident else {
            if tracks.contains(where: { $0.human.closed?.id == update.incidentID }) { throw .closed(id: update.incidentID) }
            throw .notFound(id: update.incidentID)
        }
        // A resolution is always accepted, so a full timeline can still be closed.
        guard incident.updates.count < HumanUpdateLimits.updatesPerIncident || update.status == .resolved else {
            throw .timelineFull(id: incident.id)
        }
        var track = tracks[c]
        let status = update.status ?? incident.status
        if status != incident.status {
            track.human.seenBad = false
            track.human.seenGood = false
        }
        incident.status = status
        incident.updatedAt = now
        incident.updates.append(
            IncidentUpdate(time: now, status: status, scope: incident.scope, severity: incident.severity, message: update.message, author: update.author))
        let summary = "\(incident.component): \(status.rawValue) (\(update.author)): \(update.message.prefix(200))"
        if status == .resolved {
            incident.resolvedAt = now
            incident.resolvedBy = update.author
            incident.conflict = nil
            // As when Sonde resolves it (a person's resolution listed only the region and agent
            // failing at that moment).
            keepEveryMember(track, &incident)
            // Still measured as a problem: the resolution stands, the disagreement is shown, and
            // nothing opens until the component is healthy again.
            // Measured, not shown: the verdict holds an open incident's severity while it is
            // investigated, and shows an affecting component's problem; neither is a fault
            // still measured here (a resolution then read "CONFLICT … while 0 of 2 agents still fail").
            if let verdict = verdictList.first(where: { $0.component == incident.component }), let measured = track.measured, measured != .operational, measured != .unknown {
                incident.awaitingRecovery = true
                incident.conflict = Self.conflictText(set: "resolved", by: update.author, status: measured, evidence: verdict.evidence)
                track.human.closed = incident
                track.human.goodStreak = 0
            }
            emit(.incidentResolved, &incident, now: now, summary: summary, events: &humanEvents)
            if track.human.closed != nil { track.human.closed = incident }
            track.incident = nil
            track.pendingCount = 0
            track.forgetMembershipChanges()
        } else {
            if status == .monitoring, let verdict = verdictList.first(where: { $0.component == incident.component }),
                let measured = track.measured, measured != .operational, measured != .unknown
            {
                incident.conflict = Self.conflictText(set: "monitoring", by: update.author, status: measured, evidence: verdict.evidence)
            } else if status != .monitoring {
                incident.conflict = nil
            }
            emit(.incidentUpdated, &incident, now: now, summary: summary, events: &humanEvents)
            track.incident = incident
        }
        tracks[c] = track
        humanChanged.append(incident)
        return incident
    }

    /// Opens an incident a person reports, for a component without an open one, and returns it.
    /// Sonde's later measurements of that component join this incident (no second one opens).
    public mutating func openHumanIncident(_ request: HumanNewIncident, now: Date) throws(HumanUpdateError) -> Incident {
        let new = try request.validated()
        let c = Int(internComponent(new.component))
        if let open = tracks[c].incident { throw .alreadyOpen(component: new.component, id: open.id) }
        var id = "\(new.component).\(Int64((now.timeIntervalSince1970 * 1000).rounded()))"
        if tracks[c].human.closed?.id == id { id += ".1" }
        let scope: ProblemScope = new.regions.isEmpty ? .platform : .region
        var incident = Incident(
            id: id, component: new.component, status: new.status, scope: scope, severity: new.severity, regions: new.regions, agents: [],
            openedAt: now, updatedAt: now, evidence: Evidence(failingRegions: new.regions), eventSeq: 0,
            updates: [IncidentUpdate(time: now, status: new.status, scope: scope, severity: new.severity, message: new.message, author: new.author)],
            title: new.title, openedBy: new.author)
        // A person opening a new incident takes over from a resolution still waiting for recovery.
        if var closed = tracks[c].human.closed {
            closed.awaitingRecovery = false
            closed.conflict = nil
            humanChanged.append(closed)
        }
        emit(.incidentOpened, &incident, now: now, summary: "opened (\(new.author)): \(new.title ?? new.message)".prefix(300).description, events: &humanEvents)
        tracks[c].incident = incident
        tracks[c].human = HumanTrack()
        tracks[c].pendingCount = 0
        tracks[c].membershipAnnounced(at: -.infinity)
        humanChanged.append(incident)
        return incident
    }

    /// The open or person-resolved incident with this id, as the engine holds it.
    public func heldIncident(id: String) -> Incident? {
        tracks.lazy.compactMap { $0.incident?.id == id ? $0.incident : $0.human.closed?.id == id ? $0.human.closed : nil }.first
    }

    /// People's writes since the last call, for `evaluate`'s output.
    mutating func takeHumanChanges() -> ([Incident], [AlertEvent]) {
        defer {
            humanChanged = []
            humanEvents = []
        }
        return (humanChanged, humanEvents)
    }

    /// Each incident once, in its latest version (a person's update and a transition can both
    /// change one incident in an evaluation), in the order of their last change.
    static func latestByID(_ incidents: [Incident]) -> [Incident] {
        guard incidents.count > 1 else { return incidents }
        var last: [String: Int] = [:]
        for (i, incident) in incidents.enumerated() { last[incident.id] = i }
        return incidents.indices.filter { last[incidents[$0].id] == $0 }.map { incidents[$0] }
    }

    /// After a restart: person-resolved incidents still waiting for their component to recover.
    mutating func restoreResolvedByPeople(_ incidents: [Incident]) {
        for incident in incidents.sorted(by: { $0.openedAt < $1.openedAt }) where incident.awaitingRecovery && incident.status == .resolved {
            let c = Int(internComponent(incident.component))
            guard tracks[c].incident == nil else { continue }
            tracks[c].human.closed = incident
        }
    }

    // MARK: Rules used by `stepIncident`

    /// One step of a component whose incident a person resolved while it was still failing.
    /// Returns true while that resolution holds (nothing else may happen to the component).
    func stepClosedByPerson(
        _ track: inout ComponentTrack, bad: Bool, status: ComponentStatus, evidence: Evidence, changed: inout [Incident]
    ) -> Bool {
        guard var closed = track.human.closed else { return false }
        if bad {
            track.human.goodStreak = 0
            let text = Self.conflictText(set: "resolved", by: closed.resolvedBy ?? "a person", status: status, evidence: evidence)
            if closed.conflict != text {
                closed.conflict = text
                changed.append(closed)
            }
            track.human.closed = closed
            return true
        }
        track.human.goodStreak += 1
        if closed.conflict != nil {
            // The fault is no longer measured: the disagreement is over.
            closed.conflict = nil
            changed.append(closed)
        }
        guard track.human.goodStreak >= config.openAfter else {
            track.human.closed = closed
            return true
        }
        closed.awaitingRecovery = false
        changed.append(closed)
        track.human = HumanTrack()
        return false
    }

    /// Whether a person's status on `incident` still holds against an automatic move to `target`.
    func humanHolds(_ incident: Incident, _ human: HumanTrack, against target: IncidentStatus) -> Bool {
        // Never measured: only people move it.
        guard incident.updates.contains(where: { !$0.isHuman }) else { return true }
        guard Self.statusSetter(incident)?.isHuman == true else { return false }
        switch target {
        case .monitoring: return !human.seenBad
        case .investigating, .identified: return !human.seenGood
        // Measured healthy after a person's `monitoring` is the progress they wait for.
        case .resolved: return false
        }
    }

    /// The entry that set the incident's current status (the first of the latest run of entries
    /// with that status).
    static func statusSetter(_ incident: Incident) -> IncidentUpdate? {
        var setter: IncidentUpdate?
        for update in incident.updates.reversed() {
            guard update.status == incident.status else { break }
            setter = update
        }
        return setter
    }

    /// A person's status against a measured fault, while it stays so.
    func noteConflict(_ track: inout ComponentTrack, _ incident: inout Incident, evidence: Evidence, status: ComponentStatus, changed: inout [Incident]) {
        let text = Self.conflictText(set: incident.status.rawValue, by: Self.statusSetter(incident)?.author ?? "a person", status: status, evidence: evidence)
        guard incident.conflict != text else { return }
        incident.conflict = text
        track.incident = incident
        changed.append(incident)
    }

    /// "resolved by alice while 2 of 2 agents still fail".
    static func conflictText(set status: String, by author: String, status verdict: ComponentStatus, evidence: Evidence) -> String {
        let measured =
            verdict == .degradedPerformance
            ? "\(evidence.degradedAgents) of \(evidence.reportingAgents) agents are still slow"
            : "\(evidence.failingAgentCount) of \(evidence.reportingAgents) agents still fail"
        return "\(status) by \(author) while \(measured)"
    }
}
