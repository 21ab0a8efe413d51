import Foundation
import SondeCore
import Synchronization

/// Users, tokens, files and batches shared by every region of one sim. All state sits behind one
/// lock; every operation is short (no I/O), so request handlers call it straight from the event loop.
final class PlatformStore: Sendable {
    enum TokenCheck: Equatable {
        case valid(user: String)
        case missing
        case unknown
        case expired
    }

    private struct Token {
        var user: String
        var expiresAt: Date
    }

    private struct State {
        var tokens: [String: Token] = [:]
        var files: [String: StoredFile] = [:]
        var batches: [String: StoredBatch] = [:]
    }

    private let state = Mutex(State())
    private let users: [String: String]
    let tokenTTL: Duration
    let batchPace: Duration

    init(users: [String: String], tokenTTL: Duration, batchPace: Duration) {
        self.users = users
        self.tokenTTL = tokenTTL
        self.batchPace = batchPace
    }

    // MARK: - Auth

    /// A new token when the credentials are right; nil otherwise.
    func login(username: String, password: String, now: Date = Date()) -> String? {
        guard let expected = users[username], ConstantTime.equal(expected, password) else { return nil }
        let token = "tok_" + randomHex(24)
        state.withLock { $0.tokens[token] = Token(user: username, expiresAt: now.addingTimeInterval(tokenTTL.seconds)) }
        return token
    }

    /// The user behind an `Authorization` header value.
    func checkToken(authorization: String?, now: Date = Date()) -> TokenCheck {
        guard let authorization, !authorization.isEmpty else { return .missing }
        let parts = authorization.split(separator: " ", maxSplits: 1)
        guard parts.count == 2, parts[0].lowercased() == "bearer" else { return .unknown }
        let value = parts[1].trimmingCharacters(in: .whitespaces)
        guard let token = state.withLock({ $0.tokens[value] }) else { return .unknown }
        return token.expiresAt > now ? .valid(user: token.user) : .expired
    }

    // MARK: - Files

    func addFile(filename: String, purpose: String, bytes: Data, owner: String, now: Date = Date()) -> StoredFile {
        let file = StoredFile(id: "file-" + randomHex(12), filename: filename, purpose: purpose, bytes: bytes, createdAt: now, owner: owner)
        state.withLock { $0.files[file.id] = file }
        return file
    }

    func file(_ id: String) -> StoredFile? { state.withLock { $0.files[id] } }

    func markExpired(_ id: String) { state.withLock { $0.files[id]?.expired = true } }

    func deleteFile(_ id: String) -> Bool { state.withLock { $0.files.removeValue(forKey: id) != nil } }

    func files(owner: String) -> [StoredFile] {
        state.withLock { $0.files.values.filter { $0.owner == owner }.sorted { $0.createdAt < $1.createdAt } }
    }

    // MARK: - Batches

    enum BatchCreation {
        case created(StoredBatch)
        case unknownInputFile
    }

    func createBatch(_ request: CreateBatchRequest, owner: String, region: String, faults: FaultBook, now: Date = Date()) -> BatchCreation {
        state.withLock { state in
            guard let input = state.files[request.inputFileID] else { return .unknownInputFile }
            var batch = StoredBatch(
                id: "batch_" + randomHex(12), endpoint: request.endpoint ?? "/v1/chat/completions", inputFileID: input.id,
                completionWindow: request.completionWindow ?? "24h", owner: owner, region: region, phaseStartedAt: now,
                createdAt: now, total: Self.countLines(input.bytes))
            Self.drawStuck(&batch, faults: faults)
            state.batches[batch.id] = batch
            return .created(batch)
        }
    }

    /// The batch, advanced to what its timestamps, the pace and the active faults make it now.
    func batch(_ id: String, faults: FaultBook, now: Date = Date()) -> StoredBatch? {
        state.withLock { state in
            guard var batch = state.batches[id] else { return nil }
            advance(&batch, state: &state, faults: faults, now: now)
            state.batches[id] = batch
            return batch
        }
    }

    func batches(owner: String, faults: FaultBook, now: Date = Date()) -> [StoredBatch] {
        state.withLock { state in
            var result: [StoredBatch] = []
            for id in state.batches.keys {
                guard var batch = state.batches[id], batch.owner == owner else { continue }
                advance(&batch, state: &state, faults: faults, now: now)
                state.batches[id] = batch
                result.append(batch)
            }
            return result.sorted { $0.createdAt > $1.createdAt }
        }
    }

    enum CancelOutcome {
        case cancelling(StoredBatch)
        case notFound
        case alreadyFinished(StoredBatch)
    }

    func cancelBatch(_ id: String, faults: FaultBook, now: Date = Date()) -> CancelOutcome {
        state.withLock { state in
            guard var batch = state.batches[id] else { return .notFound }
            advance(&batch, state: &state, faults: faults, now: now)
            guard !batch.status.isTerminal else {
                state.batches[id] = batch
                return .alreadyFinished(batch)
            }
            if batch.status != .cancelling {
                batch.status = .cancelling
                batch.cancellingAt = now
                batch.phaseStartedAt = now
                batch.stuckBy = nil
                batch.stuckDraws = []
                Self.drawStuck(&batch, faults: faults)
            }
            state.batches[id] = batch
            return .cancelling(batch)
        }
    }

