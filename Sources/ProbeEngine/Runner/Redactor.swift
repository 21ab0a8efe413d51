import FoundationEssentials
import SondeCore

/// Replaces secret values with `[redacted]` in anything that leaves a run: step URLs, error
/// messages (including quoted response bodies) and log metadata. Each secret is also matched in
/// its URL-encoded and JSON-escaped forms, since that is how it shows up in URLs and bodies.
struct Redactor: Sendable {
    static let mask = "[redacted]"
    private(set) var needles: [String] = []

    mutating func add(_ secret: String) {
        guard !secret.isEmpty else { return }
        var forms: Set<String> = [secret]
        // The forms Foundation's addingPercentEncoding gave with .alphanumerics and .urlQueryAllowed.
        forms.insert(Self.percentEncoded(secret) { $0.isASCIIAlphanumeric })
        forms.insert(Self.percentEncoded(secret) { $0.isASCIIAlphanumeric || "-._~!$&'()*+,;=:@/?".unicodeScalars.contains($0) })
        forms.insert(String(JSONWriter.quote(secret).dropFirst().dropLast()))
        forms.insert(FormEncoding.encode(secret))
        let trimmed = secret.trimmed()
        if !trimmed.isEmpty { forms.insert(trimmed) }
        needles = Array(Set(needles).union(forms)).sorted { $0.count > $1.count }
    }

    /// `text` with every byte of every character outside `keep` percent-encoded (as URLs carry it).
    static func percentEncoded(_ text: String, keep: (Unicode.Scalar) -> Bool) -> String {
        var out = ""
        for scalar in text.unicodeScalars {
            if scalar.isASCII && keep(scalar) {
                out.unicodeScalars.append(scalar)
            } else {
                for byte in String(scalar).utf8 { out += "%" + hexDigits([byte]).uppercased() }
            }
        }
        return out
    }

    func redact(_ text: String) -> String {
        guard !needles.isEmpty else { return text }
        var result = text
        for needle in needles where result.contains(needle) {
            result = result.replacingAll(needle, with: Self.mask)
        }
        return result
    }
}
