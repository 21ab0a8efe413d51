import Testing
@testable import SondeYAML

/// Hostile text is refused quickly with a clear error, never a crash, a hang or a huge tree.
@Suite struct ComposeLimitsTests {
    func nestedFlow(_ depth: Int) -> String {
        String(repeating: "[", count: depth) + String(repeating: "]", count: depth)
    }

    func nestedBlock(_ depth: Int) -> String {
        (0..<depth).map { String(repeating: " ", count: $0) + "k:\n" }.joined() + String(repeating: " ", count: depth) + "v\n"
    }

    func depth(_ node: Node) -> Int {
        var deepest = 0
        var stack = [(node, 0)]
        while let (n, d) = stack.popLast() {
            switch n {
            case .scalar: deepest = max(deepest, d)
            case .sequence(let q): deepest = max(deepest, d + 1); stack += q.map { ($0, d + 1) }
            case .mapping(let m): deepest = max(deepest, d + 1); stack += m.flatMap { [($0.key, d + 1), ($0.value, d + 1)] }
            }
        }
        return deepest
    }

    @Test func nestingUpToTheLimitIsAccepted() throws {
        #expect(try depth(root(nestedFlow(256))) == 256)
        #expect(try depth(root(nestedBlock(256))) == 256)
    }

    @Test func nestingPastTheLimitIsRefused() throws {
        let flow = try #require(throwsError { try compose(yaml: nestedFlow(257)) })
        #expect(flow.kind == .limit)
        #expect(flow.mark == Mark(line: 1, column: 257))
        #expect(flow.problem.contains("256 levels"))
        let block = try #require(throwsError { try compose(yaml: nestedBlock(300)) })
        #expect(block.kind == .limit)
        #expect(block.mark?.line == 257)
    }

    @Test func veryDeepTextIsRefusedWithoutRecursion() throws {
        let e = try #require(throwsError { try compose(yaml: String(repeating: "[", count: 200_000)) })
        #expect(e.kind == .limit)
        let e2 = try #require(throwsError { try compose(yaml: String(repeating: "- ", count: 100_000) + "x") })
        #expect(e2.kind == .limit)
    }

    @Test func aliasesCountTowardDepthWhereTheyAreUsed() throws {
        let inner = "a: &deep " + nestedFlow(200) + "\n"
        #expect(try compose(yaml: inner + "b: " + String(repeating: "[", count: 55) + "*deep" + String(repeating: "]", count: 55) + "\n") != nil)
        let e = try #require(throwsError {
            try compose(yaml: inner + "b: " + String(repeating: "[", count: 57) + "*deep" + String(repeating: "]", count: 57) + "\n")
        })
        #expect(e.kind == .limit)
        #expect(e.mark == Mark(line: 2, column: 61))
    }

    @Test func aBillionLaughsIsRefusedQuickly() throws {
        var yaml = "a: &a [\"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\", \"lol\"]\n"
        for level in 1..<9 {
            let name = String(UnicodeScalar(UInt8(97 + level)))
            let previous = String(UnicodeScalar(UInt8(96 + level)))
            yaml += "\(name): &\(name) [" + Array(repeating: "*\(previous)", count: 9).joined(separator: ", ") + "]\n"
        }
        let clock = ContinuousClock()
        var caught: YAMLError?
        let elapsed = clock.measure { caught = throwsError { try compose(yaml: yaml) } }
        let e = try #require(caught)
        #expect(e.kind == .limit)
        #expect(e.problem.contains("100000 nodes"))
        #expect(e.mark?.line == 6, "level f is the first past 100,000 (9^6 + …)")
        #expect(elapsed < .seconds(1))
    }

    @Test func nodeCountLimitIsExact() throws {
        // A sequence of n scalars is n + 1 nodes.
        let fits = "[" + Array(repeating: "1", count: ComposeLimits.maxNodes - 1).joined(separator: ",") + "]"
        #expect(try compose(yaml: fits)?.sequence?.count == ComposeLimits.maxNodes - 1)
        let over = "[" + Array(repeating: "1", count: ComposeLimits.maxNodes).joined(separator: ",") + "]"
        #expect(throwsError { try compose(yaml: over) }?.kind == .limit)
        // Each use of an alias counts its whole subtree: here 9 nodes, then 5 for each use.
        let aliased = "a: &a [1, 2, 3, 4]\nb: [" + Array(repeating: "*a", count: 19_998).joined(separator: ", ") + "]\n"
        #expect(try compose(yaml: aliased) != nil)
        let aliasedOver = "a: &a [1, 2, 3, 4]\nb: [" + Array(repeating: "*a", count: 19_999).joined(separator: ", ") + "]\n"
        #expect(throwsError { try compose(yaml: aliasedOver) }?.kind == .limit)
    }

    @Test func arbitraryBytesNeverCrash() {
        // A fixed pseudo-random byte soup over YAML's punctuation, invalid UTF-8 and NULs.
        var state: UInt64 = 0x9E37_79B9_7F4A_7C15
        let alphabet: [UInt8] = Array("ab1:- \n\t[]{},'\"#&*!?|>%@`~.\\".utf8) + [0x00, 0xC3, 0xA9, 0xFF, 0xE2, 0x80, 0xA8, 0x0D]
        for _ in 0..<3000 {
            var bytes: [UInt8] = []
            state = state &* 6364136223846793005 &+ 1442695040888963407
            for _ in 0..<Int(state >> 58) + 1 {
                state = state &* 6364136223846793005 &+ 1442695040888963407
                bytes.append(alphabet[Int(state >> 33) % alphabet.count])
            }
            _ = try? compose(bytes: bytes)
        }
    }
}

/// The YAMLError `body` throws; nil if it throws none (or another type of error).
func throwsError(_ body: () throws -> Node?) -> YAMLError? {
    do {
        _ = try body()
        return nil
    } catch {
        return error as? YAMLError
    }
}
