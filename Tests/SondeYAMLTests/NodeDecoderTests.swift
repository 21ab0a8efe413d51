import Testing
@testable import SondeYAML

@Suite struct NodeDecoderTests {
    struct Inner: Decodable, Equatable {
        var port: Int?
        var ratio: Double?
        var on: Bool?
    }
    struct Outer: Decodable, Equatable {
        var name: String
        var inner: Inner?
        var list: [Inner]?
        var map: [String: String]?
    }

    @Test func decodesScalarsListsAndMaps() throws {
        let value = try NodeDecoder().decode(
            Outer.self, from: try compose(yaml: "name: x\ninner: {port: 0x10, ratio: 2, on: yes}\nlist: [{port: 1}, {}]\nmap: {a: 1, b: two}\n"))
        #expect(value == Outer(name: "x", inner: Inner(port: 16, ratio: 2, on: true), list: [Inner(port: 1), Inner()], map: ["a": "1", "b": "two"]))
        #expect(try NodeDecoder().decode(Inner.self, from: nil) == Inner(), "an empty document is an empty mapping")
    }

    @Test func anUnknownKeyIsRefusedWithItsPlaceAndTheClosestKnownKey() throws {
        #expect(throws: NodeDecodingError.self) { try NodeDecoder().decode(Outer.self, from: try compose(yaml: "name: x\nlist:\n  - {prot: 1}\n")) }
        let typo = try compose(yaml: "name: x\nlist:\n  - {prot: 1}\n")
        do { _ = try NodeDecoder().decode(Outer.self, from: typo) } catch {
            #expect(error.path == "list[0].prot")
            #expect(error.mark == Mark(line: 3, column: 6))
            #expect(error.message == "unknown key 'prot'; did you mean 'port'?")
        }
        // The first unknown key in the document wins, whatever order decoding visits them in.
        let two = try compose(yaml: "zzz: 1\nname: x\ninner: {rati: 1}\n")
        do { _ = try NodeDecoder().decode(Outer.self, from: two) } catch {
            #expect(error.path == "zzz" && error.mark == Mark(line: 1, column: 1), "\(error)")
        }
    }

    @Test func typeErrorsAndMissingKeysArePlaced() throws {
        let fraction = try compose(yaml: "name: x\ninner: {port: 1.5}\n")
        do { _ = try NodeDecoder().decode(Outer.self, from: fraction) } catch {
            #expect(error.path == "inner.port" && error.mark == Mark(line: 2, column: 15), "\(error)")
            #expect(error.message.contains("expected a whole number"), "\(error)")
        }
        let missing = try compose(yaml: "inner: {}\n")
        do { _ = try NodeDecoder().decode(Outer.self, from: missing) } catch {
            #expect(error.path == "name" && error.message == "is required", "\(error)")
        }
        let list = try compose(yaml: "name: [1]\n")
        do { _ = try NodeDecoder().decode(Outer.self, from: list) } catch {
            #expect(error.description.hasPrefix("1:7: name: expected text"), "\(error)")
        }
    }
}
