import Foundation
import Hummingbird
import SondeCore

/// An error answer: its HTTP status and the `{"error":{"code":…,"message":…}}` body.
public struct APIError: Error, Sendable, CustomStringConvertible {
    public var status: HTTPResponse.Status
    public var code: String
    public var message: String
    public var headers: HTTPFields = [:]
    /// The precise reason, for the collector's log and metrics only, when the answer must not
    /// tell it (an unauthenticated push: unknown, revoked or bad signature look the same).
    public var reason: String?

    public init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = Self.clipped(message, to: Self.longestMessage)
    }

    /// The longest message answered or logged, in bytes: messages quote what a client sent (an
    /// agent id, a field), and an unauthenticated client must not be able to echo megabytes back
    /// or write them to the log.
    static let longestMessage = 1024

    /// A request path as logs carry it: a 60,000-byte path made a 60 KB log line per request.
    static func loggedPath(_ path: String) -> String { clipped(path, to: 1024) }

    /// `text` cut to at most `limit` UTF-8 bytes on a character boundary, with "…" when cut.
    static func clipped(_ text: String, to limit: Int) -> String {
        guard text.utf8.count > limit else { return text }
        var out = ""
        var bytes = 0
        for character in text {
            let size = character.utf8.count
            if bytes + size > limit - 3 { break }
            out.append(character)
            bytes += size
        }
        return out + "…"
    }

    public var description: String { "\(status.code) \(code): \(message)" }

    var response: Response {
        // Keys sorted: the same refusal is the same bytes every time, so nothing about it varies
        // but what it says.
        var response = JSONResponse.bytes(JSONResponse.sorted(APIErrorBody(code: code, message: message)), contentType: "application/json", status: status)
        for field in headers { response.headers.append(field) }
        return response
    }

    static func badQuery(_ message: String) -> APIError { APIError(.badRequest, "bad_query", message) }
    static func notFound(_ message: String) -> APIError { APIError(.notFound, "not_found", message) }
}

enum JSONResponse {
    static func make(_ value: some Encodable, status: HTTPResponse.Status = .ok) -> Response {
        let data = (try? SondeJSON.encode(value)) ?? Data("{}".utf8)
        return bytes(data, contentType: "application/json", status: status)
    }

    static func bytes(_ data: Data, contentType: String, status: HTTPResponse.Status = .ok) -> Response {
        var buffer = ByteBuffer()
        buffer.writeBytes(data)
        return Response(
            status: status, headers: [.contentType: contentType, .contentLength: "\(data.count)"], body: ResponseBody(byteBuffer: buffer))
    }

    static func text(_ text: String, contentType: String) -> Response { bytes(Data(text.utf8), contentType: contentType) }

    /// JSON with its keys sorted: Foundation's encoder writes an object's keys in no fixed order,
    /// and some answers must be the same bytes for the same content (an `ETag`, a refusal).
    static func sorted(_ value: some Encodable) -> Data {
        let encoder = SondeJSON.encoder()
        encoder.outputFormatting.insert(.sortedKeys)
        return (try? encoder.encode(value)) ?? Data("{}".utf8)
    }
}

/// A page's bytes (the status pages, their feeds): answered with an `ETag` and `Cache-Control`,
/// and 304 without a body when the reader already holds these bytes (`If-None-Match`), so
/// aggregators and browsers polling every few seconds fetch only what changed.
struct PageBody: Sendable {
    var data: Data
    var contentType: String

    init(data: Data, contentType: String) {
        self.data = data
        self.contentType = contentType
    }

    init(html: String) { self.init(data: Data(html.utf8), contentType: "text/html; charset=utf-8") }

    /// Keys sorted: the same content gives the same bytes (and `ETag`).
    init(json value: some Encodable) { self.init(data: JSONResponse.sorted(value), contentType: "application/json") }

    /// A strong validator: the first 128 bits of the body's SHA-256.
    var etag: String {
        "\"" + SHA256Digest.hash(data).prefix(16).map { String(format: "%02x", $0) }.joined() + "\""
    }

    func response(to request: Request, cacheControl: String) -> Response {
        let etag = self.etag
        // RFC 9110 §13.1.2: a list of tags (weak ones compare by their opaque part) or `*`.
        let presented = request.headers[values: .ifNoneMatch].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
            .map { $0.hasPrefix("W/") ? String($0.dropFirst(2)) : $0 }
        var response: Response
        if presented.contains(etag) || presented.contains("*") {
            response = Response(status: .notModified)
        } else {
            response = JSONResponse.bytes(data, contentType: contentType)
        }
        response.headers[.eTag] = etag
        response.headers[.cacheControl] = cacheControl
        return response
    }
}

extension DecodingError {
    /// "results[0].started_at: expected …" — where in the JSON, and what was wrong.
    var pathDescription: String {
        func path(_ keys: [any CodingKey]) -> String {
            var text = ""
            for key in keys {
                if let index = key.intValue { text += "[\(index)]" } else { text += (text.isEmpty ? "" : ".") + key.stringValue }
            }
            return text.isEmpty ? "(top level)" : text
        }
        switch self {
        case .keyNotFound(let key, let context): return "\(path(context.codingPath + [key])): is required"
        case .typeMismatch(let type, let context): return "\(path(context.codingPath)): expected \(type)"
        case .valueNotFound(let type, let context): return "\(path(context.codingPath)): expected \(type), found null"
        case .dataCorrupted(let context):
            let underlying = (context.underlyingError as? NSError)?.userInfo[NSDebugDescriptionErrorKey] as? String
            return "\(path(context.codingPath)): \(underlying ?? context.debugDescription)"
        @unknown default: return "\(self)"
        }
    }
}
