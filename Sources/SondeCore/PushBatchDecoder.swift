import FoundationEssentials

/// The collector's decoder for push bodies and stored results: the same `PushBatch` and
/// `ProbeResult` values as `SondeJSON.decode`, about ten times cheaper (Foundation's JSONDecoder
/// built a tree of the whole body and went through `Codable` containers for every field).
///
/// Stricter than Foundation where that is safe: the whole body must be UTF-8 (also inside members
/// it ignores), integers must be written as integers, a byte order mark is refused. Like
/// Foundation: unknown members are ignored (but checked), the first of two equal keys wins,
/// nesting stops at 512 levels, `null` means absent for optional fields.
public enum PushBatchDecoder {
    /// A decoded push and, for each result, the byte range of its JSON in the body (so the store
    /// can keep the agent's exact bytes without copying them).
    public struct Decoded: Sendable {
        public var batch: PushBatch
        public var resultRanges: [Range<Int>]
    }

    public static func decode(_ body: Data) throws(JSONDecodingError) -> Decoded {
        try read(body) { reader in try reader.pushBatch() }
    }

    /// One result's JSON, as stored.
    public static func result(from json: Data) throws(JSONDecodingError) -> ProbeResult {
        try read(json) { reader in try reader.probeResult() }
    }

    /// `value` read from the whole of `data`: UTF-8 checked first, nothing may follow it.
    private static func read<T>(_ data: Data, _ value: (inout StrictJSONReader) throws -> T) throws(JSONDecodingError) -> T {
        do {
            return try data.withUnsafeBytes { raw in
                var reader = StrictJSONReader(raw.bindMemory(to: UInt8.self))
                try reader.checkEncoding()
                let decoded = try value(&reader)
                try reader.expectEnd()
                return decoded
            }
        } catch let error as JSONDecodingError {
            throw error
        } catch {
            throw JSONDecodingError(kind: .syntax, path: "(top level)", message: "\(error)", offset: 0)
        }
    }
}

// MARK: - The Sonde types

extension StrictJSONReader {
    /// Marks field `bit` seen; a key seen before in the object is refused (`duplicateKey`).
    @inline(__always) private func firstTime(_ seen: inout UInt32, _ bit: UInt32) throws -> Bool {
        guard seen & bit == 0 else { throw error(.duplicateKey, "a key given twice in one object: which one counts depends on the reader") }
        seen |= bit
        return true
    }

    private func missing(_ key: String) -> JSONDecodingError {
        let prefix = pathText()
        return JSONDecodingError(
            kind: .missingField, path: prefix == "(top level)" ? key : prefix + "." + key, message: "is required", offset: index)
    }

    /// Reads the value of `key` with `read`, with the key on the path for error messages.
    @inline(__always) private mutating func field<T>(_ key: String, _ read: (inout StrictJSONReader) throws -> T) throws -> T {
        path.append(.key(key))
        let value = try read(&self)
        path.removeLast()
        return value
    }

    /// An optional field: `null` is nil.
    @inline(__always) private mutating func optional<T>(_ key: String, _ read: (inout StrictJSONReader) throws -> T) throws -> T? {
        if null() { return nil }
        return try field(key, read)
    }

    private mutating func date() throws -> Date {
        skipSpace()
        guard index < bytes.count, bytes[index] == UInt8(ascii: "\"") else { throw wrongType("an RFC 3339 timestamp string") }
        let start = index
        let bytes = self.bytes
        let parsed: Date?? = try readString { start, count, unescaped in
            if let unescaped { return unescaped.withUnsafeBufferPointer { RFC3339.date(utf8: $0) } }
            return RFC3339.date(utf8: UnsafeBufferPointer(rebasing: bytes[start..<start + count]))
        }
        guard let date = parsed ?? nil else {
            index = start
            let text = (try? string()) ?? "?"
            throw error(.invalidValue, "expected an RFC 3339 timestamp such as 2026-01-02T03:04:05.678Z, got \"\(text)\"", at: start)
        }
        return date
    }

