import CPCRE2
import Synchronization

/// A probe script's regular expression (`matches`, `body_matches`, `regex` extractions,
/// failure-code patterns), compiled with PCRE2: Perl syntax, UTF-8, and a match that can be
/// stopped. A probed server chooses the text a pattern runs on, and a backtracking engine can
/// take exponential time on a few dozen bytes (`^(a+)+$` against `aaaa…a!`); Swift's `Regex`
/// cannot be interrupted, PCRE2 can: every match runs with PCRE2's match, depth and heap limits
/// and with automatic callouts that check the run's deadline and cancellation.
///
/// `@unchecked Sendable`: a compiled pattern is immutable and PCRE2 documents it as safe to use
/// from several threads at once; each match has its own match data and context.
final class ProbeRegex: @unchecked Sendable {
    let pattern: String
    /// Capture groups in the pattern (group 0, the whole match, not counted).
    let captureCount: Int
    private let code: OpaquePointer

    /// Why a pattern does not compile: PCRE2's message and the offset in the pattern.
    struct SyntaxError: Error, Sendable, CustomStringConvertible {
        var description: String
    }

    /// Why a match was given up.
    enum MatchError: Error, Sendable {
        /// The deadline passed (the run's time is used up).
        case outOfTime
        /// The run was cancelled (the agent is stopping).
        case cancelled
        /// PCRE2's match, depth or heap limit: the pattern backtracks too much on this text.
        case tooComplex(String)
    }

    /// The limits every match runs with: bounded work between deadline checks, bounded memory.
    static let matchLimit: UInt32 = 10_000_000
    static let heapLimitKiB: UInt32 = 8 << 10

    // UTF: patterns and texts are UTF-8 (text that is not valid UTF-8 still matches where it
    // is, instead of failing). AUTO_CALLOUT: a callout before every item, where the deadline
    // is checked. NEVER_BACKSLASH_C: `\C` could split a UTF-8 character.
    private static let options = UInt32(PCRE2_UTF) | UInt32(PCRE2_MATCH_INVALID_UTF) | UInt32(PCRE2_AUTO_CALLOUT) | UInt32(PCRE2_NEVER_BACKSLASH_C)

    /// `text` as a pattern that matches it literally: a backslash before every ASCII character
    /// that is not a letter or digit (PCRE2 takes any such escape as the character itself, also
    /// inside a class and under `(?x)`, where an escaped space or `#` stays literal; control
    /// characters below tab are literal as they are). Not
    /// `\Q…\E`: a value containing `\E` would end the quoting early.
    static func escape(_ text: String) -> String {
        var escaped = ""
        escaped.unicodeScalars.reserveCapacity(text.unicodeScalars.count)
        for scalar in text.unicodeScalars {
            if scalar.isASCII, !(scalar.properties.isAlphabetic || ("0"..."9").contains(scalar)), scalar.value >= 0x09 {
                escaped.unicodeScalars.append("\\")
            }
            escaped.unicodeScalars.append(scalar)
        }
        return escaped
    }

    init(_ pattern: String) throws(SyntaxError) {
        var errorCode: Int32 = 0
        var errorOffset = 0
        let compiled = pattern.utf8.withContiguousStorageIfAvailable { bytes in
            pcre2_compile_8(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!, bytes.count, Self.options, &errorCode, &errorOffset, nil)
        } ?? Array(pattern.utf8).withUnsafeBufferPointer { bytes in
            pcre2_compile_8(bytes.baseAddress ?? UnsafePointer(bitPattern: 1)!, bytes.count, Self.options, &errorCode, &errorOffset, nil)
        }
        guard let compiled else {
            throw SyntaxError(description: "\(Self.message(errorCode)) at offset \(errorOffset)")
        }
        code = compiled
        self.pattern = pattern
        var count: UInt32 = 0
        pcre2_pattern_info_8(compiled, UInt32(PCRE2_INFO_CAPTURECOUNT), &count)
        captureCount = Int(count)
    }

    deinit { pcre2_code_free_8(code) }

    /// Whether the pattern matches anywhere in `text`, given up at `deadline`.
    func matches(_ text: some Collection<UInt8>, deadline: ContinuousClock.Instant) throws(MatchError) -> Bool {
        try firstMatch(in: text, deadline: deadline) != nil
    }

