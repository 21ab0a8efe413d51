import Foundation
import SondeTestSupport

/// The package's root folder (for scripts/ and deploy/), from this file's path.
let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().path

/// Runs a command to its end and returns its exit status and everything it printed (both
/// streams go to one file, read after the exit, so no line is lost to a pipe's timing).
@discardableResult
func run(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(300)) async throws
    -> (status: Int32, output: String)
{
    let log = try TemporaryDirectory("sonde-run")
    defer { log.remove() }
    _ = FileManager.default.createFile(atPath: log.file("out"), contents: nil)
    let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: log.file("out")))
    let process = Process()
    process.executableURL = URL(fileURLWithPath: arguments[0].contains("/") ? arguments[0] : "/usr/bin/env")
    process.arguments = arguments[0].contains("/") ? Array(arguments.dropFirst()) : arguments
    var env = ProcessInfo.processInfo.environment
    for (key, value) in environment { env[key] = value }
    process.environment = env
    process.currentDirectoryURL = URL(fileURLWithPath: packageRoot)
    process.standardOutput = handle
    process.standardError = handle
    process.standardInput = FileHandle.nullDevice
    try process.run()
    do {
        try await waitUntil("\(arguments.joined(separator: " ")) to exit", timeout: timeout) { !process.isRunning }
    } catch {
        process.terminate()
        throw error
    }
    try handle.close()
    let output = (try? String(contentsOfFile: log.file("out"), encoding: .utf8)) ?? ""
    return (process.terminationStatus, output)
}

/// Runs a command that must succeed; its output otherwise becomes the failure.
@discardableResult
func runOK(_ arguments: [String], environment: [String: String] = [:], timeout: Duration = .seconds(300)) async throws -> String {
    let (status, output) = try await run(arguments, environment: environment, timeout: timeout)
    guard status == 0 else { throw TestFailure("\(arguments.joined(separator: " ")) exited \(status):\n\(output)") }
    return output
}

