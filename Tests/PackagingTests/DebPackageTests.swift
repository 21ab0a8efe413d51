import Foundation
import SondeTestSupport
import Testing

/// `scripts/package.sh deb` (what `make deb` runs) builds real .deb files; dpkg installs them into a
/// throwaway root; the installed programs run there (chroot) and accept the shipped configs.
///
/// Reduced set-up, said plainly: the packages are made from the test build's binaries (debug,
/// Swift runtime linked dynamically) rather than `make release`'s static ones, to keep `make test`
/// short; the throwaway root gets the binaries' shared libraries copied in, as `ldd` lists them,
/// instead of a debootstrapped Debian. `make deb` itself is run by hand and in the release notes.
@Suite(.serialized)
struct DebPackageTests {
    @Test func packagesInstallIntoAThrowawayRootRunAndPurge() async throws {
        for (program, package) in [("dpkg-deb", "dpkg"), ("dpkg-shlibdeps", "dpkg-dev"), ("useradd", "passwd"), ("chroot", "coreutils"), ("strip", "binutils")] {
            _ = try requireProgram(program, package: package)
        }
        let work = try TemporaryDirectory("sonde-deb")
        defer { work.remove() }
        let out = work.file("out")
        // The manual pages' tool, built before the tests (`make test`): building it from here would
        // wait for this test run's own lock on .build.
        let manualTool = Products.directory + "/generate-manual-tool"  // SwiftPM's name for a plugin's tool
        try #require(FileManager.default.isExecutableFile(atPath: manualTool), "\(manualTool) is missing: `swift package generate-manual --help` builds it (make test does)")
        let built = try await runOK(
            ["scripts/package.sh", "deb", out], environment: ["BUILD_DIR": Products.directory, "DEB_COMPRESSION": "none", "GENERATE_MANUAL": manualTool])
        let agentDeb = try #require(built.split(separator: "\n").first { $0.contains("/sonde-agent_") }).description
        let collectorDeb = try #require(built.split(separator: "\n").first { $0.contains("/sonde-collector_") }).description
        let cliDeb = try #require(built.split(separator: "\n").first { $0.contains("/sonde-cli_") }).description

        // Control data: what dpkg reads before it installs anything.
        let control = try await runOK(["dpkg-deb", "--field", agentDeb])
        #expect(control.contains("Package: sonde-agent"))
        #expect(control.contains("libcurl4"), "Depends must name libcurl: \(control)")
        #expect(control.contains("libyaml-0-2"))
        let contents = try await runOK(["dpkg-deb", "--contents", collectorDeb])
        for path in ["./usr/bin/sonde-collector", "./lib/systemd/system/sonde-collector.service",
                     "./etc/sonde/collector.yaml", "./usr/share/doc/sonde-collector/copyright",
                     "./usr/share/doc/sonde-collector/collector.md", "./usr/share/doc/sonde-collector/examples/prometheus/sonde-rules.yml",
                     "./usr/share/man/man1/sonde-collector.1.gz"] {
            #expect(contents.contains(path), "\(path) missing from the collector package")
        }
        // The CLI is a package of its own (a workstation needs neither the collector nor its
        // user), which takes /usr/bin/sonde over from collectors before 0.6.0 on upgrade.
        #expect(!contents.contains("./usr/bin/sonde\n"), "the collector package still holds the CLI")
        let cliContents = try await runOK(["dpkg-deb", "--contents", cliDeb])
        for path in ["./usr/bin/sonde", "./usr/share/man/man1/sonde.1.gz", "./usr/share/doc/sonde-cli/copyright"] {
            #expect(cliContents.contains(path), "\(path) missing from the CLI package")
        }
        #expect(!cliContents.contains("./etc/") && !cliContents.contains("systemd"), "\(cliContents)")
        let cliControl = try await runOK(["dpkg-deb", "--field", cliDeb])
        #expect(cliControl.contains("Replaces: sonde-collector (<< 0.6.0)") && cliControl.contains("Breaks: sonde-collector (<< 0.6.0)"), "\(cliControl)")
        #expect(!cliControl.contains("passwd"), "no user, so no passwd dependency: \(cliControl)")
        #expect(try await runOK(["dpkg-deb", "--field", collectorDeb]).contains("Recommends: sonde-cli"))
        #expect(try await runOK(["dpkg-deb", "--contents", agentDeb]).contains("./usr/share/man/man1/sonde-agent.1.gz"))

        let root = work.file("root")
        let dpkg = try Self.throwawayRoot(root)
        // A collector from before 0.6.0 held /usr/bin/sonde: the upgrade hands it to sonde-cli.
        let upgraded = try Self.throwawayRoot(work.file("upgraded"))
        let old = work.file("old-collector")
        try FileManager.default.createDirectory(atPath: old + "/DEBIAN", withIntermediateDirectories: true)
        try FileManager.default.createDirectory(atPath: old + "/usr/bin", withIntermediateDirectories: true)
        try "Package: sonde-collector\nVersion: 0.5.0-1\nArchitecture: all\nMaintainer: x <x@localhost>\nDescription: an older collector\n"
            .write(toFile: old + "/DEBIAN/control", atomically: true, encoding: .utf8)
        try "#!/bin/sh\necho old\n".write(toFile: old + "/usr/bin/sonde", atomically: true, encoding: .utf8)
        try await runOK(["dpkg-deb", "--root-owner-group", "-Znone", "--build", old, work.file("old.deb")])
        try await runOK(upgraded + ["--install", work.file("old.deb")])
        try await runOK(upgraded + ["--install", collectorDeb, cliDeb])
        #expect(try await runOK(upgraded + ["--search", "/usr/bin/sonde"]).hasPrefix("sonde-cli: "), "the CLI belongs to sonde-cli after the upgrade")

        let installed = try await runOK(dpkg + ["--install", agentDeb, collectorDeb, cliDeb])
        #expect(installed.contains("made /var/lib/sonde/agent.key"), "postinst did not make the key:\n\(installed)")
        for name in ["sonde-agent", "sonde-collector"] {
            #expect(installed.contains("\(name): not enabled; edit /etc/sonde/"), "the first install says how to start \(name):\n\(installed)")
        }

        // Manual pages made from the commands' own definitions: every subcommand is in them.
        let page = try await runOK(["zcat", "\(root)/usr/share/man/man1/sonde-agent.1.gz"])
        #expect(page.contains(".Sh NAME") && page.contains("sonde-agent"), "\(page.prefix(300))")
        for subcommand in ["run", "once", "validate", "keygen"] { #expect(page.contains(subcommand), "\(subcommand) missing from man sonde-agent") }

        // The maintainer scripts' work: users, state folders 0700 owned by them, configs 0640.
        let passwd = try String(contentsOfFile: "\(root)/etc/passwd", encoding: .utf8)
        let uid = try #require(Self.uid(of: "sonde", in: passwd), "no sonde user:\n\(passwd)")
        let collectorUID = try #require(Self.uid(of: "sonde-collector", in: passwd))
        try Self.expectMode(0o700, owner: uid, "\(root)/var/lib/sonde")
        try Self.expectMode(0o600, owner: uid, "\(root)/var/lib/sonde/agent.key")
        try Self.expectMode(0o700, owner: collectorUID, "\(root)/var/lib/sonde-collector")
        try Self.expectMode(0o640, owner: 0, "\(root)/etc/sonde/agent.yaml")
        try Self.expectMode(0o640, owner: 0, "\(root)/etc/sonde/collector.yaml")

        // The programs run inside the root, with the libraries they link and nothing else.
        for binary in ["usr/bin/sonde-agent", "usr/bin/sonde-collector", "usr/bin/sonde"] {
            try await Self.copyLibraries(of: "\(root)/\(binary)", into: root)
        }
        try FileManager.default.createDirectory(atPath: "\(root)/proc", withIntermediateDirectories: true)
        // A private mount and PID namespace with its own /proc: Swift reads a program's arguments
        // from /proc/self/cmdline, and the mount goes away with the namespace.
        let inRoot = ["unshare", "--mount", "--pid", "--fork", "--mount-proc=\(root)/proc", "chroot", root]
        for binary in ["sonde-agent", "sonde-collector", "sonde"] {
            let version = try await runOK(inRoot + ["/usr/bin/\(binary)", "--version"])
            #expect(version.contains("(commit "), "\(binary) --version: \(version)")
        }
        let agentOK = try await runOK(inRoot + ["/usr/bin/sonde-agent", "validate", "--config", "/etc/sonde/agent.yaml"])
        #expect(agentOK.contains("ok: 2 probes"), "\(agentOK)")
        let collectorOK = try await runOK(inRoot + ["/usr/bin/sonde-collector", "validate", "--config", "/etc/sonde/collector.yaml"])
        #expect(collectorOK.hasPrefix("ok"), "\(collectorOK)")

        // An upgrade (the same package again: configure with the old version) keeps the mode an
        // admin gave the config, and restarts a running service (systemd is not running here,
        // so that part is read from the script dpkg ran).
        try Self.setMode(0o600, "\(root)/etc/sonde/agent.yaml")
        try await runOK(dpkg + ["--install", agentDeb])
        try Self.expectMode(0o600, owner: 0, "\(root)/etc/sonde/agent.yaml")
        let postinst = try String(contentsOfFile: "\(root)/var/lib/dpkg/info/sonde-agent.postinst", encoding: .utf8)
        #expect(postinst.contains(#"if [ -n "$2" ]; then systemctl try-restart sonde-agent.service"#), "\(postinst)")

        // Purge takes the state (key, spool) and the service's enablement with it and leaves no
        // file of the package behind.
        let wants = "\(root)/etc/systemd/system/multi-user.target.wants"
        try FileManager.default.createDirectory(atPath: wants, withIntermediateDirectories: true)
        try FileManager.default.createSymbolicLink(atPath: wants + "/sonde-agent.service", withDestinationPath: "/lib/systemd/system/sonde-agent.service")
        try await runOK(dpkg + ["--purge", "sonde-agent"])
        #expect((try? FileManager.default.destinationOfSymbolicLink(atPath: wants + "/sonde-agent.service")) == nil, "enablement left behind")
        #expect(!FileManager.default.fileExists(atPath: "\(root)/var/lib/sonde"))
        #expect(!FileManager.default.fileExists(atPath: "\(root)/usr/bin/sonde-agent"))
        #expect(!FileManager.default.fileExists(atPath: "\(root)/etc/sonde/agent.yaml"))
        #expect(FileManager.default.fileExists(atPath: "\(root)/usr/bin/sonde-collector"))
    }

    @Test func theShippedAgentExampleNamesOnlyProbesThatExist() async throws {
        // validate refuses a control probe that no probe file defines (the old example named one).
        let work = try TemporaryDirectory("sonde-example")
        defer { work.remove() }
        let example = try String(contentsOfFile: "\(packageRoot)/deploy/agent.example.yaml", encoding: .utf8)
        try FileManager.default.copyItem(atPath: "\(packageRoot)/deploy/probes", toPath: work.file("probes"))
        // No collector here: validate then checks the config and probes, not the key.
        let local = example.replacing(/\n  url: [^\n]*/, with: "\n  # url: (none)")
        #expect(local != example, "the example names a collector.url")
        try local.write(toFile: work.file("agent.yaml"), atomically: true, encoding: .utf8)
        let ok = try await run([Products.path("sonde-agent"), "validate", "--config", work.file("agent.yaml")])
        #expect(ok.status == 0, "\(ok.output)")
        try local.replacingOccurrences(of: "  - reach ", with: "  - reach-reference ")
            .write(toFile: work.file("agent.yaml"), atomically: true, encoding: .utf8)
        let bad = try await run([Products.path("sonde-agent"), "validate", "--config", work.file("agent.yaml")])
        #expect(bad.status == 1)
        #expect(bad.output.contains("control_probes: no probe is named \"reach-reference\""), "\(bad.output)")
    }

    /// A throwaway root (dpkg's database and the account files the maintainer scripts edit) and
    /// the dpkg command line that installs into it.
    static func throwawayRoot(_ root: String) throws -> [String] {
        for dir in ["var/lib/dpkg/info", "var/lib/dpkg/updates", "var/lib/dpkg/triggers", "etc", "tmp"] {
            try FileManager.default.createDirectory(atPath: "\(root)/\(dir)", withIntermediateDirectories: true)
        }
        for (file, text) in [("var/lib/dpkg/status", ""), ("var/lib/dpkg/available", ""),
                             ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"), ("etc/group", "root:x:0:\n"),
                             ("etc/shadow", "root:*:19000:0:99999:7:::\n"), ("etc/gshadow", "root:*::\n")] {
            try text.write(toFile: "\(root)/\(file)", atomically: true, encoding: .utf8)
        }
        return ["dpkg", "--root=\(root)", "--force-script-chrootless", "--force-depends", "--log=/dev/null"]
    }

    static func uid(of user: String, in passwd: String) -> UInt32? {
        for line in passwd.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            if fields.count > 2, fields[0] == user { return UInt32(fields[2]) }
        }
        return nil
    }