    /// The text of capture `group` (0: the whole match) in the first match in `text`; nil when
    /// nothing matches or that group took no part in the match.
    func firstCapture(_ group: Int, in text: some Collection<UInt8>, deadline: ContinuousClock.Instant) throws(MatchError) -> String? {
        guard group <= captureCount else { return nil }
        var captured: String?
        let found = try withBytes(text) { bytes throws(MatchError) in
            guard let ranges = try self.match(bytes, deadline: deadline), let range = ranges[group] else { return false }
            captured = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[range]), as: UTF8.self)
            return true
        }
        return found ? captured : nil
    }

    /// Byte ranges of the whole match and each group in the first match; nil when none.
    func firstMatch(in text: some Collection<UInt8>, deadline: ContinuousClock.Instant) throws(MatchError) -> [Range<Int>?]? {
        var result: [Range<Int>?]?
        _ = try withBytes(text) { bytes throws(MatchError) in
            result = try self.match(bytes, deadline: deadline)
            return true
        }
        return result
    }

    private func withBytes(_ text: some Collection<UInt8>, _ body: (UnsafeRawBufferPointer) throws(MatchError) -> Bool) throws(MatchError) -> Bool {
        var outcome: Result<Bool, MatchError> = .success(false)
        let done: Void? = text.withContiguousStorageIfAvailable { buffer in
            outcome = Result { () throws(MatchError) in try body(UnsafeRawBufferPointer(buffer)) }
        }
        if done == nil {
            Array(text).withUnsafeBytes { raw in outcome = Result { () throws(MatchError) in try body(raw) } }
        }
        return try outcome.get()
    }

    /// What the callout sees: when to stop, and a count so the clock is read only now and then.
    private struct Watch {
        var deadline: ContinuousClock.Instant
        var calls: UInt32 = 0
        var reason: MatchError?
    }

    private static let stopped: Int32 = -10_000

    /// Runs before every pattern item: gives up (a negative return ends the match) once the
    /// deadline passed or the task was cancelled, looking every 1024 items.
    private static let callout: @convention(c) (UnsafeMutablePointer<pcre2_callout_block_8>?, UnsafeMutableRawPointer?) -> Int32 = { _, context in
        let watch = context!.assumingMemoryBound(to: Watch.self)
        watch.pointee.calls &+= 1
        guard watch.pointee.calls & 1023 == 0 else { return 0 }
        if ContinuousClock.now >= watch.pointee.deadline {
            watch.pointee.reason = .outOfTime
        } else if Task.isCancelled {
            watch.pointee.reason = .cancelled
        } else {
            return 0
        }
        return ProbeRegex.stopped
    }

    private func match(_ subject: UnsafeRawBufferPointer, deadline: ContinuousClock.Instant) throws(MatchError) -> [Range<Int>?]? {
        guard let data = pcre2_match_data_create_from_pattern_8(code, nil) else { throw .tooComplex("out of memory") }
        defer { pcre2_match_data_free_8(data) }
        guard let context = pcre2_match_context_create_8(nil) else { throw .tooComplex("out of memory") }
        defer { pcre2_match_context_free_8(context) }
        pcre2_set_match_limit_8(context, Self.matchLimit)
        pcre2_set_heap_limit_8(context, Self.heapLimitKiB)
        var watch = Watch(deadline: deadline)
        let rc = withUnsafeMutablePointer(to: &watch) { pointer in
            pcre2_set_callout_8(context, Self.callout, pointer)
            let start = subject.baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(bitPattern: 1)!
            return pcre2_match_8(code, start, subject.count, 0, 0, data, context)
        }
        if rc == PCRE2_ERROR_NOMATCH { return nil }
        if rc == Self.stopped { throw watch.reason ?? .outOfTime }
        guard rc >= 0 else {
            switch rc {
            case PCRE2_ERROR_MATCHLIMIT: throw .tooComplex("PCRE2's match limit (\(Self.matchLimit) steps at one position) was reached")
            case PCRE2_ERROR_DEPTHLIMIT: throw .tooComplex("PCRE2's depth limit was reached")
            case PCRE2_ERROR_HEAPLIMIT: throw .tooComplex("PCRE2's heap limit (\(Self.heapLimitKiB / 1024) MiB) was reached")
            default: throw .tooComplex(Self.message(rc))
            }
        }
        let vector = pcre2_get_ovector_pointer_8(data)!
        var ranges: [Range<Int>?] = []
        for group in 0...captureCount {
            let start = UInt(bitPattern: vector[2 * group]), end = UInt(bitPattern: vector[2 * group + 1])
            // PCRE2_UNSET (all bits set): the group took no part in the match.
            if group >= Int(rc) || start == UInt.max || end < start {
                ranges.append(nil)
            } else {
                ranges.append(Int(start)..<Int(end))
            }
        }
        return ranges
    }

    private static func message(_ code: Int32) -> String {
        var buffer = [UInt8](repeating: 0, count: 256)
        let length = pcre2_get_error_message_8(code, &buffer, buffer.count)
        return length > 0 ? String(decoding: buffer.prefix(Int(length)), as: UTF8.self) : "PCRE2 error \(code)"
    }
}

/// A probe's compiled regexes, by pattern text: each is compiled on first use and kept for the
/// probe's later runs (literal patterns were validated when the script was loaded). A templated
/// pattern (`body_matches: '${token}'`) may differ on every run, so at most `limit` are kept;
/// past that a pattern is compiled for its run alone.
final class RegexCache: Sendable {
    static let limit = 64
    private let compiled = Mutex<[String: ProbeRegex]>([:])

    init() {}

    /// Patterns compiled so far.
    var count: Int { compiled.withLock { $0.count } }

    func regex(_ pattern: String) throws(ProbeRegex.SyntaxError) -> ProbeRegex {
        if let cached = compiled.withLock({ $0[pattern] }) { return cached }
        let regex = try ProbeRegex(pattern)
        compiled.withLock { if $0.count < Self.limit { $0[pattern] = regex } }
        return regex
    }
}
