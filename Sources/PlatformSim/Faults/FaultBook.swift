import Foundation
import SondeCore
import Synchronization

/// The active faults of one sim (shared by all its regions) and the random draws that decide
/// which matching requests a fractional fault hits.
final class FaultBook: Sendable {
    private struct State {
        var faults: [Fault] = []
        var nextID = 1
        var random: SplitMix64
    }

    private let state: Mutex<State>
    let knownRegions: [String]

    /// `seed` makes fractional faults reproducible; nil seeds from the system RNG.
    init(knownRegions: [String], seed: UInt64?) {
        self.knownRegions = knownRegions
        var system = SystemRandomNumberGenerator()
        state = Mutex(State(random: SplitMix64(seed: seed ?? system.next())))
    }

    /// Validates and stores a fault; returns it with its new id.
    func add(_ fault: Fault) throws(FaultValidationError) -> Fault {
        try fault.validate(knownRegions: knownRegions)
        return state.withLock { state in
            var stored = fault
            stored.id = "f-\(state.nextID)"
            state.nextID += 1
            state.faults.append(stored)
            return stored
        }
    }

    func remove(id: String) -> Bool {
        state.withLock { state in
            guard let index = state.faults.firstIndex(where: { $0.id == id }) else { return false }
            state.faults.remove(at: index)
            return true
        }
    }

    @discardableResult
    func removeAll() -> Int {
        state.withLock { state in
            defer { state.faults.removeAll() }
            return state.faults.count
        }
    }

    var all: [Fault] { state.withLock { $0.faults } }

    func isActive(id: String) -> Bool { state.withLock { $0.faults.contains { $0.id == id } } }

    /// The faults whose scope covers the request and whose fraction draw hits, in the order they
    /// were added. Each covering fault draws once per call, so call this once per request and kind.
    func hits(component: SimComponent, region: String, user: String?, where include: (Fault) -> Bool) -> [Fault] {
        draws(component: component, region: region, user: user, where: include).filter(\.hit).map(\.fault)
    }

    /// Every covering fault with the outcome of its draw (for callers that remember misses too).
    func draws(component: SimComponent, region: String, user: String?, where include: (Fault) -> Bool) -> [(fault: Fault, hit: Bool)] {
        state.withLock { state in
            var draws: [(fault: Fault, hit: Bool)] = []
            for fault in state.faults where include(fault) && fault.covers(component: component, region: region, user: user) {
                let hit = fault.fraction >= 1 || (fault.fraction > 0 && state.random.nextUnitDouble() < fault.fraction)
                draws.append((fault, hit))
            }
            return draws
        }
    }
}
