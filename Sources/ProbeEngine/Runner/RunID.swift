#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Random (version 4) UUIDs for run ids, lowercase, e.g. `3f2b…-4…-a…`.
///
/// Why not `UUID().uuidString.lowercased()`: on Linux Foundation's `UUID()` opens, reads and
/// closes `/dev/urandom` for every id (three system calls per probe run), and the string is then
/// built twice. `arc4random_buf` needs no system call per id, and the string is formatted once.
enum RunID {
    static func make() -> String {
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

    private static func fill(_ raw: UnsafeMutableRawBufferPointer) {
        // glibc ≥ 2.36 and Darwin: a ChaCha20 generator in the process, seeded by the kernel.
        arc4random_buf(raw.baseAddress!, raw.count)
    }
}
