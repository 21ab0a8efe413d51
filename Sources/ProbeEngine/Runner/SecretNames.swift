/// Which extracted values are secret when a script does not say (`secret: true|false`): values
/// of credential-carrying headers and of JSON keys named like a credential.
enum SecretNames {
    /// Shorter default secrets are not redacted (`secret: true` still redacts them).
    static let minimumDefaultLength = 4

    private static let headerWords = words(["auth", "cookie", "token", "secret", "password", "session", "api-key", "apikey", "x-api"])
    private static let keyWords = words(["token", "secret", "password", "passwd", "session", "apikey", "api_key", "api-key", "credential", "cookie"])
    private static let signature = words(["signature"])

    /// Set-Cookie, Authorization, Proxy-Authorization, X-Auth-Token, X-Api-Key, X-Session-Id, …
    static func isSecretHeader(_ name: String) -> Bool {
        decide(name) { containsAny(headerWords, in: $0) }
    }

    /// A query parameter that carries a credential: a key named like one, or a signature
    /// (`X-Amz-Signature`, `X-Goog-Signature`, `signature`, Azure SAS's `sig`).
    static func isSecretQueryParameter(_ name: String) -> Bool {
        decide(name, isSecretQueryParameter(ascii:))
    }

    /// `isSecretQueryParameter` for a name of ASCII bytes (as in a URL), without making a String.
    static func isSecretQueryParameter(ascii name: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        containsAny(keyWords, in: name) || containsAny(signature, in: name) || equalsIgnoringCase(name, "sig") || equalsIgnoringCase(name, "key")
    }

    /// `token`, `access_token`, `refreshToken`, `client_secret`, `password`, `session_id`, …
    static func isSecretKey(_ key: String) -> Bool {
        decide(key) { containsAny(keyWords, in: $0) }
    }

    // Every step's URL parameters and every response header go through these, so they compare
    // ASCII bytes in place: `String.lowercased()` and `String.contains(_:)` were 7 % of an
    // agent's CPU at 10 plain GETs a second with one query parameter each. A name with any
    // non-ASCII byte is lowercased as Unicode first, which maps some letters into ASCII (the
    // Kelvin sign to `k`); the words are ASCII lower case.
    private static func words(_ list: [String]) -> [[UInt8]] { list.map { Array($0.utf8) } }

    private static func decide(_ name: String, _ check: (Slice<UnsafeBufferPointer<UInt8>>) -> Bool) -> Bool {
        var name = name
        if name.utf8.allSatisfy({ $0 < 0x80 }) {
            return name.withUTF8 { check($0[...]) }
        }
        var lower = name.lowercased()
        return lower.withUTF8 { check($0[...]) }
    }

    private static func containsAny(_ needles: [[UInt8]], in name: Slice<UnsafeBufferPointer<UInt8>>) -> Bool {
        needles.contains { needle in
            guard needle.count <= name.count else { return false }
            return (name.startIndex...(name.endIndex - needle.count)).contains { start in
                zip(name[start..<(start + needle.count)], needle).allSatisfy { asciiLower($0) == $1 }
            }
        }
    }

    private static func equalsIgnoringCase(_ name: Slice<UnsafeBufferPointer<UInt8>>, _ word: String) -> Bool {
        name.count == word.utf8.count && zip(name, word.utf8).allSatisfy { asciiLower($0) == $1 }
    }

    private static func asciiLower(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    /// The parts of a credential header a server may echo alone: a cookie's value
    /// (`sid=abc; Path=/` → `abc`) and an Authorization value's credentials (`Bearer abc` → `abc`).
    static func credentialParts(_ value: String) -> [String] {
        var parts: [String] = []
        if let cookie = cookieValue(value) { parts.append(cookie) }
        if let space = value.firstIndex(of: " ") {
            let credentials = value[value.index(after: space)...].trimmed()
            if credentials.count >= minimumDefaultLength { parts.append(credentials) }
        }
        return parts
    }

    /// A cookie's value in a `Cookie` or `Set-Cookie` header (`sid=abc; Path=/` → `abc`), when it
    /// is long enough to be a credential.
    static func cookieValue(_ header: String) -> String? {
        cookie(header)?.value
    }

    /// A `Set-Cookie` value's name and value (`sid=abc; Path=/` → `sid`, `abc`), when the value
    /// is long enough to be a secret.
    static func cookie(_ header: String) -> (name: String, value: String)? {
        let first = header.split(separator: ";", maxSplits: 1).first.map(String.init) ?? header
        guard let equals = first.firstIndex(of: "=") else { return nil }
        let cookie = first[first.index(after: equals)...].trimmed()
        return cookie.count >= minimumDefaultLength ? (first[..<equals].trimmed(), cookie) : nil
    }
}
