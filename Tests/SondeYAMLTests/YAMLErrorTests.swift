import Testing
@testable import SondeYAML

@Suite struct YAMLErrorTests {
    func error(_ yaml: String) -> YAMLError? {
        do {
            _ = try compose(yaml: yaml)
            return nil
        } catch {
            return error
        }
    }

    func error(bytes: [UInt8]) -> YAMLError? {
        do {
            _ = try compose(bytes: bytes)
            return nil
        } catch {
            return error
        }
    }

    @Test func mappingValuesInAPlainScalar() throws {
        let e = try #require(error("a: b: c\n"))
        #expect(e.kind == .scanner)
        #expect(e.problem == "mapping values are not allowed in this context")
        #expect(e.mark == mark(1, 5))
        #expect(e.context == nil)
        #expect(e.description == "mapping values are not allowed in this context at line 1, column 5")
    }

    @Test func tabIndent() throws {
        let e = try #require(error("a:\n\tb: 1\n"))
        #expect(e.kind == .scanner)
        #expect(e.problem == "found character that cannot start any token")
        #expect(e.mark == mark(2, 1))
        #expect(e.context == "while scanning for the next token")
        #expect(e.contextMark == mark(2, 1))
    }

    @Test func unclosedQuote() throws {
        let e = try #require(error("name: x\nurl: \"https://example\n"))
        #expect(e.kind == .scanner)
        #expect(e.problem == "found unexpected end of stream")
        #expect(e.mark == mark(3, 1))
        #expect(e.context == "while scanning a quoted scalar")
        #expect(e.contextMark == mark(2, 6))
        #expect(e.description == "found unexpected end of stream at line 3, column 1 (while scanning a quoted scalar at line 2, column 6)")
    }

    @Test func parserErrorsHaveContext() throws {
        let e = try #require(error("a:\n  b: 1\n c: 2\n"))
        #expect(e.kind == .parser)
        #expect(e.problem == "did not find expected key")
        #expect(e.mark == mark(3, 2))
        #expect(e.context == "while parsing a block mapping")
        #expect(e.contextMark == mark(1, 1))
        let flow = try #require(error("a: [1, 2\n"))
        #expect(flow.problem == "did not find expected ',' or ']'")
        #expect(flow.contextMark == mark(1, 4))
    }

    @Test func undefinedAlias() throws {
        let e = try #require(error("a: 1\nb: *nowhere\n"))
        #expect(e == YAMLError(kind: .composer, problem: "found undefined alias", mark: mark(2, 4)))
        // An anchor names its node only once the node is complete, as in Yams.
        #expect(error("a: &x [1, *x]\n")?.problem == "found undefined alias")
        #expect(error("a: *x\nb: &x 1\n")?.mark == mark(1, 4))
    }

    @Test func invalidUTF8IsAReaderError() throws {
        // Latin-1 "é" (0xE9) where UTF-8 was expected: libyaml reads it as a three-byte lead and
        // points at the first byte that cannot follow it.
        let e = try #require(error(bytes: Array("a: 1\nb: caf".utf8) + [0xE9] + Array(" au lait\n".utf8)))
        #expect(e.kind == .reader)
        #expect(e.problem == "invalid trailing UTF-8 octet")
        #expect(e.offset == 12)
        #expect(e.mark == mark(2, 8))
        #expect(e.description == "invalid trailing UTF-8 octet (byte 0x20) at line 2, column 8 (byte offset 12)")
        #expect(error(bytes: Array("a: caf".utf8) + [0xE9, 0x0A])?.problem == "incomplete UTF-8 octet sequence")
        #expect(error(bytes: [0x61, 0x3A, 0x20, 0xFF])?.problem == "invalid leading UTF-8 octet")
        #expect(error(bytes: [0x61, 0x3A, 0x20, 0xE2, 0x82])?.problem == "incomplete UTF-8 octet sequence")
        #expect(error(bytes: [0x61, 0x3A, 0x20, 0xC0, 0x80])?.kind == .reader, "an overlong NUL")
        #expect(error(bytes: [0x61, 0x3A, 0x20, 0xED, 0xA0, 0x80])?.kind == .reader, "a UTF-16 surrogate")
    }

    @Test func nulBytesAreRefused() throws {
        let e = try #require(error("a: 1\n\u{0}b: 2\n"))
        #expect(e.kind == .reader)
        #expect(e.problem == "control characters are not allowed")
        #expect(e.offset == 5)
        #expect(e.mark == mark(2, 1))
        #expect(e.description == "control characters are not allowed (character U+0000) at line 2, column 1 (byte offset 5)")
        #expect(error(bytes: [0x61, 0x3A, 0x20, 0x00])?.kind == .reader)
        #expect(error("a: \u{7}\n")?.kind == .reader)
    }

    @Test func readerMarksCountScalarsAndEveryLineBreak() {
        let text: [UInt8] = Array("é\r\nx\ry\u{2028}zz\u{85}\nab".utf8)
        text.withUnsafeBufferPointer { buffer in
            #expect(EventParser.mark(atByte: 0, in: buffer) == mark(1, 1))
            #expect(EventParser.mark(atByte: 2, in: buffer) == mark(1, 2))
            #expect(EventParser.mark(atByte: 4, in: buffer) == mark(2, 1))
            #expect(EventParser.mark(atByte: 6, in: buffer) == mark(3, 1))
            #expect(EventParser.mark(atByte: 10, in: buffer) == mark(4, 1))
            #expect(EventParser.mark(atByte: buffer.count, in: buffer) == mark(6, 3))
        }
    }

    @Test func everyErrorSaysWhereInItsDescription() {
        for yaml in ["a: b: c", "a:\n\tb", "'x", "[", "{a: 1", "- a\nb: c", "*x", "a: 1\n---\nb", "%YAML 2.0\n---\na"] {
            let e = error(yaml)
            #expect(e?.mark != nil, "\(yaml)")
            #expect(e?.description.contains("line") == true, "\(yaml)")
        }
    }
}
