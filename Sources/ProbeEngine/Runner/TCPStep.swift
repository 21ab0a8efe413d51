import CurlHTTP
import FoundationEssentials
import SondeCore

// `tcp:` steps: connect (TLS optional), then send/expect or the `query_response` dialogue (with
// STARTTLS); timings and errors as for HTTP (dns, connect, tls, timeout; a missing answer is an
// assertion failure).
extension StepExecution {
    func tcp(_ spec: TCPSpec, state: inout RunState) async -> StepOutcome {
        var result = StepResult(name: step.name, method: "TCP", url: "tcp://\(spec.host.source):\(spec.port)", ok: false, timings: .zero)
        var degradedBy: String?
        do throws(StepFailure) {
            let stepTimeout = try step.timeout.map { spec throws(StepFailure) in try state.duration(spec, field: "timeout") }
            let host = try Self.renderedHost(spec.host, state: &state)
            let shownHost = host.contains(":") ? "[\(host)]" : host
            result.url = (spec.tls != nil && !spec.startsTLS ? "tls://" : "tcp://") + "\(shownHost):\(spec.port)"
            let (actions, labels) = try dialogue(spec, state: &state)
            var exchange = TCPExchange(host: host, port: spec.port, tls: spec.tls != nil && !spec.startsTLS, actions: actions, timeout: try timeLeft(stepTimeout))
            exchange.ipVersion = spec.ipVersion
            exchange.caFile = spec.tls?.caFile ?? state.context.caFile
            exchange.clientCertificate = spec.tls?.certificate
            exchange.clientKey = spec.tls?.key
            exchange.verifyTLS = !(spec.tls?.insecure ?? false)
            let outcome: TCPExchange.Outcome
            switch await exchange.perform() {
            case .failure(let error):
                result.timings = error.timings
                result.setCertificate(error.certificateNotAfter)
                throw StepFailure(error.errorKind, "\(result.url): \(error.message)")
            case .success(let value):
                outcome = value
            }
            result.timings = outcome.timings
            result.setCertificate(outcome.certificateNotAfter)
            if let index = outcome.stoppedAt {
                let expect = labels[index, default: "the answer"]
                let got = Self.printable(outcome.received, redactor: state.redactor)
                switch outcome.readEnd {
                case .matched, .notRead: break
                case .timeout:
                    throw StepFailure(.timeout, "\(result.url): \(expect) did not arrive within \(DurationText.format(exchange.timeout)); got \(got)")
                case .closed:
                    throw StepFailure(.assertion, "\(result.url): the connection closed before \(expect) arrived; got \(got)")
                case .limit:
                    throw StepFailure(.assertion, "\(result.url): \(expect) not in the first \(exchange.maxReceiveBytes) bytes; got \(got)")
                }
            }
            for assertion in step.assertions {
                try checkTimingAndCertificate(assertion, total: outcome.timings.total, certificate: outcome.certificateNotAfter, subject: outcome.certificateSubject, state: &state)
            }
            degradedBy = try degradedReason(total: outcome.timings.total, state: &state)
            result.ok = true
        } catch {
            result.error = ProbeError(kind: error.kind, step: step.name, message: error.message)
        }
        return StepOutcome(result: result, degradedBy: degradedBy)
    }

