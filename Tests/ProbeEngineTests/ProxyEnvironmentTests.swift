import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

/// The proxy variables are read once per client, with libcurl's rules, and given to every
/// transfer as explicit options (libcurl would read them on each transfer).
@Suite("Proxy environment")
struct ProxyEnvironmentTests {
    @Test("libcurl's rules: http_proxy in lower case only, https_proxy or HTTPS_PROXY, then all_proxy or ALL_PROXY; no_proxy or NO_PROXY; empty is unset")
    func rules() {
        func read(_ variables: [String: String]) -> ProxyEnvironment { ProxyEnvironment { variables[$0] } }
        #expect(read([:]) == ProxyEnvironment())
        #expect(read(["HTTP_PROXY": "http://cgi:1"]) == ProxyEnvironment())
        #expect(read(["http_proxy": "http://h:1", "HTTP_PROXY": "http://cgi:1"]).http == "http://h:1")
        #expect(read(["HTTPS_PROXY": "http://s:2"]) == ProxyEnvironment(https: "http://s:2"))
        #expect(read(["https_proxy": "http://s:2", "HTTPS_PROXY": "http://upper:2"]).https == "http://s:2")
        #expect(read(["ALL_PROXY": "http://a:3", "https_proxy": "http://s:2"]) == ProxyEnvironment(http: "http://a:3", https: "http://s:2"))
        #expect(read(["all_proxy": "http://a:3", "ALL_PROXY": "http://upper:3"]) == ProxyEnvironment(http: "http://a:3", https: "http://a:3"))
        #expect(read(["http_proxy": "", "all_proxy": "http://a:3"]).http == "http://a:3")
        #expect(read(["NO_PROXY": "internal,.corp"]).noProxy == "internal,.corp")
        #expect(read(["no_proxy": "", "NO_PROXY": "upper"]).noProxy == "upper")
    }

    @Test("a request goes through the environment's proxy, skips it for a no_proxy host, and a request's own proxy wins")
    func throughProxy() async throws {
        let proxy = try LoopbackHTTPServer { _ in .json(200, #"{"via":"proxy"}"#) }
        defer { proxy.stop() }
        let target = "http://sonde-proxy-test.invalid/x"

        let viaEnvironment = CurlHTTPClient(threads: 2, proxies: ProxyEnvironment(http: proxy.baseURL))
        let answered = try await viaEnvironment.perform(HTTPRequest(method: "GET", url: target))
        #expect(answered.status == 200)
        #expect(proxy.requests.last?.path == target)

        // https goes by https_proxy: with none set, this one is sent directly (and fails to resolve).
        let direct = CurlHTTPClient(threads: 2, proxies: ProxyEnvironment(http: proxy.baseURL, noProxy: "sonde-proxy-test.invalid"))
        let seen = proxy.requests.count
        await #expect(throws: HTTPTransferError.self) { try await direct.perform(HTTPRequest(method: "GET", url: target, timeout: .seconds(5))) }
        await #expect(throws: HTTPTransferError.self) { try await viaEnvironment.perform(HTTPRequest(method: "GET", url: "https://sonde-proxy-test.invalid/", timeout: .seconds(5))) }
        #expect(proxy.requests.count == seen)

        // The request's proxy (the agent's `proxy:`) over the environment's (a closed port).
        let closed = try freeLoopbackPort()
        let overridden = CurlHTTPClient(threads: 2, proxies: ProxyEnvironment(http: "http://127.0.0.1:\(closed)"))
        var request = HTTPRequest(method: "GET", url: target)
        request.proxy = proxy.baseURL
        #expect(try await overridden.perform(request).status == 200)
        #expect(proxy.requests.count == seen + 1)
    }
}
