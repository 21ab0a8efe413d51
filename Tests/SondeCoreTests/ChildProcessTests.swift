import Foundation
import SondeTestSupport
import Testing

/// The test support's children start as a shell or systemd would start them: able to receive the
/// stop signals, even when the test that starts them runs on a Swift concurrency thread (which
/// blocks nearly every signal, and a child inherits its parent thread's mask).
@Suite struct ChildProcessTests {
    @Test func childrenStartWithTheStopSignalsUnblocked() async throws {
        // From a task on the global executor, as the tests start their servers.
        let child = try await Task { try ChildProcess("/bin/sleep", ["30"]) }.value
        let status = try String(contentsOfFile: "/proc/\(child.pid)/status", encoding: .utf8)
        let field = status.split(separator: "\n").first { $0.hasPrefix("SigBlk:") }
        let blocked = try #require(field.flatMap { UInt64($0.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16) })
        for signal in [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2] {
            #expect(blocked & (UInt64(1) << UInt64(signal - 1)) == 0, "signal \(signal) blocked in the child (SigBlk \(String(blocked, radix: 16)))")
        }
        // SIGTERM alone ends it: stop() does not need its SIGKILL.
        child.signal(SIGTERM)
        _ = try await child.waitForExit(timeout: .seconds(5))
        #expect(child.process.terminationReason == .uncaughtSignal && child.process.terminationStatus == SIGTERM)
    }
}
