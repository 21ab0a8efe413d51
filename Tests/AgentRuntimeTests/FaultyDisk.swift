import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

@testable import AgentRuntime

/// The real file system under the spool, made slow or failing on demand: every fsync can take
/// `syncDelay`, and writes or fsyncs can fail with a real errno (ENOSPC, EIO), as a full or
/// broken disk answers. Lets tests reach the spool's memory mode without root.
final class FaultyDisk: JournalFileSystem {
    struct Faults {
        var syncDelay: Duration = .zero
        var writeError: Int32?
        var syncError: Int32?
        var syncs = 0
        /// Writes that reached the file.
        var writes = 0
        var timeInSync: Duration = .zero
        /// The size of the last file fsynced, when it was: what a power loss would leave of it.
        var durableSize: Int64 = 0
    }

    let faults = Mutex(Faults())
    private let real = POSIXJournalFileSystem()

    init(syncDelay: Duration = .zero) { faults.withLock { $0.syncDelay = syncDelay } }

    var snapshot: Faults { faults.withLock { $0 } }
    func set(_ change: (inout Faults) -> Void) { faults.withLock { change(&$0) } }

    func openForWriting(_ path: String, truncate: Bool) throws(SpoolError) -> any JournalFile {
        if let code = faults.withLock({ $0.writeError }) { throw SpoolError("open \(path): injected", code: code) }
        return File(try real.openForWriting(path, truncate: truncate), disk: self)
    }

    func openForReading(_ path: String) -> (any JournalFile)? { real.openForReading(path).map { File($0, disk: self) } }
    func rename(_ from: String, to: String) throws(SpoolError) { try real.rename(from, to: to) }
    func remove(_ path: String) { real.remove(path) }
    func syncDirectory(_ directory: String) { real.syncDirectory(directory) }

    final class File: JournalFile {
        let file: any JournalFile
        let disk: FaultyDisk
        init(_ file: any JournalFile, disk: FaultyDisk) {
            self.file = file
            self.disk = disk
        }

        func write(_ bytes: Data, at offset: Int64) throws(SpoolError) {
            if let code = disk.faults.withLock({ $0.writeError }) { throw SpoolError("write: injected", code: code) }
            try file.write(bytes, at: offset)
            disk.faults.withLock { $0.writes += 1 }
        }

        func read(_ count: Int, at offset: Int64) -> Data? { file.read(count, at: offset) }

        func sync() throws(SpoolError) {
            let (delay, failure) = disk.faults.withLock { ($0.syncDelay, $0.syncError) }
            let start = ContinuousClock.now
            if delay > .zero { usleep(UInt32(delay.components.seconds * 1_000_000 + delay.components.attoseconds / 1_000_000_000_000)) }
            disk.faults.withLock {
                $0.syncs += 1
                $0.timeInSync += ContinuousClock.now - start
            }
            if let failure { throw SpoolError("fsync: injected", code: failure) }
            try file.sync()
            let size = try file.size()
            disk.faults.withLock { $0.durableSize = size }
        }

        func truncate(to size: Int64) throws(SpoolError) { try file.truncate(to: size) }
        func size() throws(SpoolError) -> Int64 { try file.size() }
        func close() { file.close() }
    }
}
