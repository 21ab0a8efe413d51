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
        containsAny(name, headerWords)
    }

    /// A query parameter that carries a credential: a key named like one, or a signature
    /// (`X-Amz-Signature`, `X-Goog-Signature`, `signature`, Azure SAS's `sig`).
    static func isSecretQueryParameter(_ name: String) -> Bool {
        isSecretKey(name) || containsAny(name, signature) || equalsIgnoringCase(name, "sig") || equalsIgnoringCase(name, "key")
    }

    /// `token`, `access_token`, `refreshToken`, `client_secret`, `password`, `session_id`, …
    static func isSecretKey(_ key: String) -> Bool {
        containsAny(key, keyWords)
    }

    // Every step's URL parameters and every response header go through these, so they compare
    // ASCII bytes: `String.lowercased()` and `String.contains(_:)` were 7 % of an agent's CPU at
    // 10 plain GETs a second with one query parameter each. A name with any non-ASCII byte takes
    // Unicode lowercasing, which maps some letters into ASCII (the Kelvin sign to `k`).
    private static func words(_ list: [String]) -> [[UInt8]] { list.map { Array($0.utf8) } }

    private static func containsAny(_ name: String, _ needles: [[UInt8]]) -> Bool {
        var lower = Array(name.utf8)
        if lower.allSatisfy({ $0 < 0x80 }) {
            for i in lower.indices { lower[i] = asciiLower(lower[i]) }
        } else {
            lower = Array(name.lowercased().utf8)
        }
        return needles.contains { occurs($0, in: lower[...]) }
    }

    private static func equalsIgnoringCase(_ name: String, _ word: String) -> Bool {
        guard name.utf8.allSatisfy({ $0 < 0x80 }) else { return name.lowercased() == word }
        return name.utf8.count == word.utf8.count && zip(name.utf8, word.utf8).allSatisfy { asciiLower($0) == $1 }
    }

    private static func asciiLower(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    private static func occurs(_ needle: [UInt8], in hay: ArraySlice<UInt8>) -> Bool {
        guard needle.count <= hay.count else { return false }
        var start = hay.startIndex
        while start + needle.count <= hay.endIndex {
            if hay[start] == needle[0], hay[start..<(start + needle.count)].elementsEqual(needle) { return true }
            start += 1
        }
        return false
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
