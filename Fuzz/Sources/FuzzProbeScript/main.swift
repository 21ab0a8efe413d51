import ProbeEngine

/// libFuzzer entry point: any bytes, read as a probe script, must give a definition or
/// diagnostics, never a crash; and every diagnostic must say what, and where when it says a line.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzProbeScript(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let (definition, diagnostics) = ProbeLoader.parse(yaml: text, file: "fuzz.yaml", variables: ["base_url"])
    if definition == nil && diagnostics.isEmpty {
        fatalError("refused a script without saying why")
    }
    for diagnostic in diagnostics where (diagnostic.line ?? 1) < 1 || diagnostic.message.isEmpty {
        fatalError("diagnostic without a place or a message: \(diagnostic)")
    }
    return 0
}
