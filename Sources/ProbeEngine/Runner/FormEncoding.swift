import CurlHTTP
import SondeCore

/// application/x-www-form-urlencoded as browsers write it (WHATWG URL standard): ASCII letters,
/// digits and `*-._` stay, a space becomes `+`, every other byte is `%XX`. So `&`, `=`, `+` and
/// `%` in a value arrive as themselves.
enum FormEncoding {
    static func encode(_ text: String) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.isASCII && (scalar.isASCIIAlphanumeric || "*-._".unicodeScalars.contains(scalar)) {
                out.unicodeScalars.append(scalar)
            } else if scalar == " " {
                out += "+"
            } else {
                for byte in String(scalar).utf8 { out += "%" + hexDigits([byte]).uppercased() }
            }
        }
        return out
    }
}

extension HTTPRequest {
    /// A request's `tls:` and `ip_version:` (the agent's own CA file stays unless `ca_file` is given).
    mutating func apply(_ tls: TLSOptions?, ipVersion: IPVersion?) {
        self.ipVersion = ipVersion
        guard let tls else { return }
        if let caFile = tls.caFile { self.caFile = caFile }
        // A key in the certificate's own PEM file is read from there.
        if let certificate = tls.certificate { clientCertificate = (certificate, tls.key ?? certificate) }
        verifyTLS = !tls.insecure
    }
}
