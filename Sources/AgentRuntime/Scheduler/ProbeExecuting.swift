import ProbeEngine
import SondeCore

/// Runs one probe and returns its result (every failure is data, never a thrown error). The
/// engine's `ProbeRunner` is the real one; tests drive the scheduler with their own.
public protocol ProbeExecuting: Sendable {
    func run(_ probe: ProbeDefinition, context: RunContext) async -> ProbeResult
}

extension ProbeRunner: ProbeExecuting {}
