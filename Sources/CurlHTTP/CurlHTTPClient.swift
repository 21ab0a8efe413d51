import Foundation

/// Performs HTTP requests over libcurl on a fixed pool of worker threads, so blocking
/// `curl_easy_perform` calls never sit on Swift's cooperative thread pool. Each request gets a
/// fresh easy handle (and so a fresh connection: probes measure DNS, connect and TLS every time).
/// Cancelling the calling task aborts the transfer.
public final class CurlHTTPClient: Sendable {
    /// A process-wide client for callers that do not need their own pool.
    public static let shared = CurlHTTPClient(threads: 64)

    private let pool: WorkerPool

    /// - Parameter threads: the most transfers in flight at once; further requests queue.
    public init(threads: Int = 16) {
        pool = WorkerPool(threads: max(1, threads))
    }

    public func perform(_ request: HTTPRequest) async throws(HTTPTransferError) -> HTTPResponse {
        let token = CancelToken()
        let result: Result<HTTPResponse, HTTPTransferError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                pool.submit {
                    continuation.resume(returning: CurlTransfer.perform(request, cancel: token))
                }
            }
        } onCancel: {
            token.cancel()
        }
        return try result.get()
    }
}

/// A fixed set of threads taking jobs from one queue. A thread is started when a job arrives and
/// none is idle, up to the limit; threads then live for the process (clients are long-lived).
final class WorkerPool: @unchecked Sendable {
    // All mutable state is guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [@Sendable () -> Void] = []
    private var head = 0
    private var started = 0
    private var idle = 0
    private let limit: Int

    init(threads: Int) { limit = threads }

    func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        let startThread = idle == 0 && started < limit
        if startThread { started += 1 }
        condition.signal()
        condition.unlock()
        if startThread {
            let thread = Thread { [self] in self.workLoop() }
            thread.stackSize = 1 << 20
            thread.start()
        }
    }

    private func next() -> @Sendable () -> Void {
        condition.lock()
        defer { condition.unlock() }
        while head == jobs.count {
            idle += 1
            condition.wait()
            idle -= 1
        }
        let job = jobs[head]
        head += 1
        if head == jobs.count {
            jobs.removeAll(keepingCapacity: true)
            head = 0
        }
        return job
    }

    private func workLoop() {
        while true { next()() }
    }
}
