import CCompression
import SondeCore

#if canImport(Glibc)
import Glibc
#endif

/// Decodes one response body's content coding (gzip, deflate, br or zstd) into pieces of at most
/// `outputPiece` bytes, each offered to a sink that may take it, pause, or stop.
///
/// libcurl's own decoding, with the transfer paused (its round's share, or body memory), kept
/// whatever the rest of its current network read decoded to: 1 MiB for gzip from a 1 KiB read,
/// 32 MiB for zstd (RLE blocks), outside every budget (BENCHMARKS-agent.md, 38th session). Here a
/// paused transfer holds at most one piece, and where it stopped in the network read that libcurl
/// hands over again once the pause is lifted (`consumed`). Each decoder's own memory (windows,
/// tables) is counted (`allocated`, which the transfer counts in its client's `BodyMemory`) and
/// capped (`memoryCap`): zstd frames may declare windows up to 8 MiB (RFC 9659 §3 holds HTTP's
/// encoders to that), brotli's format stops at 16 MiB, zlib needs about 44 KiB.
final class ContentDecoder {
    enum Coding: String, Sendable {
        case gzip, deflate, br, zstd

        /// The coding a `Content-Encoding` name applies; nil for one the agent does not decode.
        init?(name: String) {
            switch name {
            case "gzip", "x-gzip": self = .gzip
            default: self.init(rawValue: name)
            }
        }
    }

    /// What the sink says of a piece of decoded output.
    enum Taken { case took, pause, stop }

    /// What became of a network read.
    enum Outcome: Equatable {
        /// All decoded and taken: the next read may come.
        case consumed
        /// The sink paused: libcurl holds the read and hands it over again; decoding goes on
        /// where it stopped.
        case paused
        /// The sink stopped the transfer (over `max_body`).
        case stopped
        /// The body is not valid in its coding, or needs more memory than allowed: why.
        case failed(String)
    }

    /// Decoded bytes offered at a time: as libcurl hands undecoded bodies over (CURL_MAX_WRITE_SIZE).
    static let outputPiece = 16 << 10
    /// zstd windows up to 2^23 (8 MiB): RFC 9659 §3.
    static let zstdWindowLog: Int32 = 23

    /// The most one decoder may allocate: its largest window, and room for its tables and buffers.
    static func memoryCap(_ coding: Coding) -> Int {
        switch coding {
        case .gzip, .deflate: 256 << 10
        case .zstd: (1 << zstdWindowLog) + (1 << 20)
        case .br: (16 << 20) + (2 << 20)
        }
    }

    /// What a decoder is expected to need, from the first bytes of the body (the window its
    /// header declares), for the transfer's place in the body-memory line before it starts.
    static func memoryToStart(_ coding: Coding, firstBytes: UnsafeRawBufferPointer) -> Int {
        switch coding {
        case .gzip, .deflate:
            return 48 << 10
        case .zstd:
            guard let base = firstBytes.baseAddress else { return memoryCap(coding) }
            let estimate = ZSTD_estimateDStreamSize_fromFrame(base, firstBytes.count)
            return ZSTD_isError(estimate) != 0 ? memoryCap(coding) : min(Int(estimate), memoryCap(coding))
        case .br:
            guard let bits = brotliWindowBits(firstBytes) else { return memoryCap(coding) }
            // The ring buffer, and the Huffman tables of a metablock (about 1.3 MiB at worst).
            return min((1 << bits) + (1 << 20), memoryCap(coding))
        }
    }

    /// The window bits (WBITS) a brotli stream's first bits declare (RFC 7932 §9.1); nil when
    /// the bytes are too few or declare the large-window extension.
    static func brotliWindowBits(_ bytes: UnsafeRawBufferPointer) -> Int? {
        guard let first = bytes.first else { return nil }
        if first & 1 == 0 { return 16 }
        let n = Int((first >> 1) & 0x7)
        if n != 0 { return 17 + n }
        let m = Int((first >> 4) & 0x7)
        if m == 1 { return nil }  // large window: refused by the decoder anyway
        return m == 0 ? 17 : 8 + m
    }

    let coding: Coding
    /// Bytes the decoder's library holds now.
    var allocated: Int { meter.pointee.allocated }
    /// The stream needed more memory than its coding may take here (past `memoryCap`, or a zstd
    /// window past `zstdWindowLog`): a bomb, or at least not a body for a probe.
    var refusedMemory: Bool { meter.pointee.refused || windowTooLarge }
    private var windowTooLarge = false

