import Foundation

/// Replaces secret values with `[redacted]` in anything that leaves a run: step URLs, error
/// messages (including quoted response bodies) and log metadata. Each secret is also matched in
/// its URL-encoded and JSON-escaped forms, since that is how it shows up in URLs and bodies.
struct Redactor: Sendable {
    static let mask = "[redacted]"
    private(set) var needles: [String] = []

    mutating func add(_ secret: String) {
        guard !secret.isEmpty else { return }
        var forms: Set<String> = [secret]
        if let encoded = secret.addingPercentEncoding(withAllowedCharacters: .alphanumerics) { forms.insert(encoded) }
        if let encoded = secret.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) { forms.insert(encoded) }
        forms.insert(String(JSONWriter.quote(secret).dropFirst().dropLast()))
        let trimmed = secret.trimmingCharacters(in: .whitespacesAndNewlines)
        if !trimmed.isEmpty { forms.insert(trimmed) }
        needles = Array(Set(needles).union(forms)).sorted { $0.count > $1.count }
    }

    func redact(_ text: String) -> String {
        guard !needles.isEmpty else { return text }
        var result = text
        for needle in needles where result.contains(needle) {
            result = result.replacingOccurrences(of: needle, with: Self.mask)
        }
        return result
    }
}
