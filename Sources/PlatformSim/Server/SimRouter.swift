import Foundation
import SondeCore

/// Routes one request to the platform (after faults) or to the `/_sim` control API. Synchronous
/// and lock-based, so the connection handler calls it on the event loop; waiting (latency) is
/// done by the handler's scheduled task, never here.
final class SimRouter: Sendable {
    let store: PlatformStore
    let faults: FaultBook
    let maxBodyBytes: Int

    init(store: PlatformStore, faults: FaultBook, maxBodyBytes: Int) {
        self.store = store
        self.faults = faults
        self.maxBodyBytes = maxBodyBytes
    }

    func handle(_ request: SimRequest) -> SimAction {
        if request.path == "/healthz" {
            guard request.method == "GET" || request.method == "HEAD" else { return .respond(methodNotAllowed(request)) }
            return .respond(.json(200, ["status": "ok", "region": request.region]))
        }
        if request.path == "/_sim/faults" || request.path.hasPrefix("/_sim/faults/") {
            return .respond(handleFaultControl(request))
        }
        guard let component = SimComponent.of(path: request.path) else {
            return .respond(.error(404, "not_found", "No route for \(request.method) \(request.path)"))
        }
        let isUpload = request.method == "POST" && request.path == "/v1/files"
        guard isUpload || request.body.count <= maxBodyBytes else { return .respond(tooLarge()) }
        let user = requestUser(request, component: component)

        // Transport-level faults first: latency adds up, the first of hang/drop/error decides.
        let hits = faults.hits(component: component, region: request.region, user: user) { fault in
            switch fault.effect {
            case .latency, .error, .hang, .drop: true
            case .loginReject, .fileExpired, .batchStuck: false
            }
        }
        var faultIDs = hits.compactMap(\.id)
        var delay = Duration.zero
        for hit in hits { if case .latency(let extra) = hit.effect { delay += extra } }
        let outcome: SimAction.Outcome
        switch hits.first(where: { if case .latency = $0.effect { false } else { true } })?.effect {
        case .hang?:
            outcome = .hang
        case .drop?:
            outcome = .drop
        case .error(let status, let message)?:
            outcome = .respond(
                .error(status, "server_error", message ?? "The server had an error while processing your request (elevated error rates)."))
        default:
            var applied: [String] = []
            outcome = .respond(route(request, component: component, user: user, applied: &applied))
            faultIDs += applied
        }
        let action = SimAction(outcome: outcome, delay: delay, faultIDs: faultIDs)
        return action
    }

    /// The user a request acts for: the login's username or the bearer token's user.
    private func requestUser(_ request: SimRequest, component: SimComponent) -> String? {
        if component == .login {
            return (try? JSONDecoder().decode(LoginRequest.self, from: request.body))?.username
        }
        if case .valid(let user) = store.checkToken(authorization: request.header("Authorization")) { return user }
        return nil
    }

    // MARK: - Platform routes

