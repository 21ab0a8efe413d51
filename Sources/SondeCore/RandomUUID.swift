#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import Synchronization

/// Random (version 4) UUIDs, lowercase, e.g. `3f2b…-4…-a…`: run ids and the spool's batch ids.
///
/// Why not `UUID().uuidString.lowercased()`: on Linux Foundation's `UUID()` opens, reads and
/// closes `/dev/urandom` for every id (three system calls per probe run, and per push), and the
/// string is then built twice. Here the kernel's random bytes are fetched 4 KiB at a time (one
/// system call per 256 ids) and the string is formatted once.
public enum RandomUUID {
    public static func make() -> String {
        var bytes = (UInt64(0), UInt64(0))
        withUnsafeMutableBytes(of: &bytes) { raw in
            fill(raw)
            raw[6] = (raw[6] & 0x0F) | 0x40  // version 4
            raw[8] = (raw[8] & 0x3F) | 0x80  // RFC 4122 variant
        }
        return withUnsafeBytes(of: &bytes) { raw in
            String(unsafeUninitializedCapacity: 36) { out in
                let hex: StaticString = "0123456789abcdef"
                var index = 0
                for position in 0..<16 {
                    if position == 4 || position == 6 || position == 8 || position == 10 {
                        out[index] = UInt8(ascii: "-")
                        index += 1
                    }
                    let byte = raw[position]
                    out[index] = hex.utf8Start[Int(byte >> 4)]
                    out[index + 1] = hex.utf8Start[Int(byte & 0x0F)]
                    index += 2
                }
                return index
            }
        }
    }

    /// Random bytes from `arc4random_buf` (glibc ≥ 2.36 and Darwin: kernel randomness, one
    /// `getrandom` call per fill), handed out 16 at a time.
    private static let pool = Mutex(RandomPool())

    private static func fill(_ raw: UnsafeMutableRawBufferPointer) {
        pool.withLock { $0.take(into: raw) }
    }
}

// `@unchecked Sendable`: the buffer is owned by this value and used only under the pool's lock.
private struct RandomPool: ~Copyable, @unchecked Sendable {
    private let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 4096, alignment: 16)
    private var used = 4096

    deinit { buffer.deallocate() }

    mutating func take(into raw: UnsafeMutableRawBufferPointer) {
        precondition(raw.count <= buffer.count)
        if used + raw.count > buffer.count {
            arc4random_buf(buffer.baseAddress!, buffer.count)
            used = 0
        }
        raw.copyMemory(from: UnsafeRawBufferPointer(rebasing: buffer[used..<used + raw.count]))
        // Never hand the same bytes out twice.
        buffer[used..<used + raw.count].initializeMemory(as: UInt8.self, repeating: 0)
        used += raw.count
    }
}
