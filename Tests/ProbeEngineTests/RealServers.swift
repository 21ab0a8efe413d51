import Foundation
import SondeTestSupport

/// Throwaway instances of real servers (httpbin under gunicorn, nginx with WebDAV and TLS,
/// dnsmasq) on free loopback ports in temp folders, for the probe-format tests. A missing
/// server fails the test with what to install; nothing is skipped.
enum RealServers {
    /// A loopback TCP port nobody listens on right now.
    static func freePort() throws -> Int { try freeLoopbackPort() }

    static func executable(_ candidates: [String], install: String) throws -> String {
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw TestFailure("\(candidates[0]) not found: \(install) (scripts/install-deps.sh does it)")
    }

    /// Waits until something accepts TCP connections on 127.0.0.1:`port`.
    static func waitForListener(_ port: Int, _ what: String, process: ChildProcess) async throws {
        try await waitUntil("\(what) to listen on port \(port)", timeout: .seconds(30)) {
            if !process.isRunning { throw TestFailure("\(what) exited: \(process.allOutput)") }
            guard let fd = try? connectLoopbackSocket(port: port, receiveTimeout: .seconds(1)) else { return false }
            close(fd)
            return true
        }
    }

    /// Runs a command to completion (openssl), failing with its output.
    static func run(_ executable: String, _ arguments: [String], in directory: String, environment: [String: String] = [:]) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        if !environment.isEmpty { process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 } }
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = pipe
        try process.run()
        let output = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw TestFailure("\(executable) \(arguments.joined(separator: " ")) failed: \(String(decoding: output, as: UTF8.self))")
        }
    }

    // MARK: - httpbin

    /// A server started for a test: its process, address and port.
    struct HTTPBin {
        let process: ChildProcess
        let url: String
        let port: Int
        func stop() async { await process.stop() }
    }

    static var httpbinVenv: String {
        ProcessInfo.processInfo.environment["SONDE_HTTPBIN_VENV"] ?? (NSHomeDirectory() + "/.cache/sonde/httpbin-venv")
    }

    static func httpbin() async throws -> HTTPBin {
        let gunicorn = try executable([httpbinVenv + "/bin/gunicorn"], install: "pip install httpbin gunicorn into \(httpbinVenv)")
        let port = try freePort()
        let process = try ChildProcess(gunicorn, ["--bind", "127.0.0.1:\(port)", "--workers", "2", "--log-level", "warning", "httpbin:app"])
        try await waitForListener(port, "httpbin (gunicorn)", process: process)
        return HTTPBin(process: process, url: "http://127.0.0.1:\(port)", port: port)
    }

    // MARK: - SMTP with STARTTLS (aiosmtpd)

    /// aiosmtpd (PyPI, in the httpbin venv) on a free port, offering STARTTLS with `cert`/`key`
    /// (and then requiring it before most commands), or plain SMTP only without them.
    static func smtp(cert: String?, key: String?) async throws -> HTTPBin {
        let python = try executable([httpbinVenv + "/bin/python"], install: "pip install aiosmtpd into \(httpbinVenv)")
        let port = try freePort()
        let tls = cert.flatMap { cert in key.map { ["--tlscert", cert, "--tlskey", $0] } } ?? []
        let process = try ChildProcess(python, ["-m", "aiosmtpd", "-n", "-l", "127.0.0.1:\(port)"] + tls)
        try await waitForListener(port, "aiosmtpd", process: process)
        return HTTPBin(process: process, url: "smtp://127.0.0.1:\(port)", port: port)
    }

    // MARK: - Certificates

    /// A private CA, and leaf certificates for 127.0.0.1/localhost signed by it.
    struct Certificates {
        let directory: String
        var ca: String { directory + "/ca.pem" }
        func cert(_ name: String) -> String { directory + "/\(name).pem" }
        func key(_ name: String) -> String { directory + "/\(name).key" }
    }

    static func certificates(in directory: String, leaves: [(name: String, days: Int)]) throws -> Certificates {
        let openssl = try executable(["/usr/bin/openssl"], install: "apt-get install openssl")
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        try run(openssl, ["req", "-x509"] + ec + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "365", "-subj", "/CN=sonde-test-ca"], in: directory)
        for leaf in leaves {
            try sign(leaf.name, subject: "/CN=localhost", extensions: "subjectAltName=IP:127.0.0.1,DNS:localhost", days: leaf.days, issuer: "ca", in: directory)
        }
        return Certificates(directory: directory)
    }

    /// `NAME.key` and `NAME.pem` in `directory`: a new EC key and its certificate, signed by
    /// `ISSUER.pem`/`ISSUER.key`, with the given X.509v3 extensions (one per line). Negative
    /// `days`: a certificate that expired that many days ago (signed 30 days before it expired,
    /// with openssl's clock set back by libfaketime).
    static func sign(_ name: String, subject: String, extensions: String, days: Int, issuer: String, in directory: String) throws {
        let openssl = try executable(["/usr/bin/openssl"], install: "apt-get install openssl")
        var environment: [String: String] = [:]
        if days < 0 {
            let candidates = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu"].map { $0 + "/faketime/libfaketime.so.1" }
            guard let library = candidates.first(where: { FileManager.default.fileExists(atPath: $0) }) else {
                throw TestFailure("libfaketime is missing: apt-get install libfaketime (scripts/install-deps.sh does it)")
            }
            environment["LD_PRELOAD"] = library
            environment["FAKETIME"] = "-\(30 - days)d"
        }
        try (extensions + "\n").write(toFile: directory + "/\(name).ext", atomically: true, encoding: .utf8)
        try run(openssl, ["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "\(name).key", "-out", "\(name).csr", "-subj", subject], in: directory)
        try run(openssl, [
            "x509", "-req", "-in", "\(name).csr", "-CA", "\(issuer).pem", "-CAkey", "\(issuer).key", "-CAcreateserial",
            "-out", "\(name).pem", "-days", "\(days < 0 ? 30 : days)", "-extfile", "\(name).ext",
        ], in: directory, environment: environment)
    }

    // MARK: - nginx

    struct Nginx {
        let process: ChildProcess
        /// Plain HTTP with WebDAV PUT/DELETE under /.
        let davURL: String
        /// name → https port, one server per leaf certificate.
        let tlsPorts: [String: Int]
        /// https that requires a client certificate signed by the test CA.
        let mutualTLSPort: Int
        func stop() async { await process.stop() }
    }

    static func nginx(in directory: String, certificates: Certificates, leaves: [String]) async throws -> Nginx {
        let binary = try executable(["/usr/sbin/nginx"], install: "apt-get install nginx-light (its dav and ssl modules)")
        let davPort = try freePort()
        var tlsPorts: [String: Int] = [:]
        for leaf in leaves { tlsPorts[leaf] = try freePort() }
        let mutualPort = try freePort()
        // nginx's workers run as an unprivileged user when the tests run as root.
        try FileManager.default.createDirectory(atPath: directory + "/dav", withIntermediateDirectories: true)
        chmod(directory, 0o755)
        chmod(directory + "/dav", 0o777)
        var tlsServers = ""
        for (leaf, port) in tlsPorts {
            tlsServers += """
                server {
                    listen 127.0.0.1:\(port) ssl;
                    ssl_certificate \(certificates.cert(leaf)); ssl_certificate_key \(certificates.key(leaf));
                    location / { return 200 "tls ok\\n"; }
                }

            """
        }
        let leafForMutual = leaves[0]
        let config = nginxConfig(in: directory, servers: """
                server {
                    listen 127.0.0.1:\(davPort);
                    root \(directory)/dav;
                    location / {
                        dav_methods PUT DELETE MKCOL;
                        create_full_put_path on;
                        client_max_body_size 64m;
                    }
                }
            \(tlsServers)
                server {
                    listen 127.0.0.1:\(mutualPort) ssl;
                    ssl_certificate \(certificates.cert(leafForMutual)); ssl_certificate_key \(certificates.key(leafForMutual));
                    ssl_client_certificate \(certificates.ca);
                    ssl_verify_client on;
                    location / { return 200 "client $ssl_client_s_dn\\n"; }
                }
            """)
        try config.write(toFile: directory + "/nginx.conf", atomically: true, encoding: .utf8)
        let process = try ChildProcess(binary, ["-p", directory, "-c", directory + "/nginx.conf", "-e", directory + "/error.log"])
        try await waitForListener(davPort, "nginx", process: process)
        for port in tlsPorts.values { try await waitForListener(port, "nginx (tls)", process: process) }
        try await waitForListener(mutualPort, "nginx (mutual tls)", process: process)
        return Nginx(process: process, davURL: "http://127.0.0.1:\(davPort)", tlsPorts: tlsPorts, mutualTLSPort: mutualPort)
    }

    /// A whole nginx config around `servers`: in the foreground, one worker, every path under
    /// `directory`.
    static func nginxConfig(in directory: String, servers: String) -> String {
        """
        daemon off;
        worker_processes 1;
        pid \(directory)/nginx.pid;
        error_log \(directory)/error.log warn;
        events { worker_connections 64; }
        http {
            access_log off;
            client_body_temp_path \(directory)/body;
            proxy_temp_path \(directory)/proxy;
            fastcgi_temp_path \(directory)/fastcgi;
            uwsgi_temp_path \(directory)/uwsgi;
            scgi_temp_path \(directory)/scgi;
        \(servers)
        }
        """
    }

    // MARK: - dnsmasq

    struct Dnsmasq {
        let process: ChildProcess
        let port: Int
        func stop() async { await process.stop() }
    }

    /// dnsmasq answering only from its command line: api.internal A 10.0.0.1, a TXT record,
    /// an MX record and a TXT answer too big for one UDP datagram (forces the TCP retry).
    static func dnsmasq(bigText: [String]) throws -> Dnsmasq {
        let binary = try executable(["/usr/sbin/dnsmasq"], install: "apt-get install dnsmasq-base")
        let port = try freePort()
        let big = bigText.joined(separator: ",")
        let process = try ChildProcess(binary, [
            "--no-daemon", "--conf-file=/dev/null", "--port=\(port)", "--listen-address=127.0.0.1", "--bind-interfaces",
            "--no-resolv", "--no-hosts", "--log-facility=-",
            "--address=/api.internal/10.0.0.1",
            "--txt-record=info.internal,v=sonde1 hello",
            "--mx-host=mail.internal,mx1.internal,10",
            "--txt-record=big.internal,\(big)",
            // Names under gone.internal do not exist (NXDOMAIN); others it refuses (no upstream).
            "--local=/gone.internal/",
        ])
        return Dnsmasq(process: process, port: port)
    }
}
