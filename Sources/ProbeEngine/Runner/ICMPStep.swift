import CurlHTTP
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore

// `icmp:` steps: resolve the host (the system resolver, as `dns` steps without `server:`), send
// one echo request, wait for its reply. Timings: `dns` the lookup, `connect` the socket set-up,
// `ttfb` the round trip; `latency_below` and `degraded_after` compare the round trip, as ping
// and blackbox_exporter's icmp prober report it. Errors: `dns`, `connect` (no route, or an ICMP
// error such as host unreachable), `timeout` (no reply), `internal` (the host does not let the
// agent send ICMP).
extension StepExecution {
    func icmp(_ spec: ICMPSpec, state: inout RunState) async -> StepOutcome {
        let started = clock.now
        return await framed(method: "ICMP", url: "icmp://\(spec.host.source)", state: &state) { result, state, stepTimeout throws(StepFailure) in
            let deadline = clock.now.advanced(by: try timeLeft(stepTimeout))
            let host = try Self.renderedHost(spec.host, state: &state)
            result.url = "icmp://\(host.contains(":") ? "[\(host)]" : host)"
            let (address, family) = try await Self.icmpTarget(host, version: spec.ipVersion, deadline: deadline)
            // An address given as such takes no lookup: its dns phase is 0.
            let isAddress = address == host
            let resolved = isAddress ? 0 : (clock.now - started).milliseconds
            result.timings = PhaseTimings(dns: resolved, total: resolved)
            let label = isAddress ? host : "\(host) (\(address))"
            let outcome = await DetachedThread.run(name: "sonde-icmp", slots: .shared) {
                ICMPEcho.echo(address: address, family: family, label: label, payloadSize: spec.payloadSize, dontFragment: spec.dontFragment, deadline: deadline)
            } ?? .failure(ICMPEcho.Failure(kind: .internal, message: DetachedThread.noValue(for: "the ICMP exchange")))
            let total = (clock.now - started).milliseconds
            switch outcome {
            case .failure(let failure):
                result.timings = PhaseTimings(dns: resolved, ttfb: max(0, total - resolved), total: total)
                throw StepFailure(failure.kind, failure.message)
            case .success(let reply):
                let connect = reply.setup.milliseconds
                let roundTrip = reply.roundTrip.milliseconds
                result.timings = PhaseTimings(dns: resolved, connect: connect, ttfb: roundTrip, transfer: max(0, total - resolved - connect - roundTrip), total: total)
                for assertion in step.assertions {
                    try checkTimingAndCertificate(assertion, total: roundTrip, certificate: nil, state: &state)
                }
                return try degradedReason(total: roundTrip, state: &state)
            }
        }
    }

    /// The address to ping: the host itself when it is one, else its first address from the
    /// system resolver (of the family `ip_version` asks for).
    static func icmpTarget(_ host: String, version: IPVersion?, deadline: ContinuousClock.Instant) async throws(StepFailure) -> (String, Int32) {
        if let literal = SocketAddress(host: host, port: 0), version != (literal.family == AF_INET ? .v6 : .v4) { return (host, literal.family) }
        let family: Int32 = switch version { case .v4?: AF_INET; case .v6?: AF_INET6; case nil: AF_UNSPEC }
        switch await SystemResolver.addresses(of: host, family: family, deadline: deadline) {
        case .success(let addresses):
            guard let first = addresses.first else { throw StepFailure(.dns, "\(host): no address to ping") }
            return (first, first.contains(":") ? AF_INET6 : AF_INET)
        case .failure(let failure):
            throw StepFailure(failure.errorKind, "\(host): \(failure.message)")
        }
    }
}
