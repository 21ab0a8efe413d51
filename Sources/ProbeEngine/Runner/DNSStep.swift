import CurlHTTP
import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore
import Synchronization

// `dns:` steps. Without `server:`, A and AAAA questions go to the system resolver
// (getaddrinfo: /etc/hosts, nsswitch, the host's caches and search domains, as the platform's
// own clients resolve); other types go to the first `nameserver` of /etc/resolv.conf. With
// `server:`, the question goes to that server over UDP (TCP when truncated). Each lookup runs
// on a short-lived thread (getaddrinfo blocks); the step's time is its `dns` phase and total.
extension StepExecution {
    func dns(_ spec: DNSSpec, state: inout RunState) async -> StepOutcome {
        let started = clock.now
        return await framed(method: "DNS", url: "dns:\(spec.name.source)?type=\(spec.type.rawValue)", state: &state) { result, state, stepTimeout throws(StepFailure) in
            let name = try state.render(spec.name)
            let server = spec.server.map { $0.host.contains(":") ? "[\($0.host)]:\($0.port)" : "\($0.host):\($0.port)" }
            result.url = "dns://\(server ?? "system")/\(name)?type=\(spec.type.rawValue)"
            let lookupDeadline = clock.now.advanced(by: try timeLeft(stepTimeout))
            let answers = await Self.lookup(name: name, type: spec.type, server: spec.server, deadline: lookupDeadline)
            let elapsed = (clock.now - started).milliseconds
            result.timings = PhaseTimings(dns: elapsed, total: elapsed)
            let records: [String]
            // `rcode: NXDOMAIN`: the answer code is the check ("this name must not resolve").
            if let expected = spec.rcode {
                let got: String
                switch answers {
                case .success(let found): got = found.isEmpty ? "NOERROR" : "NOERROR with answers \(found.prefix(20))"
                case .failure(let failure) where failure.rcode != nil: got = failure.rcode!
                case .failure(let failure):
                    throw StepFailure(failure.errorKind, "\(name) \(spec.type.rawValue): \(failure.message)")
                }
                if !got.hasPrefix(expected) {
                    throw StepFailure(.assertion, "\(name) \(spec.type.rawValue) at \(server ?? "the system resolver"): answered \(got), expected \(expected)")
                }
            }
            switch answers {
            case .success(let found): records = found
            case .failure where spec.rcode != nil: records = []
            case .failure(let failure):
                let kind = failure.errorKind
                let waited = kind == .timeout ? " (waited \(Int(elapsed)) ms)" : ""
                throw StepFailure(kind, "\(name) \(spec.type.rawValue) at \(server ?? "the system resolver"): \(failure.message)\(waited)")
            }
            if records.isEmpty, spec.rcode == nil {
                throw StepFailure(.dns, "\(name) \(spec.type.rawValue) at \(server ?? "the system resolver"): no \(spec.type.rawValue) records")
            }
            let normalized = Set(records.map(Self.normalizedAnswer))
            for expected in spec.expect {
                let value = try state.render(expected)
                if !normalized.contains(Self.normalizedAnswer(value)) {
                    throw StepFailure(.assertion, "\(name) \(spec.type.rawValue): expected '\(value)' among the answers \(records.prefix(20))")
                }
            }
            for assertion in step.assertions {
                try checkTimingAndCertificate(assertion, total: elapsed, certificate: nil, state: &state)
            }
            return try degradedReason(total: elapsed, state: &state)
        }
    }

    /// Lower case, no trailing dot, IPv6 in its canonical text: how answers are compared.
    static func normalizedAnswer(_ text: String) -> String {
        var value = text.trimmed().lowercased()
        if value.hasSuffix(".") { value.removeLast() }
        var address = in6_addr()
        if value.contains(":"), inet_pton(AF_INET6, value, &address) == 1 {
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            if inet_ntop(AF_INET6, &address, &buffer, socklen_t(buffer.count)) != nil { value = DNSWireClient.text(buffer) }
        }
        return value
    }

