import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif
import SondeCore

/// One ICMP echo request and its reply (`icmp:` steps), blocking, on the step's own thread.
///
/// The socket is an unprivileged ping socket (`SOCK_DGRAM`, `IPPROTO_ICMP`), which Linux allows
/// for the groups in `net.ipv4.ping_group_range` (systemd's default: every group), so the agent
/// needs no capability; when that is refused it tries a raw socket (root or CAP_NET_RAW). The
/// socket is connected to the target, so only that host's replies and ICMP errors reach it, and
/// a reply counts only with this request's identifier and sequence number.
enum ICMPEcho {
    struct Failure: Error, Sendable {
        var kind: ErrorKind
        var message: String
    }

    struct Reply: Sendable {
        /// From the socket's creation to the request sent (the `connect` phase).
        var setup: Duration
        /// From the request sent to its reply.
        var roundTrip: Duration
    }

    /// `label`: how messages name the target (the host and its address).
    static func echo(
        address: String, family: Int32, label: String, payloadSize: Int, dontFragment: Bool, deadline: ContinuousClock.Instant
    ) -> Result<Reply, Failure> {
        let clock = ContinuousClock()
        let started = clock.now
        let v6 = family == AF_INET6
        let proto = Int32(v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP)
        var raw = false
        var fd = socket(family, Int32(SOCK_DGRAM.rawValue), proto)
        if fd < 0, errno == EACCES || errno == EPERM || errno == EPROTONOSUPPORT {
            fd = socket(family, Int32(SOCK_RAW.rawValue), proto)
            raw = true
        }
        guard fd >= 0 else {
            let why = String(cString: strerror(errno))
            return .failure(Failure(kind: .internal, message: "the agent may not send ICMP (\(why)): allow its group in the sysctl net.ipv4.ping_group_range (systemd's default allows every group), or give it CAP_NET_RAW"))
        }
        defer { close(fd) }
        // ICMP errors (unreachable, time exceeded) for this socket become errors of the next recv.
        var on: Int32 = 1
        _ = setsockopt(fd, Int32(v6 ? IPPROTO_IPV6 : IPPROTO_IP), v6 ? IPV6_RECVERR : IP_RECVERR, &on, socklen_t(MemoryLayout<Int32>.size))
        if dontFragment {
            var value: Int32 = v6 ? 1 : IP_PMTUDISC_DO
            _ = setsockopt(fd, Int32(v6 ? IPPROTO_IPV6 : IPPROTO_IP), v6 ? IPV6_DONTFRAG : IP_MTU_DISCOVER, &value, socklen_t(MemoryLayout<Int32>.size))
        }
        guard connect(fd, address: address, family: family) == 0 else {
            return .failure(Failure(kind: .connect, message: "cannot send to \(label): \(String(cString: strerror(errno)))"))
        }
        let identifier = UInt16.random(in: 1...UInt16.max)
        let sequence = UInt16.random(in: 1...UInt16.max)
        var packet = [UInt8](repeating: 0, count: 8 + payloadSize)
        packet[0] = v6 ? 128 : 8 // echo request
        packet[4] = UInt8(identifier >> 8); packet[5] = UInt8(identifier & 0xFF)
        packet[6] = UInt8(sequence >> 8); packet[7] = UInt8(sequence & 0xFF)
        for index in 8..<packet.count { packet[index] = UInt8(truncatingIfNeeded: index) }
        // A ping socket and an ICMPv6 raw socket have the kernel fill in the checksum.
        if raw, !v6 {
            let sum = checksum(packet)
            packet[2] = UInt8(sum >> 8); packet[3] = UInt8(sum & 0xFF)
        }
        let sentAt = clock.now
        guard send(fd, packet, packet.count, 0) == packet.count else {
            return .failure(Failure(kind: .connect, message: "sending the echo request to \(label) failed: \(String(cString: strerror(errno)))"))
        }
        var buffer = [UInt8](repeating: 0, count: 65536)
        while true {
            let left = deadline - clock.now
            guard left > .zero else { break }
            var descriptor = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, Int32(min(max(1, left.milliseconds.rounded(.up)), 60_000)))
            if ready <= 0 { continue }
            let count = recv(fd, &buffer, buffer.count, Int32(MSG_DONTWAIT))
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                return .failure(Failure(kind: .connect, message: "\(label) is unreachable: \(String(cString: strerror(errno)))"))
            }
            switch match(buffer[0..<count], raw: raw, v6: v6, identifier: identifier, sequence: sequence) {
            case .reply:
                return .success(Reply(setup: sentAt - started, roundTrip: clock.now - sentAt))
            case .error(let what):
                return .failure(Failure(kind: .connect, message: "\(label): \(what)"))
            case .other:
                continue
            }
        }
        return .failure(Failure(kind: .timeout, message: "no echo reply from \(label) within \(Int((clock.now - sentAt).milliseconds)) ms"))
    }

    enum Received: Equatable { case reply, error(String), other }

    /// What a received packet is to this request. A ping socket gets the ICMP message alone
    /// and the kernel has matched the identifier; a raw IPv4 socket gets the IP header too and
    /// every ICMP message from the host, so the identifier is checked here.
    static func match(_ bytes: ArraySlice<UInt8>, raw: Bool, v6: Bool, identifier: UInt16, sequence: UInt16) -> Received {
        var message = bytes
        if raw, !v6 {
            guard let first = message.first else { return .other }
            let headerLength = Int(first & 0x0F) * 4
            guard message.count >= headerLength + 8 else { return .other }
            message = message.dropFirst(headerLength)
        }
        guard message.count >= 8 else { return .other }
        let base = message.startIndex
        let type = message[base]
        let code = message[base + 1]
        func field(_ at: Int, in data: ArraySlice<UInt8>) -> UInt16 { UInt16(data[data.startIndex + at]) << 8 | UInt16(data[data.startIndex + at + 1]) }
        let replyType: UInt8 = v6 ? 129 : 0
        if type == replyType {
            guard field(6, in: message) == sequence, !raw || field(4, in: message) == identifier else { return .other }
            return .reply
        }
        // An error quoting our request: the original header follows the 8-byte ICMP header
        // (after the original IPv4 header, for IPv4).
        let unreachable: UInt8 = v6 ? 1 : 3
        let timeExceeded: UInt8 = v6 ? 3 : 11
        guard type == unreachable || type == timeExceeded else { return .other }
        var quoted = message.dropFirst(8)
        if !v6 {
            guard let first = quoted.first else { return .other }
            quoted = quoted.dropFirst(Int(first & 0x0F) * 4)
        } else {
            quoted = quoted.dropFirst(40)
        }
        guard quoted.count >= 8, field(6, in: quoted) == sequence, !raw || field(4, in: quoted) == identifier else { return .other }
        if type == timeExceeded { return .error("time to live exceeded in transit (a routing loop, or too many hops)") }
        let reasons: [UInt8: String] = v6
            ? [0: "no route to destination", 1: "communication administratively prohibited", 3: "address unreachable", 4: "port unreachable"]
            : [0: "network unreachable", 1: "host unreachable", 3: "port unreachable", 4: "fragmentation needed but don't fragment set", 9: "network administratively prohibited", 10: "host administratively prohibited", 13: "communication administratively prohibited"]
        return .error("destination unreachable: \(reasons[code] ?? "code \(code)")")
    }

    /// The Internet checksum (RFC 1071).
    static func checksum(_ bytes: [UInt8]) -> UInt16 {
        var sum: UInt32 = 0
        var index = 0
        while index + 1 < bytes.count {
            sum += UInt32(bytes[index]) << 8 | UInt32(bytes[index + 1])
            index += 2
        }
        if index < bytes.count { sum += UInt32(bytes[index]) << 8 }
        while sum >> 16 != 0 { sum = (sum & 0xFFFF) + (sum >> 16) }
        return ~UInt16(sum)
    }

    private static func connect(_ fd: Int32, address: String, family: Int32) -> Int32 {
        guard var target = SocketAddress(host: address, port: 0), target.family == family else { errno = EINVAL; return -1 }
        return withUnsafePointer(to: &target.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, target.length) } }
    }
}