    private func route(_ request: SimRequest, component: SimComponent, user: String?, applied: inout [String]) -> SimResponse {
        let segments = request.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        if component == .login {
            guard segments == ["v1", "auth", "login"] else { return notFound(request) }
            guard request.method == "POST" else { return methodNotAllowed(request) }
            return login(request, applied: &applied)
        }
        // Everything else needs a valid bearer token.
        let owner: String
        switch store.checkToken(authorization: request.header("Authorization")) {
        case .valid(let user): owner = user
        case .missing:
            return .error(401, "invalid_token", "Missing bearer token: log in at POST /v1/auth/login and send Authorization: Bearer <token>")
        case .unknown:
            return .error(401, "invalid_token", "Invalid bearer token")
        case .expired:
            return .error(401, "token_expired", "The access token has expired; log in again")
        }
        switch (component, request.method, segments.count) {
        case (.api, "GET", 2):
            let models = ["sim-small", "sim-large"].map { ModelObject(id: $0) }
            return .json(200, ListObject(data: models))
        case (.api, "GET", 3):
            guard ["sim-small", "sim-large"].contains(segments[2]) else {
                return .error(404, "model_not_found", "The model \(segments[2]) does not exist")
            }
            return .json(200, ModelObject(id: segments[2]))
        case (.files, "POST", 2):
            return uploadFile(request, owner: owner)
        case (.files, "GET", 2):
            return .json(200, ListObject(data: store.files(owner: owner).map(\.object)))
        case (.files, "GET", 3):
            return readFile(segments[2], content: false, request: request, user: owner, applied: &applied)
        case (.files, "GET", 4) where segments[3] == "content":
            return readFile(segments[2], content: true, request: request, user: owner, applied: &applied)
        case (.files, "DELETE", 3):
            guard store.deleteFile(segments[2]) else { return fileNotFound(segments[2]) }
            return .json(200, DeletedObject(id: segments[2], object: "file"))
        case (.batch, "POST", 2):
            return createBatch(request, owner: owner)
        case (.batch, "GET", 2):
            return .json(200, ListObject(data: store.batches(owner: owner, faults: faults).map(\.object)))
        case (.batch, "GET", 3):
            guard let batch = store.batch(segments[2], faults: faults) else { return batchNotFound(segments[2]) }
            if let holder = batch.stuckBy { applied.append(holder) }
            return .json(200, batch.object)
        case (.batch, "POST", 4) where segments[3] == "cancel":
            switch store.cancelBatch(segments[2], faults: faults) {
            case .notFound: return batchNotFound(segments[2])
            case .alreadyFinished(let batch):
                return .error(400, "invalid_request", "Batch \(batch.id) is already \(batch.status.rawValue) and cannot be cancelled")
            case .cancelling(let batch): return .json(200, batch.object)
            }
        default:
            return knownPathWrongMethod(request, component: component, segments: segments) ? methodNotAllowed(request) : notFound(request)
        }
    }

