import Foundation
import SondeCore
import Synchronization

/// A real child process (one of Sonde's executables, usually) with its output captured line by
/// line, so tests can wait for a line, send real signals and wait for exit, all with deadlines.
public final class ChildProcess: Sendable {
    public let process: Process
    private let output = OutputBuffer()
    public let command: String

    /// Starts `executable` (a path, or the name of a product in the build folder) with `arguments`.
    public init(_ executable: String, _ arguments: [String] = [], environment: [String: String] = [:], currentDirectory: String? = nil) throws {
        let path = executable.contains("/") ? executable : Products.path(executable)
        command = ([path] + arguments).joined(separator: " ")
        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        if let currentDirectory { process.currentDirectoryURL = URL(fileURLWithPath: currentDirectory) }
        let outPipe = Pipe()
        let errPipe = Pipe()
        process.standardOutput = outPipe
        process.standardError = errPipe
        process.standardInput = FileHandle.nullDevice
        self.process = process
        try Self.spawnWithStopSignalsUnblocked(process)
        // After the spawn: Process closes the pipes' write ends in this process then, so each
        // reader sees end-of-file once the child (and anything it handed its output to) is gone.
        output.drain(outPipe.fileHandleForReading, stderr: false)
        output.drain(errPipe.fileHandleForReading, stderr: true)
        LiveChildren.shared.add(process.processIdentifier)
    }

    /// The signals tests send to stop or reload a child.
    private static let stopSignals = [SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2]

    /// Starts `process` with `stopSignals` unblocked in it. A child inherits its parent thread's
    /// signal mask, and Swift's concurrency threads (Dispatch's workers) block nearly every
    /// signal, so a server started from a test ignored SIGTERM unless it resets its own mask:
    /// nginx and PostgreSQL do, gunicorn (httpbin) and dnsmasq did not, and every `stop()` of
    /// them waited out its 5 s grace and ended in SIGKILL. Foundation's `Process` has no way to
    /// set the child's mask, so the calling thread unblocks them for the spawn (a stop signal
    /// sent to the test process itself in that moment ends it, as it should).
    private static func spawnWithStopSignalsUnblocked(_ process: Process) throws {
        var unblock = sigset_t()
        sigemptyset(&unblock)
        for signal in stopSignals { sigaddset(&unblock, signal) }
        var previous = sigset_t()
        pthread_sigmask(SIG_UNBLOCK, &unblock, &previous)
        defer { pthread_sigmask(SIG_SETMASK, &previous, nil) }
        try process.run()
    }

    public var pid: Int32 { process.processIdentifier }
    public var stdoutLines: [String] { output.withLock { $0.stdout } }
    public var stderrLines: [String] { output.withLock { $0.stderr } }
    /// Everything printed so far, both streams, complete lines and the unfinished tail.
    public var allOutput: String {
        output.withLock { ($0.stdout + $0.stderr).joined(separator: "\n") + "\n" + $0.partialOut + $0.partialErr }
    }
    public var isRunning: Bool { process.isRunning }

    /// Waits until a stdout line satisfies `predicate` and returns it.
    @discardableResult
    public func waitForLine(timeout: Duration = .seconds(30), stderr: Bool = false, _ predicate: @escaping @Sendable (String) -> Bool) async throws -> String {
        var found: String?
        try await waitUntil("a line from \(command)", timeout: timeout) {
            found = self.output.withLock { (stderr ? $0.stderr : $0.stdout).first(where: predicate) }
            if found == nil && !self.isRunning {
                // Give the pipe a moment to drain, then fail with what it printed.
                try? await Task.sleep(for: .milliseconds(100))
                found = self.output.withLock { (stderr ? $0.stderr : $0.stdout).first(where: predicate) }
                if found == nil { throw TestFailure("\(self.command) exited (\(self.process.terminationStatus)) first:\n\(self.allOutput)") }
            }
            return found != nil
        }
        return found!
    }

    public func signal(_ signal: Int32) { if process.isRunning { kill(process.processIdentifier, signal) } }

    /// Waits for the process to exit and returns its status.
    @discardableResult
    public func waitForExit(timeout: Duration = .seconds(30)) async throws -> Int32 {
        try await waitUntil("\(command) to exit", timeout: timeout) { !self.process.isRunning }
        LiveChildren.shared.remove(process.processIdentifier)
        return process.terminationStatus
    }

    /// SIGTERM, then SIGKILL if still running after `grace`.
    public func stop(grace: Duration = .seconds(5)) async {
        signal(SIGTERM)
        if (try? await waitForExit(timeout: grace)) == nil {
            signal(SIGKILL)
            _ = try? await waitForExit(timeout: .seconds(5))
        }
    }

    deinit { if process.isRunning { kill(process.processIdentifier, SIGKILL) } }

    /// SIGTERM to every child still running, SIGKILL to those left after 3 s: for a runner's
    /// Ctrl-C handler (atexit handlers do not run when a signal ends the process).
    public static func stopAllLive() {
        let pids = LiveChildren.shared.all()
        for pid in pids { kill(pid, SIGTERM) }
        let deadline = ContinuousClock.now + .seconds(3)
        while ContinuousClock.now < deadline, pids.contains(where: { kill($0, 0) == 0 && !isZombie($0) }) { usleep(50_000) }
        for pid in pids { kill(pid, SIGKILL) }
    }

    private static func isZombie(_ pid: Int32) -> Bool {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        return stat.split(separator: ")").last?.split(separator: " ").first == "Z"
    }
}

/// Every child still running is SIGKILLed when the test process exits, so a test that fails (or
/// forgets to stop what it started) never leaves sims, collectors or agents behind.
final class LiveChildren: Sendable {
    static let shared = LiveChildren()
    private let pids = Mutex<Set<Int32>>([])

