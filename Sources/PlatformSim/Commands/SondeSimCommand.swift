import ArgumentParser
import SondeCore
import Foundation
import Logging

/// `sonde-sim`: the simulated platform (`serve`, the default), fault control against a running
/// sim (`fault set|list|clear`) and a cuttable TCP relay (`relay`).
public struct SondeSimCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sonde-sim",
        abstract: "A simulated multi-region platform (login, files, batches, models) with fault injection.",
        discussion: """
            Examples:
              sonde-sim --regions eu,us,ap --port-base 18400
              sonde-sim fault set --type error --status 503 --component files --region eu --fraction 0.3
              sonde-sim fault list
              sonde-sim fault clear --all
              sonde-sim relay --listen 127.0.0.1:0 --to 127.0.0.1:18400
            """,
        version: SondeBuildInfo.versionLine,
        subcommands: [ServeCommand.self, FaultCommand.self, RelayCommand.self],
        defaultSubcommand: ServeCommand.self
    )

    public init() {}
}

/// Parses `500ms`, `2s`, `1.5s`, `1m` or a bare number of seconds.
func parseDuration(_ text: String) -> Duration? {
    let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60)]
    for (suffix, scale) in units where trimmed.hasSuffix(suffix) {
        guard let value = Double(trimmed.dropLast(suffix.count)), value.isFinite, value >= 0 else { return nil }
        return .milliseconds(Int64((value * scale * 1000).rounded()))
    }
    guard let seconds = Double(trimmed), seconds.isFinite, seconds >= 0 else { return nil }
    return .milliseconds(Int64((seconds * 1000).rounded()))
}