    private mutating func rawEnum<E: RawRepresentable & CaseIterable>(_ type: E.Type) throws -> E where E.RawValue == String {
        let start = index
        let text = try string()
        guard let value = E(rawValue: text) else {
            throw error(.invalidValue, "cannot be \"\(text)\"; expected one of \(E.allCases.map(\.rawValue).joined(separator: ", "))", at: start)
        }
        return value
    }

    mutating func pushBatch() throws -> PushBatchDecoder.Decoded {
        try beginObject("a push batch object")
        var agent: String?, batchID: String?, sentAt: Date?
        var results: [ProbeResult]?, ranges: [Range<Int>] = []
        var seen: UInt32 = 0
        var first = true
        while let key = try nextKey(&first) {
            if key.matches("agent", in: bytes), try firstTime(&seen, 1) {
                agent = try field("agent") { try $0.string() }
            } else if key.matches("batch_id", in: bytes), try firstTime(&seen, 2) {
                batchID = try field("batch_id") { try $0.string() }
            } else if key.matches("sent_at", in: bytes), try firstTime(&seen, 4) {
                sentAt = try field("sent_at") { try $0.date() }
            } else if key.matches("results", in: bytes), try firstTime(&seen, 8) {
                path.append(.key("results"))
                try beginArray()
                var list: [ProbeResult] = []
                list.reserveCapacity(128)
                ranges.reserveCapacity(128)
                var firstElement = true
                path.append(.index(0))
                while try nextElement(&firstElement) {
                    path[path.count - 1] = .index(list.count)
                    skipSpace()
                    let start = index
                    list.append(try probeResult())
                    ranges.append(start..<index)
                }
                path.removeLast(2)
                results = list
            } else {
                try skipValue()
            }
        }
        guard let agent else { throw missing("agent") }
        guard let batchID else { throw missing("batch_id") }
        guard let sentAt else { throw missing("sent_at") }
        guard let results else { throw missing("results") }
        return PushBatchDecoder.Decoded(batch: PushBatch(agent: agent, batchID: batchID, sentAt: sentAt, results: results), resultRanges: ranges)
    }

