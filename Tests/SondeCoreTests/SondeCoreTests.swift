import Foundation
import SondeCore
import SondeTestSupport
import Testing

@Suite struct RFC3339Tests {
    @Test func roundTripsWithMilliseconds() throws {
        let date = Date(timeIntervalSince1970: 1_795_000_000.123)
        let text = RFC3339.string(from: date)
        #expect(text == "2026-11-18T11:06:40.123Z")
        let back = try #require(RFC3339.date(from: text))
        #expect(abs(back.timeIntervalSince(date)) < 0.0005)
    }

    @Test("the calendar arithmetic agrees with gmtime_r from 1900 to 2400, negative times and leap days included")
    func agreesWithGmtime() throws {
        var random = SplitMix64(seed: 7)
        var instants: [Double] = [0, -0.0004, -0.0006, -1, -86_400, 951_782_400, 951_868_799.9996, 4_107_542_400, -2_208_988_800]
        for _ in 0..<5000 { instants.append(Double(Int64(random.next() % 15_778_800_000) - 2_208_988_800) + Double(random.next() % 1000) / 1000) }
        for seconds in instants {
            let millisTotal = Int64((seconds * 1000).rounded())
            var millis = millisTotal % 1000
            if millis < 0 { millis += 1000 }
            var t = time_t((millisTotal - millis) / 1000)
            var parts = tm()
            gmtime_r(&t, &parts)
            let expected = String(
                format: "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", Int(parts.tm_year) + 1900, Int(parts.tm_mon) + 1, Int(parts.tm_mday),
                Int(parts.tm_hour), Int(parts.tm_min), Int(parts.tm_sec), Int(millis))
            #expect(RFC3339.string(from: Date(timeIntervalSince1970: seconds)) == expected, "\(seconds)")
        }
    }

    @Test func acceptsOffsetsAndRejectsGarbage() throws {
        let withOffset = try #require(RFC3339.date(from: "2026-11-18T13:06:40+02:00"))
        #expect(withOffset.timeIntervalSince1970 == 1_795_000_000)
        for bad in ["", "2026-11-18", "2026-13-18T09:46:40Z", "2026-11-18T09:46:40", "2026-11-18T09:46:40.Z", "x026-11-18T09:46:40Z"] {
            #expect(RFC3339.date(from: bad) == nil, "\(bad) should not parse")
        }
    }
}

@Suite struct ByteSearchTests {
    @Test("Data.contains(bytes:from:) agrees with a naive search on random haystacks, needles and offsets")
    func agreesWithNaiveSearch() {
        var random = SplitMix64(seed: 42)
        func naive(_ haystack: [UInt8], _ needle: [UInt8], _ from: Int) -> Bool {
            guard !needle.isEmpty else { return true }
            var start = max(0, from)
            while start + needle.count <= haystack.count {
                if Array(haystack[start..<(start + needle.count)]) == needle { return true }
                start += 1
            }
            return false
        }
        for _ in 0..<2000 {
            // A small alphabet so that partial matches (first byte right, rest wrong) are common.
            let haystack = (0..<Int(random.next() % 40)).map { _ in UInt8(97 + random.next() % 3) }
            let needle = (0..<Int(random.next() % 5)).map { _ in UInt8(97 + random.next() % 3) }
            let from = Int(random.next() % 45) - 2
            #expect(Data(haystack).contains(bytes: needle, from: from) == naive(haystack, needle, from), "\(haystack) \(needle) \(from)")
        }
        #expect(Data("{\"fast_flush_for_s\":10}".utf8).contains(bytes: "fast_flush_for_s".utf8))
        #expect(!Data().contains(bytes: [1]))
        #expect(Data([1, 2, 3]).dropFirst().contains(bytes: [2, 3]), "a slice searches from its own start")
    }
}

