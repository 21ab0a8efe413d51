import Foundation
import NIOSSL
import Synchronization

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
        replace(try Self.load(files))
    }

    /// Serves `pair` from the next handshake on (one `load` has checked it).
    func replace(_ pair: Pair) {
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
