import Foundation
import Testing

@testable import CurlHTTP

/// Each redirect hop carries the kind of address its chain started at, so a server cannot send
/// the agent further inside the network (`AddressKind`).
@Suite struct RedirectAddressTests {
    @Test("a hop keeps the kind of the first request's address, through every later hop (none known: public)", arguments: [
        "93.184.216.34", "10.0.0.7", "127.0.0.1", "",
    ])
    func hopsKeepTheFirstAddressKind(address: String) throws {
        let first: String? = address.isEmpty ? nil : address
        let kind: AddressKind = ["10.0.0.7": .privateAddress, "127.0.0.1": .loopback][address] ?? .publicAddress
        var hops = RedirectHops(HTTPRequest(url: "http://start.example/", followRedirects: true))
        let redirect = HTTPResponse(status: 302, headers: [], body: Data(), timings: .zero, remoteAddress: first, redirectURL: "http://next.example/")
        let hop = try #require(try hops.next(after: redirect))
        #expect(hop.innermostAddress == kind)
        hops.current = hop
        // The second hop answered from a loopback address (the first was let through): the bound stays the first's.
        let again = HTTPResponse(status: 302, headers: [], body: Data(), timings: .zero, remoteAddress: "127.0.0.1", redirectURL: "http://third.example/")
        #expect(try hops.next(after: again)?.innermostAddress == kind)
    }
}
