// The spool: the agent's durable queue of results, the heart of "nothing lost, nothing twice".
//
// Layout of the spool folder:
//   journal     an append-only log of framed records (below)
//   lock        held with flock() while an agent uses the folder (the kernel drops it on SIGKILL)
//   rejected/   single results the collector refused on their own (400/413/422), one JSON file each
//
// Frame: [u32 big-endian body length][u32 big-endian CRC-32 of body][body], body = one type byte
// followed by its payload:
//   "R" result   u64 big-endian seq, then the result's JSON (carrying the same `seq`)
//   "B" batch    JSON {"id","first","last","count"}: the oldest pending results, seq first…last,
//                now form batch `id`. Written BEFORE the first send (not fsynced: see Durability),
//                so a resend after a kill carries the same batch id and the same results.
//   "A" removed  JSON {"id","why"}: the batch was acknowledged (or rejected, or dropped). Not
//                fsynced on its own: lost in a power loss, the batch is sent again with its id
//                and the collector answers "duplicate".
//   "D" dropped  JSON {"through","count"}: the spool was full; pending results up to seq `through`
//                were dropped, oldest first.
//   "S" start    JSON {"last_seq","dropped","reserved","boot"}: first record of a compacted journal; it
//                carries the counters that the records compaction removed used to hold. Also
//                written when the disk works again after a failure (below), with the drops made
//                meanwhile; fsynced before the first result above the last reservation, reserving
//                the next 1024 seqs (with "boot", the kernel's boot id); and at a clean close,
//                with `reserved` = the last seq used.
//   "P" passed   JSON {"through"}: pending results up to seq `through` were delivered from memory
//                while the disk failed (see below); they are done, not dropped.
//
// Durability: a result "counts" once its frame is written: it then survives a SIGKILL (the page
// cache keeps it), and so do the batch and acknowledgement records, which is all "nothing lost,
// nothing twice" needs across a kill. Against a power loss, written records are fsynced by the
// group commit (`JournalWriter`): about 2 s after they were written, unless the collector has
// acknowledged them by then, and an acknowledged result needs no fsync (the collector has it,
// and its record may vanish). So no fsync is made before a send, and while the collector answers
// there is none at all. A power loss can then lose: the results of the last ~2 s that the
// collector does not have (as before); the records of batches the collector has (harmless); a
// batch record whose results survive, so they go out again in a batch with a new id and the
// collector, which keeps each result once by its (started_at, id), stores them once (both stores,
// tested in CollectorTests' `storesAgree`); an acknowledgement, so the batch goes out again with
// its id and the collector answers "duplicate". `seq` is the last seq in the journal + 1, so it
// survives restarts; as records of results the collector has may vanish in a power loss, seqs are
// reserved durably in blocks of 1024 ("S" `reserved`, with the kernel's boot id) and a start in
// another boot that was not preceded by a clean close goes on above the reservation: a seq is
// never handed out twice (after a power loss it skips up to 1024; after a kill it does not).
// In the agent every call that touches the journal runs on one thread, the `JournalWriter`'s, so
// the threads that run probes never wait on the disk.
// Torn writes: opening replays the journal; a frame cut short or failing its CRC (SIGKILL or power
// loss mid-append) ends the replay, and the file is truncated back to the last whole frame (with a
// warning). Only the unfinished append is lost, and it never counted.
// Size: `maxBytes` bounds the live results; an append that would pass it first drops the oldest
// pending (not yet batched) results, then if need be the oldest unacknowledged batch, counted and
// logged. Compaction copies the live frames to `journal.new`, fsyncs, renames it over `journal` and
// fsyncs the folder (atomic on POSIX file systems), when dead records outweigh live ones.
//
// A failing disk (full, read-only, I/O errors): when an append fails, the spool logs one error with
// the path and the fix and switches to memory: new results (still numbered by seq) wait in a queue
// of at most `memoryLimit` results (beyond it the oldest are dropped, counted and logged), and the
// uploader keeps sending from memory: results already on disk first (read back, sent as a batch
// that is not recorded on disk: a resend after a restart is deduplicated by result id at the
// collector), then the queue. Acknowledgements that cannot be written are remembered. Every
// append (at most once a second) tries the disk again; once a write works the spool writes what
// it owes ("S" with the seqs and drops, "P", "A" records), moves the queue to disk and carries on
// there. A spool folder that is read-only at start is replayed read-only and starts in memory.
// Results held in memory are not durable: a crash while the disk is failing loses them.

import FoundationEssentials
import Logging
import SondeCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A batch as the uploader sends it: fixed id, fixed results (in seq order).
public struct SpoolBatch: Sendable, Hashable {
    public var id: String
    /// Each result's JSON exactly as spooled: the push body carries these bytes as they are, so
    /// a result is encoded once in its life, not decoded and encoded again for every push.
    public var rawResults: [Data]

    /// The results, decoded (for people and tests; the uploader sends `rawResults`).
    public var results: [ProbeResult] { rawResults.compactMap { try? SondeJSON.decode(ProbeResult.self, from: $0) } }
    public var count: Int { rawResults.count }

    public init(id: String, rawResults: [Data]) {
        self.id = id
        self.rawResults = rawResults
    }

    public init(id: String, results: [ProbeResult]) {
        self.init(id: id, rawResults: results.compactMap { try? SondeJSON.encode($0) })
    }
}

/// Counters for logs, tests and `status`.
public struct SpoolStatus: Sendable, Hashable {
    /// Results not yet in a batch.
    public var pendingResults: Int
    /// Batches made but not acknowledged.
    public var openBatches: Int
    /// Results inside those batches.
    public var batchedResults: Int
    /// The last seq handed out (0 when none yet).
    public var lastSeq: UInt64
    /// Results dropped because the spool was full, over the spool's whole life.
    public var droppedResults: UInt64
    /// Size of the journal file, including records that compaction has not removed yet.
    public var journalBytes: Int64
    /// Bytes of the live records (what `max_bytes` bounds).
    public var liveBytes: Int64
    /// Results held in memory only, because the disk failed (queued or in a batch in flight).
    public var memoryResults: Int = 0
    /// False while appends go to memory because the disk failed.
    public var writingToDisk: Bool = true
    /// Results set aside in `rejected/` since the spool was opened.
    public var rejectedResults: Int = 0

    /// Results not yet acknowledged by the collector.
    public var unsentResults: Int { pendingResults + batchedResults + memoryResults }
}

/// A spool that cannot be opened or written; the message names the path and what to do.
public struct SpoolError: Error, Sendable, CustomStringConvertible {
    public var description: String
    /// The errno of a failed system call (nil for other problems): a disk failure.
    public var code: Int32?
    init(_ description: String, code: Int32? = nil) {
        self.description = description
        self.code = code
    }
    static func posix(_ what: String, _ path: String) -> SpoolError {
        let code = errno
        return SpoolError("spool \(path): \(what) failed: \(String(cString: strerror(code)))", code: code)
    }
}

