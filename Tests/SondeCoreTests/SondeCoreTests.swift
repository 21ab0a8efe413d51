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

    @Test func acceptsOffsetsAndRejectsGarbage() throws {
        let withOffset = try #require(RFC3339.date(from: "2026-11-18T13:06:40+02:00"))
        #expect(withOffset.timeIntervalSince1970 == 1_795_000_000)
        for bad in ["", "2026-11-18", "2026-13-18T09:46:40Z", "2026-11-18T09:46:40", "2026-11-18T09:46:40.Z", "x026-11-18T09:46:40Z"] {
            #expect(RFC3339.date(from: bad) == nil, "\(bad) should not parse")
        }
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
    @Test func signsAndVerifiesExactBytes() throws {
        let key = AgentSigningKey()
        let body = Data(#"{"agent":"a"}"#.utf8)
        let header = try key.signatureHeader(for: body)
        let publicKey = try AgentPublicKey(base64: key.publicKey.base64)
        #expect(publicKey.verify(signatureHeader: header, body: body))
        #expect(!publicKey.verify(signatureHeader: header, body: Data(#"{"agent":"b"}"#.utf8)))
        #expect(!publicKey.verify(signatureHeader: "not base64!", body: body))
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
}