@Suite struct ProbeResultCodingTests {
    @Test func encodesSpecFieldNames() throws {
        let result = ProbeResult(
            id: "r1", probe: "login", component: "login", agent: "eu-1", region: "eu",
            startedAt: Date(timeIntervalSince1970: 0), durationMs: 12.5, outcome: .failed,
            error: ProbeError(kind: .httpStatus, step: "post login", message: "status 401", code: "login_rejected"),
            steps: [StepResult(name: "post login", method: "POST", url: "http://x/login", status: 401, ok: false, timings: PhaseTimings(total: 12.5))])
        let json = try #require(try JSONSerialization.jsonObject(with: SondeJSON.encode(result)) as? [String: Any])
        #expect(json["started_at"] as? String == "1970-01-01T00:00:00.000Z")
        #expect(json["duration_ms"] as? Double == 12.5)
        #expect(json["outcome"] as? String == "failed")
        let error = try #require(json["error"] as? [String: Any])
        #expect(error["kind"] as? String == "http_status")
        let decoded = try SondeJSON.decode(ProbeResult.self, from: SondeJSON.encode(result))
        #expect(decoded == result)
    }
}

@Suite struct AgentKeyTests {
    private static func bytes(_ hex: String) -> Data {
        var out = Data()
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            out.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return out
    }

