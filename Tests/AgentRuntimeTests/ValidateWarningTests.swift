import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// `sonde-agent validate` prints warnings with file:line:column and still passes.
@Suite("sonde-agent validate warnings")
struct ValidateWarningTests {
    @Test("insecure TLS and a stuck_after state differing in case are warnings; the probes still validate")
    func warnings() async throws {
        let dir = try TemporaryDirectory("validate-warn")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        let file = dir.file("probes/batch.yaml")
        try """
            name: batch
            component: batch
            interval: 30s
            timeout: 2m
            steps:
              - name: wait
                request:
                  url: https://127.0.0.1:1/batch
                  tls: {insecure: true}
                poll:
                  every: 1s
                  max_wait: 1m
                  state: $.status
                  until: "$.status == COMPLETED"
                  stuck_after: {finalizing: 10s, completed: 5s}
            """.write(toFile: file, atomically: true, encoding: .utf8)
        let validate = try ChildProcess("sonde-agent", ["validate", "--probes", dir.file("probes")])
        #expect(try await validate.waitForExit() == 0, "\(validate.allOutput)")
        let lines = validate.stdoutLines
        #expect(lines.contains { $0.hasPrefix("\(file):9:23: warning: steps[0].request.tls.insecure: insecure: true accepts any certificate") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("\(file):15:38: warning: steps[0].poll.stuck_after.completed: 'completed' differs only in case from the state 'COMPLETED'") }, "\(lines)")
        #expect(!lines.contains { $0.contains("finalizing") })
        #expect(lines.last == "ok: 1 probes")
    }
}
