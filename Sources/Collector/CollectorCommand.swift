import ArgumentParser
import CollectorStore
import Foundation
import Logging
import NIOCore
import SondeCore

/// `sonde-collector`: the server and its offline admin commands.
public struct CollectorCommand: AsyncParsableCommand {
    public static let configuration = CommandConfiguration(
        commandName: "sonde-collector",
        abstract: "Sonde's collector: receives signed probe results, correlates them, serves the API and status page, sends alerts.",
        version: SondeBuildInfo.versionLine,
        subcommands: [Serve.self, Migrate.self, Validate.self, Agents.self])

    public init() {}
}

extension CollectorCommand {
    public struct Serve: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Run the collector until SIGTERM or SIGINT.")

        @Option(name: .long, help: "The YAML configuration file (see docs/collector.md).")
        var config: String

        @OptionGroup var logging: LoggingOptions

        public init() {}

        public func run() async throws {
            let logger = logging.makeLogger(label: "sonde-collector", default: .info)
            let configuration: CollectorConfig
            do { configuration = try CollectorConfig.load(path: config) } catch {
                printConfigError(error)
                throw ExitCode(2)
            }
            // Files this process creates (database, WAL) are owner-only whatever the shell's umask.
            umask(0o077)
            let collector: BuiltCollector
            do { collector = try await buildCollector(config: configuration, configPath: config, logger: logger) } catch let error as ConfigError {
                printError("sonde-collector: \(config): \(error.field.map { "\($0): " } ?? "")\(error.message)")
                throw ExitCode(2)
            } catch let error as TLSSetupError {
                printError("sonde-collector: \(config): \(error)")
                throw ExitCode(2)
            } catch let error as StorageError {
                printError("sonde-collector: \(error)")
                // A SQLite file that cannot be opened is this host's set-up (a folder, its owner),
                // which a restart does not change: exit 2, as for a bad config, so systemd stops
                // retrying (RestartPreventExitStatus=2). An unreachable PostgreSQL may come back: 1.
                throw ExitCode(PostgresURL.isPostgres(configuration.databasePath) ? 1 : 2)
            }
            do {
                try await collector.runUntilSignalled()
            } catch let error as IOError where error.errnoCode == EADDRINUSE || error.errnoCode == EACCES || error.errnoCode == EADDRNOTAVAIL {
                printError(
                    "sonde-collector: listen: cannot listen on \(configuration.host):\(configuration.port): \(String(cString: strerror(error.errnoCode)))"
                        + " (another process on that port, a port below 1024 without the right, or an address this host does not have); check listen in \(config)")
                // A taken port may free itself (the previous collector still closing its
                // connections): exit 1, so systemd tries again. An address this host does not
                // have, or a port it may not bind, is the config's: 2 (RestartPreventExitStatus).
                throw ExitCode(error.errnoCode == EADDRINUSE ? 1 : 2)
            }
            logger.info("Collector stopped")
        }
    }

    /// Creates or upgrades the schema of the configured database and exits: for deployments that
    /// migrate as a separate step (`serve` also migrates, under the same lock, before listening).
    public struct Migrate: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Create or upgrade the database schema, then exit.")

        @Option(name: .long, help: "The YAML configuration file (its `database:` is migrated).")
        var config: String

        public init() {}

        public func run() async throws {
            SondeLogging.bootstrap()
            let logger = Logger(label: "sonde-collector")
            let configuration: CollectorConfig
            do { configuration = try CollectorConfig.load(path: config) } catch {
                printConfigError(error)
                throw ExitCode(2)
            }
            umask(0o077)
            do {
                let store = try openStore(config: configuration, logger: logger)
                try await store.migrate()
                if let postgres = store as? PostgresCollectorStore {
                    print("database \(postgres.url) is at schema \(try await postgres.appliedMigrations().last ?? "?")")
                    postgres.close()
                } else {
                    print("database \(configuration.databasePath) is up to date")
                }
            } catch let error as ConfigError {
                printError("sonde-collector: \(config): \(error.field.map { "\($0): " } ?? "")\(error.message)")
                throw ExitCode(2)
            } catch {
                printError("sonde-collector: \(error)")
                throw ExitCode(1)
            }
        }
    }

    /// Agent administration on the collector's database, SQLite or PostgreSQL (safe while collectors
    /// run: they read enrolment and revocation from the database).
    public struct Agents: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Enrol, revoke and list agents in a collector database.", subcommands: [Add.self, Revoke.self, List.self])
        public init() {}
    }
}