    mutating func probeResult() throws -> ProbeResult {
        try beginObject("a result object")
        var id: String?, probe: String?, component: String?, agent: String?, region: String?
        var startedAt: Date?, durationMs: Double?, outcome: Outcome?, probeError: ProbeError?
        var steps: [StepResult]?, control: Bool?, retry: Bool?, seq: UInt64?, labels: [String: String]?, degraded: String?
        var seen: UInt32 = 0
        var first = true
        while let key = try nextKey(&first) {
            if key.matches("id", in: bytes), try firstTime(&seen, 1 << 0) {
                id = try field("id") { try $0.string() }
            } else if key.matches("probe", in: bytes), try firstTime(&seen, 1 << 1) {
                probe = try field("probe") { try $0.string() }
            } else if key.matches("component", in: bytes), try firstTime(&seen, 1 << 2) {
                component = try field("component") { try $0.string() }
            } else if key.matches("agent", in: bytes), try firstTime(&seen, 1 << 3) {
                agent = try field("agent") { try $0.string() }
            } else if key.matches("region", in: bytes), try firstTime(&seen, 1 << 4) {
                region = try field("region") { try $0.string() }
            } else if key.matches("started_at", in: bytes), try firstTime(&seen, 1 << 5) {
                startedAt = try field("started_at") { try $0.date() }
            } else if key.matches("duration_ms", in: bytes), try firstTime(&seen, 1 << 6) {
                durationMs = try field("duration_ms") { try $0.double() }
            } else if key.matches("outcome", in: bytes), try firstTime(&seen, 1 << 7) {
                outcome = try field("outcome") { try $0.rawEnum(Outcome.self) }
            } else if key.matches("error", in: bytes), try firstTime(&seen, 1 << 8) {
                probeError = try optional("error") { try $0.probeError() }
            } else if key.matches("steps", in: bytes), try firstTime(&seen, 1 << 9) {
                steps = try field("steps") { reader in
                    try reader.beginArray()
                    var list: [StepResult] = []
                    var firstElement = true
                    reader.path.append(.index(0))
                    while try reader.nextElement(&firstElement) {
                        reader.path[reader.path.count - 1] = .index(list.count)
                        list.append(try reader.stepResult())
                    }
                    reader.path.removeLast()
                    return list
                }
            } else if key.matches("control", in: bytes), try firstTime(&seen, 1 << 10) {
                control = try optional("control") { try $0.bool() }
            } else if key.matches("seq", in: bytes), try firstTime(&seen, 1 << 11) {
                seq = try optional("seq") { try $0.uint64() }
            } else if key.matches("labels", in: bytes), try firstTime(&seen, 1 << 12) {
                labels = try optional("labels") { try $0.stringMap() }
            } else if key.matches("retry", in: bytes), try firstTime(&seen, 1 << 13) {
                retry = try optional("retry") { try $0.bool() }
            } else if key.matches("degraded", in: bytes), try firstTime(&seen, 1 << 14) {
                degraded = try optional("degraded") { try $0.string() }
            } else {
                try skipValue()
            }
        }
        guard let id else { throw missing("id") }
        guard let probe else { throw missing("probe") }
        guard let component else { throw missing("component") }
        guard let agent else { throw missing("agent") }
        guard let region else { throw missing("region") }
        guard let startedAt else { throw missing("started_at") }
        guard let durationMs else { throw missing("duration_ms") }
        guard let outcome else { throw missing("outcome") }
        guard let steps else { throw missing("steps") }
        return ProbeResult(
            id: id, probe: probe, component: component, agent: agent, region: region, startedAt: startedAt, durationMs: durationMs,
            outcome: outcome, error: probeError, steps: steps, control: control, retry: retry, seq: seq, labels: labels, degraded: degraded)
    }

    mutating func probeError() throws -> ProbeError {
        try beginObject("an error object")
        var kind: ErrorKind?, step: String?, message: String?, code: String?
        var seen: UInt32 = 0
        var first = true
        while let key = try nextKey(&first) {
            if key.matches("kind", in: bytes), try firstTime(&seen, 1) {
                kind = try field("kind") { try $0.rawEnum(ErrorKind.self) }
            } else if key.matches("step", in: bytes), try firstTime(&seen, 2) {
                step = try field("step") { try $0.string() }
            } else if key.matches("message", in: bytes), try firstTime(&seen, 4) {
                message = try field("message") { try $0.string() }
            } else if key.matches("code", in: bytes), try firstTime(&seen, 8) {
                code = try optional("code") { try $0.string() }
            } else {
                try skipValue()
            }
        }
        guard let kind else { throw missing("kind") }
        guard let step else { throw missing("step") }
        guard let message else { throw missing("message") }
        return ProbeError(kind: kind, step: step, message: message, code: code)
    }

