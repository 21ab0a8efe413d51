import CCurl
import Foundation
import Synchronization

/// Performs HTTP requests over libcurl's multi interface, every transfer of a client driven by
/// one thread of its own, so no curl call ever blocks Swift's cooperative thread pool. Each
/// request gets a fresh easy handle and a fresh connection (probes measure DNS, connect and TLS
/// every time). Cancelling the calling task aborts the transfer.
///
/// Why one thread and not a pool of threads each blocking in `curl_easy_perform`: every transfer
/// then cost a hand-off to a worker thread and back, plus a multi handle and its wake-up socket
/// pair set up and torn down inside curl; at 100 probe runs/s that was a large share of the
/// agent's CPU (futex wake-ups and context switches).
public final class CurlHTTPClient: Sendable {
    /// A process-wide client for callers that do not need their own.
    public static let shared = CurlHTTPClient(threads: 64)

    private let loop: CurlMultiLoop

    /// - Parameter threads: the most transfers in flight at once; further requests queue. (All of
    ///   them run on one thread; the name is kept from when each transfer had a thread.)
    public init(threads: Int = 16) {
        loop = CurlMultiLoop(maxTransfers: max(1, threads))
    }

    deinit { loop.stop() }

    public func perform(_ request: HTTPRequest) async throws(HTTPTransferError) -> HTTPResponse {
        // Set once the transfer exists (inside the continuation closure); the cancel handler
        // may run before that, and then the transfer sees `alreadyCancelled`.
        let slot = Mutex<(transfer: CurlTransfer?, cancelled: Bool)>((nil, false))
        let result: Result<HTTPResponse, HTTPTransferError> = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                let transfer = CurlTransfer(request: request, continuation: continuation)
                let alreadyCancelled = slot.withLock { s -> Bool in
                    s.transfer = transfer
                    return s.cancelled
                }
                if alreadyCancelled { transfer.cancelled.store(true, ordering: .sequentiallyConsistent) }
                loop.submit(transfer)
            }
        } onCancel: {
            let transfer = slot.withLock { s -> CurlTransfer? in
                s.cancelled = true
                return s.transfer
            }
            if let transfer {
                transfer.cancelled.store(true, ordering: .sequentiallyConsistent)
                loop.cancel(transfer)
            }
        }
        return try result.get()
    }
}

/// The thread that drives a client's transfers: adds queued ones to a curl multi handle, runs
/// curl until something happens (`curl_multi_poll`), resumes the callers of finished ones.
///
/// `@unchecked Sendable`: the queue, cancel requests and stop flag are guarded by `state`'s lock;
/// the multi handle is used only by the loop thread, except `curl_multi_wakeup`, which libcurl
/// documents as safe to call from any thread.
final class CurlMultiLoop: @unchecked Sendable {
    private struct State {
        var queued: [CurlTransfer] = []
        var cancelRequests: [CurlTransfer] = []
        var started = false
        var stopping = false
    }

    private let state = Mutex(State())
    private let multi: UnsafeMutableRawPointer
    private let maxTransfers: Int

    init(maxTransfers: Int) {
        _ = curlGlobalInit
        guard let multi = curl_multi_init() else { fatalError("curl_multi_init failed (out of memory?)") }
        self.multi = multi
        self.maxTransfers = maxTransfers
    }

    /// Queues `transfer` (its continuation set); the thread starts with the first one.
    func submit(_ transfer: CurlTransfer) {
        let startThread = state.withLock { s -> Bool in
            s.queued.append(transfer)
            defer { s.started = true }
            return !s.started
        }
        if startThread {
            // The thread keeps the loop alive until `stop` (the client's deinit) and its queue is empty.
            let thread = Thread { [self] in self.run() }
            thread.name = "sonde.curl"
            thread.stackSize = 1 << 20
            thread.start()
        } else {
            curl_multi_wakeup(multi)
        }
    }

    /// Aborts `transfer` (its `cancelled` flag already set): at once when still queued, else on
    /// the loop thread. A transfer submitted after this sees the flag when the loop takes it.
    func cancel(_ transfer: CurlTransfer) {
        let wasQueued = state.withLock { s -> Bool in
            if let index = s.queued.firstIndex(where: { $0 === transfer }) {
                s.queued.remove(at: index)
                return true
            }
            s.cancelRequests.append(transfer)
            return false
        }
        if wasQueued {
            transfer.finish(CURLE_ABORTED_BY_CALLBACK)
        } else {
            curl_multi_wakeup(multi)
        }
    }

    /// Ends the thread once no transfer is left (no caller can be waiting: each holds the client).
    func stop() {
        let started = state.withLock { s -> Bool in
            s.stopping = true
            return s.started
        }
        if started { curl_multi_wakeup(multi) } else { curl_multi_cleanup(multi) }
    }

    // MARK: - The loop thread

    private func run() {
        // Transfers in the multi handle, by easy handle. Only this thread touches it.
        var active: [UnsafeMutableRawPointer: CurlTransfer] = [:]
        while true {
            let (added, cancels, stopping) = state.withLock { s -> ([CurlTransfer], [CurlTransfer], Bool) in
                let room = max(0, maxTransfers - active.count)
                let taken: [CurlTransfer]
                if s.queued.count <= room {
                    taken = s.queued
                    s.queued.removeAll(keepingCapacity: true)
                } else {
                    taken = Array(s.queued.prefix(room))
                    s.queued.removeFirst(room)
                }
                let cancels = s.cancelRequests
                s.cancelRequests.removeAll(keepingCapacity: true)
                return (taken, cancels, s.stopping && s.queued.isEmpty)
            }
            for transfer in added {
                if transfer.cancelled.load(ordering: .sequentiallyConsistent) {
                    transfer.finish(CURLE_ABORTED_BY_CALLBACK)
                    continue
                }
                guard let handle = transfer.start() else { continue }  // the caller has its error
                guard curl_multi_add_handle(multi, handle) == CURLM_OK else {
                    transfer.finish(CURLE_OUT_OF_MEMORY)
                    continue
                }
                active[handle] = transfer
            }
            for transfer in cancels {
                // Not in the multi handle (finished meanwhile, or never added): nothing to do.
                guard let handle = transfer.handle, let current = active[handle], current === transfer else { continue }
                active[handle] = nil
                curl_multi_remove_handle(multi, handle)
                transfer.finish(CURLE_ABORTED_BY_CALLBACK)
            }
            if stopping && active.isEmpty { break }

            var running: Int32 = 0
            curl_multi_perform(multi, &running)
            var pending: Int32 = 0
            while let message = curl_multi_info_read(multi, &pending) {
                guard message.pointee.msg == CURLMSG_DONE, let easy = message.pointee.easy_handle else { continue }
                let code = message.pointee.data.result
                curl_multi_remove_handle(multi, easy)
                active.removeValue(forKey: easy)?.finish(code)
            }
            // Sleeps until a socket is ready, curl's next time-out, or a wake-up (new transfer,
            // cancel, stop), unless a finished transfer made room for a queued one.
            let startMore = active.count < maxTransfers && state.withLock { !$0.queued.isEmpty }
            if !startMore {
                curl_multi_poll(multi, nil, 0, 1000, nil)
            }
        }
        curl_multi_cleanup(multi)
    }
}