/// Which database the admin commands work on: `--db` (an SQLite file, or a PostgreSQL URL as
/// `database:` takes one; its password from `PGPASSWORD` keeps it out of `ps`), or `--config`
/// (the collector's own config file, so the admin commands reach exactly what `serve` uses).
struct DatabaseOption: ParsableArguments {
    @Option(name: .long, help: "The collector's database: an SQLite file, or postgres://USER@HOST[:PORT]/DB (password from PGPASSWORD).")
    var db: String?

    @Option(name: .long, help: "The collector's YAML config file: its `database:` is used (SQLite or PostgreSQL).")
    var config: String?

    @Flag(help: "Create the SQLite database when the file does not exist (otherwise a mistyped --db is an error).")
    var create = false

    func validate() throws {
        guard (db == nil) != (config == nil) else { throw ValidationError("give the database with either --db or --config (not both)") }
    }

    /// How messages name the database.
    var name: String { db ?? "the database of \(config ?? "")" }
    /// The same option again, for hints that suggest another command.
    var flag: String { db.map { "--db \($0)" } ?? "--config \(config ?? "")" }

    /// Opens (and migrates) the database, runs `body`, and closes it.
    func withStore<T>(_ body: (any CollectorStorage) async throws -> T) async throws -> T {
        let store = try await open()
        defer { (store as? PostgresCollectorStore)?.close() }
        return try await body(store)
    }

    private func open() async throws -> any CollectorStorage {
        SondeLogging.bootstrap()
        let logger = Logger(label: "sonde-collector")
        let path: String
        var sync = SQLiteCollectorStore.Durability.full
        if let config {
            let configuration: CollectorConfig
            do { configuration = try CollectorConfig.load(path: config) } catch {
                throw ValidationError("--config: \(error)")
            }
            path = configuration.databasePath
            sync = configuration.databaseSync
        } else {
            path = db ?? ""
        }
        if PostgresURL.isPostgres(path) {
            let store: PostgresCollectorStore
            do { store = try PostgresCollectorStore(url: path, logger: logger) } catch let error as StorageError {
                throw ValidationError("\(db != nil ? "--db" : "database"): \(error.description)")
            }
            do { try await store.migrate() } catch {
                store.close()
                throw error
            }
            return store
        }
        guard path != ":memory:" else { throw ValidationError("\(name) is `:memory:`: it keeps nothing to administer") }
        // A typo in --db must not quietly enrol agents into a new, empty database.
        if !create && !FileManager.default.fileExists(atPath: path) {
            // Exit 1, not the usage error's 64: the command is right, the database is not there yet.
            printError(
                "sonde-collector: \(db != nil ? "--db " : "database: ")\(path): no such database; check the path (the collector's `database:`), or pass --create to make a new one (before the collector's first start)")
            throw ExitCode(1)
        }
        umask(0o077)
        let store = try SQLiteCollectorStore(path: path, durability: sync, logger: logger)
        try await store.migrate()
        return store
    }
}

extension CollectorCommand.Agents {
    public struct Add: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(
            abstract: "Enrol an agent, or update one (a revoked agent comes back only with a new key, or with --unrevoke).")
        @OptionGroup var database: DatabaseOption
        @Option(name: .long, help: "Agent id, as in its config.") var id: String
        @Option(name: .long, help: "Region the agent runs in.") var region: String
        @Option(name: .long, help: "Base64 Ed25519 public key (the .pub file from `sonde-agent keygen`), or @FILE to read it.")
        var publicKey: String
        @Flag(name: .long, help: "Re-enable a revoked agent with the key it was revoked with (only if the revocation was a mistake).")
        var unrevoke = false
        public init() {}

