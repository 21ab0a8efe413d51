#if canImport(Glibc)
import Glibc
#endif
import FoundationEssentials

/// The journal's file, as the spool uses it: positioned reads and writes, fsync, truncate.
/// A protocol so that a test can give the spool a disk that is slow or fails (memory mode is then
/// testable without root); the agent always uses `POSIXJournalFile`.
public protocol JournalFile: AnyObject, Sendable {
    /// Writes all of `bytes` at `offset`; throws with the errno on failure.
    func write(_ bytes: Data, at offset: Int64) throws(SpoolError)
    /// Exactly `count` bytes at `offset`, or nil when the file is shorter or the read fails.
    func read(_ count: Int, at offset: Int64) -> Data?
    func sync() throws(SpoolError)
    func truncate(to size: Int64) throws(SpoolError)
    func size() throws(SpoolError) -> Int64
    func close()
}

/// Opens journal files and makes renames in their folder durable.
public protocol JournalFileSystem: Sendable {
    /// Opens `path` for reading and writing, creating it (mode 0600) if missing; `truncate`
    /// empties it. Throws with the errno (EROFS, ENOSPC, … mean the disk cannot take writes).
    func openForWriting(_ path: String, truncate: Bool) throws(SpoolError) -> any JournalFile
    /// Opens an existing `path` read-only (nil when it does not exist).
    func openForReading(_ path: String) -> (any JournalFile)?
    func rename(_ from: String, to: String) throws(SpoolError)
    func remove(_ path: String)
    /// fsync of the folder: makes a rename or a new file in it durable.
    func syncDirectory(_ directory: String)
}

/// The real journal file: a descriptor with pread/pwrite/fsync.
public final class POSIXJournalFile: JournalFile {
    private let fd: Int32
    private let path: String

    init(fd: Int32, path: String) {
        self.fd = fd
        self.path = path
    }

    public func write(_ bytes: Data, at offset: Int64) throws(SpoolError) {
        let ok = bytes.withUnsafeBytes { raw -> Bool in
            var done = 0
            while done < raw.count {
                let n = pwrite(fd, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                done += n
            }
            return true
        }
        guard ok else { throw .posix("write", path) }
    }

    public func read(_ count: Int, at offset: Int64) -> Data? {
        var data = Data(count: count)
        let ok = data.withUnsafeMutableBytes { raw -> Bool in
            var done = 0
            while done < count {
                let n = pread(fd, raw.baseAddress! + done, count - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                done += n
            }
            return true
        }
        return ok ? data : nil
    }

    public func sync() throws(SpoolError) {
        guard fsync(fd) == 0 else { throw .posix("fsync", path) }
    }

    public func truncate(to size: Int64) throws(SpoolError) {
        guard ftruncate(fd, off_t(size)) == 0 else { throw .posix("truncate", path) }
    }

    public func size() throws(SpoolError) -> Int64 {
        var info = stat()
        guard fstat(fd, &info) == 0 else { throw .posix("stat", path) }
        return Int64(info.st_size)
    }

    public func close() { _ = Glibc.close(fd) }
}

/// The real file system.
public struct POSIXJournalFileSystem: JournalFileSystem {
    public init() {}

    public func openForWriting(_ path: String, truncate: Bool) throws(SpoolError) -> any JournalFile {
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0o600)
        guard fd >= 0 else { throw .posix("open", path) }
        return POSIXJournalFile(fd: fd, path: path)
    }

    public func openForReading(_ path: String) -> (any JournalFile)? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        return fd >= 0 ? POSIXJournalFile(fd: fd, path: path) : nil
    }

    public func rename(_ from: String, to: String) throws(SpoolError) {
        guard Glibc.rename(from, to) == 0 else { throw .posix("rename", from) }
    }

    public func remove(_ path: String) { unlink(path) }

    public func syncDirectory(_ directory: String) { Spool.fsyncDirectory(directory) }
}
