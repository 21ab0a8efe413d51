import CollectorStore
import Foundation
import SondeCore
import Testing

@testable import Collector

/// The collector's memory of each agent's last verified claim (`PushClaimCache`) never proves more
/// than verifying again would: a remembered claim still ages out, and a re-enrolled key voids it.
@Suite struct PushClaimTests {
    @Test func aRememberedClaimAgesOutAndDiesWithItsKey() throws {
        let key = AgentSigningKey(), newKey = AgentSigningKey()
        let agent = AgentRecord(id: "eu-1", region: "eu", publicKey: key.publicKey.base64)
        let cache = PushClaimCache(), keys = AgentKeyCache()
        let now = Date()
        let claim = try key.claimHeader(agent: agent.id, now: now)
        #expect(cache.holds(claim, agent: agent, now: now, allowedSkew: 300, keys: keys))
        #expect(cache.holds(claim, agent: agent, now: now.addingTimeInterval(299), allowedSkew: 300, keys: keys), "remembered")
        #expect(!cache.holds(claim, agent: agent, now: now.addingTimeInterval(301), allowedSkew: 300, keys: keys), "remembered, but too old")
        var reEnrolled = agent
        reEnrolled.publicKey = newKey.publicKey.base64
        #expect(!cache.holds(claim, agent: reEnrolled, now: now, allowedSkew: 300, keys: keys), "the old key's claim after re-enrolment")
        #expect(cache.holds(try newKey.claimHeader(agent: agent.id, now: now), agent: reEnrolled, now: now, allowedSkew: 300, keys: keys))
        // Another agent's valid claim is not this agent's.
        let other = AgentRecord(id: "eu-2", region: "eu", publicKey: key.publicKey.base64)
        #expect(!cache.holds(claim, agent: other, now: now, allowedSkew: 300, keys: keys))
    }
}
