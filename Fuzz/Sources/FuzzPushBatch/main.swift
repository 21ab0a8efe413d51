import Foundation
import SondeCore

/// libFuzzer entry point, differential: the collector's strict push decoder against Foundation's
/// JSONDecoder (the reference the agent's encoder is tested with). For any bytes:
/// - the strict decoder never crashes, and a refusal names what is wrong;
/// - what it accepts, Foundation accepts too, as the very same `PushBatch` (it may refuse more:
///   invalid UTF-8 in ignored members, a byte order mark, non-integer integers);
/// - each result's byte range is that result's exact JSON: decoding the slice alone gives it back.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzPushBatch(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let body = Data(bytes: data, count: size)
    let decoded: PushBatchDecoder.Decoded
    do {
        decoded = try PushBatchDecoder.decode(body)
    } catch {
        if error.message.isEmpty { fatalError("a refusal without a message: \(error)") }
        return 0
    }
    let text = String(decoding: body, as: UTF8.self)
    guard let reference = try? SondeJSON.decode(PushBatch.self, from: body) else {
        fatalError("accepted a body JSONDecoder refuses: \(text)")
    }
    if reference != decoded.batch {
        fatalError("decoded differently from JSONDecoder:\n\(decoded.batch)\nvs\n\(reference)\nbody: \(text)")
    }
    guard decoded.resultRanges.count == decoded.batch.results.count else {
        fatalError("\(decoded.resultRanges.count) ranges for \(decoded.batch.results.count) results")
    }
    for (range, result) in zip(decoded.resultRanges, decoded.batch.results) {
        guard range.lowerBound >= 0, range.upperBound <= body.count,
            let again = try? PushBatchDecoder.result(from: body.subdata(in: range)), again == result
        else {
            fatalError("range \(range) is not the JSON of result \(result.id) in \(text)")
        }
    }
    return 0
}
