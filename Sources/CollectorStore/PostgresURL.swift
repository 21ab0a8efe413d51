import Foundation
import NIOSSL
import PostgresNIO

/// A `database:` that is a PostgreSQL connection URL:
/// `postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…&sslrootcert=FILE&pool_max=N&connect_timeout=S]`.
/// `sslmode` means what it means to libpq: `disable`, `prefer` (the default), `require` (encrypted,
/// certificate not checked), `verify-ca` (signed by `sslrootcert`, or the system's roots),
/// `verify-full` (and the host name matches).
public struct PostgresURL: Sendable, Hashable, CustomStringConvertible {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, prefer, require
        case verifyCA = "verify-ca"
        case verifyFull = "verify-full"
    }

    public var user: String
    public var password: String?
    public var host: String
    public var port: Int
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCert: String?
    /// The most pooled connections this collector opens.
    public var poolMax: Int
    /// Seconds to wait for a connection (and for any one statement) before saying the database
    /// is unreachable.
    public var connectTimeout: Double

    /// True when `text` is meant as a PostgreSQL URL (anything else is an SQLite path).
    public static func isPostgres(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    public init(_ text: String) throws(StorageError) {
        guard Self.isPostgres(text), let components = URLComponents(string: text) else {
            throw StorageError("database: expected postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?sslmode=…], or a file path for SQLite")
        }
        guard let user = components.percentEncodedUser.flatMap({ $0.removingPercentEncoding }), !user.isEmpty else {
            throw StorageError("database: the PostgreSQL URL names no user (postgres://USER@HOST/DB)")
        }
        guard let host = components.host, !host.isEmpty else {
            throw StorageError("database: the PostgreSQL URL names no host (postgres://USER@HOST/DB)")
        }
        let database = String(components.path.drop(while: { $0 == "/" }))
        guard !database.isEmpty, !database.contains("/") else {
            throw StorageError("database: the PostgreSQL URL names no database (postgres://USER@HOST/DB)")
        }
        self.user = user
        // As with libpq, PGPASSWORD supplies a password the URL leaves out (keeps it out of the file).
        password = components.percentEncodedPassword.flatMap { $0.removingPercentEncoding } ?? ProcessInfo.processInfo.environment["PGPASSWORD"]
        self.host = host.hasPrefix("[") ? String(host.dropFirst().dropLast()) : host
        port = components.port ?? 5432
        self.database = database.removingPercentEncoding ?? database
        sslMode = .prefer
        poolMax = 10
        connectTimeout = 10
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw StorageError("database: sslmode: expected \(SSLMode.allCases.map(\.rawValue).joined(separator: ", ")), got \"\(value)\"")
                }
                sslMode = mode
            case "sslrootcert": sslRootCert = value
            case "pool_max":
                guard let count = Int(value), (1...200).contains(count) else { throw StorageError("database: pool_max: expected 1...200, got \"\(value)\"") }
                poolMax = count
            case "connect_timeout":
                guard let seconds = Double(value), seconds > 0, seconds <= 300 else {
                    throw StorageError("database: connect_timeout: expected seconds in (0, 300], got \"\(value)\"")
                }
                connectTimeout = seconds
            case "application_name": break
            default:
                throw StorageError("database: unknown parameter \"\(item.name)\" (known: sslmode, sslrootcert, pool_max, connect_timeout)")
            }
        }
        if sslRootCert != nil && !(sslMode == .verifyCA || sslMode == .verifyFull) {
            throw StorageError("database: sslrootcert is used only with sslmode=verify-ca or verify-full")
        }
    }

    /// The URL without its password, for logs.
    public var description: String {
        "postgres://\(user)@\(host.contains(":") ? "[\(host)]" : host):\(port)/\(database)?sslmode=\(sslMode.rawValue)"
    }

    /// The TLS settings of `sslmode`: nil for `disable`; whether TLS is required; what to verify.
    private func tls() throws(StorageError) -> (required: Bool, configuration: TLSConfiguration)? {
        var configuration = TLSConfiguration.makeClientConfiguration()
        switch sslMode {
        case .disable:
            return nil
        case .prefer, .require:
            // libpq's meaning: encrypted, certificate not checked (that is verify-ca/verify-full).
            configuration.certificateVerification = .none
            return (sslMode == .require, configuration)
        case .verifyCA, .verifyFull:
            configuration.certificateVerification = sslMode == .verifyCA ? .noHostnameVerification : .fullVerification
            if let sslRootCert {
                do {
                    configuration.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(sslRootCert))
                } catch {
                    throw StorageError("database: sslrootcert \(sslRootCert): cannot read PEM certificates (\(error))")
                }
            }
            return (true, configuration)
        }
    }

    static let applicationName = ("application_name", "sonde-collector")

    /// PostgresNIO's pool configuration for this URL.
    func clientConfiguration() throws(StorageError) -> PostgresClient.Configuration {
        let tls: PostgresClient.Configuration.TLS =
            switch try self.tls() {
            case nil: .disable
            case let (required, configuration)?: required ? .require(configuration) : .prefer(configuration)
            }
        var configuration = PostgresClient.Configuration(host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.maximumConnections = poolMax
        configuration.options.minimumConnections = 1
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
        // The server ends a statement when this collector would stop waiting for it, instead of
        // running on after the client gave up (a slow API read would otherwise hold the database
        // and its connection). Longer work sets its own (`SET LOCAL`, see `longStatementTimeoutMs`).
        configuration.options.additionalStartupParameters =
            [Self.applicationName, ("statement_timeout", "\(statementTimeoutMs)"), ("idle_in_transaction_session_timeout", "\(idleInTransactionMs)")]
            + Self.deadPeerChecks
        return configuration
    }

    /// A pool connection's transaction waits this long for its next statement at most: the
    /// collector sends them back to back, so a longer pause is a collector frozen (SIGSTOP, a
    /// stalled VM) or gone mid-transaction. Its open transaction held the ingest horizon (no
    /// collector could follow ingest, and the leader paged every agent silent) and its lock on
    /// the leader row (no take-over for 93 s) for as long as the freeze lasted (HA review, 33rd
    /// session, F2). 5 s: far above any pause between two statements of the collector's own.
    var idleInTransactionMs: Int { 5000 }

    /// The server notices a client that vanished (its host off, a cut network) within about 11 s
    /// instead of the system's 2 hours of TCP keepalive, even during a query.
    static let deadPeerChecks = [
        ("tcp_keepalives_idle", "5"), ("tcp_keepalives_interval", "2"), ("tcp_keepalives_count", "3"), ("client_connection_check_interval", "1000"),
    ]

    /// The pool's `statement_timeout`: `connect_timeout`, the time the collector waits for a statement.
    var statementTimeoutMs: Int { Int((connectTimeout * 1000).rounded(.up)) }
    /// For the long reads, enrolment and migrations (30 × `connect_timeout`).
    var longStatementTimeoutMs: Int { Int((connectTimeout * 30_000).rounded(.up)) }

    /// A single connection's configuration (the leader lock's own session).
    func connectionConfiguration() throws(StorageError) -> PostgresConnection.Configuration {
        let tls: PostgresConnection.Configuration.TLS
        switch try self.tls() {
        case nil: tls = .disable
        case let (required, configuration)?:
            let context: NIOSSLContext
            do { context = try NIOSSLContext(configuration: configuration) } catch { throw StorageError("database: cannot set up TLS: \(error)") }
            tls = required ? .require(context) : .prefer(context)
        }
        var configuration = PostgresConnection.Configuration(host: host, port: port, username: user, password: password, database: database, tls: tls)
        configuration.options.connectTimeout = .milliseconds(Int64(connectTimeout * 1000))
        configuration.options.additionalStartupParameters = [Self.applicationName] + Self.deadPeerChecks
        return configuration
    }
}
