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

    @Test("warnings of every file are printed even when a file has errors, and every file's errors are reported")
    func warningsBesideErrors() async throws {
        let dir = try TemporaryDirectory("validate-warn-errors")
        defer { dir.remove() }
        try FileManager.default.createDirectory(atPath: dir.file("probes"), withIntermediateDirectories: true)
        func probe(_ name: String, extra: String) -> String {
            """
            name: \(name)
            component: edge
            interval: 30s
            timeout: 10s
            steps:
              - name: get
                request:
                  url: https://127.0.0.1:1/
                  tls: {insecure: true}
            \(extra)
            """
        }
        let good = dir.file("probes/a-good.yaml"), broken = dir.file("probes/b-broken.yaml"), other = dir.file("probes/c-broken.yaml")
        try probe("good", extra: "").write(toFile: good, atomically: true, encoding: .utf8)
        try probe("broken", extra: "    asert: {status: 200}").write(toFile: broken, atomically: true, encoding: .utf8)
        try probe("other", extra: "    assert: {status: 99}").write(toFile: other, atomically: true, encoding: .utf8)
        let validate = try ChildProcess("sonde-agent", ["validate", "--probes", dir.file("probes")])
        #expect(try await validate.waitForExit() == 1, "\(validate.allOutput)")
        let lines = validate.stdoutLines
        for file in [good, broken, other] {
            #expect(lines.contains { $0.hasPrefix("\(file):9:23: warning: steps[0].request.tls.insecure") }, "\(file): \(lines)")
        }
        #expect(lines.contains { $0.hasPrefix("\(broken):10:5: steps[0].asert: unknown") }, "\(lines)")
        #expect(lines.contains { $0.hasPrefix("\(other):10:22: steps[0].assert.status") }, "\(lines)")
        #expect(!lines.contains { $0.hasPrefix("ok:") })
    }
}
