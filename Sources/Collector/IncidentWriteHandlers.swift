import CollectorAPI
import Correlation
import Foundation
import Hummingbird
import SondeCore

// People's incident writes (admin token): the engine applies them and the evaluator stores them
// with their outbox events in its next commit; the answer waits for that commit.
extension CollectorAPI {
    /// Bodies are small JSON objects; anything larger is refused before parsing.
    static let maxIncidentBodyBytes = 16 * 1024
    /// How long an answer waits for the evaluator to store a write.
    static let incidentCommitWait: Duration = .seconds(10)

    /// `POST /v1/incidents/{id}/updates` {status?, message}.
    func updateIncident(id: String, _ request: Request, author: String) async throws -> Response {
        try refuseOnStandby()
        let body = try await Self.decodeBody(IncidentUpdateRequest.self, request)
        let status = try body.status.map { raw throws(APIError) in try Self.incidentStatus(raw) }
        let update = HumanIncidentUpdate(incidentID: id, status: status, message: body.message, author: author)
        let applied: (incident: Incident, evaluation: Int)
        do { applied = try await hub.applyHumanUpdate(update) } catch .notFound {
            // Not open in the engine: resolved ones are closed for good, others do not exist.
            if let record = try await store.incident(id: id), !record.isOpen { throw Self.refusal(.closed(id: id)) }
            throw Self.refusal(.notFound(id: id))
        } catch { throw Self.refusal(error) }
        logger.notice(
            "Incident updated by a person",
            metadata: ["incident.id": .string(id), "incident.status": .string(applied.incident.status.rawValue), "author": .string(author)])
        let stored = try await waitForCommit(applied.evaluation)
        await forgetPublicPages()
        return JSONResponse.make(applied.incident, status: stored ? .ok : .accepted)
    }

    /// `POST /v1/incidents` {component | components, title?, message, status?, severity?, regions?}.
    func createIncident(_ request: Request, author: String) async throws -> Response {
        try refuseOnStandby()
        let body = try await Self.decodeBody(IncidentCreateRequest.self, request)
        let components = (body.components ?? []) + (body.component.map { [$0] } ?? [])
        guard !components.isEmpty else { throw Self.badField("component", "is required (or components: a list)") }
        guard components.count <= 20, Set(components).count == components.count else {
            throw Self.badField("components", "expected 1…20 different components")
        }
        let status = try body.status.map { raw throws(APIError) in try Self.incidentStatus(raw) } ?? .investigating
        let severity: ComponentStatus
        if let raw = body.severity {
            guard let parsed = ComponentStatus(rawValue: raw) else {
                throw Self.badField("severity", "expected degraded_performance, partial_outage or major_outage, got \"\(raw.prefix(80))\"")
            }
            severity = parsed
        } else {
            severity = .partialOutage
        }
        let requests = components.map {
            HumanNewIncident(
                component: $0, title: body.title, message: body.message, status: status, severity: severity, regions: body.regions ?? [],
                author: author)
        }
        let opened: (incidents: [Incident], evaluation: Int)
        do { opened = try await hub.openHumanIncidents(requests) } catch { throw Self.refusal(error) }
        for incident in opened.incidents {
            logger.notice(
                "Incident opened by a person", metadata: ["incident.id": .string(incident.id), "component": .string(incident.component), "author": .string(author)])
        }
        let stored = try await waitForCommit(opened.evaluation)
        await forgetPublicPages()
        return JSONResponse.make(IncidentsResponse(incidents: opened.incidents), status: stored ? .created : .accepted)
    }

    /// A person's word shows on the public pages at once (they are otherwise made every 5 s).
    private func forgetPublicPages() async {
        await publicSnapshots.forget()
        await publicPages.forget()
    }

    /// With several collectors only the leader stores what its engine changes: a standby refuses a
    /// person's write (503 `not_leader`, Retry-After 1 s) instead of accepting one it would lose.
    /// Behind a load balancer the retry usually reaches the leader; `sonde` retries by itself.
    private func refuseOnStandby() throws(APIError) {
        guard let cluster, !cluster.mayWrite else { return }
        let view = cluster.view
        var error = APIError(
            .serviceUnavailable, "not_leader",
            "collector \(view.collector) is on standby and incident writes go to the leader (\(view.leader ?? "none elected yet")); retry, through the load balancer or at the leader")
        error.headers[.retryAfter] = "1"
        throw error
    }

