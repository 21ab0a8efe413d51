import Foundation

/// A `multipart/form-data` body (RFC 7578) split into its parts. Works on raw bytes, so file
/// content may hold anything, including CRLFs and text that looks like a boundary.
struct MultipartFormData {
    struct Part {
        var name: String?
        var filename: String?
        var contentType: String?
        var body: Data
    }

    struct ParseError: Error, CustomStringConvertible {
        var description: String
        init(_ description: String) { self.description = description }
    }

    var parts: [Part]

    func part(named name: String) -> Part? { parts.first { $0.name == name } }

    /// The `boundary` parameter of a `Content-Type` header, or nil if it is not multipart/form-data.
    static func boundary(fromContentType contentType: String) -> String? {
        let fields = splitParameters(contentType)
        guard let type = fields.first?.lowercased(), type == "multipart/form-data" else { return nil }
        for field in fields.dropFirst() {
            let (key, value) = keyValue(field)
            if key == "boundary", !value.isEmpty { return value }
        }
        return nil
    }

    init(body: Data, boundary: String) throws(ParseError) {
        let result = body.withUnsafeBytes { raw in
            Result { () throws(ParseError) -> [Part] in try Self.parse(raw, boundary: boundary) }
        }
        self.parts = try result.get()
    }

    private static func parse(_ bytes: UnsafeRawBufferPointer, boundary: String) throws(ParseError) -> [Part] {
        let delimiter = Array("--\(boundary)".utf8)
        let crlf: [UInt8] = [13, 10]
        var parts: [Part] = []

        // The first delimiter may open the body or follow a preamble line.
        guard var position = find(delimiter, in: bytes, from: 0) else {
            throw ParseError("multipart body has no boundary line \"--\(boundary)\"")
        }
        position += delimiter.count
        // Bounded by the number of delimiters in the body.
        while true {
            if position + 2 <= bytes.count, bytes[position] == 45, bytes[position + 1] == 45 { break }  // "--": the end
            while position < bytes.count, bytes[position] == 32 || bytes[position] == 9 { position += 1 }  // transport padding
            guard position + 2 <= bytes.count, bytes[position] == 13, bytes[position + 1] == 10 else {
                throw ParseError("multipart boundary line is not followed by CRLF")
            }
            position += 2
            // Headers end at an empty line; a part may have none at all.
            let headerEnd: Int
            let contentStart: Int
            if position + 2 <= bytes.count, bytes[position] == 13, bytes[position + 1] == 10 {
                headerEnd = position
                contentStart = position + 2
            } else {
                guard let end = find([13, 10, 13, 10], in: bytes, from: position) else {
                    throw ParseError("multipart part headers are not terminated by an empty line")
                }
                headerEnd = end
                contentStart = end + 4
            }
            guard let contentEnd = find(crlf + delimiter, in: bytes, from: contentStart) else {
                throw ParseError("multipart part is not closed by \"--\(boundary)\" (body truncated?)")
            }
            var part = Part(body: Data(UnsafeRawBufferPointer(rebasing: bytes[contentStart..<contentEnd])))
            let headerText = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[position..<headerEnd]), as: UTF8.self)
            for line in headerText.components(separatedBy: "\r\n") {
                guard let colon = line.firstIndex(of: ":") else { continue }
                let name = line[..<colon].trimmingCharacters(in: .whitespaces).lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                switch name {
                case "content-disposition":
                    for field in splitParameters(value).dropFirst() {
                        let (key, fieldValue) = keyValue(field)
                        if key == "name" { part.name = fieldValue }
                        if key == "filename" { part.filename = fieldValue }
                    }
                case "content-type":
                    part.contentType = value
                default:
                    break
                }
            }
            parts.append(part)
            position = contentEnd + 2 + delimiter.count
        }
        return parts
    }

    // MARK: - Helpers

    /// The first index of `needle` in `haystack` at or after `from`.
    static func find(_ needle: [UInt8], in hay: UnsafeRawBufferPointer, from: Int) -> Int? {
        guard !needle.isEmpty, from <= hay.count - needle.count else { return nil }
        // memchr for the first byte, then compare the rest: fast on large binary bodies.
        return needle.withUnsafeBytes { pin in
                let base = hay.baseAddress!
                let last = hay.count - pin.count
                var index = from
                while index <= last {
                    guard let hit = memchr(base + index, Int32(pin[0]), last - index + 1) else { return nil }
                    let offset = base.distance(to: UnsafeRawPointer(hit))
                    if memcmp(base + offset, pin.baseAddress!, pin.count) == 0 { return offset }
                    index = offset + 1
                }
                return nil
        }
    }

    /// Splits `a; b="x;y"; c` on semicolons outside quotes.
    static func splitParameters(_ text: String) -> [String] {
        var fields: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for character in text {
            if escaped { current.append(character); escaped = false; continue }
            if character == "\\" && quoted { current.append(character); escaped = true; continue }
            if character == "\"" { quoted.toggle() }
            if character == ";" && !quoted {
                fields.append(current.trimmingCharacters(in: .whitespaces))
                current = ""
            } else {
                current.append(character)
            }
        }
        fields.append(current.trimmingCharacters(in: .whitespaces))
        return fields
    }

    /// `key="value"` → (lowercased key, unquoted value).
    static func keyValue(_ field: String) -> (String, String) {
        guard let equals = field.firstIndex(of: "=") else { return (field.lowercased(), "") }
        let key = field[..<equals].trimmingCharacters(in: .whitespaces).lowercased()
        var value = field[field.index(after: equals)...].trimmingCharacters(in: .whitespaces)
        if value.count >= 2, value.hasPrefix("\""), value.hasSuffix("\"") {
            value = String(value.dropFirst().dropLast())
                .replacingOccurrences(of: "\\\"", with: "\"")
                .replacingOccurrences(of: "\\\\", with: "\\")
        }
        return (key, value)
    }
}
