import Testing
@testable import SondeYAML

/// Swift Testing has a `Tag` too.
typealias Tag = SondeYAML.Tag

func root(_ yaml: String) throws -> Node {
    try #require(try compose(yaml: yaml))
}

func mark(_ line: Int, _ column: Int) -> Mark { Mark(line: line, column: column) }

@Suite struct ComposerTests {
    @Test func scalarsOfEveryResolvedTag() throws {
        let yaml = """
            s: hello
            b: yes
            i: 0x1F
            f: 1.5e3
            n: ~
            e:
            t: 2001-12-14
            m: <<
            v: =
            q: "12"
            l: |
              12
            x: !!str 12
            y: !!int "12"
            z: ! 12
            w: !local 12

            """
        let mapping = try #require(try root(yaml).mapping)
        let tags = mapping.map { $0.value.tagName }
        #expect(tags == [.str, .bool, .int, .float, .null, .null, .timestamp, .merge, .value, .str, .str, .str, .int, .str, "!local"])
        #expect(mapping.map { $0.key.tagName }.allSatisfy { $0 == .str })
        let values = mapping.values
        #expect(values[1].bool == true)
        #expect(values[2].int == 31)
        #expect(values[3].float == 1500)
        #expect(values[5].string == "")
        #expect(values[10].string == "12\n")
        #expect(values[12].int == nil, "a quoted scalar is no Int, whatever its tag (as Yams)")
        #expect(values[13].tag.description == "tag:yaml.org,2002:str")
    }

    @Test func scalarStyles() throws {
        let yaml = "- plain\n- 'single'\n- \"double\"\n- |\n  literal\n- >\n  folded\n  text\n"
        let items = try #require(try root(yaml).sequence)
        #expect(items.map { $0.scalar?.style } == [.plain, .singleQuoted, .doubleQuoted, .literal, .folded])
        #expect(items.map(\.string) == ["plain", "single", "double", "literal\n", "folded text\n"])
    }

    @Test func collectionStylesAndTags() throws {
        let node = try root("a: [1, 2]\nb:\n  - 1\nc: {x: 1}\nd:\n  x: 1\ne: !!set {x, y}\nf: ! [1]\n")
        let values = try #require(node.mapping).values
        #expect(node.mapping?.style == .block)
        #expect(values[0].sequence?.style == .flow)
        #expect(values[1].sequence?.style == .block)
        #expect(values[2].mapping?.style == .flow)
        #expect(values[3].mapping?.style == .block)
        #expect(values.map(\.tagName) == [.seq, .seq, .map, .map, .set, .seq])
        #expect(values[4].mapping?.map { $0.value.tagName } == [.null, .null])
    }

    @Test func marksOfKeysValuesAndNestedItems() throws {
        let yaml = """
            name: probe
            steps:
              - get: /health
                expect: 200
              - [a, "b"]
            é: ü

            """
        let node = try root(yaml)
        let mapping = try #require(node.mapping)
        #expect(node.mark == mark(1, 1))
        #expect(mapping[0].key.mark == mark(1, 1))
        #expect(mapping[0].value.mark == mark(1, 7))
        #expect(mapping[1].key.mark == mark(2, 1))
        let steps = try #require(mapping[1].value.sequence)
        #expect(mapping[1].value.mark == mark(3, 3))
        let first = try #require(steps[0].mapping)
        #expect(steps[0].mark == mark(3, 5))
        #expect(first[0].value.mark == mark(3, 10))
        #expect(first[1].key.mark == mark(4, 5))
        #expect(first[1].value.mark == mark(4, 13))
        #expect(steps[1].mark == mark(5, 5))
        #expect(steps[1].sequence?.map(\.mark) == [mark(5, 6), mark(5, 9)])
        // Columns count Unicode scalars, as libyaml does.
        #expect(mapping[2].value.mark == mark(6, 4))
    }

    @Test func marksOfMultiLineScalars() throws {
        let node = try root("a: first\n  second\nb: |\n  one\n  two\nc: \"x\n  y\"\nd: 1\n")
        let mapping = try #require(node.mapping)
        #expect(mapping[0].value.string == "first second")
        #expect(mapping[0].value.mark == mark(1, 4))
        #expect(mapping[1].value.mark == mark(3, 4))
        #expect(mapping[2].value.string == "x y")
        #expect(mapping[2].value.mark == mark(6, 4))
        #expect(mapping[3].key.mark == mark(8, 1))
    }

    @Test func crlfLinesCountOnce() throws {
        let mapping = try #require(try root("a: 1\r\nb:\r\n  - x\r\n").mapping)
        #expect(mapping[1].key.mark == mark(2, 1))
        #expect(mapping[1].value.sequence?.first?.mark == mark(3, 5))
    }

    @Test func mappingOrderAndDuplicateKeysAreKept() throws {
        let mapping = try #require(try root("z: 1\na: 2\nm: 3\na: 4\n").mapping)
        #expect(mapping.keys.map(\.string) == ["z", "a", "m", "a"])
        #expect(mapping.values.map(\.int) == [1, 2, 3, 4])
        #expect(mapping[3].key.mark == mark(4, 1))
        #expect(mapping.count == 4)
    }