    /// The exchange's moves, and for each answer awaited how messages name it: `'+PONG'` for
    /// the step's `expect`, `query_response[2] /^250-STARTTLS/` for an entry.
    private func dialogue(_ spec: TCPSpec, state: inout RunState) throws(StepFailure) -> ([TCPExchange.Action], [Int: String]) {
        var actions: [TCPExchange.Action] = []
        var labels: [Int: String] = [:]
        if spec.queryResponse.isEmpty {
            if let send = spec.send { actions.append(.send(Data(try state.renderSend(send, field: "send").utf8))) }
            if let expect = spec.expect {
                labels[actions.count] = "'\(expect.source)'"
                actions.append(.expect(.bytes(Data(try state.render(expect).utf8))))
            }
            return (actions, labels)
        }
        for (index, entry) in spec.queryResponse.enumerated() {
            var lineRegex: (ProbeRegex, String)?
            switch entry.expect {
            case .text(let text)?:
                labels[actions.count] = "query_response[\(index)] '\(text.source)'"
                actions.append(.expect(.bytes(Data(try state.render(text).utf8))))
            case .line(let template)?:
                let (pattern, display) = try state.renderPattern(template)
                let check = "query_response[\(index)] expect_matches"
                let regex: ProbeRegex
                do {
                    regex = try state.probe.script.regexes.regex(pattern)
                } catch {
                    throw StepFailure(.script, "\(check) /\(display)/: invalid regular expression: \(error)")
                }
                labels[actions.count] = "query_response[\(index)] /\(display)/"
                lineRegex = (regex, display)
                let failure = Self.matchFailure(check: "\(check) /\(display)/", probeTimeout: probeTimeout)
                actions.append(.expect(.line { line, deadline in
                    do throws(ProbeRegex.MatchError) {
                        return .success(try regex.matches(Self.matchable(line), deadline: deadline))
                    } catch {
                        return .failure(failure(error, line.count))
                    }
                }))
            case nil:
                break
            }
            if let send = entry.send, send.highestCapture != nil {
                guard let (regex, display) = lineRegex else {
                    throw StepFailure(.script, "query_response[\(index)] send: its ${N} groups need an expect_matches in the same entry")
                }
                actions.append(.sendMatched(Self.textWithGroups(
                    try state.renderWithGroups(send, field: "query_response[\(index)] send"), of: regex, entry: index,
                    failure: Self.matchFailure(check: "query_response[\(index)] expect_matches /\(display)/ (for send's groups)", probeTimeout: probeTimeout))))
            } else if let send = entry.send {
                actions.append(.send(Data(try state.renderSend(send, field: "query_response[\(index)] send").utf8)))
            }
            if entry.startTLS { actions.append(.startTLS) }
        }
        return (actions, labels)
    }

    /// A server's line as the regex reads it: as it came when it is UTF-8; otherwise with each
    /// invalid sequence read as U+FFFD, as blackbox_exporter's Go regexp reads it, so `.` steps
    /// over a Latin-1 `é` instead of the line never matching.
    static func matchable(_ line: Data) -> Data {
        String(validating: line, as: UTF8.self) != nil ? line : Data(String(decoding: line, as: UTF8.self).utf8)
    }

    /// A host as written, without the brackets of an IPv6 literal in URL form (`[::1]`): the
    /// brackets are added back where a URL is shown, once.
    static func bareHost(_ text: String) -> String {
        text.hasPrefix("[") && text.hasSuffix("]") && text.count > 2 ? String(text.dropFirst().dropLast()) : text
    }

