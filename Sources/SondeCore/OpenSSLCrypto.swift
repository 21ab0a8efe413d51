import COpenSSL
import FoundationEssentials

/// Ed25519 over OpenSSL's libcrypto: the agent's keys and push signatures. libcurl already maps
/// libcrypto into every agent, so this costs no second crypto library (swift-crypto bundles
/// BoringSSL: about 2 MiB of the agent's resident memory).
public enum Ed25519 {
    public static let keyByteCount = 32
    public static let signatureByteCount = 64

    /// 32 random bytes from OpenSSL's CSPRNG: every 32-byte string is a valid Ed25519 private key.
    public static func generatePrivateKey() throws(CryptoError) -> Data {
        var bytes = [UInt8](repeating: 0, count: keyByteCount)
        guard RAND_bytes(&bytes, Int32(keyByteCount)) == 1 else { throw CryptoError("cannot draw random bytes for a key") }
        return Data(bytes)
    }

    /// A private key parsed once: OpenSSL derives the public key from the raw bytes when it
    /// makes its key object, a scalar multiplication as costly as the signature itself, so the
    /// agent keeps the object instead of rebuilding it for every push (measured: half of a push's
    /// instructions at 1 push/s went to rebuilding it). OpenSSL's key objects may be used from
    /// several threads at once for signing (each signature gets its own context).
    public final class PrivateKey: @unchecked Sendable {
        private let key: OpaquePointer
        private let signing: ContextTemplate

        public init(raw: Data) throws(CryptoError) {
            guard raw.count == keyByteCount else { throw CryptoError("an Ed25519 private key is 32 bytes, not \(raw.count)") }
            let key = raw.withUnsafeBytes { EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, nil, $0.bindMemory(to: UInt8.self).baseAddress, keyByteCount) }
            guard let key else { throw CryptoError("OpenSSL refused the Ed25519 private key") }
            guard let signing = ContextTemplate({ EVP_DigestSignInit($0, nil, nil, nil, key) == 1 }) else {
                EVP_PKEY_free(key)
                throw CryptoError("OpenSSL cannot set up Ed25519 signing with this key (out of memory?)")
            }
            self.key = key
            self.signing = signing
        }

        deinit { EVP_PKEY_free(key) }

        /// The 32 raw bytes of the matching public key.
        public func publicKey() throws(CryptoError) -> Data {
            var out = [UInt8](repeating: 0, count: keyByteCount)
            var length = keyByteCount
            guard EVP_PKEY_get_raw_public_key(key, &out, &length) == 1, length == keyByteCount else {
                throw CryptoError("cannot derive the Ed25519 public key")
            }
            return Data(out)
        }

