import Foundation
import SondeCore

/// The platform parts a fault can target, named as probes name their `component`.
public enum SimComponent: String, Codable, Sendable, CaseIterable, Hashable {
    /// `/v1/auth/*`
    case login
    /// `/v1/files*`
    case files
    /// `/v1/batches*`
    case batch
    /// `/v1/models`
    case api

    /// The component a request path belongs to; nil for paths no fault may touch.
    static func of(path: String) -> SimComponent? {
        if path == "/v1/auth" || path.hasPrefix("/v1/auth/") { return .login }
        if path == "/v1/files" || path.hasPrefix("/v1/files/") { return .files }
        if path == "/v1/batches" || path.hasPrefix("/v1/batches/") { return .batch }
        if path == "/v1/models" || path.hasPrefix("/v1/models/") { return .api }
        return nil
    }
}

/// One injected fault: what it does (`effect`) and which requests it hits (components, regions,
/// users, and a fraction of the requests that match them).
///
/// ```swift
/// let id = try sim.addFault(Fault(.error(status: 503), components: [.files], regions: ["eu"], fraction: 0.3))
/// ```
///
/// On the wire (`POST /_sim/faults`) it is
/// `{"type":"error","status":503,"components":["files"],"regions":["eu"],"fraction":0.3}`.
public struct Fault: Sendable, Hashable {
    public enum Effect: Sendable, Hashable {
        /// Answer `status` (4xx/5xx; usually 500, 502 or 503) with a `server_error` JSON body.
        case error(status: Int, message: String? = nil)
        /// Delay the response (scheduled on the event loop, so precise to a few ms). Combines with
        /// the other effects: the delay comes first.
        case latency(Duration)
        /// Read the request, then answer nothing until the client closes or the sim stops.
        case hang
        /// Close the connection without sending a single response byte.
        case drop
        /// Valid logins answer 401 `invalid_credentials`.
        case loginReject
        /// File metadata and content answer 404 `file_expired`; a file hit once stays expired.
        case fileExpired
        /// Batches that reach `state` stay in it while the fault is active.
        case batchStuck(state: BatchStatus)

        /// The wire name (`type`).
        public var type: String {
            switch self {
            case .error: "error"
            case .latency: "latency"
            case .hang: "hang"
            case .drop: "drop"
            case .loginReject: "login_reject"
            case .fileExpired: "file_expired"
            case .batchStuck: "batch_stuck"
            }
        }

        public static let typeNames = ["error", "latency", "hang", "drop", "login_reject", "file_expired", "batch_stuck"]
    }

    /// Assigned by the sim (`f-1`, `f-2`, …) when the fault is added; nil before.
    public var id: String?
    public var effect: Effect
    /// Empty = every component.
    public var components: Set<SimComponent>
    /// Empty = every region.
    public var regions: Set<String>
    /// Share of matching requests hit, 0...1 (1 = all, 0 = none).
    public var fraction: Double
    /// Empty = every user (and requests without one). Otherwise only requests made by these users
    /// (the bearer token's user, or the username of a login).
    public var users: Set<String>

    public init(
        _ effect: Effect, components: Set<SimComponent> = [], regions: Set<String> = [], fraction: Double = 1.0,
        users: Set<String> = [], id: String? = nil
    ) {
        self.id = id
        self.effect = effect
        self.components = components
        self.regions = regions
        self.fraction = fraction
        self.users = users
    }

    /// Whether the fault's scope covers a request (before the fraction is drawn).
    func covers(component: SimComponent, region: String, user: String?) -> Bool {
        if !components.isEmpty && !components.contains(component) { return false }
        if !regions.isEmpty && !regions.contains(region) { return false }
        if !users.isEmpty {
            guard let user, users.contains(user) else { return false }
        }
        return true
    }

    /// Checks the values an operator can get wrong; `knownRegions` are the sim's regions.
    func validate(knownRegions: [String]) throws(FaultValidationError) {
        guard fraction.isFinite, (0...1).contains(fraction) else {
            throw FaultValidationError("fraction: expected a number from 0 to 1 (share of matching requests), got \(fraction)")
        }
        for region in regions where !knownRegions.contains(region) {
            throw FaultValidationError("regions: this sim serves \(knownRegions.joined(separator: ", ")), not \"\(region)\"")
        }
        switch effect {
        case .error(let status, _):
            guard (400...599).contains(status) else {
                throw FaultValidationError("status: expected an HTTP error status such as 500, 502 or 503, got \(status)")
            }
        case .latency(let delay):
            guard delay > .zero, delay <= .seconds(600) else {
                throw FaultValidationError("delay_ms: expected a delay from 1 to 600000 ms, got \(delay)")
            }
        case .batchStuck(let state):
            guard !state.isTerminal else {
                throw FaultValidationError("state: a batch cannot be stuck in the terminal state \(state.rawValue); use validating, in_progress, finalizing or cancelling")
            }
        case .hang, .drop, .loginReject, .fileExpired:
            break
        }
    }
}

