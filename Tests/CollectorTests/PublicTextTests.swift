@testable import Collector
import Foundation
import Testing

/// The public pages show the engine's own incident text only when it names no agent and no
/// address. Its headline quotes the agents' error codes, which any enrolled agent chooses (red
/// team, third pass: `db-prod.internal:5432` reached the public page as a "code").
@Suite("Public incident text")
struct PublicTextTests {
    func incident(_ message: String) -> (PageIncident.Update, PageIncident) {
        let update = PageIncident.Update(time: Date(), status: "investigating", message: message, author: "sonde")
        let incident = PageIncident(
            id: "files.1", component: "files", status: "investigating", openedAt: Date(), updatedAt: Date(), updates: [update])
        return (update, incident)
    }

    @Test func anAddressInTheEnginesTextFallsBackToThePlainSentence() {
        let plain = "We are investigating a problem with files."
        for message in [
            "Files is failing for users in eu (2 of 2 agents, db-prod.internal:5432, since 14:02 UTC).",
            "Files is failing for users in eu (2 of 2 agents, 10.0.3.7:6379, since 14:02 UTC).",
            "Files is failing for users in eu (2 of 2 agents, cache.eu-west.example, since 14:02 UTC).",
        ] {
            let (update, page) = incident(message)
            #expect(StatusPage.publicMessage(update, incident: page, agentIDs: []) == plain, "\(message)")
        }
        // The engine's usual texts stay as written: codes, times, latencies, counts.
        for message in [
            "Files is failing for users in eu (2 of 2 agents, file_expired, since 14:02 UTC).",
            "Login is slow platform-wide (4 of 6 agents, p95 2.3 s, since 14:02 UTC).",
            "Files is recovering: every agent passes again (12 runs without a failure). We are monitoring.",
            "Batch is failing platform-wide (6 of 6 agents, http:429, server_error, since 09:15 UTC).",
        ] {
            let (update, page) = incident(message)
            #expect(StatusPage.publicMessage(update, incident: page, agentIDs: []) == message)
        }
        // A person's words are theirs, as written.
        let (automatic, page) = incident("The database at db-prod.internal is being restored.")
        var update = automatic
        update.author = "dana"
        #expect(StatusPage.publicMessage(update, incident: page, agentIDs: []) == update.message)
    }
}
