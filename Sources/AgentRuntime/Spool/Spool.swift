// The spool: the agent's durable queue of results, the heart of "nothing lost, nothing twice".
//
// Layout of the spool folder:
//   journal     an append-only log of framed records (below)
//   lock        held with flock() while an agent uses the folder (the kernel drops it on SIGKILL)
//   rejected/   batches the collector refused as malformed (400/413/422), one JSON file each
//
// Frame: [u32 big-endian body length][u32 big-endian CRC-32 of body][body], body = one type byte
// followed by its payload:
//   "R" result   u64 big-endian seq, then the result's JSON (carrying the same `seq`)
//   "B" batch    JSON {"id","first","last","count"}: the oldest pending results, seq first…last,
//                now form batch `id`. Written and fsynced BEFORE the first send, so a resend after
//                a crash carries the same batch id and the same results.
//   "A" removed  JSON {"id","why"}: the batch was acknowledged (or rejected, or dropped).
//   "D" dropped  JSON {"through","count"}: the spool was full; pending results up to seq `through`
//                were dropped, oldest first.
//   "S" start    JSON {"last_seq","dropped"}: first record of a compacted journal; it carries the
//                counters that the records compaction removed used to hold.
//
// Durability: every append is write() + fsync() before it returns, so a result "counts" only once
// it is on disk. `seq` is the last seq in the journal + 1, so it survives restarts.
// Torn writes: opening replays the journal; a frame cut short or failing its CRC (SIGKILL or power
// loss mid-append) ends the replay, and the file is truncated back to the last whole frame (with a
// warning). Only the unfinished append is lost, and it never counted.
// Size: `maxBytes` bounds the live results; an append that would pass it first drops the oldest
// pending (not yet batched) results, then if need be the oldest unacknowledged batch, counted and
// logged. Compaction copies the live frames to `journal.new`, fsyncs, renames it over `journal` and
// fsyncs the folder (atomic on POSIX file systems), when dead records outweigh live ones.

import Foundation
import Logging
import SondeCore
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// A batch as the uploader sends it: fixed id, fixed results (in seq order).
public struct SpoolBatch: Sendable, Hashable {
    public var id: String
    public var results: [ProbeResult]
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

    /// Results not yet acknowledged by the collector.
    public var unsentResults: Int { pendingResults + batchedResults }
}

/// A spool that cannot be opened or written; the message names the path and what to do.
public struct SpoolError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
    static func posix(_ what: String, _ path: String) -> SpoolError {
        SpoolError("spool \(path): \(what) failed: \(String(cString: strerror(errno)))")
    }
}

