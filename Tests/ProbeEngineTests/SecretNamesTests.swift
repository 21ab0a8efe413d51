import Foundation
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

    /// The query reader as it was written first, on Strings: the byte-level one must find the same values.
    static func referenceQueryCredentials(in url: String) -> [String] {
        guard let question = url.firstIndex(of: "?") else { return [] }
        let query = url[url.index(after: question)...].prefix { $0 != "#" }
        var values: [String] = []
        for pair in query.split(separator: "&") {
            guard let equals = pair.firstIndex(of: "=") else { continue }
            let name = String(pair[..<equals]).removingPercentEncoding ?? String(pair[..<equals])
            let value = String(pair[pair.index(after: equals)...])
            guard reference(query: name), value.utf8.count >= 4 else { continue }
            let plus = value.replacingOccurrences(of: "+", with: " ")
            let decoded = plus.removingPercentEncoding ?? plus
            values += decoded == value ? [value] : [value, decoded]
        }
        return values
    }

    @Test func queryCredentialsAreFoundAsOnStrings() {
        #expect(URLCredentials.queryCredentials(in: "https://b.s3/k?X-Amz-Credential=AKIA%2F2026&X-Amz-Signature=abcd1234&X-Amz-Expires=300#sig=zzzz")
            == ["AKIA%2F2026", "AKIA/2026", "abcd1234"])
        #expect(URLCredentials.queryCredentials(in: "http://h/?p=1&page=2&&=x&key") == [])
        #expect(URLCredentials.queryCredentials(in: "http://h/?%74oken=abcd&\u{212A}ey=efgh") == ["abcd", "efgh"])
        var rng = SplitMix64(seed: 0x9E3779B9)
        let names = ["p", "sig", "SIG", "X-Amz-Signature", "%74oken", "access_token", "\u{212A}ey", "key", "keys", "page", "é", "", "api%2Dkey"]
        let values = ["", "1", "abcd", "a+b%2Fc", "%zz12", "日本語", "x=y", "🚀🚀"]
        for _ in 0..<5_000 {
            let pairs = (0..<Int.random(in: 0...4, using: &rng)).map { _ -> String in
                let name = names.randomElement(using: &rng)!
                return Bool.random(using: &rng) ? name : name + "=" + values.randomElement(using: &rng)!
            }
            let url = "https://h/p?" + pairs.joined(separator: "&") + (Bool.random(using: &rng) ? "#token=frag" : "")
            #expect(URLCredentials.queryCredentials(in: url) == Self.referenceQueryCredentials(in: url), "\(url)")
        }
    }
}