        /// The 64-byte signature of exactly these bytes.
        public func sign(_ message: Data) throws(CryptoError) -> Data {
            guard let context = signing.context() else { throw CryptoError("OpenSSL cannot start an Ed25519 signature (out of memory?)") }
            defer { EVP_MD_CTX_free(context) }
            var signature = [UInt8](repeating: 0, count: signatureByteCount)
            var length = signatureByteCount
            let ok = message.withUnsafeBytes { bytes in
                EVP_DigestSign(context, &signature, &length, bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count) == 1
            }
            guard ok, length == signatureByteCount else { throw CryptoError("Ed25519 signing failed") }
            return Data(signature)
        }
    }

    /// Whether a public key is one of the points of small order (the identity, orders 2, 4 and
    /// 8, and the non-canonical encodings of the first two), sign bit ignored. OpenSSL takes them
    /// as keys, and against one a single made-up signature verifies for every message (red team,
    /// 32nd session: `AQAA…AA=` enrolled, then pushes signed by nobody were accepted). The list is
    /// libsodium's (`has_small_order`); each entry was checked to be of order 8 or less (8·P is the
    /// identity, with Python's big integers) when it was added.
    public static func hasSmallOrder(_ raw: Data) -> Bool {
        guard raw.count == keyByteCount else { return false }
        var key = [UInt8](raw)
        key[31] &= 0x7F
        return smallOrderPoints.contains(key)
    }

    public static let smallOrderPoints: [[UInt8]] = [
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0100000000000000000000000000000000000000000000000000000000000000",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    ].map { hex in stride(from: 0, to: 64, by: 2).map { UInt8(hex.dropFirst($0).prefix(2), radix: 16)! } }

    /// A public key parsed once (the collector checks every push of an agent against it).
    public final class PublicKey: @unchecked Sendable {
        private let key: OpaquePointer
        private let verifying: ContextTemplate

        /// Nil when OpenSSL does not take these bytes as an Ed25519 public key (32 bytes), or
        /// when they are a point of small order (`hasSmallOrder`).
        public init?(raw: Data) {
            guard raw.count == keyByteCount, !Ed25519.hasSmallOrder(raw),
                let key = raw.withUnsafeBytes({ EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nil, $0.bindMemory(to: UInt8.self).baseAddress, keyByteCount) })
            else { return nil }
            guard let verifying = ContextTemplate({ EVP_DigestVerifyInit($0, nil, nil, nil, key) == 1 }) else {
                EVP_PKEY_free(key)
                return nil
            }
            self.key = key
            self.verifying = verifying
        }

        deinit { EVP_PKEY_free(key) }

        /// Whether `signature` is a valid signature of `message` by this key.
        public func isValidSignature(_ signature: Data, for message: Data) -> Bool {
            guard signature.count == signatureByteCount, let context = verifying.context() else { return false }
            defer { EVP_MD_CTX_free(context) }
            return signature.withUnsafeBytes { sig in
                message.withUnsafeBytes { bytes in
                    EVP_DigestVerify(context, sig.bindMemory(to: UInt8.self).baseAddress, sig.count,
                                     bytes.bindMemory(to: UInt8.self).baseAddress, bytes.count) == 1
                }
            }
        }
    }

    /// A signing or verifying context set up once per key, copied for each use: setting one up
    /// fetches the algorithm from OpenSSL's provider and duplicates the key (measured here, OpenSSL
    /// 3.0: 60 µs per signature with a fresh set-up, 41 µs with a copy; 140 and 124 µs per
    /// verification). The template is only read after `init` (copying reads it), so keys stay
    /// usable from several threads at once; each use gets its own copy.
    private final class ContextTemplate: @unchecked Sendable {
        private let template: OpaquePointer

        /// Nil when OpenSSL cannot make or set up the context (out of memory).
        init?(_ setUp: (OpaquePointer) -> Bool) {
            guard let template = EVP_MD_CTX_new() else { return nil }
            guard setUp(template) else {
                EVP_MD_CTX_free(template)
                return nil
            }
            self.template = template
        }

        deinit { EVP_MD_CTX_free(template) }

        /// A copy ready for one signature or verification (the caller frees it); nil only when
        /// OpenSSL fails.
        func context() -> OpaquePointer? {
            guard let context = EVP_MD_CTX_new() else { return nil }
            guard EVP_MD_CTX_copy_ex(context, template) == 1 else {
                EVP_MD_CTX_free(context)
                return nil
            }
            return context
        }
    }
}

/// SHA-256 over OpenSSL's libcrypto (uploads compared with their downloads).
public enum SHA256Digest {
    public static func hash(_ data: Data) -> [UInt8] {
        var digest = [UInt8](repeating: 0, count: 32)
        var length: UInt32 = 0
        let ok = data.withUnsafeBytes { EVP_Digest($0.baseAddress, $0.count, &digest, &length, EVP_sha256(), nil) }
        precondition(ok == 1 && length == 32, "OpenSSL's SHA-256 failed")  // only on a broken libcrypto
        return digest
    }

    /// SHA-256 fed piece by piece (a body as it streams in), so the bytes need not be kept.
    /// Used by one thread at a time.
    public final class Stream {
        private let context: OpaquePointer

        public init() {
            guard let context = EVP_MD_CTX_new() else { fatalError("out of memory (EVP_MD_CTX_new)") }
            precondition(EVP_DigestInit_ex(context, EVP_sha256(), nil) == 1, "OpenSSL's SHA-256 failed")
            self.context = context
        }

        deinit { EVP_MD_CTX_free(context) }

        public func update(_ bytes: UnsafeRawBufferPointer) {
            precondition(EVP_DigestUpdate(context, bytes.baseAddress, bytes.count) == 1, "OpenSSL's SHA-256 failed")
        }

        /// The digest of everything fed so far; the stream is done after this.
        public func finish() -> [UInt8] {
            var digest = [UInt8](repeating: 0, count: 32)
            var length: UInt32 = 0
            precondition(EVP_DigestFinal_ex(context, &digest, &length) == 1 && length == 32, "OpenSSL's SHA-256 failed")
            return digest
        }
    }
}

/// A failure inside OpenSSL; says what was being done.
public struct CryptoError: Error, CustomStringConvertible, Sendable {
    public let description: String
    public init(_ description: String) { self.description = description }
}
