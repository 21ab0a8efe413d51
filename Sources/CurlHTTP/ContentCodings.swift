import SondeCore

/// Which content codings a response may arrive in when its request asked for decoding
/// (`Accept-Encoding`), and how much a paused transfer's decoding can hold.
///
/// While a transfer is paused (its round's share, or body memory), libcurl keeps whatever the
/// rest of its current network read decodes to, up to 64 MiB, outside any budget of ours. One
/// 16 KiB read of a gzip bomb decodes to 16 MiB: 48 probes reading one (status checks only)
/// peaked at 284–286 MiB, the 16 transfers of that origin each holding about that; 39–41 MiB
/// with these limits (BENCHMARKS-agent.md, 38th session). Three limits:
/// - reads of `decodingReadBytes` (1 KiB) for a decoding transfer: about 1 MiB at gzip's and
///   deflate's largest ratio;
/// - one coding per response: nested ones (`gzip, gzip`) multiply the ratios, and no real
///   server sends them;
/// - only codings the request accepted: a server may not answer a `gzip` probe in `br` or
///   `zstd`, whose ratios have no such bound (a probe that accepts them is told so in
///   probes/README.md, "Compressed bodies").
enum ContentCodings {
    /// libcurl's smallest receive buffer (CURLOPT_BUFFERSIZE).
    static let decodingReadBytes = 1024

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
        if applied.count > 1 {
            return "the response's Content-Encoding nests \(applied.count) codings (\(codings.joined(separator: ", "))), whose ratios multiply"
        }
        return nil
    }
}