public final class Spool: Sendable {
    public let directory: String
    public let maxBytes: Int
    /// Most results held in memory while the disk fails (`spool.memory_limit`).
    public let memoryLimit: Int
    /// `currentBootID` except in tests that stand for a reboot.
    private let bootID: String
    private let logger: Logger
    private let journalPath: String
    private let files: any JournalFileSystem
    // The journal file and the in-memory index of it; every access holds the lock, which also
    // serialises appends (frames never interleave).
    private let state: Mutex<State>

    struct Entry: Sendable {
        var seq: UInt64
        var offset: Int64
        var length: Int64  // whole frame
    }

    struct OpenBatch: Sendable {
        var id: String
        var entries: [Entry]
        var frameLength: Int64
        /// Where its batch record ends in the journal (its results come before it).
        var end: Int64
    }

    /// A batch made while the disk failed: never recorded on disk.
    struct MemoryBatch: Sendable {
        var id: String
        var results: [Data]
        /// The last seq of the results in it that were read from the journal (nil: none were).
        var diskThrough: UInt64?
        /// How many of its results exist only in memory.
        var memoryCount: Int
    }

    /// Why and since when appends go to memory, and what the journal is owed once it works again.
    struct DiskFailure: Sendable {
        var reason: String
        var since: ContinuousClock.Instant
        var lastAttempt: ContinuousClock.Instant
        /// Results not yet in a batch, oldest first, already numbered.
        var queue: [ProbeResult] = []
        /// Pending journal results up to this seq were delivered from memory ("P" owed).
        var deliveredThrough: UInt64?
        /// Batches acknowledged or rejected while the "A" record could not be written.
        var unrecordedRemovals: [String] = []
        /// Drops not yet counted in the journal (goes into the "S" record).
        var unrecordedDrops: UInt64 = 0
        /// The journal is open read-only (the folder was read-only at start): reopen to write.
        var readOnly = false
        var droppedSinceLog: Int = 0
        var lastDropLog: ContinuousClock.Instant?
    }

    struct State: Sendable {
        /// Nil only when a read-only folder has no journal yet.
        var file: (any JournalFile)?
        var lockFD: Int32 = -1
        var fileSize: Int64 = 0
        /// The journal is durable up to here (fsynced).
        var syncedSize: Int64 = 0
        /// Seqs up to here are reserved durably (an "S" record's `reserved`, fsynced): after a
        /// power loss that took the newest records, seqs start above it, so a seq the collector
        /// already has is never handed out again.
        var reservedSeq: UInt64 = 0
        /// The boot in which the latest "S" record was written (nil: none, or from before boots were recorded).
        var reservedBoot: String?
        /// Changes when the descriptor points at another file (compaction, reopening).
        var generation = 0
        var lastSeq: UInt64 = 0
        var droppedTotal: UInt64 = 0
        var pending: [Entry] = []
        var batches: [OpenBatch] = []
        var liveBytes: Int64 = 0
        var closed = false
        var rejected = 0
        var failure: DiskFailure?
        var memoryBatch: MemoryBatch?
        /// The newest written results' JSON, so a batch is made without reading them back.
        var recent = RecentResults()
        var deadBytes: Int64 { fileSize - liveBytes }
        /// A live record (a result, pending or in an open batch, or an open batch's record) is
        /// written but not yet fsynced. Both lists are in file order, so their last ones tell.
        var hasUnsyncedLiveRecords: Bool {
            (pending.last.map { $0.offset + $0.length > syncedSize } ?? false) || (batches.last.map { $0.end > syncedSize } ?? false)
        }
        var memoryResults: Int { (failure?.queue.count ?? 0) + (memoryBatch?.memoryCount ?? 0) }
    }

    /// errno values that mean "this disk cannot take writes now" rather than a wrong set-up.
    static func isDiskFailure(_ code: Int32?) -> Bool {
        guard let code else { return false }
        return [ENOSPC, EROFS, EIO, EDQUOT, EFBIG].contains(code)
    }

