import FoundationEssentials
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// An agent's Ed25519 signing key. On disk the private key is PKCS#8 PEM (`-----BEGIN PRIVATE
/// KEY-----`, as `openssl genpkey -algorithm ed25519` writes) in a file of mode 0600; the public
/// key is the base64 of its 32 raw bytes in `<file>.pub`. The two never look alike, so a private
/// key given where the public one belongs is refused (the CLI walk-through enrolled one, F1).
/// Files of earlier versions (base64 of the 32 private bytes) are still read.
public struct AgentSigningKey: Sendable {
    private let raw: Data
    /// OpenSSL's key object, made once (rebuilding it costs as much as a signature).
    private let key: Ed25519.PrivateKey
    public let publicKey: AgentPublicKey

    /// A new random key. Stops the process if OpenSSL cannot draw random bytes or derive the
    /// key: only a broken libcrypto or a system without an entropy source does that.
    public init() {
        do {
            try self.init(rawRepresentation: try Ed25519.generatePrivateKey())
        } catch {
            fatalError("cannot create an Ed25519 key: \(error)")
        }
    }

    public init(rawRepresentation: Data) throws {
        raw = rawRepresentation
        key = try Ed25519.PrivateKey(raw: rawRepresentation)
        publicKey = try AgentPublicKey(validated: key.publicKey())
    }

    /// Signs exactly these bytes.
    public func signature(for body: Data) throws -> Data {
        try key.sign(body)
    }

    /// Base64 signature, as it goes into `Sonde-Agent-Signature`.
    public func signatureHeader(for body: Data) throws -> String {
        try signature(for: body).base64EncodedString()
    }

    /// A new `Sonde-Agent-Claim` value for `agent`, made at `now` (the uploader keeps one for
    /// `PushProtocol.claimLifetime`: ``PushClaim``).
    public func claimHeader(agent: String, now: Date = Date()) throws -> String {
        let time = Int64((now.timeIntervalSince1970 * 1000).rounded())
        return "t=\(time), sig=\(try signature(for: PushProtocol.claim(agent: agent, timeMs: time)).base64EncodedString())"
    }

    /// Reads a private key file written by `write(to:)`. Refuses a file that others can read.
    public static func load(from path: String) throws -> AgentSigningKey {
        var info = stat()
        guard stat(path, &info) == 0 else {
            throw KeyFileError(path: path, problem: "cannot be read (\(String(cString: strerror(errno)))); create one with `sonde-agent keygen --out \(path)`")
        }
        if info.st_mode & 0o077 != 0 {
            throw KeyFileError(path: path, problem: "is readable by other users (mode \(String(info.st_mode & 0o777, radix: 8))); run `chmod 600 \(path)`")
        }
        let text: String
        do { text = try String(contentsOfFile: path, encoding: .utf8) } catch {
            throw KeyFileError(path: path, problem: unreadableFileReason(path))
        }
        guard let raw = Self.privateBytes(pem: text) ?? Data(base64Encoded: text.trimmed()).flatMap({ $0.count == 32 ? $0 : nil }) else {
            throw KeyFileError(path: path, problem: "does not hold an Ed25519 private key (PKCS#8 PEM); create one with `sonde-agent keygen`")
        }
        return try AgentSigningKey(rawRepresentation: raw)
    }

    /// PKCS#8's fixed DER prefix for an Ed25519 private key (RFC 8410): the 32 key bytes follow.
    static let pkcs8Prefix: [UInt8] = [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20]

    /// The private key as PKCS#8 PEM.
    var pem: String {
        let der = Data(Self.pkcs8Prefix) + raw
        return "-----BEGIN PRIVATE KEY-----\n" + der.base64EncodedString() + "\n-----END PRIVATE KEY-----\n"
    }

    /// The 32 key bytes of a PKCS#8 PEM Ed25519 private key, nil for anything else.
    static func privateBytes(pem text: String) -> Data? {
        guard let der = PEMBlock.body(of: text, label: "PRIVATE KEY"), der.count == 48, der.prefix(16).elementsEqual(pkcs8Prefix) else { return nil }
        return der.suffix(32)
    }

