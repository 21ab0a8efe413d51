import CollectorStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

/// The parts of the config SIGHUP swaps in place while the collector runs: API tokens and
/// webhook targets. Readers take the current value at each use (each request, each
/// evaluation, each delivery loop), so a change needs no restart and drops nothing in flight.
public final class ReloadableSettings: Sendable {
    private struct Values {
        var tokens: [APIToken]
        var webhooks: [WebhookTarget]
    }
    private let values: Mutex<Values>

    init(tokens: [APIToken], webhooks: [WebhookTarget]) {
        values = Mutex(Values(tokens: tokens, webhooks: webhooks))
    }

    var tokens: [APIToken] { values.withLock { $0.tokens } }
    var webhooks: [WebhookTarget] { values.withLock { $0.webhooks } }

    func replace(tokens: [APIToken], webhooks: [WebhookTarget]) {
        values.withLock { $0 = Values(tokens: tokens, webhooks: webhooks) }
    }
}

/// SIGHUP: re-reads the config file and applies what can change while running: `agents`
/// (enrolled or updated; one the previous config listed and the new one does not is revoked),
/// `tokens`, `webhooks` and the `listen.tls` certificate and key. The new file is checked whole
/// first (the same checks as at start, and the certificate must load): a file with any error is
/// refused with its errors in the log, and the running config stays as it was. Other settings
/// (listen address, database, correlation, limits, …) need a restart; a change to them is
/// logged as such. Results being ingested and events being delivered carry on throughout.
final class CollectorReloader: Service, Sendable, CustomStringConvertible {
    let path: String?
    let store: any CollectorStorage
    let settings: ReloadableSettings
    /// Wakes the webhook dispatcher, which starts and stops target tasks as `webhooks` changed.
    let outbox: WakeSignal
    let credentials: TLSCredentials?
    let logger: Logger
    /// Each reload's outcome, for `/metrics`.
    let metrics: CollectorMetrics?
    /// The config in force: what the next reload is compared with.
    let current: Mutex<CollectorConfig>

    init(
        path: String?, config: CollectorConfig, store: any CollectorStorage, settings: ReloadableSettings, outbox: WakeSignal,
        credentials: TLSCredentials?, metrics: CollectorMetrics? = nil, logger: Logger
    ) {
        self.metrics = metrics
        self.path = path
        self.store = store
        self.settings = settings
        self.outbox = outbox
        self.credentials = credentials
        self.logger = logger
        current = Mutex(config)
    }

    var description: String { "CollectorReloader" }

    func run() async throws {
        let signals = await UnixSignalsSequence(trapping: .sighup)
        await cancelWhenGracefulShutdown {
            for await _ in signals { await self.reload() }
        }
    }

    /// One reload; returns true when the new config is in force.
    @discardableResult
    func reload() async -> Bool {
        let applied = await attemptReload()
        metrics?.recordReload(ok: applied)
        return applied
    }

    private func attemptReload() async -> Bool {
        guard let path else {
            // Built from a config value (tests, the demo): only the certificate can be re-read.
            reloadCertificate(credentials?.files)
            return credentials != nil
        }
        let new: CollectorConfig
        do { new = try CollectorConfig.load(path: path) } catch {
            logger.error("SIGHUP: the new config is refused; the previous one stays in force", metadata: ["config": .string(path), "error": "\(error)"])
            return false
        }
        let old = current.withLock { $0 }
        // The certificate first: a pair that does not load refuses the whole file.
        var pair: TLSCredentials.Pair?
        if let files = new.tls {
            do { pair = try TLSCredentials.load(files) } catch {
                logger.error(
                    "TLS reload failed: the new config is refused; the previous one and its certificate stay in force",
                    metadata: ["config": .string(path), "error": "\(error)"])
                return false
            }
        }
        do { try await applyAgents(old: old.agents, new: new.agents) } catch {
            logger.error("SIGHUP: the new agents are refused; the previous config stays in force", metadata: ["config": .string(path), "error": "\(error)"])
            return false
        }
        settings.replace(tokens: new.tokens, webhooks: new.webhooks)
        outbox.fire()
        if let credentials, let pair, new.tls == credentials.files {
            credentials.replace(pair)
            logger.notice("TLS certificate reloaded", metadata: ["tls.cert": .string(credentials.files.cert)])
        }
        current.withLock { $0 = new }
        let restartNeeded = Self.restartOnlyChanges(old: old, new: new, servedTLS: credentials?.files)
        if !restartNeeded.isEmpty {
            logger.warning(
                "SIGHUP: these settings changed but take effect only after a restart", metadata: ["settings": .string(restartNeeded.joined(separator: ", "))])
        }
        logger.notice(
            "Config reloaded",
            metadata: [
                "config": .string(path), "agents": "\(new.agents.count)", "tokens": "\(new.tokens.count)", "webhooks": "\(new.webhooks.count)",
            ])
        return true
    }

