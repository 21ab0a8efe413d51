import SondeCore
import Testing

@testable import ProbeEngine

/// The secret-name checks compare ASCII bytes for speed; they must decide exactly as Unicode
/// lowercasing and substring search would.
@Suite struct SecretNamesTests {
    static let keyWords = ["token", "secret", "password", "passwd", "session", "apikey", "api_key", "api-key", "credential", "cookie"]
    static let headerWords = ["auth", "cookie", "token", "secret", "password", "session", "api-key", "apikey", "x-api"]

    static func reference(key name: String) -> Bool { keyWords.contains { name.lowercased().contains($0) } }
    static func reference(header name: String) -> Bool { headerWords.contains { name.lowercased().contains($0) } }
    static func reference(query name: String) -> Bool {
        let lower = name.lowercased()
        return reference(key: name) || lower.contains("signature") || lower == "sig" || lower == "key"
    }

    @Test func knownNames() {
        for name in ["X-Amz-Signature", "sig", "SIG", "Key", "access_token", "refreshToken", "client_secret", "X-Api-Key", "Set-Cookie"] {
            #expect(SecretNames.isSecretQueryParameter(name) || SecretNames.isSecretHeader(name), "\(name)")
        }
        for name in ["p", "page", "signs", "keys", "Content-Type", "limit", "", "tok", "sesion"] {
            #expect(!SecretNames.isSecretQueryParameter(name) && !SecretNames.isSecretKey(name), "\(name)")
        }
        // The Kelvin sign lowercases to an ASCII k; the İ of Turkish to i plus a combining dot.
        #expect(SecretNames.isSecretQueryParameter("\u{212A}ey") && SecretNames.isSecretKey("To\u{212A}en"))
        #expect(!SecretNames.isSecretKey("sess\u{130}on"))
    }

    @Test func decidesAsUnicodeLowercasingDoes() {
        var rng = SplitMix64(seed: 0x5EC2E7)
        let pieces = ["tok", "en", "TOKEN", "Sig", "nature", "key", "K", "\u{212A}", "api", "-", "_", "Key", "sess", "ion", "\u{130}", "é",
                      "Cookie", "auth", "x", "PASS", "wd", "word", "cred", "ential", "secret", "s", "ig", "\u{0}", "🚀", "ß"]
        for _ in 0..<20_000 {
            let name = (0..<Int.random(in: 0...4, using: &rng)).map { _ in pieces.randomElement(using: &rng)! }.joined()
            #expect(SecretNames.isSecretKey(name) == Self.reference(key: name), "\(name)")
            #expect(SecretNames.isSecretHeader(name) == Self.reference(header: name), "\(name)")
            #expect(SecretNames.isSecretQueryParameter(name) == Self.reference(query: name), "\(name)")
        }
    }
}
