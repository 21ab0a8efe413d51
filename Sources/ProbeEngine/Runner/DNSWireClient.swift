import FoundationEssentials
import SondeCore
#if canImport(Glibc)
import Glibc
#endif

/// Record types a `dns` step can ask for.
enum DNSRecordType: String, Sendable, CaseIterable {
    case A, AAAA, CNAME, TXT, MX, NS, PTR, SRV, SOA, CAA

    var code: UInt16 {
        switch self {
        case .A: 1
        case .NS: 2
        case .CNAME: 5
        case .SOA: 6
        case .PTR: 12
        case .MX: 15
        case .TXT: 16
        case .AAAA: 28
        case .SRV: 33
        case .CAA: 257
        }
    }
}

/// Why a DNS question got no usable answer.
struct DNSFailure: Error, Sendable {
    /// `agent`: the agent could not run the lookup (its bound on probe exchanges), not the server's doing.
    enum Kind: Sendable { case dns, timeout, connect, agent }
    var kind: Kind
    var message: String
    /// The server's answer code when it answered with an error (`NXDOMAIN`, `SERVFAIL`, …).
    var rcode: String?
    /// The run's error kind for it.
    var errorKind: ErrorKind {
        switch kind {
        case .dns: .dns
        case .timeout: .timeout
        case .connect: .connect
        case .agent: .internal
        }
    }

    init(_ kind: Kind, _ message: String, rcode: String? = nil) {
        self.kind = kind
        self.message = message
        self.rcode = rcode
    }
}

/// A small DNS client of its own for `dns` steps with a `server:` (RFC 1035 wire format): one
/// question over UDP, again over TCP when the answer is truncated. Every server is treated as
/// hostile: answers must come from the server asked, carry our random id and echo our question;
/// every length, count and compression pointer is checked against the message before use
/// (pointers only point backwards, at most 64 hops, names at most 255 bytes).
enum DNSWireClient {
    static let udpBufferSize = 4096

    /// The answers of `type` for `name` (text form: `10.0.0.1`, `10 mail.example.com`, …).
    static func query(name: String, type: DNSRecordType, server: String, port: Int, deadline: ContinuousClock.Instant) -> Result<[String], DNSFailure> {
        let id = UInt16.random(in: 0...UInt16.max)
        let question: [UInt8]
        switch encodeQuery(name: name, type: type, id: id) {
        case .success(let bytes): question = bytes
        case .failure(let failure): return .failure(failure)
        }
        guard var address = SocketAddress(host: server, port: port) else {
            return .failure(DNSFailure(.dns, "server '\(server)' is not an IP address"))
        }
        let answer: [UInt8]
        switch exchangeUDP(question, id: id, address: &address, deadline: deadline) {
        case .success(let bytes): answer = bytes
        case .failure(let failure): return .failure(failure)
        }
        if answer[2] & 0x02 != 0 {  // TC: the answer did not fit a datagram
            switch exchangeTCP(question, address: &address, deadline: deadline) {
            case .success(let bytes): return parse(bytes, id: id, name: name, type: type)
            case .failure(let failure): return .failure(failure)
            }
        }
        return parse(answer, id: id, name: name, type: type)
    }

    // MARK: - Wire format

    static func encodeName(_ name: String) -> [UInt8]? {
        var trimmed = Substring(name)
        if trimmed.hasSuffix(".") { trimmed = trimmed.dropLast() }
        var out: [UInt8] = []
        if !trimmed.isEmpty {
            for label in trimmed.split(separator: ".", omittingEmptySubsequences: false) {
                let bytes = Array(label.utf8)
                guard (1...63).contains(bytes.count), bytes.allSatisfy({ $0 > 0x20 && $0 < 0x7F }) else { return nil }
                out.append(UInt8(bytes.count))
                out += bytes
            }
        }
        out.append(0)
        return out.count <= 255 ? out : nil
    }

    static func encodeQuery(name: String, type: DNSRecordType, id: UInt16) -> Result<[UInt8], DNSFailure> {
        guard let encoded = encodeName(name) else {
            return .failure(DNSFailure(.dns, "'\(name)' is not a valid DNS name (labels of 1…63 printable ASCII bytes, 255 in all)"))
        }
        var message: [UInt8] = [UInt8(id >> 8), UInt8(id & 0xFF), 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]
        message += encoded
        message += [UInt8(type.code >> 8), UInt8(type.code & 0xFF), 0, 1]
        return .success(message)
    }

