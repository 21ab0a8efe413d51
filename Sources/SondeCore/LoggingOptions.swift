import ArgumentParser
import Logging
import Synchronization

/// `--log-level` and `--log-format`, shared by every long-running command (agent `run` and
/// `once`, collector `serve`, the sim). Logs go to stderr; results and tables to stdout.
public struct LoggingOptions: ParsableArguments {
    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    public var logLevel: String?

    @Option(name: .long, help: "Log format: text (time, level, key=value metadata, message) or json (one object per line).")
    public var logFormat: LogFormat = .text

    public init() {}

    public func validate() throws {
        if let logLevel, Logger.Level(rawValue: logLevel) == nil {
            throw ValidationError("--log-level expects one of trace, debug, info, notice, warning, error, critical; got \"\(logLevel)\"")
        }
    }

    /// Sets up the process's logging (once, from a command: libraries only take a `Logger`) and
    /// returns the command's logger at the chosen level, or `level` when none was given.
    public func makeLogger(label: String, default level: Logger.Level) -> Logger {
        let chosen = logLevel.flatMap(Logger.Level.init(rawValue:)) ?? level
        SondeLogging.bootstrap(level: chosen, format: logFormat)
        var logger = Logger(label: label)
        logger.logLevel = chosen
        return logger
    }
}

extension LogFormat: ExpressibleByArgument {}

/// swift-log's bootstrap may run once per process; a command that has no logging options (the
/// collector's admin commands) takes the defaults through the same call, and a second call (a
/// test running two commands in one process) keeps the first.
public enum SondeLogging {
    private static let done = Mutex(false)

    public static func bootstrap(level: Logger.Level = .info, format: LogFormat = .text) {
        let first = done.withLock { done in
            defer { done = true }
            return !done
        }
        if first { LoggingSystem.bootstrap { SondeLogHandler(label: $0, level: level, format: format) } }
    }
}
