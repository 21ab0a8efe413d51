import Foundation
import HummingbirdCore
import Logging
import Synchronization

#if canImport(Glibc)
import Glibc
#endif

/// `limits.max_connections`: the collector stops accepting once that many client connections
/// are open, and accepts again as one closes (new ones wait in the listen backlog meanwhile). An
/// accept at the open-file limit fails at once and is retried at once: NIO's accept loop spun a
/// core and the collector answered nobody, /healthz included, while 400 idle connections were
/// held (red team, fifth pass). The cap keeps the collector below that limit, with room for its
/// database, webhook and log files.
struct ConnectionCap: AvailableConnectionsDelegate {
    /// The counts /metrics shows, shared with the server channel's handler.
    final class Counts: Sendable {
        let open = Atomic<Int>(0)
        /// Times the cap was reached and accepting paused.
        let pauses = Atomic<Int>(0)
        let limit: Int
        init(limit: Int) { self.limit = limit }
    }

    let counts: Counts
    let logger: Logger
    /// Runs on the server channel's event loop only (Hummingbird's handler owns this value).
    private var open = 0
    private var paused = false

    init(counts: Counts, logger: Logger) {
        self.counts = counts
        self.logger = logger
    }

    mutating func connectionOpened() {
        open += 1
        counts.open.store(open, ordering: .relaxed)
        if open >= counts.limit, !paused {
            paused = true
            counts.pauses.add(1, ordering: .relaxed)
            logger.warning(
                "Client connections reached limits.max_connections; new ones wait until one closes",
                metadata: ["http.connections": "\(open)", "limits.max_connections": "\(counts.limit)"])
        }
    }

    mutating func connectionClosed() {
        open -= 1
        counts.open.store(open, ordering: .relaxed)
        if paused, open < counts.limit {
            paused = false
            logger.notice("Accepting client connections again", metadata: ["http.connections": "\(open)"])
        }
    }

    func isAcceptingNewConnections() -> Bool { open < counts.limit }

    /// Files kept for everything but client connections: the database (SQLite's files or the
    /// PostgreSQL pool), webhook deliveries, logs, the config and TLS files on reload.
    static func reservedFiles(openFiles: Int) -> Int { max(32, min(1024, openFiles / 8)) }

    /// The default cap: the open-file limit less `reservedFiles`, at least 16.
    static func defaultLimit(openFiles: Int) -> Int { max(16, openFiles - reservedFiles(openFiles: openFiles)) }

    /// Raises the soft open-file limit to the hard one (as Go programs and nginx's
    /// `worker_rlimit_nofile` do), so the default cap is what the unit's `LimitNOFILE` allows, and
    /// returns the soft limit now.
    static func raiseOpenFileLimit(logger: Logger) -> Int {
        var limit = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
        if limit.rlim_cur < limit.rlim_max {
            var raised = limit
            raised.rlim_cur = limit.rlim_max
            if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 {
                logger.debug("Raised the open-file limit", metadata: ["from": "\(limit.rlim_cur)", "to": "\(raised.rlim_cur)"])
                limit = raised
            }
        }
        return Int(clamping: min(UInt64(limit.rlim_cur), UInt64(Int32.max)))
    }
}