    /// Wakes the evaluator and waits (bounded) until it stored evaluation `n`; false on time-out
    /// (the write is in the engine and the evaluator keeps retrying to store it). Throws 503
    /// `not_leader` when this collector lost the leadership before storing it: the write is gone
    /// (the new leader starts from the database), so a 202 would tell the person it was kept.
    private func waitForCommit(_ n: Int) async throws(APIError) -> Bool {
        trigger.fire()
        let hub = hub
        switch await Self.commitOutcome(of: n, within: Self.incidentCommitWait, read: { await (hub.committed, hub.discarded) }) {
        case .stored:
            return true
        case .pending:
            logger.warning("A person's incident write is not stored yet; the evaluator retries it", metadata: ["evaluation": "\(n)"])
            return false
        case .lost:
            logger.warning("A person's incident write was not stored: this collector lost the leadership first", metadata: ["evaluation": "\(n)"])
            var error = APIError(
                .serviceUnavailable, "not_leader",
                "this collector stopped being the leader before it stored the write, so it was not kept; retry, through the load balancer or at the new leader")
            error.headers[.retryAfter] = "1"
            throw error
        }
    }

    enum CommitOutcome: Equatable { case stored, pending, lost }

    /// Whether evaluation `n` was stored, thrown away unstored, or neither within `wait`, from
    /// `read`'s (committed, discarded) evaluation numbers.
    static func commitOutcome(of n: Int, within wait: Duration, read: () async -> (committed: Int, discarded: Int)) async -> CommitOutcome {
        let deadline = ContinuousClock.now + wait
        while true {
            let (committed, discarded) = await read()
            if committed >= n { return .stored }
            if discarded >= n { return .lost }
            if ContinuousClock.now >= deadline { return .pending }
            try? await Task.sleep(for: .milliseconds(10))
        }
    }

    static func incidentStatus(_ raw: String) throws(APIError) -> IncidentStatus {
        guard let status = IncidentStatus(rawValue: raw) else {
            throw badField("status", "expected investigating, identified, monitoring or resolved, got \"\(raw.prefix(80))\"")
        }
        return status
    }

    static func decodeBody<T: Decodable>(_ type: T.Type, _ request: Request) async throws(APIError) -> T {
        if let contentType = request.headers[.contentType],
            contentType.split(separator: ";").first?.trimmingCharacters(in: .whitespaces).lowercased() != "application/json"
        {
            throw APIError(.unsupportedMediaType, "unsupported_media_type", "Content-Type is \"\(contentType)\"; send application/json")
        }
        let data: Data
        do {
            var buffer = try await request.body.collect(upTo: maxIncidentBodyBytes)
            data = buffer.readData(length: buffer.readableBytes) ?? Data()
        } catch {
            throw APIError(.contentTooLarge, "body_too_large", "the body is over \(maxIncidentBodyBytes) bytes")
        }
        do { return try SondeJSON.decode(type, from: data) } catch let error as DecodingError {
            throw APIError(.badRequest, "bad_body", error.pathDescription)
        } catch {
            throw APIError(.badRequest, "bad_body", "expected a JSON object: \(error)")
        }
    }

    static func badField(_ field: String, _ reason: String) -> APIError { APIError(.badRequest, "bad_field", "\(field): \(reason)") }

    static func refusal(_ error: HumanUpdateError) -> APIError {
        switch error {
        case .invalid(let field, let reason): badField(field, reason)
        case .notFound: APIError(.notFound, "not_found", error.description)
        case .closed: APIError(.conflict, "incident_closed", error.description)
        case .alreadyOpen: APIError(.conflict, "incident_open", error.description)
        case .timelineFull: APIError(.unprocessableContent, "timeline_full", error.description)
        }
    }
}
