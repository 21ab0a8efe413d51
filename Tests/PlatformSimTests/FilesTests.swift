import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

@testable import PlatformSim

@Suite("Files")
struct FilesTests {
    /// Bytes that trip naive parsers: CRLFs, NULs, every byte value and a fake boundary line.
    static func nastyBytes(boundary: String) -> Data {
        var data = Data((0...255).map { UInt8($0) })
        data.append(Data("\r\n--\(boundary.dropLast())\r\n\r\n--\r\n".utf8))
        data.append(randomBytes(200_000, seed: 7))
        data.append(Data("\r\n".utf8))
        return data
    }

    @Test func uploadMetadataContentAndDeleteRoundTripExactBytes() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let boundary = "sonde-boundary-1234"
        let content = Self.nastyBytes(boundary: boundary)
        let (body, contentType) = multipart(
            fields: [("purpose", nil, Data("batch".utf8)), ("file", "weird name.bin", content)], boundary: boundary)
        let upload = try await h.request("POST", "/v1/files", token: token, body: body, headers: [HTTPHeader("Content-Type", contentType)])
        #expect(upload.status == 200)
        let object = try upload.json()
        let id = try #require(object["id"] as? String)
        #expect(id.hasPrefix("file-"))
        #expect(object["object"] as? String == "file")
        #expect(object["bytes"] as? Int == content.count)
        #expect(object["filename"] as? String == "weird name.bin")
        #expect(object["purpose"] as? String == "batch")
        #expect(object["status"] as? String == "processed")
        #expect(object["created_at"] as? Int != nil)

        let metadata = try await h.request("GET", "/v1/files/\(id)", region: "us", token: token)
        #expect(metadata.status == 200)
        #expect(try metadata.json()["bytes"] as? Int == content.count)

        let download = try await h.request("GET", "/v1/files/\(id)/content", token: token)
        #expect(download.status == 200)
        #expect(download.headers.value(for: "Content-Type") == "application/octet-stream")
        #expect(download.body == content)

        let listed = try await h.request("GET", "/v1/files", token: token)
        #expect((try listed.json()["data"] as? [[String: Any]])?.contains { $0["id"] as? String == id } == true)

        let deleted = try await h.request("DELETE", "/v1/files/\(id)", token: token)
        #expect(deleted.status == 200)
        #expect(try deleted.json()["deleted"] as? Bool == true)
        #expect(try deleted.json()["id"] as? String == id)
        let gone = try await h.request("GET", "/v1/files/\(id)/content", token: token)
        #expect(gone.status == 404)
        #expect(gone.errorCode == "file_not_found")
        #expect(try await h.request("DELETE", "/v1/files/\(id)", token: token).status == 404)
    }

    @Test func largeUploadOverExpectContinueWorks() async throws {
        // curl sends `Expect: 100-continue` for big bodies; the sim must answer it, not stall.
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let content = Data(repeating: 0x5A, count: 3 << 20)
        let started = ContinuousClock.now
        let response = try await h.upload(content, token: token)
        #expect(response.status == 200)
        #expect(try response.json()["bytes"] as? Int == content.count)
        #expect(ContinuousClock.now - started < .milliseconds(900), "a stalled 100-continue costs curl a full second")
    }

    @Test func badUploadsAnswer400() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let (noFile, type) = multipart(fields: [("purpose", nil, Data("batch".utf8))])
        let missing = try await h.request("POST", "/v1/files", token: token, body: noFile, headers: [HTTPHeader("Content-Type", type)])
        #expect(missing.status == 400)
        #expect(missing.errorCode == "invalid_request")
        let notMultipart = try await h.request("POST", "/v1/files", token: token, json: #"{"file":"x"}"#)
        #expect(notMultipart.status == 400)
        let truncated = try await h.request(
            "POST", "/v1/files", token: token, body: Data("--b\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\nabc".utf8),
            headers: [HTTPHeader("Content-Type", "multipart/form-data; boundary=b")])
        #expect(truncated.status == 400)
        let unknown = try await h.request("GET", "/v1/files/file-doesnotexist", token: token)
        #expect(unknown.status == 404)
        #expect(unknown.errorCode == "file_not_found")
    }

    @Test func bodiesOverTheLimitAnswer413() async throws {
        let h = try await SimHarness.start(maxBodyBytes: 1 << 20)
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let tooBig = try await h.upload(Data(repeating: 1, count: (1 << 20) + 1), token: token)
        #expect(tooBig.status == 413)
        #expect(tooBig.errorCode == "request_too_large")
        // A file of exactly the limit fits, multipart framing or not.
        #expect(try await h.upload(Data(repeating: 1, count: 1 << 20), token: token).status == 200)
        let tooBigJSON = try await h.request("POST", "/v1/batches", token: token, body: Data(count: (1 << 20) + 1), headers: [HTTPHeader("Content-Type", "application/json")])
        #expect(tooBigJSON.status == 413)
        // The sim is still fine afterwards.
        #expect(try await h.upload(Data(repeating: 1, count: 1000), token: token).status == 200)
    }

    @Test func defaultLimitIs32MiB() async throws {
        let h = try await SimHarness.start()
        defer { Task { try? await h.shutdown() } }
        let token = try await h.login()
        let tooBig = try await h.request(
            "POST", "/v1/files", token: token, body: Data(count: (32 << 20) + 64 * 1024 + 1),
            headers: [HTTPHeader("Content-Type", "multipart/form-data; boundary=b")])
        #expect(tooBig.status == 413)
    }

    @Test func multipartParserHandlesQuotedParametersAndEmptyParts() throws {
        #expect(MultipartFormData.boundary(fromContentType: #"multipart/form-data; boundary="a;b c""#) == "a;b c")
        #expect(MultipartFormData.boundary(fromContentType: "application/json") == nil)
        let body = Data(
            "preamble\r\n--XX\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\\\"b;c.txt\"\r\nContent-Type: text/plain\r\n\r\n\r\n--XY\r\n--XX\r\n\r\nnoheaders\r\n--XX--\r\n"
                .utf8)
        let form = try MultipartFormData(body: body, boundary: "XX")
        #expect(form.parts.count == 2)
        let file = try #require(form.part(named: "file"))
        #expect(file.filename == "a\"b;c.txt")
        #expect(file.contentType == "text/plain")
        #expect(file.body == Data("\r\n--XY".utf8))
        #expect(form.parts[1].name == nil)
        #expect(form.parts[1].body == Data("noheaders".utf8))
        #expect(throws: MultipartFormData.ParseError.self) { try MultipartFormData(body: Data("nothing".utf8), boundary: "XX") }
    }
}
