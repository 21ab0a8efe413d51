import Foundation

/// A batch's lifecycle, OpenAI's words.
public enum BatchStatus: String, Codable, Sendable, CaseIterable {
    case validating
    case inProgress = "in_progress"
    case finalizing
    case completed
    case failed
    case expired
    case cancelling
    case cancelled

    public var isTerminal: Bool {
        switch self {
        case .completed, .failed, .expired, .cancelled: true
        case .validating, .inProgress, .finalizing, .cancelling: false
        }
    }

    /// The state one pace step later on the happy path.
    var next: BatchStatus {
        switch self {
        case .validating: .inProgress
        case .inProgress: .finalizing
        case .finalizing: .completed
        case .cancelling: .cancelled
        case .completed, .failed, .expired, .cancelled: self
        }
    }
}

/// An uploaded (or batch-produced) file, bytes kept in memory.
struct StoredFile: Sendable {
    var id: String
    var filename: String
    var purpose: String
    var bytes: Data
    var createdAt: Date
    var owner: String
    /// Set when a `file_expired` fault hits this file; it stays expired afterwards.
    var expired = false

    var object: FileObject {
        FileObject(id: id, bytes: bytes.count, createdAt: Int(createdAt.timeIntervalSince1970), filename: filename, purpose: purpose)
    }
}

/// `GET /v1/files/{id}` and the upload answer.
struct FileObject: Encodable {
    var id: String
    var object = "file"
    var bytes: Int
    var createdAt: Int
    var filename: String
    var purpose: String
    var status = "processed"

    enum CodingKeys: String, CodingKey {
        case id, object, bytes, filename, purpose, status
        case createdAt = "created_at"
    }
}

struct DeletedObject: Encodable {
    var id: String
    var object: String
    var deleted = true
}

struct StoredBatch: Sendable {
    var id: String
    var endpoint: String
    var inputFileID: String
    var completionWindow: String
    var owner: String
    var region: String
    var status: BatchStatus = .validating
    /// When the current state began for the purpose of advancing (moved forward when a stuck fault
    /// lets go, so the batch then takes one more pace step).
    var phaseStartedAt: Date
    var createdAt: Date
    var inProgressAt: Date?
    var finalizingAt: Date?
    var completedAt: Date?
    var failedAt: Date?
    var cancellingAt: Date?
    var cancelledAt: Date?
    var outputFileID: String?
    var total: Int
    var errorMessage: String?
    /// The `batch_stuck` fault holding the batch in its current state.
    var stuckBy: String?
    /// `batch_stuck` faults already drawn against for the current state (one draw per fault and state).
    var stuckDraws: Set<String> = []

    var object: BatchObject {
        func unix(_ date: Date?) -> Int? { date.map { Int($0.timeIntervalSince1970) } }
        let completed: Int
        switch status {
        case .validating, .failed, .cancelling, .cancelled, .expired: completed = 0
        case .inProgress: completed = total / 2
        case .finalizing, .completed: completed = total
        }
        return BatchObject(
            id: id, endpoint: endpoint, inputFileID: inputFileID, completionWindow: completionWindow, status: status.rawValue,
            outputFileID: outputFileID, createdAt: unix(createdAt)!, inProgressAt: unix(inProgressAt),
            finalizingAt: unix(finalizingAt), completedAt: unix(completedAt), failedAt: unix(failedAt),
            cancellingAt: unix(cancellingAt), cancelledAt: unix(cancelledAt),
            requestCounts: .init(total: total, completed: completed, failed: status == .failed ? total : 0),
            errors: errorMessage.map { BatchObject.Errors(data: [.init(code: "invalid_input_file", message: $0)]) })
    }
}

/// The batch object as OpenAI's API shows it; absent times are `null`, not missing.
struct BatchObject: Encodable {
    struct Counts: Encodable {
        var total: Int
        var completed: Int
        var failed: Int
    }
    struct Errors: Encodable {
        struct Item: Encodable {
            var code: String
            var message: String
        }
        var object = "list"
        var data: [Item]
    }

    var id: String
    var endpoint: String
    var inputFileID: String
    var completionWindow: String
    var status: String
    var outputFileID: String?
    var createdAt: Int
    var inProgressAt: Int?
    var finalizingAt: Int?
    var completedAt: Int?
    var failedAt: Int?
    var cancellingAt: Int?
    var cancelledAt: Int?
    var requestCounts: Counts
    var errors: Errors?

    enum CodingKeys: String, CodingKey {
        case id, object, endpoint, errors, status
        case inputFileID = "input_file_id"
        case completionWindow = "completion_window"
        case outputFileID = "output_file_id"
        case errorFileID = "error_file_id"
        case createdAt = "created_at"
        case inProgressAt = "in_progress_at"
        case expiresAt = "expires_at"
        case finalizingAt = "finalizing_at"
        case completedAt = "completed_at"
        case failedAt = "failed_at"
        case expiredAt = "expired_at"
        case cancellingAt = "cancelling_at"
        case cancelledAt = "cancelled_at"
        case requestCounts = "request_counts"
    }

    func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(id, forKey: .id)
        try c.encode("batch", forKey: .object)
        try c.encode(endpoint, forKey: .endpoint)
        try c.encode(errors, forKey: .errors)
        try c.encode(inputFileID, forKey: .inputFileID)
        try c.encode(completionWindow, forKey: .completionWindow)
        try c.encode(status, forKey: .status)
        try c.encode(outputFileID, forKey: .outputFileID)
        try c.encode(String?.none, forKey: .errorFileID)
        try c.encode(createdAt, forKey: .createdAt)
        try c.encode(inProgressAt, forKey: .inProgressAt)
        try c.encode(createdAt + 24 * 3600, forKey: .expiresAt)
        try c.encode(finalizingAt, forKey: .finalizingAt)
        try c.encode(completedAt, forKey: .completedAt)
        try c.encode(failedAt, forKey: .failedAt)
        try c.encode(Int?.none, forKey: .expiredAt)
        try c.encode(cancellingAt, forKey: .cancellingAt)
        try c.encode(cancelledAt, forKey: .cancelledAt)
        try c.encode(requestCounts, forKey: .requestCounts)
    }
}

struct ListObject<Item: Encodable>: Encodable {
    var object = "list"
    var data: [Item]
}

struct ModelObject: Encodable {
    var id: String
    var object = "model"
    var created = 1_700_000_000
    var ownedBy = "sonde-sim"

    enum CodingKeys: String, CodingKey {
        case id, object, created
        case ownedBy = "owned_by"
    }
}

struct LoginRequest: Decodable {
    var username: String
    var password: String
}

struct LoginResponse: Encodable {
    var accessToken: String
    var tokenType = "bearer"
    var expiresIn: Int

    enum CodingKeys: String, CodingKey {
        case accessToken = "access_token"
        case tokenType = "token_type"
        case expiresIn = "expires_in"
    }
}

struct CreateBatchRequest: Decodable {
    var inputFileID: String
    var endpoint: String?
    var completionWindow: String?

    enum CodingKeys: String, CodingKey {
        case inputFileID = "input_file_id"
        case endpoint
        case completionWindow = "completion_window"
    }
}

/// Random lowercase hex, for ids and tokens.
func randomHex(_ bytes: Int) -> String {
    var generator = SystemRandomNumberGenerator()
    var text = ""
    text.reserveCapacity(bytes * 2)
    for _ in 0..<bytes {
        let byte = UInt8.random(in: 0...255, using: &generator)
        text += String(byte >> 4, radix: 16) + String(byte & 0x0F, radix: 16)
    }
    return text
}
