import Foundation
import SondeCore
import SondeTestSupport
import Testing

/// TLS servers that misbehave after the handshake (issue 11).
extension AgentIsolationTests {    /// A server that completes the TLS handshake and then closes or stalls still shows when its
    /// certificate expires: the https step's `cert_not_after` was kept only when the handshake
    /// itself failed (red team, 33rd session, F5).
    @Test("an https step failing after a good handshake keeps cert_not_after")
    func certificateKeptWhenTheRequestFailsAfterTheHandshake() async throws {
        let dir = try TemporaryDirectory("isolation")
        defer { dir.remove() }
        let certificates = try TestCertificates(in: dir.file("pki"))
        let port = try freeLoopbackPort()
        let server = try ChildProcess("/usr/bin/env", [
            "python3", "-c",
            """
            import socket, ssl, sys
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(sys.argv[1], sys.argv[2])
            listener = socket.create_server(("127.0.0.1", int(sys.argv[3])))
            print("listening", flush=True)
            while True:
                connection, _ = listener.accept()
                try:
                    context.wrap_socket(connection, server_side=True).close()  # handshake, then close
                except Exception:
                    connection.close()
            """,
            certificates.serverCert, certificates.serverKey, "\(port)",
        ])
        defer { server.signal(SIGKILL) }
        _ = try await server.waitForLine { $0 == "listening" }
        try writeProbe(dir, "closes", """
            name: closes
            component: api
            interval: 30s
            timeout: 3s
            steps:
              - name: get
                request: {url: "https://localhost:\(port)/", tls: {ca_file: \(certificates.caCert)}}
            """)
        let once = try ChildProcess("sonde-agent", ["once", "--probes", dir.file("probes"), "--format", "json"])
        #expect(try await once.waitForExit(timeout: .seconds(20)) == 1, "\(once.allOutput)")
        let result = try SondeJSON.decode(ProbeResult.self, from: Data(try #require(once.stdoutLines.first).utf8))
        #expect(result.outcome == .failed && result.error?.kind != .tls, "\(String(describing: result.error))")
        #expect(result.steps.first?.certNotAfter != nil, "\(once.allOutput)")
    }
}