    mutating func stepResult() throws -> StepResult {
        try beginObject("a step object")
        var name: String?, method: String?, url: String?, status: Int?, ok: Bool?
        var timings: PhaseTimings?, attempts: Int?, stepError: ProbeError?, component: String?
        var certNotAfter: Date?, certDaysLeft: Double?, degraded: String?
        var seen: UInt32 = 0
        var first = true
        while let key = try nextKey(&first) {
            if key.matches("name", in: bytes), try firstTime(&seen, 1 << 0) {
                name = try field("name") { try $0.string() }
            } else if key.matches("method", in: bytes), try firstTime(&seen, 1 << 1) {
                method = try field("method") { try $0.string() }
            } else if key.matches("url", in: bytes), try firstTime(&seen, 1 << 2) {
                url = try field("url") { try $0.string() }
            } else if key.matches("status", in: bytes), try firstTime(&seen, 1 << 3) {
                status = try optional("status") { try $0.int() }
            } else if key.matches("ok", in: bytes), try firstTime(&seen, 1 << 4) {
                ok = try field("ok") { try $0.bool() }
            } else if key.matches("timings", in: bytes), try firstTime(&seen, 1 << 5) {
                timings = try field("timings") { try $0.phaseTimings() }
            } else if key.matches("attempts", in: bytes), try firstTime(&seen, 1 << 6) {
                attempts = try optional("attempts") { try $0.int() }
            } else if key.matches("error", in: bytes), try firstTime(&seen, 1 << 7) {
                stepError = try optional("error") { try $0.probeError() }
            } else if key.matches("component", in: bytes), try firstTime(&seen, 1 << 8) {
                component = try optional("component") { try $0.string() }
            } else if key.matches("cert_not_after", in: bytes), try firstTime(&seen, 1 << 9) {
                certNotAfter = try optional("cert_not_after") { try $0.date() }
            } else if key.matches("cert_days_left", in: bytes), try firstTime(&seen, 1 << 10) {
                certDaysLeft = try optional("cert_days_left") { try $0.double() }
            } else if key.matches("degraded", in: bytes), try firstTime(&seen, 1 << 11) {
                degraded = try optional("degraded") { try $0.string() }
            } else {
                try skipValue()
            }
        }
        guard let name else { throw missing("name") }
        guard let method else { throw missing("method") }
        guard let url else { throw missing("url") }
        guard let ok else { throw missing("ok") }
        guard let timings else { throw missing("timings") }
        return StepResult(name: name, method: method, url: url, status: status, ok: ok, timings: timings, attempts: attempts, error: stepError,
            component: component, certNotAfter: certNotAfter, certDaysLeft: certDaysLeft, degraded: degraded)
    }

    /// A flat object of string values (a probe's labels): at most `ProbeLabels.maxCount`
    /// members, a repeated name keeps its first value.
    mutating func stringMap() throws -> [String: String] {
        try beginObject("an object of text labels")
        var map: [String: String] = [:]
        var first = true
        while let key = try nextKey(&first) {
            let name = text(of: key)
            let value = try field(name) { try $0.string() }
            guard map.count < ProbeLabels.maxCount || map[name] != nil else {
                throw error(.invalidValue, "more than \(ProbeLabels.maxCount) labels")
            }
            if map[name] == nil { map[name] = value }
        }
        return map
    }

    mutating func phaseTimings() throws -> PhaseTimings {
        try beginObject("a timings object")
        var values: (dns: Double?, connect: Double?, tls: Double?, ttfb: Double?, transfer: Double?, total: Double?)
        var seen: UInt32 = 0
        var first = true
        while let key = try nextKey(&first) {
            if key.matches("dns", in: bytes), try firstTime(&seen, 1 << 0) {
                values.dns = try field("dns") { try $0.double() }
            } else if key.matches("connect", in: bytes), try firstTime(&seen, 1 << 1) {
                values.connect = try field("connect") { try $0.double() }
            } else if key.matches("tls", in: bytes), try firstTime(&seen, 1 << 2) {
                values.tls = try field("tls") { try $0.double() }
            } else if key.matches("ttfb", in: bytes), try firstTime(&seen, 1 << 3) {
                values.ttfb = try field("ttfb") { try $0.double() }
            } else if key.matches("transfer", in: bytes), try firstTime(&seen, 1 << 4) {
                values.transfer = try field("transfer") { try $0.double() }
            } else if key.matches("total", in: bytes), try firstTime(&seen, 1 << 5) {
                values.total = try field("total") { try $0.double() }
            } else {
                try skipValue()
            }
        }
        guard let dns = values.dns else { throw missing("dns") }
        guard let connect = values.connect else { throw missing("connect") }
        guard let tls = values.tls else { throw missing("tls") }
        guard let ttfb = values.ttfb else { throw missing("ttfb") }
        guard let transfer = values.transfer else { throw missing("transfer") }
        guard let total = values.total else { throw missing("total") }
        return PhaseTimings(dns: dns, connect: connect, tls: tls, ttfb: ttfb, transfer: transfer, total: total)
    }
}