    private let meter: UnsafeMutablePointer<Meter>
    private let output: UnsafeMutableRawBufferPointer
    /// Output decoded but not yet taken (the sink paused).
    private var pending: Range<Int>?
    /// Bytes of the current network read fed to the decoder so far (it comes again after a pause).
    private var consumed = 0
    /// The stream ended (gzip and deflate: bytes after it are ignored, as libcurl does).
    private var ended = false
    /// zstd: the last frame fed so far is complete (a body may hold several frames).
    private var zstdFrameEnded = false

    /// The body's stream reached its end. False once the transfer is over: the body was cut
    /// short (a proxy or server that closed early), and what was decoded is only its start.
    var isComplete: Bool { zstd == nil ? ended : zstdFrameEnded }
    private var zlib: UnsafeMutablePointer<z_stream>?
    private var brotli: OpaquePointer?
    private var zstd: OpaquePointer?

    /// A decoder for `coding`; `firstBytes` tells a zlib-wrapped deflate stream from a raw one
    /// (servers send both as `deflate`). Nil when the library could not start one.
    init?(_ coding: Coding, firstBytes: UnsafeRawBufferPointer) {
        self.coding = coding
        meter = .allocate(capacity: 1)
        meter.initialize(to: Meter(cap: Self.memoryCap(coding)))
        output = .allocate(byteCount: Self.outputPiece, alignment: 16)
        let opaque = UnsafeMutableRawPointer(meter)
        switch coding {
        case .gzip, .deflate:
            let stream = UnsafeMutablePointer<z_stream>.allocate(capacity: 1)
            stream.initialize(to: z_stream())
            stream.pointee.zalloc = { opaque, items, size in countedAllocate(opaque, Int(items) * Int(size)) }
            stream.pointee.zfree = { opaque, address in countedFree(opaque, address) }
            stream.pointee.opaque = opaque
            // gzip: 15 + 32 reads a gzip or zlib header (as libcurl does); deflate: zlib-wrapped
            // when its first two bytes are a zlib header, raw otherwise.
            let bits: Int32 = coding == .gzip ? 15 + 32 : Self.isZlibHeader(firstBytes) ? 15 : -15
            guard sonde_inflate_init(stream, bits) == Z_OK else {
                stream.deallocate()
                return nil
            }
            zlib = stream
        case .br:
            guard let state = BrotliDecoderCreateInstance({ countedAllocate($0, $1) }, { countedFree($0, $1) }, opaque) else { return nil }
            brotli = state
        case .zstd:
            let memory = ZSTD_customMem(customAlloc: { countedAllocate($0, $1) }, customFree: { countedFree($0, $1) }, opaque: opaque)
            guard let stream = ZSTD_createDStream_advanced(memory) else { return nil }
            _ = ZSTD_DCtx_setParameter(stream, ZSTD_d_windowLogMax, Self.zstdWindowLog)
            zstd = stream
        }
    }

    deinit {
        if let zlib {
            inflateEnd(zlib)
            zlib.deallocate()
        }
        if let brotli { BrotliDecoderDestroyInstance(brotli) }
        if let zstd { ZSTD_freeDStream(zstd) }
        output.deallocate()
        meter.deallocate()
    }

    private static func isZlibHeader(_ bytes: UnsafeRawBufferPointer) -> Bool {
        guard bytes.count >= 2 else { return bytes.first.map { $0 & 0x0F == 8 } ?? true }
        return bytes[0] & 0x0F == 8 && (Int(bytes[0]) << 8 | Int(bytes[1])) % 31 == 0
    }

    /// Decodes a network read (libcurl's piece of the body) from where the last call stopped,
    /// offering the output to `sink` piece by piece.
    func write(_ read: UnsafeRawBufferPointer, to sink: (UnsafeRawBufferPointer) -> Taken) -> Outcome {
        if let held = pending {
            switch sink(UnsafeRawBufferPointer(rebasing: output[held])) {
            case .took: pending = nil
            case .pause: return .paused
            case .stop: return .stopped
            }
        }
        guard consumed <= read.count else {
            return .failed("libcurl handed a paused read over again shorter than before (\(read.count) bytes, \(consumed) decoded)")
        }
        while !ended {
            let step = decode(UnsafeRawBufferPointer(rebasing: read[consumed...]))
            consumed += step.used
            if let error = step.error { return .failed(error) }
            if step.produced > 0 {
                switch sink(UnsafeRawBufferPointer(rebasing: output[0..<step.produced])) {
                case .took: break
                case .pause:
                    pending = 0..<step.produced
                    return .paused
                case .stop: return .stopped
                }
            }
            // All of the read fed, and the decoder had no more output than it gave: the next read.
            if consumed == read.count && step.produced < output.count { break }
            if step.used == 0 && step.produced == 0 && !ended {
                return .failed("the \(coding.rawValue) decoder made no progress on the body")
            }
        }
        consumed = 0
        return .consumed
    }

