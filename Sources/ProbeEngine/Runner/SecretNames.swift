/// Which extracted values are secret when a script does not say (`secret: true|false`): values
/// of credential-carrying headers and of JSON keys named like a credential.
enum SecretNames {
    /// Shorter default secrets are not redacted (`secret: true` still redacts them).
    static let minimumDefaultLength = 4

    private static let headerWords = ["auth", "cookie", "token", "secret", "password", "session", "api-key", "apikey", "x-api"]
    private static let keyWords = ["token", "secret", "password", "passwd", "session", "apikey", "api_key", "api-key", "credential", "cookie"]

    /// Set-Cookie, Authorization, Proxy-Authorization, X-Auth-Token, X-Api-Key, X-Session-Id, …
    static func isSecretHeader(_ name: String) -> Bool {
        let lower = name.lowercased()
        return headerWords.contains { lower.contains($0) }
    }

    /// A query parameter that carries a credential: a key named like one, or a signature
    /// (`X-Amz-Signature`, `X-Goog-Signature`, `signature`, Azure SAS's `sig`).
    static func isSecretQueryParameter(_ name: String) -> Bool {
        let lower = name.lowercased()
        return isSecretKey(lower) || lower.contains("signature") || lower == "sig" || lower == "key"
    }

    /// `token`, `access_token`, `refreshToken`, `client_secret`, `password`, `session_id`, …
    static func isSecretKey(_ key: String) -> Bool {
        let lower = key.lowercased()
        return keyWords.contains { lower.contains($0) }
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
