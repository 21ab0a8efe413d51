import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A real, tiny file system (tmpfs with a size limit) that a drill can fill up or remount
/// read-only, so the spool meets the kernel's real ENOSPC and EROFS, not a simulated error.
/// Needs root (CAP_SYS_ADMIN); drills that use it are skipped where `mount` is not allowed.
/// (Shared: the agent drills fill the spool's disk, the collector tests its database's.)
public struct SmallDisk: Sendable {
    public let path: String

    /// Whether this process may mount a tmpfs (tried once).
    public static let canMount: Bool = {
        guard geteuid() == 0, let disk = try? SmallDisk(kibibytes: 64) else { return false }
        disk.unmount()
        return true
    }()

    public init(kibibytes: Int) throws {
        path = NSTemporaryDirectory() + "sonde-smalldisk-" + UUID().uuidString.prefix(8).lowercased()
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        guard Self.run("/bin/mount", ["-t", "tmpfs", "-o", "size=\(kibibytes)k,mode=0700", "tmpfs", path]) == 0 else {
            try? FileManager.default.removeItem(atPath: path)
            throw TestFailure("cannot mount a tmpfs at \(path)")
        }
    }

    /// Writes a filler file until the kernel answers ENOSPC; returns the bytes written.
    @discardableResult
    public func fill() -> Int {
        let fd = open(path + "/filler", O_WRONLY | O_CREAT | O_APPEND, 0o600)
        guard fd >= 0 else { return 0 }
        defer { close(fd) }
        let chunk = [UInt8](repeating: 0x5A, count: 1024)
        var total = 0
        for _ in 0..<1_000_000 {  // bounded: a tmpfs of a few hundred KiB fills long before
            let n = chunk.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            total += n
        }
        // Single bytes too, so not even a small frame fits.
        for _ in 0..<1024 where write(fd, chunk, 1) == 1 { total += 1 }
        return total
    }

    public func free() { unlink(path + "/filler") }

    public func remount(readOnly: Bool) throws {
        guard Self.run("/bin/mount", ["-o", readOnly ? "remount,ro" : "remount,rw", path]) == 0 else {
            throw TestFailure("cannot remount \(path) \(readOnly ? "read-only" : "read-write")")
        }
    }

    public func unmount() {
        _ = Self.run("/bin/umount", ["-l", path])
        try? FileManager.default.removeItem(atPath: path)
    }

    @discardableResult
    static func run(_ tool: String, _ arguments: [String]) -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: tool)
        process.arguments = arguments
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        do { try process.run() } catch { return -1 }
        process.waitUntilExit()
        return process.terminationStatus
    }
}
