import FoundationEssentials
#if canImport(Glibc)
import Glibc
#endif

/// Files named in probes and configs (TLS files, `${file:…}` secrets) read without trusting what
/// they are: `FileManager.contents(atPath:)` on a FIFO waits for a writer for good, and on
/// /dev/zero reads until memory runs out. A FIFO as a probe's `ca_file` hung `validate`, and a
/// reload that met one stopped the agent's loop (red team, 33rd session, F3).
public enum RegularFile {
    /// Why `path` cannot be used as a file of at most `limit` bytes, or nil when it can: it must
    /// exist, be readable, and be a regular file (after symlinks) no larger than `limit`.
    public static func problem(atPath path: String, limit: Int) -> String? {
        switch open(path, limit: limit) {
        case .success(let fd):
            Glibc.close(fd)
            return nil
        case .failure(let why): return why.text
        }
    }

    /// The contents of `path`, read as ``problem(atPath:limit:)`` checks it.
    public static func read(atPath path: String, limit: Int) -> Result<[UInt8], Problem> {
        let fd: Int32
        switch open(path, limit: limit) {
        case .success(let opened): fd = opened
        case .failure(let why): return .failure(why)
        }
        defer { Glibc.close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while bytes.count <= limit {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
            if n < 0, errno == EINTR { continue }
            guard n >= 0 else { return .failure(Problem("cannot be read: \(String(cString: strerror(errno)))")) }
            if n == 0 { return .success(bytes) }
            bytes += chunk[..<n]
        }
        return .failure(Problem("grew past \(limit) bytes while it was read"))
    }

    public struct Problem: Error, Equatable, Sendable {
        public let text: String
        init(_ text: String) { self.text = text }
    }

    /// Opened without blocking (a FIFO with no writer would wait in open(2)), then checked on
    /// the descriptor itself, so a file swapped after a check is not read instead.
    private static func open(_ path: String, limit: Int) -> Result<Int32, Problem> {
        let fd = Glibc.open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
        guard fd >= 0 else {
            let reason = errno == ENOENT ? "does not exist" : "cannot be opened: \(String(cString: strerror(errno)))"
            return .failure(Problem(reason))
        }
        var info = stat()
        guard fstat(fd, &info) == 0 else {
            Glibc.close(fd)
            return .failure(Problem("cannot be examined: \(String(cString: strerror(errno)))"))
        }
        guard info.st_mode & S_IFMT == S_IFREG else {
            Glibc.close(fd)
            let kind = switch info.st_mode & S_IFMT {
            case S_IFIFO: "a FIFO"
            case S_IFDIR: "a directory"
            case S_IFCHR, S_IFBLK: "a device"
            case S_IFSOCK: "a socket"
            default: "a special file"
            }
            return .failure(Problem("is \(kind), not a regular file"))
        }
        guard Int(info.st_size) <= limit else {
            Glibc.close(fd)
            return .failure(Problem("is \(info.st_size) bytes, over the \(limit) this file may hold"))
        }
        // Reads from here on may block as for any file, never wait for a writer.
        _ = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK)
        return .success(fd)
    }
}