    private func login(_ request: SimRequest, applied: inout [String]) -> SimResponse {
        guard let body = try? JSONDecoder().decode(LoginRequest.self, from: request.body) else {
            return .error(400, "invalid_request", #"Expected a JSON body {"username":"…","password":"…"}"#)
        }
        let rejected = faults.hits(component: .login, region: request.region, user: body.username) { $0.effect == .loginReject }
        guard rejected.isEmpty, let token = store.login(username: body.username, password: body.password) else {
            applied += rejected.compactMap(\.id)
            return .error(401, "invalid_credentials", "Invalid username or password")
        }
        let seconds = Int((store.tokenTTL.seconds).rounded(.up))
        return .json(200, LoginResponse(accessToken: token, expiresIn: seconds))
    }

    private func uploadFile(_ request: SimRequest, owner: String) -> SimResponse {
        guard let contentType = request.header("Content-Type"), let boundary = MultipartFormData.boundary(fromContentType: contentType) else {
            return .error(400, "invalid_request", "Expected a multipart/form-data body with a boundary (fields: purpose, file)")
        }
        let form: MultipartFormData
        do {
            form = try MultipartFormData(body: request.body, boundary: boundary)
        } catch {
            return .error(400, "invalid_request", "Malformed multipart body: \(error.description)")
        }
        guard let file = form.part(named: "file") else {
            return .error(400, "invalid_request", "Missing the 'file' part (multipart field named file, with a filename)")
        }
        guard file.body.count <= maxBodyBytes else { return tooLarge() }
        let purpose = form.part(named: "purpose").map { String(decoding: $0.body, as: UTF8.self) } ?? "batch"
        let stored = store.addFile(filename: file.filename ?? "upload.bin", purpose: purpose, bytes: file.body, owner: owner)
        return .json(200, stored.object)
    }

    private func readFile(_ id: String, content: Bool, request: SimRequest, user: String, applied: inout [String]) -> SimResponse {
        guard let file = store.file(id) else { return fileNotFound(id) }
        var expired = file.expired
        if !expired {
            let hits = faults.hits(component: .files, region: request.region, user: user) { $0.effect == .fileExpired }
            if !hits.isEmpty {
                store.markExpired(id)
                applied += hits.compactMap(\.id)
                expired = true
            }
        }
        if expired { return .error(404, "file_expired", "File \(id) has expired") }
        guard content else { return .json(200, file.object) }
        return SimResponse(
            status: 200, contentType: "application/octet-stream", body: file.bytes,
            headers: [("Content-Disposition", "attachment; filename=\"\(file.filename.replacingOccurrences(of: "\"", with: ""))\"")])
    }

    private func createBatch(_ request: SimRequest, owner: String) -> SimResponse {
        let body: CreateBatchRequest
        do {
            body = try JSONDecoder().decode(CreateBatchRequest.self, from: request.body)
        } catch {
            return .error(
                400, "invalid_request",
                #"Expected a JSON body {"input_file_id":"file-…","endpoint":"/v1/chat/completions","completion_window":"24h"}"#)
        }
        switch store.createBatch(body, owner: owner, region: request.region, faults: faults) {
        case .unknownInputFile:
            return .error(400, "invalid_request", "Input file \(body.inputFileID) does not exist; upload it first with POST /v1/files")
        case .created(let batch):
            return .json(200, batch.object)
        }
    }

    private func knownPathWrongMethod(_ request: SimRequest, component: SimComponent, segments: [String]) -> Bool {
        switch (component, segments.count) {
        case (.api, 2), (.api, 3), (.files, 2), (.files, 3), (.batch, 2), (.batch, 3): true
        case (.files, 4): segments[3] == "content"
        case (.batch, 4): segments[3] == "cancel"
        default: false
        }
    }

    private func tooLarge() -> SimResponse {
        .error(413, "request_too_large", "Request body is larger than the \(maxBodyBytes >> 20) MiB limit")
    }

    private func fileNotFound(_ id: String) -> SimResponse { .error(404, "file_not_found", "No such file: \(id)") }
    private func batchNotFound(_ id: String) -> SimResponse { .error(404, "batch_not_found", "No such batch: \(id)") }
    private func notFound(_ request: SimRequest) -> SimResponse {
        .error(404, "not_found", "No route for \(request.method) \(request.path)")
    }
    private func methodNotAllowed(_ request: SimRequest) -> SimResponse {
        .error(405, "method_not_allowed", "\(request.method) is not allowed on \(request.path)")
    }

    // MARK: - /_sim/faults

    private func handleFaultControl(_ request: SimRequest) -> SimResponse {
        let rest = request.path.dropFirst("/_sim/faults".count).split(separator: "/").map(String.init)
        switch (request.method, rest.count) {
        case ("GET", 0):
            return .json(200, FaultList(faults: faults.all))
        case ("POST", 0):
            do {
                let fault = try JSONDecoder().decode(Fault.self, from: request.body)
                return .json(201, try faults.add(fault))
            } catch let error as FaultValidationError {
                return .error(400, "invalid_fault", error.message)
            } catch {
                return .error(400, "invalid_fault", #"Expected a JSON fault such as {"type":"error","status":503,"components":["files"],"regions":["eu"],"fraction":0.5}"#)
            }
        case ("DELETE", 0):
            let count = faults.removeAll()
            return .json(200, ["cleared": count])
        case ("GET", 1):
            guard let fault = faults.all.first(where: { $0.id == rest[0] }) else { return faultNotFound(rest[0]) }
            return .json(200, fault)
        case ("DELETE", 1):
            guard faults.remove(id: rest[0]) else { return faultNotFound(rest[0]) }
            return .json(200, DeletedObject(id: rest[0], object: "fault"))
        default:
            return rest.count <= 1 ? methodNotAllowed(request) : notFound(request)
        }
    }

    private func faultNotFound(_ id: String) -> SimResponse {
        .error(404, "fault_not_found", "No active fault \(id); list them with GET /_sim/faults")
    }
}

/// `GET /_sim/faults`.
public struct FaultList: Codable, Sendable {
    public var faults: [Fault]
    public init(faults: [Fault]) { self.faults = faults }
}