    static func expectMode(_ mode: UInt16, owner: UInt32, _ path: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        var info = stat()
        guard stat(path, &info) == 0 else { throw TestFailure("\(path) is missing") }
        #expect(UInt16(info.st_mode & 0o7777) == mode, "\(path): mode \(String(info.st_mode & 0o7777, radix: 8))", sourceLocation: sourceLocation)
        #expect(info.st_uid == owner, "\(path): owner \(info.st_uid), expected \(owner)", sourceLocation: sourceLocation)
    }

    static func setMode(_ mode: mode_t, _ path: String) throws {
        guard chmod(path, mode) == 0 else { throw TestFailure("chmod \(path): \(String(cString: strerror(errno)))") }
    }

    /// Copies every shared library `ldd` lists for `binary` to the same path under `root`.
    static func copyLibraries(of binary: String, into root: String) async throws {
        let listing = try await runOK(["ldd", binary])
        for line in listing.split(separator: "\n") {
            guard let path = line.split(whereSeparator: { $0 == " " || $0 == "\t" }).first(where: { $0.hasPrefix("/") }).map(String.init)
            else { continue }
            let target = root + path
            if FileManager.default.fileExists(atPath: target) { continue }
            try FileManager.default.createDirectory(
                atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
            try FileManager.default.copyItem(atPath: URL(fileURLWithPath: path).resolvingSymlinksInPath().path, toPath: target)
        }
    }
}