    /// Whether `host` (without brackets) is a host name (letters, digits, `-`, `_`, dots; labels of
    /// 1–63, 253 in all) or an IP address. The tcp step builds a URL from it for curl, so
    /// `127.0.0.3/#` from a server's answer connected to port 80 instead of the step's port, and
    /// `user@host` set credentials (red team, fifth pass).
    static func isHostName(_ host: String) -> Bool {
        if SocketAddress(host: host, port: 0) != nil { return true }
        let name = host.hasSuffix(".") ? host.dropLast() : Substring(host)
        guard !name.isEmpty, name.utf8.count <= 253 else { return false }
        return name.split(separator: ".", omittingEmptySubsequences: false).allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.utf8.allSatisfy { byte in
                (byte >= 0x30 && byte <= 0x39) || (byte | 0x20 >= 0x61 && byte | 0x20 <= 0x7A) || byte == 0x2D || byte == 0x5F
            }
        }
    }

    /// The rendered host, refused as `script` when it is not a host name or address.
    static func renderedHost(_ template: Template, state: inout RunState) throws(StepFailure) -> String {
        let host = bareHost(try state.render(template))
        guard isHostName(host) else {
            throw StepFailure(.script, "host '\(host)' is not a host name or IP address (no scheme, port, path or user: the port goes under port:); not connected")
        }
        return host
    }

    /// How a regex that could not finish on a server's line is reported: the check, and why.
    private static func matchFailure(check: String, probeTimeout: Duration) -> @Sendable (ProbeRegex.MatchError, Int) -> HTTPTransferError {
        { error, length in
            let (kind, why): (HTTPTransferError.Kind, String) = switch error {
            case .outOfTime: (.timeout, "did not finish within the probe timeout of \(DurationText.format(probeTimeout))")
            case .cancelled: (.cancelled, "was cancelled (the agent is stopping)")
            case .tooComplex(let reason): (.invalidRequest, "was stopped: \(reason)")
            }
            return HTTPTransferError(
                kind: kind, curlCode: 0, message: "\(check) \(why) on a \(length)-byte line (the pattern backtracks too much; make it less ambiguous)")
        }
    }

    /// The bytes a send with `${1}` … writes: its text, with each group taken from the line the
    /// entry's `expect_matches` matched (the last line of what that expect consumed; a group
    /// that took no part is empty). The line's bytes go out as they came.
    private static func textWithGroups(
        _ parts: [RunState.MatchedText], of regex: ProbeRegex, entry: Int, failure: @escaping @Sendable (ProbeRegex.MatchError, Int) -> HTTPTransferError
    ) -> @Sendable (Data, ContinuousClock.Instant) -> Result<Data, HTTPTransferError> {
        { consumed, deadline in
            var end = consumed.endIndex
            if end > consumed.startIndex, consumed[end - 1] == 0x0A { end -= 1 }
            if end > consumed.startIndex, consumed[end - 1] == 0x0D { end -= 1 }
            let start = consumed[consumed.startIndex..<end].lastIndex(of: 0x0A).map { $0 + 1 } ?? consumed.startIndex
            let line = matchable(consumed[start..<end])
            let groups: [Range<Int>?]
            do throws(ProbeRegex.MatchError) {
                groups = try regex.firstMatch(in: line, deadline: deadline) ?? []
            } catch {
                return .failure(failure(error, line.count))
            }
            var bytes = Data()
            for part in parts {
                switch part {
                case .text(let text): bytes.append(contentsOf: text.utf8)
                case .group(let number):
                    guard number <= regex.captureCount else {
                        return .failure(HTTPTransferError(
                            kind: .invalidRequest, curlCode: 0,
                            message: "query_response[\(entry)] send: ${\(number)}: its expect_matches has \(regex.captureCount) group\(regex.captureCount == 1 ? "" : "s")"))
                    }
                    if number < groups.count, let range = groups[number] {
                        let group = line[(line.startIndex + range.lowerBound)..<(line.startIndex + range.upperBound)]
                        // A line has no LF, but may hold a CR or NUL of the server's.
                        guard !RunState.hasLineBreak(group) else {
                            return .failure(HTTPTransferError(
                                kind: .invalidRequest, curlCode: 0,
                                message: "query_response[\(entry)] send: ${\(number)} holds a line break or NUL; not sent (it would send a command of its own)"))
                        }
                        bytes.append(group)
                    }
                }
            }
            return .success(bytes)
        }
    }

    /// Up to 200 characters of an answer for a message: redacted first, on the bytes as they came
    /// and past the cut (a secret the server echoed with non-ASCII or control bytes in it, or
    /// padded to straddle the cut, is still found whole), then control and non-ASCII bytes escaped.
    static func printable(_ data: Data, redactor: Redactor) -> String {
        guard !data.isEmpty else { return "nothing" }
        var shown = ProbeRunner.reported(data, redactor, limit: 200)
        let cut = shown.hasSuffix("…")
        if cut { shown.removeLast() }
        var text = ""
        for byte in shown.utf8 {
            switch byte {
            case 0x0A: text += "\\n"
            case 0x0D: text += "\\r"
            case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + hexDigits([byte])
            }
        }
        return "'" + text + (cut ? "…'" : "'")
    }

    /// Why the step counts as slow, when `degraded_after` says it is.
    func degradedReason(total: Double, state: inout RunState) throws(StepFailure) -> String? {
        guard let spec = step.degradedAfter else { return nil }
        let limit = try state.duration(spec, field: "degraded_after")
        guard total > limit.milliseconds else { return nil }
        return "step '\(step.name)' took \(DurationText.took(total)), over degraded_after \(DurationText.format(limit))"
    }
}
