/// What every executable prints for `--version`. `version`, `commit` and `date` are generated at
/// build time by the BuildInfo plugin (Plugins/BuildInfo) from the VERSION file and git.
public enum SondeBuildInfo {
    /// One line: `0.5.0 (commit 1a2b3c4d5e6f, 2026-12-01T20:40:54+00:00)`; the date is the commit's.
    public static var versionLine: String {
        "\(version) (commit \(commit), \(date))"
    }
}