    /// One call of the library: input used, output produced (from the start of `output`).
    private func decode(_ input: UnsafeRawBufferPointer) -> (used: Int, produced: Int, error: String?) {
        let inputBase = input.baseAddress?.assumingMemoryBound(to: UInt8.self)
        let outputBase = output.baseAddress!.assumingMemoryBound(to: UInt8.self)
        if let zlib {
            zlib.pointee.next_in = UnsafeMutablePointer(mutating: inputBase)
            zlib.pointee.avail_in = UInt32(input.count)
            zlib.pointee.next_out = outputBase
            zlib.pointee.avail_out = UInt32(output.count)
            let code = inflate(zlib, Z_NO_FLUSH)
            let used = input.count - Int(zlib.pointee.avail_in)
            let produced = output.count - Int(zlib.pointee.avail_out)
            switch code {
            case Z_OK, Z_BUF_ERROR: return (used, produced, nil)
            case Z_STREAM_END:
                ended = true
                return (used, produced, nil)
            case Z_MEM_ERROR: return (used, produced, memoryError())
            default:
                let why = zlib.pointee.msg.map { String(cString: $0) } ?? "error \(code)"
                return (used, produced, "the body is not valid \(coding.rawValue) (\(why))")
            }
        }
        if let brotli {
            var availableIn = input.count
            var nextIn = inputBase.map { UnsafePointer($0) }
            var availableOut = output.count
            var nextOut: UnsafeMutablePointer<UInt8>? = outputBase
            let code = BrotliDecoderDecompressStream(brotli, &availableIn, &nextIn, &availableOut, &nextOut, nil)
            let used = input.count - availableIn
            let produced = output.count - availableOut
            if code == BROTLI_DECODER_RESULT_ERROR {
                if refusedMemory { return (used, produced, memoryError()) }
                let why = String(cString: BrotliDecoderErrorString(BrotliDecoderGetErrorCode(brotli)))
                return (used, produced, "the body is not valid br (\(why))")
            }
            if code == BROTLI_DECODER_RESULT_SUCCESS { ended = true }
            return (used, produced, nil)
        }
        guard let zstd else { return (0, 0, "no decoder") }
        var source = ZSTD_inBuffer(src: input.baseAddress, size: input.count, pos: 0)
        var target = ZSTD_outBuffer(dst: output.baseAddress, size: output.count, pos: 0)
        let code = ZSTD_decompressStream(zstd, &target, &source)
        if ZSTD_isError(code) != 0 {
            if refusedMemory { return (source.pos, target.pos, memoryError()) }
            let why = String(cString: ZSTD_getErrorName(code))
            windowTooLarge = ZSTD_getErrorCode(code) == ZSTD_error_frameParameter_windowTooLarge
            let limit = windowTooLarge ? " (the agent decodes windows up to \((1 << Self.zstdWindowLog) >> 20) MiB, RFC 9659)" : ""
            return (source.pos, target.pos, "the body is not valid zstd, or not one the agent decodes: \(why)\(limit)")
        }
        // 0: a frame decoded and flushed to its end. A call that neither read nor wrote (the
        // loop's look after a full piece) says nothing new.
        if source.pos > 0 || target.pos > 0 { zstdFrameEnded = code == 0 }
        return (source.pos, target.pos, nil)
    }

    private func memoryError() -> String {
        "decoding the body (\(coding.rawValue)) needs more than \(meter.pointee.cap >> 20) MiB of the agent's memory: a compression bomb?"
    }
}

/// A decoder's allocation count, apart from the decoder so that the library's frees on `deinit`
/// never touch an object being torn down.
private struct Meter {
    var allocated = 0
    var cap: Int
    var refused = false
}

/// The decoders' allocator: `size` bytes counted in the `Meter` at `opaque`, refused past its
/// cap; each block keeps its size in front, for the free (the libraries do not pass it).
private func countedAllocate(_ opaque: UnsafeMutableRawPointer?, _ size: Int) -> UnsafeMutableRawPointer? {
    guard let meter = opaque?.assumingMemoryBound(to: Meter.self) else { return nil }
    guard meter.pointee.allocated + size <= meter.pointee.cap, let block = malloc(size + sizeHeader) else {
        meter.pointee.refused = true
        return nil
    }
    block.storeBytes(of: size, as: Int.self)
    meter.pointee.allocated += size
    return block + sizeHeader
}

private func countedFree(_ opaque: UnsafeMutableRawPointer?, _ address: UnsafeMutableRawPointer?) {
    guard let address, let meter = opaque?.assumingMemoryBound(to: Meter.self) else { return }
    let block = address - sizeHeader
    meter.pointee.allocated -= block.load(as: Int.self)
    free(block)
}

/// In front of each block: its size, in 16 bytes so that the block stays aligned as malloc's.
private let sizeHeader = 16
