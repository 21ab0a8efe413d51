import Foundation
import SondeCore

/// One complete request as the router sees it.
struct SimRequest: Sendable {
    var method: String
    /// Path without the query string, e.g. `/v1/files/file-1/content`.
    var path: String
    var query: String?
    var headers: [(name: String, value: String)]
    var body: Data
    var region: String
    var requestID: String

    func header(_ name: String) -> String? {
        headers.first { $0.name.caseInsensitiveCompare(name) == .orderedSame }?.value
    }
}

/// A response before it is written; the connection handler adds Content-Length, x-request-id, etc.
struct SimResponse: Sendable {
    var status: Int
    var contentType: String
    var body: Data
    var headers: [(String, String)] = []

    static func json<T: Encodable>(_ status: Int, _ value: T) -> SimResponse {
        let body = (try? SondeJSON.encode(value)) ?? Data(#"{"error":{"code":"internal","message":"encoding failed"}}"#.utf8)
        return SimResponse(status: status, contentType: "application/json", body: body)
    }

    static func error(_ status: Int, _ code: String, _ message: String) -> SimResponse {
        json(status, APIErrorBody(code: code, message: message))
    }
}

/// What the connection does with a request: answer (after `delay`), hang, or drop.
struct SimAction: Sendable {
    enum Outcome: Sendable {
        case respond(SimResponse)
        case hang
        case drop
    }

    var outcome: Outcome
    var delay: Duration = .zero
    /// Ids of the faults that shaped this answer, for the log line.
    var faultIDs: [String] = []

    static func respond(_ response: SimResponse) -> SimAction { SimAction(outcome: .respond(response)) }
}
