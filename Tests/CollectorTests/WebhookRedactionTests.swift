@testable import Collector
import Foundation
import Testing

/// A refusing receiver's answer is kept for the log and the dead letters (which a read token
/// lists), so it must never carry the target's credentials: for Slack, Discord, Teams or a
/// `?token=` receiver the URL itself is one, and a 404 often echoes the path it was sent.
@Suite("Webhook refusals keep no credentials")
struct WebhookRedactionTests {
    @Test func aRefusalNeverShowsTheTargetsURLOrSecrets() {
        let target = WebhookTarget(
            name: "chat", url: "https://user:pa55word@hooks.example.com/services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx?token=q-secret-99",
            secret: "s3cret-signing", format: .slack)
        let secrets = WebhookDispatcher.credentials(of: target)
        // Each echo on its own (a reason is cut at 200 characters), in the forms receivers use.
        let echoes = [
            "Cannot POST /services/T0123ABCD/B0456EFGH/abcdefghijklmnopqrstuvwx",
            #"{"path":"\/services\/B0456EFGH\/abcdefghijklmnopqrstuvwx"}"#,
            "path=%2Fservices%2fT0123ABCD%2Fabcdefghijklmnopqrstuvwx",
            "query: token=q%2Dsecret%2D99", "bearer " + Data("q-secret-99".utf8).base64EncodedString(),
            "user pa55word", "signed with s3cret-signing", "sent to \(target.url)",
        ]
        for echo in echoes {
            let reason = WebhookDispatcher.reason(in: Data(echo.utf8), hiding: secrets)
            #expect(reason.contains("[redacted]") && reason.count < 200, "\(reason)")
            for secret in ["T0123ABCD", "B0456EFGH", "abcdefghijklmnopqrstuvwx", "q-secret-99", "q%2Dsecret", "pa55word", "s3cret-signing"] {
                #expect(!reason.contains(secret), "\(secret) in \(reason)")
            }
            #expect(!reason.contains(Data("q-secret-99".utf8).base64EncodedString()), "\(reason)")
        }
        // What is not a credential stays readable: the receiver's words and the path's plain parts.
        #expect(WebhookDispatcher.reason(in: Data(echoes[0].utf8), hiding: secrets) == ": Cannot POST /services/[redacted]/[redacted]/[redacted]")
    }
}
