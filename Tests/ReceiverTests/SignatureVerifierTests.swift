import Foundation
import Testing
@testable import ReceiverCore

@Suite struct SignatureVerifierTests {
    // The example of the Standard Webhooks specification.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    let id = "msg_p5jXN8AQM9LWM0D4loKWxJek"
    let timestamp = "1614265330"
    let body = Array(#"{"test": 2432232314}"#.utf8)

    @Test func matchesTheStandardWebhooksExample() throws {
        let verifier = try SignatureVerifier(secret: secret)
        #expect(verifier.signature(id: id, timestamp: timestamp, body: body) == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=")
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=", body: body, now: 1_614_265_330) == nil)
    }

    @Test func acceptsAnyOfSeveralSignatures() throws {
        let verifier = try SignatureVerifier(secret: secret)
        let good = verifier.signature(id: id, timestamp: timestamp, body: body)
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: "v1,AAAA v2,zzz \(good)", body: body, now: 1_614_265_330) == nil)
    }

    @Test func refusesTamperingStalenessAndMissingHeaders() throws {
        let verifier = try SignatureVerifier(secret: secret)
        let good = verifier.signature(id: id, timestamp: timestamp, body: body)
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: good, body: body + [32], now: 1_614_265_330) == .noMatchingSignature)
        #expect(verifier.check(id: id + "x", timestamp: timestamp, signatures: good, body: body, now: 1_614_265_330) == .noMatchingSignature)
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: good, body: body, now: 1_614_265_330 + 301) == .staleTimestamp)
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: good, body: body, now: 1_614_265_330 - 301) == .staleTimestamp)
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: good, body: body, now: 1_614_265_330 + 300) == nil)
        #expect(verifier.check(id: nil, timestamp: timestamp, signatures: good, body: body, now: 0) == .missingHeader("webhook-id"))
        #expect(verifier.check(id: id, timestamp: nil, signatures: good, body: body, now: 0) == .missingHeader("webhook-timestamp"))
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: nil, body: body, now: 0) == .missingHeader("webhook-signature"))
        #expect(verifier.check(id: id, timestamp: "-5", signatures: good, body: body, now: 0) == .badTimestamp)
        #expect(verifier.check(id: id, timestamp: timestamp, signatures: "v1,not-base64!", body: body, now: 1_614_265_330) == .noMatchingSignature)
    }

    @Test func refusesASecretThatIsNotBase64() {
        #expect(throws: SignatureVerifier.InvalidSecret.self) { try SignatureVerifier(secret: "whsec_***") }
        #expect(throws: SignatureVerifier.InvalidSecret.self) { try SignatureVerifier(secret: "   ") }
        do { _ = try SignatureVerifier(secret: "\(secret) whsec_***") } catch let error as SignatureVerifier.InvalidSecret {
            #expect(error.position == 2, "the message names which secret")
        } catch { Issue.record("\(error)") }
    }

    @Test func acceptsASignatureUnderAnyOfSeveralSecrets() throws {
        let other = "whsec_" + Data("the next secret".utf8).base64EncodedString()
        let both = try SignatureVerifier(secret: "\(other)  \(secret)")
        let byOld = try SignatureVerifier(secret: secret).signature(id: id, timestamp: timestamp, body: body)
        let byNew = try SignatureVerifier(secret: other).signature(id: id, timestamp: timestamp, body: body)
        #expect(both.check(id: id, timestamp: timestamp, signatures: byOld, body: body, now: 1_614_265_330) == nil)
        #expect(both.check(id: id, timestamp: timestamp, signatures: byNew, body: body, now: 1_614_265_330) == nil)
        let third = try SignatureVerifier(secret: "whsec_" + Data("not configured".utf8).base64EncodedString())
        #expect(both.check(id: id, timestamp: timestamp, signatures: third.signature(id: id, timestamp: timestamp, body: body),
                           body: body, now: 1_614_265_330) == .noMatchingSignature)
    }
}

@Suite struct ContentTypeTests {
    @Test(arguments: ["application/json", "Application/JSON", "application/json; charset=utf-8", " application/json ;charset=UTF-8", "application/json;"])
    func acceptsJSON(contentType: String) {
        #expect(WebhookIntake.isJSON(contentType))
    }

    @Test(arguments: [nil, "", "text/plain", "application/jsonx", "application/json-patch+json", "application/js", "multipart/form-data; application/json"])
    func refusesEverythingElse(contentType: String?) {
        #expect(!WebhookIntake.isJSON(contentType))
    }
}
