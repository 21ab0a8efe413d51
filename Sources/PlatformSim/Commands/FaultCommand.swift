import ArgumentParser
import CurlHTTP
import Foundation
import SondeCore

/// `sonde-sim fault set|list|clear` against a running sim's `/_sim/faults`.
struct FaultCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "fault", abstract: "Set, list and clear faults on a running sonde-sim.",
        subcommands: [Set.self, List.self, Clear.self])

    struct Set: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Inject a fault.",
            discussion: "Example: sonde-sim fault set --type error --status 503 --component files --region eu --fraction 0.3")

        @Option(help: "error, latency, hang, drop, login_reject, file_expired or batch_stuck.")
        var type: String

        @Option(help: "HTTP status of an error fault (500, 502, 503, …).")
        var status: Int?

        @Option(name: .customLong("delay-ms"), help: "Delay of a latency fault, in milliseconds.")
        var delayMilliseconds: Int?

        @Option(help: "State a batch_stuck fault holds batches in (default finalizing).")
        var state: String?

        @Option(help: "Message of an error fault.")
        var message: String?

        @Option(name: .customLong("component"), help: "login, files, batch or api (repeatable or comma-separated; default all).")
        var components: [String] = []

        @Option(name: .customLong("region"), help: "Region (repeatable or comma-separated; default all).")
        var regions: [String] = []

        @Option(name: .customLong("user"), help: "Only requests of this user (repeatable or comma-separated).")
        var users: [String] = []

        @Option(help: "Share of matching requests hit, 0 to 1.")
        var fraction: Double = 1.0

        @OptionGroup var target: SimTargetOptions

        func validate() throws {
            guard Fault.Effect.typeNames.contains(type) else {
                throw ValidationError("--type: expected one of \(Fault.Effect.typeNames.joined(separator: ", ")), got \"\(type)\"")
            }
            guard (0...1).contains(fraction) else { throw ValidationError("--fraction: expected 0 to 1, got \(fraction)") }
            if type == "latency" && delayMilliseconds == nil { throw ValidationError("--delay-ms: a latency fault needs a delay, e.g. --delay-ms 200") }
        }

        func run() async throws {
            func list(_ values: [String]) -> [String] {
                values.flatMap { $0.split(separator: ",") }.map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            }
            var body: [String: Any] = [
                "type": type, "components": list(components), "regions": list(regions), "users": list(users), "fraction": fraction,
            ]
            if let status { body["status"] = status }
            if let delayMilliseconds { body["delay_ms"] = delayMilliseconds }
            if let state { body["state"] = state }
            if let message { body["message"] = message }
            let data = try JSONSerialization.data(withJSONObject: body)
            let response = try await target.client.send("POST", "/_sim/faults", body: data)
            let fault = try target.client.decode(Fault.self, from: response)
            if target.json { Console.out(response.bodyText) } else { Console.out("set \(fault.summary)") }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List the active faults.")
        @OptionGroup var target: SimTargetOptions

        func run() async throws {
            let response = try await target.client.send("GET", "/_sim/faults")
            let list = try target.client.decode(FaultList.self, from: response)
            if target.json {
                Console.out(response.bodyText)
            } else if list.faults.isEmpty {
                Console.out("no active faults")
            } else {
                for fault in list.faults { Console.out(fault.summary) }
            }
        }
    }

    struct Clear: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Clear one fault (--id) or all of them (--all, the default).")
        @Option(help: "Id of the fault to clear, e.g. f-1.")
        var id: String?
        @Flag(help: "Clear every fault.")
        var all = false
        @OptionGroup var target: SimTargetOptions

        func validate() throws {
            if id != nil && all { throw ValidationError("give either --id f-N or --all, not both") }
        }

        func run() async throws {
            if let id {
                let response = try await target.client.send("DELETE", "/_sim/faults/\(id)")
                if target.json { Console.out(response.bodyText) } else { Console.out("cleared \(id)") }
            } else {
                let response = try await target.client.send("DELETE", "/_sim/faults")
                let cleared = (try? JSONSerialization.jsonObject(with: response.body) as? [String: Any])?["cleared"] as? Int ?? 0
                if target.json { Console.out(response.bodyText) } else { Console.out("cleared \(cleared) fault\(cleared == 1 ? "" : "s")") }
            }
        }
    }
}

/// `--sim` and `--json`, shared by the fault subcommands.
struct SimTargetOptions: ParsableArguments {
    @Option(help: "Base URL of any region of the running sim.")
    var sim: String = "http://127.0.0.1:18400"

    @Flag(help: "Print the sim's JSON answer instead of text.")
    var json = false

    var client: SimControlClient { SimControlClient(baseURL: sim.hasSuffix("/") ? String(sim.dropLast()) : sim) }
}

/// Talks to `/_sim/faults` over CurlHTTP and turns failures into messages that say what to do.
struct SimControlClient {
    var baseURL: String

    func send(_ method: String, _ path: String, body: Data? = nil) async throws -> HTTPResponse {
        let request = HTTPRequest(
            method: method, url: baseURL + path, headers: body == nil ? [] : [HTTPHeader("Content-Type", "application/json")], body: body,
            timeout: .seconds(10), connectTimeout: .seconds(3))
        let response: HTTPResponse
        do {
            response = try await CurlHTTPClient.shared.perform(request)
        } catch {
            switch error.kind {
            case .connect, .dns, .timeout, .connectionLost:
                throw SimControlError("no sonde-sim answers at \(baseURL): start one with `sonde-sim --regions …` (\(error.message))")
            default:
                throw SimControlError("request to \(baseURL)\(path) failed: \(error.message)")
            }
        }
        guard (200..<300).contains(response.status) else {
            let detail = (try? SondeJSON.decode(APIErrorBody.self, from: response.body))?.error.message ?? response.bodyText
            throw SimControlError("sonde-sim at \(baseURL) answered \(response.status): \(detail)")
        }
        return response
    }

    func decode<T: Decodable>(_ type: T.Type, from response: HTTPResponse) throws -> T {
        do { return try JSONDecoder().decode(type, from: response.body) } catch {
            throw SimControlError("\(baseURL) did not answer like a sonde-sim (is it one?): \(response.bodyText.prefix(200))")
        }
    }
}

struct SimControlError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
