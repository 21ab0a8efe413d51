import SondeCore

/// Which content codings a response may arrive in when its request asked for decoding
/// (`Accept-Encoding`). `ContentDecoder` decodes one coding per response, and only one the
/// request accepted:
/// - nested codings (`gzip, gzip`) multiply the ratios, and no real server sends them;
/// - a server may not answer a `gzip` probe in `br` or `zstd`: the probe did not ask for their
///   decoders' memory (up to 16 and 8 MiB a transfer, counted in the body memory).
/// - a coding `ContentDecoder` does not decode (`compress`, or anything a `*` lets in).
/// Each is refused at the headers, before anything is decoded.
enum ContentCodings {
    /// The codings an `Accept-Encoding` value accepts, lower-cased, without their weights;
    /// `identity` always (RFC 9110: acceptable unless refused with q=0, which no probe needs).
    static func accepted(_ header: String) -> Set<String> {
        var codings: Set<String> = ["identity"]
        for coding in listed(header) { codings.insert(coding) }
        return codings
    }

    /// The codings a header lists, lower-cased, parameters (`;q=0.5`) dropped, empty ones skipped.
    static func listed(_ value: String) -> [String] {
        value.split(separator: ",").compactMap { item in
            let name = item.split(separator: ";", maxSplits: 1).first.map { String($0) } ?? ""
            let trimmed = name.trimmed().lowercased()
            return trimmed.isEmpty ? nil : trimmed
        }
    }

    /// The codings a `Content-Encoding` value applies: `listed`, without `identity`.
    static func applied(_ value: String) -> [String] { listed(value).filter { $0 != "identity" } }

    /// Why a response whose `Content-Encoding` lists `codings` is not decoded (nil: it is fine).
    static func refusal(_ codings: [String], accepted: Set<String>) -> String? {
        let applied = codings.filter { $0 != "identity" }
        if let foreign = applied.first(where: { !accepted.contains($0) && !accepted.contains("*") }) {
            return "the response's Content-Encoding is \(codings.joined(separator: ", ")), and the request did not accept \(foreign) (Accept-Encoding: \(accepted.subtracting(["identity"]).sorted().joined(separator: ", ")))"
        }
        if let unknown = applied.first(where: { ContentDecoder.Coding(name: $0) == nil }) {
            return "the response's Content-Encoding is \(unknown), which the agent does not decode (gzip, deflate, br, zstd): take it out of the step's Accept-Encoding"
        }
        if applied.count > 1 {
            return "the response's Content-Encoding nests \(applied.count) codings (\(codings.joined(separator: ", "))), whose ratios multiply"
        }
        return nil
    }
}
