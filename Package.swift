// swift-tools-version:6.1
import PackageDescription

// One place for the compiler settings every target shares: Swift 6 mode (strict concurrency)
// and explicit `any` for existentials.
let swiftSettings: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
]

/// The agent's release link on Linux (docs/agent.md, "Install"): lld places the functions a
/// running agent executes (`Sources/sonde-agent/link-order.txt`, made by
/// `scripts/bench/agent_link_order.py`) next to each other, so the pages the kernel maps around
/// each one hold code the agent runs rather than code it never calls; and packs its relative
/// relocations (DT_RELR, glibc 2.36, which the binary needs already), which ld.so otherwise
/// reads as a 1 MiB table at every start. A function missing from the list still links and runs,
/// only placed with the cold code.
let agentLinkOrder = String(#filePath.dropLast("Package.swift".count)) + "Sources/sonde-agent/link-order.txt"
let agentLinkerSettings: [LinkerSetting] = [
    .unsafeFlags(
        [
            "-use-ld=lld", "-Xlinker", "--symbol-ordering-file=\(agentLinkOrder)", "-Xlinker", "--no-warn-symbol-ordering",
            "-Xlinker", "-z", "-Xlinker", "pack-relative-relocs",
        ], .when(platforms: [.linux], configuration: .release))
]

let package = Package(
    name: "Sonde",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sonde-agent", targets: ["sonde-agent"]),
        .executable(name: "sonde-collector", targets: ["sonde-collector"]),
        .executable(name: "sonde", targets: ["sonde"]),
        .executable(name: "sonde-sim", targets: ["sonde-sim"]),
        .executable(name: "sonde-agent-bench", targets: ["sonde-agent-bench"]),
        // For the fuzzing package in Fuzz/ (libFuzzer harnesses of the parsers).
        .library(name: "ProbeEngine", targets: ["ProbeEngine"]),
        .library(name: "SondeCore", targets: ["SondeCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
        // HTTPTypes (the request fields the collector's access checks read) comes with
        // Hummingbird; named here because the collector imports it itself.
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
    ],
    targets: [
        // MARK: - Shared foundation (agent, collector, CLI and sim all use these)

        /// libcurl, found by pkg-config, plus a shim of non-variadic wrappers.
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        /// libyaml, found by pkg-config: the parser under SondeYAML.
        .systemLibrary(
            name: "CYAML",
            pkgConfig: "yaml-0.1",
            providers: [.apt(["libyaml-dev"])]
        ),
        /// YAML text → a node tree with resolved tags and line:column marks, over libyaml, without
        /// Foundation: probe scripts, the agent's and the collector's config (one YAML stack).
        .target(
            name: "SondeYAML",
            dependencies: ["CYAML"],
            swiftSettings: swiftSettings
        ),
        /// PCRE2 (8-bit), found by pkg-config: probe scripts' regular expressions, with match,
        /// depth and heap limits and callouts, so a catastrophic pattern is stopped on time.
        .systemLibrary(
            name: "CPCRE2",
            pkgConfig: "libpcre2-8",
            providers: [.apt(["libpcre2-dev"])]
        ),
        /// zlib, brotli's decoder and zstd (the libraries libcurl links): response bodies' content
        /// codings, decoded by CurlHTTP itself so that each decoder's memory is counted.
        .systemLibrary(
            name: "CCompression",
            providers: [.apt(["zlib1g-dev", "libbrotli-dev", "libzstd-dev"])]
        ),
        /// OpenSSL's libcrypto, found by pkg-config: Ed25519 and SHA-256 for SondeCore. libcurl
        /// loads it anyway, so the agent carries no second crypto library.
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "libcrypto",
            providers: [.apt(["libssl-dev"])]
        ),
        /// Result model, push envelope, signing keys: the contract between agent and collector.
        .target(
            name: "SondeCore",
            dependencies: [
                "COpenSSL", .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings,
            plugins: ["BuildInfo"]
        ),
        /// Generates SondeBuildInfo's version, commit and date (`--version`) before each build.
        .plugin(name: "BuildInfo", capability: .buildTool(), path: "Plugins/BuildInfo"),
        /// A small HTTP client over libcurl's easy interface with phase-by-phase timings.
        .target(
            name: "CurlHTTP",
            dependencies: ["CCurl", "CCompression", "SondeCore"],
            swiftSettings: swiftSettings
        ),

        // MARK: - Agent side (no server stack, no database)

        /// Probe scripts (YAML) → validated model → runs over CurlHTTP → ProbeResult.
        .target(
            name: "ProbeEngine",
            dependencies: [
                "SondeCore", "CurlHTTP", "SondeYAML", "CPCRE2",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        /// The agent process: config, scheduler, durable spool, signed uploader, CLI commands.
        .target(
            name: "AgentRuntime",
            dependencies: [
                "SondeCore", "CurlHTTP", "ProbeEngine", "SondeYAML",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: - Simulated platform

        /// A realistic multi-region platform (login, files, batches, models) with fault injection.
        .target(
            name: "PlatformSim",
            dependencies: [
                "SondeCore", "CurlHTTP",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: - Collector side

        /// Verdicts and incidents from results across agents and regions: pure logic, no I/O.
        .target(
            name: "Correlation",
            dependencies: ["SondeCore"],
            swiftSettings: swiftSettings
        ),
        /// Storage behind a protocol: SQLite (GRDB), PostgreSQL (PostgresNIO) and in-memory implementations.
        .target(
            name: "CollectorStore",
            dependencies: [
                "SondeCore", "Correlation", "CollectorAPI",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // Its pool's error type, to say in words what a pool that is backing off means.
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOFoundationCompat", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: swiftSettings
        ),
        /// The collector server: ingest, evaluator, incidents, webhooks, API, metrics, status page.
        .target(
            name: "Collector",
            dependencies: [
                "SondeCore", "Correlation", "CollectorAPI", "CollectorStore", "CurlHTTP", "SondeYAML",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings
        ),
        /// The collector API's response bodies, shared by the server, the CLI and tests.
        .target(
            name: "CollectorAPI",
            dependencies: ["SondeCore", "Correlation"],
            swiftSettings: swiftSettings
        ),
        /// The operator's `sonde` CLI against a collector's API.
        .target(
            name: "SondeCLI",
            dependencies: [
                "SondeCore", "CurlHTTP", "Correlation", "CollectorAPI",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: swiftSettings
        ),

        // MARK: - Executables: one Entrypoint.swift each

        .executableTarget(
            name: "sonde-agent", dependencies: ["AgentRuntime", "SondeCore"], exclude: ["link-order.txt"], swiftSettings: swiftSettings,
            linkerSettings: agentLinkerSettings),
        .executableTarget(
            name: "sonde-collector", dependencies: ["Collector", "SondeCore", .product(name: "Logging", package: "swift-log")], swiftSettings: swiftSettings),
        .executableTarget(name: "sonde", dependencies: ["SondeCLI", "SondeCore"], swiftSettings: swiftSettings),
        .executableTarget(name: "sonde-sim", dependencies: ["PlatformSim", "SondeCore"], swiftSettings: swiftSettings),

        // MARK: - Benchmarks (`make bench`; run against release builds)

        .executableTarget(
            name: "sonde-bench",
            dependencies: [
                "SondeCore", "CurlHTTP", "Correlation", "CollectorStore", "Collector", "CollectorAPI", "SondeTestSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/sonde-bench",
            swiftSettings: swiftSettings),
        /// The cost benchmark's memory floor: Sonde's agent stack (libcurl, Swift concurrency,
        /// ArgumentParser, ServiceLifecycle, swift-log, FoundationEssentials) with no Sonde code.
        .target(name: "MemoryFloorSupport", dependencies: ["CCurl"], path: "Benchmarks/MemoryFloorSupport", swiftSettings: swiftSettings),
        /// The Swift floor: the standard library and libcurl, nothing else.
        .executableTarget(
            name: "sonde-swift-floor", dependencies: ["MemoryFloorSupport"], path: "Benchmarks/sonde-swift-floor", swiftSettings: swiftSettings),
        .executableTarget(
            name: "sonde-memory-floor",
            dependencies: [
                "MemoryFloorSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Benchmarks/sonde-memory-floor",
            swiftSettings: swiftSettings),
        /// The agent's benchmarks: probe cost, timing accuracy, scale (see scripts/bench-agent.sh).
        .executableTarget(
            name: "sonde-agent-bench",
            dependencies: [
                "ProbeEngine", "AgentRuntime", "CurlHTTP", "SondeCore", "PlatformSim",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            path: "Benchmarks/sonde-agent-bench",
            swiftSettings: swiftSettings
        ),

        /// The verdict scenarios of issue 10 (`make scenarios`), writing VERDICTS.md.
        .executableTarget(
            name: "sonde-scenarios",
            dependencies: ["SondeScenarios", "SondeTestSupport", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "Benchmarks/sonde-scenarios",
            swiftSettings: swiftSettings
        ),

        // MARK: - Tests

        /// Helpers for tests: start processes, wait for conditions with deadlines, free ports.
        .target(
            name: "SondeTestSupport",
            dependencies: ["SondeCore", "CurlHTTP", .product(name: "Logging", package: "swift-log")],
            path: "Tests/SondeTestSupport",
            swiftSettings: swiftSettings
        ),
        /// The whole system as processes (sim, collector, agents behind relays) and the scenario
        /// suite run against it: the end-to-end tests and `sonde-scenarios` share it.
        .target(
            name: "SondeScenarios",
            dependencies: ["SondeCore", "CurlHTTP", "CollectorAPI", "Correlation", "SondeTestSupport"],
            path: "Tests/SondeScenarios",
            swiftSettings: swiftSettings
        ),
        .testTarget(name: "SondeYAMLTests", dependencies: ["SondeYAML"], swiftSettings: swiftSettings),
        .testTarget(name: "SondeCoreTests", dependencies: ["SondeCore", "CurlHTTP", "SondeTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "ProbeEngineTests", dependencies: ["ProbeEngine", "PlatformSim", "SondeTestSupport"], exclude: ["Corpus"], swiftSettings: swiftSettings),
        .testTarget(name: "AgentRuntimeTests", dependencies: ["AgentRuntime", "SondeTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "PlatformSimTests", dependencies: ["PlatformSim", "SondeTestSupport"], swiftSettings: swiftSettings),
        .testTarget(name: "CorrelationTests", dependencies: ["Correlation", "SondeTestSupport"], swiftSettings: swiftSettings),
        .testTarget(
            name: "CollectorTests",
            dependencies: [
                "Collector", "CollectorAPI", "CollectorStore", "Correlation", "SondeCLI", "SondeTestSupport", "CurlHTTP",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: swiftSettings),
        /// Reliability drills (quick versions; `make drill` runs the full ones with SONDE_DRILL_FULL=1).
        .testTarget(
            name: "DrillTests",
            dependencies: ["Collector", "CollectorAPI", "CollectorStore", "SondeCore", "CurlHTTP", "SondeTestSupport", "SondeScenarios"],
            swiftSettings: swiftSettings),
        .testTarget(
            name: "EndToEndTests", dependencies: ["SondeCore", "CurlHTTP", "SondeTestSupport", "SondeScenarios", "CollectorAPI", "Correlation"],
            swiftSettings: swiftSettings),
        /// Packages (`make deb`) installed into a throwaway root; shipped configs and alert rules.
        .testTarget(name: "PackagingTests", dependencies: ["SondeTestSupport"], swiftSettings: swiftSettings),
        /// Quick reliability drills of the agent against a real collector (full ones: scripts/drill-agent.sh).
        .testTarget(name: "AgentDrillTests", dependencies: ["AgentRuntime", "SondeCore", "CurlHTTP", "SondeTestSupport"], swiftSettings: swiftSettings),
    ]
)
