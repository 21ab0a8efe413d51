import CurlHTTP
import FoundationEssentials
import SondeCore
import SondeYAML

/// Turns a composed YAML tree into the probe model, field by field (see probes/README.md).
enum ScriptParser {
    static let probeFields = ["name", "component", "description", "interval", "retry_interval", "timeout", "degraded_after", "control", "failure_codes", "labels", "public_cookies", "steps"]
    static let stepFields = ["name", "component", "request", "tcp", "dns", "icmp", "poll", "assert", "extract", "compare", "always", "timeout", "degraded_after"]
    static let requestFields = [
        "method", "url", "headers", "json", "body", "form", "multipart", "basic_auth", "follow_redirects", "redirect_headers", "max_body", "tls",
        "ip_version", "connect_to",
    ]
    static let partFields = ["name", "value", "content", "random_bytes", "filename", "content_type", "save_as"]
    static let assertFields = [
        "status", "headers", "body_contains", "body_not_contains", "body_matches", "body_not_matches", "json", "latency_below", "cert_valid_for",
    ]
    static let conditionFields = ["path", "equals", "not_equals", "exists", "matches", "in"] + Condition.Comparison.allCases.map(\.key)
    static let extractFields = ["json", "header", "cookie", "regex", "group", "body", "secret"]
    static let pollFields = ["every", "until", "fail_when", "max_wait", "state", "stuck_after", "tolerate_errors"]
    static let compareFields = ["download", "with"]
    static let failureCodeFields = ["code", "status", "body_contains", "body_matches"]
    static let tlsFields = ["ca_file", "cert", "key", "insecure"]
    static let tcpFields = ["host", "port", "send", "expect", "query_response", "tls", "ip_version"]
    static let queryResponseFields = ["expect", "expect_matches", "send", "starttls"]
    static let dnsFields = ["name", "type", "server", "expect", "rcode"]
    static let icmpFields = ["host", "ip_version", "payload_size", "dont_fragment"]
    static let dnsRcodes = ["NOERROR", "NXDOMAIN", "SERVFAIL", "REFUSED"]
    static let methods: Set<String> = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]

    // Fields that take a mapping, with the names it accepts (nil: any name), for the
    // "did you mean 'poll' with 'every' inside it" hint. A field absent takes no mapping.
    static let probeNested: [String: [String]?] = ["labels": nil]
    static let stepNested: [String: [String]?] = [
        "request": requestFields, "tcp": tcpFields, "dns": dnsFields, "icmp": icmpFields, "poll": pollFields, "assert": assertFields,
        "extract": nil, "compare": compareFields,
    ]
    static let requestNested: [String: [String]?] = [
        "headers": nil, "json": nil, "form": nil, "body": ["random_bytes", "save_as"], "basic_auth": ["user", "password"], "tls": tlsFields,
    ]
    static let assertNested: [String: [String]?] = ["headers": nil, "json": conditionFields]

    // MARK: - Probe

    static func probe(_ root: Node, reader: inout NodeReader) -> ProbeDefinition? {
        guard let fields = reader.fields(root, "", known: probeFields, required: ["name", "component", "interval", "timeout", "steps"], nested: probeNested) else { return nil }
        var name: String?, nameLine: Int?, component: String?
        var interval: Duration?, retryInterval: (node: Node, value: Duration)?, timeout: (spec: DurationSpec, value: Duration)?
        var degraded: DurationSpec?
        var control = false
        var script = ProbeScript(baseDirectory: reader.baseDirectory)
        var stepsNode: (Node, Node)?
        for (key, keyNode, value) in fields {
            switch key {
            case "name":
                name = checked(reader.string(value, key), value, key, ResultText.probeNameProblem, reader: &reader)
                nameLine = keyNode.mark?.line
            case "component": component = checked(reader.string(value, key), value, key, ResultText.componentProblem, reader: &reader)
            case "description": _ = reader.string(value, key, allowEmpty: true)
            case "interval":
                interval = reader.fixedDuration(value, key)?.value
                if let interval, interval <= .zero { reader.report(value, key, "interval must be longer than 0s") }
            case "retry_interval":
                if let value2 = reader.fixedDuration(value, key)?.value { retryInterval = (value, value2) }
            case "timeout":
                timeout = reader.fixedDuration(value, key)
                if let value2 = timeout?.value, value2 <= .zero { reader.report(value, key, "timeout must be longer than 0s") }
            case "degraded_after": degraded = reader.duration(value, key)
            case "control": control = reader.bool(value, key) ?? false
            case "failure_codes": script.failureCodes = failureCodes(value, key, reader: &reader)
            case "labels": script.labels = labels(value, key, reader: &reader)
            case "public_cookies":
                for item in reader.listOrOne(value) {
                    if let name = reader.string(item, key) { script.publicCookies.insert(name) }
                }
            case "steps": stepsNode = (keyNode, value)
            default: break
            }
        }
        if let (keyNode, value) = stepsNode {
            script.steps = steps(value, keyNode: keyNode, reader: &reader)
            if let limit = timeout?.value { warnMaxWaitBeyondTimeout(value, timeout: limit, reader: &reader) }
        }
        script.degradedAfter = degraded
        if let timeout { script.timeout = timeout.spec }
        script.secretEnvironment = reader.environmentReferences
        script.requiredEnvironment = reader.requiredEnvironment
        script.secretFiles = reader.fileReferences
        if let retryInterval, let interval, retryInterval.value < .milliseconds(100) || retryInterval.value > interval {
            reader.report(
                retryInterval.node, "retry_interval",
                "retry_interval must be between 100ms and the interval (\(DurationText.format(interval))); set it to the interval to turn retries off")
        }
        guard let name, let component, let interval, let timeout else { return nil }
        var definition = ProbeDefinition(
            name: name, component: component, interval: interval, retryInterval: retryInterval?.value, timeout: timeout.value,
            degradedAfter: degraded.flatMap(Self.knownDuration), control: control, sourceFile: reader.file)
        definition.script = script
        definition.nameLine = nameLine
        return definition
    }

    /// `value` when it keeps `rule` (`ResultText`: what the collector accepts at ingest), else
    /// nil with the problem reported: a script `validate` passes is never refused at ingest.
    static func checked(_ value: String?, _ node: Node, _ field: String, _ rule: (String) -> String?, reader: inout NodeReader) -> String? {
        guard let value else { return nil }
        if let problem = rule(value) {
            reader.report(node, field, problem)
            return nil
        }
        return value
    }

    /// The value a duration has when nothing overrides it (its literal or its default).
    static func knownDuration(_ spec: DurationSpec) -> Duration? {
        switch spec {
        case .fixed(let value): value
        case .template(let template): template.defaultValue.flatMap(DurationText.parse)
        }
    }

    static func failureCodes(_ node: Node, _ field: String, reader: inout NodeReader) -> [FailureCodeRule] {
        guard let items = reader.list(node, field) else { return [] }
        var rules: [FailureCodeRule] = []
        for (index, item) in items.enumerated() {
            let path = "\(field)[\(index)]"
            guard let fields = reader.fields(item, path, known: failureCodeFields, required: ["code"]) else { continue }
            var rule = FailureCodeRule(code: "", statuses: [])
            var valid = true
            for (key, _, value) in fields {
                let here = NodeReader.join(path, key)
                switch key {
                case "code":
                    if let code = checked(reader.string(value, here), value, here, ResultText.codeProblem, reader: &reader) { rule.code = code } else { valid = false }
                case "status":
                    for entry in reader.listOrOne(value) {
                        if let status = reader.int(entry, here, range: 100...599) { rule.statuses.append(status) } else { valid = false }
                    }
                case "body_contains": rule.bodyContains = reader.string(value, here)
                case "body_matches": rule.bodyMatches = reader.regex(value, here)
                default: break
                }
            }
            if fields.count == 1, fields.first?.key == "code" {
                reader.report(item, path, "a failure code needs something to match: status, body_contains or body_matches")
                valid = false
            }
            if valid { rules.append(rule) }
        }
        return rules
    }

    /// A poll whose `max_wait` is longer than the probe's `timeout` is cut by the timeout first:
    /// its max_wait never applies. Worth a warning, not an error (the cut is reported).
    static func warnMaxWaitBeyondTimeout(_ steps: Node, timeout: Duration, reader: inout NodeReader) {
        for (index, step) in (steps.sequence.map { Array($0) } ?? []).enumerated() {
            guard let poll = step.mapping?.first(where: { $0.key.scalar?.string == "poll" })?.value,
                let node = poll.mapping?.first(where: { $0.key.scalar?.string == "max_wait" })?.value,
                let text = node.scalar?.string, let maxWait = DurationText.parse(text), maxWait > timeout
            else { continue }
            reader.warn(node, "steps[\(index)].poll.max_wait",
                "max_wait \(DurationText.format(maxWait)) is longer than the probe's timeout \(DurationText.format(timeout)): the timeout cuts the poll first; raise timeout or lower max_wait")
        }
    }

    // MARK: - Steps

    static func steps(_ node: Node, keyNode: Node, reader: inout NodeReader) -> [ProbeStep] {
        guard let items = reader.list(node, "steps") else { return [] }
        if items.isEmpty {
            reader.report(keyNode, "steps", "no steps: a probe needs at least one step")
            return []
        }
        if items.count > ResultText.mostSteps {
            reader.report(keyNode, "steps", "\(items.count) steps: at most \(ResultText.mostSteps) (the collector refuses a result with more)")
        }
        var steps: [ProbeStep] = []
        var stepNames: [String: Int] = [:]
        var payloads: Set<String> = []
        for (index, item) in items.enumerated() {
            let path = "steps[\(index)]"
            guard let step = step(item, path, payloads: &payloads, stepNames: stepNames, reader: &reader) else {
                // A step with a problem (already reported) still has its name: a later
                // `compare: {download: it}` is not a second, false error.
                if let name = item.mapping?.first(where: { $0.key.string == "name" })?.value.string, stepNames[name] == nil {
                    stepNames[name] = item.mark?.line ?? 0
                }
                continue
            }
            if let line = stepNames[step.name] {
                reader.report(item, NodeReader.join(path, "name"), "duplicate step name '\(step.name)' (first at line \(line))")
            }
            stepNames[step.name] = item.mark?.line ?? 0
            steps.append(step)
        }
        return steps
    }

    static func step(_ node: Node, _ path: String, payloads: inout Set<String>, stepNames: [String: Int], reader: inout NodeReader) -> ProbeStep? {
        guard let fields = reader.fields(node, path, known: stepFields, required: ["name"], nested: stepNested) else { return nil }
        let byKey = Dictionary(fields.map { ($0.key, $0.value) }, uniquingKeysWith: { first, _ in first })
        var name: String?
        var valid = true
        var step = ProbeStep(name: "", action: .compare(CompareSpec(download: "", with: "")))
        var extractedNames: [String] = []

        let hasRequest = byKey["request"] != nil
        let actions = ["request", "compare", "tcp", "dns", "icmp"].filter { byKey[$0] != nil }
        if actions.count != 1 {
            reader.report(node, path, actions.isEmpty
                ? "a step needs an action: 'request' (optionally with 'poll'), 'compare', 'tcp', 'dns' or 'icmp'"
                : "a step has one action: choose one of \(actions.joined(separator: ", "))")
            valid = false
        }
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "name": name = checked(reader.string(value, here), value, here, { ResultText.textProblem($0, newlines: false, longest: ResultText.longestStepName) }, reader: &reader)
            case "component":
                step.component = checked(reader.string(value, here), value, here, ResultText.componentProblem, reader: &reader)
                if step.component == nil { valid = false }
            case "request":
                if let spec = request(value, here, payloads: &payloads, reader: &reader) { step.action = .request(spec) } else { valid = false }
            case "compare":
                if let spec = compare(value, here, payloads: payloads, stepNames: stepNames, reader: &reader) { step.action = .compare(spec) } else { valid = false }
            case "tcp":
                if let spec = tcp(value, here, reader: &reader) { step.action = .tcp(spec) } else { valid = false }
            case "dns":
                if let spec = dns(value, here, reader: &reader) { step.action = .dns(spec) } else { valid = false }
            case "icmp":
                if let spec = icmp(value, here, reader: &reader) { step.action = .icmp(spec) } else { valid = false }
            case "poll":
                if !hasRequest { reader.report(value, here, "'poll' repeats the step's request: add a 'request'"); valid = false }
                step.poll = poll(value, here, reader: &reader)
                if step.poll == nil { valid = false }
            case "assert":
                step.assertions = assertions(value, here, reader: &reader)
                if byKey["compare"] != nil { reader.report(value, here, "'assert' checks the step's response: add a 'request'"); valid = false }
                if byKey["tcp"] != nil || byKey["dns"] != nil,
                    let other = step.assertions.first(where: { if case .latencyBelow = $0 { false } else if case .certValidFor = $0 { false } else { true } })
                {
                    reader.report(value, here, "a tcp or dns step checks only latency_below and cert_valid_for (use 'expect' for its answer), not \(other.fieldName)")
                    valid = false
                }
                // A DNS answer comes without a certificate: the check could only ever fail.
                if byKey["dns"] != nil, step.assertions.contains(where: { if case .certValidFor = $0 { true } else { false } }) {
                    reader.report(value, here, "a dns step has no TLS certificate to check: cert_valid_for belongs on an https request or a tcp step with tls")
                    valid = false
                }
                if byKey["icmp"] != nil, let other = step.assertions.first(where: { if case .latencyBelow = $0 { false } else { true } }) {
                    reader.report(value, here, "an icmp step checks only latency_below (its round trip), not \(other.fieldName)")
                    valid = false
                }
            case "extract":
                if !hasRequest { reader.report(value, here, "'extract' reads the step's response: add a 'request'"); valid = false }
                step.extractions = extractions(value, here, reader: &reader)
                extractedNames = step.extractions.map(\.name)
            case "always": step.always = reader.bool(value, here) ?? false
            case "timeout": step.timeout = reader.duration(value, here)
            case "degraded_after": step.degradedAfter = reader.duration(value, here)
            default: break
            }
        }
        if let assertNode = byKey["assert"] { warnChecksThatCannotHold(step, assertNode, NodeReader.join(path, "assert"), reader: &reader) }
        // Later steps may use what this one extracts.
        reader.scope.formUnion(extractedNames)
        guard valid, let name else { return nil }
        step.name = name
        return step
    }

    /// Checks that can only fail, written by mistake: warned about before the first run opens an
    /// incident on a healthy service.
    static func warnChecksThatCannotHold(_ step: ProbeStep, _ node: Node, _ path: String, reader: inout NodeReader) {
        let checksCertificate = step.assertions.contains { if case .certValidFor = $0 { true } else { false } }
        let bodyCheck = step.assertions.first { if case .bodyContains = $0 { true } else if case .bodyMatches = $0 { true } else { false } }
        switch step.action {
        case .request(let spec):
            if checksCertificate, !spec.followRedirects, let url = spec.url.literal ?? spec.url.defaultValue, url.lowercased().hasPrefix("http://") {
                reader.warn(node, NodeReader.join(path, "cert_valid_for"), "an http:// URL has no certificate, so cert_valid_for always fails")
            }
            if spec.method == "HEAD", let bodyCheck, step.poll == nil {
                reader.warn(node, NodeReader.join(path, bodyCheck.fieldName), "a HEAD response has no body, so \(bodyCheck.fieldName) reads an empty one")
            }
        case .tcp(let spec):
            if checksCertificate, spec.tls == nil {
                reader.warn(node, NodeReader.join(path, "cert_valid_for"), "a tcp step without tls has no certificate, so cert_valid_for always fails; add tls: true, or a query_response entry with starttls: true")
            }
        default:
            break
        }
    }

    // MARK: - Request

    static func request(_ node: Node, _ path: String, payloads: inout Set<String>, reader: inout NodeReader) -> RequestSpec? {
        guard let fields = reader.fields(node, path, known: requestFields, required: ["url"], nested: requestNested) else { return nil }
        var spec = RequestSpec(method: "GET", url: .literal(""), headers: [], body: nil, followRedirects: false)
        var valid = true
        var bodies: [String] = []
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "method":
                if let method = reader.string(value, here) {
                    let upper = method.uppercased()
                    if methods.contains(upper) { spec.method = upper } else {
                        reader.report(value, here, "unknown HTTP method '\(method)'; expected one of \(methods.sorted().joined(separator: ", "))")
                        valid = false
                    }
                }
            case "url":
                if let url = reader.template(value, here, allowEmpty: false) {
                    spec.url = url
                    if let literal = url.literal ?? url.defaultValue, !literal.hasPrefix("http://"), !literal.hasPrefix("https://") {
                        reader.report(value, here, "URL '\(literal)' must start with http:// or https://")
                        valid = false
                    }
                    if URLCredentials.hasLiteralPassword(url.source) {
                        reader.warn(value, here, "the URL holds a password: results redact it, but it sits in the script; use basic_auth with ${env:…} or ${file:…}")
                    }
                } else { valid = false }
            case "headers":
                guard let mapping = value.mapping else {
                    reader.report(value, here, "expected a mapping of header name → value, found \(NodeReader.describe(value))")
                    valid = false
                    continue
                }
                for (nameNode, headerValue) in mapping {
                    guard let headerName = nameNode.scalar?.string, !headerName.isEmpty,
                          headerName.allSatisfy({ $0.isASCII && !$0.isWhitespace && $0 != ":" })
                    else {
                        reader.report(nameNode, here, "header names are plain ASCII text without spaces or ':'")
                        valid = false
                        continue
                    }
                    if let template = reader.template(headerValue, NodeReader.join(here, headerName)) {
                        spec.headers.append(HeaderTemplate(name: headerName, value: template))
                    } else { valid = false }
                }
            case "json":
                bodies.append(key)
                if let json = reader.jsonTemplate(value, here) { spec.body = .json(json) } else { valid = false }
            case "body":
                bodies.append(key)
                if value.mapping != nil {
                    if let body = randomBody(value, here, payloads: &payloads, reader: &reader) { spec.body = body } else { valid = false }
                } else if let raw = reader.template(value, here) { spec.body = .raw(raw) } else { valid = false }
            case "form":
                bodies.append(key)
                if let fields = form(value, here, reader: &reader) { spec.body = .form(fields) } else { valid = false }
            case "basic_auth":
                if let fields = reader.fields(value, here, known: ["user", "password"], required: ["user", "password"]),
                    let user = fields.first(where: { $0.key == "user" }).flatMap({ reader.template($0.value, NodeReader.join(here, "user"), allowEmpty: false) }),
                    let password = fields.first(where: { $0.key == "password" }).flatMap({ reader.template($0.value, NodeReader.join(here, "password")) })
                {
                    if user.literal?.contains(":") == true { reader.report(value, here, "a Basic user name cannot contain ':' (RFC 7617)"); valid = false }
                    spec.basicAuth = (user, password)
                } else { valid = false }
            case "tls":
                if let options = tlsOptions(value, here, reader: &reader) { spec.tls = options } else { valid = false }
            case "ip_version":
                if let version = ipVersion(value, here, reader: &reader) { spec.ipVersion = version } else { valid = false }
            case "connect_to":
                if let address = reader.template(value, here, allowEmpty: false) {
                    if let literal = address.literal, ConnectTarget(literal) == nil {
                        reader.report(value, here, "'\(literal)' is not an address: write a host or IP, optionally with :port ([::1]:8443 for IPv6)")
                        valid = false
                    }
                    spec.connectTo = address
                } else { valid = false }
            case "multipart":
                bodies.append(key)
                if let parts = multipart(value, here, payloads: &payloads, reader: &reader) { spec.body = .multipart(parts) } else { valid = false }
            case "follow_redirects": spec.followRedirects = reader.bool(value, here) ?? false
            case "redirect_headers":
                switch reader.string(value, here) {
                case "same_origin": spec.redirectHeadersEverywhere = false
                case "all": spec.redirectHeadersEverywhere = true
                case let other?:
                    reader.report(value, here, "'\(other)' is not a redirect header rule; expected same_origin (the default: a redirect to another host gets no custom headers) or all")
                    valid = false
                case nil: valid = false
                }
            case "max_body":
                if let bytes = byteSize(value, here, reader: &reader) { spec.maxBody = bytes } else { valid = false }
            default: break
            }
        }
        if bodies.count > 1 {
            reader.report(node, path, "a request has one body: choose one of \(bodies.joined(separator: ", "))")
            valid = false
        }
        if spec.basicAuth != nil, spec.headers.contains(where: { $0.name.lowercased() == "authorization" }) {
            reader.report(node, path, "basic_auth sets the Authorization header: remove the one in 'headers'")
            valid = false
        }
        if spec.tls != nil, let literal = spec.url.literal ?? spec.url.defaultValue, literal.hasPrefix("http://") {
            reader.warn(node, NodeReader.join(path, "tls"), "tls options have no effect on an http:// URL")
        }
        return valid ? spec : nil
    }

    /// A size such as `10MiB`, `512KiB`, `1GiB` or a number of bytes (the config's size
    /// syntax), from 1 byte to 1 GiB.
    static func byteSize(_ node: Node, _ path: String, reader: inout NodeReader) -> Int? {
        guard let text = node.scalar?.string, let bytes = parseByteSize(text), bytes > 0, bytes <= 1 << 30 else {
            reader.report(node, path, "expected a size from 1 byte to 1GiB, such as 512KiB or 10MiB")
            return nil
        }
        return bytes
    }

    /// `body: {random_bytes: N, save_as: name}`.
    static func randomBody(_ node: Node, _ path: String, payloads: inout Set<String>, reader: inout NodeReader) -> RequestBody? {
        guard let fields = reader.fields(node, path, known: ["random_bytes", "save_as"], required: ["random_bytes"]) else { return nil }
        var count: Int?, saveAs: String?
        var valid = true
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            if key == "random_bytes" {
                count = reader.int(value, here, range: 1...(32 << 20))
            } else if let name = savedPayload(value, here, payloads: &payloads, reader: &reader) {
                saveAs = name
            } else { valid = false }
        }
        guard valid, let count else { return nil }
        return .randomBytes(count, saveAs: saveAs)
    }

    /// A `save_as` name: unique, a valid variable name; `${name.sha256}`, `${name.size}` and
    /// `${name.base64}` become usable in later templates.
    static func savedPayload(_ node: Node, _ path: String, payloads: inout Set<String>, reader: inout NodeReader) -> String? {
        guard let name = reader.string(node, path) else { return nil }
        guard Template.isName(name, allowDots: false) else {
            reader.report(node, path, "'\(name)' is not a valid payload name (letters, digits and _)")
            return nil
        }
        if payloads.contains(name) {
            reader.report(node, path, "payload name '\(name)' is already used")
            return nil
        }
        payloads.insert(name)
        reader.scope.formUnion(PayloadFacts.names(of: name))
        return name
    }

    /// `form: {field: value}`: every value a template, URL-encoded at run time.
    static func form(_ node: Node, _ path: String, reader: inout NodeReader) -> [(name: String, value: Template)]? {
        guard let mapping = node.mapping, !mapping.isEmpty else {
            reader.report(node, path, "expected a mapping of form field → value, found \(NodeReader.describe(node))")
            return nil
        }
        var fields: [(name: String, value: Template)] = []
        var valid = true
        for (nameNode, value) in mapping {
            guard let name = nameNode.scalar?.string, !name.isEmpty else {
                reader.report(nameNode, path, "form field names are non-empty text")
                valid = false
                continue
            }
            if let template = reader.template(value, NodeReader.join(path, name)) { fields.append((name, template)) } else { valid = false }
        }
        return valid ? fields : nil
    }

    /// `tls: {ca_file, cert, key, insecure}` (paths relative to the probe file, checked now).
    static func tlsOptions(_ node: Node, _ path: String, reader: inout NodeReader) -> TLSOptions? {
        guard let fields = reader.fields(node, path, known: tlsFields) else { return nil }
        var options = TLSOptions()
        var valid = true
        var readable = true
        var nodes: [String: Node] = [:]
        for (key, _, value) in fields {
            nodes[key] = value
            let here = NodeReader.join(path, key)
            if key == "insecure" {
                guard let flag = reader.bool(value, here) else { valid = false; continue }
                options.insecure = flag
                if flag { reader.warn(value, here, "insecure: true accepts any certificate for any host name: a man in the middle goes unnoticed; use ca_file for a private CA") }
                continue
            }
            guard let file = reader.string(value, here) else { valid = false; continue }
            let full = NodeReader.resolve(file, base: reader.baseDirectory)
            if let problem = RegularFile.problem(atPath: full, limit: TLSFiles.maxBytes) {
                reader.report(value, here, "'\(file)' \(problem) (relative paths start at the probe file's folder)")
                valid = false
                readable = false
            }
            switch key {
            case "ca_file": options.caFile = full
            case "cert": options.certificate = full
            default: options.key = full
            }
        }
        if (options.certificate == nil) != (options.key == nil) {
            reader.report(node, path, "a client certificate needs both 'cert' and 'key'")
            valid = false
        } else if readable, let problem = TLSFiles.check(caFile: options.caFile, certificate: options.certificate, key: options.key) {
            switch problem {
            case .caFile(let why): reader.report(nodes["ca_file"], NodeReader.join(path, "ca_file"), why)
            case .certificate(let why): reader.report(nodes["cert"], NodeReader.join(path, "cert"), why)
            case .key(let why): reader.report(nodes["key"], NodeReader.join(path, "key"), why)
            case .keyMismatch(let why): reader.report(nodes["key"], NodeReader.join(path, "key"), why)
            }
            valid = false
        }
        return valid ? options : nil
    }

    /// A `tcp` or `icmp` step's `host`: a template, refused when written as something other than
    /// a host name or IP address (a port, a scheme, a path, a user).
    static func hostTemplate(_ node: Node, _ path: String, reader: inout NodeReader) -> Template? {
        guard let host = reader.template(node, path, allowEmpty: false) else { return nil }
        if let literal = host.literal, !StepExecution.isHostName(StepExecution.bareHost(literal)) {
            reader.report(node, path, "'\(literal)' is not a host name or IP address: write the port under port:, and no scheme, path or user")
            return nil
        }
        return host
    }

    static func ipVersion(_ node: Node, _ path: String, reader: inout NodeReader) -> IPVersion? {
        guard let number = reader.int(node, path, range: 4...6), let version = IPVersion(rawValue: number) else {
            if node.scalar.flatMap({ Int($0.string) }) == 5 { reader.report(node, path, "ip_version is 4 or 6") }
            return nil
        }
        return version
    }

    // MARK: - TCP and DNS

    static func tcp(_ node: Node, _ path: String, reader: inout NodeReader) -> TCPSpec? {
        guard let fields = reader.fields(node, path, known: tcpFields, required: ["host", "port"], nested: ["tls": tlsFields]) else { return nil }
        var spec = TCPSpec(host: .literal(""), port: 0)
        var valid = fields.contains { $0.key == "host" } && fields.contains { $0.key == "port" }
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "host": if let host = hostTemplate(value, here, reader: &reader) { spec.host = host } else { valid = false }
            case "port": if let port = reader.int(value, here, range: 1...65535) { spec.port = port } else { valid = false }
            case "send": if let text = reader.template(value, here) { spec.send = text } else { valid = false }
            case "expect": if let text = reader.template(value, here, allowEmpty: false) { spec.expect = text } else { valid = false }
            case "ip_version": if let version = ipVersion(value, here, reader: &reader) { spec.ipVersion = version } else { valid = false }
            case "query_response": if let entries = queryResponse(value, here, reader: &reader) { spec.queryResponse = entries } else { valid = false }
            default:
                if value.mapping != nil {
                    if let options = tlsOptions(value, here, reader: &reader) { spec.tls = options } else { valid = false }
                } else if let flag = reader.bool(value, here) {
                    spec.tls = flag ? TLSOptions() : nil
                } else { valid = false }
            }
        }
        if !spec.queryResponse.isEmpty, spec.send != nil || spec.expect != nil {
            reader.report(node, path, "use either send/expect or query_response, not both: put the send and expect into query_response entries")
            valid = false
        }
        if spec.startsTLS, spec.tls == nil, valid {
            spec.tls = TLSOptions()
        }
        return valid ? spec : nil
    }

    /// `query_response: [{expect: "220 "}, {send: "EHLO probe\r\n"}, {expect_matches: "^250-STARTTLS"}, …]`.
    static func queryResponse(_ node: Node, _ path: String, reader: inout NodeReader) -> [TCPQueryResponse]? {
        guard let items = node.sequence, !items.isEmpty else {
            reader.report(node, path, "expected a list of entries with expect, expect_matches, send or starttls, found \(NodeReader.describe(node))")
            return nil
        }
        var entries: [TCPQueryResponse] = []
        var valid = true
        var upgrades = 0
        for (index, item) in items.enumerated() {
            let here = "\(path)[\(index)]"
            guard let fields = reader.fields(item, here, known: queryResponseFields) else { valid = false; continue }
            var entry = TCPQueryResponse()
            var literalGroups: Int?
            for (key, _, value) in fields {
                let field = NodeReader.join(here, key)
                switch key {
                case "expect":
                    if let text = reader.template(value, field, allowEmpty: false) { entry.expect = .text(text) } else { valid = false }
                case "expect_matches":
                    // Checked as a regex now when it has no ${…}; otherwise once rendered, per run.
                    guard let text = reader.string(value, field) else { valid = false; continue }
                    if !text.contains("${") {
                        if reader.regex(value, field) != nil {
                            entry.expect = .line(.literal(text))
                            literalGroups = (try? ProbeRegex(text))?.captureCount
                        } else { valid = false }
                    } else if let t = reader.template(value, field) {
                        entry.expect = .line(t)
                    } else { valid = false }
                case "send":
                    if let text = reader.template(value, field, allowEmpty: false, captures: true) { entry.send = text } else { valid = false }
                default:
                    if let flag = reader.bool(value, field) { entry.startTLS = flag } else { valid = false }
                }
            }
            if fields.contains(where: { $0.key == "expect" }), fields.contains(where: { $0.key == "expect_matches" }) {
                reader.report(item, here, "an entry waits for one answer: expect or expect_matches, not both")
                valid = false
            }
            if entry.expect == nil, entry.send == nil, !entry.startTLS, fields.allSatisfy({ $0.key == "starttls" }) {
                reader.report(item, here, "an entry needs expect, expect_matches, send or starttls: true")
                valid = false
            }
            if let send = entry.send, let group = send.highestCapture {
                if case .line = entry.expect {
                    if let literalGroups, group > literalGroups {
                        reader.report(item, NodeReader.join(here, "send"), "'${\(group)}': the entry's expect_matches has \(literalGroups) group\(literalGroups == 1 ? "" : "s")")
                        valid = false
                    }
                } else {
                    reader.report(item, NodeReader.join(here, "send"), "'${\(group)}' refers to a group of this entry's expect_matches, and the entry has none")
                    valid = false
                }
            }
            if entry.startTLS { upgrades += 1 }
            entries.append(entry)
        }
        if upgrades > 1 {
            reader.report(node, path, "starttls: true may appear once: the connection switches to TLS one time")
            valid = false
        }
        return valid ? entries : nil
    }

    static func icmp(_ node: Node, _ path: String, reader: inout NodeReader) -> ICMPSpec? {
        guard let fields = reader.fields(node, path, known: icmpFields, required: ["host"]) else { return nil }
        var spec = ICMPSpec(host: .literal(""))
        var valid = fields.contains { $0.key == "host" }
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "host": if let host = hostTemplate(value, here, reader: &reader) { spec.host = host } else { valid = false }
            case "ip_version": if let version = ipVersion(value, here, reader: &reader) { spec.ipVersion = version } else { valid = false }
            // An echo request must fit one IPv6 datagram with its headers (65,535 − 40 − 8).
            case "payload_size": if let size = reader.int(value, here, range: 0...65_487) { spec.payloadSize = size } else { valid = false }
            default: if let flag = reader.bool(value, here) { spec.dontFragment = flag } else { valid = false }
            }
        }
        return valid ? spec : nil
    }

    static func dns(_ node: Node, _ path: String, reader: inout NodeReader) -> DNSSpec? {
        guard let fields = reader.fields(node, path, known: dnsFields, required: ["name"]) else { return nil }
        var spec = DNSSpec(name: .literal(""), type: .A, server: nil, expect: [])
        var valid = fields.contains { $0.key == "name" }
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "name": if let name = reader.template(value, here, allowEmpty: false) { spec.name = name } else { valid = false }
            case "type":
                guard let text = reader.string(value, here) else { valid = false; continue }
                if let type = DNSRecordType(rawValue: text.uppercased()) { spec.type = type } else {
                    reader.report(value, here, "unknown record type '\(text)'; expected one of \(DNSRecordType.allCases.map(\.rawValue).joined(separator: ", "))")
                    valid = false
                }
            case "server":
                guard let text = reader.string(value, here) else { valid = false; continue }
                if let server = DNSServerAddress.parse(text) { spec.server = server } else {
                    reader.report(value, here, "'\(text)' is not an IP address with an optional port (127.0.0.1:5353, [::1]:53, 10.0.0.2)")
                    valid = false
                }
            case "rcode":
                guard let text = reader.string(value, here) else { valid = false; continue }
                guard dnsRcodes.contains(text.uppercased()) else {
                    reader.report(value, here, "unknown answer code '\(text)'; expected one of \(dnsRcodes.joined(separator: ", "))")
                    valid = false
                    continue
                }
                spec.rcode = text.uppercased()
            default:
                for entry in reader.listOrOne(value) {
                    if let text = reader.template(entry, here, allowEmpty: false) { spec.expect.append(text) } else { valid = false }
                }
            }
        }
        if let rcode = spec.rcode, rcode != "NOERROR", !spec.expect.isEmpty {
            reader.report(node, path, "rcode \(rcode) has no answers, so 'expect' can never hold: remove one of them")
            valid = false
        }
        return valid ? spec : nil
    }

    /// `labels: {team: storage, tier: "1"}`: Prometheus-safe names, short text values.
    static func labels(_ node: Node, _ path: String, reader: inout NodeReader) -> [String: String] {
        guard let mapping = node.mapping else {
            reader.report(node, path, "expected a mapping of label name → value, found \(NodeReader.describe(node))")
            return [:]
        }
        var labels: [String: String] = [:]
        for (nameNode, value) in mapping {
            guard let name = nameNode.scalar?.string, ResultText.labelNameProblem(name) == nil else {
                reader.report(nameNode, path, ResultText.labelNameProblem(nameNode.scalar?.string ?? "?") ?? "not a label name")
                continue
            }
            let here = NodeReader.join(path, name)
            guard value.scalar != nil, value.tagName != .null, let text = value.scalar?.string else {
                reader.report(value, here, "a label value is text, found \(NodeReader.describe(value))")
                continue
            }
            if let problem = ResultText.labelValueProblem(text) { reader.report(value, here, problem) }
            if labels[name] != nil { reader.report(nameNode, here, "duplicate label '\(name)'") }
            labels[name] = text
        }
        if labels.count > ProbeLabels.maxCount { reader.report(node, path, "at most \(ProbeLabels.maxCount) labels") }
        if let problem = ResultText.labelSetProblem(labels) { reader.report(node, path, problem) }
        return labels
    }

    static func multipart(_ node: Node, _ path: String, payloads: inout Set<String>, reader: inout NodeReader) -> [MultipartPart]? {
        guard let items = reader.list(node, path) else { return nil }
        if items.isEmpty { reader.report(node, path, "multipart needs at least one part"); return nil }
        var parts: [MultipartPart] = []
        var valid = true
        for (index, item) in items.enumerated() {
            let partPath = "\(path)[\(index)]"
            guard let fields = reader.fields(item, partPath, known: partFields, required: ["name"]) else { valid = false; continue }
            var part = MultipartPart(name: "", filename: nil, contentType: nil, content: .text(.literal("")), saveAs: nil)
            var contents = 0
            var partValid = true
            for (key, _, value) in fields {
                let here = NodeReader.join(partPath, key)
                switch key {
                case "name": if let name = reader.string(value, here) { part.name = name } else { partValid = false }
                case "value", "content":
                    contents += 1
                    if let text = reader.template(value, here) { part.content = .text(text) } else { partValid = false }
                case "random_bytes":
                    contents += 1
                    if let count = reader.int(value, here, range: 1...(32 << 20)) { part.content = .randomBytes(count) } else { partValid = false }
                case "filename": part.filename = reader.template(value, here, allowEmpty: false)
                case "content_type": part.contentType = reader.string(value, here)
                case "save_as":
                    if let name = savedPayload(value, here, payloads: &payloads, reader: &reader) { part.saveAs = name } else { partValid = false }
                default: break
                }
            }
            if contents != 1 {
                reader.report(item, partPath, "a part needs exactly one of value, content or random_bytes")
                partValid = false
            }
            if partValid { parts.append(part) } else { valid = false }
        }
        return valid ? parts : nil
    }

    // MARK: - Assertions and conditions

    static func assertions(_ node: Node, _ path: String, reader: inout NodeReader) -> [Assertion] {
        guard let fields = reader.fields(node, path, known: assertFields, nested: assertNested) else { return [] }
        var result: [Assertion] = []
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "status":
                var patterns: [StatusPattern] = []
                for entry in reader.listOrOne(value) {
                    if let pattern = statusPattern(entry, here, reader: &reader) { patterns.append(pattern) }
                }
                if !patterns.isEmpty { result.append(.status(patterns)) }
            case "headers":
                guard let mapping = value.mapping else {
                    reader.report(value, here, "expected a mapping of header name → expected value, found \(NodeReader.describe(value))")
                    continue
                }
                for (nameNode, expected) in mapping {
                    guard let name = nameNode.scalar?.string else { continue }
                    let headerPath = NodeReader.join(here, name)
                    if expected.mapping != nil {
                        guard let tests = reader.fields(expected, headerPath, known: ["equals", "matches", "exists"]), let (testKey, _, testValue) = tests.first else { continue }
                        // One test per header: a second one would be read as nothing.
                        if tests.count > 1 {
                            reader.report(expected, headerPath, "one test per header (equals, matches or exists), found \(tests.map { $0.key }.joined(separator: " and "))")
                            continue
                        }
                        let testPath = NodeReader.join(headerPath, testKey)
                        switch testKey {
                        case "equals": if let t = reader.template(testValue, testPath) { result.append(.header(name: name, test: .equals(t))) }
                        case "matches": if let p = reader.regex(testValue, testPath) { result.append(.header(name: name, test: .matches(p))) }
                        default: if let b = reader.bool(testValue, testPath) { result.append(.header(name: name, test: .exists(b))) }
                        }
                    } else if let t = reader.template(expected, headerPath) {
                        result.append(.header(name: name, test: .equals(t)))
                    }
                }
            case "body_contains", "body_not_contains":
                for entry in reader.listOrOne(value) {
                    if let t = reader.template(entry, here, allowEmpty: false) { result.append(.bodyContains(t, negated: key == "body_not_contains")) }
                }
            case "body_matches", "body_not_matches":
                // Checked as a regex now when it has no ${…}; otherwise once rendered, per run.
                let negated = key == "body_not_matches"
                for entry in reader.listOrOne(value) {
                    guard let text = reader.string(entry, here) else { continue }
                    if !text.contains("${") {
                        if reader.regex(entry, here) != nil { result.append(.bodyMatches(.literal(text), negated: negated)) }
                    } else if let t = reader.template(entry, here) {
                        result.append(.bodyMatches(t, negated: negated))
                    }
                }
            case "cert_valid_for":
                if let d = reader.duration(value, here) { result.append(.certValidFor(d)) }
            case "json":
                for condition in conditions(value, here, reader: &reader) { result.append(.json(condition)) }
            case "latency_below":
                if let d = reader.duration(value, here) { result.append(.latencyBelow(d)) }
            default: break
            }
        }
        return result
    }

    static func statusPattern(_ node: Node, _ path: String, reader: inout NodeReader) -> StatusPattern? {
        guard let text = node.scalar?.string.lowercased() else {
            reader.report(node, path, "expected a status code (200), a class (2xx) or a list of them, found \(NodeReader.describe(node))")
            return nil
        }
        if text.count == 3, text.hasSuffix("xx"), let first = Int(text.prefix(1)), (1...5).contains(first) {
            return .family(first)
        }
        if let code = Int(text), (100...599).contains(code) { return .code(code) }
        reader.report(node, path, "'\(text)' is not a status: expected a code 100…599 or a class such as 2xx")
        return nil
    }

    /// One condition or a list of them; each a mapping `{path, equals|…}` or a string
    /// `"$.status == completed"`, `"$.status in [failed, expired]"`, `"$.id exists"`,
    /// `"$.name matches ^sim-"`, `"$.x != y"`.
    static func conditions(_ node: Node, _ path: String, reader: inout NodeReader) -> [Condition] {
        let items = node.sequence.map(Array.init) ?? [node]
        var result: [Condition] = []
        for (index, item) in items.enumerated() {
            let here = node.sequence == nil ? path : "\(path)[\(index)]"
            if let condition = condition(item, here, reader: &reader) { result.append(condition) }
        }
        if items.isEmpty { reader.report(node, path, "expected at least one condition") }
        return result
    }

    static func condition(_ node: Node, _ path: String, reader: inout NodeReader) -> Condition? {
        if let text = node.scalar?.string, node.tagName != .null {
            return shorthandCondition(text, node, path, reader: &reader)
        }
        guard let fields = reader.fields(node, path, known: conditionFields, required: ["path"]) else { return nil }
        var jsonPath: JSONPath?
        var tests: [Condition.Test] = []
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "path": jsonPath = reader.jsonPath(value, here)
            case "equals": if let v = reader.jsonTemplate(value, here) { tests.append(.equals(v)) }
            case "not_equals": if let v = reader.jsonTemplate(value, here) { tests.append(.notEquals(v)) }
            case "exists": if let b = reader.bool(value, here) { tests.append(.exists(b)) }
            case "matches": if let p = reader.regex(value, here) { tests.append(.matches(p)) }
            case "in":
                if value.sequence == nil { reader.report(value, here, "expected a list of values, found \(NodeReader.describe(value))"); continue }
                if case .array(let options)? = reader.jsonTemplate(value, here) { tests.append(.oneOf(options)) }
            default:
                if let comparison = Condition.Comparison.allCases.first(where: { $0.key == key }), let limit = comparisonLimit(value, here, reader: &reader) {
                    tests.append(.compare(comparison, limit))
                }
            }
        }
        let given = fields.filter { $0.key != "path" }.count
        if given != 1 {
            reader.report(node, path, "a condition needs exactly one test: equals, not_equals, exists, matches, in, less_than, at_most, greater_than or at_least")
            return nil
        }
        guard let jsonPath, let test = tests.first else { return nil }
        return Condition(path: jsonPath, test: test)
    }

    /// The number a comparison's mapping form compares with.
    static func comparisonLimit(_ node: Node, _ path: String, reader: inout NodeReader) -> JSONTemplate? {
        guard let limit = reader.jsonTemplate(node, path) else { return nil }
        guard case .number = limit else {
            reader.report(node, path, "expected a number, found \(NodeReader.describe(node))")
            return nil
        }
        return limit
    }

    /// `<path> <op> <value>` split where the path ends: at the first space outside brackets and
    /// quotes, so `$['odd key'] == 1` and `$.items[?(@.state == 'failed')] exists` keep their path.
    static func conditionParts(_ text: String) -> [String] {
        var depth = 0
        var quote: Character?
        var end = text.endIndex
        for index in text.indices {
            let c = text[index]
            if let open = quote {
                if c == open { quote = nil }
            } else if c == "'" || c == "\"", depth > 0 {
                quote = c
            } else if c == "[" {
                depth += 1
            } else if c == "]" {
                depth -= 1
            } else if c == " ", depth <= 0 {
                end = index
                break
            }
        }
        let path = String(text[..<end])
        let rest = text[end...].split(separator: " ", maxSplits: 1, omittingEmptySubsequences: true).map { String($0).trimmed() }
        return [path] + rest
    }

    static func shorthandCondition(_ text: String, _ node: Node, _ path: String, reader: inout NodeReader) -> Condition? {
        let trimmed = text.trimmed()
        let parts = Self.conditionParts(trimmed)
        let usage = "expected '<json path> <op> <value>' with op ==, !=, <, <=, >, >=, in, matches, or '<json path> exists' (e.g. \"$.status == completed\")"
        guard parts.count >= 2 else {
            reader.report(node, path, "condition '\(text)': \(usage)")
            return nil
        }
        let jsonPath: JSONPath
        do { jsonPath = try JSONPath.parse(parts[0]) } catch {
            reader.report(node, path, error.message)
            return nil
        }
        let op = parts[1]
        let operand = parts.count > 2 ? parts[2] : ""
        func value(_ text: String) -> JSONTemplate? {
            let operandNode: Node
            do {
                guard let parsed = try SondeYAML.compose(yaml: text) else { return .string(.literal("")) }
                operandNode = parsed
            } catch {
                reader.report(node, path, "condition '\(text)': cannot read the value '\(text)'")
                return nil
            }
            return reader.jsonTemplate(operandNode.mark == nil ? operandNode : Self.relocated(operandNode, to: node), path)
        }
        switch op {
        case "exists" where operand.isEmpty:
            return Condition(path: jsonPath, test: .exists(true))
        case "==", "!=":
            guard !operand.isEmpty, let v = value(operand) else {
                if operand.isEmpty { reader.report(node, path, "condition '\(text)': missing value after \(op)") }
                return nil
            }
            return Condition(path: jsonPath, test: op == "==" ? .equals(v) : .notEquals(v))
        case "<", "<=", ">", ">=":
            guard !operand.isEmpty, let v = value(operand) else {
                if operand.isEmpty { reader.report(node, path, "condition '\(text)': missing value after \(op)") }
                return nil
            }
            guard case .number = v else {
                reader.report(node, path, "condition '\(text)': \(op) compares numbers, and '\(operand)' is not one")
                return nil
            }
            return Condition(path: jsonPath, test: .compare(Condition.Comparison(rawValue: op)!, v))
        case "in":
            guard operand.hasPrefix("["), let v = value(operand), case .array(let options) = v else {
                reader.report(node, path, "condition '\(text)': 'in' needs a list such as [failed, expired]")
                return nil
            }
            return Condition(path: jsonPath, test: .oneOf(options))
        case "matches":
            do {
                _ = try ProbeRegex(operand)
            } catch {
                reader.report(node, path, "condition '\(text)': invalid regular expression '\(operand)': \(error)")
                return nil
            }
            return Condition(path: jsonPath, test: .matches(operand))
        default:
            reader.report(node, path, "condition '\(text)': unknown operator '\(op)'; \(usage)")
            return nil
        }
    }

    /// Marks inside a shorthand operand are relative to the operand text; report at the
    /// condition's own place instead.
    static func relocated(_ node: Node, to anchor: Node) -> Node {
        switch node {
        case .scalar(var scalar): scalar.mark = anchor.mark; return .scalar(scalar)
        case .sequence(var sequence): sequence.mark = anchor.mark; return .sequence(Node.Sequence(sequence.map { relocated($0, to: anchor) }, sequence.tag, sequence.style, anchor.mark))
        case .mapping(var mapping): mapping.mark = anchor.mark; return .mapping(mapping)
        }
    }

    // MARK: - Extract, poll, compare

    static func extractions(_ node: Node, _ path: String, reader: inout NodeReader) -> [Extraction] {
        guard let mapping = node.mapping else {
            reader.report(node, path, "expected a mapping of variable name → {json | header | regex | body}, found \(NodeReader.describe(node))")
            return []
        }
        var result: [Extraction] = []
        for (nameNode, spec) in mapping {
            guard let name = nameNode.scalar?.string, Template.isName(name, allowDots: false) else {
                reader.report(nameNode, path, "'\(nameNode.scalar?.string ?? "?")' is not a valid variable name (letters, digits and _)")
                continue
            }
            let here = NodeReader.join(path, name)
            if Template.builtins.contains(name) { reader.report(nameNode, here, "'\(name)' is a built-in name") }
            guard let fields = reader.fields(spec, here, known: extractFields) else { continue }
            var sources = fields.filter { $0.key != "group" && $0.key != "secret" }
            var secret: Bool?
            if let secretNode = fields.first(where: { $0.key == "secret" })?.value {
                guard let flag = reader.bool(secretNode, NodeReader.join(here, "secret")) else { continue }
                secret = flag
            }
            // `{header: Set-Cookie, regex: …}`: the regex runs over that header's values.
            let headerName = sources.count == 2 ? sources.first(where: { $0.key == "header" }) : nil
            if headerName != nil { sources.removeAll { $0.key == "header" } }
            guard sources.count == 1, let (key, _, value) = sources.first else {
                reader.report(spec, here, "an extraction needs exactly one of json, header, cookie, regex (optionally with header) or body")
                continue
            }
            let sourcePath = NodeReader.join(here, key)
            if headerName != nil, key != "regex" {
                reader.report(spec, here, "'header' combines only with 'regex'")
                continue
            }
            switch key {
            case "cookie": if let c = reader.string(value, sourcePath) { result.append(Extraction(name: name, source: .cookie(c), secret: secret)) }
            case "json": if let p = reader.jsonPath(value, sourcePath) { result.append(Extraction(name: name, source: .json(p), secret: secret)) }
            case "header": if let h = reader.string(value, sourcePath) { result.append(Extraction(name: name, source: .header(h), secret: secret)) }
            case "regex":
                guard let pattern = reader.regex(value, sourcePath) else { continue }
                var group = 0
                if let groupNode = fields.first(where: { $0.key == "group" })?.value {
                    guard let g = reader.int(groupNode, NodeReader.join(here, "group"), range: 0...99) else { continue }
                    group = g
                }
                let groups = (try? ProbeRegex(pattern))?.captureCount ?? 0
                if group > groups {
                    reader.report(value, sourcePath, "group \(group) does not exist: the regex has \(groups) capture group(s)")
                    continue
                }
                if let header = headerName, let headerText = reader.string(header.value, NodeReader.join(here, "header")) {
                    result.append(Extraction(name: name, source: .headerRegex(headerText, pattern: pattern, group: group), secret: secret))
                } else {
                    result.append(Extraction(name: name, source: .regex(pattern, group: group), secret: secret))
                }
            default:
                if reader.bool(value, sourcePath) == true { result.append(Extraction(name: name, source: .body, secret: secret)) }
            }
        }
        return result
    }

    static func poll(_ node: Node, _ path: String, reader: inout NodeReader) -> PollSpec? {
        guard let fields = reader.fields(node, path, known: pollFields, required: ["until", "every", "max_wait"], nested: ["stuck_after": nil]) else { return nil }
        var spec = PollSpec(every: .fixed(.seconds(1)), until: [], failWhen: [], maxWait: .fixed(.seconds(60)), state: nil, stuckAfter: [:])
        var valid = fields.contains { $0.key == "until" } && fields.contains { $0.key == "every" } && fields.contains { $0.key == "max_wait" }
        let errorsBefore = reader.diagnostics.count
        var stuckNodes: [(state: String, node: Node)] = []
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            switch key {
            case "every": if let d = reader.duration(value, here) { spec.every = d }
            case "max_wait": if let d = reader.duration(value, here) { spec.maxWait = d }
            case "until":
                spec.until = conditions(value, here, reader: &reader)
            case "fail_when":
                spec.failWhen = conditions(value, here, reader: &reader)
            case "state": spec.state = reader.jsonPath(value, here)
            case "tolerate_errors": if let n = reader.int(value, here, range: 0...100) { spec.tolerateErrors = n }
            case "stuck_after":
                if let limits = value.mapping {
                    for (stateNode, limit) in limits {
                        guard let state = stateNode.scalar?.string else { continue }
                        stuckNodes.append((state, stateNode))
                        if let d = reader.duration(limit, NodeReader.join(here, state)) { spec.stuckAfter[state] = d }
                    }
                    if !fields.contains(where: { $0.key == "state" }) {
                        reader.report(value, here, "stuck_after needs 'state': the JSON path of the job's state, e.g. $.status")
                    }
                } else if let d = reader.duration(value, here) {
                    spec.stuckAfter["default"] = d
                    if !fields.contains(where: { $0.key == "state" }) {
                        reader.report(value, here, "stuck_after needs 'state': the JSON path of the job's state, e.g. $.status")
                    }
                }
            default: break
            }
        }
        if reader.diagnostics.count > errorsBefore { valid = false }
        // State names are compared exactly: `finalizing:` never matches FINALIZING.
        let seen = polledStates(spec)
        for (state, node) in stuckNodes where state != "default" && !seen.contains(state) {
            if let other = seen.first(where: { $0.lowercased() == state.lowercased() }) {
                reader.warn(node, NodeReader.join(path, "stuck_after.\(state)"),
                    "'\(state)' differs only in case from the state '\(other)' in until/fail_when; state names match exactly, so this limit never applies (did you mean '\(other)'?)")
            } else if state.lowercased() == "default" {
                // `Default:` is taken as a state of that name, so the limit for all others is lost.
                reader.warn(node, NodeReader.join(path, "stuck_after.\(state)"),
                    "'\(state)' differs only in case from 'default', the limit for every state without its own; keys match exactly, so this is a limit for a state named '\(state)' and no default applies (did you mean 'default'?)")
            }
        }
        return valid ? spec : nil
    }

    /// Literal values the poll's conditions compare its state with (every condition when no
    /// `state` path is set).
    static func polledStates(_ spec: PollSpec) -> Set<String> {
        var values: Set<String> = []
        func add(_ template: JSONTemplate) {
            if case .string(let text) = template, let literal = text.literal { values.insert(literal) }
        }
        for condition in spec.until + spec.failWhen where spec.state.map({ "\($0)" == "\(condition.path)" }) ?? true {
            switch condition.test {
            case .equals(let value), .notEquals(let value): add(value)
            case .oneOf(let options): options.forEach(add)
            case .exists, .matches, .compare: break
            }
        }
        return values
    }

    static func compare(_ node: Node, _ path: String, payloads: Set<String>, stepNames: [String: Int], reader: inout NodeReader) -> CompareSpec? {
        guard let fields = reader.fields(node, path, known: compareFields, required: ["download", "with"]) else { return nil }
        var spec = CompareSpec(download: "", with: "")
        var valid = fields.count == 2
        for (key, _, value) in fields {
            let here = NodeReader.join(path, key)
            guard let name = reader.string(value, here) else { valid = false; continue }
            if key == "download" {
                if stepNames[name] == nil, !reader.scope.contains(name) {
                    reader.report(value, here, "'\(name)' is neither an earlier step nor an extracted value"
                        + NodeReader.suggestion(for: name, among: Array(stepNames.keys) + Array(reader.scope)))
                    valid = false
                }
                spec.download = name
            } else {
                if !payloads.contains(name) {
                    reader.report(value, here, "unknown payload '\(name)': name one with save_as in an earlier multipart part or random_bytes body"
                        + (payloads.isEmpty ? "" : NodeReader.suggestion(for: name, among: payloads.sorted())))
                    valid = false
                }
                spec.with = name
            }
        }
        return valid ? spec : nil
    }
}
