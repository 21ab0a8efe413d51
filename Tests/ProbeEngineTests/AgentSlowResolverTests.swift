import Foundation
import SondeCore
import SondeTestSupport
import Synchronization
import Testing

/// A name whose DNS answers slowly (a dead nameserver, a stuck NSS module) must cost its own
/// step its time-out and nothing more. libcurl resolves on a thread of its own and, at the
/// time-out, joined that thread inside the loop that drives every transfer: an 8 s lookup held
/// a 1 s heartbeat 7.85 s and SIGTERM 16 s (red team, 33rd session, F1 and F2).
///
/// The slow resolver is real getaddrinfo behind a preloaded shim: names ending in `.slow.test`
/// answer 127.0.0.1 after `SLOWGAI_SECS` seconds, every other name goes to the system.
extension AgentIsolationTests {
    static let slowResolverSource = """
        #define _GNU_SOURCE
        #include <dlfcn.h>
        #include <netdb.h>
        #include <stdlib.h>
        #include <string.h>
        #include <unistd.h>
        typedef int (*gai_t)(const char *, const char *, const struct addrinfo *, struct addrinfo **);
        int getaddrinfo(const char *node, const char *service, const struct addrinfo *hints, struct addrinfo **res) {
            static gai_t real;
            if (!real) real = (gai_t)dlsym(RTLD_NEXT, "getaddrinfo");
            const char *suffix = ".slow.test";
            size_t n = node ? strlen(node) : 0, s = strlen(suffix);
            if (n > s && strcmp(node + n - s, suffix) == 0) {
                const char *secs = getenv("SLOWGAI_SECS");
                sleep(secs ? atoi(secs) : 8);
                return real("127.0.0.1", service, hints, res);
            }
            return real(node, service, hints, res);
        }
        """

    /// Builds the shim with the C compiler beside Swift (clang), or `cc`; fails loudly without one.
    func buildSlowResolver(in dir: TemporaryDirectory) async throws -> String {
        let compiler = try (try? requireProgram("clang", package: "clang")) ?? requireProgram("cc", package: "gcc")
        try Self.slowResolverSource.write(toFile: dir.file("slowgai.c"), atomically: true, encoding: .utf8)
        let build = try ChildProcess(compiler, ["-shared", "-fPIC", "-O1", "-o", dir.file("slowgai.so"), dir.file("slowgai.c"), "-ldl"])
        #expect(try await build.waitForExit(timeout: .seconds(60)) == 0, "\(build.allOutput)")
        return dir.file("slowgai.so")
    }

    @Test("a name that resolves in 8 s: HTTP and TCP steps end at their 1 s time-out, once takes no longer")
    func slowLookupsEndAtTheStepsTimeOut() async throws {
        let dir = try TemporaryDirectory("isolation")
        defer { dir.remove() }
        let shim = try await buildSlowResolver(in: dir)
        for (name, step) in [
            ("slow-http", "request: {url: \"http://api.slow.test:9/\"}"),
            ("slow-tcp", "tcp: {host: api.slow.test, port: 9}"),
        ] {
            try writeProbe(dir, name, """
                name: \(name)
                component: api
                interval: 30s
                timeout: 1s
                steps:
                  - name: get
                    \(step)
                """)
        }
        let started = ContinuousClock.now
        let once = try ChildProcess(
            "sonde-agent", ["once", "--probes", dir.file("probes"), "--format", "json", "--concurrency", "2"],
            environment: ["LD_PRELOAD": shim, "SLOWGAI_SECS": "8"])
        #expect(try await once.waitForExit(timeout: .seconds(30)) == 1, "\(once.allOutput)")
        let took = ContinuousClock.now - started
        #expect(took < .seconds(5), "once took \(took) for two probes with timeout 1s")
        let results = try once.stdoutLines.map { try SondeJSON.decode(ProbeResult.self, from: Data($0.utf8)) }
        #expect(Set(results.map(\.probe)) == ["slow-http", "slow-tcp"], "\(once.allOutput)")
        for result in results {
            #expect(result.error?.kind == .timeout || result.error?.kind == .dns, "\(result.probe): \(String(describing: result.error))")
            #expect(result.durationMs <= 1100, "\(result.probe) took \(result.durationMs) ms with timeout 1s")
        }
    }

    @Test("a name that resolves in 8 s: a 1 s heartbeat keeps its schedule within 100 ms and SIGTERM is honoured within shutdown_grace")
    func heartbeatAndShutdownWhileALookupHangs() async throws {
        let dir = try TemporaryDirectory("isolation")
        defer { dir.remove() }
        let shim = try await buildSlowResolver(in: dir)
        let beats = Mutex<[ContinuousClock.Instant]>([])
        let target = try LoopbackHTTPServer { _ in
            beats.withLock { $0.append(.now) }
            return .json(200, "{}")
        }
        defer { target.stop() }
        try writeHeartbeat(dir, url: "\(target.baseURL)/beat")
        try writeProbe(dir, "slow-http", """
            name: slow-http
            component: api
            interval: 2s
            timeout: 1s
            steps:
              - name: get
                request: {url: "http://api.slow.test:9/"}
            """)
        let agent = try await startAgent(dir, id: "iso-dns", environment: ["LD_PRELOAD": shim, "SLOWGAI_SECS": "8"])
        defer { agent.signal(SIGKILL) }
        try await waitUntil("the first heartbeat", timeout: .seconds(15)) { beats.withLock { !$0.isEmpty } }
        try await expectHeartbeatsOnSchedule(beats, while: "lookups of a slow name timed out every 2 s")

        // SIGTERM while a lookup hangs (one starts every 2 s and takes 8).
        let stopAt = ContinuousClock.now
        agent.signal(SIGTERM)
        #expect(try await agent.waitForExit(timeout: .seconds(20)) == 0, "\(agent.allOutput)")
        let stopped = ContinuousClock.now - stopAt
        #expect(stopped < .milliseconds(1500), "SIGTERM took \(stopped) with shutdown_grace 1s")
    }
}
