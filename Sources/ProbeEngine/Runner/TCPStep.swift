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
            let host = try state.render(spec.host)
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
            if let send = spec.send { actions.append(.send(Data(try state.render(send).utf8))) }
            if let expect = spec.expect {
                labels[actions.count] = "'\(expect.source)'"
                actions.append(.expect(.bytes(Data(try state.render(expect).utf8))))
            }
            return (actions, labels)
        }
        for (index, entry) in spec.queryResponse.enumerated() {
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
                let timeout = probeTimeout
                actions.append(.expect(.line { line, deadline in
                    do throws(ProbeRegex.MatchError) {
                        return .success(try regex.matches(line, deadline: deadline))
                    } catch {
                        let (kind, why): (HTTPTransferError.Kind, String) = switch error {
                        case .outOfTime: (.timeout, "did not finish within the probe timeout of \(DurationText.format(timeout))")
                        case .cancelled: (.cancelled, "was cancelled (the agent is stopping)")
                        case .tooComplex(let reason): (.invalidRequest, "was stopped: \(reason)")
                        }
                        return .failure(HTTPTransferError(
                            kind: kind, curlCode: 0,
                            message: "\(check) /\(display)/ \(why) on a \(line.count)-byte line (the pattern backtracks too much; make it less ambiguous)"))
                    }
                }))
            case nil:
                break
            }
            if let send = entry.send { actions.append(.send(Data(try state.render(send).utf8))) }
            if entry.startTLS { actions.append(.startTLS) }
        }
        return (actions, labels)
    }

    /// Up to 200 bytes of an answer for a message: control bytes escaped, secrets redacted.
    static func printable(_ data: Data, redactor: Redactor) -> String {
        guard !data.isEmpty else { return "nothing" }
        var text = ""
        for byte in data.prefix(200) {
            switch byte {
            case 0x0A: text += "\\n"
            case 0x0D: text += "\\r"
            case 0x20..<0x7F: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + hexDigits([byte])
            }
        }
        return "'" + redactor.redact(text) + (data.count > 200 ? "…'" : "'")
    }

    /// Why the step counts as slow, when `degraded_after` says it is.
    func degradedReason(total: Double, state: inout RunState) throws(StepFailure) -> String? {
        guard let spec = step.degradedAfter else { return nil }
        let limit = try state.duration(spec, field: "degraded_after")
        guard total > limit.milliseconds else { return nil }
        return "step '\(step.name)' took \(Int(total)) ms, over degraded_after \(DurationText.format(limit))"
    }
}