    /// Writes the private key (mode 0600) and `<path>.pub` (mode 0644). Never follows a symlink:
    /// each file is written to a new temporary file in the same folder (created with O_EXCL and
    /// O_NOFOLLOW), fsynced, then put in place with link(2) (fails if `path` exists, even as a
    /// dangling symlink) or, with `overwrite`, rename(2), which replaces a symlink itself and
    /// never its target.
    public func write(to path: String, overwrite: Bool = false) throws {
        try Self.place(pem, at: path, mode: 0o600, overwrite: overwrite)
        try Self.place(publicKey.base64 + "\n", at: path + ".pub", mode: 0o644, overwrite: true)
    }

    private static func place(_ text: String, at path: String, mode: mode_t, overwrite: Bool) throws {
        func failure(_ what: String) -> KeyFileError {
            let code = errno
            if code == EEXIST { return KeyFileError(path: path, problem: "already exists; pass --force to replace it") }
            return KeyFileError(path: path, problem: "could not be written (\(what): \(String(cString: strerror(code))))")
        }
        var random: UInt64 = 0
        arc4random_buf(&random, MemoryLayout<UInt64>.size)
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let temporary = "\(path).tmp-\(String(random, radix: 16))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw failure("create \(temporary)") }
        var placed = false
        defer { if !placed { unlink(temporary) } }
        let bytes = Array(text.utf8)
        let written = bytes.withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
        let ok = written == bytes.count && fchmod(fd, mode) == 0 && fsync(fd) == 0
        close(fd)
        guard ok else { throw failure("write") }
        if overwrite {
            guard rename(temporary, path) == 0 else { throw failure("rename") }
        } else {
            guard link(temporary, path) == 0 else { throw failure("link") }
            unlink(temporary)
        }
        placed = true
        let folderFD = open(folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if folderFD >= 0 {
            _ = fsync(folderFD)
            close(folderFD)
        }
    }
}

/// An agent's public key as the collector knows it: base64 of 32 raw bytes.
public struct AgentPublicKey: Sendable, Hashable {
    public let rawRepresentation: Data
    /// OpenSSL's key object, parsed once when the key is read.
    private let key: Ed25519.PublicKey

    init(validated raw: Data) throws(CryptoError) {
        guard let key = Ed25519.PublicKey(raw: raw) else { throw CryptoError("OpenSSL refused the derived Ed25519 public key") }
        rawRepresentation = raw
        self.key = key
    }

    public init(base64: String) throws {
        let raw = Data(base64Encoded: base64.trimmed())
        if let raw, Ed25519.hasSmallOrder(raw) { throw KeyFileError(path: "(public key)", problem: Self.weakKeyProblem) }
        guard let raw, let key = Ed25519.PublicKey(raw: raw) else {
            throw KeyFileError(path: "(public key)", problem: "is not base64 of a 32-byte Ed25519 public key")
        }
        rawRepresentation = raw
        self.key = key
    }

    public static let weakKeyProblem =
        "is not a usable Ed25519 public key: it is a point of small order, against which a made-up signature verifies for any message; give the .pub file `sonde-agent keygen` writes"

    /// SubjectPublicKeyInfo's fixed DER prefix for an Ed25519 key (RFC 8410): 32 key bytes follow.
    static let spkiPrefix: [UInt8] = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00]

    /// A public key as an operator gives it: the base64 of `sonde-agent keygen`'s `.pub` file, or
    /// a PEM public key (`openssl pkey -pubout`). A private key is refused with what to give
    /// instead, also one of an earlier version (bare base64, like a public key's) when the file
    /// it came from (`source`) has its `.pub` beside it.
    public init(operatorText text: String, source: String? = nil) throws(KeyFileError) {
        let what = source ?? "(public key)"
        if text.contains("PRIVATE KEY") {
            throw KeyFileError(path: what, problem: "holds a PRIVATE key: never copy it off the agent's host; give the public key (the `.pub` file beside it, or `openssl pkey -pubout` of it)")
        }
        if let source, !source.hasSuffix(".pub"), let raw = Data(base64Encoded: text.trimmed()), raw.count == 32,
            let pub = try? String(contentsOfFile: source + ".pub", encoding: .utf8),
            let derived = try? AgentSigningKey(rawRepresentation: raw), derived.publicKey.base64 == pub.trimmed()
        {
            throw KeyFileError(path: what, problem: "is the agent's PRIVATE key (its public key is \(source).pub): give that instead, and replace this key (`sonde-agent keygen --force`) if it was copied anywhere")
        }
        let raw: Data
        if let der = PEMBlock.body(of: text, label: "PUBLIC KEY") {
            guard der.count == 44, der.prefix(12).elementsEqual(Self.spkiPrefix) else {
                throw KeyFileError(path: what, problem: "holds a PEM public key that is not Ed25519")
            }
            raw = der.suffix(32)
        } else {
            guard let bytes = Data(base64Encoded: text.trimmed()) else {
                throw KeyFileError(path: what, problem: "is not base64 of a 32-byte Ed25519 public key (the .pub file `sonde-agent keygen` writes) nor a PEM public key")
            }
            raw = bytes
        }
        if Ed25519.hasSmallOrder(raw) { throw KeyFileError(path: what, problem: Self.weakKeyProblem) }
        guard raw.count == 32, let key = Ed25519.PublicKey(raw: raw) else {
            throw KeyFileError(path: what, problem: "is not a 32-byte Ed25519 public key (the .pub file `sonde-agent keygen` writes)")
        }
        rawRepresentation = raw
        self.key = key
    }

