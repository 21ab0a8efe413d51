import CurlHTTP
import SondeCore

/// application/x-www-form-urlencoded as browsers write it (WHATWG URL standard): ASCII letters,
/// digits and `*-._` stay, a space becomes `+`, every other byte is `%XX`. So `&`, `=`, `+` and
/// `%` in a value arrive as themselves.
enum FormEncoding {
    static func encode(_ text: String) -> String {
        Redactor.percentEncoded(text) { $0.isASCIIAlphanumeric || "*-._ ".unicodeScalars.contains($0) }
            .replacingAll(" ", with: "+")
    }
}

extension HTTPRequest {
    /// A request's `tls:` and `ip_version:` (the agent's own CA file stays unless `ca_file` is given).
    mutating func apply(_ tls: TLSOptions?, ipVersion: IPVersion?) {
        self.ipVersion = ipVersion
        guard let tls else { return }
        if let caFile = tls.caFile { self.caFile = caFile }
        clientCertificate = tls.certificate
        clientKey = tls.key
        verifyTLS = !tls.insecure
    }
}
