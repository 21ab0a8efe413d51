import CurlHTTP
import Foundation
import SondeCore
import SondeTestSupport

@testable import PlatformSim

/// A sim started for one test plus a small client over CurlHTTP (the client the agents use).
struct SimHarness {
    let sim: PlatformSimulator
    let client = CurlHTTPClient.shared

    static func start(
        regions: [String] = ["eu", "us"], batchPace: Duration = .milliseconds(100), tokenTTL: Duration = .seconds(3600),
        users: [String: String] = PlatformSimulator.Configuration.defaultUsers, seed: UInt64? = nil, maxBodyBytes: Int = 32 << 20
    ) async throws -> SimHarness {
        let sim = try await PlatformSimulator.start(
            .init(regions: regions, batchPace: batchPace, users: users, tokenTTL: tokenTTL, maxBodyBytes: maxBodyBytes, seed: seed))
        return SimHarness(sim: sim)
    }

    func url(_ region: String, _ path: String) -> String { sim.baseURL(for: region) + path }

    func request(
        _ method: String, _ path: String, region: String = "eu", token: String? = nil, json: String? = nil, body: Data? = nil,
        headers: [HTTPHeader] = [], timeout: Duration = .seconds(10)
    ) async throws -> HTTPResponse {
        var allHeaders = headers
        if let token { allHeaders.append(HTTPHeader("Authorization", "Bearer \(token)")) }
        var payload = body
        if let json {
            allHeaders.append(HTTPHeader("Content-Type", "application/json"))
            payload = Data(json.utf8)
        }
        return try await client.perform(
            HTTPRequest(method: method, url: url(region, path), headers: allHeaders, body: payload, timeout: timeout, connectTimeout: .seconds(2)))
    }

    func login(region: String = "eu", username: String = "probe", password: String = "probe-password") async throws -> String {
        let response = try await request("POST", "/v1/auth/login", region: region, json: #"{"username":"\#(username)","password":"\#(password)"}"#)
        guard response.status == 200, let token = try response.json()["access_token"] as? String else {
            throw TestFailure("login failed: \(response.status) \(response.bodyText)")
        }
        return token
    }

    /// Uploads `content` as a multipart file; returns the decoded file object.
    func upload(_ content: Data, filename: String = "input.jsonl", region: String = "eu", token: String) async throws -> HTTPResponse {
        let (body, contentType) = multipart(fields: [("purpose", nil, Data("batch".utf8)), ("file", filename, content)])
        return try await request("POST", "/v1/files", region: region, token: token, body: body, headers: [HTTPHeader("Content-Type", contentType)])
    }

    func uploadID(_ content: Data, token: String, region: String = "eu") async throws -> String {
        let response = try await upload(content, region: region, token: token)
        guard response.status == 200, let id = try response.json()["id"] as? String else {
            throw TestFailure("upload failed: \(response.status) \(response.bodyText)")
        }
        return id
    }

    func shutdown() async throws { try await sim.shutdown() }
}

/// A multipart/form-data body; `fields` are (name, filename, bytes).
func multipart(fields: [(String, String?, Data)], boundary: String = "sonde-\(UUID().uuidString)") -> (Data, String) {
    var body = Data()
    for (name, filename, bytes) in fields {
        body.append(Data("--\(boundary)\r\n".utf8))
        var disposition = "Content-Disposition: form-data; name=\"\(name)\""
        if let filename { disposition += "; filename=\"\(filename)\"" }
        body.append(Data("\(disposition)\r\n".utf8))
        if filename != nil { body.append(Data("Content-Type: application/octet-stream\r\n".utf8)) }
        body.append(Data("\r\n".utf8))
        body.append(bytes)
        body.append(Data("\r\n".utf8))
    }
    body.append(Data("--\(boundary)--\r\n".utf8))
    return (body, "multipart/form-data; boundary=\(boundary)")
}

/// Pseudo-random bytes, eight at a time (cheap even in debug builds).
func randomBytes(_ count: Int, seed: UInt64) -> Data {
    var generator = SplitMix64(seed: seed)
    var data = Data(count: count)
    data.withUnsafeMutableBytes { raw in
        var offset = 0
        while offset < count {
            var word = generator.next()
            let n = min(8, count - offset)
            withUnsafeBytes(of: &word) { raw.baseAddress!.advanced(by: offset).copyMemory(from: $0.baseAddress!, byteCount: n) }
            offset += n
        }
    }
    return data
}

extension HTTPResponse {
    func json() throws -> [String: Any] {
        guard let object = try JSONSerialization.jsonObject(with: body) as? [String: Any] else {
            throw TestFailure("expected a JSON object, got \(bodyText)")
        }
        return object
    }

    /// `error.code` of a JSON error body.
    var errorCode: String? { ((try? json())?["error"] as? [String: Any])?["code"] as? String }
}