public final class Spool: Sendable {
    public let directory: String
    public let maxBytes: Int
    private let logger: Logger
    private let journalPath: String
    private let lockFD: Int32
    // The journal's file descriptor and the in-memory index of it; every access holds the lock,
    // which also serialises appends (one writer, frames never interleave).
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
    }

    struct State: Sendable {
        var fd: Int32
        var fileSize: Int64 = 0
        var lastSeq: UInt64 = 0
        var droppedTotal: UInt64 = 0
        var pending: [Entry] = []
        var batches: [OpenBatch] = []
        var liveBytes: Int64 = 0
        var closed = false
        var deadBytes: Int64 { fileSize - liveBytes }
    }

    /// Opens (or creates) the spool in `directory`, replays its journal and cuts off a torn tail.
    /// Fails if another process holds the spool.
    public init(directory: String, maxBytes: Int = 256 << 20, logger: Logger) throws(SpoolError) {
        self.directory = directory
        self.maxBytes = maxBytes
        self.logger = logger
        journalPath = directory + "/journal"
        do {
            try FileManager.default.createDirectory(atPath: directory + "/rejected", withIntermediateDirectories: true)
        } catch {
            throw SpoolError("spool \(directory): cannot create the folder (\(error.localizedDescription)); check spool.path and its owner")
        }
        let lockFD = open(directory + "/lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard lockFD >= 0 else { throw .posix("open lock", directory) }
        guard flock(lockFD, LOCK_EX | LOCK_NB) == 0 else {
            Glibc.close(lockFD)
            throw SpoolError("spool \(directory) is in use by another sonde-agent process; give each agent its own spool.path")
        }
        self.lockFD = lockFD
        let fd = open(journalPath, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard fd >= 0 else { Glibc.close(lockFD); throw .posix("open journal", journalPath) }
        Spool.fsyncDirectory(directory)
        var replayed = State(fd: fd)
        do { try Spool.replay(into: &replayed, path: journalPath, logger: logger) } catch {
            Glibc.close(fd)
            Glibc.close(lockFD)
            throw error
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

    /// Releases the journal and the folder lock.
    public func close() {
        state.withLock { state in
            guard !state.closed else { return }
            state.closed = true
            Glibc.close(state.fd)
            Glibc.close(lockFD)
        }
    }

    public var status: SpoolStatus {
        state.withLock { s in
            SpoolStatus(
                pendingResults: s.pending.count, openBatches: s.batches.count,
                batchedResults: s.batches.reduce(0) { $0 + $1.entries.count }, lastSeq: s.lastSeq,
                droppedResults: s.droppedTotal, journalBytes: s.fileSize, liveBytes: s.liveBytes)
        }
    }

    // MARK: - Appending

    /// Gives `result` the next seq and appends it durably (written and fsynced) before returning
    /// it with its seq. Makes room first by dropping the oldest unsent results if the spool is full.
    @discardableResult
    public func append(_ result: ProbeResult) throws(SpoolError) -> ProbeResult {
        try state.withLock { (s: inout State) throws(SpoolError) -> ProbeResult in
            var result = result
            result.seq = s.lastSeq + 1
            let json: Data
            do { json = try SondeJSON.encode(result) } catch { throw SpoolError("cannot encode result \(result.id): \(error)") }
            var body = Data([UInt8(ascii: "R")])
            body.append(contentsOf: Spool.bigEndian(result.seq!))
            body.append(json)
            let frameLength = Int64(8 + body.count)
            try makeRoom(for: frameLength, in: &s)
            let offset = try Spool.appendFrame(body, to: &s, path: journalPath)
            s.lastSeq = result.seq!
            s.pending.append(Entry(seq: result.seq!, offset: offset, length: frameLength))
            s.liveBytes += frameLength
            return result
        }
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
            try Spool.appendRecord("D", ["through": "\(through)", "count": "\(count)"], to: &s, path: journalPath)
            s.pending.removeFirst(count)
            s.liveBytes -= freed
            s.droppedTotal += UInt64(count)
            logger.warning(
                "spool full: dropped the oldest unsent results",
                metadata: ["spool.dropped": "\(count)", "spool.dropped_total": "\(s.droppedTotal)", "spool.through_seq": "\(through)", "spool.max_bytes": "\(maxBytes)"])
        }
        while s.liveBytes + incoming > limit, let oldest = s.batches.first {
            try Spool.appendRecord("A", ["id": oldest.id, "why": "dropped: spool full"], to: &s, path: journalPath)
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
    /// pending results, recorded durably before it is returned. Nil when there is nothing to send.
    public func nextBatch(maxResults: Int) throws(SpoolError) -> SpoolBatch? {
        try state.withLock { (s: inout State) throws(SpoolError) -> SpoolBatch? in
            if s.batches.isEmpty {
                guard !s.pending.isEmpty else { return nil }
                let entries = Array(s.pending.prefix(max(1, maxResults)))
                let id = UUID().uuidString.lowercased()
                let fields = ["id": id, "first": "\(entries.first!.seq)", "last": "\(entries.last!.seq)", "count": "\(entries.count)"]
                let before = s.fileSize
                try Spool.appendRecord("B", fields, to: &s, path: journalPath)
                s.pending.removeFirst(entries.count)
                s.batches.append(OpenBatch(id: id, entries: entries, frameLength: s.fileSize - before))
                s.liveBytes += s.fileSize - before
            }
            let batch = s.batches[0]
            var results: [ProbeResult] = []
            results.reserveCapacity(batch.entries.count)
            for entry in batch.entries {
                if let result = Spool.readResult(entry, fd: s.fd, logger: logger) { results.append(result) }
            }
            return SpoolBatch(id: batch.id, results: results)
        }
    }

    /// The collector stored (or had already stored) batch `id`: its results are done.
    public func acknowledge(_ batchID: String) throws(SpoolError) {
        try remove(batchID, why: "acknowledged")
    }

    /// The collector refused the batch itself: keep it aside in `rejected/` for people, and move on.
    public func reject(_ batch: SpoolBatch, reason: String) throws(SpoolError) {
        struct Rejected: Encodable {
            var batchID: String
            var rejectedAt: Date
            var reason: String
            var results: [ProbeResult]
            enum CodingKeys: String, CodingKey {
                case batchID = "batch_id", rejectedAt = "rejected_at", reason, results
            }
        }
        let path = directory + "/rejected/\(batch.id).json"
        do {
            let data = try SondeJSON.encode(Rejected(batchID: batch.id, rejectedAt: Date(), reason: reason, results: batch.results), pretty: true)
            try Spool.writeDurably(data, to: path)
        } catch let error as SpoolError {
            throw error
        } catch {
            throw SpoolError("spool: cannot write \(path): \(error)")
        }
        try remove(batch.id, why: "rejected")
    }

    private func remove(_ batchID: String, why: String) throws(SpoolError) {
        try state.withLock { (s: inout State) throws(SpoolError) in
            guard let index = s.batches.firstIndex(where: { $0.id == batchID }) else { return }
            try Spool.appendRecord("A", ["id": batchID, "why": why], to: &s, path: journalPath)
            let batch = s.batches.remove(at: index)
            s.liveBytes -= batch.frameLength + batch.entries.reduce(0) { $0 + $1.length }
            try compactIfWorthIt(&s)
        }
    }

    // MARK: - Compaction

    private func compactIfWorthIt(_ s: inout State) throws(SpoolError) {
        let threshold = min(Int64(1 << 20), Int64(maxBytes / 4))
        guard s.deadBytes > threshold, s.deadBytes > s.liveBytes else { return }
        try compact(&s)
    }

    /// Rewrites the journal with only its live records: a start record with the counters, then
    /// each open batch's results and its batch record, then the pending results.
    private func compact(_ s: inout State) throws(SpoolError) {
        let newPath = journalPath + ".new"
        let fd = open(newPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .posix("open", newPath) }
        var fresh = State(fd: fd)
        fresh.lastSeq = s.lastSeq
        fresh.droppedTotal = s.droppedTotal
        do throws(SpoolError) {
            try Spool.appendRecord("S", ["last_seq": "\(s.lastSeq)", "dropped": "\(s.droppedTotal)"], to: &fresh, path: newPath, sync: false)
            func copy(_ entry: Entry) throws(SpoolError) -> Entry? {
                guard let frame = Spool.readFrame(at: entry.offset, fd: s.fd, limit: s.fileSize), frame.count == Int(entry.length) - 8 else { return nil }
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
                fresh.batches.append(OpenBatch(id: batch.id, entries: entries, frameLength: fresh.fileSize - before))
                fresh.liveBytes += fresh.fileSize - before
            }
            for entry in s.pending { if let copied = try copy(entry) { fresh.pending.append(copied) } }
            guard fsync(fd) == 0 else { throw SpoolError.posix("fsync", newPath) }
            guard rename(newPath, journalPath) == 0 else { throw SpoolError.posix("rename", newPath) }
        } catch {
            Glibc.close(fd)
            unlink(newPath)
            throw error
        }
        Spool.fsyncDirectory(directory)
        let before = s.fileSize
        Glibc.close(s.fd)
        s = fresh
        logger.debug("spool compacted", metadata: ["spool.bytes_before": "\(before)", "spool.bytes_after": "\(fresh.fileSize)"])
    }

    // MARK: - Replay

    private static func replay(into s: inout State, path: String, logger: Logger) throws(SpoolError) {
        var info = stat()
        guard fstat(s.fd, &info) == 0 else { throw .posix("stat", path) }
        let size = Int64(info.st_size)
        var offset: Int64 = 0
        var batchFrameLengths: [String: Int64] = [:]
        while offset < size {
            guard let body = readFrame(at: offset, fd: s.fd, limit: size), let type = body.first else {
                logger.warning(
                    "spool journal ends with a torn or corrupt record; cutting it off (that append never completed)",
                    metadata: ["spool.path": "\(path)", "spool.offset": "\(offset)", "spool.bytes_discarded": "\(size - offset)"])
                guard ftruncate(s.fd, off_t(offset)) == 0, fsync(s.fd) == 0 else { throw .posix("truncate", path) }
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
                s.batches.append(OpenBatch(id: id, entries: Array(s.pending.prefix(count)), frameLength: length))
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
            case UInt8(ascii: "S"):
                let fields = decodeFields(payload)
                s.lastSeq = max(s.lastSeq, fields["last_seq"].flatMap(UInt64.init) ?? 0)
                s.droppedTotal += fields["dropped"].flatMap(UInt64.init) ?? 0
            default:
                logger.warning("spool journal has a record of unknown type; skipping it", metadata: ["spool.offset": "\(offset)"])
            }
            offset += length
        }
        s.fileSize = offset
        guard lseek(s.fd, off_t(offset), SEEK_SET) >= 0 else { throw .posix("seek", path) }
    }

    // MARK: - Frames on disk

    static func frame(_ body: Data) -> Data {
        var frame = Data(capacity: body.count + 8)
        frame.append(contentsOf: bigEndian(UInt32(body.count)))
        frame.append(contentsOf: bigEndian(CRC32.checksum(body)))
        frame.append(body)
        return frame
    }

    /// Appends one frame at the end of the journal (fsynced unless `sync` is false) and returns its
    /// offset. A failed write is cut back off, so the journal never keeps half a frame.
    @discardableResult
    static func appendFrame(_ body: Data, to s: inout State, path: String, sync: Bool = true) throws(SpoolError) -> Int64 {
        let frame = frame(body)
        let offset = s.fileSize
        let ok = frame.withUnsafeBytes { raw -> Bool in
            var done = 0
            while done < raw.count {
                let n = pwrite(s.fd, raw.baseAddress! + done, raw.count - done, off_t(offset) + off_t(done))
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { return false }
                done += n
            }
            return true
        }
        guard ok, !sync || fsync(s.fd) == 0 else {
            let error = SpoolError.posix("append", path)
            _ = ftruncate(s.fd, off_t(offset))
            throw error
        }
        s.fileSize = offset + Int64(frame.count)
        return offset
    }

    static func appendRecord(_ type: Character, _ fields: [String: String], to s: inout State, path: String, sync: Bool = true) throws(SpoolError) {
        var body = Data([type.asciiValue!])
        // A flat object of strings: tiny, and readable with `strings journal` when debugging.
        body.append((try? JSONSerialization.data(withJSONObject: fields, options: [.sortedKeys])) ?? Data("{}".utf8))
        try appendFrame(body, to: &s, path: path, sync: sync)
    }

    static func decodeFields(_ payload: Data.SubSequence) -> [String: String] {
        (try? JSONSerialization.jsonObject(with: Data(payload))) as? [String: String] ?? [:]
    }

    /// The body of the frame at `offset`, or nil when it is cut short or fails its CRC.
    static func readFrame(at offset: Int64, fd: Int32, limit: Int64) -> Data? {
        guard offset + 8 <= limit, let head = readExactly(8, at: offset, fd: fd) else { return nil }
        let length = Int64(head.prefix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) })
        let crc = head.suffix(4).reduce(UInt32(0)) { $0 << 8 | UInt32($1) }
        guard length > 0, offset + 8 + length <= limit, let body = readExactly(Int(length), at: offset + 8, fd: fd),
            CRC32.checksum(body) == crc
        else { return nil }
        return body
    }

    static func readExactly(_ count: Int, at offset: Int64, fd: Int32) -> Data? {
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

    static func readResult(_ entry: Entry, fd: Int32, logger: Logger) -> ProbeResult? {
        guard let body = readFrame(at: entry.offset, fd: fd, limit: entry.offset + entry.length), body.count > 9,
            let result = try? SondeJSON.decode(ProbeResult.self, from: body.dropFirst(9))
        else {
            logger.error("spool: a stored result cannot be read back; skipping it", metadata: ["spool.seq": "\(entry.seq)"])
            return nil
        }
        return result
    }

    static func bigEndian<T: FixedWidthInteger>(_ value: T) -> [UInt8] {
        withUnsafeBytes(of: value.bigEndian) { Array($0) }
    }

    /// Writes a whole file via a temporary name + fsync + rename + folder fsync.
    static func writeDurably(_ data: Data, to path: String) throws(SpoolError) {
        let temporary = path + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .posix("open", temporary) }
        let ok = data.withUnsafeBytes { raw in write(fd, raw.baseAddress, raw.count) == raw.count } && fsync(fd) == 0
        Glibc.close(fd)
        guard ok, rename(temporary, path) == 0 else { throw .posix("write", path) }
        fsyncDirectory((path as NSString).deletingLastPathComponent)
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
        var crc: UInt32 = 0xFFFF_FFFF
        for byte in data { crc = table[Int((crc ^ UInt32(byte)) & 0xFF)] ^ (crc >> 8) }
        return crc ^ 0xFFFF_FFFF
    }
}
