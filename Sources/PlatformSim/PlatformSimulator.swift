import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// A simulated multi-region platform (login, files, batches, models; see SIM-API.md) with fault
/// injection, served over real sockets. Every region has its own port; all regions share users,
/// files, batches and faults, like one platform behind regional front doors.
///
/// In tests:
/// ```swift
/// let sim = try await PlatformSimulator.start(.init(regions: ["eu", "us"], batchPace: .milliseconds(200)))
/// defer { Task { try? await sim.shutdown() } }   // or call shutdown() at the end of the test
/// let url = sim.baseURL(for: "eu")                // "http://127.0.0.1:40123"
/// let id = try sim.addFault(Fault(.error(status: 503), components: [.files], regions: ["eu"]))
/// sim.removeFault(id: id); sim.clearFaults()
/// try await sim.shutdown()
/// ```
public final class PlatformSimulator: Sendable {
    /// How a sim is set up. Every field has the default `sonde-sim` uses.
    public struct Configuration: Sendable {
        /// Region names, one port each, in order (`--regions eu,us,ap`).
        public var regions: [String]
        /// Address to listen on (`--host`, default 127.0.0.1).
        public var host: String
        /// Region *i* listens on `portBase + i` (`--port-base`); nil = ephemeral ports.
        public var portBase: Int?
        /// Time per batch state step (`--batch-pace`, default 1 s).
        public var batchPace: Duration
        /// Username → password (`--user name:password`; default `probe` / `probe-password`).
        public var users: [String: String]
        /// Bearer token lifetime (`--token-ttl` seconds, default 3600 s).
        public var tokenTTL: Duration
        /// Largest accepted request body; larger ones get 413 (default 32 MiB).
        public var maxBodyBytes: Int
        /// Seed for the draws of fractional faults (reproducible runs); nil = system randomness.
        public var seed: UInt64?

        public static let defaultUsers = ["probe": "probe-password"]

        public init(
            regions: [String] = ["eu"], host: String = "127.0.0.1", portBase: Int? = nil, batchPace: Duration = .seconds(1),
            users: [String: String] = Configuration.defaultUsers, tokenTTL: Duration = .seconds(3600), maxBodyBytes: Int = 32 << 20,
            seed: UInt64? = nil
        ) {
            self.regions = regions
            self.host = host
            self.portBase = portBase
            self.batchPace = batchPace
            self.users = users
            self.tokenTTL = tokenTTL
            self.maxBodyBytes = maxBodyBytes
            self.seed = seed
        }
    }

    /// Where one region listens.
    public struct Endpoint: Sendable, Hashable {
        public var region: String
        public var host: String
        public var port: Int
        /// `http://host:port`, no trailing slash.
        public var baseURL: String { "http://\(host.contains(":") ? "[\(host)]" : host):\(port)" }
    }

    public let configuration: Configuration
    /// One per region, in the configured order.
    public let endpoints: [Endpoint]
    private let faultBook: FaultBook
    private let serverChannels: [any Channel]
    private let connections: ChannelRegistry
    private let logger: Logger
    private let stopped = Mutex(false)

    private init(
        configuration: Configuration, endpoints: [Endpoint], faultBook: FaultBook, serverChannels: [any Channel],
        connections: ChannelRegistry, logger: Logger
    ) {
        self.configuration = configuration
        self.endpoints = endpoints
        self.faultBook = faultBook
        self.serverChannels = serverChannels
        self.connections = connections
        self.logger = logger
    }

