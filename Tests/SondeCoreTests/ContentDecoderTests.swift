@testable import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

/// The agent's own decoding of response bodies (`ContentDecoder`): each coding as real encoders
/// make it (the system's gzip, brotli and zstd commands, python's zlib), read in libcurl's
/// pieces, with pauses anywhere, and what a hostile stream can make it hold.
@Suite struct ContentDecoderTests {
    /// Text that compresses as real bodies do, 3 MiB.
    static let text: Data = {
        var generator = SplitMix(seed: 7)
        let words = ["status", "ok", "files", "batch", "finalizing", "region", "eu", "latency", "{", "}", "\"id\":", "12345", ",", "\n"]
        var out = ""
        while out.utf8.count < 3 << 20 { out += words[Int(generator.next() % UInt64(words.count))] + " " }
        return Data(out.utf8)
    }()

    /// `data` through a shell command that reads stdin and writes stdout.
    static func encoded(_ data: Data, with command: String) throws -> Data {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("sonde-codings-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: dir) }
        try data.write(to: dir.appendingPathComponent("in"))
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", "\(command) < in > out"]
        process.currentDirectoryURL = dir
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0, "\(command) exited \(process.terminationStatus)")
        return try Data(contentsOf: dir.appendingPathComponent("out"))
    }

    /// Feeds `encoded` in reads of `readSize` as libcurl does, handing a read over again after
    /// each pause; the sink pauses every `pauseEvery`-th offer. Returns the output, the outcome,
    /// the largest offer and the most the decoder held.
    static func drive(
        _ coding: ContentDecoder.Coding, _ encoded: Data, readSize: Int, pauseEvery: Int, limit: Int = .max
    ) throws -> (output: Data, outcome: ContentDecoder.Outcome, largestOffer: Int, mostAllocated: Int, refusedMemory: Bool, complete: Bool) {
        var output = Data()
        var offers = 0
        var largest = 0
        var most = 0
        var last = ContentDecoder.Outcome.consumed
        let decoder = try encoded.withUnsafeBytes { try #require(ContentDecoder(coding, firstBytes: UnsafeRawBufferPointer(rebasing: $0.prefix(readSize)))) }
        var offset = 0
        while offset < encoded.count {
            let end = min(offset + readSize, encoded.count)
            repeat {
                last = encoded.withUnsafeBytes { raw in
                    decoder.write(UnsafeRawBufferPointer(rebasing: raw[offset..<end])) { piece in
                        offers += 1
                        largest = max(largest, piece.count)
                        if offers % pauseEvery == 0 { return .pause }
                        if output.count + piece.count > limit { return .stop }
                        output.append(contentsOf: piece)
                        return .took
                    }
                }
                most = max(most, decoder.allocated)
            } while last == .paused
            if last != .consumed { break }
            offset = end
        }
        return (output, last, largest, most, decoder.refusedMemory, decoder.isComplete)
    }

    @Test("each coding decodes to the original, whatever the reads and pauses", arguments: [
        (ContentDecoder.Coding.gzip, "gzip -c -6"), (.deflate, "python3 -c 'import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))'"),
        (.deflate, "python3 -c 'import sys, zlib; c = zlib.compressobj(6, zlib.DEFLATED, -15); sys.stdout.buffer.write(c.compress(sys.stdin.buffer.read()) + c.flush())'"),
        (.br, "brotli -c -q 5"), (.zstd, "zstd -q -c -3"),
    ])
    func roundTrip(coding: ContentDecoder.Coding, command: String) throws {
        let encoded = try Self.encoded(Self.text, with: command)
        #expect(encoded.count < Self.text.count / 3, "\(command) made \(encoded.count) bytes")
        for (readSize, pauseEvery) in [(16 << 10, 3), (1, 2), (777, 5), (1 << 20, 1_000_000)] {
            let run = try Self.drive(coding, encoded, readSize: readSize, pauseEvery: pauseEvery)
            #expect(run.outcome == .consumed, "\(coding) reads of \(readSize): \(run.outcome)")
            // Compared first: a failed `==` of two 3 MiB collections makes the test library diff them.
            let same = run.output == Self.text
            #expect(same, "\(coding) reads of \(readSize): \(run.output.count) bytes of \(Self.text.count)")
            #expect(run.largestOffer <= ContentDecoder.outputPiece)
            #expect(run.mostAllocated <= ContentDecoder.memoryCap(coding))
        }
    }

    /// libcurl's decoders kept what the rest of a network read decoded to while the transfer
    /// was paused: 32 MiB from 1 KiB of a zstd RLE bomb, 64 MiB (then "out of memory") from 200
    /// bytes of a brotli one. Here each offer is one piece, and the decoder holds its window.
    @Test("a bomb is offered a piece at a time, and its decoder holds no more than its window", arguments: [
        (ContentDecoder.Coding.br, "brotli -c -q 5 -w 24", 17 << 20), (.zstd, "zstd -q -c -1", 2 << 20), (.gzip, "gzip -c -9", 64 << 10),
    ])
    func bombs(coding: ContentDecoder.Coding, command: String, mostHeld: Int) throws {
        let bomb = try Self.encoded(Data(count: 64 << 20), with: command)
        let run = try Self.drive(coding, bomb, readSize: 16 << 10, pauseEvery: 2, limit: 8 << 20)
        #expect(run.outcome == .stopped, "\(run.outcome)")
        #expect(run.output.count <= 8 << 20 && run.output.count > 7 << 20)
        #expect(run.largestOffer <= ContentDecoder.outputPiece)
        #expect(run.mostAllocated <= mostHeld, "\(coding) held \(run.mostAllocated) bytes")
        // What the transfer waits for before it starts decoding: the window the header declares.
        let needs = bomb.withUnsafeBytes { ContentDecoder.memoryToStart(coding, firstBytes: $0) }
        #expect(needs >= run.mostAllocated, "\(coding): \(needs) < \(run.mostAllocated)")
        #expect(needs <= ContentDecoder.memoryCap(coding))
    }

    @Test("windows past the limits are refused, not allocated", arguments: [
        (ContentDecoder.Coding.zstd, "zstd -q -c -1 --long=27", "too much memory"), (.br, "brotli -c -q 5 --large_window=26", "not valid br"),
    ])
    func largeWindows(coding: ContentDecoder.Coding, command: String, says: String) throws {
        let encoded = try Self.encoded(Self.text + Data(count: 40 << 20) + Self.text, with: command)
        let run = try Self.drive(coding, encoded, readSize: 16 << 10, pauseEvery: 1_000_000)
        let refused = run.refusedMemory
        guard case .failed(let why) = run.outcome else {
            Issue.record("\(coding): \(run.outcome), \(run.output.count) bytes")
            return
        }
        #expect(why.contains(says), "\(why)")
        #expect(run.mostAllocated <= ContentDecoder.memoryCap(coding))
        #expect(refused == (coding == .zstd), "a zstd window past 8 MiB fails as too large (script), a large-window br as invalid")
    }

    /// A body cut short where HTTP still calls it whole (its Content-Length, or a last chunk
    /// sent early by a proxy) decodes without error as far as it goes: only the stream's own end
    /// tells it from a whole one. Several zstd frames in one body are one whole body.
    @Test("a stream cut anywhere is incomplete, a whole one complete", arguments: [
        (ContentDecoder.Coding.gzip, "gzip -c -6"), (.deflate, "python3 -c 'import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))'"),
        (.br, "brotli -c -q 5"), (.zstd, "zstd -q -c -3"),
    ])
    func truncatedStreams(coding: ContentDecoder.Coding, command: String) throws {
        let encoded = try Self.encoded(Self.text, with: command)
        for readSize in [16 << 10, 777] {
            let whole = try Self.drive(coding, encoded, readSize: readSize, pauseEvery: 3)
            #expect(whole.outcome == .consumed && whole.complete, "\(coding) whole, reads of \(readSize)")
            for cut in [encoded.count / 2, encoded.count - 1] {
                let cutShort = try Self.drive(coding, encoded.prefix(cut), readSize: readSize, pauseEvery: 3)
                #expect(cutShort.outcome == .consumed, "\(coding) cut at \(cut): \(cutShort.outcome)")
                #expect(!cutShort.complete, "\(coding) cut at \(cut) of \(encoded.count) reads as complete")
            }
        }
        if coding == .zstd {
            let twoFrames = try Self.drive(coding, encoded + encoded, readSize: 16 << 10, pauseEvery: 3)
            let same = twoFrames.output == Self.text + Self.text
            #expect(same && twoFrames.complete, "two frames: \(twoFrames.output.count) bytes, complete \(twoFrames.complete)")
            let cutInSecond = try Self.drive(coding, encoded + encoded.prefix(100), readSize: 16 << 10, pauseEvery: 3)
            #expect(!cutInSecond.complete, "a second frame cut short")
        }
    }

    @Test func invalidBodiesFailSayingSo() throws {
        let garbage = Data("this is not compressed at all, whatever the header says".utf8)
        for coding in [ContentDecoder.Coding.gzip, .br, .zstd] {
            let run = try Self.drive(coding, garbage, readSize: 16 << 10, pauseEvery: 1_000_000)
            guard case .failed(let why) = run.outcome else {
                Issue.record("\(coding): \(run.outcome)")
                continue
            }
            #expect(why.contains("not valid \(coding.rawValue)"), "\(why)")
        }
    }

    @Test func brotliWindowBitsFromTheStreamHeader() throws {
        for bits in [16, 18, 22, 24] {
            let encoded = try Self.encoded(Self.text, with: "brotli -c -q 3 -w \(bits)")
            let read = encoded.withUnsafeBytes { ContentDecoder.brotliWindowBits($0) }
            // The encoder may declare a smaller window than asked when the input is small.
            #expect(read.map { $0 <= bits && $0 >= 16 } == true, "-w \(bits): \(read.map(String.init) ?? "nil")")
        }
        #expect(ContentDecoder.Coding(name: "x-gzip") == .gzip)
        #expect(ContentDecoder.Coding(name: "compress") == nil)
    }
}

/// A small deterministic generator (tests only).
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
