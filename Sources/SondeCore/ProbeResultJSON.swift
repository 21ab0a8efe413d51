import FoundationEssentials

// MARK: - A hand-written JSON encoder for ProbeResult

extension ProbeResult {
    /// This result as JSON, the same document `SondeJSON.encode(self)` produces (same keys, nil
    /// fields left out, RFC 3339 ms timestamps, numbers that decode to the same values), written
    /// straight into bytes.
    ///
    /// Why: the agent encodes every result it spools; Foundation's `JSONEncoder` (a boxed value
    /// tree, dictionaries, a date closure) was about 7 % of the agent's CPU at 100 runs/s.
    /// Falls back to `JSONEncoder` for a non-finite number, which it rejects with an error.
    public func encodedJSON() throws -> Data {
        var writer = JSONBytesWriter()
        guard writer.write(self) else { return try SondeJSON.encode(self) }
        return Data(writer.bytes)
    }
}

/// Appends JSON for the result types to a byte buffer. `write` returns false on a non-finite number.
struct JSONBytesWriter {
    var bytes: [UInt8] = []

    init() { bytes.reserveCapacity(512) }

    mutating func write(_ result: ProbeResult) -> Bool {
        bytes.append(UInt8(ascii: "{"))
        key("id", first: true); string(result.id)
        key("probe"); string(result.probe)
        key("component"); string(result.component)
        key("agent"); string(result.agent)
        key("region"); string(result.region)
        key("started_at"); timestamp(result.startedAt)
        key("duration_ms"); guard number(result.durationMs) else { return false }
        key("outcome"); string(result.outcome.rawValue)
        if let error = result.error { key("error"); write(error) }
        if let degraded = result.degraded { key("degraded"); string(degraded) }
        key("steps")
        bytes.append(UInt8(ascii: "["))
        for (index, step) in result.steps.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            guard write(step) else { return false }
        }
        bytes.append(UInt8(ascii: "]"))
        if let control = result.control { key("control"); bool(control) }
        if let retry = result.retry { key("retry"); bool(retry) }
        if let seq = result.seq { key("seq"); integer(seq) }
        if let labels = result.labels {
            key("labels")
            write(strings: labels)
        }
        bytes.append(UInt8(ascii: "}"))
        return true
    }

    mutating func write(_ step: StepResult) -> Bool {
        bytes.append(UInt8(ascii: "{"))
        key("name", first: true); string(step.name)
        key("method"); string(step.method)
        key("url"); string(step.url)
        if let status = step.status { key("status"); integer(status) }
        key("ok"); bool(step.ok)
        key("timings"); guard write(step.timings) else { return false }
        if let attempts = step.attempts { key("attempts"); integer(attempts) }
        if let error = step.error { key("error"); write(error) }
        if let component = step.component { key("component"); string(component) }
        if let notAfter = step.certNotAfter { key("cert_not_after"); timestamp(notAfter) }
        if let days = step.certDaysLeft { key("cert_days_left"); guard number(days) else { return false } }
        if let degraded = step.degraded { key("degraded"); string(degraded) }
        bytes.append(UInt8(ascii: "}"))
        return true
    }

    mutating func write(_ t: PhaseTimings) -> Bool {
        bytes.append(UInt8(ascii: "{"))
        key("dns", first: true); guard number(t.dns) else { return false }
        key("connect"); guard number(t.connect) else { return false }
        key("tls"); guard number(t.tls) else { return false }
        key("ttfb"); guard number(t.ttfb) else { return false }
        key("transfer"); guard number(t.transfer) else { return false }
        key("total"); guard number(t.total) else { return false }
        bytes.append(UInt8(ascii: "}"))
        return true
    }

    mutating func write(_ error: ProbeError) {
        bytes.append(UInt8(ascii: "{"))
        key("kind", first: true); string(error.kind.rawValue)
        key("step"); string(error.step)
        key("message"); string(error.message)
        if let code = error.code { key("code"); string(code) }
        bytes.append(UInt8(ascii: "}"))
    }

    /// A flat object of strings, keys sorted.
    mutating func write(strings fields: [String: String]) {
        bytes.append(UInt8(ascii: "{"))
        for (index, name) in fields.keys.sorted().enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            string(name)
            bytes.append(UInt8(ascii: ":"))
            string(fields[name]!)
        }
        bytes.append(UInt8(ascii: "}"))
    }

    /// A push body around results that are JSON already: `PushBatch`'s keys in its order.
    mutating func writePush(agent: String, batchID: String, sentAt: Date, rawResults: [Data]) {
        bytes.reserveCapacity(128 + rawResults.reduce(0) { $0 + $1.count + 1 })
        bytes.append(UInt8(ascii: "{"))
        key("agent", first: true); string(agent)
        key("batch_id"); string(batchID)
        key("sent_at"); timestamp(sentAt)
        key("results")
        bytes.append(UInt8(ascii: "["))
        for (index, raw) in rawResults.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            bytes.append(contentsOf: raw)
        }
        bytes.append(contentsOf: [UInt8(ascii: "]"), UInt8(ascii: "}")])
    }

    // MARK: - Scalars

    private mutating func key(_ name: StaticString, first: Bool = false) {
        if !first { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        raw(name)
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
    }

    /// An RFC 3339 timestamp as a JSON string (it needs no escapes), written in place.
    private mutating func timestamp(_ date: Date) {
        bytes.append(UInt8(ascii: "\""))
        RFC3339.append(date, to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    private mutating func bool(_ value: Bool) {
        raw(value ? "true" : "false")
    }

    private mutating func raw(_ text: StaticString) {
        bytes.append(contentsOf: UnsafeBufferPointer(start: text.utf8Start, count: text.utf8CodeUnitCount))
    }

    /// Digits written straight into the buffer (`String(value)` allocated a string per number).
    private mutating func integer<T: BinaryInteger>(_ value: T) {
        guard let wide = Int64(exactly: value) else {
            bytes.append(contentsOf: String(value).utf8)
            return
        }
        if wide < 0 { bytes.append(UInt8(ascii: "-")) }
        var rest = wide.magnitude
        var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)  // 24 bytes: room for UInt64.max's 20 digits
        withUnsafeMutableBytes(of: &digits) { buffer in
            var index = buffer.count
            repeat {
                index -= 1
                buffer[index] = UInt8(ascii: "0") + UInt8(rest % 10)
                rest /= 10
            } while rest > 0
            bytes.append(contentsOf: buffer[index...])
        }
    }

    /// Swift's shortest representation that reads back as the same Double (as JSONEncoder
    /// writes it, without a trailing ".0"). Non-finite values are not JSON.
    private mutating func number(_ value: Double) -> Bool {
        guard value.isFinite else { return false }
        let thousandths = (value * 1000).rounded()
        if value == value.rounded(), abs(value) < 1e15 {
            integer(Int64(value))
        } else if abs(value) < 1e12, thousandths / 1000 == value {
            // Milliseconds from curl's microseconds (every timing): the double nearest to
            // k/1000, which "k/1000" in decimal also reads back as, and which is also the
            // shortest form; written without `description`'s string.
            let whole = Int64(thousandths)
            if whole < 0 { bytes.append(UInt8(ascii: "-")) }
            integer(whole.magnitude / 1000)
            var fraction = whole.magnitude % 1000
            var count = 3
            while count > 0, fraction % 10 == 0 {
                fraction /= 10
                count -= 1
            }
            bytes.append(UInt8(ascii: "."))
            bytes.appendDigits(fraction, count: count)
        } else {
            bytes.append(contentsOf: value.description.utf8)
        }
        return true
    }

    private static let hex = Array("0123456789abcdef".utf8)

    /// A JSON string: quotes, backslashes and control characters escaped; everything else
    /// (including "/" and non-ASCII) as UTF-8.
    private mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        // Most strings (ids, names, URLs) need no escape: copied whole, not byte by byte.
        let plain = value.utf8.withContiguousStorageIfAvailable { utf8 -> Bool in
            guard !utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) else { return false }
            bytes.append(contentsOf: utf8)
            return true
        }
        if plain == true {
            bytes.append(UInt8(ascii: "\""))
            return
        }
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case UInt8(ascii: "\\"): bytes.append(UInt8(ascii: "\\")); bytes.append(byte)
            case 0x0A: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "n"))
            case 0x0D: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "r"))
            case 0x09: bytes.append(UInt8(ascii: "\\")); bytes.append(UInt8(ascii: "t"))
            case 0x00..<0x20:
                raw("\\u00")
                bytes.append(Self.hex[Int(byte >> 4)])
                bytes.append(Self.hex[Int(byte & 0x0F)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}

extension SondeJSON {
    /// `{"key":"value",…}` with the keys sorted: a flat object of strings as `JSONEncoder` with
    /// `.sortedKeys` writes it (slashes left as they are), without its cost (the spool's records:
    /// two per push; JSONEncoder was most of the journal thread's instructions at 1 push/s).
    public static func encode(strings fields: [String: String]) -> Data {
        var writer = JSONBytesWriter()
        writer.write(strings: fields)
        return Data(writer.bytes)
    }
}

extension PushBatch {
    /// The body of a push whose results are JSON already (the spool keeps each result's bytes):
    /// `agent`, `batch_id`, `sent_at`, then `results` with those bytes as they are. It decodes as
    /// a `PushBatch`; no result is decoded and encoded again for a push.
    public static func body(agent: String, batchID: String, sentAt: Date, rawResults: [Data]) -> Data {
        var writer = JSONBytesWriter()
        writer.writePush(agent: agent, batchID: batchID, sentAt: sentAt, rawResults: rawResults)
        return Data(writer.bytes)
    }
}