    static func lookup(name: String, type: DNSRecordType, server: (host: String, port: Int)?, deadline: ContinuousClock.Instant) async -> Result<[String], DNSFailure> {
        if server == nil, type == .A || type == .AAAA {
            return await SystemResolver.addresses(of: name, family: type == .A ? AF_INET : AF_INET6, deadline: deadline)
        }
        guard let target = server ?? SystemResolver.firstNameserver() else {
            return .failure(DNSFailure(.dns, "no server: given and no nameserver in /etc/resolv.conf for a \(type.rawValue) question"))
        }
        let answer = await DetachedThread.run(name: "sonde-dns", slots: .shared) {
            DNSWireClient.query(name: name, type: type, server: target.host, port: target.port, deadline: deadline)
        }
        return answer ?? .failure(DNSFailure(ProbeWorkSlots.shared.busy ? .agent : .dns, DetachedThread.noValue(for: "the DNS lookup")))
    }
}

/// The system resolver, raced against the step's deadline: getaddrinfo has no time-out of its
/// own, so a stuck lookup is abandoned (its thread ends when the resolver gives up), as it is
/// when the caller is cancelled (the agent stopping).
enum SystemResolver {
    static func addresses(of name: String, family: Int32, deadline: ContinuousClock.Instant) async -> Result<[String], DNSFailure> {
        await withTaskGroup(of: Result<[String], DNSFailure>.self) { group in
            group.addTask {
                await DetachedThread.run(name: "sonde-dns", slots: .shared) { resolve(name, family: family) }
                    ?? .failure(DNSFailure(ProbeWorkSlots.shared.busy ? .agent : .dns, DetachedThread.noValue(for: "the DNS lookup")))
            }
            group.addTask {
                do {
                    try await Task.sleep(until: deadline, clock: ContinuousClock())
                    return .failure(DNSFailure(.timeout, "the system resolver gave no answer before the time-out"))
                } catch {
                    return .failure(DNSFailure(.dns, "the DNS lookup was cancelled (the agent is stopping)"))
                }
            }
            let first = await group.next()!
            group.cancelAll()
            return first
        }
    }

    private static func resolve(_ name: String, family: Int32) -> Result<[String], DNSFailure> {
        var hints = addrinfo()
        hints.ai_family = family
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(name, nil, &hints, &list)
        guard status == 0 else {
            let reason = String(cString: gai_strerror(status))
            // EAI_NONAME: the name does not exist (or has no address of this family).
            return .failure(DNSFailure(.dns, "the system resolver says: \(reason)", rcode: status == EAI_NONAME ? "NXDOMAIN" : nil))
        }
        defer { freeaddrinfo(list) }
        var answers: [String] = []
        var node = list
        while let entry = node {
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            if let address = entry.pointee.ai_addr {
                if entry.pointee.ai_family == AF_INET {
                    address.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { var a = $0.pointee.sin_addr; _ = inet_ntop(AF_INET, &a, &buffer, socklen_t(buffer.count)) }
                } else if entry.pointee.ai_family == AF_INET6 {
                    address.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { var a = $0.pointee.sin6_addr; _ = inet_ntop(AF_INET6, &a, &buffer, socklen_t(buffer.count)) }
                }
            }
            let text = DNSWireClient.text(buffer)
            if !text.isEmpty, !answers.contains(text) { answers.append(text) }
            node = entry.pointee.ai_next
        }
        return .success(answers)
    }

    /// The first `nameserver` line of /etc/resolv.conf (port 53).
    static func firstNameserver() -> (host: String, port: Int)? {
        guard let data = FileManager.default.contents(atPath: "/etc/resolv.conf") else { return nil }
        for line in String(decoding: data.prefix(64 << 10), as: UTF8.self).split(separator: "\n") {
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if words.count >= 2, words[0] == "nameserver", let server = DNSServerAddress.parse(String(words[1])) { return server }
        }
        return nil
    }
}
