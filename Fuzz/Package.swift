// swift-tools-version:5.3
import PackageDescription

// Coverage-guided fuzzing (libFuzzer) of Sonde's parsers of untrusted input. A package of its own
// so that the main build never sees `-sanitize=fuzzer` or a target without `main`. Built and run by
// scripts/fuzz.sh (part of `make drill`):
//   swift build -c release --package-path Fuzz -Xswiftc -sanitize=fuzzer -Xswiftc -parse-as-library
// Tools version 5.3 on purpose (as swift-protobuf's FuzzTesting): later versions rename an
// executable's `main` for testability, and libFuzzer must provide `main` itself. Each target is a
// `main.swift` holding only the `LLVMFuzzerTestOneInput` entry point.
let package = Package(
    name: "SondeFuzz",
    dependencies: [.package(name: "Sonde", path: "..")],
    targets: [
        /// The probe-script parser: YAML written by people, read by every agent at start-up.
        .target(name: "FuzzProbeScript", dependencies: [.product(name: "ProbeEngine", package: "Sonde")]),
        /// The collector's push decoder (`PushBatchDecoder`), against Foundation's JSONDecoder.
        .target(name: "FuzzPushBatch", dependencies: [.product(name: "SondeCore", package: "Sonde")]),
    ]
)