    @Test func sequencesFlowAndBlock() throws {
        let node = try root("- a\n- [b, c, [d]]\n- {e: f}\n-\n- []\n")
        let items = try #require(node.sequence)
        #expect(items.count == 5)
        #expect(items[1].sequence?.count == 3)
        #expect(items[1].sequence?[2].sequence?.first?.string == "d")
        #expect(items[2].mapping?.first?.value.string == "f")
        #expect(items[3].tagName == .null)
        #expect(items[4].sequence?.isEmpty == true)
        #expect(Array(items.indices) == [0, 1, 2, 3, 4])
    }

    @Test func aliasesStandForTheAnchoredNode() throws {
        let node = try root("base: &b {x: 1}\ncopy: *b\nlist: &l [1, 2]\nagain: [*l, *l]\ns: &s text\nt: *s\n")
        let values = try #require(node.mapping).values
        #expect(values[1] == values[0])
        #expect(values[1].mark == mark(1, 7), "an alias is the anchored node, mark and all (as Yams)")
        #expect(values[3].sequence?.map { $0 } == [values[2], values[2]])
        #expect(values[5].string == "text")
        #expect(values[5].mark == mark(5, 4))
    }

    @Test func anAnchorRedefinedAppliesAfterward() throws {
        let values = try #require(try root("a: &x 1\nb: *x\nc: &x 2\nd: *x\n").mapping).values
        #expect(values.map(\.int) == [1, 1, 2, 2])
    }

    @Test func mergeKeysAreNotApplied() throws {
        // As Yams' compose: `<<` is a key tagged merge; merging is left to the caller.
        let d = try #require(try root("base: &b {x: 1}\nd:\n  <<: *b\n  y: 2\n").mapping?[1].value.mapping)
        #expect(d.count == 2)
        #expect(d[0].key.tagName == .merge)
    }

    @Test func emptyAndCommentOnlyTextHasNoDocument() throws {
        #expect(try compose(yaml: "") == nil)
        #expect(try compose(yaml: "\n  \n") == nil)
        #expect(try compose(yaml: "# only a comment\n\n# and another") == nil)
        #expect(try compose(bytes: []) == nil)
    }

    @Test func anExplicitEmptyDocumentIsNull() throws {
        let node = try root("---\n")
        #expect(node.tagName == .null)
        #expect(node.string == "")
        #expect(try root("--- hello\n...\n").string == "hello")
    }

    @Test func aSecondDocumentIsRefusedAsYamsDoes() {
        #expect(throws: YAMLError(kind: .composer, problem: "but found another document", mark: mark(2, 1),
                                  context: "expected a single document in the stream", contextMark: mark(1, 1))) {
            try compose(yaml: "a: 1\n---\nb: 2\n")
        }
        #expect(throws: YAMLError.self) { try compose(yaml: "a: 1\n...\n---\n") }
    }

    @Test func tagDirectivesExpand() throws {
        let node = try root("%TAG !e! tag:example.com,2000:\n---\na: !e!foo bar\n")
        #expect(node.mapping?.first?.value.tag.description == "tag:example.com,2000:foo")
    }

    @Test func nulEscapesAndUnicodeSurviveInValues() throws {
        let node = try root("a: \"x\\0y\\u00e9\\U0001F600\"\n")
        #expect(node.mapping?.first?.value.string == "x\u{0}yé😀")
    }

    @Test func byteOrderMarkIsSkipped() throws {
        let node = try root("\u{FEFF}a: 1\n")
        #expect(node.mapping?.first?.key.string == "a")
    }

    @Test func bytesAndStringAgree() throws {
        let text = "a: [1, {b: c}]\nd: &x e\nf: *x\n"
        #expect(try compose(bytes: Array(text.utf8)) == compose(yaml: text))
    }

    @Test func equalityIgnoresMarksAndStylesLikeYams() throws {
        let a = try root("k: 'v'\n")
        let b = try root("\n\n  k:   \"v\"\n")
        #expect(a == b)
        #expect(a.hashValue == b.hashValue)
        #expect(try root("k: 1\n") != root("k: '1'\n"), "tags differ: int and str")
    }

    @Test func nodesBuiltInCodeResolveLikeYams() {
        #expect(Node("12").tagName == .int)
        #expect(Node("12", Tag(.str)).tagName == .str)
        #expect(Node("12", Tag(.nonSpecific)).tagName == .str)
        #expect(Node([Node("a")]).tagName == .seq)
        #expect(Node([(Node("a"), Node("b"))]).tagName == .map)
        var scalar = Node.Scalar("text")
        #expect(scalar.tag.name == .str)
        scalar.string = "true"
        #expect(scalar.tag.name == .bool, "setting the text resolves the tag again, as in Yams")
        let sequence = Node.Sequence([Node("a")], Tag(.implicit), .flow, mark(3, 4))
        #expect(sequence.tag.name == .seq)
        #expect(sequence.mark == mark(3, 4))
        #expect(Tag(.int).description == "tag:yaml.org,2002:int")
        #expect(mark(2, 7).description == "2:7")
    }
}
