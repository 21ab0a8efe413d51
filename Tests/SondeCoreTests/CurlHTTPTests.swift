@testable import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

@Suite struct CurlHTTPTests {
    let client = CurlHTTPClient(threads: 8)

    @Test func phasesAddUpAndServerDelayShowsInTTFB() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#, delay: .milliseconds(200)) }
        defer { server.stop() }
        let response = try await client.perform(HTTPRequest(url: server.baseURL + "/slow"))
        #expect(response.status == 200)
        #expect(response.bodyText == #"{"ok":true}"#)
        #expect(response.headers.value(for: "content-type") == "application/json")
        let t = response.timings
        #expect(t.ttfb >= 200 && t.ttfb < 260, "ttfb \(t.ttfb)")
        #expect(abs(t.dns + t.connect + t.tls + t.ttfb + t.transfer - t.total) < 0.001)
    }

    @Test func sendsMethodHeadersAndBodyExactly() async throws {
        let server = try LoopbackHTTPServer { request in
            .respond(status: 201, body: request.body)
        }
        defer { server.stop() }
        let payload = Data((0..<300_000).map { UInt8($0 % 251) })
        let response = try await client.perform(HTTPRequest(
            method: "PUT", url: server.baseURL + "/echo", headers: [HTTPHeader("X-Test", "1")], body: payload))
        #expect(response.status == 201)
        #expect(response.body == payload)
        let seen = try #require(server.requests.first)
        #expect(seen.method == "PUT")
        #expect(seen.header("x-test") == "1")
    }

    @Test func hangingServerTimesOutOnTime() async throws {
        let server = try LoopbackHTTPServer { _ in .hang }
        defer { server.stop() }
        let start = ContinuousClock.now
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL, timeout: .milliseconds(500)))
        }
        let elapsed = ContinuousClock.now - start
        #expect(error?.kind == .timeout)
        #expect(error?.errorKind == .timeout)
        #expect(elapsed < .seconds(2))
    }

    /// Hanging servers holding every transfer slot neither stretch another request's time-out nor
    /// freeze it: it fails as a time-out when its own time-out ends, saying it never started; and
    /// a push (a request that reuses its connection) waits ahead of the probes' requests.
    @Test func aRequestWaitingForASlotTimesOutOnItsOwnTime() async throws {
        let hanging = try LoopbackHTTPServer { _ in .hang }
        defer { hanging.stop() }
        let fast = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { fast.stop() }
        let narrow = CurlHTTPClient(threads: 2)
        let holders = (0..<2).map { _ in
            Task { try? await narrow.perform(HTTPRequest(url: hanging.baseURL, timeout: .seconds(3))) }
        }
        try await waitUntil("both slots held", timeout: .seconds(5)) { hanging.requests.count == 2 }
        let start = ContinuousClock.now
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await narrow.perform(HTTPRequest(url: fast.baseURL, timeout: .milliseconds(500)))
        }
        let elapsed = ContinuousClock.now - start
        #expect(error?.kind == .timeout)
        #expect(error?.message.contains("before it could start") == true, "\(error?.message ?? "")")
        #expect(elapsed < .milliseconds(1500), "\(elapsed)")
        #expect(fast.requests.isEmpty, "nothing was sent")

        // One slot, held by a hanging server; queued behind it a probe's request, then a push.
        // When the slot frees, the push goes first.
        for holder in holders { _ = await holder.value }
        let single = CurlHTTPClient(threads: 1)
        let holder = Task { try? await single.perform(HTTPRequest(url: hanging.baseURL, timeout: .milliseconds(1500))) }
        try await waitUntil("the slot held", timeout: .seconds(5)) { hanging.requests.count == 3 }
        let probe = Task { _ = try? await single.perform(HTTPRequest(url: fast.baseURL + "/probe", timeout: .seconds(10))) }
        try await waitUntil("the probe's request waiting for the slot", timeout: .seconds(5)) { single.waitingTransfers == 1 }
        var push = HTTPRequest(url: fast.baseURL + "/push", timeout: .seconds(10))
        push.reuseConnection = true
        let pushed = Task { [push] in _ = try? await single.perform(push) }
        _ = await (holder.value, probe.value, pushed.value)
        #expect(fast.requests.map(\.path) == ["/push", "/probe"], "\(fast.requests.map(\.path))")
    }

    /// One origin holds at most a quarter of the slots (4 of 16 here): requests to a server that
    /// never answers, ten times its share, leave the other slots to a healthy server, whose
    /// requests queued after them complete; those waiting for the hanging server's share, a
    /// redirect hop to it included, fail as time-outs at their own time, saying why.
    @Test func oneOriginHoldsAtMostAQuarterOfTheSlots() async throws {
        let hanging = try LoopbackHTTPServer { _ in .hang }
        defer { hanging.stop() }
        let healthy = try LoopbackHTTPServer { request in
            request.path == "/away" ? .respond(status: 302, headers: [("Location", hanging.baseURL + "/hop")]) : .json(200, #"{"ok":true}"#)
        }
        defer { healthy.stop() }
        let client = CurlHTTPClient(threads: 16)
        func send(_ request: HTTPRequest) -> Task<Result<HTTPResponse, HTTPTransferError>, Never> {
            Task {
                do throws(HTTPTransferError) { return .success(try await client.perform(request)) } catch { return .failure(error) }
            }
        }
        let holders = (0..<4).map { send(HTTPRequest(url: hanging.baseURL + "/hold\($0)", timeout: .seconds(30))) }
        try await waitUntil("the hanging server's share held", timeout: .seconds(5)) { hanging.requests.count == 4 }
        let queued = (0..<36).map { send(HTTPRequest(url: hanging.baseURL + "/wait\($0)", timeout: .seconds(3))) }
        try await waitUntil("40 requests at the hanging server or waiting", timeout: .seconds(5)) { hanging.requests.count + client.waitingTransfers == 40 }
        let hops = (0..<4).map { _ in send(HTTPRequest(url: healthy.baseURL + "/away", timeout: .seconds(3), followRedirects: true)) }
        let probes = (0..<24).map { send(HTTPRequest(url: healthy.baseURL + "/probe\($0)", timeout: .seconds(2))) }

        for probe in probes {
            switch await probe.value {
            case .success(let response): #expect(response.status == 200)
            case .failure(let error): Issue.record("a healthy server's request failed: \(error.kind) \(error.message)")
            }
        }
        for task in queued + hops {
            guard case .failure(let error) = await task.value else {
                Issue.record("a request to the hanging server got an answer")
                continue
            }
            #expect(error.kind == .timeout)
            #expect(error.message.contains("before it could start: 4 transfers to \(hanging.baseURL) were under way already, the most one server gets of the agent's 16"), "\(error.message)")
        }
        #expect(healthy.requests.count { $0.path == "/away" } == 4, "each redirect's first hop was answered")
        #expect(hanging.requests.count == 4, "the hanging server never got more than its share: \(hanging.requests.map(\.path))")
        for holder in holders { holder.cancel() }
        for holder in holders { _ = await holder.value }
    }

    /// A redirect hop may not go further inside the network than its chain started (a public
    /// site's `302` to the cloud metadata address, or to the agent's own loopback services):
    /// curl connects, and the hop is refused before anything is sent, saying why.
    @Test func aHopFurtherInsideTheNetworkIsRefusedBeforeAnythingIsSent() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { server.stop() }
        var inward = HTTPRequest(url: server.baseURL + "/secret", timeout: .seconds(5))
        inward.innermostAddress = .privateAddress  // as if the chain began on a private address
        let error = await #expect(throws: HTTPTransferError.self) { _ = try await client.perform(inward) }
        #expect(error?.kind == .invalidRequest)
        #expect(error?.message.contains("reached 127.0.0.1, a loopback address, and was not followed") == true, "\(error?.message ?? "")")
        #expect(server.requests.isEmpty, "nothing was sent")
        var level = inward
        level.innermostAddress = .loopback
        #expect(try await client.perform(level).status == 200)
    }

    @Test("address kinds", arguments: [
        ("8.8.8.8", AddressKind.publicAddress), ("192.0.2.2", .publicAddress), ("10.1.2.3", .privateAddress), ("172.20.0.1", .privateAddress),
        ("172.32.0.1", .publicAddress), ("192.168.1.1", .privateAddress), ("100.64.0.1", .privateAddress), ("127.0.0.1", .loopback),
        ("0.0.0.0", .loopback), ("169.254.169.254", .linkLocal), ("::1", .loopback), ("::", .loopback), ("fe80::1", .linkLocal),
        ("fd00:ec2::254", .linkLocal), ("fd00::2", .privateAddress), ("2001:db8::1", .publicAddress), ("::ffff:169.254.169.254", .linkLocal),
        ("::ffff:10.0.0.1", .privateAddress), ("::169.254.169.254", .linkLocal), ("64:ff9b::a9fe:a9fe", .linkLocal),
        ("64:ff9b::7f00:1", .loopback), ("64:ff9b::808:808", .publicAddress), ("64:ff9b:1::a00:1", .privateAddress), ("64:ff9b:1::808:808", .privateAddress), ("64:ff9b:1::a9fe:a9fe", .linkLocal),
        ("2002:a9fe:a9fe::1", .linkLocal), ("2002:c000:0201::1", .publicAddress),
    ])
    func addressKinds(address: String, kind: AddressKind) {
        #expect(AddressKind.of(address) == kind)
    }

    /// A run's jar is read back after each response up to `mostCookies`: a server adding 50 a
    /// response cannot make every later response copy thousands on the transfer thread.
    @Test func aJarReadsBackAtMostItsLimit() async throws {
        let server = try LoopbackHTTPServer { request in
            let n = request.path.split(separator: "/").last.map(String.init) ?? "0"
            return .respond(status: 200, headers: (0..<50).map { ("Set-Cookie", "c\(n)x\($0)=v\($0); Path=/") }, body: Data())
        }
        defer { server.stop() }
        let jar = try #require(CurlCookieJar())
        var last: HTTPResponse?
        for n in 0..<12 {
            var request = HTTPRequest(url: server.baseURL + "/\(n)")
            request.cookieJar = jar
            last = try await client.perform(request)
            if n == 9 { #expect(last?.cookies.count == 500 && last?.cookiesTruncated == false) }
        }
        #expect(last?.cookies.count == 512 && last?.cookiesTruncated == true, "\(last?.cookies.count ?? -1)")
    }

    @Test func droppedConnectionAndRefusedPortAreConnectionErrors() async throws {
        let server = try LoopbackHTTPServer { _ in .drop }
        defer { server.stop() }
        let dropped = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL))
        }
        #expect(dropped?.kind == .connectionLost)
        let port = server.port
        server.stop()
        let refused = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: "http://127.0.0.1:\(port)/"))
        }
        #expect(refused?.kind == .connect)
    }

    @Test func oversizedResponseIsRefused() async throws {
        let server = try LoopbackHTTPServer { _ in .respond(status: 200, body: Data(count: 100_000)) }
        defer { server.stop() }
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL, maxResponseBytes: 10_000))
        }
        #expect(error?.kind == .responseTooLarge)
    }

    /// A zstd frame of `blocks` RLE blocks of 128 KiB of zeros each: 4 bytes a block, so 1 KiB of
    /// it decodes to 32 MiB (made by hand: no zstd encoder here).
    static func zstdBomb(blocks: Int) -> Data {
        var frame: [UInt8] = [0x28, 0xB5, 0x2F, 0xFD, 0x00, 0x38]  // magic; no size, no checksum; window 128 KiB
        for block in 0..<blocks {
            let header = (131_072 << 3) | (1 << 1) | (block == blocks - 1 ? 1 : 0)  // size, RLE, last
            frame += [UInt8(header & 0xFF), UInt8((header >> 8) & 0xFF), UInt8(header >> 16), 0x00]
        }
        return Data(frame)
    }

    /// While a transfer is paused, libcurl keeps what the rest of its read decodes to. A server
    /// may not choose a coding the request did not accept, nor nest codings (their ratios
    /// multiply): either is refused at its headers, before anything is decoded.
    @Test func codingsTheRequestDidNotAcceptOrNestedAreRefusedAtTheHeaders() async throws {
        let bomb = Self.zstdBomb(blocks: 2048)  // 8 KiB, 256 MiB of zeros
        let server = try LoopbackHTTPServer { request in
            .respond(status: 200, headers: [("Content-Encoding", request.path == "/nested" ? "gzip, gzip" : "zstd")], body: bomb)
        }
        defer { server.stop() }
        let own = CurlHTTPClient(threads: 4)
        for (path, accepts, says) in [
            ("/zstd", "gzip", "Content-Encoding is zstd, and the request did not accept zstd (Accept-Encoding: gzip)"),
            ("/nested", "gzip", "Content-Encoding nests 2 codings (gzip, gzip)"),
            ("/nested", "*", "Content-Encoding nests 2 codings (gzip, gzip)"),
        ] {
            let error = await #expect(throws: HTTPTransferError.self) {
                _ = try await own.perform(HTTPRequest(url: server.baseURL + path, headers: [HTTPHeader("Accept-Encoding", accepts)], maxResponseBytes: 10 << 20))
            }
            #expect(error?.kind == .decodedTooLarge, "\(path) \(accepts)")
            #expect(error?.message.contains(says) == true, "\(error?.message ?? "")")
        }
        #expect(own.bodyMemory.peak <= 64 << 10, "nothing decoded: \(own.bodyMemory.peak)")
        // Accepted, zstd is decoded (and capped by max_body as any body is).
        let capped = await #expect(throws: HTTPTransferError.self) {
            _ = try await own.perform(HTTPRequest(url: server.baseURL + "/zstd", headers: [HTTPHeader("Accept-Encoding", "gzip, zstd")], maxResponseBytes: 1 << 20))
        }
        #expect(capped?.kind == .responseTooLarge, "\(capped?.message ?? "")")
        // Without Accept-Encoding curl decodes nothing, whatever the server says.
        let raw = try await own.perform(HTTPRequest(url: server.baseURL + "/zstd", maxResponseBytes: 1 << 20))
        #expect(raw.body == bomb)
    }

    /// Each coding a request accepts comes back decoded (by `ContentDecoder`, not libcurl), and
    /// the decoders' memory is counted while their transfers last and let go after.
    @Test func acceptedCodingsAreDecoded() async throws {
        let text = ContentDecoderTests.text
        var bodies: [String: Data] = [:]
        for (coding, command) in [("gzip", "gzip -c"), ("br", "brotli -c -q 4"), ("zstd", "zstd -q -c"), ("deflate", "python3 -c 'import sys, zlib; sys.stdout.buffer.write(zlib.compress(sys.stdin.buffer.read()))'")] {
            bodies[coding] = try ContentDecoderTests.encoded(text, with: command)
        }
        let encoded = bodies
        let server = try LoopbackHTTPServer { request in
            let coding = String(request.path.dropFirst())
            return .respond(status: 200, headers: [("Content-Encoding", coding)], body: encoded[coding] ?? Data())
        }
        defer { server.stop() }
        let own = CurlHTTPClient(threads: 4)
        // The response goes when this returns: its body's count with it.
        func decoded(_ coding: String) async throws -> (same: Bool, count: Int) {
            let response = try await own.perform(HTTPRequest(url: server.baseURL + "/" + coding, headers: [HTTPHeader("Accept-Encoding", "gzip, deflate, br, zstd")]))
            return (response.body == text, response.bodyByteCount)
        }
        for coding in bodies.keys.sorted() {
            let (same, count) = try await decoded(coding)
            #expect(same && count == text.count, "\(coding): \(count) bytes")
        }
        try await waitUntil("the bodies and decoders to be let go", timeout: .seconds(5)) { own.bodyMemory.held == 0 }
        // A coding the request accepted but the agent does not decode fails, saying so.
        let unknown = try LoopbackHTTPServer { _ in .respond(status: 200, headers: [("Content-Encoding", "compress")], body: Data("x".utf8)) }
        defer { unknown.stop() }
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await own.perform(HTTPRequest(url: unknown.baseURL, headers: [HTTPHeader("Accept-Encoding", "*")]))
        }
        #expect(error?.message.contains("compress, which the agent does not decode") == true, "\(error?.message ?? "")")
    }

    /// A gzip body cut short under a Content-Length that matches what was sent: HTTP calls it
    /// whole, the coding does not, and the run fails saying so (a status-only check would have
    /// passed on half a body).
    @Test func anEncodedBodyCutShortFails() async throws {
        let encoded = try ContentDecoderTests.encoded(ContentDecoderTests.text, with: "gzip -c")
        let server = try LoopbackHTTPServer { request in
            .respond(status: 200, headers: [("Content-Encoding", "gzip")], body: request.path == "/cut" ? encoded.prefix(encoded.count / 2) : encoded)
        }
        defer { server.stop() }
        let own = CurlHTTPClient(threads: 2)
        // The response (and the body memory it holds) goes when this returns.
        func wholeCount() async throws -> Int {
            try await own.perform(HTTPRequest(url: server.baseURL + "/whole", headers: [HTTPHeader("Accept-Encoding", "gzip")])).bodyByteCount
        }
        #expect(try await wholeCount() == ContentDecoderTests.text.count)
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await own.perform(HTTPRequest(url: server.baseURL + "/cut", headers: [HTTPHeader("Accept-Encoding", "gzip")]))
        }
        #expect(error?.kind == .connectionLost)
        #expect(error?.message.contains("gzip stream ends early") == true, "\(error?.message ?? "")")
        try await waitUntil("the body and decoder to be let go", timeout: .seconds(5)) { own.bodyMemory.held == 0 }
    }

    /// Bombs in codings the step accepted: libcurl's decoder kept what a paused transfer's read
    /// decoded to outside every budget (a 203-byte brotli bomb: 64 MiB each, then "out of
    /// memory"; 48 probes on a zstd bomb peaked at 436 MiB). Now each transfer holds a piece, its
    /// decoder's window is counted in the body memory, and a decoder starts only when the budget
    /// has room for the window its stream declares.
    @Test(arguments: [("br", "brotli -c -q 5 -w 24"), ("zstd", "zstd -q -c -1")])
    func bombsInAcceptedCodingsStayInTheBodyBudget(coding: String, command: String) async throws {
        let bomb = try ContentDecoderTests.encoded(Data(count: 256 << 20), with: command)
        let server = try LoopbackHTTPServer { _ in .respond(status: 200, headers: [("Content-Encoding", coding)], body: bomb) }
        defer { server.stop() }
        let own = CurlHTTPClient(threads: 4)
        own.bodyMemory.limit = 48 << 20
        let count = 12
        let outcomes = await withTaskGroup(of: String.self) { group in
            for _ in 0..<count {
                group.addTask {
                    do {
                        let request = HTTPRequest(
                            url: server.baseURL, headers: [HTTPHeader("Accept-Encoding", coding)], timeout: .seconds(30),
                            maxResponseBytes: 32 << 20, keepBody: false)
                        _ = try await own.perform(request)
                        return "ok"
                    } catch let error as HTTPTransferError {
                        return error.kind.rawValue
                    } catch {
                        return "\(error)"
                    }
                }
            }
            return await group.reduce(into: [String]()) { $0.append($1) }
        }
        #expect(outcomes == Array(repeating: HTTPTransferError.Kind.responseTooLarge.rawValue, count: count), "\(outcomes)")
        // Decoders count as reading on the budget: none is let past it while they read (their
        // windows held no body, and the loop let waiting transfers past as if nobody were reading).
        let bound = own.bodyMemory.limit + count * BodyMemory.ownBytes
        #expect(own.bodyMemory.peak <= bound, "peak \(own.bodyMemory.peak >> 20) MiB, bound \(bound >> 20) MiB")
        #expect(own.bodyMemory.peak >= (coding == "br" ? 16 << 20 : 256 << 10), "decoders counted: peak \(own.bodyMemory.peak)")
        #expect(own.bodyMemory.held == 0)
    }

    @Test func contentCodingsAcceptedAndRefused() {
        #expect(ContentCodings.accepted("gzip, deflate;q=0.5 , BR") == ["identity", "gzip", "deflate", "br"])
        #expect(ContentCodings.listed(" gzip ,, identity") == ["gzip", "identity"])
        #expect(ContentCodings.applied("identity, gzip ,IDENTITY") == ["gzip"])
        let gzipOnly = ContentCodings.accepted("gzip")
        #expect(ContentCodings.refusal(["gzip"], accepted: gzipOnly) == nil)
        #expect(ContentCodings.refusal(["identity"], accepted: gzipOnly) == nil)
        #expect(ContentCodings.refusal(["gzip", "identity"], accepted: gzipOnly) == nil)
        #expect(ContentCodings.refusal(["br"], accepted: gzipOnly)?.contains("did not accept br") == true)
        #expect(ContentCodings.refusal(["gzip", "gzip"], accepted: gzipOnly)?.contains("nests 2 codings") == true)
        #expect(ContentCodings.refusal(["zstd"], accepted: ContentCodings.accepted("*")) == nil)
    }

    /// `bodyMemory` counts a kept body's reserved bytes while its transfer reads them and, once
    /// it ended, while the caller holds the response; it lets them go with the last copy. A
    /// body nothing keeps costs its prefix only.
    @Test func bodyBytesHeldAreCountedWhileTransfersReadAndCallersHold() async throws {
        let payload = Data(repeating: 7, count: 3 << 20)
        let server = try LoopbackHTTPServer { _ in .respond(status: 200, body: payload) }
        defer { server.stop() }
        let own = CurlHTTPClient(threads: 4)
        var kept: HTTPResponse? = try await own.perform(HTTPRequest(url: server.baseURL, maxResponseBytes: 10 << 20))
        let same = kept?.body == payload
        #expect(same)
        #expect(own.bodyMemory.peak >= payload.count && own.bodyMemory.peak <= 4 << 20, "\(own.bodyMemory.peak)")
        #expect(own.bodyMemory.held >= payload.count && own.bodyMemory.handedOver == own.bodyMemory.held, "\(own.bodyMemory.held)")
        var copy = kept
        kept = nil
        let heldByCopy = own.bodyMemory.held
        #expect(heldByCopy >= payload.count, "a copy of the response still holds the body")
        copy = nil
        _ = copy
        // The loop thread lets its own copy go just after it answered (microseconds later).
        try await waitUntil("the body let go", timeout: .seconds(5)) { own.bodyMemory.held == 0 }
        #expect(own.bodyMemory.handedOver == 0)
        let streamed = CurlHTTPClient(threads: 4)
        _ = try await streamed.perform(HTTPRequest(url: server.baseURL, keepBody: false, bodyPrefixBytes: 4096))
        #expect(streamed.bodyMemory.peak <= 16 << 10, "\(streamed.bodyMemory.peak)")
        try await waitUntil("the prefix let go", timeout: .seconds(5)) { streamed.bodyMemory.held == 0 }
    }

    /// Bodies whose transfers ended still hold budget while their callers keep them (a check
    /// waiting its turn for check memory): past half the budget, a transfer that wants more
    /// waits for them to be let go instead of going on past the budget, and goes on as soon as
    /// one is. Before, 150 probes whose JSON checks waited for check memory held 1088 MiB.
    @Test func bodiesHandedOverHoldTheBudgetUntilTheirCallersLetThemGo() async throws {
        let large = Data(repeating: 3, count: 3 << 20)
        let server = try LoopbackHTTPServer { _ in .respond(status: 200, body: large) }
        defer { server.stop() }
        let own = CurlHTTPClient(threads: 4)
        own.bodyMemory.limit = 4 << 20
        // Alone, the first goes past the budget (nothing else would make room); its caller keeps it.
        var first: HTTPResponse? = try await own.perform(HTTPRequest(url: server.baseURL, timeout: .seconds(20), maxResponseBytes: 10 << 20))
        #expect(own.bodyMemory.handedOver >= large.count)
        // The next waits for it: no transfer reads, but the body handed over holds the budget.
        let second = Task { try await own.perform(HTTPRequest(url: server.baseURL, timeout: .seconds(20), maxResponseBytes: 10 << 20)) }
        try await waitUntil("the second transfer to wait for body memory", timeout: .seconds(10)) { own.bodyMemory.waitingTransfers == 1 }
        #expect(own.bodyMemory.held <= 2 * large.count, "the first body's capacity and the second's first bytes: \(own.bodyMemory.held)")
        // Let go off the loop thread (here, a test task): the loop is woken and the second goes on.
        first = nil
        _ = first
        let started = ContinuousClock.now
        #expect(try await second.value.body == large)
        #expect(ContinuousClock.now - started < .seconds(5))
    }

    /// Over the body memory budget (4 MiB here), a transfer waits while another that holds
    /// budget reads (it lets it go when it ends), and times out saying so; one that nobody
    /// reading would ever make room for (every holder waits) goes on past the budget rather
    /// than waiting out its time-out.
    @Test func overTheBodyBudgetTransfersWaitForReadersAndNeverForEachOther() async throws {
        final class Gate: Sendable { let open = Atomic(false) }
        let gate = Gate()
        let large = Data(repeating: 1, count: 8 << 20)
        let holding = try LoopbackHTTPServer { _ in
            .respondHolding(status: 200, body: large, held: 1) { while !gate.open.load(ordering: .relaxed) { usleep(5_000) } }
        }
        defer { holding.stop() }
        let medium = Data(repeating: 2, count: 2 << 20)
        let plain = try LoopbackHTTPServer { _ in .respond(status: 200, body: medium) }
        defer { plain.stop() }
        let own = CurlHTTPClient(threads: 4)
        own.bodyMemory.limit = 4 << 20

        // Alone, it passes the budget: nothing else would ever make room for it.
        var first: Task<HTTPResponse, any Error>? = Task { try await own.perform(HTTPRequest(url: holding.baseURL, timeout: .seconds(20), maxResponseBytes: 10 << 20)) }
        try await waitUntil("the 8 MiB body held but for its last byte", timeout: .seconds(10)) { own.bodyMemory.held >= 8 << 20 }
        // While it reads, another waits for it, and its time-out says why.
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await own.perform(HTTPRequest(url: plain.baseURL, timeout: .seconds(1), maxResponseBytes: 10 << 20))
        }
        #expect(error?.kind == .timeout)
        #expect(error?.message.contains("ms of it paused for memory for the body: the agent's transfers held their budget for response bodies (limits.body_memory, 4 MiB)") == true, "\(error?.message ?? "")")
        gate.open.store(true, ordering: .relaxed)
        let firstBody = try await first?.value.body
        #expect(firstBody == large)
        // Its task keeps the response, and so its budget, until the task is let go.
        #expect(own.bodyMemory.held == own.bodyMemory.handedOver && own.bodyMemory.held >= large.count)
        first = nil
        _ = first
        try await waitUntil("the first body let go", timeout: .seconds(5)) { own.bodyMemory.held == 0 }
        #expect(try await own.perform(HTTPRequest(url: plain.baseURL, timeout: .seconds(5), maxResponseBytes: 10 << 20)).body == medium)
    }

    @Test func cancellingTheTaskAbortsTheTransfer() async throws {
        let server = try LoopbackHTTPServer { _ in .hang }
        defer { server.stop() }
        let task = Task { try await client.perform(HTTPRequest(url: server.baseURL, timeout: .seconds(30))) }
        try await waitUntil("the request to arrive") { !server.requests.isEmpty }
        let start = ContinuousClock.now
        task.cancel()
        let result = await task.result
        #expect(ContinuousClock.now - start < .seconds(3))
        guard case .failure(let error as HTTPTransferError) = result else {
            Issue.record("expected a cancelled transfer, got \(result)")
            return
        }
        #expect(error.kind == .cancelled)
    }

    // MARK: - Protocols, redirects, bodies (issue 11)

    @Test("only http and https: file:// and gopher:// are refused before anything is read or sent", arguments: [
            "file:///etc/passwd", "FILE:///etc/passwd", "ftp://127.0.0.1/", "dict://127.0.0.1/", "127.0.0.1/no-scheme",
            "httpx://127.0.0.1/", "http:/127.0.0.1/", "https:127.0.0.1/", "htt://127.0.0.1/", "httpss://127.0.0.1/", "http\u{0}://127.0.0.1/",
        ])
    func otherSchemesAreRefused(url: String) async throws {
        let error = await #expect(throws: HTTPTransferError.self) { _ = try await client.perform(HTTPRequest(url: url)) }
        #expect(error?.kind == .invalidRequest)
        #expect(error?.message.contains("only http:// and https://") == true, "\(error?.message ?? "")")
    }

    @Test("gopher:// to a local TCP service delivers nothing to it")
    func gopherDeliversNothing() async throws {
        let listener = try RawTCPListener()
        defer { listener.stop() }
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: "gopher://127.0.0.1:\(listener.port)/_SET%20pwned%201"))
        }
        #expect(error?.kind == .invalidRequest)
        try await Task.sleep(for: .milliseconds(200))
        #expect(listener.connections == 0)
        #expect(listener.received.isEmpty)
    }

    @Test("a redirect to ftp:// is not followed, and says so")
    func redirectToFTPIsNotFollowed() async throws {
        let listener = try RawTCPListener()
        defer { listener.stop() }
        let server = try LoopbackHTTPServer { _ in .respond(status: 302, headers: [("Location", "ftp://127.0.0.1:\(listener.port)/x")]) }
        defer { server.stop() }
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL + "/go", followRedirects: true))
        }
        #expect(error?.kind == .invalidRequest)
        #expect(error?.message.contains("redirect to ftp:// was not followed") == true, "\(error?.message ?? "")")
        #expect(listener.connections == 0)
    }

    @Test("custom headers stay on their origin across a redirect unless the request opts in")
    func customHeadersStayOnTheirOrigin() async throws {
        let other = try LoopbackHTTPServer { _ in .json(200, "{}") }
        defer { other.stop() }
        // 127.0.0.1 and localhost are two hosts to curl (and to the same-origin rule).
        let first = try LoopbackHTTPServer { request in
            switch request.path {
            case "/same": .respond(status: 307, headers: [("Location", "/landing")])
            case "/away": .respond(status: 302, headers: [("Location", "http://localhost:\(other.port)/landing")])
            default: .json(200, "{}")
            }
        }
        defer { first.stop() }
        let headers = [HTTPHeader("X-Api-Key", "k-123"), HTTPHeader("Authorization", "Bearer t-456"), HTTPHeader("Accept", "application/json")]

        let same = try await client.perform(HTTPRequest(url: first.baseURL + "/same", headers: headers, followRedirects: true))
        #expect(same.status == 200)
        #expect(same.redirects == 1)
        let landed = try #require(first.requests.last)
        #expect(landed.path == "/landing")
        #expect(landed.header("x-api-key") == "k-123")

        let away = try await client.perform(HTTPRequest(url: first.baseURL + "/away", headers: headers, followRedirects: true))
        #expect(away.status == 200)
        let stripped = try #require(other.requests.last)
        #expect(stripped.header("x-api-key") == nil)
        #expect(stripped.header("authorization") == nil)
        #expect(stripped.header("accept") == "application/json")

        _ = try await client.perform(HTTPRequest(url: first.baseURL + "/away", headers: headers, followRedirects: true, redirectHeaders: .all))
        #expect(other.requests.last?.header("x-api-key") == "k-123")
    }

    @Test("303 turns a POST into a GET without its body; 307 repeats both")
    func redirectMethods() async throws {
        let server = try LoopbackHTTPServer { request in
            switch request.path {
            case "/303": .respond(status: 303, headers: [("Location", "/end")])
            case "/307": .respond(status: 307, headers: [("Location", "/end")])
            default: .respond(status: 200, body: Data("\(request.method) \(request.body.count)".utf8))
            }
        }
        defer { server.stop() }
        let body = Data("payload".utf8)
        let r303 = try await client.perform(HTTPRequest(method: "POST", url: server.baseURL + "/303", body: body, followRedirects: true))
        #expect(r303.bodyText == "GET 0")
        let r307 = try await client.perform(HTTPRequest(method: "POST", url: server.baseURL + "/307", body: body, followRedirects: true))
        #expect(r307.bodyText == "POST 7")
        let loop = try LoopbackHTTPServer { _ in .respond(status: 302, headers: [("Location", "/again")]) }
        defer { loop.stop() }
        let error = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: loop.baseURL, followRedirects: true, maxRedirects: 3))
        }
        #expect(error?.message.contains("more than 3 redirects") == true)
        #expect(loop.requests.count == 4)
    }

    @Test("a body not kept streams through: its size and SHA-256 are known, only its first bytes stay")
    func discardedBodyIsHashedNotKept() async throws {
        let payload = Data((0..<3_000_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        let server = try LoopbackHTTPServer { _ in .respond(status: 200, body: payload) }
        defer { server.stop() }
        let response = try await client.perform(HTTPRequest(url: server.baseURL, maxResponseBytes: .max, keepBody: false, bodyPrefixBytes: 1000, hashBody: true))
        #expect(response.body == payload.prefix(1000))
        #expect(response.bodyByteCount == payload.count)
        #expect(response.bodySHA256 == SHA256Digest.hash(payload))
        let capped = await #expect(throws: HTTPTransferError.self) {
            _ = try await client.perform(HTTPRequest(url: server.baseURL, maxResponseBytes: 1 << 20, keepBody: false))
        }
        #expect(capped?.kind == .responseTooLarge)
    }
}

/// A plain TCP listener on 127.0.0.1 that counts connections and keeps what it receives: the
/// "internal service" a gopher:// or ftp:// URL would reach.
final class RawTCPListener: Sendable {
    let port: Int
    private let fd: Int32
    private let state = Mutex<(connections: Int, received: Data, stopped: Bool)>((0, Data(), false))

    var connections: Int { state.withLock { $0.connections } }
    var received: Data { state.withLock { $0.received } }

    init() throws {
        let (fd, port) = try listenOnLoopback(backlog: 16)
        self.fd = fd
        self.port = port
        Thread { [self] in
            while true {
                let client = accept(fd, nil, nil)
                if client < 0 { return }
                state.withLock { $0.connections += 1 }
                var buffer = [UInt8](repeating: 0, count: 4096)
                var timeout = timeval(tv_sec: 0, tv_usec: 300_000)
                setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
                let n = recv(client, &buffer, buffer.count, 0)
                if n > 0 { state.withLock { $0.received.append(contentsOf: buffer[0..<n]) } }
                close(client)
            }
        }.start()
    }

    func stop() {
        shutdown(fd, Int32(SHUT_RDWR))
        close(fd)
    }
}
