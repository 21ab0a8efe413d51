import Foundation
import SondeCore

/// A private CA, a server certificate for localhost/127.0.0.1 signed by it, a client certificate
/// (mutual TLS) and a second, unrelated CA: made at test time with the openssl CLI, in `folder`.
public struct TestCertificates: Sendable {
    public let folder: String
    public var caCert: String { folder + "/ca.crt" }
    public var serverCert: String { folder + "/server.crt" }
    public var serverKey: String { folder + "/server.key" }
    public var clientCert: String { folder + "/client.crt" }
    public var clientKey: String { folder + "/client.key" }
    /// A CA that signed nothing here: trusting only it must fail the handshake.
    public var otherCACert: String { folder + "/other-ca.crt" }
    var otherCAKey: String { folder + "/other-ca.key" }
    var caKey: String { folder + "/ca.key" }

    public init(in folder: String) throws {
        self.folder = folder
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try makeCA(cert: caCert, key: caKey, name: "Sonde Test CA")
        try makeCA(cert: otherCACert, key: otherCAKey, name: "Unrelated Test CA")
        try issue(cert: serverCert, key: serverKey, name: "localhost", signedBy: (caCert, caKey), extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
        try issue(cert: clientCert, key: clientKey, name: "test-agent", signedBy: (caCert, caKey), extensions: "extendedKeyUsage=clientAuth\n")
    }

    /// Replaces the server certificate and key with a pair signed by the other CA (a rotation
    /// the collector must pick up on SIGHUP).
    public func rotateServerToOtherCA() throws {
        try issue(
            cert: serverCert, key: serverKey, name: "localhost", signedBy: (otherCACert, otherCAKey),
            extensions: "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n")
    }

    /// Every certificate is valid from this long before it is made, as public CAs backdate theirs:
    /// a peer whose clock is behind (within the collector's accepted skew, 5 minutes by default)
    /// must not see a certificate that is "not yet valid" and fail every handshake.
    public static let backdating: TimeInterval = 3600

    func makeCA(cert: String, key: String, name: String) throws {
        try sign(
            cert: cert, key: key, name: name, signedBy: nil,
            extensions: "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n")
    }

    func issue(cert: String, key: String, name: String, signedBy ca: (cert: String, key: String), extensions: String) throws {
        try sign(cert: cert, key: key, name: name, signedBy: ca, extensions: extensions)
    }

    /// A new key and a certificate for it, signed by `ca` (self-signed when nil), valid from
    /// `backdating` ago for 2 days. `openssl ca` because OpenSSL 3.0's `req`/`x509` cannot set
    /// the start date.
    private func sign(cert: String, key: String, name: String, signedBy ca: (cert: String, key: String)?, extensions: String) throws {
        let csr = cert + ".csr"
        let ext = cert + ".ext"
        try Data(extensions.utf8).write(to: URL(fileURLWithPath: ext))
        // The bookkeeping `openssl ca` needs: a database and a serial file, in `folder`.
        let database = folder + "/ca-index.txt"
        let config = folder + "/ca.cnf"
        if !FileManager.default.fileExists(atPath: config) {
            _ = FileManager.default.createFile(atPath: database, contents: nil)
            try Data("1000\n".utf8).write(to: URL(fileURLWithPath: folder + "/ca-serial"))
            try Data(
                """
                [ca]
                default_ca = test_ca
                [test_ca]
                database = \(database)
                serial = \(folder)/ca-serial
                new_certs_dir = \(folder)
                default_md = sha256
                policy = any_name
                unique_subject = no
                email_in_dn = no
                [any_name]
                commonName = supplied

                """.utf8
            ).write(to: URL(fileURLWithPath: config))
        }
        let format = DateFormatter()
        format.locale = Locale(identifier: "en_US_POSIX")
        format.timeZone = TimeZone(identifier: "UTC")
        format.dateFormat = "yyyyMMddHHmmss'Z'"
        let now = Date()
        // Written to temporary names first, then renamed: a reload never sees half a pair.
        try openssl(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key + ".new", "-out", csr, "-subj", "/CN=\(name)"])
        let signer = ca.map { ["-cert", $0.cert, "-keyfile", $0.key] } ?? ["-selfsign", "-keyfile", key + ".new"]
        try openssl(
            ["ca", "-batch", "-config", config, "-in", csr, "-out", cert + ".new", "-notext", "-extfile", ext]
                + ["-startdate", format.string(from: now - Self.backdating), "-enddate", format.string(from: now + 2 * 86_400)] + signer)
        _ = rename(key + ".new", key)
        _ = rename(cert + ".new", cert)
        chmod(key, 0o600)
    }

    func openssl(_ arguments: [String]) throws { try Self.openssl(arguments) }

    static func openssl(_ arguments: [String]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = arguments
        let errors = Pipe()
        process.standardError = errors
        process.standardOutput = FileHandle.nullDevice
        do { try process.run() } catch {
            throw TestFailure("cannot run /usr/bin/openssl (install the openssl package: scripts/install-deps.sh): \(error)")
        }
        let message = errors.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("openssl \(arguments.prefix(2).joined(separator: " ")) failed: \(String(decoding: message, as: UTF8.self))")
        }
    }
}

/// Hex SHA-256 of an API token, as a collector config's `tokens[].sha256` holds it.
public func tokenDigestHex(_ token: String) -> String {
    SHA256Digest.hash(Data(token.utf8)).map { String(format: "%02x", $0) }.joined()
}