    /// Opens (or creates) the spool in `directory`, replays its journal and cuts off a torn tail.
    /// Fails if another process holds the spool. A folder on a read-only file system is replayed
    /// read-only and the spool starts in memory (see the file's header).
    /// `files` is the real file system except in tests that need a slow or failing disk, and
    /// `bootID` the kernel's except in tests that stand for a reboot.
    public init(
        directory: String, maxBytes: Int = 256 << 20, memoryLimit: Int = 10_000, files: any JournalFileSystem = POSIXJournalFileSystem(),
        bootID: String = Spool.currentBootID, logger: Logger
    ) throws(SpoolError) {
        self.directory = directory
        self.bootID = bootID
        self.files = files
        self.maxBytes = maxBytes
        self.memoryLimit = max(0, memoryLimit)
        self.logger = logger
        journalPath = directory + "/journal"
        var readOnlyReason: String?
        do {
            try FileManager.default.createDirectory(atPath: directory + "/rejected", withIntermediateDirectories: true)
        } catch {
            // An existing folder we cannot write into: a read-only or full disk, handled below.
            var isDirectory = false
            guard FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory), isDirectory else {
                throw SpoolError("spool \(directory): cannot create the folder: \(Self.reason(error)); check spool.path and its owner")
            }
        }
        var lockFD = open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        if lockFD < 0 {
            guard Spool.isDiskFailure(errno) else { throw .posix("open lock", directory) }
            // Read-only: lock the existing file if there is one (flock works on a read-only fd).
            lockFD = open(directory + "/lock", O_RDONLY | O_CLOEXEC)
        }
        if lockFD >= 0 {
            guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
                Glibc.close(lockFD)
                throw SpoolError("spool \(directory) is in use by another sonde-agent process; give each agent its own spool.path")
            }
        }
        var file: (any JournalFile)?
        do throws(SpoolError) {
            file = try files.openForWriting(journalPath, truncate: false)
            files.syncDirectory(directory)
        } catch let error where Spool.isDiskFailure(error.code) {
            readOnlyReason = error.code.map { String(cString: strerror($0)) } ?? error.description
            file = files.openForReading(journalPath)  // nil when there is no journal yet: nothing to replay
        } catch {
            if lockFD >= 0 { Glibc.close(lockFD) }
            throw SpoolError("spool: open journal \(journalPath) failed: \(error)", code: error.code)
        }
        var replayed = State(file: file, lockFD: lockFD)
        if let file {
            do { try Spool.replay(into: &replayed, path: journalPath, logger: logger, readOnly: readOnlyReason != nil) } catch {
                file.close()
                if lockFD >= 0 { Glibc.close(lockFD) }
                throw error
            }
            // Written in another boot and not closed cleanly (a power loss may have taken the records
            // of results the collector has): seqs go on above the reservation, never reusing one.
            // In the same boot (a kill) the page cache kept every record: seqs go on from the last.
            if replayed.reservedBoot != bootID { replayed.lastSeq = max(replayed.lastSeq, replayed.reservedSeq) }
            // After a SIGKILL the replayed records may still be in the page cache only: make them
            // durable once, as the group commit would have.
            if readOnlyReason == nil, replayed.fileSize > 0, (try? file.sync()) == nil { replayed.syncedSize = 0 }
        }
        if let readOnlyReason {
            let now = ContinuousClock.now
            replayed.failure = DiskFailure(reason: readOnlyReason, since: now, lastAttempt: now, readOnly: true)
            logger.error(
                "spool folder cannot be written; keeping new results in memory and uploading from there until it can. Fix: make the file system holding spool.path writable (remount read-write, free space, check the disk); the agent goes back to disk by itself",
                metadata: ["spool.path": "\(journalPath)", "error": "\(readOnlyReason)", "spool.memory_limit": "\(self.memoryLimit)"])
        }
        state = Mutex(replayed)
        if replayed.pending.count + replayed.batches.count > 0 {
            logger.info(
                "spool opened with unsent results",
                metadata: [
                    "spool.pending": "\(replayed.pending.count)", "spool.open_batches": "\(replayed.batches.count)",
                    "spool.last_seq": "\(replayed.lastSeq)",
                ])
        }
    }

    deinit { close() }

    /// Releases the journal and the folder lock. A clean close records (durably) that no seq
    /// above the last one was handed out, so the next start, even after a reboot, goes on from
    /// there without a gap.
    public func close() {
        state.withLock { state in
            guard !state.closed else { return }
            if state.failure == nil, state.reservedSeq > state.lastSeq {
                try? Spool.appendRecord("S", startFields(state, dropped: 0, reserved: state.lastSeq), to: &state, path: journalPath)
            }
            state.closed = true
            state.file?.close()
            if state.lockFD >= 0 { Glibc.close(state.lockFD) }
        }
    }

    public var status: SpoolStatus {
        state.withLock { s in
            SpoolStatus(
                pendingResults: s.pending.count, openBatches: s.batches.count + (s.memoryBatch == nil ? 0 : 1),
                batchedResults: s.batches.reduce(0) { $0 + $1.entries.count } + (s.memoryBatch.map { $0.results.count - $0.memoryCount } ?? 0),
                lastSeq: s.lastSeq, droppedResults: s.droppedTotal, journalBytes: s.fileSize, liveBytes: s.liveBytes,
                memoryResults: s.memoryResults, writingToDisk: s.failure == nil, rejectedResults: s.rejected)
        }
    }

    // MARK: - Appending

    /// Gives `result` the next seq and appends it durably (written and fsynced) before returning
    /// it with its seq. Makes room first by dropping the oldest unsent results if the spool is full.
    /// While the disk fails the result is kept in memory instead (see the file's header); only a
    /// result that cannot be encoded throws.
    ///
    /// `durable: false` writes without the fsync (the frame survives a SIGKILL, not yet a power
    /// loss); `sync()` then makes it durable, one fsync for every append made so far (group
    /// commit: see `JournalWriter`), unless the collector acknowledges it first.
    @discardableResult
    public func append(_ result: ProbeResult, durable: Bool = true) throws(SpoolError) -> ProbeResult {
        try state.withLock { (s: inout State) throws(SpoolError) -> ProbeResult in
            var result = result
            result.seq = s.lastSeq + 1
            if s.failure != nil { tryDiskAgain(&s) }
            if s.failure == nil {
                do throws(SpoolError) {
                    try appendToDisk(result, &s, sync: durable)
                    s.lastSeq = result.seq!
                    return result
                } catch let error where Spool.isDiskFailure(error.code) {
                    enterMemoryMode(&s, error)
                }
            }
            s.lastSeq = result.seq!
            keepInMemory(result, &s)
            return result
        }
    }

    /// Appends `results` as `append(_:durable: false)` does one by one, in one write when the
    /// disk is in use, no seq reservation is due and no room must be made (the journal thread
    /// takes the results held since its last wake-up together: at 10 runs a second a write per
    /// result, half of it the file system updating the file's times, was ≈ 3 % of the agent's CPU).
    /// Anything else goes one by one, as before.
    public func appendAll(_ results: [ProbeResult]) -> [Result<ProbeResult, SpoolError>] {
        if results.count > 1, let stored = state.withLock({ s in appendGroupToDisk(results, &s) }) {
            return stored.map { .success($0) }
        }
        return results.map { result in
            do throws(SpoolError) { return .success(try append(result, durable: false)) } catch { return .failure(error) }
        }
    }

    /// The common case of `appendAll`; nil (having changed nothing) when it does not apply.
    private func appendGroupToDisk(_ results: [ProbeResult], _ s: inout State) -> [ProbeResult]? {
        guard s.failure == nil, let file = s.file, s.lastSeq + UInt64(results.count) <= s.reservedSeq else { return nil }
        var stored: [ProbeResult] = []
        var jsons: [Data] = []
        var frames = Data()
        var lengths: [Int64] = []
        for (index, result) in results.enumerated() {
            var result = result
            result.seq = s.lastSeq + 1 + UInt64(index)
            guard let json = try? result.encodedJSON() else { return nil }
            let frame = Spool.resultFrame(seq: result.seq!, json: json)
            frames.append(frame)
            lengths.append(Int64(frame.count))
            jsons.append(json)
            stored.append(result)
        }
        guard s.liveBytes + Int64(frames.count) <= Int64(maxBytes) else { return nil }
        let offset = s.fileSize
        do throws(SpoolError) {
            try file.write(frames, at: offset)
        } catch {
            try? file.truncate(to: offset)
            return nil  // one by one: a disk failure moves the spool to memory there
        }
        s.fileSize = offset + Int64(frames.count)
        var at = offset
        for (index, result) in stored.enumerated() {
            s.pending.append(Entry(seq: result.seq!, offset: at, length: lengths[index]))
            s.liveBytes += lengths[index]
            s.recent.add(result.seq!, jsons[index])
            at += lengths[index]
        }
        s.lastSeq = stored.last!.seq!
        return stored
    }

    /// Writes one result frame (keeping its seq) and indexes it as pending.
    private func appendToDisk(_ result: ProbeResult, _ s: inout State, sync: Bool = true) throws(SpoolError) {
        let json: Data
        do { json = try result.encodedJSON() } catch { throw SpoolError("cannot encode result \(result.id): \(error)") }
        let frame = Spool.resultFrame(seq: result.seq!, json: json)
        let frameLength = Int64(frame.count)
        try makeRoom(for: frameLength, in: &s)
        if result.seq! > s.reservedSeq {
            // One fsync per `seqReservation` results (it also makes everything before it durable).
            let reserved = result.seq! + Spool.seqReservation - 1
            try Spool.appendRecord("S", startFields(s, dropped: 0, reserved: reserved), to: &s, path: journalPath)
            s.reservedSeq = reserved
        }
        let offset = try Spool.appendFramed(frame, to: &s, path: journalPath, sync: sync)
        s.pending.append(Entry(seq: result.seq!, offset: offset, length: frameLength))
        s.liveBytes += frameLength
        s.recent.add(result.seq!, json)
    }

    /// Seqs reserved by one durable "S" record (see `State.reservedSeq`).
    static let seqReservation: UInt64 = 1024

    /// How many results, and bytes of their JSON, `RecentResults` holds now (for tests).
    var recentResults: (count: Int, bytes: Int) { state.withLock { ($0.recent.count, $0.recent.bytes) } }

    /// Whether a written result or batch record that the collector has not acknowledged yet
    /// still waits for an fsync (the group commit's). Acknowledged ones never need one.
    public var hasUnsyncedResults: Bool { state.withLock { !$0.closed && $0.failure == nil && $0.hasUnsyncedLiveRecords } }

    /// Makes every append so far durable: one fsync, outside the lock, so that `status` readers
    /// never wait for the disk. A failed fsync moves the spool to memory.
    ///
    /// `resultsOnly`: fsync only when a live record (a result not yet acknowledged, or its
    /// batch record) is not durable yet. Records of acknowledged batches, and acknowledgements,
    /// need none (see the file's header), so a push the collector answers quickly costs none.
    public func sync(resultsOnly: Bool = false) {
        let target: (file: any JournalFile, size: Int64, generation: Int)? = state.withLock { s in
            guard !s.closed, s.failure == nil, let file = s.file, s.syncedSize < s.fileSize else { return nil }
            if resultsOnly && !s.hasUnsyncedLiveRecords { return nil }
            return (file, s.fileSize, s.generation)
        }
        guard let target else { return }
        var failed: SpoolError?
        do { try target.file.sync() } catch { failed = error }
        state.withLock { s in
            // After a compaction or close meanwhile, the fsync was of an old file: the new one is durable up to its own mark.
            guard !s.closed, s.generation == target.generation else { return }
            if let failed {
                enterMemoryMode(&s, failed)
            } else {
                s.syncedSize = max(s.syncedSize, target.size)
            }
        }
    }

    // MARK: - A failing disk: memory

    private func enterMemoryMode(_ s: inout State, _ error: SpoolError) {
        guard s.failure == nil else { return }
        let now = ContinuousClock.now
        s.failure = DiskFailure(reason: error.description, since: now, lastAttempt: now)
        logger.error(
            "spool cannot write to disk; keeping results in memory and uploading from there until it can. Fix: free space on (or remount read-write, or repair) the file system holding spool.path; the agent goes back to disk by itself",
            metadata: ["spool.path": "\(journalPath)", "error": "\(error)", "spool.memory_limit": "\(memoryLimit)"])
    }

    /// Queues `result` in memory, dropping the oldest queued result when the bound is reached.
    private func keepInMemory(_ result: ProbeResult, _ s: inout State) {
        guard var failure = s.failure else { return }
        var dropped = 0
        while failure.queue.count + (s.memoryBatch?.memoryCount ?? 0) >= memoryLimit, !failure.queue.isEmpty {
            failure.queue.removeFirst()
            dropped += 1
        }
        if failure.queue.count + (s.memoryBatch?.memoryCount ?? 0) < memoryLimit {
            failure.queue.append(result)
        } else {
            dropped += 1  // memory_limit 0, or all of it in the batch in flight
        }
        if dropped > 0 {
            s.droppedTotal += UInt64(dropped)
            failure.unrecordedDrops += UInt64(dropped)
            failure.droppedSinceLog += dropped
            let now = ContinuousClock.now
            if failure.lastDropLog.map({ now - $0 >= .seconds(10) }) ?? true {
                logger.error(
                    "spool disk still failing and the memory queue is full: dropped the oldest results",
                    metadata: [
                        "spool.dropped": "\(failure.droppedSinceLog)", "spool.dropped_total": "\(s.droppedTotal)",
                        "spool.memory_limit": "\(memoryLimit)", "spool.path": "\(journalPath)",
                    ])
                failure.lastDropLog = now
                failure.droppedSinceLog = 0
            }
        }
        s.failure = failure
    }

    /// At most once a second: writes what the journal is owed and moves the memory queue to disk.
    /// Progress is kept record by record, so a disk that fails again halfway loses nothing.
    private func tryDiskAgain(_ s: inout State, force: Bool = false) {
        guard var failure = s.failure else { return }
        let now = ContinuousClock.now
        guard force || now - failure.lastAttempt >= .seconds(1) else { return }
        failure.lastAttempt = now
        s.failure = failure
        if failure.readOnly {
            guard reopenForWriting(&s) else { return }
            failure.readOnly = false
            s.failure = failure
        }
        do throws(SpoolError) {
            if failure.unrecordedDrops > 0 || s.lastSeq > 0 {
                // The seqs used in memory must never be handed out again, even if those results never reach the disk.
                let reserved = max(s.reservedSeq, s.lastSeq)
                try Spool.appendRecord("S", startFields(s, dropped: failure.unrecordedDrops, reserved: reserved), to: &s, path: journalPath)
                s.reservedSeq = reserved
                failure.unrecordedDrops = 0
                s.failure = failure
            }
            if let through = failure.deliveredThrough {
                try Spool.appendRecord("P", ["through": "\(through)"], to: &s, path: journalPath)
                failure.deliveredThrough = nil
                s.failure = failure
            }
            while let id = failure.unrecordedRemovals.first {
                try Spool.appendRecord("A", ["id": id, "why": "acknowledged"], to: &s, path: journalPath)
                failure.unrecordedRemovals.removeFirst()
                s.failure = failure
            }
            let moved = failure.queue.count
            while let result = failure.queue.first {
                try appendToDisk(result, &s)
                failure.queue.removeFirst()
                s.failure = failure
            }
            s.failure = nil
            logger.info(
                "spool writes to disk again",
                metadata: ["spool.path": "\(journalPath)", "spool.moved_from_memory": "\(moved)", "spool.failed_for_s": "\(Int((now - failure.since).seconds))"])
        } catch {
            logger.debug("spool disk still failing", metadata: ["error": "\(error)"])
        }
    }

    /// The folder was read-only at start: open the journal (and the lock) for writing now.
    private func reopenForWriting(_ s: inout State) -> Bool {
        try? FileManager.default.createDirectory(atPath: directory + "/rejected", withIntermediateDirectories: true)
        guard let file = try? files.openForWriting(journalPath, truncate: false) else { return false }
        // A torn tail the read-only replay could not cut off goes now.
        guard (try? file.truncate(to: s.fileSize)) != nil else {
            file.close()
            return false
        }
        s.file?.close()
        s.file = file
        s.generation += 1
        files.syncDirectory(directory)
        if s.lockFD < 0 {
            let lockFD = open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
            if lockFD >= 0 {
                if flock(lockFD, LOCK_EX | LOCK_NB) == 0 { s.lockFD = lockFD } else { Glibc.close(lockFD) }
            }
        }
        return true
    }

    /// Drops the oldest pending results, then the oldest open batches, until `incoming` fits.
    private func makeRoom(for incoming: Int64, in s: inout State) throws(SpoolError) {
        let limit = Int64(maxBytes)
        guard s.liveBytes + incoming > limit else { return }
        var freed: Int64 = 0
        var count = 0
        while count < s.pending.count, s.liveBytes - freed + incoming > limit {
            freed += s.pending[count].length
            count += 1
        }
        if count > 0 {
            let through = s.pending[count - 1].seq
            // No fsync of its own (a full spool would pay one per append): lost in a power loss,
            // the dropped results come back and are sent, never lost.
            try Spool.appendRecord("D", ["through": "\(through)", "count": "\(count)"], to: &s, path: journalPath, sync: false)
            s.pending.removeFirst(count)
            s.liveBytes -= freed
            s.droppedTotal += UInt64(count)
            logger.warning(
                "spool full: dropped the oldest unsent results",
                metadata: ["spool.dropped": "\(count)", "spool.dropped_total": "\(s.droppedTotal)", "spool.through_seq": "\(through)", "spool.max_bytes": "\(maxBytes)"])
        }
        while s.liveBytes + incoming > limit, let oldest = s.batches.first {
            try Spool.appendRecord("A", ["id": oldest.id, "why": "dropped: spool full"], to: &s, path: journalPath, sync: false)
            s.batches.removeFirst()
            s.liveBytes -= oldest.frameLength + oldest.entries.reduce(0) { $0 + $1.length }
            s.droppedTotal += UInt64(oldest.entries.count)
            logger.warning(
                "spool full: dropped the oldest unacknowledged batch",
                metadata: ["batch.id": "\(oldest.id)", "spool.dropped": "\(oldest.entries.count)", "spool.dropped_total": "\(s.droppedTotal)"])
        }
        try compactIfWorthIt(&s)
    }

    // MARK: - Batches

    /// The batch to send next: the oldest unacknowledged one if any (a resend after a restart
    /// keeps its id and results), otherwise a new one made of up to `maxResults` of the oldest
    /// pending results, recorded (written, not fsynced: see the file's header) before it is
    /// returned. Nil when there is nothing to send.
    /// While the disk fails, new batches are made in memory (see the file's header).
    public func nextBatch(maxResults: Int) throws(SpoolError) -> SpoolBatch? {
        try state.withLock { (s: inout State) throws(SpoolError) -> SpoolBatch? in
            if s.failure != nil { tryDiskAgain(&s) }
            if s.batches.isEmpty, let batch = s.memoryBatch { return SpoolBatch(id: batch.id, rawResults: batch.results) }
            if s.batches.isEmpty, s.failure != nil { return makeMemoryBatch(maxResults: maxResults, &s) }
            if s.batches.isEmpty {
                // No fsync before the send: a SIGKILL keeps the written record, and the group commit
                // fsyncs it with its results if the collector has not acknowledged them soon.
                let entries = Array(s.pending.prefix(max(1, maxResults)))
                guard !entries.isEmpty else { return nil }
                let id = RandomUUID.make()
                let fields = ["id": id, "first": "\(entries.first!.seq)", "last": "\(entries.last!.seq)", "count": "\(entries.count)"]
                let before = s.fileSize
                do throws(SpoolError) {
                    try Spool.appendRecord("B", fields, to: &s, path: journalPath, sync: false)
                } catch let error where Spool.isDiskFailure(error.code) {
                    enterMemoryMode(&s, error)
                    return makeMemoryBatch(maxResults: maxResults, &s)
                }
                s.pending.removeFirst(entries.count)
                s.batches.append(OpenBatch(id: id, entries: entries, frameLength: s.fileSize - before, end: s.fileSize))
                s.liveBytes += s.fileSize - before
            }
            let batch = s.batches[0]
            var results: [Data] = []
            results.reserveCapacity(batch.entries.count)
            for entry in batch.entries {
                if let result = s.recent.json(entry.seq) {
                    results.append(result)
                } else if let file = s.file, let result = Spool.readResult(entry, file: file, logger: logger) {
                    results.append(result)
                }
            }
            return SpoolBatch(id: batch.id, rawResults: results)
        }
    }

    /// The oldest journal results first, then the memory queue, as a batch that exists only here.
    private func makeMemoryBatch(maxResults: Int, _ s: inout State) -> SpoolBatch? {
        guard var failure = s.failure else { return nil }
        let limit = max(1, maxResults)
        let entries = Array(s.pending.prefix(limit))
        var results: [Data] = []
        for entry in entries {
            if let result = s.recent.json(entry.seq) {
                results.append(result)
            } else if let file = s.file, let result = Spool.readResult(entry, file: file, logger: logger) {
                results.append(result)
            }
        }
        s.recent.remove(entries)
        let fromMemory = Array(failure.queue.prefix(limit - entries.count))
        results += fromMemory.compactMap { try? SondeJSON.encode($0) }
        guard !results.isEmpty || !entries.isEmpty else { return nil }
        s.pending.removeFirst(entries.count)
        s.liveBytes -= entries.reduce(0) { $0 + $1.length }
        failure.queue.removeFirst(fromMemory.count)
        s.failure = failure
        let batch = MemoryBatch(id: RandomUUID.make(), results: results, diskThrough: entries.last?.seq, memoryCount: fromMemory.count)
        s.memoryBatch = batch
        return SpoolBatch(id: batch.id, rawResults: batch.results)
    }

    /// The collector stored (or had already stored) batch `id`: its results are done.
    public func acknowledge(_ batchID: String) throws(SpoolError) {
        try remove(batchID, why: "acknowledged")
    }

    /// The collector refused `part` (a single result, refused on its own) for good: keep it in
    /// `rejected/<part id>.json` with the reason, for people. The batch it came from is
    /// acknowledged as usual once its other parts are delivered.
    public func setAside(_ part: SpoolBatch, reason: String) throws(SpoolError) {
        struct Rejected: Encodable {
            var batchID: String
            var rejectedAt: Date
            var reason: String
            var results: [ProbeResult]
            enum CodingKeys: String, CodingKey {
                case batchID = "batch_id", rejectedAt = "rejected_at", reason, results
            }
        }
        let path = directory + "/rejected/\(part.id).json"
        do {
            var data = try SondeJSON.encode(Rejected(batchID: part.id, rejectedAt: Date(), reason: reason, results: part.results), pretty: true)
            let quota = rejectedQuota
            if data.count > quota {
                // Too large to keep whole: the reason and what it was, not the results.
                let summary = part.results.map { "\($0.id) (\($0.probe), \(RFC3339.string(from: $0.startedAt)))" }.prefix(100)
                data = try SondeJSON.encode(
                    Rejected(batchID: part.id, rejectedAt: Date(), reason: reason + "; \(data.count) bytes, over the rejected/ quota of \(quota): kept without its results: " + summary.joined(separator: ", "), results: []),
                    pretty: true)
            }
            makeRoomInRejected(for: data.count, quota: quota, adding: path)
            try Spool.writeDurably(data, to: path)
        } catch let error as SpoolError where Spool.isDiskFailure(error.code) {
            // Nowhere to keep it: say what is lost, rather than resend a refused result forever.
            logger.error(
                "cannot keep the refused result in spool/rejected/ (the disk fails); it is dropped",
                metadata: ["batch.part": "\(part.id)", "batch.results": "\(part.count)", "error": "\(error)", "reason": "\(reason)"])
        } catch let error as SpoolError {
            throw error
        } catch {
            throw SpoolError("spool: cannot write \(path): \(error)")
        }
        state.withLock { $0.rejected += part.count }
    }

    /// What `spool/rejected/` may hold: a quarter of `max_bytes`. Refused results are for a
    /// person to read, and a collector that refuses every result of a probe (or results that
    /// are too large) must not fill the disk with them.
    var rejectedQuota: Int { max(64 << 10, maxBytes / 4) }

    /// `spool/rejected/`'s files, oldest first, and their bytes: read from the folder once, then
    /// kept up to date here (listing and stat-ing 60,000 files for each result set aside cost
    /// 200 ms of the journal thread's CPU; red team, fifth pass).
    private struct RejectedFiles {
        /// Oldest first; those before `head` are deleted (compacted away now and then).
        var files: [(path: String, size: Int)] = []
        var head = 0
        var bytes = 0

        mutating func popOldest() -> (path: String, size: Int)? {
            guard head < files.count else { return nil }
            defer {
                head += 1
                if head > 1024, head * 2 > files.count {
                    files.removeFirst(head)
                    head = 0
                }
            }
            return files[head]
        }
    }
    private let rejectedFiles = Mutex<RejectedFiles?>(nil)

    /// Deletes the oldest files of `spool/rejected/` until `bytes` more fit in `quota`, then counts
    /// the file at `path` (about to be written) in.
    private func makeRoomInRejected(for bytes: Int, quota: Int, adding path: String) {
        let folder = directory + "/rejected"
        let removed = rejectedFiles.withLock { (known: inout RejectedFiles?) -> Int in
            var index = known ?? Self.listRejected(folder)
            var removed = 0
            while index.bytes + bytes > quota, let oldest = index.popOldest() {
                index.bytes -= oldest.size
                // Gone already (a person cleaned up): nothing to delete, the bytes are freed all the same.
                if (try? FileManager.default.removeItem(atPath: oldest.path)) != nil { removed += 1 }
            }
            index.files.append((path, bytes))
            index.bytes += bytes
            known = index
            return removed
        }
        guard removed > 0 else { return }
        logger.warning(
            "spool/rejected/ is at its quota; the oldest refused results were deleted",
            metadata: ["rejected.deleted_files": "\(removed)", "rejected.quota_bytes": "\(quota)"])
    }

    /// The folder's files, oldest first (by modification time, then name).
    private static func listRejected(_ folder: String) -> RejectedFiles {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []
        var files: [(path: String, size: Int, modified: Int)] = names.compactMap { name in
            let path = folder + "/" + name
            var info = stat()
            guard stat(path, &info) == 0 else { return nil }
            return (path, Int(info.st_size), Int(info.st_mtim.tv_sec) * 1_000_000_000 + Int(info.st_mtim.tv_nsec))
        }
        files.sort { ($0.modified, $0.path) < ($1.modified, $1.path) }
        return RejectedFiles(files: files.map { ($0.path, $0.size) }, bytes: files.reduce(0) { $0 + $1.size })
    }

    private func remove(_ batchID: String, why: String) throws(SpoolError) {
        try state.withLock { (s: inout State) throws(SpoolError) in
            if let batch = s.memoryBatch, batch.id == batchID {
                s.memoryBatch = nil
                guard let through = batch.diskThrough else { return }
                if var failure = s.failure {
                    failure.deliveredThrough = max(failure.deliveredThrough ?? 0, through)
                    s.failure = failure
                } else {
                    do throws(SpoolError) { try Spool.appendRecord("P", ["through": "\(through)"], to: &s, path: journalPath) } catch let error where Spool.isDiskFailure(error.code) {
                        enterMemoryMode(&s, error)
                        s.failure?.deliveredThrough = through
                    }
                }
                return
            }
            guard let index = s.batches.firstIndex(where: { $0.id == batchID }) else { return }
            if s.failure == nil {
                do throws(SpoolError) { try Spool.appendRecord("A", ["id": batchID, "why": why], to: &s, path: journalPath, sync: false) } catch let error where Spool.isDiskFailure(error.code) {
                    enterMemoryMode(&s, error)
                }
            }
            // Unrecorded, a resend after a restart carries the same batch id: the collector answers "duplicate".
            if s.failure != nil { s.failure?.unrecordedRemovals.append(batchID) }
            let batch = s.batches.remove(at: index)
            s.liveBytes -= batch.frameLength + batch.entries.reduce(0) { $0 + $1.length }
            s.recent.remove(batch.entries)
            if s.failure == nil { try compactIfWorthIt(&s) }
        }
    }

    // MARK: - Compaction

    private func compactIfWorthIt(_ s: inout State) throws(SpoolError) {
        let threshold = min(Int64(1 << 20), Int64(maxBytes / 4))
        // Not while a batch in memory holds journal results: compaction would drop them from disk.
        guard s.deadBytes > threshold, s.deadBytes > s.liveBytes, s.memoryBatch == nil, s.failure == nil else { return }
        try compact(&s)
    }

    /// Rewrites the journal with only its live records: a start record with the counters, then
    /// each open batch's results and its batch record, then the pending results.
    private func compact(_ s: inout State) throws(SpoolError) {
        let newPath = journalPath + ".new"
        guard let old = s.file else { return }
        let file = try files.openForWriting(newPath, truncate: true)
        var fresh = State(file: file, lockFD: s.lockFD)
        fresh.generation = s.generation + 1
        fresh.lastSeq = s.lastSeq
        fresh.droppedTotal = s.droppedTotal
        fresh.reservedSeq = s.reservedSeq
        fresh.recent = s.recent  // same results, same seqs: only their offsets change
        do throws(SpoolError) {
            try Spool.appendRecord("S", startFields(s, dropped: s.droppedTotal, reserved: s.reservedSeq), to: &fresh, path: newPath, sync: false)
            func copy(_ entry: Entry) throws(SpoolError) -> Entry? {
                guard let frame = Spool.readFrame(at: entry.offset, file: old, limit: s.fileSize), frame.count == Int(entry.length) - 8 else { return nil }
                let offset = try Spool.appendFrame(frame, to: &fresh, path: newPath, sync: false)
                fresh.liveBytes += entry.length
                return Entry(seq: entry.seq, offset: offset, length: entry.length)
            }
            for batch in s.batches {
                var entries: [Entry] = []
                for entry in batch.entries { if let copied = try copy(entry) { entries.append(copied) } }
                let fields = ["id": batch.id, "first": "\(batch.entries.first?.seq ?? 0)", "last": "\(batch.entries.last?.seq ?? 0)", "count": "\(entries.count)"]
                let before = fresh.fileSize
                try Spool.appendRecord("B", fields, to: &fresh, path: newPath, sync: false)
                fresh.batches.append(OpenBatch(id: batch.id, entries: entries, frameLength: fresh.fileSize - before, end: fresh.fileSize))
                fresh.liveBytes += fresh.fileSize - before
            }
            for entry in s.pending { if let copied = try copy(entry) { fresh.pending.append(copied) } }
            try file.sync()
            fresh.syncedSize = fresh.fileSize
            try files.rename(newPath, to: journalPath)
        } catch {
            file.close()
            files.remove(newPath)
            throw error
        }
        files.syncDirectory(directory)
        let before = s.fileSize
        old.close()
        s = fresh
        logger.debug("spool compacted", metadata: ["spool.bytes_before": "\(before)", "spool.bytes_after": "\(fresh.fileSize)"])
    }

    // MARK: - Replay

    private static func replay(into s: inout State, path: String, logger: Logger, readOnly: Bool = false) throws(SpoolError) {
        guard let file = s.file else { return }
        let size = try file.size()
        var offset: Int64 = 0
        var batchFrameLengths: [String: Int64] = [:]
        while offset < size {
            guard let body = readFrame(at: offset, file: file, limit: size), let type = body.first else {
                logger.warning(
                    "spool journal ends with a torn or corrupt record; cutting it off (that append never completed)",
                    metadata: ["spool.path": "\(path)", "spool.offset": "\(offset)", "spool.bytes_discarded": "\(size - offset)"])
                // Read-only: the torn tail is cut off once the journal can be written (the next append overwrites it).
                if !readOnly {
                    try file.truncate(to: offset)
                    try file.sync()
                }
                break
            }
            let length = Int64(body.count + 8)
            let payload = body.dropFirst()
            switch type {
            case UInt8(ascii: "R"):
                guard payload.count >= 8 else { break }
                let seq = payload.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
                s.pending.append(Entry(seq: seq, offset: offset, length: length))
                s.liveBytes += length
                s.lastSeq = max(s.lastSeq, seq)
            case UInt8(ascii: "B"):
                let fields = decodeFields(payload)
                guard let id = fields["id"], let first = fields["first"].flatMap(UInt64.init), let last = fields["last"].flatMap(UInt64.init) else { break }
                let count = s.pending.prefix { $0.seq >= first && $0.seq <= last }.count
                if let expected = fields["count"].flatMap(Int.init), expected != count {
                    logger.warning("spool batch holds fewer results than recorded", metadata: ["batch.id": "\(id)", "spool.expected": "\(expected)", "spool.found": "\(count)"])
                }
                s.batches.append(OpenBatch(id: id, entries: Array(s.pending.prefix(count)), frameLength: length, end: offset + length))
                s.pending.removeFirst(count)
                s.liveBytes += length
                batchFrameLengths[id] = length
            case UInt8(ascii: "A"):
                guard let id = decodeFields(payload)["id"], let index = s.batches.firstIndex(where: { $0.id == id }) else { break }
                let batch = s.batches.remove(at: index)
                s.liveBytes -= batch.frameLength + batch.entries.reduce(0) { $0 + $1.length }
                if decodeFields(payload)["why"]?.hasPrefix("dropped") == true { s.droppedTotal += UInt64(batch.entries.count) }
            case UInt8(ascii: "D"):
                guard let through = decodeFields(payload)["through"].flatMap(UInt64.init) else { break }
                let count = s.pending.prefix { $0.seq <= through }.count
                s.liveBytes -= s.pending.prefix(count).reduce(0) { $0 + $1.length }
                s.pending.removeFirst(count)
                s.droppedTotal += UInt64(count)
            case UInt8(ascii: "P"):
                guard let through = decodeFields(payload)["through"].flatMap(UInt64.init) else { break }
                let count = s.pending.prefix { $0.seq <= through }.count
                s.liveBytes -= s.pending.prefix(count).reduce(0) { $0 + $1.length }
                s.pending.removeFirst(count)
            case UInt8(ascii: "S"):
                let fields = decodeFields(payload)
                s.lastSeq = max(s.lastSeq, fields["last_seq"].flatMap(UInt64.init) ?? 0)
                s.droppedTotal += fields["dropped"].flatMap(UInt64.init) ?? 0
                // The latest reservation counts (a clean close lowers it to the last seq used).
                if let reserved = fields["reserved"].flatMap(UInt64.init) { s.reservedSeq = reserved }
                s.reservedBoot = fields["boot"]
            default:
                logger.warning("spool journal has a record of unknown type; skipping it", metadata: ["spool.offset": "\(offset)"])
            }
            offset += length
        }
        s.fileSize = offset
        s.syncedSize = offset
    }

    /// The JSON of the newest results written to the journal, by seq, so that the uploader's
    /// batch takes them from memory instead of reading each back (a `pread` and a CRC per result:
    /// about 3 % of an agent's instructions at 10 runs/s). Bounded by `maxBytes`, oldest dropped
    /// first, so during a collector outage it holds only the newest results (the rest are read
    /// from the journal as before); a delivered batch's results leave it at once, so an agent
    /// whose pushes succeed holds only its unsent results here.
    struct RecentResults: Sendable {
        static let maxBytes = 256 << 10
        private var bySeq: [UInt64: Data] = [:]
        /// Seqs in the order they were added, from `head` on (removed ones are skipped).
        private var order: [UInt64] = []
        private var head = 0
        private(set) var bytes = 0

        mutating func add(_ seq: UInt64, _ json: Data) {
            guard json.count <= Self.maxBytes / 4 else { return }
            if bySeq.isEmpty {
                order.removeAll(keepingCapacity: true)
                head = 0
            }
            bySeq[seq] = json
            order.append(seq)
            bytes += json.count
            while bytes > Self.maxBytes, head < order.count {
                if let dropped = bySeq.removeValue(forKey: order[head]) { bytes -= dropped.count }
                head += 1
            }
            if head > 4096, head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
        }

        func json(_ seq: UInt64) -> Data? { bySeq[seq] }

        mutating func remove(_ entries: [Entry]) {
            for entry in entries {
                if let dropped = bySeq.removeValue(forKey: entry.seq) { bytes -= dropped.count }
            }
        }

        var count: Int { bySeq.count }
    }

    // MARK: - Frames on disk

    static func frame(_ body: Data) -> Data {
        framed(bodyLength: body.count) { out in
            body.withUnsafeBytes { out.copyMemory(from: $0) }
        }
    }

    /// A result's frame (`frame` of "R", the seq, the JSON), written straight into the frame's
    /// buffer: a result is framed at every run.
    static func resultFrame(seq: UInt64, json: Data) -> Data {
        framed(bodyLength: 9 + json.count) { out in
            out[0] = UInt8(ascii: "R")
            out.storeBytes(of: seq.bigEndian, toByteOffset: 1, as: UInt64.self)
            json.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[9...]).copyMemory(from: $0) }
        }
    }

    /// A frame (big-endian body length, CRC-32 of the body, the body) in one buffer, its body
    /// written by `fill`.
    private static func framed(bodyLength: Int, _ fill: (UnsafeMutableRawBufferPointer) -> Void) -> Data {
        var frame = Data(count: 8 + bodyLength)
        frame.withUnsafeMutableBytes { raw in
            let body = UnsafeMutableRawBufferPointer(rebasing: raw[8...])
            fill(body)
            raw.storeBytes(of: UInt32(bodyLength).bigEndian, toByteOffset: 0, as: UInt32.self)
            raw.storeBytes(of: CRC32.checksum(UnsafeRawBufferPointer(body)).bigEndian, toByteOffset: 4, as: UInt32.self)
        }
        return frame
    }

    /// Appends one frame at the end of the journal (fsynced unless `sync` is false) and returns its
    /// offset. A failed write is cut back off, so the journal never keeps half a frame.
    @discardableResult
    static func appendFrame(_ body: Data, to s: inout State, path: String, sync: Bool = true) throws(SpoolError) -> Int64 {
        try appendFramed(frame(body), to: &s, path: path, sync: sync)
    }

    /// `appendFrame` for a frame already built.
    @discardableResult
    static func appendFramed(_ frame: Data, to s: inout State, path: String, sync: Bool = true) throws(SpoolError) -> Int64 {
        let offset = s.fileSize
        guard let file = s.file else { throw SpoolError("spool \(path): no journal open", code: EROFS) }
        do throws(SpoolError) {
            try file.write(frame, at: offset)
            if sync { try file.sync() }
        } catch {
            try? file.truncate(to: offset)
            throw error
        }
        s.fileSize = offset + Int64(frame.count)
        if sync { s.syncedSize = s.fileSize }
        return offset
    }

    /// An "S" record's fields: the last seq handed out, drops to count, seqs reserved, and the
    /// boot the reservation was made in.
    func startFields(_ s: State, dropped: UInt64, reserved: UInt64) -> [String: String] {
        ["last_seq": "\(s.lastSeq)", "dropped": "\(dropped)", "reserved": "\(reserved)", "boot": bootID]
    }

    /// The kernel's id for this boot: records written in this boot are still in the page cache
    /// (a kill loses none), records of another may have been lost in a power loss.
    public static let currentBootID: String =
        (try? String(contentsOfFile: "/proc/sys/kernel/random/boot_id", encoding: .utf8)).map { $0.filter { !$0.isWhitespace } } ?? ""

    static func appendRecord(_ type: Character, _ fields: [String: String], to s: inout State, path: String, sync: Bool = true) throws(SpoolError) {
        var body = Data([type.asciiValue!])
        // A flat object of strings: tiny, and readable with `strings journal` when debugging.
        body.append(SondeJSON.encode(strings: fields))
        try appendFrame(body, to: &s, path: path, sync: sync)
    }

    static func decodeFields(_ payload: Data.SubSequence) -> [String: String] {
        (try? JSONDecoder().decode([String: String].self, from: Data(payload))) ?? [:]
    }

    /// The body of the frame at `offset`, or nil when it is cut short or fails its CRC.
    static func readFrame(at offset: Int64, file: any JournalFile, limit: Int64) -> Data? {
        guard offset + 8 <= limit, let head = file.read(8, at: offset) else { return nil }
        let length = Int64(head.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        let crc = head.suffix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard length > 0, offset + 8 + length <= limit, let body = file.read(Int(length), at: offset + 8),
            CRC32.checksum(body) == crc
        else { return nil }
        return body
    }

    /// The body of a frame whose whole length (header included) is known: one read, not two
    /// (the uploader reads every result back this way).
    static func readFrame(at offset: Int64, length: Int64, file: any JournalFile) -> Data? {
        guard length > 8, let frame = file.read(Int(length), at: offset) else { return nil }
        let head = frame.prefix(8)
        let bodyLength = Int64(head.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        let crc = head.suffix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        let body = frame.dropFirst(8)
        guard bodyLength == length - 8, CRC32.checksum(body) == crc else { return nil }
        return body
    }

    /// A stored result's JSON, checked by its frame's CRC.
    static func readResult(_ entry: Entry, file: any JournalFile, logger: Logger) -> Data? {
        guard let body = readFrame(at: entry.offset, length: entry.length, file: file), body.count > 9,
            body[body.startIndex + 9] == UInt8(ascii: "{")
        else {
            logger.error("spool: a stored result cannot be read back; skipping it", metadata: ["spool.seq": "\(entry.seq)"])
            return nil
        }
        return Data(body.dropFirst(9))
    }

    /// Writes a whole file via a temporary name + fsync + rename + folder fsync.
    static func writeDurably(_ data: Data, to path: String) throws(SpoolError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .posix("open", temporary) }
        let ok = data.withUnsafeBytes { raw in write(fd, raw.baseAddress, raw.count) == raw.count } && fsync(fd) == 0
        Glibc.close(fd)
        guard ok, rename(temporary, path) == 0 else { throw .posix("write", path) }
        fsyncDirectory(path.lastIndex(of: "/").map { String(path[..<$0]) } ?? ".")
    }

    /// Makes a rename or a new file in `directory` durable.
    static func fsyncDirectory(_ directory: String) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        Glibc.close(fd)
    }
}

/// CRC-32 (IEEE 802.3, the one zlib and PNG use), to tell a whole frame from a torn one.
enum CRC32 {
    static let table: [UInt32] = (0..<256).map { n in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xEDB8_8320 ^ (c >> 1) : c >> 1 }
        return c
    }

    static func checksum(_ data: Data) -> UInt32 {
        data.withUnsafeBytes { checksum($0) }
    }

    static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc: UInt32 = 0xFFFF_FFFF
        // Raw bytes and table: Data's iterator costs several times the arithmetic.
        table.withUnsafeBufferPointer { table in
            for byte in bytes { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        }
        return crc ^ 0xFFFF_FFFF
    }
}

extension Spool {
    /// The system's words for why a file operation failed ("Not a directory"), not Foundation's
    /// error dump.
    static func reason(_ error: any Error) -> String {
        if let posix = error as? POSIXError { return String(cString: strerror(posix.code.rawValue)) }
        if let cocoa = error as? CocoaError, let posix = cocoa.userInfo["NSUnderlyingError"] as? POSIXError {
            return String(cString: strerror(posix.code.rawValue))
        }
        return "\(error)"
    }
}
