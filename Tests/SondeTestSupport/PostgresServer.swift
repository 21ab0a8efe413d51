import Foundation
import Synchronization

/// A throwaway PostgreSQL server from Debian's `postgresql` package (binaries under
/// /usr/lib/postgresql/*/bin): `initdb` in a temporary directory, `postgres` on a free loopback
/// port, run as an unprivileged user (`nobody` when the tests run as root, as in CI), stopped and
/// removed when the test process exits. Collectors connect as the role `sonde`, which is not a
/// superuser and owns each test's database. A machine without PostgreSQL fails the test that
/// asked for it, saying how to install it: never a silent skip.
///
/// Non-default setting: `fsync=off` (a test database is thrown away; durability is SQLite's and
/// PostgreSQL's own business, not what these tests check).
public final class PostgresServer: Sendable {
    public let port: Int
    public let directory: String
    public let binDirectory: String
    public let password = "sonde-test-password"
    /// The postmaster's process id.
    public var pid: Int32 { process.pid }
    let process: ChildProcess
    let runAs: [String]
    private let databases = Mutex(0)

    private static let sharedServer = Mutex<PostgresServer?>(nil)
    private static let starting = Mutex(false)

    /// The one server of this test process, started on first use.
    public static func shared() async throws -> PostgresServer {
        while true {
            if let server = sharedServer.withLock({ $0 }) { return server }
            let mine = starting.withLock { busy -> Bool in
                if busy { return false }
                busy = true
                return true
            }
            if mine {
                defer { starting.withLock { $0 = false } }
                let server = try await PostgresServer()
                sharedServer.withLock { $0 = server }
                atexit { PostgresServer.sharedServer.withLock { $0 }?.stop() }
                return server
            }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Where Debian puts the server binaries (the newest major version installed).
    public static func findBinaries() throws -> String {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .filter { FileManager.default.isExecutableFile(atPath: "\(root)/\($0)/bin/postgres") }
            .sorted { (Int($0) ?? 0) < (Int($1) ?? 0) }
        guard let newest = versions.last else {
            throw TestFailure(
                "PostgreSQL is not installed (no \(root)/*/bin/postgres): run scripts/install-deps.sh, or apt-get install postgresql; the PostgreSQL tests need a real server")
        }
        return "\(root)/\(newest)/bin"
    }

    public init() async throws {
        binDirectory = try Self.findBinaries()
        let dir = try TemporaryDirectory("sonde-pg")
        directory = dir.path
        // PostgreSQL refuses to run as root: as root, hand the directory to `nobody` and drop to it.
        if getuid() == 0 {
            guard let entry = getpwnam("nobody") else { throw TestFailure("no user \"nobody\" to run PostgreSQL as") }
            let (uid, gid) = (entry.pointee.pw_uid, entry.pointee.pw_gid)
            guard chown(directory, uid, gid) == 0 else { throw TestFailure("chown \(directory): \(String(cString: strerror(errno)))") }
            guard FileManager.default.isExecutableFile(atPath: "/usr/bin/setpriv") else {
                throw TestFailure("setpriv (util-linux) is missing: it drops root to run PostgreSQL")
            }
            runAs = ["/usr/bin/setpriv", "--reuid=\(uid)", "--regid=\(gid)", "--clear-groups", "--"]
        } else {
            runAs = []
        }
        try Self.runToEnd(
            runAs + [
                "\(binDirectory)/initdb", "-D", "\(directory)/data", "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                "--no-sync",
            ], in: directory)
        port = try freeLoopbackPort()
        let command = runAs + [
            "\(binDirectory)/postgres", "-D", "\(directory)/data", "-p", "\(port)", "-k", directory, "-c", "listen_addresses=127.0.0.1",
            "-c", "fsync=off", "-c", "max_connections=300", "-c", "log_min_messages=warning",
        ]
        process = try ChildProcess(command[0], Array(command.dropFirst()), currentDirectory: directory)
        try await waitUntil("PostgreSQL to accept connections on port \(port)", timeout: .seconds(60), every: .milliseconds(100)) {
            if !process.isRunning { throw TestFailure("postgres exited (\(process.process.terminationStatus)):\n\(process.allOutput)") }
            return (try? self.psql("SELECT 1")) != nil
        }
        try psql("CREATE ROLE sonde LOGIN PASSWORD '\(password)'")
    }

    /// A new, empty database owned by the role `sonde`; its URL (password included, no TLS).
    public func createDatabase() throws -> String {
        let name = "sonde_\(databases.withLock { count in count += 1; return count })_\(getpid())"
        try psql("CREATE DATABASE \(name) OWNER sonde")
        return url(database: name)
    }

    public func url(database: String, port: Int? = nil) -> String {
        "postgres://sonde:\(password)@127.0.0.1:\(port ?? self.port)/\(database)?sslmode=disable"
    }

    /// Runs SQL as the superuser over the Unix socket; returns psql's unaligned, tuples-only output.
    @discardableResult
    public func psql(_ sql: String, database: String = "postgres") throws -> String {
        try Self.runToEnd(
            runAs + ["\(binDirectory)/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", directory, "-p", "\(port)", "-U", "postgres", "-d", database, "-c", sql],
            in: directory)
    }

    /// Stops the server (fast shutdown) and removes its directory.
    public func stop() {
        guard process.isRunning else { return }
        process.signal(SIGINT)
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning && ContinuousClock.now < deadline { usleep(20_000) }
        process.signal(SIGKILL)
        try? FileManager.default.removeItem(atPath: directory)
    }

    /// Runs a command to its end; throws with its output when it fails.
    @discardableResult
    static func runToEnd(_ command: [String], in directory: String) throws -> String {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: command[0])
        process.arguments = Array(command.dropFirst())
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        let text = String(decoding: output, as: UTF8.self)
        guard process.terminationStatus == 0 else {
            throw TestFailure("\(command.joined(separator: " ")) failed (\(process.terminationStatus)):\n\(text)")
        }
        return text.trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