        public func run() async throws {
            // Said without the name itself: it may hold the control characters refused.
            for (flag, name) in [("--id", id), ("--region", region)] {
                if let problem = ResultText.nameProblem(name) {
                    printError("sonde-collector: \(flag): expected a name without spaces or control characters: it \(problem)")
                    throw ExitCode(64)
                }
            }
            var text = publicKey
            var source: String?
            if text.hasPrefix("@") {
                let path = String(text.dropFirst())
                source = path
                do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
                    printError("sonde-collector: --public-key: cannot read \(path): \(unreadableFileReason(path))")
                    throw ExitCode(64)
                }
            }
            let key: AgentPublicKey
            do { key = try AgentPublicKey(operatorText: text, source: source) } catch {
                // The reason alone: the root command's usage line said nothing about it (F10).
                printError("sonde-collector: --public-key: \(error)")
                throw ExitCode(64)
            }
            let unrevoke = self.unrevoke
            let existing = try await database.withStore { store in
                let existing = try await store.agent(id: id)
                // Revoking an agent revokes its key: the same key does not come back by itself.
                if let existing, existing.revoked, existing.publicKey == key.base64, !unrevoke {
                    printError(
                        "sonde-collector: agent \(id) was revoked with this key; enrol it with a new key (`sonde-agent keygen` on its host), or pass --unrevoke if the revocation was a mistake")
                    throw ExitCode(1)
                }
                do {
                    try await store.upsertAgent(
                        AgentRecord(
                            id: id, region: region, publicKey: key.base64, revoked: false, enrolledAt: existing?.enrolledAt ?? Date(), lastSeen: existing?.lastSeen))
                } catch let error as DuplicateKeyError {
                    printError("sonde-collector: \(error)")
                    throw ExitCode(1)
                }
                return existing
            }
            let what =
                switch existing {
                case nil: "enrolled"
                case let record? where record.revoked: record.publicKey == key.base64 ? "re-enabled (it was revoked)" : "re-enabled with a new key (it was revoked)"
                case let record? where record.publicKey != key.base64: "updated, with a new key,"
                default: "updated"
                }
            print("\(what) agent \(id) (region \(region))")
        }
    }

    public struct Revoke: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "Revoke an agent: its pushes are refused from now on.")
        @OptionGroup var database: DatabaseOption
        @Option(name: .long, help: "Agent id.") var id: String
        public init() {}

        public func run() async throws {
            guard try await database.withStore({ try await $0.revokeAgent(id: id) }) else {
                printError("sonde-collector: no agent \"\(id)\" in \(database.name); `sonde-collector agents list \(database.flag)` shows them")
                throw ExitCode(1)
            }
            print("revoked agent \(id)")
        }
    }

    public struct List: AsyncParsableCommand {
        public static let configuration = CommandConfiguration(abstract: "List enrolled agents.")
        @OptionGroup var database: DatabaseOption
        @Flag(name: .long, help: "Print JSON.") var json = false
        public init() {}

        public func run() async throws {
            let agents = try await database.withStore { try await $0.agents() }
            if json {
                print(String(decoding: try SondeJSON.encode(agents, pretty: true), as: UTF8.self))
                return
            }
            let rows = [["ID", "REGION", "REVOKED", "LAST SEEN", "PUBLIC KEY"]]
                + agents.map { [$0.id, $0.region, $0.revoked ? "yes" : "no", $0.lastSeen.map(RFC3339.string(from:)) ?? "never", $0.publicKey] }
            let widths = (0..<5).map { column in rows.map { $0[column].count }.max() ?? 0 }
            for row in rows {
                print(zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ").trimmingCharacters(in: .whitespaces))
            }
        }
    }
}

func printError(_ message: String) {
    FileHandle.standardError.write(Data((message + "\n").utf8))
}

/// A config that did not load: one `sonde-collector: file:line:column: …` line per problem.
func printConfigError(_ error: any Error) {
    for line in "\(error)".split(separator: "\n") { printError("sonde-collector: \(line)") }
}
