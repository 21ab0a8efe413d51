import Testing

@testable import Collector

/// A person's incident write is answered after the evaluator stores it: 200/201 once stored, 202
/// while it is still being retried, and 503 `not_leader` once this collector threw the
/// evaluation away unstored (it lost the leadership): a 202 then would say the write was kept.
@Suite struct CommitOutcomeTests {
    @Test func storedPendingOrLost() async {
        #expect(await CollectorAPI.commitOutcome(of: 5, within: .seconds(1)) { (5, 0) } == .stored)
        #expect(await CollectorAPI.commitOutcome(of: 5, within: .seconds(1)) { (4, 5) } == .lost)
        #expect(await CollectorAPI.commitOutcome(of: 5, within: .seconds(1)) { (4, 7) } == .lost)
        #expect(await CollectorAPI.commitOutcome(of: 5, within: .milliseconds(50)) { (4, 4) } == .pending)
        // Stored and later evaluations thrown away (the leadership lost after it): stored.
        #expect(await CollectorAPI.commitOutcome(of: 5, within: .seconds(1)) { (5, 9) } == .stored)
    }
}
