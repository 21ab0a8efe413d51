#if canImport(Glibc)
import Glibc
#endif

/// How far inside a network an IP address is, from the public internet to the host itself:
/// a server-chosen redirect may not take the agent further in than its request started
/// (`HTTPRequest.innermostAddress`). A public site that answers `302 Location:
/// http://169.254.169.254/latest/meta-data/…` would otherwise have the agent fetch the cloud's
/// instance credentials and quote them in the result (red team, fourth pass).
public enum AddressKind: Int, Comparable, Sendable, CustomStringConvertible {
    case publicAddress = 0
    /// RFC 1918, carrier-grade NAT (100.64/10), IPv6 unique local (fc00::/7).
    case privateAddress = 1
    /// 127/8, 0/8 (reaches the host on Linux), ::1, ::.
    case loopback = 2
    /// 169.254/16 and fe80::/10, where cloud metadata services answer (and AWS's fd00:ec2::254).
    case linkLocal = 3

    public static func < (a: AddressKind, b: AddressKind) -> Bool { a.rawValue < b.rawValue }

    public var description: String {
        switch self {
        case .publicAddress: "public"
        case .privateAddress: "private"
        case .loopback: "loopback"
        case .linkLocal: "link-local"
        }
    }

    /// The kind of a numeric IPv4 or IPv6 address; nil when `address` is neither.
    public static func of(_ address: String) -> AddressKind? {
        var v4 = in_addr()
        if inet_pton(AF_INET, address, &v4) == 1 {
            return of(ipv4: withUnsafeBytes(of: v4.s_addr) { Array($0) })
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, address, &v6) == 1 else { return nil }
        let b = withUnsafeBytes(of: v6) { Array($0) }
        // IPv4-mapped (::ffff:a.b.c.d) and IPv4-compatible (::a.b.c.d) forms are the IPv4 address.
        if b[0..<10].allSatisfy({ $0 == 0 }), b[10] == 0xFF, b[11] == 0xFF { return of(ipv4: Array(b[12..<16])) }
        if b[0..<15].allSatisfy({ $0 == 0 }) { return .loopback }  // ::1 and ::
        if b[0..<12].allSatisfy({ $0 == 0 }) { return of(ipv4: Array(b[12..<16])) }
        // Addresses that carry an IPv4 address a gateway reaches for the agent: NAT64's well-known
        // and local-use prefixes (64:ff9b::/96, 64:ff9b:1::/48, the IPv4 address last) and 6to4
        // (2002::/16, the IPv4 address next): on a DNS64 host a public site could redirect to
        // 64:ff9b::a9fe:a9fe, the metadata service (red team, 32nd session).
        if b[0] == 0x00, b[1] == 0x64, b[2] == 0xFF, b[3] == 0x9B {
            if b[4..<12].allSatisfy({ $0 == 0 }) { return of(ipv4: Array(b[12..<16])) }
            // Local-use (RFC 8215): never global, and where the IPv4 address sits depends on the
            // operator's prefix length (last, for a /96).
            if b[4] == 0, b[5] == 1 { return max(.privateAddress, of(ipv4: Array(b[12..<16]))) }
        }
        if b[0] == 0x20, b[1] == 0x02 { return of(ipv4: Array(b[2..<6])) }
        if b[0] == 0xFE, b[1] & 0xC0 == 0x80 { return .linkLocal }
        if b == [0xFD, 0x00, 0x0E, 0xC2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54] { return .linkLocal }
        if b[0] & 0xFE == 0xFC { return .privateAddress }
        return .publicAddress
    }

    private static func of(ipv4 b: [UInt8]) -> AddressKind {
        switch (b[0], b[1]) {
        case (127, _), (0, _): .loopback
        case (169, 254): .linkLocal
        case (10, _), (172, 16...31), (192, 168): .privateAddress
        case (100, 64...127): .privateAddress
        default: .publicAddress
        }
    }
}