    private init() {
        atexit {
            for pid in LiveChildren.shared.all() { kill(pid, SIGKILL) }
        }
    }

    func add(_ pid: Int32) { _ = pids.withLock { $0.insert(pid) } }
    func remove(_ pid: Int32) { _ = pids.withLock { $0.remove(pid) } }
    func all() -> Set<Int32> { pids.withLock { $0 } }
}

/// Captured output; a class so the pipes' reader threads can hold it.
final class OutputBuffer: Sendable {
    struct State {
        var stdout: [String] = []
        var stderr: [String] = []
        var partialOut = ""
        var partialErr = ""
    }
    private let state = Mutex(State())
    func withLock<T>(_ body: (inout State) -> T) -> T { state.withLock { body(&$0) } }

    /// Reads `handle` to its end on a thread of its own, keeping complete lines. Not
    /// `readabilityHandler`: tearing down its Dispatch read source races the descriptor's close
    /// on Linux and crashed the test process in libdispatch now and then (CI, 32nd session;
    /// swift-corelibs-libdispatch#949), and a blocking read registers nothing with Dispatch.
    func drain(_ handle: FileHandle, stderr: Bool) {
        DetachedThread.start(name: "child-output", stackSize: 256 << 10) { [self] in
            withExtendedLifetime(handle) {
                var buffer = [UInt8](repeating: 0, count: 64 << 10)
                while true {
                    let count = buffer.withUnsafeMutableBytes { read(handle.fileDescriptor, $0.baseAddress, $0.count) }
                    if count < 0, errno == EINTR { continue }
                    guard count > 0 else { return }
                    append(String(decoding: buffer[..<count], as: UTF8.self), stderr: stderr)
                }
            }
        }
    }

    private func append(_ text: String, stderr: Bool) {
        state.withLock { state in
            if stderr {
                state.partialErr += text
                Self.takeLines(from: &state.partialErr, into: &state.stderr)
            } else {
                state.partialOut += text
                Self.takeLines(from: &state.partialOut, into: &state.stdout)
            }
        }
    }

    private static func takeLines(from partial: inout String, into lines: inout [String]) {
        while let newline = partial.firstIndex(of: "\n") {
            lines.append(String(partial[..<newline]))
            partial = String(partial[partial.index(after: newline)...])
        }
    }
}

/// Where the built products (executables) live: next to the test bundle.
public enum Products {
    public static var directory: String {
        if let override = ProcessInfo.processInfo.environment["SONDE_PRODUCTS"] { return override }
        var url = URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath()
        // The test runner is <products>/SondePackageTests.xctest (a file on Linux).
        while url.pathComponents.count > 1 {
            url.deleteLastPathComponent()
            if FileManager.default.fileExists(atPath: url.appendingPathComponent("sonde-agent").path) { return url.path }
        }
        return URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().path
    }

    public static func path(_ name: String) -> String { directory + "/" + name }
}

public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Polls `condition` until it holds, failing after `timeout`. Every wait in the tests goes
/// through here: no fixed sleeps.
public func waitUntil(
    _ what: String, timeout: Duration = .seconds(30), every interval: Duration = .milliseconds(50),
    _ condition: () async throws -> Bool
) async throws {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
        if try await condition() { return }
        if clock.now >= deadline { throw TestFailure("timed out after \(timeout) waiting for \(what)") }
        try await Task.sleep(for: interval)
    }
}

/// A fresh directory under the system temp folder, removed by `remove()`.
public struct TemporaryDirectory: Sendable {
    public let path: String
    public init(_ prefix: String = "sonde-test") throws {
        let template = NSTemporaryDirectory() + "/\(prefix)-XXXXXX"
        var bytes = Array(template.utf8CString)
        guard let result = mkdtemp(&bytes) else { throw TestFailure("mkdtemp failed: \(String(cString: strerror(errno)))") }
        path = String(cString: result)
    }
    public func file(_ name: String) -> String { path + "/" + name }
    public func remove() { try? FileManager.default.removeItem(atPath: path) }
}

/// The path of a program on PATH, or a loud failure naming the Debian package that provides it.
public func requireProgram(_ name: String, package: String) throws -> String {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for dir in path.split(separator: ":").map(String.init) + ["/usr/sbin", "/sbin"] where access("\(dir)/\(name)", X_OK) == 0 {
        return "\(dir)/\(name)"
    }
    throw TestFailure("\(name) is not installed: `apt-get install \(package)` (scripts/install-deps.sh installs it)")
}

/// What a test started, stopped in reverse order once its body has returned or thrown, and
/// awaited. Why not `defer { Task { await server.stop() } }`: that returns before the server has
/// stopped, so a folder the server still writes in cannot be removed beside it (every
/// `make test` run left its nginx folders in /tmp), and the last test's task may never run.
public final class Teardown: Sendable {
    private let steps = Mutex<[@Sendable () async -> Void]>([])

    /// Adds a step; steps run last-added first, as `defer` blocks do.
    public func add(_ step: @escaping @Sendable () async -> Void) { steps.withLock { $0.append(step) } }

    fileprivate func run() async {
        let all = steps.withLock { steps in
            defer { steps = [] }
            return steps
        }
        for step in all.reversed() { await step() }
    }
}

/// Runs `body`, then every step it added to its `Teardown`, also when `body` throws.
public func withTeardown<T>(_ body: (Teardown) async throws -> T) async throws -> T {
    let teardown = Teardown()
    do {
        let value = try await body(teardown)
        await teardown.run()
        return value
    } catch {
        await teardown.run()
        throw error
    }
}
