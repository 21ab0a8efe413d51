import Foundation
import SondeCore
import Synchronization

/// A real `sonde-collector serve` process on 127.0.0.1 and an ephemeral port, over a fresh SQLite
/// file in its own folder, with agents enrolled through the config file.
final class CollectorProcess: Sendable {
    let folder: String
    let port: Int
    private let process: Process
    private let log: LogBuffer

    var pid: Int32 { process.processIdentifier }
    var baseURL: String { "http://127.0.0.1:\(port)" }
    var databasePath: String { folder + "/collector.db" }

    /// Writes `collector.yaml` (agents, `extraConfig` YAML lines) into a fresh temporary folder and
    /// starts the collector; returns once it logs the port it listens on.
    /// - Parameter database: the config's `database:` (a PostgreSQL URL shares one among processes).
    init(binary: String, agents: [(id: String, region: String, key: AgentPublicKey)], database: String = "collector.db", extraConfig: [String] = []) throws {
        folder = NSTemporaryDirectory() + "sonde-bench-" + UUID().uuidString.prefix(8)
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        // Loopback only: plain HTTP said explicitly; /metrics open for the cross-check; push rate
        // limits out of the way (the benchmark pushes as fast as it can on purpose).
        var yaml =
            [
                "listen: { host: 127.0.0.1, port: 0, plain_http: true }", "database: \"\(database)\"", "metrics: { public: true }",
                "limits: { pushes_per_minute: 100000000, push_burst: 100000000, results_per_minute: 100000000000 }",
            ] + extraConfig + ["agents:"]
        for agent in agents { yaml.append("  - { id: \(agent.id), region: \(agent.region), public_key: \"\(agent.key.base64)\" }") }
        if agents.isEmpty { yaml[yaml.count - 1] = "agents: []" }
        let configPath = folder + "/collector.yaml"
        try Data(yaml.joined(separator: "\n").utf8).write(to: URL(fileURLWithPath: configPath))

        let process = Process()
        process.executableURL = URL(fileURLWithPath: binary)
        process.arguments = ["serve", "--config", configPath, "--log-level", "info"]
        let pipe = Pipe()
        process.standardError = pipe
        process.standardOutput = FileHandle.nullDevice
        let log = LogBuffer()
        pipe.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty { handle.readabilityHandler = nil; return }
            log.append(String(decoding: data, as: UTF8.self))
        }
        try process.run()
        self.process = process
        self.log = log
        // The port comes from the `Collector listening` line (http.port=…), else from /proc.
        let started = ContinuousClock.now
        var found: Int?
        while found == nil {
            guard ContinuousClock.now < started + .seconds(180), process.isRunning else {
                let running = process.isRunning
                process.terminate()
                throw BenchFailure(
                    "the collector did not start listening (\(running ? "still running after 180 s" : "exited with \(process.terminationStatus)")): \(log.text)")
            }
            let text = log.text
            if let range = text.range(of: #"http\.port=\d+"#, options: .regularExpression) {
                found = Int(text[range].dropFirst("http.port=".count))
            } else {
                found = Self.listeningPort(pid: process.processIdentifier)
            }
            if found == nil { Thread.sleep(forTimeInterval: 0.05) }
        }
        port = found!
    }

    /// The first TCP port in LISTEN state among the process's sockets (/proc/net/tcp + fd inodes).
    static func listeningPort(pid: Int32) -> Int? {
        guard let fds = try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd") else { return nil }
        var inodes = Set<String>()
        for fd in fds {
            if let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/\(fd)"), target.hasPrefix("socket:[") {
                inodes.insert(String(target.dropFirst(8).dropLast()))
            }
        }
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            for line in text.split(separator: "\n").dropFirst() {
                let f = line.split(separator: " ")
                // local_address is field 1 (HEX_IP:HEX_PORT), st is field 3 (0A = LISTEN), inode field 9.
                guard f.count > 9, f[3] == "0A", inodes.contains(String(f[9])) else { continue }
                if let portHex = f[1].split(separator: ":").last, let port = Int(portHex, radix: 16) { return port }
            }
        }
        return nil
    }

    var isRunning: Bool { process.isRunning }
    var output: String { log.text }
    var cpuSeconds: Double { ProcStat.cpuSeconds(pid: pid) ?? .nan }

    func kill(_ signal: Int32) { if process.isRunning { Foundation.kill(pid, signal) } }

    /// SIGTERM, then wait up to `timeout` for the exit (SIGKILL after that); removes the folder.
    func stop(timeout: Duration = .seconds(20), keepFolder: Bool = false) {
        kill(SIGTERM)
        let deadline = ContinuousClock.now + timeout
        while process.isRunning && ContinuousClock.now < deadline { Thread.sleep(forTimeInterval: 0.02) }
        kill(SIGKILL)
        process.waitUntilExit()
        if !keepFolder { try? FileManager.default.removeItem(atPath: folder) }
    }
}

/// The collector's stderr, kept bounded (the last 512 KiB or so).
final class LogBuffer: Sendable {
    private let buffer = Mutex("")
    func append(_ text: String) {
        buffer.withLock {
            $0 += text
            if $0.utf8.count > 1 << 20 { $0 = String($0.suffix(1 << 19)) }
        }
    }
    var text: String { buffer.withLock { $0 } }
}
