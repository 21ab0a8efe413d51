import CCurl
import FoundationEssentials

/// The earliest `notAfter` of the certificate chain a TLS transfer saw, from `CURLINFO_CERTINFO`
/// (set `CURLOPT_CERTINFO`): curl prints each certificate's fields as text, `Expire date` in
/// OpenSSL's `ASN1_TIME_print` form (`Mar  1 12:00:00 2027 GMT`).
enum CertificateExpiry {
    static func earliest(_ handle: UnsafeMutableRawPointer) -> Date? {
        var info: UnsafeMutablePointer<curl_certinfo>?
        guard sonde_curl_getinfo_certinfo(handle, &info) == CURLE_OK, let info else { return nil }
        let count = Int(info.pointee.num_of_certs)
        guard count > 0, count <= 64, let lists = info.pointee.certinfo else { return nil }
        var earliest: Date?
        for index in 0..<count {
            var node = lists[index]
            while let entry = node {
                if let text = entry.pointee.data.map({ String(cString: $0) }), text.hasPrefix("Expire date:"),
                    let date = parse(String(text.dropFirst("Expire date:".count)))
                {
                    earliest = min(earliest ?? date, date)
                }
                node = entry.pointee.next
            }
        }
        return earliest
    }

    private static let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]

    /// `Mon DD HH:MM:SS YYYY GMT` (day space-padded) → the instant; nil for anything else.
    static func parse(_ text: String) -> Date? {
        let parts = text.split(separator: " ")
        guard parts.count == 5, parts[4] == "GMT", let month = months.firstIndex(of: String(parts[0])),
            let day = Int(parts[1]), (1...31).contains(day), let year = Int(parts[3]), (1950...9999).contains(year)
        else { return nil }
        let clock = parts[2].split(separator: ":").compactMap { Int($0) }
        guard clock.count == 3, (0...23).contains(clock[0]), (0...59).contains(clock[1]), (0...60).contains(clock[2]) else { return nil }
        let days = daysFromCivil(year: year, month: month + 1, day: day)
        return Date(timeIntervalSince1970: Double(days * 86_400 + clock[0] * 3600 + clock[1] * 60 + clock[2]))
    }

    /// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
    static func daysFromCivil(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }
}