    @Test("Ed25519 over OpenSSL gives RFC 8032's test vectors (1 and 3)", arguments: [
        ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
         "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
         "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"),
        ("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
         "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025", "af82",
         "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a"),
    ])
    func rfc8032Vectors(secret: String, publicKey: String, message: String, signature: String) throws {
        let key = try AgentSigningKey(rawRepresentation: Self.bytes(secret))
        #expect(key.publicKey.rawRepresentation == Self.bytes(publicKey))
        #expect(try key.signature(for: Self.bytes(message)) == Self.bytes(signature))
        #expect(key.publicKey.isValidSignature(Self.bytes(signature), for: Self.bytes(message)))
        var tampered = Self.bytes(signature)
        tampered[5] ^= 1
        #expect(!key.publicKey.isValidSignature(tampered, for: Self.bytes(message)))
    }

    @Test("one key signs and verifies from several threads at once, over and over: its copied contexts never share state")
    func keysAreUsableConcurrently() async throws {
        let key = try AgentSigningKey(rawRepresentation: Self.bytes("c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7"))
        let expected = Self.bytes(
            "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a")
        let outcomes = await withTaskGroup(of: Bool.self) { group in
            for task in 0..<8 {
                group.addTask {
                    var right = true
                    for round in 0..<50 {
                        let message = Data("task \(task) round \(round)".utf8)
                        guard let signature = try? key.signature(for: message) else { return false }
                        right = right && key.publicKey.isValidSignature(signature, for: message)
                        right = right && !key.publicKey.isValidSignature(signature, for: message + Data([0]))
                        right = right && (try? key.signature(for: Self.bytes("af82"))) == expected
                    }
                    return right
                }
            }
            return await group.reduce(into: [Bool]()) { $0.append($1) }
        }
        #expect(outcomes == Array(repeating: true, count: 8))
    }

    @Test func refusesMalformedKeys() {
        #expect(throws: (any Error).self) { try AgentSigningKey(rawRepresentation: Data(count: 31)) }
        #expect(throws: KeyFileError.self) { try AgentPublicKey(base64: Data(count: 33).base64EncodedString()) }
        #expect(AgentSigningKey().publicKey != AgentSigningKey().publicKey, "fresh keys are random")
    }

    @Test func sha256OfKnownInputs() {
        #expect(hexDigits(SHA256Digest.hash(Data())) == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        #expect(hexDigits(SHA256Digest.hash(Data("abc".utf8))) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test func signsAndVerifiesExactBytes() throws {
        let key = AgentSigningKey()
        let body = Data(#"{"agent":"a"}"#.utf8)
        let header = try key.signatureHeader(for: body)
        let publicKey = try AgentPublicKey(base64: key.publicKey.base64)
        #expect(publicKey.verify(signatureHeader: header, body: body))
        #expect(!publicKey.verify(signatureHeader: header, body: Data(#"{"agent":"b"}"#.utf8)))
        #expect(!publicKey.verify(signatureHeader: "not base64!", body: body))
    }

    /// A push's claim proves its agent id and time before its body is read; anything else about
    /// it (id, time past the skew, key, text) makes it fail. The agent signs one a minute.
    @Test func claimsProveAgentAndTime() throws {
        let key = AgentSigningKey(), other = AgentSigningKey()
        let publicKey = try AgentPublicKey(base64: key.publicKey.base64)
        let now = Date()
        let claim = try key.claimHeader(agent: "eu-1", now: now)
        #expect(publicKey.verify(claimHeader: claim, agent: "eu-1", now: now.addingTimeInterval(200), allowedSkew: 300))
        #expect(!publicKey.verify(claimHeader: claim, agent: "eu-2", now: now, allowedSkew: 300))
        #expect(!publicKey.verify(claimHeader: claim, agent: "eu-1", now: now.addingTimeInterval(301), allowedSkew: 300))
        #expect(!publicKey.verify(claimHeader: claim, agent: "eu-1", now: now.addingTimeInterval(-301), allowedSkew: 300))
        #expect(!publicKey.verify(claimHeader: try other.claimHeader(agent: "eu-1", now: now), agent: "eu-1", now: now, allowedSkew: 300))
        for garbled in ["", "t=1", "sig=AAAA", "t=9223372036854775807, sig=\(String(repeating: "A", count: 86))==", "t=-9223372036854775808, sig=x", claim + "x"] {
            #expect(!publicKey.verify(claimHeader: garbled, agent: "eu-1", now: now, allowedSkew: 300), "\(garbled)")
        }
        // A claim's signature never checks as a body's.
        let parsed = try #require(PushProtocol.parseClaim(claim))
        #expect(!publicKey.verify(signatureHeader: parsed.signature.base64EncodedString(), body: Data(#"{"agent":"eu-1"}"#.utf8)))
        // The agent keeps a claim for a minute, then signs a new one.
        let pushClaim = PushClaim(key: key, agent: "eu-1")
        let first = try pushClaim.header(now: now)
        #expect(try pushClaim.header(now: now.addingTimeInterval(59)) == first)
        let next = try pushClaim.header(now: now.addingTimeInterval(61))
        #expect(next != first && publicKey.verify(claimHeader: next, agent: "eu-1", now: now.addingTimeInterval(61), allowedSkew: 300))
    }

    @Test func keyFileIsPrivateAndRoundTrips() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("agent.key")
        let key = AgentSigningKey()
        try key.write(to: path)
        let attributes = try FileManager.default.attributesOfItem(atPath: path)
        #expect((attributes[.posixPermissions] as? Int) == 0o600)
        let loaded = try AgentSigningKey.load(from: path)
        #expect(loaded.publicKey == key.publicKey)
        let pub = try String(contentsOfFile: path + ".pub", encoding: .utf8)
        #expect(try AgentPublicKey(base64: pub) == key.publicKey)
        // A second keygen must not silently replace the key.
        #expect(throws: KeyFileError.self) { try AgentSigningKey().write(to: path) }
        // A world-readable key is refused with a fix in the message.
        chmod(path, 0o644)
        let error = try #require(throws: KeyFileError.self) { try AgentSigningKey.load(from: path) }
        #expect(error.description.contains("chmod 600"))
    }

    /// The private key file is PKCS#8 PEM, which OpenSSL reads as the same key, and never looks
    /// like a public key: given where the public key belongs it is refused, as is an earlier
    /// version's bare-base64 private key with its `.pub` beside it (found by the CLI walk-through,
    /// F1: `agents add --public-key @agent.key` enrolled the private key and served it to every
    /// read token as the agent's "public" key).
    @Test func aPrivateKeyIsNeverTakenForAPublicOne() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        let path = dir.file("agent.key")
        let key = AgentSigningKey()
        try key.write(to: path)
        let pem = try String(contentsOfFile: path, encoding: .utf8)
        #expect(pem.hasPrefix("-----BEGIN PRIVATE KEY-----\n") && pem.hasSuffix("-----END PRIVATE KEY-----\n"))
        // OpenSSL derives the same public key from it.
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["pkey", "-in", path, "-pubout"]
        let out = Pipe()
        openssl.standardOutput = out
        try openssl.run()
        let pubPEM = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        openssl.waitUntilExit()
        #expect(openssl.terminationStatus == 0)
        #expect(try AgentPublicKey(operatorText: pubPEM) == key.publicKey, "\(pubPEM)")
        #expect(try AgentPublicKey(operatorText: try String(contentsOfFile: path + ".pub", encoding: .utf8), source: path + ".pub") == key.publicKey)
        let refused = try #require(throws: KeyFileError.self) { try AgentPublicKey(operatorText: pem, source: path) }
        #expect(refused.description.contains("PRIVATE key"))
        // An earlier version's private key file (base64 of the 32 bytes) still loads, and is
        // recognised by its .pub.
        let legacy = dir.file("old.key")
        let body = pem.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let raw = try #require(Data(base64Encoded: body)).suffix(32)
        try Data((raw.base64EncodedString() + "\n").utf8).write(to: URL(fileURLWithPath: legacy))
        chmod(legacy, 0o600)
        #expect(try AgentSigningKey.load(from: legacy).publicKey == key.publicKey)
        try Data((key.publicKey.base64 + "\n").utf8).write(to: URL(fileURLWithPath: legacy + ".pub"))
        let legacyRefused = try #require(throws: KeyFileError.self) {
            try AgentPublicKey(operatorText: raw.base64EncodedString(), source: legacy)
        }
        #expect(legacyRefused.description.contains("PRIVATE key"))
    }

    /// A public key of small order is refused everywhere a key is read: OpenSSL itself takes the
    /// identity point as a key and verifies a signature that nobody made (R = identity, S = 0)
    /// for any message, so one such enrolled key let anyone push as that agent (red team, 32nd
    /// session). Each entry of the list was checked to be of order 8 or less (Python, big
    /// integers, 8·P = identity) when it was added.
    @Test func smallOrderPublicKeysAreRefused() throws {
        let dir = try TemporaryDirectory()
        defer { dir.remove() }
        // What the check stops: OpenSSL accepts the forgery against the identity key.
        let spki = Data([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x01] + [UInt8](repeating: 0, count: 31))
        try ("-----BEGIN PUBLIC KEY-----\n" + spki.base64EncodedString() + "\n-----END PUBLIC KEY-----\n").write(toFile: dir.file("weak.pem"), atomically: true, encoding: .utf8)
        try Data("any message at all".utf8).write(to: URL(fileURLWithPath: dir.file("message")))
        try Data([0x01] + [UInt8](repeating: 0, count: 63)).write(to: URL(fileURLWithPath: dir.file("forged.sig")))
        let openssl = Process()
        openssl.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        openssl.arguments = ["pkeyutl", "-verify", "-pubin", "-inkey", dir.file("weak.pem"), "-rawin", "-in", dir.file("message"), "-sigfile", dir.file("forged.sig")]
        openssl.standardOutput = FileHandle.nullDevice
        openssl.standardError = FileHandle.nullDevice
        try openssl.run()
        openssl.waitUntilExit()
        #expect(openssl.terminationStatus == 0, "OpenSSL no longer accepts the forgery: the check is still right, this line is out of date")

        for point in Ed25519.smallOrderPoints {
            for signBit: UInt8 in [0, 0x80] {
                var raw = point
                raw[31] |= signBit
                let key = Data(raw)
                #expect(Ed25519.PublicKey(raw: key) == nil, "\(key.base64EncodedString())")
                let base64 = try #require(throws: KeyFileError.self) { try AgentPublicKey(base64: key.base64EncodedString()) }
                #expect(base64.description.contains("small order"))
                let text = try #require(throws: KeyFileError.self) { try AgentPublicKey(operatorText: key.base64EncodedString()) }
                #expect(text.description.contains("small order"))
            }
        }
        // A real key is not caught by it.
        let real = AgentSigningKey().publicKey
        #expect(!Ed25519.hasSmallOrder(real.rawRepresentation))
        #expect(try AgentPublicKey(base64: real.base64) == real)
    }
}
