import FoundationEssentials
import SondeYAML

/// Loads probe scripts (YAML, one probe per file) and validates them completely: every problem
/// in every file is reported with file, line, column and field, and nothing is loaded when there
/// is one. The reference for the format is `probes/README.md`.
public enum ProbeLoader {
    /// Loads and validates every `*.yaml`/`*.yml` probe script under `paths` (files or folders,
    /// folders searched recursively, files in name order).
    /// `variables` names what `${…}` may refer to beyond built-ins, `${env:…}` and `${file:…}`.
    /// Throws every problem found, each with file, line and field.
    /// `values`: the agent variables' values, for templated `interval`, `retry_interval` and
    /// `timeout` (the schedule is made when the probe loads).
    public static func load(paths: [String], variables: Set<String>, values: [String: String] = [:]) throws(ProbeValidationError) -> [ProbeDefinition] {
        var diagnostics: [ProbeDiagnostic] = []
        var files: [String] = []
        for path in paths {
            var isDirectory = false
            guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
                diagnostics.append(ProbeDiagnostic(file: path, message: "no such file or folder"))
                continue
            }
            if isDirectory {
                let found = probeFiles(in: path)
                if found.isEmpty { diagnostics.append(ProbeDiagnostic(file: path, message: "folder holds no .yaml or .yml probe scripts")) }
                files += found
            } else {
                files.append(path)
            }
        }
        var probes: [ProbeDefinition] = []
        var warnings: [ProbeDiagnostic] = []
        var names: [String: (file: String, line: Int?)] = [:]
        for file in files {
            guard let data = FileManager.default.contents(atPath: file) else {
                diagnostics.append(ProbeDiagnostic(file: file, message: "cannot read the file (check permissions)"))
                continue
            }
            guard let text = String(data: data, encoding: .utf8) else {
                diagnostics.append(ProbeDiagnostic(file: file, message: "not UTF-8 text"))
                continue
            }
            let (probe, problems, fileWarnings) = parseCollecting(yaml: text, file: file, variables: variables, values: values)
            diagnostics += problems
            warnings += fileWarnings
            guard let probe else { continue }
            if let first = names[probe.name] {
                diagnostics.append(ProbeDiagnostic(
                    file: file, line: probe.nameLine, field: "name",
                    message: "probe name '\(probe.name)' is already used by \(first.file)\(first.line.map { ":\($0)" } ?? ""); names must be unique"))
                continue
            }
            names[probe.name] = (file, probe.nameLine)
            probes.append(probe)
        }
        if !diagnostics.isEmpty { throw ProbeValidationError(diagnostics: diagnostics, warnings: warnings) }
        return probes
    }

    /// Probe files under a folder, recursively, sorted by path (hidden files skipped).
    static func probeFiles(in folder: String) -> [String] {
        guard let relatives = try? FileManager.default.subpathsOfDirectory(atPath: folder) else { return [] }
        var files: [String] = []
        for relative in relatives {
            let name = relative.split(separator: "/").last.map(String.init) ?? relative
            guard !name.hasPrefix("."), name.hasSuffix(".yaml") || name.hasSuffix(".yml") else { continue }
            files.append(folder.hasSuffix("/") ? folder + relative : folder + "/" + relative)
        }
        return files.sorted()
    }

    /// Parses and validates one probe script. Returns the probe when there are no problems, and
    /// every problem found. Never throws or crashes, whatever the text.
    public static func parse(yaml text: String, file: String, variables: Set<String>, values: [String: String] = [:]) -> (ProbeDefinition?, [ProbeDiagnostic]) {
        let (probe, problems, _) = parseCollecting(yaml: text, file: file, variables: variables, values: values)
        return (probe, problems)
    }

    /// `parse`, plus the file's warnings even when it has problems (a valid probe also carries
    /// them in `warnings`).
    static func parseCollecting(
        yaml text: String, file: String, variables: Set<String>, values: [String: String] = [:]
    ) -> (ProbeDefinition?, [ProbeDiagnostic], warnings: [ProbeDiagnostic]) {
        let root: Node?
        do {
            root = try compose(yaml: text)
        } catch {
            return (nil, [ProbeDiagnostic(invalidYAML: error, file: file)], [])
        }
        guard let root else {
            return (nil, [ProbeDiagnostic(file: file, line: 1, message: "the file is empty; expected a probe with name, component, interval, timeout and steps")], [])
        }
        let base = file.contains("/") ? URL(fileURLWithPath: file).deletingLastPathComponent().standardizedFileURL.path : ""
        var reader = NodeReader(file: file, baseDirectory: base.isEmpty ? FileManager.default.currentDirectoryPath : base)
        reader.scope = variables
        reader.values = values
        var probe = ScriptParser.probe(root, reader: &reader)
        if !reader.diagnostics.isEmpty { return (nil, reader.diagnostics, reader.warnings) }
        probe?.warnings = reader.warnings
        return (probe, [], reader.warnings)
    }
}

extension ProbeDiagnostic {
    /// The parser's problem at its line and column (probe scripts and the agent config alike).
    public init(invalidYAML error: YAMLError, file: String) {
        var message = "invalid YAML: \(error.problem)"
        if let context = error.context, let mark = error.contextMark { message += " (\(context) at line \(mark.line), column \(mark.column))" }
        self.init(file: file, line: error.mark?.line, column: error.mark?.column, message: message)
    }
}