    /// Reads a possibly compressed name at `offset`; returns it (lowercased, no trailing dot)
    /// and the offset after it in the original place.
    static func readName(_ message: [UInt8], at start: Int) -> (name: String, next: Int)? {
        var labels: [String] = []
        var offset = start
        var next: Int?
        var hops = 0
        var length = 0
        var lowestTarget = start
        while true {
            guard offset < message.count else { return nil }
            let byte = message[offset]
            if byte & 0xC0 == 0xC0 {
                guard offset + 1 < message.count else { return nil }
                let target = Int(byte & 0x3F) << 8 | Int(message[offset + 1])
                hops += 1
                // Only backwards, and each jump before the last: no loops, bounded work.
                guard target < lowestTarget, hops <= 64 else { return nil }
                lowestTarget = target
                if next == nil { next = offset + 2 }
                offset = target
                continue
            }
            guard byte & 0xC0 == 0 else { return nil }
            let count = Int(byte)
            if count == 0 {
                return (labels.joined(separator: "."), next ?? offset + 1)
            }
            length += count + 1
            guard length <= 255, offset + 1 + count <= message.count else { return nil }
            labels.append(String(decoding: message[(offset + 1)..<(offset + 1 + count)], as: UTF8.self).lowercased())
            offset += 1 + count
        }
    }

    static func parse(_ message: [UInt8], id: UInt16, name: String, type: DNSRecordType) -> Result<[String], DNSFailure> {
        func u16(_ at: Int) -> Int { Int(message[at]) << 8 | Int(message[at + 1]) }
        guard message.count >= 12, u16(0) == Int(id), message[2] & 0x80 != 0 else {
            return .failure(DNSFailure(.dns, "the server's answer is not a DNS response to our question"))
        }
        switch message[3] & 0x0F {
        case 0: break
        case 3: return .failure(DNSFailure(.dns, "\(name) does not exist (NXDOMAIN)", rcode: "NXDOMAIN"))
        case 2: return .failure(DNSFailure(.dns, "the server failed to answer for \(name) (SERVFAIL)", rcode: "SERVFAIL"))
        case 5: return .failure(DNSFailure(.dns, "the server refused the query for \(name) (REFUSED)", rcode: "REFUSED"))
        case let code: return .failure(DNSFailure(.dns, "the server answered with error code \(code) for \(name)", rcode: "RCODE\(code)"))
        }
        guard u16(4) == 1, let question = readName(message, at: 12), question.next + 4 <= message.count,
            question.name == normalized(name), u16(question.next) == Int(type.code)
        else {
            return .failure(DNSFailure(.dns, "the server's answer does not echo our question"))
        }
        // Only records that answer the question count: class IN, owned by the name asked, or
        // by a name a CNAME chain from it leads to (a server's record for another name, or
        // for class CH, must not make `expect` pass).
        var offset = question.next + 4
        var records: [(owner: String, type: Int, data: Int, length: Int)] = []
        for _ in 0..<u16(6) {
            guard let owner = readName(message, at: offset), owner.next + 10 <= message.count else {
                return .failure(DNSFailure(.dns, "malformed answer record"))
            }
            let recordType = u16(owner.next)
            let recordClass = u16(owner.next + 2)
            let length = u16(owner.next + 8)
            let data = owner.next + 10
            guard data + length <= message.count else { return .failure(DNSFailure(.dns, "answer record longer than the message")) }
            offset = data + length
            if recordClass == 1 { records.append((owner.name, recordType, data, length)) }
        }
        var names: Set<String> = [question.name]
        if type != .CNAME {
            // Each alias read once, then followed from the question (linear in the records,
            // whatever order a server lists a long chain in).
            var aliases: [String: [String]] = [:]
            for record in records where record.type == Int(DNSRecordType.CNAME.code) {
                if let target = readName(message, at: record.data), target.next <= record.data + record.length {
                    aliases[record.owner, default: []].append(target.name)
                }
            }
            var pending = [question.name]
            while let name = pending.popLast() {
                for target in aliases[name] ?? [] where names.insert(target).inserted { pending.append(target) }
            }
        }
        var answers: [String] = []
        for record in records where record.type == Int(type.code) && names.contains(record.owner) {
            guard let text = rdataText(message, type: type, at: record.data, length: record.length) else {
                return .failure(DNSFailure(.dns, "malformed \(type.rawValue) record"))
            }
            answers.append(text)
            if answers.count >= 256 { break }
        }
        return .success(answers)
    }

