import Foundation
import SondeTestSupport
import Testing

@testable import SondeCore

/// The binaries read their arguments even when `CommandLine.arguments` comes back empty, as it
/// does under a preloaded library that calls `setenv` early (libfaketime; swiftlang/swift#76080).
@Suite struct ProcessArgumentsTests {
    @Test func cmdlineIsSplitAtNULs() {
        let bytes = Array("sonde-agent\0run\0--config\0a b.yaml\0\0".utf8)
        #expect(ProcessArguments.parse(cmdline: bytes) == ["run", "--config", "a b.yaml", ""])
        #expect(ProcessArguments.parse(cmdline: Array("sonde\0".utf8)) == [])
        #expect(ProcessArguments.parse(cmdline: []) == [])
    }

    /// A real binary under libfaketime (how an agent's clock is skewed in the scenarios) parses
    /// its subcommand instead of printing its help with exit status 0.
    @Test func argumentsSurviveLibfaketime() async throws {
        let candidates = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib"].map { $0 + "/faketime/libfaketime.so.1" }
        let library = try #require(
            candidates.first { FileManager.default.fileExists(atPath: $0) },
            "libfaketime is missing: apt-get install libfaketime, or run scripts/install-deps.sh")
        for binary in ["sonde-agent", "sonde-collector", "sonde"] {
            let child = try ChildProcess(
                binary, ["--version"], environment: ["LD_PRELOAD": library, "FAKETIME": "-240", "FAKETIME_DONT_FAKE_MONOTONIC": "1"])
            let status = try await child.waitForExit()
            #expect(status == 0, "\(binary): \(child.allOutput)")
            #expect(!child.allOutput.contains("USAGE:"), "\(binary) saw no arguments: \(child.allOutput.prefix(300))")
            #expect(child.allOutput.contains("0."), "\(binary) printed its version: \(child.allOutput.prefix(300))")
        }
    }
}
