import CurlHTTP
import Foundation
import SondeCore

// MARK: - Client

/// A failure talking to the collector, worded for the operator.
struct CLIError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// The collector's API over CurlHTTP.
struct CollectorClient {
    let baseURL: String
    /// Sent as `Authorization: Bearer …`; never printed.
    let token: String?
    /// Trust this CA (PEM) for the collector's certificate instead of the system's.
    let caFile: String?
    /// For a collector that requires mutual TLS.
    let clientCertificate: (cert: String, key: String)?
    let client = CurlHTTPClient(threads: 2)

    init(baseURL: String, token: String? = nil, caFile: String? = nil, clientCertificate: (cert: String, key: String)? = nil) {
        self.baseURL = baseURL.hasSuffix("/") ? String(baseURL.dropLast()) : baseURL
        self.token = token
        self.caFile = caFile
        self.clientCertificate = clientCertificate
    }

    /// How often a write refused by a standby collector (503 not_leader) is sent again, 1 s apart.
    static let notLeaderAttempts = 10

    /// GETs (or POSTs, with an optional JSON body) a path and returns the raw body of a 2xx answer.
    func raw(_ path: String, query: [(String, String?)] = [], method: String = "GET", json: Data? = nil) async throws -> Data {
        var url = baseURL + path
        let pairs = query.compactMap { name, value in value.map { "\(name)=\(Self.escape($0))" } }
        if !pairs.isEmpty { url += "?" + pairs.joined(separator: "&") }
        var response: HTTPResponse
        var headers = token.map { [HTTPHeader("Authorization", "Bearer \($0)")] } ?? []
        if json != nil { headers.append(HTTPHeader("Content-Type", "application/json")) }
        var request = HTTPRequest(
            method: method, url: url, headers: headers,
            body: json ?? (method == "POST" ? Data() : nil), timeout: .seconds(30), connectTimeout: .seconds(5), caFile: caFile)
        request.clientCertificate = clientCertificate
        var attempt = 1
        while true {
            do {
                response = try await client.perform(request)
            } catch where error.kind == .tls {
                throw CLIError(
                    "cannot set up TLS with the collector at \(baseURL) (\(error.message)); if its certificate comes from a private CA, pass --ca-file PATH or set SONDE_CA_FILE"
                )
            } catch {
                throw CLIError(
                    "cannot reach the collector at \(baseURL) (\(error.kind.rawValue): \(error.message)); is `sonde-collector serve` running there? Set --collector or SONDE_COLLECTOR."
                )
            }
            // A standby collector (several on PostgreSQL) refuses incident writes with 503
            // not_leader; behind a load balancer the same request soon reaches the leader.
            guard response.status == 503, attempt < Self.notLeaderAttempts,
                (try? SondeJSON.decode(APIErrorBody.self, from: response.body))?.error.code == "not_leader"
            else { break }
            attempt += 1
            try await Task.sleep(for: .seconds(1))
        }
        if response.status == 401 {
            throw CLIError(
                token == nil
                    ? "the collector needs an API token for \(path): pass --token-file PATH, set SONDE_TOKEN, or --token"
                    : "the collector refused the token for \(path) (401): it is not one of the collector's `tokens`")
        }
        if response.status == 403 {
            let detail = (try? SondeJSON.decode(APIErrorBody.self, from: response.body))?.error.message ?? "forbidden"
            throw CLIError("the collector refused \(path) (403): \(detail); use an admin token")
        }
        guard (200..<300).contains(response.status) else {
            if let body = try? SondeJSON.decode(APIErrorBody.self, from: response.body) {
                throw CLIError("the collector answered \(response.status) \(body.error.code): \(body.error.message)")
            }
            throw CLIError("the collector answered HTTP \(response.status) for \(path): \(response.bodyText.prefix(200))")
        }
        return response.body
    }

    func get<T: Decodable>(_ type: T.Type, _ path: String, query: [(String, String?)] = [], method: String = "GET") async throws -> T {
        try decode(type, try await raw(path, query: query, method: method))
    }

    /// A reply's body as `type`, or an error that says the versions may differ.
    func decode<T: Decodable>(_ type: T.Type, _ data: Data) throws -> T {
        do { return try SondeJSON.decode(type, from: data) } catch {
            throw CLIError("the collector at \(baseURL) sent an answer this sonde does not understand (\(error)); are the versions the same?")
        }
    }

    static func escape(_ value: String) -> String {
        var allowed = CharacterSet.alphanumerics
        allowed.insert(charactersIn: "-._~:")
        return value.addingPercentEncoding(withAllowedCharacters: allowed) ?? value
    }
}