    /// Moves a batch forward one pace step at a time, as far as `now` allows. A batch held by an
    /// active `batch_stuck` fault stays; once the fault is gone it takes one more step from then.
    private func advance(_ batch: inout StoredBatch, state: inout State, faults: FaultBook, now: Date) {
        let pace = batchPace.seconds
        // Bounded: at most one iteration per state plus one for a released stuck fault.
        for _ in 0..<8 {
            guard !batch.status.isTerminal else { return }
            if let holder = batch.stuckBy {
                if faults.isActive(id: holder) { return }
                batch.stuckBy = nil
                batch.phaseStartedAt = max(batch.phaseStartedAt, now)
            }
            Self.drawStuck(&batch, faults: faults)
            if batch.stuckBy != nil { return }
            let enteredAt = batch.phaseStartedAt.addingTimeInterval(pace)
            guard now >= enteredAt else { return }
            transition(&batch, to: batch.status.next, at: enteredAt, state: &state)
        }
    }

    private func transition(_ batch: inout StoredBatch, to next: BatchStatus, at date: Date, state: inout State) {
        batch.phaseStartedAt = date
        batch.stuckDraws = []
        switch next {
        case .inProgress:
            // A batch whose input vanished before validation finished fails, as real APIs do.
            if state.files[batch.inputFileID] == nil || state.files[batch.inputFileID]?.expired == true {
                batch.status = .failed
                batch.failedAt = date
                batch.errorMessage = "Input file \(batch.inputFileID) is no longer available"
                return
            }
            batch.inProgressAt = date
        case .finalizing:
            batch.finalizingAt = date
        case .completed:
            let output = outputFile(for: batch, input: state.files[batch.inputFileID], at: date)
            state.files[output.id] = output
            batch.outputFileID = output.id
            batch.completedAt = date
        case .cancelled:
            batch.cancelledAt = date
        case .validating, .failed, .expired, .cancelling:
            break
        }
        batch.status = next
    }

    /// Draws once per `batch_stuck` fault for the batch's current state (scoped by the region
    /// and user that created the batch).
    private static func drawStuck(_ batch: inout StoredBatch, faults: FaultBook) {
        let current = batch.status
        let drawn = batch.stuckDraws
        let draws = faults.draws(component: .batch, region: batch.region, user: batch.owner) { fault in
            guard let id = fault.id, case .batchStuck(let state) = fault.effect else { return false }
            return state == current && !drawn.contains(id)
        }
        // A fault keeps its first answer for this batch in this state.
        for draw in draws {
            batch.stuckDraws.insert(draw.fault.id!)
            if draw.hit && batch.stuckBy == nil { batch.stuckBy = draw.fault.id }
        }
    }

    /// Non-empty lines of a JSONL file (memchr, so large inputs stay cheap under the lock).
    static func countLines(_ data: Data) -> Int {
        data.withUnsafeBytes { raw -> Int in
            guard let base = raw.baseAddress, raw.count > 0 else { return 0 }
            var count = 0
            var start = 0
            while start < raw.count {
                let end = memchr(base + start, 10, raw.count - start).map { base.distance(to: UnsafeRawPointer($0)) } ?? raw.count
                if end > start && !(end == start + 1 && raw[start] == 13) { count += 1 }
                start = end + 1
            }
            return count
        }
    }

    /// One JSONL line per input request, shaped like OpenAI's batch output.
    private func outputFile(for batch: StoredBatch, input: StoredFile?, at date: Date) -> StoredFile {
        var lines: [String] = []
        let inputLines = input.map { $0.bytes.split(separator: UInt8(ascii: "\n")) } ?? []
        for (index, line) in inputLines.enumerated() {
            var customID = "request-\(index + 1)"
            if let object = try? JSONSerialization.jsonObject(with: Data(line)) as? [String: Any], let id = object["custom_id"] as? String {
                customID = id
            }
            let escaped = String(data: (try? JSONEncoder().encode(customID)) ?? Data("\"\"".utf8), encoding: .utf8) ?? "\"\""
            lines.append(
                #"{"id":"batch_req_\#(randomHex(8))","custom_id":\#(escaped),"response":{"status_code":200,"request_id":"req_\#(randomHex(8))","body":{"object":"chat.completion","model":"sim-small","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}]}},"error":null}"#
            )
        }
        let bytes = Data((lines.joined(separator: "\n") + (lines.isEmpty ? "" : "\n")).utf8)
        return StoredFile(
            id: "file-" + randomHex(12), filename: "\(batch.id)_output.jsonl", purpose: "batch_output", bytes: bytes, createdAt: date,
            owner: batch.owner)
    }
}