    /// A NUL-terminated C buffer (inet_ntop's output) as text.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

        static func normalized(_ name: String) -> String {
        (name.hasSuffix(".") ? String(name.dropLast()) : name).lowercased()
    }

    /// One record's data as text; nil when it does not fit its length.
    static func rdataText(_ message: [UInt8], type: DNSRecordType, at start: Int, length: Int) -> String? {
        let end = start + length
        func nameInside(_ at: Int) -> (name: String, next: Int)? {
            guard let read = readName(message, at: at), read.next <= end else { return nil }
            return read
        }
        func u16(_ at: Int) -> Int { Int(message[at]) << 8 | Int(message[at + 1]) }
        switch type {
        case .A:
            guard length == 4 else { return nil }
            return message[start..<end].map(String.init).joined(separator: ".")
        case .AAAA:
            guard length == 16 else { return nil }
            var buffer = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
            let ok = Array(message[start..<end]).withUnsafeBytes { inet_ntop(AF_INET6, $0.baseAddress, &buffer, socklen_t(buffer.count)) != nil }
            return ok ? text(buffer) : nil
        case .CNAME, .NS, .PTR:
            return nameInside(start)?.name
        case .MX:
            guard length >= 3, let host = nameInside(start + 2) else { return nil }
            return "\(u16(start)) \(host.name)"
        case .SRV:
            guard length >= 7, let target = nameInside(start + 6) else { return nil }
            return "\(u16(start)) \(u16(start + 2)) \(u16(start + 4)) \(target.name)"
        case .TXT, .CAA:
            if type == .CAA {
                guard length >= 2, start + 2 + Int(message[start + 1]) <= end else { return nil }
                let tagEnd = start + 2 + Int(message[start + 1])
                return "\(message[start]) \(String(decoding: message[(start + 2)..<tagEnd], as: UTF8.self)) \(String(decoding: message[tagEnd..<end], as: UTF8.self))"
            }
            var text = ""
            var at = start
            while at < end {
                let count = Int(message[at])
                guard at + 1 + count <= end else { return nil }
                text += String(decoding: message[(at + 1)..<(at + 1 + count)], as: UTF8.self)
                at += 1 + count
            }
            return text
        case .SOA:
            guard let primary = nameInside(start), let mailbox = nameInside(primary.next), mailbox.next + 20 == end else { return nil }
            return "\(primary.name) \(mailbox.name)"
        }
    }

    // MARK: - Transport

    private static func millisecondsLeft(_ deadline: ContinuousClock.Instant) -> Int32? {
        let left = deadline - ContinuousClock().now
        guard left > .zero else { return nil }
        return Int32(min(60_000, left.wholeMilliseconds + 1))
    }

    /// Waits for `events` on `socket`; false at the deadline.
    private static func wait(_ socket: Int32, _ events: Int32, deadline: ContinuousClock.Instant) -> Bool {
        while let left = millisecondsLeft(deadline) {
            var descriptor = pollfd(fd: socket, events: Int16(events), revents: 0)
            let ready = poll(&descriptor, 1, left)
            if ready > 0 { return true }
            if ready < 0, errno != EINTR { return false }
        }
        return false
    }