    private func reloadCertificate(_ files: TLSFiles?) {
        guard let credentials else {
            logger.notice("SIGHUP: nothing to reload (plain HTTP, no config file)")
            return
        }
        do {
            try credentials.reload()
            logger.notice("TLS certificate reloaded", metadata: ["tls.cert": .string(credentials.files.cert)])
        } catch {
            logger.error("TLS reload failed; still serving the previous certificate", metadata: ["error": "\(error)"])
        }
    }

    /// Enrols or updates the new file's agents, and revokes those only the old file listed.
    /// A revocation made with `sonde-collector agents revoke` stays (as at start).
    private func applyAgents(old: [AgentEnrolment], new: [AgentEnrolment]) async throws {
        // A key another agent holds (enrolled with `agents add`) refuses the whole list before
        // anything is written: a refused reload must not leave half of the new agents enrolled.
        var keys = Dictionary(try await store.agents().map { ($0.id, $0.publicKey) }, uniquingKeysWith: { $1 })
        for enrolment in new { keys[enrolment.id] = enrolment.publicKey }
        for enrolment in new where !old.contains(enrolment) {
            if let holder = keys.first(where: { $0.key != enrolment.id && $0.value == enrolment.publicKey })?.key {
                throw DuplicateKeyError(agent: enrolment.id, holder: holder)
            }
        }
        for enrolment in new where !old.contains(enrolment) {
            let existing = try await store.agent(id: enrolment.id)
            // Revoking an agent revokes its key: listed again with the key it was revoked with, it
            // stays revoked (a new key, or `agents add --unrevoke`, brings it back).
            let revokedKey = existing.map { $0.revoked && $0.publicKey == enrolment.publicKey } ?? false
            try await store.upsertAgent(
                AgentRecord(
                    id: enrolment.id, region: enrolment.region, publicKey: enrolment.publicKey,
                    revoked: old.contains(where: { $0.id == enrolment.id }) || revokedKey ? (existing?.revoked ?? false) : false,
                    enrolledAt: existing?.enrolledAt ?? Date(), lastSeen: existing?.lastSeen))
            if revokedKey {
                logger.warning(
                    "Agent listed in the config stays revoked: it was revoked with this key; give it a new key (sonde-agent keygen), or run `sonde-collector agents add --unrevoke` if the revocation was a mistake",
                    metadata: ["agent": .string(enrolment.id)])
            } else {
                logger.notice("Agent enrolled from the config", metadata: ["agent": .string(enrolment.id), "region": .string(enrolment.region)])
            }
        }
        let kept = Set(new.map(\.id))
        for removed in old where !kept.contains(removed.id) {
            if try await store.revokeAgent(id: removed.id) {
                logger.notice("Agent revoked: no longer in the config", metadata: ["agent": .string(removed.id)])
            }
        }
    }

    /// Settings that differ between the two files but are read only at start.
    static func restartOnlyChanges(old: CollectorConfig, new: CollectorConfig, servedTLS: TLSFiles?) -> [String] {
        // Every setting but the reloadable ones (agents, tokens, webhooks, the TLS files), by the
        // name the file gives it: a reload must never say "reloaded" over a change it ignored.
        func differs<T: Equatable>(_ value: (CollectorConfig) -> T) -> Bool { value(old) != value(new) }
        let startOnly: [(String, Bool)] = [
            ("listen", differs(\.host) || differs(\.port)),
            ("listen.tls / listen.plain_http", differs(\.plainHTTP) || (new.tls != nil) != (servedTLS != nil) || (servedTLS != nil && new.tls != servedTLS)),
            ("database", differs(\.databasePath) || differs(\.databaseSync)),
            ("collector_name", differs(\.collectorName)),
            ("correlation / components", differs(\.correlation) || differs(\.components)),
            ("limits", differs(\.limits)),
            ("status_page / metrics", differs(\.statusPagePublic) || differs(\.metricsPublic) || differs(\.statusPage)),
            ("public_url", differs(\.publicURL)),
            ("retention_days / retention_interval", differs(\.retentionDays) || differs(\.retentionInterval)),
            ("max_body_bytes / max_results_per_batch", differs(\.maxBodyBytes) || differs(\.maxResultsPerBatch)),
            ("allowed_clock_skew", differs(\.allowedClockSkew)),
            ("evaluation_interval", differs(\.evaluationInterval)),
            ("idle_timeout / request_timeout", differs(\.idleTimeout) || differs(\.requestTimeout)),
            ("webhook_retry", differs(\.webhookRetryBase) || differs(\.webhookRetryCap) || differs(\.webhookTimeout)
                || differs(\.webhookMaxAttempts) || differs(\.webhookMaxAge) || differs(\.webhookPollInterval)),
        ]
        return startOnly.filter(\.1).map(\.0)
    }
}
