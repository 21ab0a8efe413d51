import Foundation

/// A refused or failed connect, with its errno.
public struct SocketConnectError: Error, CustomStringConvertible {
    public var errno: Int32
    public var description: String { "connect: \(String(cString: strerror(errno)))" }
}

/// A blocking TCP socket connected to 127.0.0.1:`port`, reads timing out after `receiveTimeout`:
/// the base of the tests' raw clients (requests no HTTP client would send, refused connects).
public func connectLoopbackSocket(port: Int, receiveTimeout: Duration) throws -> Int32 {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    let result = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard result == 0 else {
        let code = errno
        Glibc.close(fd)
        throw SocketConnectError(errno: code)
    }
    let (seconds, attoseconds) = receiveTimeout.components
    var timeout = timeval(tv_sec: Int(seconds), tv_usec: Int(attoseconds / 1_000_000_000_000))
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    return fd
}

/// A TCP socket listening on 127.0.0.1 and an ephemeral port: the base of the tests' servers
/// (HTTP, raw, streaming). Returns the descriptor and the port.
public func listenOnLoopback(backlog: Int32 = 128) throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
    var one: Int32 = 1
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    guard bound == 0, listen(fd, backlog) == 0 else {
        let message = String(cString: strerror(errno))
        Glibc.close(fd)
        throw TestFailure("bind/listen: \(message)")
    }
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    _ = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// A UDP socket bound to 127.0.0.1 and an ephemeral port that never answers (a silent DNS
/// server). Returns the descriptor (the caller closes it) and the port.
public func silentLoopbackUDPSocket() throws -> (fd: Int32, port: Int) {
    let fd = socket(AF_INET, Int32(SOCK_DGRAM.rawValue), 0)
    guard fd >= 0 else { throw TestFailure("socket: \(String(cString: strerror(errno)))") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { p in
        p.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0 }
    }
    guard bound else {
        let message = String(cString: strerror(errno))
        Glibc.close(fd)
        throw TestFailure("bind: \(message)")
    }
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// A loopback TCP port nobody listens on right now, for a server a test starts itself (bound,
/// read back, released: the server binds it a moment later).
public func freeLoopbackPort() throws -> Int {
    let (fd, port) = try listenOnLoopback(backlog: 1)
    close(fd)
    return port
}