    /// Binds every region and returns once all of them accept connections.
    /// - Throws: `PlatformSimError` when the configuration is invalid or a port is taken (nothing
    ///   stays bound then).
    public static func start(
        _ configuration: Configuration,
        logger: Logger = Logger(label: "sonde-sim", factory: { _ in SwiftLogNoOpLogHandler() }),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> PlatformSimulator {
        try validate(configuration)
        let faultBook = FaultBook(knownRegions: configuration.regions, seed: configuration.seed)
        let store = PlatformStore(users: configuration.users, tokenTTL: configuration.tokenTTL, batchPace: configuration.batchPace)
        let router = SimRouter(store: store, faults: faultBook, maxBodyBytes: configuration.maxBodyBytes)
        let connections = ChannelRegistry()
        var channels: [any Channel] = []
        var endpoints: [Endpoint] = []
        for (index, region) in configuration.regions.enumerated() {
            let port = configuration.portBase.map { $0 + index } ?? 0
            let bootstrap = ServerBootstrap(group: eventLoopGroup)
                .serverChannelOption(.backlog, value: 256)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                .childChannelInitializer { channel in
                    connections.add(channel)
                    return channel.eventLoop.makeCompletedFuture {
                        try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                        try channel.pipeline.syncOperations.addHandler(SimConnectionHandler(router: router, region: region, logger: logger))
                    }
                }
            do {
                let channel = try await bootstrap.bind(host: configuration.host, port: port).get()
                channels.append(channel)
                let bound = channel.localAddress?.port ?? port
                endpoints.append(Endpoint(region: region, host: configuration.host, port: bound))
            } catch {
                for channel in channels { try? await channel.close() }
                if let io = error as? IOError, io.errnoCode == EADDRINUSE {
                    throw PlatformSimError.portInUse(port: port, region: region)
                }
                throw PlatformSimError.cannotListen(host: configuration.host, port: port, region: region, reason: "\(error)")
            }
        }
        for endpoint in endpoints {
            logger.info("region listening", metadata: ["sim.region": "\(endpoint.region)", "sim.url": "\(endpoint.baseURL)"])
        }
        return PlatformSimulator(
            configuration: configuration, endpoints: endpoints, faultBook: faultBook, serverChannels: channels, connections: connections,
            logger: logger)
    }

    private static func validate(_ configuration: Configuration) throws(PlatformSimError) {
        guard !configuration.regions.isEmpty else { throw .invalidConfiguration("regions: give at least one region, e.g. eu,us,ap") }
        for region in configuration.regions where region.isEmpty || region.contains(where: { !$0.isLetter && !$0.isNumber && $0 != "-" && $0 != "_" }) {
            throw .invalidConfiguration("regions: \"\(region)\" is not a region name (letters, digits, - and _)")
        }
        guard Set(configuration.regions).count == configuration.regions.count else {
            throw .invalidConfiguration("regions: each region may appear once, got \(configuration.regions.joined(separator: ","))")
        }
        if let base = configuration.portBase, base < 1 || base + configuration.regions.count - 1 > 65535 {
            throw .invalidConfiguration("port-base: \(base) leaves no room for \(configuration.regions.count) ports below 65536")
        }
        guard configuration.batchPace > .zero else { throw .invalidConfiguration("batch-pace: must be above zero") }
        guard configuration.tokenTTL > .zero else { throw .invalidConfiguration("token-ttl: must be above zero") }
        guard !configuration.users.isEmpty else { throw .invalidConfiguration("users: give at least one name:password") }
    }

    // MARK: - Addresses

    public var regions: [String] { configuration.regions }

    /// `http://host:port` of a region. Calling it with a region the sim does not serve is a
    /// programming error.
    public func baseURL(for region: String) -> String {
        guard let endpoint = endpoints.first(where: { $0.region == region }) else {
            preconditionFailure("this sim serves \(regions.joined(separator: ", ")), not \(region)")
        }
        return endpoint.baseURL
    }

    /// The port a region listens on, nil for a region the sim does not serve.
    public func port(for region: String) -> Int? { endpoints.first { $0.region == region }?.port }

    /// Client connections open now, across regions (hanging ones included).
    public var openConnections: Int { connections.count }

    // MARK: - Faults

    /// Activates a fault and returns its id (`f-1`, …).
    /// - Throws: `FaultValidationError` for a fraction outside 0...1, an unknown region, etc.
    @discardableResult
    public func addFault(_ fault: Fault) throws(FaultValidationError) -> String {
        try faultBook.add(fault).id!
    }

    /// Deactivates one fault; false if no fault has that id.
    @discardableResult
    public func removeFault(id: String) -> Bool { faultBook.remove(id: id) }

    /// Deactivates every fault.
    public func clearFaults() { faultBook.removeAll() }

    /// The active faults, oldest first.
    public var faults: [Fault] { faultBook.all }

    // MARK: - Lifecycle

    /// Stops listening and closes every connection (hanging ones included). Safe to call twice.
    public func shutdown() async throws {
        guard stopped.withLock({ let was = $0; $0 = true; return !was }) else { return }
        for channel in serverChannels { try? await channel.close() }
        await connections.closeAll()
        logger.info("sim stopped")
    }
}

/// Why a sim could not start.
public enum PlatformSimError: Error, Sendable, CustomStringConvertible, Equatable {
    case portInUse(port: Int, region: String)
    case cannotListen(host: String, port: Int, region: String, reason: String)
    case invalidConfiguration(String)

    public var description: String {
        switch self {
        case .portInUse(let port, let region):
            "port \(port) for region \(region) is in use; pick another --port-base"
        case .cannotListen(let host, let port, let region, let reason):
            "cannot listen on \(host):\(port) for region \(region): \(reason)"
        case .invalidConfiguration(let message):
            message
        }
    }
}

/// Open channels, so shutdown can close the ones a hang keeps open.
final class ChannelRegistry: Sendable {
    private let channels = Mutex<[ObjectIdentifier: any Channel]>([:])

    func add(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLock { $0[key] = channel }
        channel.closeFuture.whenComplete { _ in self.channels.withLock { _ = $0.removeValue(forKey: key) } }
    }

    var count: Int { channels.withLock { $0.count } }

    func closeAll() async {
        let open = channels.withLock { Array($0.values) }
        for channel in open { try? await channel.close() }
    }
}
