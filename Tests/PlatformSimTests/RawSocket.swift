import Foundation
import SondeTestSupport

/// A plain blocking TCP client socket for tests that need byte-level control (keep-alive, refused
/// connects) that a full HTTP client hides.
final class RawSocket {
    let fd: Int32

    /// Connects to 127.0.0.1:`port`; throws with errno when the connect is refused.
    init(port: Int) throws {
        fd = try connectLoopbackSocket(port: port, receiveTimeout: .milliseconds(50))
    }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        guard Glibc.send(fd, bytes, bytes.count, Int32(MSG_NOSIGNAL)) == bytes.count else { throw TestFailure("send failed") }
    }

    /// What has arrived so far (waits at most 50 ms).
    func receiveAvailable() -> String {
        var buffer = [UInt8](repeating: 0, count: 65536)
        let n = recv(fd, &buffer, buffer.count, 0)
        return n > 0 ? String(decoding: buffer[0..<n], as: UTF8.self) : ""
    }

    /// True when the peer closed (recv returns 0 or an error other than a time-out).
    func peerClosed() -> Bool {
        var buffer = [UInt8](repeating: 0, count: 4096)
        let n = recv(fd, &buffer, buffer.count, 0)
        if n == 0 { return true }
        if n < 0 { return errno != EAGAIN && errno != EWOULDBLOCK }
        return false
    }

    func close() { Glibc.close(fd) }
}