/// A fault the sim refuses, with the field and what was expected.
public struct FaultValidationError: Error, Sendable, CustomStringConvertible {
    public var message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

// MARK: - Wire format

extension Fault: Codable {
    enum CodingKeys: String, CodingKey {
        case id, type, components, regions, fraction, users, status, message
        case delayMilliseconds = "delay_ms"
        case state
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        func field<T: Decodable>(_ type: T.Type, _ key: CodingKeys, _ expected: String) throws -> T? {
            do { return try c.decodeIfPresent(type, forKey: key) } catch {
                throw FaultValidationError("\(key.stringValue): expected \(expected)")
            }
        }
        guard let type = try field(String.self, .type, "a string") else {
            throw FaultValidationError("type: missing; expected one of \(Effect.typeNames.joined(separator: ", "))")
        }
        switch type {
        case "error":
            let status = try field(Int.self, .status, "an HTTP status such as 503") ?? 500
            effect = .error(status: status, message: try field(String.self, .message, "a string"))
        case "latency":
            guard let ms = try field(Int.self, .delayMilliseconds, "whole milliseconds such as 200") else {
                throw FaultValidationError("delay_ms: missing; a latency fault needs the delay in milliseconds, e.g. \"delay_ms\": 200")
            }
            effect = .latency(.milliseconds(ms))
        case "hang": effect = .hang
        case "drop": effect = .drop
        case "login_reject": effect = .loginReject
        case "file_expired": effect = .fileExpired
        case "batch_stuck":
            let name = try field(String.self, .state, "a batch status such as finalizing") ?? "finalizing"
            guard let state = BatchStatus(rawValue: name) else {
                throw FaultValidationError("state: expected validating, in_progress, finalizing or cancelling, got \"\(name)\"")
            }
            effect = .batchStuck(state: state)
        default:
            throw FaultValidationError("type: expected one of \(Effect.typeNames.joined(separator: ", ")), got \"\(type)\"")
        }
        var components: Set<SimComponent> = []
        for name in try field([String].self, .components, "a list of component names") ?? [] {
            guard let component = SimComponent(rawValue: name) else {
                throw FaultValidationError(
                    "components: unknown component \"\(name)\"; expected \(SimComponent.allCases.map(\.rawValue).joined(separator: ", "))")
            }
            components.insert(component)
        }
        self.components = components
        regions = Set(try field([String].self, .regions, "a list of region names") ?? [])
        users = Set(try field([String].self, .users, "a list of user names") ?? [])
        fraction = try field(Double.self, .fraction, "a number from 0 to 1") ?? 1.0
        id = try field(String.self, .id, "a string")
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encodeIfPresent(id, forKey: .id)
        try c.encode(effect.type, forKey: .type)
        try c.encode(components.map(\.rawValue).sorted(), forKey: .components)
        try c.encode(regions.sorted(), forKey: .regions)
        try c.encode(fraction, forKey: .fraction)
        try c.encode(users.sorted(), forKey: .users)
        switch effect {
        case .error(let status, let message):
            try c.encode(status, forKey: .status)
            try c.encodeIfPresent(message, forKey: .message)
        case .latency(let delay):
            try c.encode(delay.wholeMilliseconds, forKey: .delayMilliseconds)
        case .batchStuck(let state):
            try c.encode(state.rawValue, forKey: .state)
        case .hang, .drop, .loginReject, .fileExpired:
            break
        }
    }

    /// One line for people, e.g. `f-1  error 503  components=files  regions=eu  fraction=0.3`.
    public var summary: String {
        var effectText = effect.type
        switch effect {
        case .error(let status, _): effectText += " \(status)"
        case .latency(let delay): effectText += " \(delay.wholeMilliseconds)ms"
        case .batchStuck(let state): effectText += " \(state.rawValue)"
        default: break
        }
        func list<S: Sequence>(_ values: S) -> String where S.Element == String {
            let sorted = values.sorted()
            return sorted.isEmpty ? "all" : sorted.joined(separator: ",")
        }
        var text = "\(id ?? "-")  \(effectText)  components=\(list(components.map(\.rawValue)))  regions=\(list(regions))"
        text += "  fraction=\(fraction)"
        if !users.isEmpty { text += "  users=\(list(users))" }
        return text
    }
}

