import FoundationEssentials

/// The process's arguments after the executable's name, for the command-line parsers.
///
/// Swift's `CommandLine.arguments` finds `argv` through `environ`, so it comes back empty when a
/// library that runs before the Swift runtime calls `setenv` (libfaketime, preloaded to skew an
/// agent's clock, does; swiftlang/swift#76080). The binaries then parsed no arguments at all and
/// printed their help with exit status 0. `/proc/self/cmdline` still has them.
public enum ProcessArguments {
    public static var afterExecutable: [String] {
        let arguments = CommandLine.arguments
        if !arguments.isEmpty { return Array(arguments.dropFirst()) }
        guard let data = FileManager.default.contents(atPath: "/proc/self/cmdline") else { return [] }
        return parse(cmdline: Array(data))
    }

    /// NUL-terminated arguments, the executable's name first (the format of /proc/PID/cmdline).
    static func parse(cmdline: [UInt8]) -> [String] {
        var parts = cmdline.split(separator: 0, omittingEmptySubsequences: false).map { String(decoding: $0, as: UTF8.self) }
        if cmdline.last == 0 { parts.removeLast() }
        return Array(parts.dropFirst())
    }
}
