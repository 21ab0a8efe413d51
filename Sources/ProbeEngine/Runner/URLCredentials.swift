import SondeCore

/// The password in a URL's userinfo (`https://user:password@host/`): a credential by definition,
/// so a run redacts it from everything it reports (as curl's verbose output and most loggers
/// hide it), whether the script wrote it literally or it came from a template.
enum URLCredentials {
    /// The password of `url`'s userinfo, as written and percent-decoded; empty without one.
    static func passwords(in url: String) -> [String] {
        // Most URLs have no '@': one byte scan, and nothing else, per request step.
        guard url.utf8.contains(UInt8(ascii: "@")), let schemeEnd = url.utf8.indices.first(where: { url.utf8[$0...].starts(with: "://".utf8) })
        else { return [] }
        let rest = url[url.utf8.index(schemeEnd, offsetBy: 3)...]
        // The authority ends at the first '/', '?' or '#'; its userinfo at the last '@' in it.
        let authority = rest.prefix { $0 != "/" && $0 != "?" && $0 != "#" }
        guard let at = authority.lastIndex(of: "@") else { return [] }
        let userinfo = authority[..<at]
        guard let colon = userinfo.firstIndex(of: ":") else { return [] }
        let password = String(userinfo[userinfo.index(after: colon)...])
        guard !password.isEmpty else { return [] }
        let decoded = percentDecoded(password)
        return decoded == password ? [password] : [password, decoded]
    }

    /// Values of query parameters named like a credential: a presigned URL's signature and
    /// credential (`X-Amz-Signature`, `X-Amz-Credential`, `X-Amz-Security-Token`,
    /// `X-Goog-Signature`, Azure's `sig`), `access_token`, `api_key`, … (``SecretNames``). A
    /// presigned URL extracted from a response is a bearer credential until it expires, whatever
    /// the JSON field that carried it was called. As written and percent-decoded.
    static func queryCredentials(in url: String) -> [String] {
        // Most probe URLs have no query: one byte scan, and nothing else. With one, the names are
        // read in place; only a credential's value becomes a String.
        guard url.utf8.contains(UInt8(ascii: "?")) else { return [] }
        var url = url
        return url.withUTF8 { bytes in
            guard let question = bytes.firstIndex(of: UInt8(ascii: "?")) else { return [] }
            let end = bytes[question...].firstIndex(of: UInt8(ascii: "#")) ?? bytes.endIndex
            var values: [String] = []
            var start = question + 1
            while start < end {
                let pairEnd = bytes[start..<end].firstIndex(of: UInt8(ascii: "&")) ?? end
                defer { start = pairEnd + 1 }
                guard let equals = bytes[start..<pairEnd].firstIndex(of: UInt8(ascii: "=")),
                    pairEnd - (equals + 1) >= SecretNames.minimumDefaultLength
                else { continue }
                let name = bytes[start..<equals]
                let secret =
                    name.allSatisfy { $0 < 0x80 && $0 != UInt8(ascii: "%") }
                    ? SecretNames.isSecretQueryParameter(ascii: name)
                    : SecretNames.isSecretQueryParameter(percentDecoded(String(decoding: name, as: UTF8.self)))
                guard secret else { continue }
                let value = String(decoding: bytes[(equals + 1)..<pairEnd], as: UTF8.self)
                let decoded = percentDecoded(value.replacingAll("+", with: " "))
                values += decoded == value ? [value] : [value, decoded]
            }
            return values
        }
    }

    /// Whether a URL template writes a password literally into its userinfo (not from `${…}`).
    static func hasLiteralPassword(_ source: String) -> Bool {
        passwords(in: source).contains { !$0.hasPrefix("${") }
    }

    private static func percentDecoded(_ text: String) -> String {
        guard text.utf8.contains(UInt8(ascii: "%")) else { return text }
        var bytes: [UInt8] = []
        var iterator = Array(text.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