    private static func connected(_ type: Int32, _ address: inout SocketAddress, deadline: ContinuousClock.Instant) -> Result<Int32, DNSFailure> {
        let socket = Glibc.socket(address.family, type | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard socket >= 0 else { return .failure(DNSFailure(.connect, "cannot open a socket: \(String(cString: strerror(errno)))")) }
        let length = address.length
        let result = withUnsafePointer(to: &address.storage) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, length) } }
        if result != 0, errno != EINPROGRESS {
            let reason = String(cString: strerror(errno))
            close(socket)
            return .failure(DNSFailure(.connect, "cannot reach the DNS server: \(reason)"))
        }
        if result != 0 {
            guard wait(socket, POLLOUT, deadline: deadline) else {
                close(socket)
                return .failure(DNSFailure(.timeout, "no TCP connection to the DNS server before the time-out"))
            }
            var error: Int32 = 0
            var size = socklen_t(MemoryLayout<Int32>.size)
            getsockopt(socket, SOL_SOCKET, SO_ERROR, &error, &size)
            if error != 0 {
                close(socket)
                return .failure(DNSFailure(.connect, "cannot reach the DNS server over TCP: \(String(cString: strerror(error)))"))
            }
        }
        return .success(socket)
    }

    static func exchangeUDP(_ query: [UInt8], id: UInt16, address: inout SocketAddress, deadline: ContinuousClock.Instant) -> Result<[UInt8], DNSFailure> {
        let socket: Int32
        switch connected(Int32(SOCK_DGRAM.rawValue), &address, deadline: deadline) {
        case .success(let s): socket = s
        case .failure(let failure): return .failure(failure)
        }
        defer { close(socket) }
        guard send(socket, query, query.count, 0) == query.count else {
            return .failure(DNSFailure(.connect, "cannot send to the DNS server: \(String(cString: strerror(errno)))"))
        }
        var buffer = [UInt8](repeating: 0, count: udpBufferSize)
        // A connected UDP socket only hears its server; datagrams with another id are skipped.
        while wait(socket, POLLIN, deadline: deadline) {
            let count = recv(socket, &buffer, buffer.count, 0)
            if count < 0 {
                if errno == EAGAIN || errno == EINTR { continue }
                return .failure(DNSFailure(.connect, "the DNS server is unreachable: \(String(cString: strerror(errno)))"))
            }
            guard count >= 12, Int(buffer[0]) << 8 | Int(buffer[1]) == Int(id) else { continue }
            return .success(Array(buffer[0..<count]))
        }
        return .failure(DNSFailure(.timeout, "no answer from the DNS server before the time-out"))
    }

    static func exchangeTCP(_ query: [UInt8], address: inout SocketAddress, deadline: ContinuousClock.Instant) -> Result<[UInt8], DNSFailure> {
        let socket: Int32
        switch connected(Int32(SOCK_STREAM.rawValue), &address, deadline: deadline) {
        case .success(let s): socket = s
        case .failure(let failure): return .failure(failure)
        }
        defer { close(socket) }
        let framed = [UInt8(query.count >> 8), UInt8(query.count & 0xFF)] + query
        var sent = 0
        while sent < framed.count {
            guard wait(socket, POLLOUT, deadline: deadline) else { return .failure(DNSFailure(.timeout, "time-out sending over TCP")) }
            let count = framed.withUnsafeBytes { Glibc.send(socket, $0.baseAddress! + sent, framed.count - sent, Int32(MSG_NOSIGNAL)) }
            if count < 0, errno != EAGAIN, errno != EINTR { return .failure(DNSFailure(.connect, "TCP send failed: \(String(cString: strerror(errno)))")) }
            if count > 0 { sent += count }
        }
        // A two-byte length (≤ 65535), then exactly that many bytes.
        func readExactly(_ count: Int) -> Result<[UInt8], DNSFailure> {
            var out = [UInt8](repeating: 0, count: count)
            var have = 0
            while have < count {
                guard wait(socket, POLLIN, deadline: deadline) else { return .failure(DNSFailure(.timeout, "time-out reading the TCP answer")) }
                let got = out.withUnsafeMutableBytes { recv(socket, $0.baseAddress! + have, count - have, 0) }
                if got == 0 { return .failure(DNSFailure(.dns, "the DNS server closed the TCP connection mid-answer")) }
                if got < 0 {
                    if errno == EAGAIN || errno == EINTR { continue }
                    return .failure(DNSFailure(.connect, "TCP receive failed: \(String(cString: strerror(errno)))"))
                }
                have += got
            }
            return .success(out)
        }
        switch readExactly(2) {
        case .failure(let failure): return .failure(failure)
        case .success(let prefix):
            let length = Int(prefix[0]) << 8 | Int(prefix[1])
            guard length >= 12 else { return .failure(DNSFailure(.dns, "TCP answer of \(length) bytes is too short")) }
            return readExactly(length)
        }
    }
}
