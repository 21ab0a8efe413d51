import Foundation
import Logging
import NIOSSL
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The collector's certificate chain and key, read from `listen.tls` and swapped in place on
/// SIGHUP: every new handshake picks up the current pair (NIOSSL's per-handshake context
/// callback), the listener and open connections stay as they are.
final class TLSCredentials: Sendable {
    struct Pair: @unchecked Sendable {  // NIOSSL's certificate and key are immutable references
        var chain: [NIOSSLCertificate]
        var key: NIOSSLPrivateKey
    }

    let files: TLSFiles
    private let current: Mutex<Pair>

    init(files: TLSFiles) throws {
        self.files = files
        current = Mutex(try Self.load(files))
    }

    /// Reads and checks the pair: PEM that parses, and a key that belongs to the certificate.
    static func load(_ files: TLSFiles) throws -> Pair {
        let chain: [NIOSSLCertificate]
        do { chain = try NIOSSLCertificate.fromPEMFile(files.cert) } catch {
            throw TLSSetupError("listen.tls.cert: cannot read a PEM certificate chain from \(files.cert): \(error)")
        }
        guard !chain.isEmpty else { throw TLSSetupError("listen.tls.cert: \(files.cert) holds no certificate") }
        let key: NIOSSLPrivateKey
        do { key = try NIOSSLPrivateKey(file: files.key, format: .pem) } catch {
            throw TLSSetupError("listen.tls.key: cannot read a PEM private key from \(files.key): \(error)")
        }
        // Building a context checks that the key matches the certificate.
        do { _ = try NIOSSLContext(configuration: .makeServerConfiguration(certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key))) } catch {
            throw TLSSetupError("listen.tls: the key in \(files.key) does not fit the certificate in \(files.cert): \(error)")
        }
        return Pair(chain: chain, key: key)
    }

    /// Re-reads the files; on any error the current pair stays in use.
    func reload() throws {
        let pair = try Self.load(files)
        current.withLock { $0 = pair }
    }

    /// The listener's TLS configuration: TLS 1.2 or later, the current pair at every handshake,
    /// and client certificates required when `client_ca` is set.
    func serverConfiguration() -> TLSConfiguration {
        let pair = current.withLock { $0 }
        var configuration = TLSConfiguration.makeServerConfiguration(certificateChain: pair.chain.map { .certificate($0) }, privateKey: .privateKey(pair.key))
        configuration.minimumTLSVersion = .tlsv12
        if let clientCA = files.clientCA {
            configuration.trustRoots = .file(clientCA)
            configuration.certificateVerification = .noHostnameVerification
        }
        configuration.sslContextCallback = { [self] _, promise in
            let pair = current.withLock { $0 }
            var override = NIOSSLContextConfigurationOverride()
            override.certificateChain = pair.chain.map { .certificate($0) }
            override.privateKey = .privateKey(pair.key)
            promise.succeed(override)
        }
        return configuration
    }
}

struct TLSSetupError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

/// SIGHUP reloads the TLS certificate and key (when serving HTTPS); it never stops the process.
struct SIGHUPReloader: Service, CustomStringConvertible {
    let credentials: TLSCredentials?
    let logger: Logger

    var description: String { "SIGHUPReloader" }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals {
                guard let credentials else {
                    logger.notice("SIGHUP: nothing to reload (plain HTTP)")
                    continue
                }
                do {
                    try credentials.reload()
                    logger.notice("TLS certificate reloaded", metadata: ["tls.cert": .string(credentials.files.cert)])
                } catch {
                    logger.error("TLS reload failed; still serving the previous certificate", metadata: ["error": "\(error)"])
                }
            }
        }
    }
}
