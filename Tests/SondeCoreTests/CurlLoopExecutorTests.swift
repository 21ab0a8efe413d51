import CurlHTTP
import Foundation
import SondeTestSupport
import Testing

/// The client's loop thread as a task executor and timer service: what lets a probe run sleep,
/// send its request and handle the answer without crossing threads.
@Suite struct CurlLoopExecutorTests {
    let client = CurlHTTPClient(threads: 8)

    /// The name of the thread running the caller, as the kernel has it.
    private static func threadName() -> String {
        let comm = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? "?"
        return comm.trimmingCharacters(in: .newlines)
    }

    @Test("a task that prefers the loop runs on it before, between and after its sleeps and transfers")
    func taskStaysOnTheLoopThread() async throws {
        let server = try LoopbackHTTPServer { _ in .json(200, #"{"ok":true}"#) }
        defer { server.stop() }
        let client = client
        let names = await Task(executorPreference: client.taskExecutor) { () -> [String] in
            var names = [Self.threadName()]
            for _ in 0..<3 {
                try? await client.sleep(until: .now + .milliseconds(5))
                names.append(Self.threadName())
                _ = try? await client.perform(HTTPRequest(url: server.baseURL))
                names.append(Self.threadName())
            }
            return names
        }.value
        #expect(names.count == 7)
        #expect(Set(names) == ["sonde.curl"], "ran on \(names)")
        #expect(server.requests.count == 3)
    }

    @Test("a sleep ends at its deadline, not before; many sleeps end in deadline order")
    func sleepsEndAtTheirDeadlinesInOrder() async throws {
        let client = client
        let start = ContinuousClock.now
        // Deadlines given out of order; each task records when it woke.
        let offsets = [60, 10, 40, 20, 50, 30, 0, 70]
        let woke = await withTaskGroup(of: (Int, ContinuousClock.Instant).self) { group in
            for offset in offsets {
                group.addTask(executorPreference: client.taskExecutor) {
                    try? await client.sleep(until: start + .milliseconds(offset))
                    return (offset, ContinuousClock.now)
                }
            }
            var woke: [(Int, ContinuousClock.Instant)] = []
            for await entry in group { woke.append(entry) }
            return woke
        }
        for (offset, instant) in woke {
            #expect(instant >= start + .milliseconds(offset), "woke before its deadline: \(offset) ms")
        }
        let order = woke.sorted { $0.1 < $1.1 }.map(\.0)
        #expect(order == offsets.sorted(), "woke in order \(order)")
    }

    @Test("cancelling a sleeping task ends its sleep at once with CancellationError")
    func cancelledSleepThrows() async throws {
        let client = client
        let task = Task(executorPreference: client.taskExecutor) { () -> (any Error)? in
            do {
                try await client.sleep(until: .now + .seconds(60))
                return nil
            } catch {
                return error
            }
        }
        try await Task.sleep(for: .milliseconds(20))
        let start = ContinuousClock.now
        task.cancel()
        let error = await task.value
        #expect(error is CancellationError)
        #expect(ContinuousClock.now - start < .seconds(5))
    }

    /// The kernel's id of the calling thread.
    private static func threadID() -> String {
        let stat = (try? String(contentsOfFile: "/proc/thread-self/stat", encoding: .utf8)) ?? "?"
        return String(stat.prefix { $0 != " " })
    }

    /// Times the thread `tid` of this process gave up the CPU to wait.
    private static func voluntarySwitches(_ tid: String) throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/task/\(tid)/status", encoding: .utf8)
        let line = status.split(separator: "\n").first { $0.hasPrefix("voluntary_ctxt_switches:") }
        return Int(line?.split(separator: "\t").last ?? "") ?? -1
    }

    /// The thread's state letter from /proc (R running, S sleeping, …).
    private static func threadState(_ tid: String) throws -> String {
        let stat = try String(contentsOfFile: "/proc/self/task/\(tid)/stat", encoding: .utf8)
        // After the name in parentheses, which may itself hold spaces.
        guard let close = stat.lastIndex(of: ")") else { return "?" }
        return stat[stat.index(after: close)...].split(separator: " ").first.map(String.init) ?? "?"
    }

    @Test("an idle loop waits for its next timer without waking up in between")
    func idleLoopDoesNotWakeUp() async throws {
        let client = client
        // A sleep far ahead keeps the loop thread alive with nothing else to do.
        let tid = await Task(executorPreference: client.taskExecutor) { Self.threadID() }.value
        let sleeper = Task(executorPreference: client.taskExecutor) { try? await client.sleep(until: .now + .seconds(60)) }
        // The loop is back in its poll: its thread asleep (state S), the sleeper's timer set.
        try await waitUntil("the loop thread asleep", timeout: .seconds(10)) { (try? Self.threadState(tid)) == "S" }
        let before = try Self.voluntarySwitches(tid)
        try await Task.sleep(for: .milliseconds(2500))
        let after = try Self.voluntarySwitches(tid)
        sleeper.cancel()
        await sleeper.value
        // It used to wake up every second to look (2 here).
        #expect(after - before == 0, "the idle loop thread woke up \(after - before) times in 2.5 s")
    }

    @Test("a task cancelled before it sleeps does not sleep")
    func cancelledBeforeSleeping() async throws {
        let client = client
        let task = Task { () -> Bool in
            withUnsafeCurrentTask { $0?.cancel() }
            do {
                try await client.sleep(until: .now + .seconds(60))
                return false
            } catch {
                return true
            }
        }
        #expect(await task.value)
    }

    @Test("header names match case-insensitively over ASCII letters only")
    func headerLookup() {
        let headers = [HTTPHeader("Content-Type", "a"), HTTPHeader("X-[1]", "b"), HTTPHeader("Etag", "c")]
        #expect(headers.value(for: "content-type") == "a")
        #expect(headers.value(for: "CONTENT-TYPE") == "a")
        #expect(headers.value(for: "x-[1]") == "b")
        // '{' and '[' differ by the ASCII case bit, but they are not letters.
        #expect(headers.value(for: "X-{1}") == nil)
        #expect(headers.value(for: "etags") == nil)
        #expect(headers.value(for: "eta") == nil)
    }
}
