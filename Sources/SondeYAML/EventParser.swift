import CYAML

/// One libyaml event, copied out of `yaml_event_t` so the C event is deleted at once.
struct Event {
    enum Kind {
        case streamStart, streamEnd, documentStart, documentEnd
        case alias, scalar, sequenceStart, sequenceEnd, mappingStart, mappingEnd
    }

    var kind: Kind
    /// Where the event starts.
    var mark: Mark
    /// The anchor a scalar or collection defines, or the one an alias names.
    var anchor: String?
    /// The tag as Yams takes it from the event: nil when implicit (to be resolved), `str` for a
    /// quoted or block scalar without an explicit tag.
    var tag: Tag.Name?
    /// A scalar's text.
    var value: String = ""
    /// A scalar's, sequence's or mapping's style: libyaml's enum as its raw number.
    var style: UInt32 = 0
}

/// libyaml's event parser over a UTF-8 buffer, one event at a time. The buffer must outlive it.
final class EventParser {
    private let parser: UnsafeMutablePointer<yaml_parser_t>
    private let input: UnsafeBufferPointer<UInt8>
    /// libyaml asserts a non-NULL input, which an empty buffer may not have.
    private var emptyInput: UnsafeMutablePointer<UInt8>?

    init(input: UnsafeBufferPointer<UInt8>) throws(YAMLError) {
        self.input = input
        parser = UnsafeMutablePointer<yaml_parser_t>.allocate(capacity: 1)
        guard yaml_parser_initialize(parser) == 1 else {
            parser.deallocate()
            throw YAMLError(kind: .memory, problem: "libyaml could not allocate memory for a parser")
        }
        // As Yams: the text is UTF-8, and libyaml need not guess from a byte order mark.
        yaml_parser_set_encoding(parser, YAML_UTF8_ENCODING)
        if let base = input.baseAddress {
            yaml_parser_set_input_string(parser, base, input.count)
        } else {
            let empty = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
            empty.initialize(to: 0)
            emptyInput = empty
            yaml_parser_set_input_string(parser, empty, 0)
        }
    }

    deinit {
        yaml_parser_delete(parser)
        parser.deallocate()
        emptyInput?.deallocate()
    }

    func next() throws(YAMLError) -> Event {
        var event = yaml_event_t()
        // A failed parse leaves the event zeroed, which yaml_event_delete accepts too.
        defer { yaml_event_delete(&event) }
        guard yaml_parser_parse(parser, &event) == 1 else { throw error() }
        return Self.copy(event)
    }

    private static func copy(_ event: yaml_event_t) -> Event {
        let mark = Mark(line: Int(event.start_mark.line) + 1, column: Int(event.start_mark.column) + 1)
        switch event.type {
        case YAML_STREAM_START_EVENT:
            return Event(kind: .streamStart, mark: mark)
        case YAML_STREAM_END_EVENT:
            return Event(kind: .streamEnd, mark: mark)
        case YAML_DOCUMENT_START_EVENT:
            return Event(kind: .documentStart, mark: mark)
        case YAML_DOCUMENT_END_EVENT:
            return Event(kind: .documentEnd, mark: mark)
        case YAML_ALIAS_EVENT:
            return Event(kind: .alias, mark: mark, anchor: string(event.data.alias.anchor))
        case YAML_SCALAR_EVENT:
            let scalar = event.data.scalar
            // The value may hold NUL characters (a "\0" escape), so it is read by length.
            let value = String(decoding: UnsafeBufferPointer(start: scalar.value, count: scalar.length), as: UTF8.self)
            // As Yams' `Event.scalarTag`: an untagged non-plain scalar is a string.
            let tag: Tag.Name? = scalar.quoted_implicit == 1 ? .str : string(scalar.tag).map(Tag.Name.init(rawValue:))
            return Event(kind: .scalar, mark: mark, anchor: string(scalar.anchor), tag: tag, value: value, style: scalar.style.rawValue)
        case YAML_SEQUENCE_START_EVENT:
            let start = event.data.sequence_start
            let tag = start.implicit != 0 ? nil : string(start.tag).map(Tag.Name.init(rawValue:))
            return Event(kind: .sequenceStart, mark: mark, anchor: string(start.anchor), tag: tag, style: start.style.rawValue)
        case YAML_SEQUENCE_END_EVENT:
            return Event(kind: .sequenceEnd, mark: mark)
        case YAML_MAPPING_START_EVENT:
            let start = event.data.mapping_start
            let tag = start.implicit != 0 ? nil : string(start.tag).map(Tag.Name.init(rawValue:))
            return Event(kind: .mappingStart, mark: mark, anchor: string(start.anchor), tag: tag, style: start.style.rawValue)
        case YAML_MAPPING_END_EVENT:
            return Event(kind: .mappingEnd, mark: mark)
        default:
            // YAML_NO_EVENT is never returned by a successful parse; treat it as the end.
            return Event(kind: .streamEnd, mark: mark)
        }
    }

