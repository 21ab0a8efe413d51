import Dispatch
import SondeCore
import Synchronization
import SondeTestSupport
import Testing

/// Probe exchanges that block a thread (tcp, dns, icmp steps) are bounded: 400 tcp steps against
/// a silent server held 340 threads and every descriptor, and the agent's healthy probes and
/// pushes then failed to connect (red team, 34th session).
@Suite(.serialized) struct DetachedThreadTests {
    final class StartedCount: Sendable { let value = Mutex(0) }

    @Test func probeWorkPastItsBoundIsRefusedAtOnce() async throws {
        let gate = DispatchSemaphore(value: 0)
        let started = StartedCount()
        // Its own slots: the agent's are shared with every other test in the process.
        let slots = ProbeWorkSlots(limit: 8)
        let bound = slots.limit
        try await withThrowingTaskGroup(of: Int?.self) { group in
            for n in 0..<bound {
                group.addTask {
                    await DetachedThread.run(name: "held", slots: slots) {
                        started.value.withLock { $0 += 1 }
                        gate.wait()
                        return n
                    }
                }
            }
            try await waitUntil("\(bound) exchanges running", timeout: .seconds(10)) { started.value.withLock { $0 } == bound }
            let refused = await DetachedThread.run(name: "one-more", slots: slots) { 1 }
            #expect(refused == nil)
            #expect(slots.busy)
            // Other blocking work (the agent's own loops) is not bounded by it.
            #expect(await DetachedThread.run(name: "not-probe") { 2 } == 2)
            for _ in 0..<bound { gate.signal() }
            var finished = 0
            for try await value in group where value != nil { finished += 1 }
            #expect(finished == bound)
        }
        // Each gave its place back when it ended.
        #expect(await DetachedThread.run(name: "after", slots: slots) { 3 } == 3)
        #expect(!slots.busy)
    }
}