    public static func == (a: AgentPublicKey, b: AgentPublicKey) -> Bool { a.rawRepresentation == b.rawRepresentation }
    public func hash(into hasher: inout Hasher) { hasher.combine(rawRepresentation) }

    public var base64: String { rawRepresentation.base64EncodedString() }

    public func isValidSignature(_ signature: Data, for body: Data) -> Bool {
        key.isValidSignature(signature, for: body)
    }

    /// Checks a `Sonde-Agent-Signature` header value against the body.
    public func verify(signatureHeader: String, body: Data) -> Bool {
        guard let signature = Data(base64Encoded: signatureHeader.trimmed()) else { return false }
        return isValidSignature(signature, for: body)
    }

    /// Checks a `Sonde-Agent-Claim` value: signed by this key for this agent id, made within
    /// `allowedSkew` of `now`.
    public func verify(claimHeader: String, agent: String, now: Date, allowedSkew: TimeInterval) -> Bool {
        guard let claim = PushProtocol.parseClaim(claimHeader), PushClaim.isCurrent(timeMs: claim.timeMs, now: now, allowedSkew: allowedSkew) else { return false }
        return isValidSignature(claim.signature, for: PushProtocol.claim(agent: agent, timeMs: claim.timeMs))
    }
}

/// The claim an agent sends with its pushes, signed again once `PushProtocol.claimLifetime` has
/// passed: one signature a minute, not one per push.
public final class PushClaim: Sendable {
    private let key: AgentSigningKey
    private let agent: String
    private let current = Mutex<(header: String, signedAt: Date)?>(nil)

    public init(key: AgentSigningKey, agent: String) {
        self.key = key
        self.agent = agent
    }

    public func header(now: Date = Date()) throws -> String {
        if let kept = current.withLock({ $0 }), abs(now.timeIntervalSince(kept.signedAt)) < PushProtocol.claimLifetime { return kept.header }
        let header = try key.claimHeader(agent: agent, now: now)
        current.withLock { $0 = (header, now) }
        return header
    }

    /// Whether a claim made at `timeMs` is still accepted at `now`. In Double: a hostile time
    /// near Int64's ends must not overflow a subtraction.
    public static func isCurrent(timeMs: Int64, now: Date, allowedSkew: TimeInterval) -> Bool {
        abs(Double(timeMs) - now.timeIntervalSince1970 * 1000) <= allowedSkew * 1000
    }
}

/// One PEM block's body (RFC 7468), decoded: nil when `text` has no block with that label.
enum PEMBlock {
    static func body(of text: String, label: String) -> Data? {
        let begin = "-----BEGIN \(label)-----"
        let end = "-----END \(label)-----"
        guard let start = text.firstRange(of: begin), let stop = text[start.upperBound...].firstRange(of: end) else { return nil }
        let body = text[start.upperBound..<stop.lowerBound].filter { !$0.isWhitespace }
        return Data(base64Encoded: String(body))
    }
}

/// A key file that is missing, malformed or unsafe; the message says which file and what to do.
public struct KeyFileError: Error, CustomStringConvertible, Sendable {
    public let path: String
    public let problem: String
    public var description: String { "key file \(path) \(problem)" }
}