    private static func string(_ pointer: UnsafeMutablePointer<yaml_char_t>?) -> String? {
        pointer.map { String(decodingCString: $0, as: UTF8.self) }
    }

    private func error() -> YAMLError {
        let p = parser.pointee
        func mark(_ m: yaml_mark_t) -> Mark { Mark(line: Int(m.line) + 1, column: Int(m.column) + 1) }
        let problem = p.problem.map { String(cString: $0) } ?? "libyaml gave no description of the problem"
        let context = p.context.map { String(cString: $0) }
        switch p.error {
        case YAML_MEMORY_ERROR:
            return YAMLError(kind: .memory, problem: "libyaml could not allocate memory")
        case YAML_READER_ERROR:
            // libyaml gives a reader error as a byte offset only (its problem mark is unset).
            let offset = p.problem_offset
            var error = YAMLError(kind: .reader, problem: problem, mark: Self.mark(atByte: offset, in: input), offset: offset)
            error.value = Int(p.problem_value)
            return error
        case YAML_SCANNER_ERROR:
            return YAMLError(kind: .scanner, problem: problem, mark: mark(p.problem_mark),
                             context: context, contextMark: context == nil ? nil : mark(p.context_mark))
        case YAML_PARSER_ERROR:
            return YAMLError(kind: .parser, problem: problem, mark: mark(p.problem_mark),
                             context: context, contextMark: context == nil ? nil : mark(p.context_mark))
        default:
            return YAMLError(kind: .composer, problem: problem, mark: mark(p.problem_mark),
                             context: context, contextMark: context == nil ? nil : mark(p.context_mark))
        }
    }

    /// The 1-based line and column of a byte offset, counted as libyaml counts its marks: lines
    /// end at LF, CR, CR LF, NEL, LS or PS; columns count Unicode scalars.
    static func mark(atByte offset: Int, in input: UnsafeBufferPointer<UInt8>) -> Mark {
        var line = 1, column = 1
        var i = 0
        let end = min(offset, input.count)
        while i < end {
            let b = input[i]
            func next(_ k: Int) -> UInt8? { i + k < input.count ? input[i + k] : nil }
            if b == 0x0D {
                i += next(1) == 0x0A ? 2 : 1
                line += 1; column = 1
            } else if b == 0x0A {
                i += 1
                line += 1; column = 1
            } else if b == 0xC2, next(1) == 0x85 {
                i += 2
                line += 1; column = 1
            } else if b == 0xE2, next(1) == 0x80, next(2) == 0xA8 || next(2) == 0xA9 {
                i += 3
                line += 1; column = 1
            } else {
                i += 1
                // Continuation bytes are part of the scalar already counted.
                if b & 0xC0 != 0x80 { column += 1 }
            }
        }
        return Mark(line: line, column: column)
    }
}
